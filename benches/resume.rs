//! Resume bench against the release binary. Reports:
//! - replay: one subscriber drops its TCP connection, `--events` events are published while
//!   it is away, it reconnects: resume latency (reconnect sent → reply) and replayed events
//!   per second (reconnect sent → last replayed event);
//! - stall: the broker's peak RSS while `--readers` subscribers read a burst of
//!   `--burst` 1 KiB events, with and without one extra subscriber that reads nothing.
//!
//! - history (with `--history-secs S`): events of ~200 bytes published at `--rate R` per
//!   second for S seconds, all kept by the resume window: the broker's RSS and the
//!   history gauges every 10 s.
//!
//! `cargo bench --bench resume -- [--events N] [--readers N] [--burst N] [--history-secs S --rate R]`

mod common;
mod loadgen;

use std::time::{Duration, Instant};

use common::{arg, publish, rss_kib, spawn_broker, KEY};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
const LIMIT: Duration = Duration::from_secs(120);

async fn connect(addr: std::net::SocketAddr) -> Result<Ws, String> {
    let url = format!("ws://{addr}/ws?token={KEY}");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match tokio::time::timeout(LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("connection ended: {other:?}")),
        }
    }
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.split(&format!("\"{name}\":")).nth(1)?;
    let rest = rest.trim_start_matches('"');
    rest.split(['"', ',', '}']).next()
}

fn events(from: usize, n: usize, pad: usize) -> String {
    let pad = "p".repeat(pad);
    let items: Vec<String> = (from..from + n)
        .map(|i| format!(r#"{{"channel":"blocks","data":{{"number":{i},"hash":"0x{i:x}","parent_hash":"0x0","timestamp":"2024-01-23T12:34:56Z","transactions":[],"pad":"{pad}"}}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

async fn replay(n: usize) -> Result<(), String> {
    let (broker, addr) = spawn_broker(
        "",
        "[resume]\nhistory_events = 1000000\nhistory_bytes = 1073741824\n",
    )?;
    let mut ws = connect(addr).await?;
    ws.send(Message::text(
        r#"{"type":"subscribe","id":"s","data":{"channel":"blocks"}}"#,
    ))
    .await
    .map_err(|e| e.to_string())?;
    let reply = next_text(&mut ws).await?;
    let sid = field(&reply, "subscription_id")
        .ok_or("no subscription id")?
        .to_owned();
    publish(addr, &events(0, 1, 100))?;
    let first = next_text(&mut ws).await?;
    let last_id = field(&first, "id").ok_or("no id")?.to_owned();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for start in (1..=n).step_by(1000) {
        publish(addr, &events(start, 1000.min(n + 1 - start), 100))?;
    }
    let mut ws = connect(addr).await?;
    let t0 = Instant::now();
    ws.send(Message::text(format!(
        r#"{{"type":"reconnect","id":"r","data":{{"last_message_id":"{last_id}","subscriptions":["{sid}"]}}}}"#
    )))
    .await
    .map_err(|e| e.to_string())?;
    let reply = next_text(&mut ws).await?;
    let latency = t0.elapsed();
    let replayed: usize = field(&reply, "replayed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut got = 0;
    while got < replayed {
        next_text(&mut ws).await?;
        got += 1;
    }
    let all = t0.elapsed();
    println!("replay: {n} events published while away, reply {reply:.120}");
    println!(
        "  resume latency (reconnect sent -> reply)  {:.2} ms",
        latency.as_secs_f64() * 1e3
    );
    println!(
        "  replayed {got} events in {:.3} s: {:.0} events/s",
        all.as_secs_f64(),
        got as f64 / all.as_secs_f64()
    );
    drop(broker);
    Ok(())
}

async fn stall(readers: usize, burst: usize, with_stalled: bool) -> Result<u64, String> {
    let (broker, addr) = spawn_broker(&format!("max_connections = {}", readers + 10), "")?;
    let pid = broker.pids.first().copied().unwrap_or(0);
    let sub = r#"{"type":"subscribe","id":"s","data":{"channel":"blocks"}}"#;
    let mut stalled = None;
    if with_stalled {
        let mut ws = connect(addr).await?;
        ws.send(Message::text(sub))
            .await
            .map_err(|e| e.to_string())?;
        next_text(&mut ws).await?;
        stalled = Some(ws);
    }
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let mut ws = connect(addr).await?;
        ws.send(Message::text(sub))
            .await
            .map_err(|e| e.to_string())?;
        next_text(&mut ws).await?;
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < burst {
                if next_text(&mut ws).await.is_err() {
                    break;
                }
                n += 1;
            }
            n
        }));
    }
    let base = rss_kib(pid);
    let (peak_tx, peak_rx) = std::sync::mpsc::channel();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while peak_rx.try_recv().is_err() {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let publisher = tokio::task::spawn_blocking(move || {
        for start in (0..burst).step_by(500) {
            publish(addr, &events(start, 500.min(burst - start), 1024))?;
        }
        Ok::<(), String>(())
    });
    publisher.await.map_err(|e| e.to_string())??;
    let mut received = 0;
    for t in tasks {
        received += t.await.map_err(|e| e.to_string())?;
    }
    let _ = peak_tx.send(());
    let peak = sampler.join().unwrap_or(0);
    println!(
        "stall: {readers} readers{} got {received} of {} events; broker RSS {base} KiB before, peak {peak} KiB",
        if with_stalled { " + 1 stalled client" } else { "" },
        readers * burst
    );
    drop(stalled);
    drop(broker);
    Ok(peak)
}

/// Reads one series from the broker's `/metrics`.
fn gauge(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Publishes ~200-byte events at `rate` per second for `secs` seconds (batches of 1% of
/// the rate every 10 ms) and reports the RSS as the history fills.
fn history(secs: usize, rate: usize) -> Result<(), String> {
    let (broker, addr) = spawn_broker(
        "",
        "[resume]\nhistory_events = 2000000\nhistory_bytes = 1073741824\n",
    )?;
    let pid = broker.pids.first().copied().unwrap_or(0);
    let per_tick = (rate / 100).max(1);
    let base = rss_kib(pid);
    println!("history: {rate} events/s of ~200 bytes for {secs} s; broker RSS {base} KiB at start");
    let start = Instant::now();
    let mut sent = 0;
    let mut next_report = 10;
    while start.elapsed() < Duration::from_secs(secs as u64) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
        if sent < due {
            publish(addr, &events(sent, per_tick, 100))?;
            sent += per_tick;
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
        if start.elapsed().as_secs() >= next_report {
            next_report += 10;
            println!(
                "  {:>4} s: {sent} published, history {} events / {:.1} MiB, RSS {} KiB",
                start.elapsed().as_secs(),
                gauge(addr, "rustorium_history_events").unwrap_or(-1.0),
                gauge(addr, "rustorium_history_bytes").unwrap_or(-1.0) / 1048576.0,
                rss_kib(pid)
            );
        }
    }
    let rss = rss_kib(pid);
    let held = gauge(addr, "rustorium_history_events").unwrap_or(0.0);
    println!(
        "history: {sent} published in {:.1} s, {held} held; RSS {rss} KiB ({:.0} bytes per held event over the start)",
        start.elapsed().as_secs_f64(),
        (rss.saturating_sub(base) as f64 * 1024.0) / held.max(1.0)
    );
    drop(broker);
    Ok(())
}

fn main() {
    let (events, readers, burst) = (
        arg("--events", 50_000),
        arg("--readers", 100),
        arg("--burst", 20_000),
    );
    let (history_secs, rate) = (arg("--history-secs", 0), arg("--rate", 10_000));
    if history_secs > 0 {
        rustorium_broker::server::raise_file_limit();
        if let Err(e) = history(history_secs, rate) {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    common::run_bench(async move {
        replay(events).await?;
        let none = stall(readers, burst, false).await?;
        let one = stall(readers, burst, true).await?;
        println!(
            "stall: one stalled client adds {} KiB to the broker's peak RSS",
            one as i64 - none as i64
        );
        Ok(())
    });
}
