//! Broker nodes as real processes sharing one `redis-server` (PROTOCOL.md section 11):
//! each node is the release binary with a config file written by the test, on
//! 127.0.0.1:0, killed (SIGKILL) on drop or when a test kills it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ALL_KEY, PUB_KEY, SUB_KEY, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_rustorium-broker");

/// How long a node's hold on a connection slot lasts in these tests.
pub const LEASE_MS: u64 = 1500;

/// One broker process of a cluster.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    config: PathBuf,
}

impl Node {
    /// Starts a node on `redis_url` with the cluster's key `prefix`; `extra` is more TOML
    /// appended to the config (sections of its own).
    pub fn start(redis_url: &str, prefix: &str, extra: &str) -> Node {
        Node::start_with(redis_url, prefix, "", extra)
    }

    /// As [`Node::start`], with `engine` (more `[engine]` fields) added to its engine.
    pub fn start_with(redis_url: &str, prefix: &str, engine: &str, extra: &str) -> Node {
        let config = std::env::temp_dir().join(format!(
            "rustorium-node-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let text = node_config(redis_url, prefix, engine, extra);
        std::fs::write(&config, text).expect("write the node's config");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env_remove("RUSTORIUM_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("RUSTORIUM_NODE_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("RUSTORIUM_NODE_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn a broker node");
        let rx = super::stdout_lines(&mut child);
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the node printed its address");
            if let Some(a) = line.strip_prefix("rustorium-broker listening on ") {
                break a.trim().parse().expect("an address");
            }
        };
        let node = Node {
            child,
            addr,
            config,
        };
        node.wait_ready();
        node
    }

    /// Waits until `/ready` answers 200 (its Redis subscriber is up).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if ready(self.addr) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {} never ready", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The status `/ready` answers, if any.
pub fn ready(addr: SocketAddr) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// A key prefix of its own for one test, so tests can share nothing by accident.
pub fn prefix(test: &str) -> String {
    format!("t{}:{test}:", std::process::id())
}

/// The config a node of these tests runs with: the test keys, no demo, the Redis engine
/// on `redis_url` under `prefix` with short timeouts, plus `engine` (more `[engine]`
/// fields) and `extra` (more sections).
pub fn node_config(redis_url: &str, prefix: &str, engine: &str, extra: &str) -> String {
    format!(
        r#"[server]
bind = "127.0.0.1:0"
workers = 2

[[keys]]
name = "sub"
secret = "{SUB_KEY}"
roles = ["subscribe"]

[[keys]]
name = "pub"
secret = "{PUB_KEY}"
roles = ["publish"]

[[keys]]
name = "all"
secret = "{ALL_KEY}"
roles = ["subscribe", "publish", "command"]

[ledger]
empty_blocks = false

[demo]
enabled = false

[engine]
kind = "redis"
redis_url = "{redis_url}"
key_prefix = "{prefix}"
lease_ms = {LEASE_MS}
response_timeout_ms = 5000
connect_timeout_ms = 1000
reconnect_min_ms = 50
reconnect_max_ms = 500
{engine}

{extra}
"#
    )
}
