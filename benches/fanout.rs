//! Fan-out bench against the real broker binary: N subscribers on `blocks`, M events
//! published over HTTP in batches; reports connect time, the broker's RSS per idle
//! connection, delivered events per second, and loss/order.
//!
//! `cargo bench --bench fanout -- [--subscribers N] [--events M] [--batch B]`
//! Loopback only; every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{cpu_seconds, publish, rss_kib, spawn_broker, KEY};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);

struct Args {
    subscribers: usize,
    events: usize,
    batch: usize,
}

fn args() -> Args {
    let mut a = Args {
        subscribers: 1000,
        events: 2000,
        batch: 100,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        let n = pair[1].parse().unwrap_or(0);
        match pair[0].as_str() {
            "--subscribers" if n > 0 => a.subscribers = n,
            "--events" if n > 0 => a.events = n,
            "--batch" if n > 0 => a.batch = n.min(1000),
            _ => {}
        }
    }
    a
}

async fn run(a: Args) -> Result<(), String> {
    let (mut child, addr) = spawn_broker(&format!("max_connections = {}", a.subscribers + 10), "")?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);

    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(a.subscribers);
    for _ in 0..a.subscribers {
        let url = format!("ws://{addr}/ws?token={KEY}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        ws.send(Message::text(
            r#"{"type":"subscribe","id":"s","data":{"channel":"blocks"}}"#,
        ))
        .await
        .map_err(|e| e.to_string())?;
        conns.push(ws);
    }
    for ws in conns.iter_mut() {
        match tokio::time::timeout(LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("subscribe_success") => {}
            other => return Err(format!("subscribe failed: {other:?}")),
        }
    }
    let connect_time = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_kib(pid);
    let cpu0 = cpu_seconds(pid);

    let events = a.events;
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (mut got, mut last, mut disorder) = (0usize, None::<u64>, 0usize);
                let deadline = tokio::time::Instant::now() + LIMIT;
                while got < events {
                    match tokio::time::timeout_at(deadline, ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            // The number sits after `"number":`; no JSON tree needed.
                            let n = t
                                .split("\"number\":")
                                .nth(1)
                                .and_then(|r| r.split([',', '}']).next())
                                .and_then(|v| v.parse::<u64>().ok());
                            if n.is_some() {
                                if last.is_some() && n <= last {
                                    disorder += 1;
                                }
                                last = n;
                                got += 1;
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                (got, disorder)
            })
        })
        .collect();

    let t1 = Instant::now();
    let mut n = 0;
    while n < events {
        let end = (n + a.batch).min(events);
        let batch: Vec<String> = (n..end)
            .map(|i| format!(r#"{{"channel":"blocks","data":{{"number":{i},"hash":"0x{i:064x}","parent_hash":"0x00","timestamp":"2024-01-23T12:34:56Z","transactions":[]}}}}"#))
            .collect();
        publish(addr, &format!("[{}]", batch.join(",")))?;
        n = end;
    }
    let publish_time = t1.elapsed();
    let rss_peak_probe = rss_kib(pid);
    let (mut received, mut disorder) = (0usize, 0usize);
    for r in readers {
        let (g, d) = r.await.map_err(|e| e.to_string())?;
        received += g;
        disorder += d;
    }
    let elapsed = t1.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    let expected = a.subscribers * events;
    println!("subscribers           {}", a.subscribers);
    println!(
        "connect+subscribe     {:.2} s ({:.0}/s)",
        connect_time.as_secs_f64(),
        a.subscribers as f64 / connect_time.as_secs_f64()
    );
    println!("broker RSS before     {} KiB", rss_before);
    println!(
        "broker RSS idle       {} KiB ({:.1} KiB per connection)",
        rss_idle,
        (rss_idle.saturating_sub(rss_before)) as f64 / a.subscribers as f64
    );
    println!("broker RSS at publish {} KiB", rss_peak_probe);
    println!(
        "events published      {} in {:.2} s",
        events,
        publish_time.as_secs_f64()
    );
    println!(
        "deliveries            {received} of {expected} (loss {}), order violations {disorder}",
        expected - received
    );
    println!(
        "delivered/s           {:.0} (all received after {:.2} s)",
        received as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("broker CPU            {cpu:.2} s");
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

fn main() {
    common::run_bench(run(args()));
}
