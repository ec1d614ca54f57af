//! The Rust SDK's delivery rate against the release binary, beside a bare tokio-tungstenite
//! reader of the same workload: `--events` blocks (default 100,000) published over HTTP in
//! batches of 1000 while one subscriber reads them all; events per second from the first
//! publish to the last event read, best of `--runs` (default 3). The bare reader only counts
//! frames; the SDK also parses each into a typed `Event`, keeps the resume position and
//! hands it through its bounded channel: the difference is what the SDK costs.
//!
//! `cargo bench --bench sdk -- [--events N] [--runs N]`

mod common;
mod loadgen;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{arg, publish, run_bench, spawn_broker, KEY};
use futures_util::{SinkExt, StreamExt};
use rustorium_sdk::{Event, WebSocketClient};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);
const BATCH: usize = 1000;

fn batch(from: usize) -> String {
    let items: Vec<String> = (from..from + BATCH)
        .map(|i| format!(r#"{{"channel":"blocks","data":{{"number":{i},"hash":"0x{i:x}","parent_hash":"0x0","timestamp":1706013296,"transactions":[]}}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// Publishes `events` blocks on a thread of its own; the time the first publish started.
fn publish_all(addr: SocketAddr, events: usize) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        for from in (0..events).step_by(BATCH) {
            publish(addr, &batch(from))?;
        }
        Ok(())
    })
}

async fn bare(addr: SocketAddr, events: usize) -> Result<Duration, String> {
    let url = format!("ws://{addr}/ws?token={KEY}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(
        r#"{"type":"subscribe","id":"s","data":{"channel":"blocks"}}"#,
    ))
    .await
    .map_err(|e| e.to_string())?;
    let mut seen = 0;
    let mut started = None;
    while seen < events {
        match tokio::time::timeout(LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.contains("subscribe_success") {
                    started = Some((Instant::now(), publish_all(addr, events)));
                } else if t.contains("\"new_block\"") {
                    seen += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("bare reader: connection ended: {other:?}")),
        }
    }
    let (t0, publisher) = started.ok_or("no subscribe reply")?;
    let took = t0.elapsed();
    publisher.join().map_err(|_| "publisher panicked")??;
    Ok(took)
}

async fn sdk(addr: SocketAddr, events: usize) -> Result<Duration, String> {
    let client = WebSocketClient::new()
        .with_endpoint(format!("ws://{addr}/ws"))
        .with_api_key(KEY)
        .build()
        .map_err(|e| e.to_string())?;
    let mut stream = client
        .subscribe_events(&["blocks"])
        .await
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let publisher = publish_all(addr, events);
    let mut seen = 0;
    while seen < events {
        match tokio::time::timeout(LIMIT, stream.next()).await {
            Ok(Some(Event::NewBlock(_))) => seen += 1,
            Ok(Some(other)) => return Err(format!("sdk: unexpected {other:?}")),
            _ => return Err("sdk: stream ended or stalled".into()),
        }
    }
    let took = t0.elapsed();
    publisher.join().map_err(|_| "publisher panicked")??;
    Ok(took)
}

fn main() {
    let events = arg("--events", 100_000).div_ceil(BATCH) * BATCH;
    let runs = arg("--runs", 3).max(1);
    run_bench(async move {
        let (_broker, addr) =
            spawn_broker("", "[limits]\npublish_events_per_second = 1000000000\n")?;
        println!("{events} blocks, one subscriber, published over HTTP in batches of {BATCH}; best of {runs}");
        println!("{:<38} {:>12} {:>14}", "reader", "seconds", "events/s");
        let mut best = [Duration::MAX; 2];
        for _ in 0..runs {
            best[0] = best[0].min(bare(addr, events).await?);
            best[1] = best[1].min(sdk(addr, events).await?);
        }
        for (name, took) in [
            ("bare tokio-tungstenite (counts frames)", best[0]),
            ("rustorium-sdk EventStream (typed)", best[1]),
        ] {
            let rate = events as f64 / took.as_secs_f64();
            println!("{name:<38} {:>12.3} {rate:>14.0}", took.as_secs_f64());
        }
        Ok(())
    });
}
