//! The operator dashboard: the page, and its stream of samples read as a browser would
//! (server-sent events over a real socket, the key in the `Authorization` header): admin
//! keys only, live numbers at most once a second while a publisher runs, the bound on open
//! pages, and the nodes of a Redis cluster with their state. The page itself is driven in
//! a real headless Chromium by `tests/browser/dashboard.mjs`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::redis_server::redis_server;
use common::{Client, ALL_KEY, PUB_KEY, SUB_KEY, WAIT};
use rustorium_broker::{KeyConfig, Role};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_KEY: &str = "admin-secret-0001";

fn config() -> rustorium_broker::Config {
    let mut c = common::config();
    c.keys.push(KeyConfig {
        name: "ops".into(),
        secret: ADMIN_KEY.into(),
        roles: vec![Role::Admin],
        max_connections: None,
    });
    c
}

/// An open `GET /dashboard/stream`, or the refusal.
enum Opened {
    Stream(Events),
    Refused(u16, Value),
}

/// Server-sent events read off a chunked HTTP/1.1 response.
struct Events {
    tcp: TcpStream,
    /// Raw bytes not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet split into events.
    text: String,
}

impl Events {
    /// The next event's name and data, within `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data).expect("event data is JSON");
                return (name, value);
            }
            let mut buf = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf))
                .await
                .expect("an event in time")
                .expect("stream read");
            assert!(n > 0, "the stream ended");
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            let chunk = String::from_utf8(self.raw[start..start + size].to_vec()).expect("utf-8");
            self.text.push_str(&chunk);
            self.raw.drain(..start + size + 2);
        }
    }
}

/// Opens the stream with `key` (none: no `Authorization` header).
async fn open(addr: SocketAddr, key: Option<&str>) -> Opened {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "GET /dashboard/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("request sent");
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let rest = raw[end + 4..].to_vec();
    if status != 200 {
        // Refusals are small JSON bodies with a Content-Length (the connection stays open).
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Content-Length");
        let mut body = rest;
        while body.len() < length {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
                .await
                .expect("body in time")
                .expect("read");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        return Opened::Refused(status, serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    assert!(
        head.contains("content-type: text/event-stream"),
        "an event stream: {head}"
    );
    Opened::Stream(Events {
        tcp,
        raw: rest,
        text: String::new(),
    })
}

async fn stream(addr: SocketAddr, key: &str) -> Events {
    match open(addr, Some(key)).await {
        Opened::Stream(events) => events,
        Opened::Refused(status, body) => panic!("stream refused: {status} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_keys_read_the_stream_and_open_pages_are_bounded() {
    let mut c = config();
    c.dashboard.max_viewers = 1;
    let tb = common::start(c);
    let addr = tb.addr;

    let page = common::http(addr, "GET", "/dashboard", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<html") || page.text.contains("<!doctype"));
    for outside in ["src=\"http", "href=\"http", "src='http", "@import", "cdn"] {
        assert!(
            !page.text.to_ascii_lowercase().contains(outside),
            "the page fetches nothing from outside ({outside})"
        );
    }

    let cases = [
        (None, 401, "invalid_token"),
        (Some("not-a-key"), 401, "invalid_token"),
        (Some(SUB_KEY), 403, "forbidden"),
        (Some(ALL_KEY), 403, "forbidden"),
    ];
    for (key, want, error) in cases {
        match open(addr, key).await {
            Opened::Refused(status, body) => {
                assert_eq!(status, want, "{key:?}: {body}");
                assert_eq!(body["error"], error, "{key:?}: {body}");
            }
            Opened::Stream(_) => panic!("{key:?} must be refused"),
        }
    }
    let metrics = common::metrics(addr).await;
    assert_eq!(
        common::metric(&metrics, "rustorium_rejections_total{reason=\"forbidden\"}"),
        Some(2.0)
    );

    let mut first = stream(addr, ADMIN_KEY).await;
    let (name, history) = first.next(WAIT).await;
    assert_eq!(name, "history");
    assert!(history["samples"].is_array(), "{history}");
    // The bound: a second page is refused while the first is open...
    match open(addr, Some(ADMIN_KEY)).await {
        Opened::Refused(status, body) => assert_eq!(status, 503, "{body}"),
        Opened::Stream(_) => panic!("past dashboard.max_viewers"),
    }
    // ...and admitted once it is closed.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        match open(addr, Some(ADMIN_KEY)).await {
            Opened::Stream(_) => break,
            Opened::Refused(status, _) => {
                assert_eq!(status, 503);
                assert!(
                    Instant::now() < deadline,
                    "the closed page's place was freed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_arrive_at_most_once_a_second_and_follow_the_traffic() {
    let tb = common::start(config());
    let addr = tb.addr;
    let mut sub = Client::ws(addr, SUB_KEY).await;
    sub.subscribe("blocks", json!({})).await;

    let publishing = tokio::spawn(async move {
        for n in 1..=80u64 {
            common::publish(addr, PUB_KEY, &common::block(n)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut events = stream(addr, ADMIN_KEY).await;
    let (name, _) = events.next(WAIT).await;
    assert_eq!(name, "history");
    let mut samples = Vec::new();
    for _ in 0..3 {
        let (name, sample) = events.next(WAIT).await;
        assert_eq!(name, "sample");
        samples.push(sample);
    }
    publishing.await.expect("publisher");
    for pair in samples.windows(2) {
        let gap = pair[1]["t"].as_u64().unwrap_or(0) - pair[0]["t"].as_u64().unwrap_or(0);
        assert!(gap >= 950, "at most one sample a second: {gap} ms apart");
    }
    let last = &samples[2];
    let totals: Vec<u64> = samples
        .iter()
        .map(|s| s["totals"]["events_in"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        totals[0] < totals[1] && totals[1] < totals[2],
        "events in grow: {totals:?}"
    );
    assert!(
        last["rates"]["events_in"].as_f64().unwrap_or(0.0) > 5.0,
        "{last}"
    );
    assert!(
        last["rates"]["frames_out"].as_f64().unwrap_or(0.0) > 5.0,
        "{last}"
    );
    assert_eq!(last["connections"], 1, "{last}");
    assert_eq!(last["connections_by_key"], json!({"sub": 1}), "{last}");
    assert_eq!(last["subscriptions"]["blocks"], 1, "{last}");
    assert_eq!(last["engine"], "memory");
    assert_eq!(last["nodes"], json!([]));
    for reason in ["invalid_token", "slow_consumer", "heartbeat_timeout"] {
        assert!(last["rejections"][reason].is_u64(), "{reason} in {last}");
    }
    for total in [
        "frames_out",
        "slow_consumer",
        "heartbeat_timeout",
        "resumes_recovered",
        "resumes_failed",
    ] {
        assert!(last["totals"][total].is_u64(), "{total} in {last}");
    }

    // A page opened now gets the samples so far as its history, oldest first.
    let mut later = stream(addr, ADMIN_KEY).await;
    let (name, history) = later.next(WAIT).await;
    assert_eq!(name, "history");
    let kept = history["samples"].as_array().cloned().unwrap_or_default();
    assert!(kept.len() >= 3, "{} samples kept", kept.len());
    assert!(kept
        .windows(2)
        .all(|w| w[0]["t"].as_u64() < w[1]["t"].as_u64()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_dashboard_lists_its_nodes_and_sees_one_go_down() {
    let Some(redis) = redis_server() else {
        return;
    };
    let prefix = common::cluster::prefix("dashboard");
    let admin =
        format!("[[keys]]\nname = \"ops\"\nsecret = \"{ADMIN_KEY}\"\nroles = [\"admin\"]\n");
    let a = common::cluster::Node::start(&redis.url, &prefix, &admin);
    let mut b = common::cluster::Node::start(&redis.url, &prefix, &admin);
    a.wait_ready();
    b.wait_ready();
    let mut events = stream(a.addr, ADMIN_KEY).await;
    let up = |s: &Value, want: usize| {
        let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
        nodes.iter().filter(|n| n["state"] == "up").count() == want && nodes.len() == 2
    };
    let deadline = Instant::now() + WAIT;
    let sample = loop {
        let (_, s) = events.next(WAIT).await;
        if s["nodes"].as_array().is_some_and(|n| n.len() == 2) && up(&s, 2) {
            break s;
        }
        assert!(Instant::now() < deadline, "two nodes up: {s}");
    };
    assert_eq!(sample["engine"], "redis");
    let nodes = sample["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        nodes.iter().filter(|n| n["self"] == true).count(),
        1,
        "{sample}"
    );
    let me = nodes.iter().find(|n| n["self"] == true).expect("self");
    assert_eq!(sample["node"], me["name"]);

    b.kill();
    // Down once its record is older than a lease (1.5 s in these tests).
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, s) = events.next(WAIT).await;
        if up(&s, 1) {
            let down: Vec<&Value> = s["nodes"]
                .as_array()
                .map(|n| n.iter().filter(|n| n["state"] == "down").collect())
                .unwrap_or_default();
            assert_eq!(down.len(), 1, "{s}");
            assert_eq!(down[0]["self"], false, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the killed node shows down: {s}");
    }
}

/// Where the browser test's screenshot goes: `target/dashboard.png`.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("dashboard.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium_logs_in_and_shows_live_numbers() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/node_modules/playwright-core");
    if !std::path::Path::new(&chromium).exists() || !driver.exists() {
        assert!(
            std::env::var_os("RUSTORIUM_REQUIRE_CHROMIUM").is_none(),
            "RUSTORIUM_REQUIRE_CHROMIUM is set but {chromium} or playwright-core is missing"
        );
        eprintln!("chromium or playwright-core is not installed: the browser test is skipped");
        return;
    }
    let tb = common::start(config());
    let addr = tb.addr;
    let mut sub = Client::ws(addr, SUB_KEY).await;
    sub.subscribe("blocks", json!({})).await;
    // A publisher runs for as long as the browser looks.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = stop.clone();
    let publishing = tokio::spawn(async move {
        let mut n = 0u64;
        while !running.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
            n += 1;
            common::publish(addr, PUB_KEY, &common::block(n)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let shot = screenshot_path();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(format!("http://{addr}"))
            .arg(ADMIN_KEY)
            .arg(SUB_KEY)
            .arg(&shot)
            .env("CHROMIUM", chromium)
            .output()
    })
    .await
    .expect("join")
    .expect("node runs");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publishing.await.expect("publisher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed: {stdout}\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON result line");
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["refused_message"]
            .as_str()
            .is_some_and(|m| m.contains("admin")),
        "the non-admin key is refused with the reason: {result}"
    );
    let (first, last) = (
        result["events_in_first"].as_u64().unwrap_or(0),
        result["events_in_last"].as_u64().unwrap_or(0),
    );
    assert!(
        last > first,
        "the numbers changed while the publisher ran: {result}"
    );
    let origin = format!("http://{addr}/");
    for url in result["requests"].as_array().cloned().unwrap_or_default() {
        let url = url.as_str().unwrap_or("");
        assert!(url.starts_with(&origin), "only this broker is asked: {url}");
        assert!(!url.contains(ADMIN_KEY), "the key is not in a URL: {url}");
    }
    assert!(screenshot_path().exists(), "a screenshot was saved");
}
