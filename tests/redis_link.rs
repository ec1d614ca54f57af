//! How the Redis engine reaches a real Redis (PROTOCOL.md section 11, README "Several
//! brokers on one Redis"): `rediss://` with a private CA and an ACL user, the password never
//! shown, a wrong one refused at start; and a pub/sub connection that stays open but
//! delivers nothing (the silent stall) treated as lost: the node reconnects and backfills.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker_process::{exit_of, BrokerProcess, BIN};
use common::cluster::{node_config, prefix, ready, Node};
use common::proxy::Proxy;
use common::redis_server::redis_server;
use common::tls::certificates;
use common::{http, publish_ok, tick, Client, SUB_KEY, WAIT};
use serde_json::json;

/// The ACL user's password in these tests: it must never show.
const PASSWORD: &str = "s3cret-app-pw-9f1c";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rustorium-redis-link-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A `redis-server` that speaks only TLS, with an ACL user `app` and the default user off.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(dir: &Path) -> Option<TlsRedis> {
    // Skipped (or required) as the other Redis tests are.
    drop(redis_server()?);
    certificates(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let p = |f: &str| dir.join(f).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &p("")])
        .args([
            "--user",
            "app",
            "on",
            &format!(">{PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .args(["--user", "default", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server with TLS starts");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(TlsRedis { child, port })
}

/// A broker config on `url` with the CA of `dir`.
fn config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join(format!("broker-{}.toml", rand::random::<u32>()));
    let ca = format!("tls_ca_file = \"{}\"", dir.join("ca.pem").display());
    let text = node_config(url, &prefix("tls"), &ca, "");
    std::fs::write(&path, text).expect("write the config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_an_acl_user_works_and_the_password_never_shows() {
    let d = dir("tls");
    let Some(redis) = tls_redis(&d) else {
        return;
    };
    let url = format!("rediss://app:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let path = config(&d, &url);
    let path_arg = path.to_str().expect("utf-8 path");
    let broker = BrokerProcess::spawn_logging(&["--config", path_arg], "info");
    let deadline = Instant::now() + WAIT;
    while ready(broker.addr) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the broker never got ready on rediss://"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Commands and pub/sub both go over TLS as the ACL user: a publish reaches a
    // subscriber through Redis.
    let mut client = Client::ws(broker.addr, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let id = publish_ok(broker.addr, &tick("TLS-USD", 1)).await.remove(0);
    assert_eq!(client.recv().await["id"], id.as_str());

    let metrics = http(broker.addr, "GET", "/metrics", &[], b"").await;
    assert!(
        !metrics.text.contains(PASSWORD),
        "the password is in /metrics"
    );
    let mut logged = Vec::new();
    while let Ok(line) = broker.log.try_recv() {
        logged.push(line);
    }
    assert!(
        logged.iter().any(|l| l.contains("Redis master 127.0.0.1")),
        "the log says where the master is: {logged:?}"
    );
    assert!(
        !logged.iter().any(|l| l.contains(PASSWORD)),
        "the password is in the log: {logged:?}"
    );
    let out = Command::new(BIN)
        .args(["check-config", path_arg])
        .env_remove("RUSTORIUM_CONFIG")
        .output()
        .expect("run check-config");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        !shown.contains(PASSWORD),
        "check-config shows the password: {shown}"
    );
    assert!(shown.contains("rediss://app:***@127.0.0.1"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_at_start_with_a_clear_message() {
    let d = dir("wrongpw");
    let Some(redis) = tls_redis(&d) else {
        return;
    };
    let wrong = "not-the-pw-7e2a";
    let path = config(
        &d,
        &format!("rediss://app:{wrong}@127.0.0.1:{}/", redis.port),
    );
    let (code, err) = exit_of(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Redis refused the user or password"),
        "not a clear message: {err}"
    );
    assert!(
        !err.contains(wrong),
        "the password is in the message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_delivers_nothing_without_closing_is_noticed_and_backfilled() {
    let Some(redis) = redis_server() else {
        return;
    };
    let p = prefix("stall");
    let a = Node::start(&redis.url, &p, "");
    // B reaches Redis through a proxy that will stop forwarding what Redis sends its
    // pub/sub connection, keeping it open: no error, no close, nothing delivered.
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().expect("addr")).await;
    let b = Node::start_with(
        &format!("redis://{}/", proxy.addr),
        &p,
        "probe_interval_ms = 200\nprobe_timeout_ms = 1000",
        "",
    );
    let mut client = Client::ws(b.addr, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let first = publish_ok(a.addr, &tick("STALL-USD", 0)).await.remove(0);
    assert_eq!(client.recv().await["id"], first.as_str());

    let connections = proxy.accepted().len();
    assert_eq!(
        proxy.stall_subscribers_downstream(),
        1,
        "one pub/sub connection"
    );
    let mut published = Vec::new();
    for i in 1..=20 {
        published.extend(publish_ok(a.addr, &tick("STALL-USD", i)).await);
    }
    let mut got = Vec::new();
    while got.len() < published.len() {
        match client.next_text(WAIT).await {
            Some(Ok(v)) if v["type"] == "heartbeat" => {}
            Some(Ok(v)) => got.push(v["id"].as_str().expect("an id").to_owned()),
            other => panic!(
                "after {} of {} events the stalled node delivered nothing more: {other:?}",
                got.len(),
                published.len()
            ),
        }
    }
    assert_eq!(got, published, "every event, once, in order");
    assert!(
        proxy.accepted().len() > connections,
        "B connected its pub/sub again"
    );
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_with_a_password_names_the_master_and_a_wrong_one_stops_the_start() {
    let Some(redis) = redis_server() else {
        return;
    };
    if Command::new("redis-sentinel")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        assert!(
            std::env::var_os("RUSTORIUM_REQUIRE_SENTINEL").is_none(),
            "RUSTORIUM_REQUIRE_SENTINEL is set but redis-sentinel is missing"
        );
        return;
    }
    let d = dir("sentinelpw");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let conf = d.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nrequirepass {PASSWORD}\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n",
            d.display(),
            redis.port()
        ),
    )
    .expect("write the sentinel config");
    let mut sentinel = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-sentinel starts");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-sentinel did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = prefix("sentinelpw");
    let engine = format!(
        "sentinels = [\"redis://:{PASSWORD}@127.0.0.1:{port}\"]\nsentinel_master = \"mymaster\""
    );
    let node = Node::start_with("redis://127.0.0.1:1/", &p, &engine, "");
    let mut client = Client::ws(node.addr, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let id = publish_ok(node.addr, &tick("SENT-USD", 1)).await.remove(0);
    assert_eq!(client.recv().await["id"], id.as_str());

    // The wrong Sentinel password: refused at start, said, not shown.
    let wrong = "not-the-sentinel-pw-3b9d";
    let path = d.join("wrong.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[demo]\nenabled = false\n[engine]\nkind = \"redis\"\n\
             sentinels = [\"redis://:{wrong}@127.0.0.1:{port}\"]\nsentinel_master = \"mymaster\"\n"
        ),
    )
    .expect("write the config");
    let out = Command::new(BIN)
        .args(["--config", path.to_str().expect("utf-8 path")])
        .env_remove("RUSTORIUM_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .expect("run the broker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Redis refused the user or password"), "{err}");
    assert!(
        !err.contains(wrong),
        "the password is in the message: {err}"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_that_names_a_replica_is_said_plainly() {
    let (Some(master), Some(replica)) = (redis_server(), redis_server()) else {
        return;
    };
    let mut r = replica.node().await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query_async(&mut r)
        .await
        .expect("REPLICAOF");
    let d = dir("replica");
    let path = d.join("broker.toml");
    std::fs::write(&path, node_config(&replica.url, &prefix("replica"), "", ""))
        .expect("write the config");
    let broker = BrokerProcess::spawn_logging(&["--config", path.to_str().expect("utf-8")], "warn");
    let line = broker.log_until("is a replica: engine.redis_url must name the master");
    assert!(line.contains(&replica.port().to_string()), "{line}");
}
