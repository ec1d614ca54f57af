//! The soak run behind `cargo bench --bench soak`: a release broker under publishers,
//! churning, resuming and slow subscribers and the abusive clients of docs/security.md,
//! all at once for a set time, with the broker's memory, descriptors, parked
//! subscriptions and history sampled throughout.
//!
//! - `clients`: the well-behaved side (the publisher, steady and churning subscribers,
//!   slow readers) and what each saw ([`check::Seq`]).
//! - `abusers`: one task per abuse, each in a loop, each checking the broker's answer.
//! - `series`: the samples, the flatness verdict, the CSV and the SVG plot.

pub mod abusers;
pub mod check;
pub mod clients;
pub mod series;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The subscriber key of the soak's broker.
pub const SUB_KEY: &str = "soak-sub-0001";
/// The publisher key (steady publisher and the bulk abuser).
pub const PUB_KEY: &str = "soak-pub-0001";

/// The broker's configuration for a soak.
pub fn broker_config(per_address: u32) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\n\
         [[keys]]\nname = \"sub\"\nsecret = \"{SUB_KEY}\"\nroles = [\"subscribe\"]\nmax_connections = 2000\n\
         [[keys]]\nname = \"pub\"\nsecret = \"{PUB_KEY}\"\nroles = [\"publish\"]\nmax_connections = 20\n\
         [limits]\nmax_unauthenticated_per_address = {per_address}\nhandshake_timeout_ms = 2000\n\
         [resume]\nwindow_ms = 30000\nhistory_bytes = 33554432\n\
         [heartbeat]\ninterval_ms = 5000\n\
         [channels]\nallow_plain = true\n\
         [demo]\nenabled = false\n[ledger]\nenabled = false\n"
    )
}

/// What the run is told.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long the load runs (the final drain comes after).
    pub duration: Duration,
    /// Events per second of the steady publisher, over all channels.
    pub rate: f64,
    /// Channels of the steady publisher.
    pub channels: usize,
    /// Subscribers connected all along.
    pub steady: usize,
    /// Subscribers that connect, subscribe, drop, resume and leave.
    pub churners: usize,
    /// Subscribers that read too slowly, are cut 4005 and resume.
    pub slow: usize,
    /// Abusive clients on (each abuse runs once at a time, in a loop).
    pub abuse: bool,
    /// Seconds between samples.
    pub sample_every: Duration,
    /// Where the CSV and the SVG go.
    pub out_dir: std::path::PathBuf,
    /// Run each abuse alone for this long instead (`--each-abuse`).
    pub each_abuse: Option<Duration>,
}

/// Where everything runs, shared by the tasks of the run (one thread).
pub struct Ctx {
    /// The broker.
    pub addr: SocketAddr,
    /// When the load stops.
    pub deadline: Instant,
    /// Counters, by name.
    pub counts: RefCell<BTreeMap<String, u64>>,
    /// The steady publisher's last published sequence number per channel, once it stopped.
    pub finals: RefCell<Option<Vec<u64>>>,
}

impl Ctx {
    /// A context for the broker at `addr`, load until `deadline`.
    pub fn new(addr: SocketAddr, deadline: Instant) -> Rc<Ctx> {
        Rc::new(Ctx {
            addr,
            deadline,
            counts: RefCell::new(BTreeMap::new()),
            finals: RefCell::new(None),
        })
    }

    /// Adds `n` to the counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        let mut counts = self.counts.borrow_mut();
        let c = counts.entry(name.to_owned()).or_insert(0);
        *c = c.saturating_add(n);
    }

    /// The counter `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.counts.borrow().get(name).copied().unwrap_or(0)
    }

    /// Whether the load phase is over.
    pub fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// A small deterministic random source (xorshift), one per task.
pub struct Rng(u64);

impl Rng {
    /// Seeded by `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }
}

/// A WebSocket client of the soak.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `ws://addr{path}` within 10 s; `small_buffer` gives the socket a 64 KiB
/// receive buffer (a slow client's: what it does not read backs up into the broker's
/// queue for it sooner).
pub async fn websocket(addr: SocketAddr, path: &str, small_buffer: bool) -> Result<Ws, String> {
    let url = format!("ws://{addr}{path}");
    let run = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if small_buffer {
            socket
                .set_recv_buffer_size(64 * 1024)
                .map_err(|e| e.to_string())?;
        }
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        tokio_tungstenite::client_async(url, stream)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| "connect timed out".to_owned())?
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); the status and
/// the body. Bounded by `within`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    within: Duration,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {:?}", text.get(..80)))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {within:?}"))?
}

/// A value of the broker's `/metrics` (`name` with its labels, exactly).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
