//! Criterion micro-benchmarks of the broker's hot path: rendering an event frame, parsing a
//! client request, matching filters, and fanning one event out to many outboxes.
//!
//! `cargo bench -p rustorium-actors --bench hot_path [-- <name filter>]`. Each bench
//! warms up for 0.5 s and measures 20 samples over about 2 s, so the 15 benches run in
//! about 45 s; pass `--warm-up-time`, `--measurement-time` or `--sample-size` for steadier
//! figures.

use std::hint::black_box;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Recipient, System};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use rustorium_actors::channels::ChannelKind;
use rustorium_actors::event::{Draft, Event};
use rustorium_actors::fanout::outbox::{self, Item, Outbox, OutboxLimits, Pushed};
use rustorium_actors::fanout::progress::Progress;
use rustorium_actors::fanout::progress::Wake;
use rustorium_actors::filter::Filter;
use rustorium_actors::flow::Flow;
use rustorium_actors::position::Position;
use rustorium_actors::protocol::{request, Dialect};
use rustorium_actors::settings::Limits;
use serde_json::{json, Map, Value};

/// Both dialects, with the name used in bench ids.
const DIALECTS: [(&str, Dialect); 2] = [("ws", Dialect::Ws), ("v1", Dialect::V1)];

/// A message id in the broker's range (start time in microseconds).
const SEQ: u64 = 1_718_000_000_000_000;

/// The `transaction_updates` channel, as hubs and events name it.
const TX_UPDATES: &str = "transaction_updates";

/// Subscriber counts of the fan-out bench.
const FANOUT: [usize; 3] = [100, 1_000, 10_000];

/// Subscription counts of the filter bench.
const FILTERS: [usize; 3] = [1, 100, 10_000];

/// Mailbox capacity of a connection actor (`CONTROL_MAILBOX` in `connection.rs`).
const CONTROL_MAILBOX: usize = 64;

/// In the `queued` fan-out bench, rounds pushed between two (untimed) drains.
const DRAIN_EVERY: u64 = 64;

/// Outbox bounds far above anything the benches queue: no push is ever refused and no
/// outbox ever counts as congested.
const LIMITS: OutboxLimits = OutboxLimits {
    queue_frames: 1 << 24,
    queue_bytes: usize::MAX / 4,
    stuck_after: Duration::from_secs(3600),
};

/// The address `0xa11ce…` numbered `i`: 40 hex digits, distinct for distinct `i`.
fn address(i: usize) -> String {
    format!("0xa11ce{i:035x}")
}

/// A ~200-byte payload: `{"seq":1,"ts":2,"pad":"xxxx…"}`.
fn small_payload() -> Value {
    json!({"seq": 1, "ts": 2, "pad": "x".repeat(175)})
}

/// A realistic `transaction_updates` payload from `from` to `to`.
fn tx_update(from: &str, to: &str) -> Value {
    json!({
        "transaction_id": "0x9f2c4be1d3a87706c5e2b1f04a9d8e3c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f21",
        "status": "confirmed",
        "from": from,
        "to": to,
        "amount": "1500000000000000000",
        "token_id": "0x1",
        "block_number": 18_234_567,
        "timestamp": 1_718_000_000_123_u64,
    })
}

/// A new event, its frames not rendered yet.
fn fresh(channel: &Arc<str>, data: &Value) -> Event {
    let draft = Draft {
        channel: channel.clone(),
        kind: "update".to_owned(),
        data: data.clone(),
        block: None,
        is_block: false,
    };
    Event::new(SEQ, draft, None, Instant::now())
}

/// `render`: one event frame per dialect, from a fresh event each time (frames are
/// cached after the first render).
fn render(c: &mut Criterion) {
    let cases = [
        ("small", Arc::<str>::from("bench.0"), small_payload()),
        (
            "tx_update",
            Arc::<str>::from(TX_UPDATES),
            tx_update(&address(1), &address(2)),
        ),
    ];
    let mut group = c.benchmark_group("render");
    for (name, channel, data) in &cases {
        for (dialect_name, dialect) in DIALECTS {
            let len = fresh(channel, data).frame_len(dialect);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function(BenchmarkId::new(dialect_name, name), |b| {
                b.iter_batched_ref(
                    || fresh(channel, data),
                    |event| event.frame(dialect),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// A `publish` request carrying `n` events on `bench.0`.
fn publish_request(n: usize) -> String {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"channel": "bench.0", "data": {"seq": i, "ts": 2, "pad": "x".repeat(64)}}))
        .collect();
    json!({"type": "publish", "id": "p", "data": {"events": events}}).to_string()
}

/// `parse`: one client frame into a request (the parser is the same for both dialects).
fn parse(c: &mut Criterion) {
    let subscribe = format!(
        r#"{{"type":"subscribe","id":"1","data":{{"channel":"{TX_UPDATES}","filter":{{"address":"0xa11ce00000000000000000000000000000000001"}}}}}}"#
    );
    let publish = publish_request(100);
    let mut group = c.benchmark_group("parse");
    for (name, text) in [("subscribe", &subscribe), ("publish_100", &publish)] {
        request::parse(text).expect("the bench request parses");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter_with_large_drop(|| request::parse(black_box(text)))
        });
    }
    group.finish();
}

/// The filter of a `transaction_updates` subscription on `address`.
fn address_filter(address: &str) -> Filter {
    let mut data = Map::new();
    data.insert("channel".into(), TX_UPDATES.into());
    data.insert("filter".into(), json!({ "address": address }));
    let max_value = Limits::default().max_filter_value_bytes;
    Filter::parse(
        ChannelKind::TransactionUpdates,
        TX_UPDATES,
        &data,
        max_value,
    )
    .expect("the bench filter parses")
}

/// How many of `filters` pass `data`.
fn count_matches(filters: &[Filter], data: &Value) -> usize {
    filters.iter().filter(|f| f.matches(data)).count()
}

/// `filter`: one event against every subscription of a channel, each on its own
/// address; exactly one matches.
fn filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter");
    for n in FILTERS {
        let filters: Vec<Filter> = (0..n).map(|i| address_filter(&address(i))).collect();
        let data = tx_update(&address(n / 2), &address(n + 1));
        assert_eq!(count_matches(&filters, &data), 1, "one filter should match");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| count_matches(black_box(&filters), black_box(&data)))
        });
    }
    group.finish();
}

/// Stands in for a connection actor: takes the outbox's wake-ups (the bench drains).
struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CONTROL_MAILBOX);
    }
}

impl Handler<Wake> for Sink {
    type Result = ();

    fn handle(&mut self, _: Wake, _: &mut Context<Self>) {}
}

/// One [`Sink`] per outbox, running on an actix system of their own thread, so wake-ups
/// cross threads as they do from a hub to connections.
struct Sinks {
    system: System,
    thread: JoinHandle<()>,
    recipients: Vec<Recipient<Wake>>,
}

impl Sinks {
    /// Starts `n` sinks.
    fn start(n: usize) -> Sinks {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let recipients: Vec<Recipient<Wake>> =
                    (0..n).map(|_| Sink.start().recipient()).collect();
                tx.send((System::current(), recipients))
                    .expect("the bench thread waits for the sinks");
            });
            system.run().expect("the sink system runs");
        });
        let (system, recipients) = rx.recv().expect("the sink thread starts");
        Sinks {
            system,
            thread,
            recipients,
        }
    }

    /// Stops the sinks' system and waits for its thread.
    fn stop(self) {
        drop(self.recipients);
        self.system.stop();
        self.thread.join().expect("the sink thread ends");
    }
}

/// Pushes `event` into every outbox, one lock each, as `HubCore::fan_out` does;
/// returns how many pushes were not simply queued.
fn push_all(outboxes: &[Outbox], event: &Arc<Event>) -> usize {
    let mut refused = 0;
    for ob in outboxes {
        let item = Item::new(event.clone(), Position::event(event.seq), None);
        if outbox::lock(ob).push(item) != Pushed::Queued {
            refused += 1;
        }
    }
    refused
}

/// Empties every outbox as its connection would, so no queue grows.
fn drain_all(outboxes: &[Outbox]) {
    for ob in outboxes {
        drop(outbox::lock(ob).drain());
    }
}

/// `fanout`: one shared event pushed into N outboxes. `wake`: every outbox was drained
/// before, so each push also wakes its connection (the steady state of readers that keep
/// up); `queued`: a wake-up is already pending, so each push only queues (a burst).
/// Drains are not timed.
fn fanout(c: &mut Criterion) {
    let max = FANOUT.iter().copied().max().unwrap_or(0);
    let sinks = Sinks::start(max);
    let flow = Arc::new(Flow::default());
    let progress = Arc::new(Progress::default());
    let outboxes: Vec<Outbox> = sinks
        .recipients
        .iter()
        .map(|wake| {
            let ob = outbox::new_outbox(Dialect::Ws, LIMITS, flow.clone(), progress.clone());
            outbox::lock(&ob).set_wake(wake.clone());
            ob
        })
        .collect();
    let event = Arc::new(fresh(
        &Arc::from(TX_UPDATES),
        &tx_update(&address(1), &address(2)),
    ));
    // The first subscriber renders the frame; every later push reuses it.
    event.frame_len(Dialect::Ws);
    let mut refused = push_all(&outboxes, &event);
    drain_all(&outboxes);

    let mut group = c.benchmark_group("fanout");
    for n in FANOUT {
        let obs = &outboxes[..n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("wake", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    drain_all(obs);
                    let start = Instant::now();
                    refused += black_box(push_all(obs, &event));
                    total += start.elapsed();
                }
                total
            })
        });
        group.bench_function(BenchmarkId::new("queued", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for round in 0..iters {
                    if round % DRAIN_EVERY == 0 {
                        drain_all(obs);
                        // Untimed: leaves a wake-up pending again.
                        refused += push_all(obs, &event);
                    }
                    let start = Instant::now();
                    refused += black_box(push_all(obs, &event));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
    drain_all(&outboxes);
    drop(outboxes);
    sinks.stop();
    assert_eq!(
        refused, 0,
        "an outbox refused an item: raise the bench limits"
    );
}

/// Runs every group with short measurement settings (command-line options override them).
fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    render(&mut c);
    parse(&mut c);
    filter(&mut c);
    fanout(&mut c);
    c.final_summary();
}
