//! A Redis set for the failover tests: a master, replicas and three Sentinels, each a real
//! process (Debian's `redis-server`, and `redis-server --sentinel`, which is what
//! `redis-sentinel` runs) on a free loopback port, killed on drop. When they are not
//! installed the caller skips, unless `RUSTORIUM_REQUIRE_SENTINEL` is set (the test command
//! sets it when it installed them). Failure detection is tuned down
//! (`down-after-milliseconds` 400, `failover-timeout` 2000) so a failover takes a few
//! seconds. [`Secured`] puts a password on the Sentinels and TLS on every link of the set.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The master's name at the Sentinels.
pub const MASTER: &str = "mymaster";

/// How long a failover may take in these tests.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// One process of the set.
pub struct Proc {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
}

impl Proc {
    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to it.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            let pid = i32::try_from(c.id()).expect("pid fits i32");
            // SAFETY: kill only sends a signal to a child this test started.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a replica replicates from: the master's port, or a proxy's in front of it.
pub enum ReplicaOf {
    /// Straight from the master.
    Master,
    /// Through this port (a test proxy in front of the master).
    Port(u16),
}

/// How a set is secured (default: neither).
#[derive(Clone, Default)]
pub struct Secured {
    /// `requirepass` on every Sentinel (and `sentinel sentinel-pass`, with which they
    /// reach each other).
    pub sentinel_password: Option<String>,
    /// `requirepass` (and `masterauth`) on every data server, and `sentinel auth-pass` for
    /// the Sentinels to reach them.
    pub master_password: Option<String>,
    /// A directory holding `ca.pem`, `server.pem` and `server.key`
    /// ([`super::tls::certificates`]): every data server and Sentinel then listens only
    /// on TLS, and replication and Sentinel's own links use it too (`tls-replication`).
    pub tls: Option<PathBuf>,
}

/// A master, its replicas and three Sentinels.
pub struct RedisSet {
    /// The data servers; the first started as the master.
    pub servers: Vec<Proc>,
    /// The three Sentinels.
    pub sentinels: Vec<Proc>,
    dir: PathBuf,
    secured: Secured,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the set can run here; panics when it cannot but is required.
fn installed() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("redis-sentinel")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("RUSTORIUM_REQUIRE_SENTINEL").is_none(),
            "RUSTORIUM_REQUIRE_SENTINEL is set but redis-server or redis-sentinel is missing"
        );
        eprintln!(
            "redis-server or redis-sentinel is not installed: the failover tests are skipped"
        );
    }
    ok
}

/// Where a process's output goes: discarded unless `RUSTORIUM_NODE_LOGS` is set.
fn log() -> Stdio {
    if std::env::var_os("RUSTORIUM_NODE_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// `redis-server` with `args` (and a directory of its own), its output as [`log`] says.
pub fn spawn_server(dir: &std::path::Path, args: &[String]) -> Child {
    std::fs::create_dir_all(dir).expect("a directory for redis-server");
    Command::new("redis-server")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(log())
        .stderr(log())
        .spawn()
        .expect("redis-server starts")
}

impl RedisSet {
    /// A master on a free port, `replicas` replicas (each from where `replica_of` says)
    /// with `server_args` added to every data server, and three Sentinels that know them
    /// all and each other. `None` when the binaries are not installed (and not required).
    pub async fn start(replica_of: &[ReplicaOf], server_args: &[&str]) -> Option<RedisSet> {
        RedisSet::start_on(free_port(), replica_of, server_args).await
    }

    /// [`RedisSet::start`] with the master on `master_port` (so that a proxy in front of
    /// it can exist first).
    pub async fn start_on(
        master_port: u16,
        replica_of: &[ReplicaOf],
        server_args: &[&str],
    ) -> Option<RedisSet> {
        RedisSet::start_secured(master_port, replica_of, server_args, Secured::default()).await
    }

    /// [`RedisSet::start_on`], secured as `secured` says.
    pub async fn start_secured(
        master_port: u16,
        replica_of: &[ReplicaOf],
        server_args: &[&str],
        secured: Secured,
    ) -> Option<RedisSet> {
        if !installed() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "rustorium-sentinel-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let tls_file = |f: &str| {
            secured
                .tls
                .as_ref()
                .map(|d| d.join(f).display().to_string())
        };
        let base = |port: u16| -> Vec<String> {
            let port = port.to_string();
            let mut a: Vec<String> = match (tls_file("server.pem"), tls_file("server.key")) {
                (Some(cert), Some(key)) => vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    cert,
                    "--tls-key-file".into(),
                    key,
                    "--tls-ca-cert-file".into(),
                    tls_file("ca.pem").unwrap_or_default(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                ],
                _ => vec!["--port".into(), port],
            };
            a.extend(
                [
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync",
                    "yes",
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            if let Some(pw) = &secured.master_password {
                a.extend([
                    "--requirepass".into(),
                    pw.clone(),
                    "--masterauth".into(),
                    pw.clone(),
                ]);
            }
            a.extend(server_args.iter().map(|s| s.to_string()));
            a
        };
        let mut servers = vec![Proc {
            child: Some(spawn_server(&dir.join("m"), &base(master_port))),
            port: master_port,
        }];
        wait_listening(master_port);
        for (i, of) in replica_of.iter().enumerate() {
            let port = free_port();
            let mut args = base(port);
            let from = match of {
                ReplicaOf::Master => master_port,
                ReplicaOf::Port(p) => *p,
            };
            args.extend(["--replicaof".into(), "127.0.0.1".into(), from.to_string()]);
            let child = spawn_server(&dir.join(format!("r{i}")), &args);
            servers.push(Proc {
                child: Some(child),
                port,
            });
            wait_listening(port);
        }
        let mut set = RedisSet {
            servers,
            sentinels: Vec::new(),
            dir,
            secured: secured.clone(),
        };
        set.wait_replicas_online(master_port, replica_of.len())
            .await;
        for i in 0..3 {
            let port = free_port();
            let conf = set.dir.join(format!("sentinel-{i}.conf"));
            let mut text = match (tls_file("server.pem"), tls_file("server.key")) {
                (Some(cert), Some(key)) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                     tls-ca-cert-file {ca}\ntls-auth-clients no\ntls-replication yes\n",
                    ca = tls_file("ca.pem").unwrap_or_default()
                ),
                _ => format!("port {port}\n"),
            };
            if let Some(pw) = &secured.sentinel_password {
                text.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
            }
            text.push_str(&format!(
                "bind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 400\n\
                 sentinel failover-timeout {MASTER} 2000\n\
                 sentinel parallel-syncs {MASTER} 2\n",
                dir = set.dir.display()
            ));
            if let Some(pw) = &secured.master_password {
                text.push_str(&format!("sentinel auth-pass {MASTER} {pw}\n"));
            }
            std::fs::write(&conf, text).expect("write a sentinel config");
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(log())
                .stderr(log())
                .spawn()
                .expect("redis-sentinel starts");
            set.sentinels.push(Proc {
                child: Some(child),
                port,
            });
            wait_listening(port);
        }
        set.wait_sentinels_know(replica_of.len()).await;
        Some(set)
    }

    /// The `engine` fields that point a node at these Sentinels (with their password and
    /// the test CA where the set has them; `redis_url` is the caller's: `rediss://` for a
    /// TLS set).
    pub fn engine_toml(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", self.url(s.port, true)))
            .collect();
        let mut toml = format!(
            "sentinels = [{}]\nsentinel_master = \"{MASTER}\"\nprobe_interval_ms = 200\nprobe_timeout_ms = 1000\n",
            list.join(", ")
        );
        if let Some(ca) = self.ca_file() {
            toml.push_str(&format!("tls_ca_file = \"{}\"\n", ca.display()));
        }
        toml
    }

    /// The test CA's file, for a TLS set.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.secured.tls.as_ref().map(|d| d.join("ca.pem"))
    }

    /// The URL of the data server (or, `sentinel`, the Sentinel) on `port`: `rediss://`
    /// for a TLS set, with the Sentinels' (or the data servers') password where they have
    /// one.
    pub fn url(&self, port: u16, sentinel: bool) -> String {
        let scheme = if self.secured.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let password = if sentinel {
            &self.secured.sentinel_password
        } else {
            &self.secured.master_password
        };
        let auth = match password {
            Some(pw) => format!(":{pw}@"),
            None => String::new(),
        };
        format!("{scheme}://{auth}127.0.0.1:{port}/")
    }

    /// A client of `url`, trusting the test CA for a TLS set.
    fn client(&self, url: &str) -> redis::Client {
        match self.ca_file() {
            Some(ca) => {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(std::fs::read(ca).expect("read the test CA")),
                    },
                )
                .expect("a TLS client")
            }
            None => redis::Client::open(url).expect("a URL"),
        }
    }

    /// A connection to the data server (or, `sentinel`, the Sentinel) on `port`, as the
    /// set is secured.
    pub async fn connect(&self, port: u16, sentinel: bool) -> redis::aio::MultiplexedConnection {
        self.client(&self.url(port, sentinel))
            .get_multiplexed_async_connection()
            .await
            .expect("a connection")
    }

    /// A connection to the data server or Sentinel on `port`.
    pub async fn con(port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("a URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection")
    }

    /// The master's port, as the first Sentinel that answers names it.
    pub async fn master_port(&self) -> u16 {
        for s in &self.sentinels {
            let Ok(Ok(mut con)) = tokio::time::timeout(
                Duration::from_secs(1),
                self.client(&self.url(s.port, true))
                    .get_multiplexed_async_connection(),
            )
            .await
            else {
                continue;
            };
            let named: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER)
                .query_async(&mut con)
                .await;
            if let Ok((_, port)) = named {
                return port;
            }
        }
        panic!("no Sentinel names the master");
    }

    /// The data server on `port`.
    pub fn server(&mut self, port: u16) -> &mut Proc {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server of the set")
    }

    /// Waits until the Sentinels name a master other than `old` and it says it is one.
    pub async fn wait_new_master(&self, old: u16) -> u16 {
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            let port = self.master_port().await;
            if port != old {
                let mut con = self.connect(port, false).await;
                let role: redis::RedisResult<Vec<redis::Value>> =
                    redis::cmd("ROLE").query_async(&mut con).await;
                if matches!(role.as_deref(), Ok([redis::Value::BulkString(b), ..]) if b == b"master")
                {
                    return port;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover within {FAILOVER_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A planned failover: `SENTINEL FAILOVER` on the first Sentinel.
    pub async fn failover(&self) {
        let mut con = self.connect(self.sentinels[0].port, true).await;
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query_async(&mut con)
            .await
            .expect("SENTINEL FAILOVER accepted");
    }

    async fn wait_replicas_online(&self, master: u16, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut con = self.connect(master, false).await;
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut con)
                .await
                .expect("INFO");
            if info.matches("state=online").count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "replicas never in sync: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every Sentinel knows the replicas and the two other Sentinels.
    async fn wait_sentinels_know(&self, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for s in &self.sentinels {
            let mut con = self.connect(s.port, true).await;
            loop {
                let known_replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER)
                    .query_async(&mut con)
                    .await
                    .unwrap_or_default();
                let known_sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER)
                    .query_async(&mut con)
                    .await
                    .unwrap_or_default();
                if known_replicas.len() >= replicas && known_sentinels.len() >= 2 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Sentinel {} knows {} replicas and {} Sentinels",
                    s.port,
                    known_replicas.len(),
                    known_sentinels.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for RedisSet {
    fn drop(&mut self) {
        for s in self.sentinels.iter_mut().chain(self.servers.iter_mut()) {
            s.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
