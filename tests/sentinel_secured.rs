//! Sentinels that are secured (README "Several brokers on one Redis", issue 26): a node
//! names Sentinels that require their own password (`requirepass`, `redis://:PASSWORD@`)
//! or speak only TLS (`rediss://`, trusting `engine.tls_ca_file`), finds the master
//! through them, publishes and delivers, and follows a planned failover with the same
//! password and TLS; a wrong Sentinel password, or a Sentinel certificate the configured
//! authorities do not vouch for, stops the start with a clear message that does not show
//! the password. Real `redis-server` and `redis-sentinel` processes on loopback, skipped
//! where the other Sentinel tests are (`RUSTORIUM_REQUIRE_SENTINEL`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::broker_process::exit_of;
use common::cluster::{prefix, Node};
use common::sentinel::{free_port, RedisSet, ReplicaOf, Secured, FAILOVER_WAIT};
use common::{publish, publish_ok, tick, Client, PUB_KEY, SUB_KEY};
use serde_json::json;

/// The Sentinels' own password in these tests: it must never show.
const SENTINEL_PASSWORD: &str = "s3ntinel-pw-4d81";

/// The data servers' password, another one: `redis_url` carries it to the master that
/// the Sentinels name.
const MASTER_PASSWORD: &str = "m4ster-pw-c07e";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rustorium-sentinel-secured-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Publishes `tick(symbol, i)` to `addr` until one is acknowledged (within
/// [`FAILOVER_WAIT`]: the node may still be finding the new master); its id.
async fn publish_when_live(addr: SocketAddr, symbol: &str, i: u64) -> String {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        let r = publish(addr, PUB_KEY, &tick(symbol, i)).await;
        if r.status == 200 {
            return r.body["data"]["ids"][0].as_str().expect("an id").to_owned();
        }
        assert!(
            r.status == 503 || r.status == 0,
            "publish answered {}: {}",
            r.status,
            r.text
        );
        assert!(
            Instant::now() < deadline,
            "no publish acknowledged within {FAILOVER_WAIT:?} after the failover: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `client`'s events until the one with `id` (within [`FAILOVER_WAIT`]).
async fn delivered(client: &mut Client, id: &str) {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_text(left).await {
            Some(Ok(v)) if v["id"] == id => return,
            Some(Ok(_)) => {}
            other => panic!("event {id} was not delivered: {other:?}"),
        }
    }
}

/// A node on `set`'s Sentinels: subscribes, publishes and receives; then a planned
/// failover, and the same node publishes and delivers on the new master.
async fn publishes_and_follows_a_failover(set: &RedisSet, redis_url: &str, name: &str) {
    let node = Node::start_with(redis_url, &prefix(name), &set.engine_toml(), "");
    let mut client = Client::ws(node.addr, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let id = publish_ok(node.addr, &tick("SEC-USD", 1)).await.remove(0);
    assert_eq!(client.recv().await["id"], id.as_str());

    let old = set.master_port().await;
    set.failover().await;
    let new = set.wait_new_master(old).await;
    assert_ne!(new, old);
    // Found again through the same Sentinels (their password, their TLS), and the new
    // master reached as `redis_url` says: publishes are acknowledged and delivered.
    let id = publish_when_live(node.addr, "SEC-USD", 2).await;
    delivered(&mut client, &id).await;
}

/// Runs the broker on a config with `engine` as its `[engine]` fields; asserts that it
/// stops (within `common::WAIT`) with exit status 2, and returns what it wrote to stderr.
fn refused_at_start(dir: &Path, engine: &str) -> String {
    let path = dir.join(format!("refused-{}.toml", rand::random::<u32>()));
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[demo]\nenabled = false\n[engine]\nkind = \"redis\"\n\
             connect_timeout_ms = 1000\nresponse_timeout_ms = 2000\n{engine}"
        ),
    )
    .expect("write the config");
    let (code, err) = exit_of(&path);
    assert_eq!(code, Some(2), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_their_own_password_name_the_master_and_a_failover_is_followed() {
    let secured = Secured {
        sentinel_password: Some(SENTINEL_PASSWORD.into()),
        ..Secured::default()
    };
    let Some(set) = RedisSet::start_secured(free_port(), &[ReplicaOf::Master], &[], secured).await
    else {
        return;
    };
    // The Sentinels do require it: without it they answer nothing.
    let mut anonymous = RedisSet::con(set.sentinels[0].port).await;
    let refused: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(common::sentinel::MASTER)
        .query_async(&mut anonymous)
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.code() == Some("NOAUTH")),
        "{refused:?}"
    );
    publishes_and_follows_a_failover(&set, "redis://127.0.0.1:1/", "sentinelpw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sentinel_password_stops_the_start_with_a_clear_message() {
    let secured = Secured {
        sentinel_password: Some(SENTINEL_PASSWORD.into()),
        ..Secured::default()
    };
    let Some(set) = RedisSet::start_secured(free_port(), &[], &[], secured).await else {
        return;
    };
    let wrong = "not-the-sentinel-pw-71c0";
    let list: Vec<String> = set
        .sentinels
        .iter()
        .map(|s| format!("\"redis://:{wrong}@127.0.0.1:{}\"", s.port))
        .collect();
    let d = dir("wrongpw");
    let err = refused_at_start(
        &d,
        &format!(
            "sentinels = [{}]\nsentinel_master = \"{}\"\n",
            list.join(", "),
            common::sentinel::MASTER
        ),
    );
    assert!(
        err.contains("Redis refused the user or password (check engine.sentinels)"),
        "not a clear message: {err}"
    );
    assert!(
        !err.contains(wrong),
        "the password is in the message: {err}"
    );
    assert!(
        err.contains(":***@127.0.0.1"),
        "the Sentinel is named, masked: {err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_over_tls_name_a_tls_master_and_a_failover_is_followed() {
    let d = dir("tls");
    common::tls::certificates(&d);
    let secured = Secured {
        tls: Some(d.clone()),
        ..Secured::default()
    };
    let Some(set) = RedisSet::start_secured(free_port(), &[ReplicaOf::Master], &[], secured).await
    else {
        return;
    };
    // Nothing of the set answers in plain text: a node that reached it did so over TLS.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}/", set.sentinels[0].port))
        .expect("a URL");
    let answered = tokio::time::timeout(
        Duration::from_secs(2),
        plain.get_multiplexed_async_connection(),
    )
    .await;
    assert!(
        !matches!(answered, Ok(Ok(_))),
        "a TLS Sentinel answered in plain text"
    );
    publishes_and_follows_a_failover(&set, "rediss://127.0.0.1:1/", "sentineltls").await;

    // The same Sentinels without the test CA: their certificate is not vouched for by
    // the system's roots, which the start says rather than waiting for ever.
    let list: Vec<String> = set
        .sentinels
        .iter()
        .map(|s| format!("\"rediss://127.0.0.1:{}\"", s.port))
        .collect();
    let err = refused_at_start(
        &d,
        &format!(
            "redis_url = \"rediss://127.0.0.1:1/\"\nsentinels = [{}]\nsentinel_master = \"{}\"\n",
            list.join(", "),
            common::sentinel::MASTER
        ),
    );
    assert!(
        err.contains("invalid peer certificate"),
        "not a clear message: {err}"
    );
    drop(set);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_over_tls_name_a_master_with_a_password_of_its_own() {
    let d = dir("tlspw");
    common::tls::certificates(&d);
    let secured = Secured {
        sentinel_password: Some(SENTINEL_PASSWORD.into()),
        master_password: Some(MASTER_PASSWORD.into()),
        tls: Some(d.clone()),
    };
    let Some(set) = RedisSet::start_secured(free_port(), &[ReplicaOf::Master], &[], secured).await
    else {
        return;
    };
    // The Sentinels' password goes to the Sentinels, `redis_url`'s (with its TLS) to each
    // master they name, before and after the failover.
    let url = format!("rediss://:{MASTER_PASSWORD}@127.0.0.1:1/");
    publishes_and_follows_a_failover(&set, &url, "sentineltlspw").await;

    // The right Sentinel password with a wrong master password: the master refuses it,
    // which stops the start naming `engine.redis_url`, showing neither password.
    let wrong = "not-the-master-pw-5a2e";
    let err = refused_at_start(
        &d,
        &format!(
            "redis_url = \"rediss://:{wrong}@127.0.0.1:1/\"\n{}",
            set.engine_toml()
        ),
    );
    assert!(
        err.contains("Redis refused the user or password (check engine.redis_url)"),
        "not a clear message: {err}"
    );
    for pw in [wrong, SENTINEL_PASSWORD] {
        assert!(!err.contains(pw), "a password is in the message: {err}");
    }
    drop(set);
    let _ = std::fs::remove_dir_all(&d);
}
