//! The scenarios of the load issues (A, A-open, B, C, D, E, and F: wallets on one
//! channel, each filtered on its own address) and one run of a scenario
//! against one target: start the broker, connect and subscribe, measure idle memory,
//! publish, wait for every delivery, and collect the figures.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::client::{self, source_for, SETUP};
use super::publisher::{
    drive, NatsPub, Pace, Published, RustoriumHttp, RustoriumWs, Via, WRITE_EVENTS,
};
use super::report::{cpu_seconds, peak_rss_kib, rss_kib, Report};
use super::tally::Tally;
use super::target::{self, Needs, Protocol, TargetSpec};
use super::topic::Topic;

/// A load scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (A, A-open, B, C, D, E, or custom).
    pub name: String,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Channels; subscriber `i` is on channel `i % channels`, event `s` on `s % channels`.
    /// With `wallets`, the number of wallets, one per subscriber.
    pub channels: usize,
    /// Routed by wallet (scenario F): subscriber `i` follows wallet `i` on
    /// `transaction_updates` (NATS: subject `transaction_updates.<address>`), and each
    /// event goes to a pseudo-random wallet.
    pub wallets: bool,
    /// Events to publish.
    pub events: u64,
    /// Payload size in bytes.
    pub payload: usize,
    /// Publishing pace.
    pub pace: Pace,
    /// Most events per publish batch.
    pub batch: u64,
    /// Most events per write of the publisher (each still in frames of `batch`; NATS: one
    /// `PUB` each); 1 writes every frame on its own.
    pub write_events: u64,
    /// How events reach rustorium-broker.
    pub via: Via,
    /// Seconds to hold the connections idle before publishing (scenario D).
    pub hold: Duration,
    /// Heartbeat / ping interval of the broker under test, in milliseconds.
    pub heartbeat_ms: u64,
    /// Loopback source addresses to spread connections over.
    pub sources: usize,
    /// Connects in flight at once.
    pub connect_parallel: usize,
    /// The whole run stops by itself after this long.
    pub max_duration: Duration,
    /// A run with no delivery progress for this long stops.
    pub stall: Duration,
}

impl Scenario {
    /// The preset called `name`, at full scale.
    pub fn preset(name: &str) -> Result<Scenario, String> {
        let base = Scenario {
            name: name.to_owned(),
            subscribers: 1000,
            channels: 1,
            wallets: false,
            events: 20_000,
            payload: 200,
            pace: Pace::Closed(20),
            // One event per publish frame, as a NATS publisher sends one per PUB: the
            // headline scenarios compare like with like. `A-batched` is its own row.
            batch: 1,
            write_events: WRITE_EVENTS,
            via: Via::WebSocket,
            hold: Duration::ZERO,
            heartbeat_ms: 30_000,
            sources: 1,
            connect_parallel: 64,
            max_duration: Duration::from_secs(300),
            stall: Duration::from_secs(10),
        };
        let s = match name {
            "A" => base,
            "A100" => Scenario {
                pace: Pace::Closed(100),
                ..base
            },
            // Favourable to us: 100 events per publish frame (the NATS side sends 100 PUBs
            // per write). Report it labelled, never as the headline.
            "A-batched" => Scenario {
                pace: Pace::Closed(100),
                batch: 100,
                ..base
            },
            "A-open" => Scenario {
                pace: Pace::Open,
                ..base
            },
            "B" => Scenario {
                events: 1000,
                pace: Pace::Rate(100.0),
                batch: 1,
                ..base
            },
            "C" => Scenario {
                channels: 1000,
                events: 100_000,
                pace: Pace::Closed(1000),
                ..base
            },
            "D" => Scenario {
                subscribers: 10_000,
                events: 0,
                hold: Duration::from_secs(12),
                heartbeat_ms: 5000,
                ..base
            },
            "E" => Scenario {
                subscribers: 100_000,
                events: 10,
                pace: Pace::Rate(1.0),
                batch: 1,
                stall: Duration::from_secs(60),
                ..base
            },
            // Wallets: one channel, each subscriber filtered on its own address, events one
            // per frame at a fixed rate, each to one random wallet.
            "F" => Scenario {
                channels: base.subscribers,
                wallets: true,
                events: 20_000,
                pace: Pace::Rate(2000.0),
                ..base
            },
            _ => {
                return Err(format!(
                    "unknown scenario {name}: A, A100, A-batched, A-open, B, C, D, E, F"
                ))
            }
        };
        Ok(s)
    }

    /// The same scenario at toy scale, for the test suite: a few dozen connections and a
    /// few hundred events, fast heartbeats.
    pub fn toy(mut self) -> Scenario {
        self.subscribers = self
            .subscribers
            .min(if self.name == "D" || self.name == "E" {
                200
            } else {
                50
            });
        self.channels = self.channels.min(self.subscribers);
        self.events = match self.pace {
            _ if self.wallets => {
                self.pace = Pace::Rate(1000.0);
                200
            }
            Pace::Rate(r) if r < 10.0 => {
                self.pace = Pace::Rate(20.0);
                5
            }
            Pace::Rate(_) => 40,
            _ => self.events.min(400),
        };
        if let Pace::Closed(k) = self.pace {
            self.pace = Pace::Closed(k.min(20));
        }
        self.batch = self.batch.min(25);
        self.hold = self.hold.min(Duration::from_millis(1500));
        self.heartbeat_ms = self.heartbeat_ms.min(1000);
        self.max_duration = Duration::from_secs(60);
        self
    }
}

/// Runs `s` once against `spec`.
pub async fn run(spec: &TargetSpec, s: &Scenario) -> Result<Report, String> {
    let limit = super::report::file_limit();
    if s.subscribers + 16 > limit as usize {
        return Err(format!(
            "{} connections need more open files than this process may have ({limit}; RLIMIT_NOFILE hard limit)",
            s.subscribers
        ));
    }
    let needs = Needs {
        connections: s.subscribers + 1,
        channels: s.channels,
        heartbeat_ms: s.heartbeat_ms,
    };
    let running = target::start(spec, needs)?;
    let pids = running.pids.clone();
    let rss = |f: fn(u32) -> u64| (!pids.is_empty()).then(|| pids.iter().map(|p| f(*p)).sum());
    let cpu = || (!pids.is_empty()).then(|| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>());
    let redis_pid = running.redis_pid;
    let deadline = Instant::now() + s.max_duration;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss(rss_kib);
    let tally = Tally::new(s.subscribers, s.channels, s.events);
    let tally = Rc::new(if s.wallets { tally.wallets() } else { tally });

    // Connect and subscribe, a bounded number at a time.
    let t0 = Instant::now();
    let gate = Rc::new(Semaphore::new(s.connect_parallel.max(1)));
    let ready = Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::with_capacity(s.subscribers);
    for i in 0..s.subscribers {
        let (gate, ready, tally) = (gate.clone(), ready.clone(), tally.clone());
        let source = source_for(i, s.sources);
        let topic = Topic::new(s.wallets, i % s.channels.max(1));
        let protocol = running.protocol;
        tasks.push(tokio::task::spawn_local(async move {
            let Ok(permit) = gate.acquire().await else {
                return;
            };
            match tokio::time::timeout(SETUP, client::subscribe(protocol, i, source, topic)).await {
                Ok(Ok(subscribed)) => {
                    drop(permit);
                    ready.set(ready.get() + 1);
                    client::read(subscribed, tally).await;
                }
                Ok(Err(e)) => tally.error(e),
                Err(_) => tally.error("subscribe timed out".into()),
            }
        }));
    }
    let abort_all = |tasks: &[tokio::task::JoinHandle<()>]| tasks.iter().for_each(|t| t.abort());
    while ready.get() < s.subscribers && tally.errors() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_time = t0.elapsed();
    if ready.get() < s.subscribers {
        abort_all(&tasks);
        let r = tally.summary(0);
        return Err(format!(
            "{} of {} subscribers connected; first error: {}",
            ready.get(),
            s.subscribers,
            r.first_error.unwrap_or_else(|| "none (time limit)".into())
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss(rss_kib);
    if !s.hold.is_zero() {
        tokio::time::sleep(
            s.hold
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let rss_held = rss(rss_kib);
    let cpu_broker0 = cpu();
    let cpu_redis0 = redis_pid.map(cpu_seconds);
    let cpu_gen0 = cpu_seconds(std::process::id());

    let published = if s.events == 0 {
        Published::default()
    } else {
        match running.protocol {
            Protocol::Rustorium(nodes) => match s.via {
                Via::WebSocket => {
                    let mut sink = RustoriumWs::connect(nodes.publisher(), s.payload).await?;
                    drive(&mut sink, &tally, s, deadline).await
                }
                Via::Http => {
                    let mut sink = RustoriumHttp::connect(nodes.publisher(), s.payload).await?;
                    drive(&mut sink, &tally, s, deadline).await
                }
            },
            Protocol::Nats { client, .. } => {
                let mut sink = NatsPub::connect(client, s.payload).await?;
                drive(&mut sink, &tally, s, deadline).await
            }
        }
    };
    let publish_start = Instant::now() - published.elapsed;

    // Wait for every delivery, or for progress to stop.
    let expected = tally.expected(published.events);
    let mut last = (tally.received(), Instant::now());
    while tally.received() < expected && Instant::now() < deadline {
        if tally.received() != last.0 {
            last = (tally.received(), Instant::now());
        } else if last.1.elapsed() > s.stall {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = tally.summary(published.events);
    let rss_after = rss(rss_kib);
    let report = Report {
        target: running_name(spec),
        scenario: s.name.clone(),
        subscribers: s.subscribers,
        channels: s.channels,
        connect_time,
        delivery_time: received
            .last_delivery
            .map(|t| t.saturating_duration_since(publish_start))
            .unwrap_or_default(),
        published,
        received,
        rss_before,
        rss_idle,
        rss_held,
        rss_after,
        rss_peak: rss(peak_rss_kib),
        cpu_broker: cpu().and_then(|c| cpu_broker0.map(|c0| c - c0)),
        cpu_redis: redis_pid.and_then(|p| cpu_redis0.map(|c0| cpu_seconds(p) - c0)),
        cpu_generator: cpu_seconds(std::process::id()) - cpu_gen0,
    };
    abort_all(&tasks);
    drop(running);
    Ok(report)
}

fn running_name(spec: &TargetSpec) -> String {
    match spec {
        TargetSpec::InProc => "rustorium (in-process)".into(),
        TargetSpec::Cluster(n) => format!("rustorium (redis, {n} nodes)"),
        other => other.name().into(),
    }
}
