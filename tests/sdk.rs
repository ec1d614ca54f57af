//! The Rust SDK (`rustorium-sdk`) against the real broker over real sockets: no loss and
//! no duplicate across connections cut at random points, a killed and restarted broker
//! (backoff intervals, the gap reported), heartbeat silence, a refused key, a stalled
//! reader cut 4005, a v1 typed stream, and the commands.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::broker_process::BrokerProcess;
use common::proxy::Proxy;
use common::*;
use futures_util::{Stream, StreamExt};
use rustorium_sdk::{
    Backoff, Error, ErrorCode, Event, PublishEvent, Subscription, TransactionRequest, Update,
    WebSocketClient,
};
use serde_json::{json, Value};

/// Reconnect waits short enough for many rounds in a test.
fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(40),
        jitter: 0.2,
    }
}

fn client(url: String, key: &str, backoff: Backoff) -> WebSocketClient {
    WebSocketClient::new()
        .with_endpoint(url)
        .with_api_key(key)
        .with_backoff(backoff)
        .build()
        .expect("client settings")
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// The next item of a stream, within WAIT.
async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the wait")
        .expect("the stream goes on")
}

/// The ids of the node API events read until `count` events came; any other item fails.
async fn read_events(stream: &mut rustorium_sdk::EventStream, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        match next(stream).await {
            Event::NewBlock(b) => ids.push(b.meta.id),
            Event::TransactionConfirmed(t) => ids.push(t.meta.id),
            Event::StateUpdate(s) => ids.push(s.meta.id),
            Event::Error(e) => panic!("unexpected error item after {} events: {e}", ids.len()),
        }
    }
    ids
}

fn state(n: u64) -> Value {
    json!({"channel": "state", "data": {"key": format!("0x{n:04x}"), "value": "AQ==", "block_number": n}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_points_lose_and_repeat_nothing() {
    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 20;
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = client(ws_url(proxy.addr), SUB_KEY, quick_backoff());
    let mut events = c
        .subscribe_events(&["blocks", "state"])
        .await
        .expect("subscribed");
    // From now on every connection is cut after 100 to 8000 bytes towards the client:
    // inside the upgrade's response, inside a frame, between frames, in the middle of a
    // resume's reply or replay. The one open now is cut at once.
    proxy.cut_after(Some(100..8000));
    proxy.cut_open_connections();
    let addr = b.addr;
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for batch in 0..BATCHES {
            let body: Vec<Value> = (batch * PER_BATCH..(batch + 1) * PER_BATCH)
                .map(|n| if n % 2 == 0 { block(n) } else { state(n) })
                .collect();
            ids.extend(publish_ok(addr, &json!(body)).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ids
    });
    let got = read_events(&mut events, (BATCHES * PER_BATCH) as usize).await;
    let published = publisher.await.expect("publisher");
    assert_eq!(got.len(), published.len());
    assert_eq!(
        got, published,
        "the stream is exactly what was published, in order"
    );
    let stats = events.stats();
    assert!(proxy.cuts() >= 50, "only {} cuts", proxy.cuts());
    assert!(stats.resumes >= 50, "{stats:?}");
    assert_eq!(stats.gaps, 0, "{stats:?}");
    eprintln!(
        "{} events over {} cuts, {} resumes, {} connections; {} duplicates dropped by the client",
        got.len(),
        proxy.cuts(),
        stats.resumes,
        proxy.accepted().len(),
        stats.duplicates_dropped
    );
}

/// Publishes blocks numbered `from..to` to a broker, one HTTP publish each; their ids.
async fn publish_blocks(addr: SocketAddr, from: u64, to: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for n in from..to {
        ids.extend(publish_ok(addr, &block(n)).await);
    }
    ids
}

/// Waits until `proxy` has accepted `count` connections; their accept times.
async fn accepted(proxy: &Proxy, count: usize, within: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let times = proxy.accepted();
        if times.len() >= count {
            return times;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} connection attempts",
            times.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn broker_args(port: u16, keys: &[&str]) -> Vec<String> {
    let mut args = vec!["--bind".to_owned(), format!("127.0.0.1:{port}")];
    for key in keys {
        args.extend(["--key".to_owned(), (*key).to_owned()]);
    }
    args
}

fn spawn_broker(port: u16, keys: &[&str]) -> BrokerProcess {
    let args = broker_args(port, keys);
    BrokerProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

const SUB: &str = "sub:sub-secret-0001:subscribe";
const PUB: &str = "pub:pub-secret-0001:publish";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_waited_for_with_backoff_and_the_gap_reported() {
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(800),
        jitter: 0.2,
    };
    let mut broker = spawn_broker(0, &[SUB, PUB]);
    let port = broker.addr.port();
    let proxy = Proxy::start(broker.addr).await;
    let c = client(ws_url(proxy.addr), SUB_KEY, backoff.clone());
    let mut events = c.subscribe_events(&["blocks"]).await.expect("subscribed");
    let before = publish_blocks(broker.addr, 1, 4).await;
    assert_eq!(read_events(&mut events, 3).await, before);
    // Up longer than the first wait: the drop is resumed at once, then waits double.
    tokio::time::sleep(backoff.initial).await;
    broker.kill();
    let times = accepted(&proxy, 7, Duration::from_secs(10)).await;
    let waits: Vec<Duration> = times[1..].windows(2).map(|w| w[1] - w[0]).collect();
    for (n, wait) in waits.iter().enumerate() {
        let least = backoff.delay(n as u32, 0.0);
        let most = backoff.delay(n as u32, 1.0) + Duration::from_millis(150);
        assert!(
            *wait >= least && *wait <= most,
            "wait {n} was {wait:?}, not within {least:?}..{most:?}: {waits:?}"
        );
    }
    // Back on the same port, with no history: the client says what it lost and subscribes again.
    let broker = spawn_broker(port, &[SUB, PUB]);
    match next(&mut events).await {
        Event::Error(Error::Gap(gap)) => {
            assert_eq!(gap.last_message_id.as_ref(), before.last());
            assert_eq!(gap.resubscribed, ["blocks"]);
        }
        other => panic!("expected the gap, got {other:?}"),
    }
    let deadline = Instant::now() + WAIT;
    while events.stats().connections < 2 {
        assert!(
            Instant::now() < deadline,
            "no new subscription: {:?}",
            events.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = publish_blocks(broker.addr, 4, 6).await;
    assert_eq!(read_events(&mut events, 2).await, after);
    eprintln!("waits between attempts while the broker was down: {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_reported_once_without_retrying() {
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = client(ws_url(proxy.addr), "not-a-key", quick_backoff());
    let error = c
        .subscribe_events(&["blocks"])
        .await
        .expect_err("a wrong key is refused");
    assert_eq!(error.code(), Some(ErrorCode::InvalidToken), "{error}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        proxy.accepted().len(),
        1,
        "the client retried a refused key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_gone_after_a_restart_ends_the_stream_after_one_try() {
    let mut broker = spawn_broker(0, &[SUB, PUB]);
    let port = broker.addr.port();
    let proxy = Proxy::start(broker.addr).await;
    let c = client(ws_url(proxy.addr), SUB_KEY, quick_backoff());
    let mut events = c.subscribe_events(&["blocks"]).await.expect("subscribed");
    broker.kill();
    // Back without the subscriber's key.
    let broker = spawn_broker(port, &[PUB]);
    match next(&mut events).await {
        Event::Error(e) => assert_eq!(e.code(), Some(ErrorCode::InvalidToken), "{e}"),
        other => panic!("expected the refusal, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, events.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends after a refused key"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        metrics(broker.addr)
            .await
            .contains("rustorium_rejections_total{reason=\"invalid_token\"} 1"),
        "the restarted broker refused the key once, and was not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_silence_is_a_dead_connection_resumed_with_everything() {
    let mut cfg = config();
    cfg.heartbeat.interval_ms = 200;
    let b = start(cfg);
    let proxy = Proxy::start(b.addr).await;
    let c = WebSocketClient::new()
        .with_endpoint(ws_url(proxy.addr))
        .with_api_key(SUB_KEY)
        .with_backoff(quick_backoff())
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_heartbeat_margin(Duration::from_millis(200))
        .build()
        .expect("client");
    let mut events = c.subscribe_events(&["blocks"]).await.expect("subscribed");
    let first = publish_blocks(b.addr, 1, 3).await;
    assert_eq!(read_events(&mut events, 2).await, first);
    // Heartbeats keep a quiet connection alive: nothing is resumed over a second of quiet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events.stats().resumes, 0, "{:?}", events.stats());
    // The proxy stalls: the connection stays open and carries nothing.
    proxy.stall_open_connections();
    let stalled = Instant::now();
    let during = publish_blocks(b.addr, 3, 6).await;
    assert_eq!(read_events(&mut events, 3).await, during);
    let took = stalled.elapsed();
    // Silence counts from the last frame heard (at most one interval before the stall).
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "resumed after {took:?}; the silence limit is 600 ms"
    );
    let stats = events.stats();
    assert_eq!((stats.resumes, stats.gaps), (1, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_4005_and_resumed_with_everything() {
    const EVENTS: u64 = 2000;
    const PER_BATCH: u64 = 40;
    let mut cfg = config();
    cfg.limits.connection_queue_bytes = 2 * 1024 * 1024;
    cfg.publish.max_stall_ms = 300;
    cfg.publish.stuck_reader_ms = 300;
    let b = start(cfg);
    let c = WebSocketClient::new()
        .with_endpoint(ws_url(b.addr))
        .with_api_key(SUB_KEY)
        .with_backoff(quick_backoff())
        .with_buffer(4)
        .build()
        .expect("client");
    let mut events = c.subscribe_events(&["blocks"]).await.expect("subscribed");
    // The application reads nothing while 33 MB are published.
    let mut published = Vec::new();
    for start in (0..EVENTS).step_by(PER_BATCH as usize) {
        let batch: Vec<Value> = (start..start + PER_BATCH)
            .map(|n| {
                let mut e = block(n);
                e["data"]["pad"] = json!("p".repeat(16 * 1024));
                e
            })
            .collect();
        published.extend(publish_ok(b.addr, &json!(batch)).await);
    }
    assert_eq!(
        events.stats().resumes,
        0,
        "nothing resumed while the application is stalled"
    );
    // It reads again: everything, in order, once.
    let got = read_events(&mut events, published.len()).await;
    assert_eq!(got, published);
    let stats = events.stats();
    assert_eq!((stats.resumes, stats.gaps), (1, 0), "{stats:?}");
    let m = metrics(b.addr).await;
    assert!(
        m.contains("rustorium_rejections_total{reason=\"slow_consumer\"} 1"),
        "the broker closed the stalled reader 4005"
    );
}

const TOKEN: &str = "0x4d544b0000000000000000000000000000000001";
const OTHER_TOKEN: &str = "0x53544b0000000000000000000000000000000002";

fn token_update(token: &str, i: u64) -> Value {
    json!({"channel": "token_updates", "data": {"token_id": token, "price": format!("{i}.5"),
        "volume": i.to_string(), "timestamp": "2024-01-01T12:00:00Z"}})
}

/// The id of a typed update, and what it says (`token:PRICE`, `market:SYMBOL`, `block:N`).
fn describe(update: Update) -> (String, String) {
    match update {
        Update::Token(t) => (t.meta.id, format!("token:{}", t.price.unwrap_or_default())),
        Update::Market(m) => (m.meta.id, format!("market:{}", m.symbol)),
        Update::Block(b) => (b.meta.id, format!("block:{}", b.number)),
        other => panic!("unexpected item {other:?}"),
    }
}

/// The first `count` items of a typed stream, each as [`describe`] tells it.
async fn read_updates(
    updates: &mut rustorium_sdk::UpdateStream,
    count: usize,
) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        got.push(describe(next(updates).await.expect("a typed update")));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_typed_stream_keeps_its_filters_across_cuts() {
    const ROUNDS: u64 = 300;
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = client(format!("ws://{}/v1", proxy.addr), SUB_KEY, quick_backoff());
    let mut updates = c
        .subscribe([
            Subscription::token_updates().token_id(TOKEN),
            Subscription::market_data(["MTK/USD"]),
        ])
        .await
        .expect("subscribed");
    proxy.cut_after(Some(100..3000));
    proxy.cut_open_connections();
    let mut want = Vec::new();
    for i in 0..ROUNDS {
        // Four events a round; the filters let two through.
        let batch = json!([
            token_update(TOKEN, i),
            token_update(OTHER_TOKEN, i),
            tick("MTK/USD", i),
            tick("STK/USD", i)
        ]);
        let ids = publish_ok(b.addr, &batch).await;
        want.push((ids[0].clone(), format!("token:{i}.5")));
        want.push((ids[2].clone(), "market:MTK/USD".to_owned()));
    }
    assert_eq!(read_updates(&mut updates, want.len()).await, want);
    let stats = updates.stats();
    assert!(
        stats.resumes >= 10 && stats.gaps == 0,
        "{stats:?} over {} cuts",
        proxy.cuts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmations_stream_resumes_from_release_ids() {
    const BLOCKS: u64 = 300;
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = client(format!("ws://{}/v1", proxy.addr), SUB_KEY, quick_backoff());
    let mut updates = c
        .subscribe([Subscription::blocks().confirmations(3)])
        .await
        .expect("subscribed");
    proxy.cut_after(Some(100..2000));
    proxy.cut_open_connections();
    let ids = publish_blocks(b.addr, 1, BLOCKS + 1).await;
    // Block n is released by block n + 2, as the frame `ID(n+2).ID(n)`.
    let want: Vec<(String, String)> = (1..=BLOCKS - 2)
        .map(|n| {
            let (release, own) = (&ids[(n + 1) as usize], &ids[(n - 1) as usize]);
            (format!("{release}.{own}"), format!("block:{n}"))
        })
        .collect();
    assert_eq!(read_updates(&mut updates, want.len()).await, want);
    let stats = updates.stats();
    assert!(
        stats.resumes >= 10 && stats.gaps == 0,
        "{stats:?} over {} cuts",
        proxy.cuts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_publishes_answer_typed_on_both_endpoints() {
    const ALICE: &str = "0xa11ce00000000000000000000000000000000001";
    const BOB: &str = "0xb0b0000000000000000000000000000000000002";
    let b = start(config());
    for path in ["ws", "v1"] {
        let url = format!("ws://{}/{path}", b.addr);
        let all = client(url.clone(), ALL_KEY, quick_backoff());
        let info = all.get_token_info(TOKEN).await.expect("token info");
        assert_eq!(
            (info.symbol.as_str(), info.token_id.as_str()),
            ("MTK", TOKEN)
        );
        let before = all.get_balance(BOB, TOKEN).await.expect("balance");
        let mut txs = all
            .subscribe([Subscription::transactions()])
            .await
            .expect("subscribed");
        let request = TransactionRequest {
            from: ALICE.into(),
            to: BOB.into(),
            amount: "7".into(),
            token_id: TOKEN.into(),
        };
        let sent = all.execute_transaction(&request).await.expect("executed");
        assert_eq!(sent.status, "pending");
        match next(&mut txs).await {
            Ok(Update::TransactionConfirmed(tx)) => assert_eq!(tx.hash, sent.transaction_id),
            other => panic!("expected the confirmation, got {other:?}"),
        }
        let after = all.get_balance(BOB, TOKEN).await.expect("balance");
        let (b0, b1): (u128, u128) = (
            before.balance.parse().expect("decimal"),
            after.balance.parse().expect("decimal"),
        );
        assert_eq!(b1, b0 + 7, "{path}");

        // Refusals carry the broker's code, the same on both endpoints.
        let unknown = all
            .get_token_info("0x0000000000000000000000000000000000000bad")
            .await;
        assert_eq!(
            unknown.map_err(|e| e.code()),
            Err(Some(ErrorCode::CommandFailed)),
            "{path}"
        );
        let sub = client(url.clone(), SUB_KEY, quick_backoff());
        let refused = sub
            .publish(PublishEvent::new("blocks", json!({"number": 1})))
            .await;
        assert_eq!(
            refused.map_err(|e| e.code()),
            Err(Some(ErrorCode::Forbidden)),
            "{path}"
        );
        let bad = all
            .publish(PublishEvent::new("blocks", json!({"no_number": 1})))
            .await;
        assert_eq!(
            bad.map_err(|e| e.code()),
            Err(Some(ErrorCode::InvalidRequest)),
            "{path}"
        );

        // A publish's id is the id its subscribers see.
        let mut blocks = sub
            .subscribe([Subscription::blocks()])
            .await
            .expect("subscribed");
        let publisher = client(url, PUB_KEY, quick_backoff());
        let id = publisher
            .publish(PublishEvent::new("blocks", json!({"number": 9})))
            .await
            .expect("published");
        match next(&mut blocks).await {
            Ok(Update::Block(block)) => assert_eq!((block.meta.id, block.number), (id, 9)),
            other => panic!("expected the block, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_reply_times_out() {
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = WebSocketClient::new()
        .with_endpoint(ws_url(proxy.addr))
        .with_api_key(ALL_KEY)
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    c.get_token_info(TOKEN).await.expect("answered");
    proxy.stall_open_connections();
    let started = Instant::now();
    let late = c.get_token_info(TOKEN).await;
    assert_eq!(late, Err(Error::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_stream_of_more_subscriptions_than_the_message_cap_waits_it_out() {
    // The v1 dialect takes 10 messages a second: the 11th and 12th subscribe are refused
    // `rate_limited` and sent again a second later.
    let b = start(config());
    let c = client(format!("ws://{}/v1", b.addr), SUB_KEY, quick_backoff());
    let tokens: Vec<String> = (1..=12u64).map(|n| format!("0x{n:040x}")).collect();
    let mut updates = c
        .subscribe(
            tokens
                .iter()
                .map(|t| Subscription::token_updates().token_id(t)),
        )
        .await
        .expect("all twelve subscribed");
    let batch: Vec<Value> = tokens.iter().map(|t| token_update(t, 1)).collect();
    let ids = publish_ok(b.addr, &json!(batch)).await;
    let got: Vec<String> = read_updates(&mut updates, ids.len())
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_ends_its_subscriptions_at_the_broker() {
    let b = start(config());
    let c = client(ws_url(b.addr), SUB_KEY, quick_backoff());
    let events = c.subscribe_events(&["blocks"]).await.expect("subscribed");
    let live = |m: &str, line: &str| m.lines().any(|l| l == line);
    assert!(live(
        &metrics(b.addr).await,
        "rustorium_subscriptions{channel=\"blocks\"} 1"
    ));
    drop(events);
    // Closed with 1000: nothing is kept for a resume.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics(b.addr).await;
        if live(&m, "rustorium_connections 0") && live(&m, "rustorium_parked_subscriptions 0") {
            break;
        }
        assert!(Instant::now() < deadline, "still connected or parked:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
