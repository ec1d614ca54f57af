//! Failover bench (README "Several brokers on one Redis", "Failover figures"): real
//! `redis-server` and `redis-sentinel` processes and three broker nodes (the release
//! binary's test build) on loopback, the helpers of `tests/common`. Reports:
//! - failover: a master with one replica and three Sentinels, a publisher on one node
//!   publishing one event every 2 ms; the master is SIGKILLed; the time from the kill to
//!   the first acknowledged publish on the new master, and what the publisher saw meanwhile
//!   (`unavailable` answers and for how long), over `--rounds` failovers (a fresh set each);
//! - throughput: publish throughput and latency (p50, p99) through one node with
//!   `min_replicas_acked` 0 and 1, `--publishers` concurrent HTTP publishers for `--secs`.
//!
//! `cargo bench --bench failover -- [--rounds 10] [--publishers 8] [--secs 5]`
//!
//! Skips (says so) when redis-server or redis-sentinel is not installed.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{prefix, Node};
use common::sentinel::{RedisSet, ReplicaOf};
use common::{publish, tick, PUB_KEY};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nodes(set: &RedisSet, test: &str, engine: &str, n: usize) -> Vec<Node> {
    let p = prefix(test);
    (0..n)
        .map(|_| {
            let fields = format!("{}{engine}\n", set.engine_toml());
            Node::start_with("redis://127.0.0.1:1/", &p, &fields, "")
        })
        .collect()
}

/// One failover round: what the publisher saw.
struct Round {
    /// Kill → first acknowledged publish on the new master.
    to_first_ack: Duration,
    unavailable: usize,
    /// First to last `unavailable` answer.
    unavailable_for: Duration,
}

async fn failover_round(i: u64) -> Option<Round> {
    let mut set = RedisSet::start(&[ReplicaOf::Master], &[]).await?;
    let nodes = nodes(&set, &format!("benchfo{i}"), "", 3);
    let addr = nodes[0].addr;
    let stop = Arc::new(AtomicBool::new(false));
    let killed: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new((
        None::<Instant>,
        0usize,
        None::<Instant>,
        None::<Instant>,
    )));
    let (s, k, out) = (stop.clone(), killed.clone(), seen.clone());
    let publisher = tokio::spawn(async move {
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            n += 1;
            let r = publish(addr, PUB_KEY, &tick("BENCH", n)).await;
            let now = Instant::now();
            let after_kill = k.lock().expect("lock").is_some();
            {
                let mut o = out.lock().expect("lock");
                match r.status {
                    200 if after_kill && o.0.is_none() => o.0 = Some(now),
                    200 => {}
                    _ if after_kill => {
                        o.1 += 1;
                        o.2.get_or_insert(now);
                        o.3 = Some(now);
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = set.master_port().await;
    set.server(old).kill();
    let at = Instant::now();
    *killed.lock().expect("lock") = Some(at);
    let deadline = at + Duration::from_secs(60);
    while seen.lock().expect("lock").0.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let o = seen.lock().expect("lock");
    let first = o.0?;
    Some(Round {
        to_first_ack: first.saturating_duration_since(at),
        unavailable: o.1,
        unavailable_for: match (o.2, o.3) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        },
    })
}

/// Publish throughput and latency through one node with `engine` fields.
async fn throughput(engine: &str, publishers: u64, secs: u64) -> Option<(f64, Duration, Duration)> {
    let set = RedisSet::start(&[ReplicaOf::Master], &[]).await?;
    let nodes = nodes(&set, "benchtp", engine, 1);
    let addr: SocketAddr = nodes[0].addr;
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let t = Instant::now();
                let r = publish(addr, PUB_KEY, &tick("TP", p * 1_000_000 + n)).await;
                if r.status == 200 {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    let q = |f: f64| {
        all.get(((all.len() as f64 * f) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Some((all.len() as f64 / secs as f64, q(0.5), q(0.99)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = arg("--rounds", 10);
    let publishers = arg("--publishers", 8);
    let secs = arg("--secs", 5);
    let mut done = Vec::new();
    for i in 0..rounds {
        match failover_round(i).await {
            Some(r) => {
                println!(
                    "round {}: first ack {:?} after the kill; {} unavailable answers over {:?}",
                    i + 1,
                    r.to_first_ack,
                    r.unavailable,
                    r.unavailable_for
                );
                done.push(r);
            }
            None => {
                println!(
                    "redis-server or redis-sentinel is not installed, or the round failed: skipped"
                );
                return;
            }
        }
    }
    let mut t: Vec<Duration> = done.iter().map(|r| r.to_first_ack).collect();
    t.sort_unstable();
    if let (Some(median), Some(worst)) = (t.get(t.len() / 2), t.last()) {
        println!("failover, kill to first acknowledged publish: median {median:?}, worst {worst:?} over {} rounds", t.len());
    }
    let unavailable: Vec<usize> = done.iter().map(|r| r.unavailable).collect();
    let spans: Vec<Duration> = done.iter().map(|r| r.unavailable_for).collect();
    println!("a publisher every 2 ms saw unavailable answers per failover: {unavailable:?}, over {spans:?}");
    for (mode, engine) in [
        ("min_replicas_acked = 0", ""),
        (
            "min_replicas_acked = 1",
            "min_replicas_acked = 1\nreplicas_ack_timeout_ms = 1000",
        ),
    ] {
        if let Some((rate, p50, p99)) = throughput(engine, publishers, secs).await {
            println!("{mode}: {rate:.0} publishes/s with {publishers} publishers, latency p50 {p50:?}, p99 {p99:?}");
        }
    }
}
