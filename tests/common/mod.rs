//! Test helpers: start the real broker on 127.0.0.1:0 in its own actix System thread, a
//! WebSocket client (tokio-tungstenite) and a minimal HTTP/1.1 client over TCP.
#![allow(dead_code)]

pub mod broker_process;
pub mod cluster;
pub mod proxy;
pub mod redis_server;
pub mod sentinel;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustorium_broker::server::Standalone;
use rustorium_broker::{Broker, Config, KeyConfig, Role};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SUB_KEY: &str = "sub-secret-0001";
pub const PUB_KEY: &str = "pub-secret-0001";
pub const ALL_KEY: &str = "all-secret-0001";

/// A config with three keys (subscriber, publisher, every role) on 127.0.0.1:0.
pub fn config() -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.server.workers = 2;
    // The ledger answers commands but makes blocks only for transfers; no demo feed, so
    // every event a test sees is one it published.
    c.ledger.empty_blocks = false;
    c.ledger.block_interval_ms = 100;
    c.demo.enabled = false;
    let key = |name: &str, secret: &str, roles: Vec<Role>| KeyConfig {
        name: name.into(),
        secret: secret.into(),
        roles,
        max_connections: None,
    };
    c.keys = vec![
        key("sub", SUB_KEY, vec![Role::Subscribe]),
        key("pub", PUB_KEY, vec![Role::Publish]),
        key(
            "all",
            ALL_KEY,
            vec![Role::Subscribe, Role::Publish, Role::Command],
        ),
    ];
    c
}

/// The lines a child process prints on its stdout, read on a thread of their own (so the
/// child never blocks on a full pipe).
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    lines_of(child.stdout.take().expect("the child's stdout is piped"))
}

/// The lines of `input` (a child's stdout or stderr), read on a thread of their own.
pub fn lines_of(input: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(input).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A broker running in a thread of its own.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Broker,
}

/// Starts the real broker with `config` and waits until it listens.
pub fn start(config: Config) -> TestBroker {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            match Standalone::bind(config) {
                Ok(s) => {
                    let _ = tx.send(Ok((s.addr(), s.broker().clone())));
                    let _ = s.run().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok((addr, broker))) => TestBroker { addr, broker },
        Ok(Err(e)) => panic!("broker did not start: {e}"),
        Err(e) => panic!("broker did not start in time: {e}"),
    }
}

/// A WebSocket client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What arrived instead of a text frame.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Closed(u16, String),
    /// The stream ended without a close frame.
    Dropped,
}

impl Client {
    /// Connects to `ws://addr{path}`.
    pub async fn connect(addr: SocketAddr, path: &str) -> Client {
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("connect to {url} timed out"))
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Client { ws }
    }

    /// Connects with a prepared request (custom headers).
    pub async fn connect_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client { ws }
    }

    /// Connects to `/ws?token=KEY`.
    pub async fn ws(addr: SocketAddr, key: &str) -> Client {
        Client::connect(addr, &format!("/ws?token={key}")).await
    }

    /// Connects to `/v1?api_key=KEY`.
    pub async fn v1(addr: SocketAddr, key: &str) -> Client {
        Client::connect(addr, &format!("/v1?api_key={key}")).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// Drops the TCP connection with no close frame.
    pub fn drop_tcp(self) {
        let stream = self.ws.into_inner();
        if let MaybeTlsStream::Plain(tcp) = stream {
            // SO_LINGER 0: the kernel resets the connection instead of closing it.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            drop(tcp);
        }
    }

    /// Queues every frame and flushes once, so they leave in as few TCP writes as possible.
    pub async fn send_all(&mut self, frames: &[Value]) {
        for f in frames {
            tokio::time::timeout(WAIT, self.ws.feed(Message::text(f.to_string())))
                .await
                .expect("send timed out")
                .expect("send failed");
        }
        tokio::time::timeout(WAIT, self.ws.flush())
            .await
            .expect("flush timed out")
            .expect("flush failed");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send(&mut self, msg: Message) {
        tokio::time::timeout(WAIT, self.ws.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// The next text frame, or how the connection ended. Pings and pongs are skipped
    /// (tungstenite answers pings itself).
    pub async fn next_text(&mut self, within: Duration) -> Option<Result<Value, Ended>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Err(Ended::Dropped)),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON {t}: {e}"));
                    return Some(Ok(v));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Some(Err(Ended::Closed(code, reason)));
                }
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next text frame that is not a heartbeat; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next_text(WAIT).await {
                Some(Ok(v)) if v["type"] == "heartbeat" => continue,
                Some(Ok(v)) => return v,
                Some(Err(e)) => panic!("expected a frame, connection ended: {e:?}"),
                None => panic!("expected a frame, none came within {WAIT:?}"),
            }
        }
    }

    /// Asserts no non-heartbeat frame arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_text(left).await {
                None => return,
                Some(Ok(v)) if v["type"] == "heartbeat" => continue,
                Some(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        for _ in 0..10_000 {
            match self.next_text(WAIT).await {
                Some(Ok(_)) => continue,
                Some(Err(Ended::Closed(code, reason))) => return (code, reason),
                Some(Err(Ended::Dropped)) => panic!("connection dropped without a close frame"),
                None => panic!("no close within {WAIT:?}"),
            }
        }
        panic!("no close after 10000 frames");
    }

    /// Sends a request as raw text and returns the next non-heartbeat frame.
    pub async fn request_text(&mut self, text: &str) -> Value {
        self.send_text(text).await;
        self.recv().await
    }

    /// Sends a request and returns the next non-heartbeat frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send_json(&v).await;
        self.recv().await
    }

    /// Subscribes and returns the subscription id; panics if refused.
    pub async fn subscribe(&mut self, channel: &str, filter: Value) -> String {
        let reply = self
            .request(json!({"type": "subscribe", "id": "s", "data": {"channel": channel, "filter": filter}}))
            .await;
        assert_eq!(
            reply["type"], "subscribe_success",
            "subscribe refused: {reply}"
        );
        reply["data"]["subscription_id"]
            .as_str()
            .expect("subscription_id is a string")
            .to_owned()
    }

    /// Closes with 1000 (the only close that drops subscriptions at once) and waits for
    /// the server's close.
    pub async fn close(self) {
        self.close_with(Some(CloseCode::Normal)).await;
    }

    /// Closes with `code` (None: a close frame without a status, 1005) and waits for the
    /// server's close.
    pub async fn close_with(mut self, code: Option<CloseCode>) {
        let frame = code.map(
            |code| tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code,
                reason: "".into(),
            },
        );
        let _ = self.ws.close(frame).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// An HTTP response: status and JSON body (Null when not JSON).
pub struct Response {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// One HTTP/1.1 request over a fresh TCP connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    http_over(stream, addr, method, path, headers, body).await
}

/// One HTTP/1.1 request (`Connection: close`) over `stream`, already connected to `addr`
/// (a TCP stream, or a TLS stream over one).
pub async fn http_over(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, async {
        stream.write_all(head.as_bytes()).await?;
        // The server may answer (413) before reading the whole body.
        let _ = stream.write_all(body).await;
        stream.read_to_end(&mut raw).await
    })
    .await
    .expect("HTTP exchange timed out")
    .ok();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body_text = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    let body_text = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body_text)
    } else {
        body_text
    };
    Response {
        status,
        body: serde_json::from_str(&body_text).unwrap_or(Value::Null),
        text: body_text,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// One series of `GET /metrics` text, by its exact name (labels included).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `GET /metrics` now.
pub async fn metrics(addr: SocketAddr) -> String {
    http(addr, "GET", "/metrics", &[], b"").await.text
}

/// `POST /api/publish` with `key` and a JSON body.
pub async fn publish(addr: SocketAddr, key: &str, body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    http(
        addr,
        "POST",
        "/api/publish",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// Publishes and asserts success; returns the ids.
pub async fn publish_ok(addr: SocketAddr, body: &Value) -> Vec<String> {
    let r = publish(addr, PUB_KEY, body).await;
    assert_eq!(r.status, 200, "publish failed: {}", r.text);
    r.body["data"]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id is a string").to_owned())
        .collect()
}

impl Client {
    /// Sends `reconnect` with `last` as `last_message_id` (any JSON: an id, null, or
    /// something that is not an id) and returns the reply.
    pub async fn reconnect(&mut self, last: impl serde::Serialize, subs: &[String]) -> Value {
        self.request(json!({"type": "reconnect", "id": "r",
            "data": {"last_message_id": last, "subscriptions": subs}}))
            .await
    }
}

/// A `market_data` update for `symbol` at price `i`.
pub fn tick(symbol: &str, i: u64) -> Value {
    json!({"channel": "market_data", "data": {"symbol": symbol, "price": i.to_string(),
        "change_24h": "0", "volume_24h": "0", "timestamp": "2024-01-01T12:00:00Z"}})
}

/// A `new_block` event body for block `n`.
pub fn block(n: u64) -> Value {
    json!({"channel": "blocks", "data": {
        "number": n, "hash": format!("0x{n:064x}"), "parent_hash": format!("0x{:064x}", n.saturating_sub(1)),
        "timestamp": "2024-01-23T12:34:56Z", "transactions": []}})
}
