//! Subscriber connections: open a WebSocket from one of several loopback source
//! addresses, subscribe (rustorium `subscribe`, or NATS `SUB` over WebSocket), then read
//! until the run ends, handing each event's `(seq, ts)` to the tally.

use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::payload::scan;
use super::rawws::{self, RawWs};
use super::tally::Tally;
use super::target::{Protocol, KEY};
use super::topic::Topic;

/// How long a connect plus subscribe may take.
pub const SETUP: Duration = Duration::from_secs(30);

/// This generator's shard when several generator processes share one run (`--shard K`):
/// its channels and source addresses are its own. 0 when it runs alone.
static SHARD: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// Sets this process's shard (once, at start).
pub fn set_shard(k: u8) {
    let _ = SHARD.set(k);
}

/// This process's shard (0 when it runs alone).
pub fn shard() -> u8 {
    SHARD.get().copied().unwrap_or(0)
}

/// The channel (rustorium) or subject (NATS) number `c` is called.
pub fn channel_name(c: usize) -> String {
    match shard() {
        0 => format!("bench.{c}"),
        k => format!("bench.s{k}.{c}"),
    }
}

/// The loopback source address for connection `i` of `n`, spreading `n` over `sources`
/// addresses 127.0.K.1 .. 127.0.K.`sources` (K: the shard; each address has its own
/// ephemeral ports).
pub fn source_for(i: usize, sources: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, shard(), 1 + (i % sources.clamp(1, 250)) as u8)
}

/// A TCP connection to `addr` from `source`, with Nagle off.
pub async fn tcp(addr: SocketAddr, source: Ipv4Addr) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind((source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Connects and subscribes a rustorium-broker subscriber to `topic`.
async fn rustorium_subscribe(
    addr: SocketAddr,
    source: Ipv4Addr,
    topic: Topic,
) -> Result<RawWs, String> {
    let mut ws = RawWs::connect(addr, source, &format!("/ws?token={KEY}")).await?;
    let req = format!(
        r#"{{"type":"subscribe","id":"s","data":{}}}"#,
        topic.subscribe_data()
    );
    ws.send(rawws::TEXT, req.as_bytes()).await?;
    loop {
        let mut reply = None;
        ws.read(|_, p| {
            if memchr::memmem::find(p, b"subscribe_success").is_some() {
                reply.get_or_insert(Ok(()));
            } else if memchr::memmem::find(p, b"\"error\":{").is_some() {
                reply.get_or_insert(Err(String::from_utf8_lossy(p).into_owned()));
            }
        })
        .await?;
        if let Some(r) = reply {
            return r.map(|_| ws);
        }
    }
}

/// Reads a rustorium subscriber until the stream ends.
async fn rustorium_read(mut ws: RawWs, tally: Rc<Tally>) {
    let mut last = None;
    loop {
        let read = ws.read(|_, p| {
            if let Some((seq, ts)) = scan(p) {
                tally.deliver(&mut last, seq, ts);
            }
        });
        if let Err(e) = read.await {
            return tally.error(e);
        }
    }
}

/// The end of a NATS protocol line, searched with a finder built once.
static CRLF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n"));

/// A NATS protocol stream reassembled from WebSocket frames (a message may span frames).
#[derive(Default)]
pub struct NatsStream {
    buf: Vec<u8>,
}

/// One NATS protocol message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsOp<'a> {
    /// `MSG subject sid len` and its payload.
    Msg(&'a [u8]),
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `-ERR ...`.
    Err(String),
    /// `INFO`, `+OK`.
    Other,
}

impl NatsStream {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Calls `f` for every complete message buffered, keeping a partial one.
    pub fn drain(&mut self, mut f: impl FnMut(NatsOp<'_>)) {
        let mut at = 0;
        while let Some(eol) = CRLF.find(&self.buf[at..]) {
            let line = &self.buf[at..at + eol];
            if line.starts_with(b"MSG ") {
                let len: usize = line
                    .rsplit(|b| *b == b' ')
                    .next()
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let start = at + eol + 2;
                if self.buf.len() < start + len + 2 {
                    break;
                }
                f(NatsOp::Msg(&self.buf[start..start + len]));
                at = start + len + 2;
                continue;
            }
            f(if line == b"PING" {
                NatsOp::Ping
            } else if line == b"PONG" {
                NatsOp::Pong
            } else if line.starts_with(b"-ERR") {
                NatsOp::Err(String::from_utf8_lossy(line).into_owned())
            } else {
                NatsOp::Other
            });
            at += eol + 2;
        }
        self.buf.drain(..at);
    }
}

/// Connects a NATS-over-WebSocket subscriber to `subject` and waits until the server has
/// registered the subscription (the `PONG` after `SUB` and `PING`).
async fn nats_subscribe(
    ws_addr: SocketAddr,
    source: Ipv4Addr,
    subject: &str,
) -> Result<(RawWs, NatsStream), String> {
    let mut ws = RawWs::connect(ws_addr, source, "/").await?;
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    ws.send(rawws::BINARY, hello.as_bytes()).await?;
    let mut stream = NatsStream::default();
    loop {
        ws.read(|_, p| stream.push(p)).await?;
        let (mut ponged, mut err) = (false, None);
        stream.drain(|op| match op {
            NatsOp::Pong => ponged = true,
            NatsOp::Err(e) => err = Some(e),
            _ => {}
        });
        if let Some(e) = err {
            return Err(e);
        }
        if ponged {
            return Ok((ws, stream));
        }
    }
}

/// Reads a NATS subscriber until the stream ends, answering the server's pings.
async fn nats_read(mut ws: RawWs, mut stream: NatsStream, tally: Rc<Tally>) {
    let mut last = None;
    loop {
        if let Err(e) = ws.read(|_, p| stream.push(p)).await {
            return tally.error(e);
        }
        let mut pings = 0;
        stream.drain(|op| match op {
            NatsOp::Msg(p) => {
                if let Some((seq, ts)) = scan(p) {
                    tally.deliver(&mut last, seq, ts);
                }
            }
            NatsOp::Ping => pings += 1,
            NatsOp::Err(e) => tally.error(e),
            _ => {}
        });
        for _ in 0..pings {
            if let Err(e) = ws.send(rawws::BINARY, b"PONG\r\n").await {
                return tally.error(e);
            }
        }
    }
}

/// A subscribed connection, ready to read.
pub enum Subscribed {
    /// A rustorium-broker subscriber.
    Rustorium(RawWs),
    /// A NATS-over-WebSocket subscriber and what it has buffered.
    Nats(RawWs, NatsStream),
}

/// Connects subscriber `index` from `source` and subscribes to `topic` on whichever
/// broker `protocol` is (on a cluster, the nodes take subscribers in turn).
pub async fn subscribe(
    protocol: Protocol,
    index: usize,
    source: Ipv4Addr,
    topic: Topic,
) -> Result<Subscribed, String> {
    match protocol {
        Protocol::Rustorium(nodes) => rustorium_subscribe(nodes.subscriber(index), source, topic)
            .await
            .map(Subscribed::Rustorium),
        Protocol::Nats { ws, .. } => nats_subscribe(ws, source, &topic.subject())
            .await
            .map(|(ws, stream)| Subscribed::Nats(ws, stream)),
    }
}

/// Reads a subscriber until its stream ends.
pub async fn read(subscribed: Subscribed, tally: Rc<Tally>) {
    match subscribed {
        Subscribed::Rustorium(ws) => rustorium_read(ws, tally).await,
        Subscribed::Nats(ws, stream) => nats_read(ws, stream, tally).await,
    }
}
