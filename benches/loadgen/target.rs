//! The brokers a load run can target: rustorium-broker as a child process (the release
//! binary), in this process, or at a URL; and nats-server as a child process (from
//! Debian's `nats-server` package) or at an address. Loopback only.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The secret of the key the generator uses on rustorium-broker.
pub const KEY: &str = "load-key";

/// What to run against, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// rustorium-broker started as a child process for each run.
    Broker,
    /// rustorium-broker started inside the generator's process (its RSS includes the
    /// generator's).
    InProc,
    /// A rustorium-broker already running at this `host:port`, optionally with its pid
    /// for memory and CPU figures. Its key must be [`KEY`] with both roles.
    Url(SocketAddr, Option<u32>),
    /// nats-server started as a child process for each run.
    Nats,
    /// A nats-server already running: client port, WebSocket port, optional pid.
    NatsUrl(SocketAddr, SocketAddr, Option<u32>),
    /// rustorium-broker nodes already running (a cluster started by the caller): the
    /// publisher on the first, the subscribers spread over all of them.
    Urls(Nodes),
    /// A cluster of this many rustorium-broker processes on the Redis engine, with a
    /// `redis-server` of its own (Debian's), all started for each run: the publisher on
    /// the first node, the subscribers spread over all of them.
    Cluster(usize),
}

impl TargetSpec {
    /// Parses `broker`, `inproc`, `url=HOST:PORT[@PID]`, `nats`,
    /// `nats-url=HOST:PORT,HOST:WSPORT[@PID]`, `cluster=N`, `urls=HOST:PORT,...`.
    pub fn parse(text: &str) -> Result<TargetSpec, String> {
        let (body, pid) = match text.split_once('@') {
            Some((b, p)) => (
                b,
                Some(p.parse().map_err(|_| format!("bad pid in {text}"))?),
            ),
            None => (text, None),
        };
        let addr = |s: &str| -> Result<SocketAddr, String> {
            let s = s.trim_start_matches("ws://").trim_start_matches("nats://");
            let a: SocketAddr = s.parse().map_err(|_| format!("bad address {s}"))?;
            if !a.ip().is_loopback() {
                return Err(format!(
                    "{a} is not a loopback address; the generator stays on loopback"
                ));
            }
            Ok(a)
        };
        match body {
            "broker" => Ok(TargetSpec::Broker),
            "inproc" => Ok(TargetSpec::InProc),
            "nats" => Ok(TargetSpec::Nats),
            _ => {
                if let Some(list) = body.strip_prefix("urls=") {
                    let addrs = list.split(',').map(addr).collect::<Result<Vec<_>, _>>()?;
                    let first = *addrs.first().ok_or("urls=HOST:PORT,HOST:PORT,...")?;
                    if addrs.len() > MAX_NODES {
                        return Err(format!("urls= takes at most {MAX_NODES} nodes"));
                    }
                    let mut nodes = Nodes::one(first);
                    nodes.addrs[..addrs.len()].copy_from_slice(&addrs);
                    nodes.len = addrs.len();
                    return Ok(TargetSpec::Urls(nodes));
                }
                if let Some(n) = body.strip_prefix("cluster=") {
                    let n: usize = n.parse().map_err(|_| format!("bad node count in {text}"))?;
                    if !(1..=MAX_NODES).contains(&n) {
                        return Err(format!("cluster=N takes 1 to {MAX_NODES} nodes"));
                    }
                    return Ok(TargetSpec::Cluster(n));
                }
                if let Some(u) = body.strip_prefix("url=") {
                    Ok(TargetSpec::Url(addr(u)?, pid))
                } else if let Some(u) = body.strip_prefix("nats-url=") {
                    let (c, w) = u.split_once(',').ok_or("nats-url=CLIENT,WEBSOCKET")?;
                    Ok(TargetSpec::NatsUrl(addr(c)?, addr(w)?, pid))
                } else {
                    Err(format!(
                        "unknown target {text}: broker, inproc, url=HOST:PORT[@PID], nats, nats-url=HOST:PORT,HOST:WSPORT[@PID], cluster=N, urls=HOST:PORT,..."
                    ))
                }
            }
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            TargetSpec::Broker | TargetSpec::InProc | TargetSpec::Url(..) => "rustorium",
            TargetSpec::Cluster(_) | TargetSpec::Urls(_) => "rustorium (redis)",
            TargetSpec::Nats | TargetSpec::NatsUrl(..) => "nats",
        }
    }
}

/// How the broker under test is configured for a run.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// Connections the generator will open (subscribers and publisher).
    pub connections: usize,
    /// Channels used.
    pub channels: usize,
    /// Heartbeat / ping interval, in milliseconds.
    pub heartbeat_ms: u64,
}

/// Most nodes of a `cluster=N` target.
pub const MAX_NODES: usize = 8;

/// The HTTP/WebSocket addresses of a rustorium target: one broker, or a cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nodes {
    addrs: [SocketAddr; MAX_NODES],
    len: usize,
}

impl Nodes {
    /// One broker.
    pub fn one(addr: SocketAddr) -> Nodes {
        Nodes {
            addrs: [addr; MAX_NODES],
            len: 1,
        }
    }

    /// Where the publisher connects: the first node.
    pub fn publisher(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Where subscriber `i` connects: the nodes in turn.
    pub fn subscriber(&self, i: usize) -> SocketAddr {
        self.addrs[i % self.len.max(1)]
    }
}

/// Which protocol the running target speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// rustorium-broker: one, or a cluster's nodes.
    Rustorium(Nodes),
    /// nats-server: client port and WebSocket port.
    Nats {
        /// Plain NATS (the publisher).
        client: SocketAddr,
        /// NATS over WebSocket (the subscribers).
        ws: SocketAddr,
    },
}

/// A started (or found) broker; a child process is killed when this is dropped.
pub struct Running {
    /// Where and how to talk to it.
    pub protocol: Protocol,
    /// The broker's processes, for RSS and CPU (empty: unknown); a cluster's are summed.
    pub pids: Vec<u32>,
    /// A cluster's `redis-server`, for its CPU.
    pub redis_pid: Option<u32>,
    children: Vec<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Last started first: a cluster's nodes before their Redis.
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    fn one(protocol: Protocol, pid: Option<u32>, child: Option<Child>) -> Running {
        Running {
            protocol,
            pids: pid.into_iter().collect(),
            redis_pid: None,
            children: child.into_iter().collect(),
        }
    }
}

/// The rustorium-broker configuration for a run.
pub fn broker_config(needs: Needs) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\n\
         [[keys]]\nname = \"load\"\nsecret = \"{KEY}\"\nroles = [\"subscribe\", \"publish\"]\nmax_connections = {}\n\
         [limits]\npublish_events_per_second = 1000000000\n\
         [heartbeat]\ninterval_ms = {}\n\
         [channels]\nallow_plain = true\nmax_plain = {}\n\
         [demo]\nenabled = false\n[ledger]\nenabled = false\n",
        needs.connections + 10,
        needs.heartbeat_ms,
        needs.channels.max(1)
    )
}

fn temp_file(stem: &str, text: &str) -> Result<std::path::PathBuf, String> {
    let path =
        std::env::temp_dir().join(format!("{stem}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_listening(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {addr} after {within:?}"))
}

/// Starts (or finds) the target for a run with these needs.
pub fn start(spec: &TargetSpec, needs: Needs) -> Result<Running, String> {
    match spec {
        TargetSpec::Broker => spawn_broker(needs),
        TargetSpec::InProc => start_inproc(needs),
        TargetSpec::Url(addr, pid) => Ok(Running::one(
            Protocol::Rustorium(Nodes::one(*addr)),
            *pid,
            None,
        )),
        TargetSpec::Cluster(n) => spawn_cluster(*n, needs),
        TargetSpec::Urls(nodes) => Ok(Running::one(Protocol::Rustorium(*nodes), None, None)),
        TargetSpec::Nats => spawn_nats(needs),
        TargetSpec::NatsUrl(client, ws, pid) => Ok(Running::one(
            Protocol::Nats {
                client: *client,
                ws: *ws,
            },
            *pid,
            None,
        )),
    }
}

fn spawn_broker(needs: Needs) -> Result<Running, String> {
    spawn_broker_with(&broker_config(needs))
}

/// The rustorium-broker binary a `broker` target runs: the file named by
/// `RUSTORIUM_LOAD_BROKER` when set (to measure another build, e.g. an older commit's, with
/// this generator), else the one cargo built beside the bench.
fn broker_binary() -> std::ffi::OsString {
    std::env::var_os("RUSTORIUM_LOAD_BROKER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_rustorium-broker").into())
}

/// Starts the rustorium-broker binary with `config` (TOML, binding 127.0.0.1:0) and waits
/// for the address it prints; the process is killed when the result is dropped.
pub fn spawn_broker_with(config: &str) -> Result<Running, String> {
    let path = temp_file("rustorium-load.toml", config)?;
    let mut child = Command::new(broker_binary())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("rustorium-broker: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = lines.by_ref().map_while(Result::ok).take(20).find_map(|l| {
        l.strip_prefix("rustorium-broker listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
    });
    let _ = std::fs::remove_file(&path);
    // Keep draining its stdout so the broker never blocks on a full pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let pid = child.id();
    match found {
        Some(addr) => Ok(Running::one(
            Protocol::Rustorium(Nodes::one(addr)),
            Some(pid),
            Some(child),
        )),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err("rustorium-broker printed no address".into())
        }
    }
}

/// Starts `redis-server` on a free loopback port (no persistence) and `n` broker nodes on
/// it, each configured as a single broker would be plus the Redis engine.
fn spawn_cluster(n: usize, needs: Needs) -> Result<Running, String> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("rustorium-load-redis-{port}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server (Debian package redis-server): {e}"))?;
    let redis_pid = redis.id();
    let mut running = Running {
        protocol: Protocol::Rustorium(Nodes::one(SocketAddr::from(([127, 0, 0, 1], 0)))),
        pids: Vec::new(),
        redis_pid: Some(redis_pid),
        children: vec![redis],
    };
    wait_listening(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )?;
    let config = format!(
        "{}[engine]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/\"\n",
        broker_config(needs)
    );
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let mut node = spawn_broker_with(&config)?;
        if let Protocol::Rustorium(nodes) = node.protocol {
            addrs.push(nodes.publisher());
        }
        running.pids.append(&mut node.pids);
        running.children.append(&mut node.children);
    }
    let mut nodes = Nodes::one(addrs[0]);
    for (slot, addr) in nodes.addrs.iter_mut().zip(&addrs) {
        *slot = *addr;
    }
    nodes.len = addrs.len();
    running.protocol = Protocol::Rustorium(nodes);
    // Each node's Redis subscriber connects in the background: wait until all are ready.
    for addr in &addrs {
        wait_ready(*addr, Duration::from_secs(10))?;
    }
    Ok(running)
}

fn wait_ready(addr: SocketAddr, within: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr} not ready after {within:?}"))
}

fn start_inproc(needs: Needs) -> Result<Running, String> {
    let config =
        rustorium_broker::Config::from_toml(&broker_config(needs)).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            match rustorium_broker::server::Standalone::bind(config) {
                Ok(s) => {
                    let _ = tx.send(Ok(s.addr()));
                    let _ = s.run().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("in-process broker: {e}"))??;
    Ok(Running::one(
        Protocol::Rustorium(Nodes::one(addr)),
        Some(std::process::id()),
        None,
    ))
}

/// Whether `nats-server` can be started.
pub fn nats_available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn spawn_nats(needs: Needs) -> Result<Running, String> {
    let (port, ws_port) = (free_port()?, free_port()?);
    let ping = (needs.heartbeat_ms / 1000).max(1);
    let conf = format!(
        "listen: \"127.0.0.1:{port}\"\nmax_connections: {}\nping_interval: \"{ping}s\"\n\
         websocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n  compression: false\n}}\n",
        needs.connections + 10
    );
    let path = temp_file("nats-load.conf", &conf)?;
    let mut child = Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nats-server (apt-get install nats-server): {e}"))?;
    let client: SocketAddr = ([127, 0, 0, 1], port).into();
    let ws: SocketAddr = ([127, 0, 0, 1], ws_port).into();
    let ready = wait_listening(client, Duration::from_secs(10))
        .and_then(|_| wait_listening(ws, Duration::from_secs(10)));
    let _ = std::fs::remove_file(&path);
    if let Err(e) = ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("nats-server: {e}"));
    }
    let pid = child.id();
    Ok(Running::one(
        Protocol::Nats { client, ws },
        Some(pid),
        Some(child),
    ))
}
