//! A TCP proxy on loopback for client tests: it forwards to the broker, and on command
//! cuts connections after a random number of bytes, stalls them (keeps them open and
//! forwards nothing), stalls only what a Redis pub/sub connection receives (the silent
//! stall: open, answering nothing), and records when each connection was accepted.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Most connections a proxy keeps track of (each test makes far fewer).
const MAX_CONNECTIONS: usize = 10_000;

#[derive(Default)]
struct Shared {
    /// When each connection was accepted, in order.
    accepted: Mutex<Vec<Instant>>,
    /// Bytes a new connection forwards towards the client before it is cut, drawn from
    /// this range; `None`: never cut.
    cut_after: Mutex<Option<Range<usize>>>,
    /// The stall switch of each connection.
    stalls: Mutex<Vec<Arc<AtomicBool>>>,
    /// Per connection: (it sent a Redis SUBSCRIBE, its server-to-client direction is
    /// stalled).
    subscribers: Mutex<Vec<(Arc<AtomicBool>, Arc<AtomicBool>)>>,
    tasks: Mutex<Vec<AbortHandle>>,
    cuts: AtomicUsize,
}

/// A running proxy; dropping it closes every connection it holds.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: AbortHandle,
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 in front of `upstream` (which may be down: a connection is
    /// then accepted and closed at once, as a refused one would be).
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut accepted = s.accepted.lock().expect("lock");
                if accepted.len() >= MAX_CONNECTIONS {
                    continue;
                }
                accepted.push(Instant::now());
                drop(accepted);
                let budget = s
                    .cut_after
                    .lock()
                    .expect("lock")
                    .clone()
                    .map(|range| rand::rng().random_range(range));
                let stalled = Arc::new(AtomicBool::new(false));
                s.stalls.lock().expect("lock").push(stalled.clone());
                let marks = (
                    Arc::new(AtomicBool::new(false)),
                    Arc::new(AtomicBool::new(false)),
                );
                s.subscribers.lock().expect("lock").push(marks.clone());
                let task =
                    tokio::spawn(forward(client, upstream, budget, stalled, marks, s.clone()));
                s.tasks.lock().expect("lock").push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            shared,
            acceptor,
        }
    }

    /// From now on, each new connection is cut after forwarding a random number of bytes
    /// (from `range`) towards the client; `None` stops cutting.
    pub fn cut_after(&self, range: Option<Range<usize>>) {
        *self.shared.cut_after.lock().expect("lock") = range;
    }

    /// Cuts every connection open now (both sides see the TCP connection end).
    pub fn cut_open_connections(&self) {
        for task in self.shared.tasks.lock().expect("lock").drain(..) {
            if !task.is_finished() {
                task.abort();
                self.shared.cuts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Every connection open now forwards nothing more, either way, and stays open.
    pub fn stall_open_connections(&self) {
        for s in self.shared.stalls.lock().expect("lock").iter() {
            s.store(true, Ordering::Relaxed);
        }
    }

    /// Every connection open now that sent a Redis `SUBSCRIBE` stops forwarding what the
    /// server sends (its messages, its replies) and stays open; the other direction and
    /// the other connections go on.
    pub fn stall_subscribers_downstream(&self) -> usize {
        let mut n = 0;
        for (subscribed, down) in self.shared.subscribers.lock().expect("lock").iter() {
            if subscribed.load(Ordering::Relaxed) {
                down.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// When each connection was accepted, in order.
    pub fn accepted(&self) -> Vec<Instant> {
        self.shared.accepted.lock().expect("lock").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for task in self.shared.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    budget: Option<usize>,
    stalled: Arc<AtomicBool>,
    (subscribed, down_stalled): (Arc<AtomicBool>, Arc<AtomicBool>),
    shared: Arc<Shared>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // upstream down: the client's connection closes at once
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_in, client_out) = client.into_split();
    let (server_in, server_out) = server.into_split();
    let up = pump(
        client_in,
        server_out,
        None,
        stalled.clone(),
        Watch::Marks(subscribed),
    );
    let down = pump(
        server_in,
        client_out,
        budget,
        stalled,
        Watch::Stall(down_stalled),
    );
    let cut = tokio::select! {
        c = up => c,
        c = down => c,
    };
    if cut {
        shared.cuts.fetch_add(1, Ordering::Relaxed);
    }
    // Returning drops all four halves: both connections close.
}

/// What a direction watches besides the whole connection's stall.
enum Watch {
    /// Client to server: set when a Redis `SUBSCRIBE` goes by.
    Marks(Arc<AtomicBool>),
    /// Server to client: when set, forward nothing more.
    Stall(Arc<AtomicBool>),
}

/// Copies one direction until it ends; true when it stopped at its byte budget (a cut).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut budget: Option<usize>,
    stalled: Arc<AtomicBool>,
    watch: Watch,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        match &watch {
            Watch::Marks(m) if buf[..n].windows(9).any(|w| w == b"SUBSCRIBE") => {
                m.store(true, Ordering::Relaxed)
            }
            Watch::Stall(s) if s.load(Ordering::Relaxed) => {
                // Read and dropped: the client hears nothing more, and nothing closes.
                continue;
            }
            _ => {}
        }
        if stalled.load(Ordering::Relaxed) {
            // Hold both connections open, forwarding nothing, until the proxy is dropped.
            std::future::pending::<()>().await;
        }
        let mut take = n;
        if let Some(left) = budget.as_mut() {
            take = take.min(*left);
            *left -= take;
        }
        if take > 0 && to.write_all(&buf[..take]).await.is_err() {
            return false;
        }
        if budget == Some(0) {
            return true;
        }
    }
}
