//! Running in production: TLS on the listener (`wss://`, `https://`) with certificates made
//! in the test, the certificate and keys reloaded on SIGHUP without dropping the
//! connections that keep their key, and a file that does not validate refused while the
//! old configuration keeps serving. Real handshakes, the real binary, real signals.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::broker_process::BrokerProcess;
use common::{Client, Ended, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A fresh self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate generated");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// A directory of its own for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rustorium-production-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`.
fn write_pair(dir: &Path, pair: &(String, String)) {
    // Written beside, then renamed: a reload never reads half a file.
    for (name, text) in [("cert.pem", &pair.0), ("key.pem", &pair.1)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).expect("write pem");
        std::fs::rename(&tmp, dir.join(name)).expect("rename pem");
    }
}

/// A TLS client trusting only `cert_pem`.
fn trusting(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.expect("pem cert")).expect("root added");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Wss = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `wss://addr{path}` trusting `tls`; the error text if the handshake fails.
async fn wss(addr: SocketAddr, path: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Wss, String> {
    let url = format!("wss://{addr}{path}");
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        None,
        false,
        Some(Connector::Rustls(tls.clone())),
    );
    match tokio::time::timeout(WAIT, connecting).await {
        Err(_) => panic!("connect to {url} timed out"),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// One HTTPS request (HTTP/1.1, `Connection: close`): status and body.
async fn https(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake");
    let r = common::http_over(stream, addr, method, path, headers, body.as_bytes()).await;
    (r.status, r.text)
}

/// Publishes `event` over HTTPS with alice's key; the status.
async fn publish_https(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, event: &Value) {
    let auth = [
        ("Authorization", "Bearer alice-secret-1"),
        ("Content-Type", "application/json"),
    ];
    let (status, body) = https(addr, tls, "POST", "/api/publish", &auth, &event.to_string()).await;
    assert_eq!(status, 200, "publish over https: {body}");
}

/// The next JSON text frame (heartbeats skipped), within WAIT.
async fn next_json(ws: &mut Wss) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("frame read");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON frame");
            if v["type"] != "heartbeat" {
                return v;
            }
        }
    }
}

async fn send(ws: &mut Wss, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

fn config_file(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("broker.toml");
    let tmp = dir.join("broker.toml.tmp");
    std::fs::write(&tmp, body).expect("write config");
    std::fs::rename(&tmp, &path).expect("rename config");
    path
}

fn tls_config(dir: &Path, keys: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\nworkers = 1\n\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[ledger]\nempty_blocks = false\n\n[demo]\nenabled = false\n\n{keys}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

const KEYS: &str = "[[keys]]\nname = \"alice\"\nsecret = \"alice-secret-1\"\nroles = [\"subscribe\", \"publish\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_both_dialects_publish_and_metrics_and_refuses_an_untrusted_client() {
    let d = dir("tls");
    let pair = certificate();
    write_pair(&d, &pair);
    let path = config_file(&d, &tls_config(&d, KEYS));
    let mut broker = BrokerProcess::spawn(&["--config", path.to_str().expect("utf-8 path")]);
    let line = broker.read_until(|l| l.contains("subscribe:").then(|| l.to_owned()));
    assert!(
        line.contains("wss://"),
        "the banner shows wss:// URLs: {line}"
    );
    let tls = trusting(&pair.0);
    let addr = broker.addr;

    let mut ws = wss(addr, "/ws?token=alice-secret-1", &tls)
        .await
        .expect("wss /ws");
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "s", "data": {"channel": "blocks"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribe_success");
    let mut v1 = wss(addr, "/v1?api_key=alice-secret-1", &tls)
        .await
        .expect("wss /v1");
    send(
        &mut v1,
        json!({"id": "1", "type": "subscribe", "data": {"channel": "blocks"}}),
    )
    .await;
    let ack = next_json(&mut v1).await;
    assert_eq!(ack["type"], "subscription_confirmation", "v1 ack: {ack}");

    publish_https(addr, &tls, &common::block(7)).await;
    let on_ws = next_json(&mut ws).await;
    assert_eq!(on_ws["type"], "new_block", "{on_ws}");
    assert_eq!(on_ws["data"]["number"], 7);
    let on_v1 = next_json(&mut v1).await;
    assert_eq!(on_v1["type"], "new_block", "{on_v1}");
    assert_eq!(on_v1["data"]["number"], 7);

    let (status, metrics) = https(addr, &tls, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(common::metric(&metrics, "rustorium_connections"), Some(2.0));
    let (status, _) = https(addr, &tls, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);

    // A client that trusts another certificate refuses the broker's.
    let other = trusting(&certificate().0);
    let refused = wss(addr, "/ws?token=alice-secret-1", &other).await;
    let Err(e) = refused else {
        panic!("an untrusted certificate must be refused");
    };
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // Plain ws:// on the TLS port is not served.
    let plain = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=alice-secret-1"));
    let plain = tokio::time::timeout(WAIT, plain)
        .await
        .expect("answer in time");
    assert!(plain.is_err(), "plain ws:// on the TLS listener fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_is_presented_to_the_next_connection_and_open_ones_stay() {
    let d = dir("cert-reload");
    let first = certificate();
    write_pair(&d, &first);
    let path = config_file(&d, &tls_config(&d, KEYS));
    let broker = BrokerProcess::spawn_logging(&["--config", path.to_str().expect("utf-8")], "info");
    let addr = broker.addr;
    let mut open = wss(addr, "/ws?token=alice-secret-1", &trusting(&first.0))
        .await
        .expect("first certificate trusted");
    send(
        &mut open,
        json!({"type": "subscribe", "id": "s", "data": {"channel": "blocks"}}),
    )
    .await;
    assert_eq!(next_json(&mut open).await["type"], "subscribe_success");

    let second = certificate();
    write_pair(&d, &second);
    broker.hangup();
    let line = broker.log_until("configuration reloaded");
    assert!(line.contains("certificate reloaded"), "{line}");

    let next = wss(addr, "/ws?token=alice-secret-1", &trusting(&second.0)).await;
    assert!(
        next.is_ok(),
        "the next connection gets the new certificate: {:?}",
        next.err()
    );
    let old = wss(addr, "/ws?token=alice-secret-1", &trusting(&first.0)).await;
    assert!(old.is_err(), "the old certificate is no longer presented");

    // The connection opened before the reload still delivers.
    publish_https(addr, &trusting(&second.0), &common::block(1)).await;
    assert_eq!(next_json(&mut open).await["type"], "new_block");

    // A certificate that does not parse is refused, and the running one stays.
    std::fs::write(d.join("cert.pem"), "not a certificate").expect("write");
    broker.hangup();
    let line = broker.log_until("reload refused");
    assert!(
        line.contains("cert.pem"),
        "the error names the file: {line}"
    );
    assert!(wss(addr, "/ws?token=alice-secret-1", &trusting(&second.0))
        .await
        .is_ok());
}

#[test]
fn a_bad_certificate_or_key_fails_at_start_naming_the_file() {
    let d = dir("bad-cert");
    let good = certificate();
    let cases: [(&str, String, String, &str); 3] = [
        ("garbage cert", "hello".into(), good.1.clone(), "cert.pem"),
        (
            "garbage key",
            good.0.clone(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            "key.pem",
        ),
        (
            "key of another cert",
            good.0.clone(),
            certificate().1,
            "key.pem",
        ),
    ];
    for (what, cert, key, file) in cases {
        write_pair(&d, &(cert, key));
        let path = config_file(&d, &tls_config(&d, KEYS));
        let out = std::process::Command::new(common::broker_process::BIN)
            .args(["--config", path.to_str().expect("utf-8")])
            .env_remove("RUSTORIUM_CONFIG")
            .output()
            .expect("run broker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit code; stderr {stderr}"
        );
        assert!(
            stderr.contains(&d.join(file).display().to_string()),
            "{what}: the message names {file}: {stderr}"
        );
    }
    let missing = d.join("nowhere");
    let body = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n",
        missing.display()
    );
    let path = config_file(&d, &body);
    let out = std::process::Command::new(common::broker_process::BIN)
        .args(["--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

fn plain_config(keys: &str, extra: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\nworkers = 1\n\n[ledger]\nempty_blocks = false\n\n[demo]\nenabled = false\n{extra}\n{keys}"
    )
}

fn key(name: &str, secret: &str, roles: &str) -> String {
    format!("[[keys]]\nname = \"{name}\"\nsecret = \"{secret}\"\nroles = [{roles}]\n")
}

/// Reads frames until the connection closes; its close code and reason.
async fn closed(client: &mut Client) -> (u16, String) {
    loop {
        match client.next_text(WAIT).await {
            Some(Ok(_)) => continue,
            Some(Err(Ended::Closed(code, reason))) => return (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Receives until a `new_block` numbered `n` arrives.
async fn block_arrives(client: &mut Client, n: u64) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match client.next_text(Duration::from_secs(1)).await {
            Some(Ok(v)) if v["type"] == "new_block" && v["data"]["number"] == n => return,
            Some(Ok(_)) | None => continue,
            Some(Err(e)) => panic!("connection ended waiting for block {n}: {e:?}"),
        }
    }
    panic!("block {n} did not arrive");
}

async fn counter(addr: SocketAddr, name: &str) -> f64 {
    common::metric(&common::metrics(addr).await, name).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_changes_keys_and_refuses_an_invalid_file() {
    let d = dir("keys-reload");
    let publisher = key("feed", "feed-secret-1", "\"publish\"");
    let alice = key("alice", "alice-secret-1", "\"subscribe\"");
    let bob = key("bob", "bob-secret-1", "\"subscribe\"");
    let path = config_file(&d, &plain_config(&format!("{publisher}{alice}{bob}"), ""));
    let broker = BrokerProcess::spawn_logging(&["--config", path.to_str().expect("utf-8")], "info");
    let addr = broker.addr;
    let mut a = Client::ws(addr, "alice-secret-1").await;
    let mut b = Client::ws(addr, "bob-secret-1").await;
    for c in [&mut a, &mut b] {
        c.subscribe("blocks", json!({})).await;
    }
    // Before the reload alice may not publish.
    let publish = json!({"type": "publish", "id": "p1", "data": common::block(100)});
    a.send_json(&publish).await;
    let refused = a.next_text(WAIT).await;
    assert!(
        matches!(refused, Some(Ok(ref v)) if v["type"] == "error"),
        "publish refused before the reload: {refused:?}"
    );

    // Events keep flowing across the reload: a publisher runs meanwhile.
    let feeding = tokio::spawn(async move {
        let mut sent = 0u64;
        for n in 1..=40u64 {
            let body = common::block(n);
            if common::publish(addr, "feed-secret-1", &body).await.status == 200 {
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // bob removed, carol added, alice given the publish role.
    let alice2 = key("alice", "alice-secret-1", "\"subscribe\", \"publish\"");
    let carol = key("carol", "carol-secret-1", "\"subscribe\"");
    config_file(
        &d,
        &plain_config(&format!("{publisher}{alice2}{carol}"), ""),
    );
    broker.hangup();
    let line = broker.log_until("configuration reloaded");
    assert!(line.contains("added: carol"), "{line}");
    assert!(line.contains("removed: bob"), "{line}");
    assert!(line.contains("changed: alice"), "{line}");
    for secret in ["carol-secret-1", "bob-secret-1", "alice-secret-1"] {
        assert!(!line.contains(secret), "no secret in the log: {line}");
    }

    let (code, reason) = closed(&mut b).await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(
        feeding.await.expect("publisher"),
        40,
        "every publish accepted"
    );
    // alice's connection stayed and saw every block, in order.
    for n in 1..=40 {
        block_arrives(&mut a, n).await;
    }
    // Her open connection now may publish.
    a.send_json(&json!({"type": "publish", "id": "p2", "data": common::block(41)}))
        .await;
    block_arrives(&mut a, 41).await;
    // carol connects; bob cannot.
    let mut c = Client::ws(addr, "carol-secret-1").await;
    c.subscribe("blocks", json!({})).await;
    let mut gone = Client::ws(addr, "bob-secret-1").await;
    assert_eq!(closed(&mut gone).await.0, 4000);
    assert_eq!(counter(addr, "rustorium_config_reloads_total").await, 1.0);
    assert_eq!(counter(addr, "rustorium_key_revocations_total").await, 1.0);

    // A file that does not validate: refused, named, and the old keys keep serving.
    let dave = key("dave", "dave-secret-1", "\"subscribe\"");
    let bad = plain_config(
        &format!("{publisher}{alice2}{dave}"),
        "\n[limits]\nmax_subscriptions_per_connection = 0\n",
    );
    config_file(&d, &bad);
    broker.hangup();
    let line = broker.log_until("reload refused");
    assert!(
        line.contains("limits.max_subscriptions_per_connection"),
        "{line}"
    );
    assert_eq!(
        counter(addr, "rustorium_config_reload_failures_total").await,
        1.0
    );
    let mut d2 = Client::ws(addr, "dave-secret-1").await;
    assert_eq!(
        closed(&mut d2).await.0,
        4000,
        "the refused file's new key is not in force"
    );
    let mut c2 = Client::ws(addr, "carol-secret-1").await;
    c2.subscribe("blocks", json!({})).await;
    let body = common::block(42);
    assert_eq!(
        common::publish(addr, "feed-secret-1", &body).await.status,
        200
    );
    block_arrives(&mut a, 42).await;

    // A setting that needs a restart is reported, and the keys still reload: dave added,
    // carol's secret rotated (her connections made with the old one close 4000).
    let carol2 = key("carol", "carol-secret-2", "\"subscribe\"");
    let restart = plain_config(
        &format!("{publisher}{alice2}{carol2}{dave}"),
        "\n[heartbeat]\ninterval_ms = 20000\n",
    );
    config_file(&d, &restart);
    broker.hangup();
    let line = broker.log_until("configuration reloaded");
    assert!(line.contains("added: dave"), "{line}");
    assert!(line.contains("secret rotated: carol"), "{line}");
    assert_eq!(closed(&mut c).await.0, 4000);
    assert_eq!(closed(&mut c2).await.0, 4000);
    Client::ws(addr, "carol-secret-2")
        .await
        .subscribe("blocks", json!({}))
        .await;
    assert!(
        line.contains("needing a restart") && line.contains("heartbeat"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_connects_over_wss_trusting_the_brokers_certificate() {
    use futures_util::StreamExt as _;
    use rustorium_sdk::{Event, WebSocketClient};
    let d = dir("sdk-wss");
    let pair = certificate();
    write_pair(&d, &pair);
    let path = config_file(&d, &tls_config(&d, KEYS));
    let broker = BrokerProcess::spawn(&["--config", path.to_str().expect("utf-8")]);
    let addr = broker.addr;
    let endpoint = format!("wss://{addr}/ws");

    // Not trusted: the public authorities do not vouch for a self-signed certificate.
    let untrusting = WebSocketClient::new()
        .with_endpoint(endpoint.as_str())
        .with_api_key("alice-secret-1")
        .build()
        .expect("client");
    let refused = untrusting.subscribe_events(&["blocks"]).await;
    let Err(e) = refused else {
        panic!("a certificate no authority signed must be refused");
    };
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    let client = WebSocketClient::new()
        .with_endpoint(endpoint.as_str())
        .with_api_key("alice-secret-1")
        .with_root_certificates_pem(&pair.0)
        .build()
        .expect("client");
    let mut stream = client
        .subscribe_events(&["blocks"])
        .await
        .expect("subscribed over wss");
    publish_https(addr, &trusting(&pair.0), &common::block(9)).await;
    let got = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("stream open");
    match got {
        Event::NewBlock(block) => assert_eq!(block.number, 9),
        other => panic!("expected block 9, got {other:?}"),
    }
}
