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
}

impl TargetSpec {
    /// Parses `broker`, `inproc`, `url=HOST:PORT[@PID]`, `nats`,
    /// `nats-url=HOST:PORT,HOST:WSPORT[@PID]`.
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
                if let Some(u) = body.strip_prefix("url=") {
                    Ok(TargetSpec::Url(addr(u)?, pid))
                } else if let Some(u) = body.strip_prefix("nats-url=") {
                    let (c, w) = u.split_once(',').ok_or("nats-url=CLIENT,WEBSOCKET")?;
                    Ok(TargetSpec::NatsUrl(addr(c)?, addr(w)?, pid))
                } else {
                    Err(format!(
                        "unknown target {text}: broker, inproc, url=HOST:PORT[@PID], nats, nats-url=HOST:PORT,HOST:WSPORT[@PID]"
                    ))
                }
            }
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            TargetSpec::Broker | TargetSpec::InProc | TargetSpec::Url(..) => "rustorium",
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

/// Which protocol the running target speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// rustorium-broker at this HTTP/WebSocket address.
    Rustorium(SocketAddr),
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
    /// The broker's process, for RSS and CPU (`None`: unknown).
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
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
        TargetSpec::Url(addr, pid) => Ok(Running {
            protocol: Protocol::Rustorium(*addr),
            pid: *pid,
            child: None,
        }),
        TargetSpec::Nats => spawn_nats(needs),
        TargetSpec::NatsUrl(client, ws, pid) => Ok(Running {
            protocol: Protocol::Nats {
                client: *client,
                ws: *ws,
            },
            pid: *pid,
            child: None,
        }),
    }
}

fn spawn_broker(needs: Needs) -> Result<Running, String> {
    spawn_broker_with(&broker_config(needs))
}

/// Starts the rustorium-broker binary with `config` (TOML, binding 127.0.0.1:0) and waits
/// for the address it prints; the process is killed when the result is dropped.
pub fn spawn_broker_with(config: &str) -> Result<Running, String> {
    let path = temp_file("rustorium-load.toml", config)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustorium-broker"))
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
        Some(addr) => Ok(Running {
            protocol: Protocol::Rustorium(addr),
            pid: Some(pid),
            child: Some(child),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err("rustorium-broker printed no address".into())
        }
    }
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
    Ok(Running {
        protocol: Protocol::Rustorium(addr),
        pid: Some(std::process::id()),
        child: None,
    })
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
    Ok(Running {
        protocol: Protocol::Nats { client, ws },
        pid: Some(child.id()),
        child: Some(child),
    })
}
