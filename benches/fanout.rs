//! Fan-out bench against the real broker binary: N subscribers on `blocks`, M events
//! published over HTTP in batches; reports connect time, the broker's RSS per idle
//! connection, delivered events per second, and loss/order.
//!
//! `cargo bench --bench fanout -- [--subscribers N] [--events M] [--batch B]`
//! Loopback only; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "bench-key";
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn spawn_broker(max_conns: usize) -> Result<(Child, SocketAddr), String> {
    let path = std::env::temp_dir().join(format!("rustorium-bench-{}.toml", std::process::id()));
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[[keys]]\nname = \"bench\"\nsecret = \"{KEY}\"\nroles = [\"subscribe\", \"publish\"]\nmax_connections = {max_conns}\n"
    );
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustorium-broker"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    for line in BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(20)
    {
        if let Some(a) = line.strip_prefix("rustorium-broker listening on ") {
            let addr = a.trim().parse().map_err(|_| "bad address")?;
            return Ok((child, addr));
        }
    }
    Err("broker printed no address".into())
}

fn publish(addr: SocketAddr, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(resp)
    }
}

async fn run(a: Args) -> Result<(), String> {
    let (mut child, addr) = spawn_broker(a.subscribers + 10)?;
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
    rustorium_broker::server::raise_file_limit();
    let a = args();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("runtime: {e}"),
    };
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
