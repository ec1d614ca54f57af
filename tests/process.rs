//! The `rustorium-broker` binary as a newcomer meets it: the banner's lines work as
//! pasted, bad configuration fails at start naming the field, and SIGTERM closes every
//! connection with 1001 and exits in bounded time.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::broker_process::{BrokerProcess, BIN};
use common::*;
use serde_json::json;

struct Broker {
    process: BrokerProcess,
    addr: SocketAddr,
    ws_url: String,
    curl: String,
}

fn spawn(args: &[&str]) -> Broker {
    let mut process = BrokerProcess::spawn(args);
    let mut ws_url = None;
    let curl = process.read_until(|line| {
        if let Some(u) = line.trim().strip_prefix("subscribe:") {
            ws_url = Some(u.trim().to_owned());
        }
        line.trim()
            .strip_prefix("publish:")
            .map(|c| c.trim().to_owned())
    });
    Broker {
        addr: process.addr,
        process,
        ws_url: ws_url.expect("ws URL in banner"),
        curl,
    }
}

fn fails_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(2), "expected exit code 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_banner_lines_work_as_pasted() {
    let b = spawn(&["--bind", "127.0.0.1:0"]);
    let path = b
        .ws_url
        .split_once(&b.addr.to_string())
        .map(|(_, p)| p.to_owned());
    let mut c = Client::connect(b.addr, &path.expect("URL names the address")).await;
    let address = rustorium_broker::server::WALKTHROUGH_ADDRESS;
    c.subscribe("transaction_updates", json!({"address": address}))
        .await;
    // The curl line: its key and body, sent as curl would send them.
    let key = b
        .curl
        .split("Bearer ")
        .nth(1)
        .and_then(|s| s.split('\'').next());
    let body = b
        .curl
        .rsplit("-d '")
        .next()
        .and_then(|s| s.strip_suffix('\''));
    let (key, body) = (
        key.expect("key in curl line"),
        body.expect("body in curl line"),
    );
    let auth = format!("Bearer {key}");
    let r = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = c.recv().await;
    assert_eq!(e["type"], "update");
    assert_eq!(e["channel"], "transaction_updates");
    assert_eq!(e["data"]["from"], address);
    assert_eq!(e["id"], r.body["data"]["ids"][0]);
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("rustorium-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        path.to_string_lossy().into_owned()
    };
    let typo = write("typo.toml", "[limits]\nmax_frame_byte = 10\n");
    assert!(fails_with(&["--config", &typo], &[]).contains("max_frame_byte"));
    let range = write("range.toml", "[heartbeat]\ninterval_ms = 0\n");
    assert!(fails_with(&["--config", &range], &[]).contains("heartbeat.interval_ms"));
    let key = write("key.toml", "[[keys]]\nname = \"a\"\nsecret = \"\"\n");
    assert!(fails_with(&["--config", &key], &[]).contains("keys[0].secret"));
    let missing = dir.join("missing.toml").to_string_lossy().into_owned();
    assert!(fails_with(&["--config", &missing], &[]).contains("missing.toml"));
    let open = fails_with(&["--bind", "0.0.0.0:0"], &[]);
    assert!(
        open.contains("refusing to listen on 0.0.0.0:0 with no keys"),
        "{open}"
    );
    let env = fails_with(&[], &[("RUSTORIUM_BIND", "not-an-address")]);
    assert!(env.contains("server.bind"), "{env}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_closes_every_connection_1001_and_exits() {
    let mut b = spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--key",
        "k:secret-k:subscribe+publish",
    ]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = Client::ws(b.addr, "secret-k").await;
        c.subscribe("blocks", json!({})).await;
        clients.push(c);
    }
    let ready = http(b.addr, "GET", "/ready", &[], b"").await;
    assert_eq!(ready.status, 200);
    // SAFETY: kill() sends a signal to our own child process.
    unsafe {
        libc::kill(b.process.child.id() as libc::pid_t, libc::SIGTERM);
    }
    for c in clients.iter_mut() {
        assert_eq!(c.expect_close().await.0, 1001);
    }
    // No longer accepting: a new connection attempt fails.
    let url = format!("ws://{}/ws?token=secret-k", b.addr);
    let late = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str())).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a connection was accepted during shutdown"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = b.process.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "broker did not exit within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("RUSTORIUM_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let rx = lines_of(child.stderr.take().expect("piped stderr"));
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match rx.recv_timeout(WAIT) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= 3, "log lines at start: {lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v[field].is_string(), "{field} in {line}");
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"INFO\"")),
        "{lines:?}"
    );
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = std::env::temp_dir().join(format!("rustorium-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        "[server]\nbind = \"127.0.0.1:0\"\n\n[[keys]]\nname = \"alice\"\nsecret = \"s3cret-alice-123\"\nroles = [\"subscribe\", \"admin\"]\n\n[[keys]]\nname = \"feed\"\nsecret = \"feed-secret-456\"\nroles = [\"publish\"]\n\n[engine]\nredis_url = \"redis://app:hunter2@127.0.0.1:6379/\"\n",
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().expect("utf-8 path")])
        .env_remove("RUSTORIUM_CONFIG")
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for secret in ["s3cret-alice-123", "feed-secret-456", "hunter2"] {
        assert!(!stdout.contains(secret), "{secret} is masked: {stdout}");
    }
    assert!(stdout.contains("name = \"alice\""), "{stdout}");
    assert!(
        stdout.contains("redis://app:***@127.0.0.1:6379/"),
        "{stdout}"
    );
    // Every default filled in, and the text parses as a configuration file (the masked
    // secrets, all alike, would not validate as two keys).
    assert!(
        stdout.contains("max_subscriptions_per_connection = 100"),
        "{stdout}"
    );
    let back = rustorium_broker::Config::from_toml(&stdout);
    assert!(back.is_ok_and(|c| c.keys.len() == 2), "{stdout}");

    std::fs::write(&path, "[limits]\nmax_subscriptions_per_connection = 0\n").expect("write");
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().expect("utf-8 path")])
        .env_remove("RUSTORIUM_CONFIG")
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing printed on stdout");
    assert!(
        stderr.contains("limits.max_subscriptions_per_connection"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_masks_a_development_key_and_applies_flags_after_the_path() {
    let dir = std::env::temp_dir().join(format!("rustorium-check-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broker.toml");
    std::fs::write(&path, "[server]\nbind = \"127.0.0.1:0\"\n").expect("write config");
    let check = |flags: &[&str]| {
        Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .args(flags)
            .env_remove("RUSTORIUM_CONFIG")
            .env_remove("RUSTORIUM_KEYS")
            .output()
            .expect("run check-config")
    };

    // No keys: the development key a start would generate is shown, its secret masked.
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("a development key"), "{stdout}");
    assert!(stdout.contains("name = \"dev\""), "{stdout}");
    assert!(
        !stdout.contains("dev_"),
        "the generated secret is masked: {stdout}"
    );

    // A flag after the path applies as it would at start.
    let out = check(&["--key", "bob:flag-secret-789:publish"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("name = \"bob\""), "{stdout}");
    assert!(!stdout.contains("flag-secret-789"), "{stdout}");
    assert!(!stdout.contains("development key"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
