//! Resume (PROTOCOL.md section 7): after an abrupt disconnect, a `reconnect` with the last
//! received id restores the subscriptions and replays every missed event from the
//! channels' history exactly once, in sequence order, then live delivery continues with
//! no gap and no duplicate. Each documented failure gives its documented reply.

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

fn transfer(id: u64, from: &str, to: &str) -> Value {
    json!({"channel": "transaction_updates", "data": {"transaction_id": format!("0x{id:x}"),
        "status": "confirmed", "from": from, "to": to, "timestamp": "2024-01-01T12:00:00Z"}})
}

/// A mixed burst: blocks, two symbols and transfers for two addresses.
fn burst(start: u64, n: u64) -> Vec<Value> {
    (start..start + n)
        .map(|i| match i % 5 {
            0 => block(i),
            1 => tick("MTK/USD", i),
            2 => tick("STK/USD", i),
            3 => transfer(i, "0xAAaa", "0xbb"),
            _ => transfer(i, "0xcc", "0xdd"),
        })
        .collect()
}

/// Publishes and returns (id, channel, event) for each event.
async fn publish_all(addr: std::net::SocketAddr, events: Vec<Value>) -> Vec<(String, Value)> {
    let ids = publish_ok(addr, &json!(events)).await;
    ids.into_iter().zip(events).collect()
}

/// The ids a subscriber with these three subscriptions must get, in order.
fn expected(published: &[(String, Value)]) -> Vec<String> {
    published
        .iter()
        .filter(|(_, e)| match e["channel"].as_str() {
            Some("blocks") => true,
            Some("market_data") => e["data"]["symbol"] == "MTK/USD",
            Some("transaction_updates") => e["data"]["from"] == "0xAAaa",
            _ => false,
        })
        .map(|(id, _)| id.clone())
        .collect()
}

async fn subscribe_three(c: &mut Client) -> Vec<String> {
    vec![
        c.subscribe("blocks", json!({})).await,
        c.subscribe("market_data", json!({"symbols": ["MTK/USD"]}))
            .await,
        c.subscribe("transaction_updates", json!({"address": "0xaaAA"}))
            .await,
    ]
}

#[tokio::test]
async fn an_abrupt_disconnect_mid_burst_loses_nothing_and_repeats_nothing() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let subs = subscribe_three(&mut c).await;
    let mut published = publish_all(b.addr, burst(0, 200)).await;
    let want_before = expected(&published).len();
    let mut got: Vec<String> = Vec::new();
    for _ in 0..want_before / 2 {
        got.push(c.recv().await["id"].as_str().expect("id").to_owned());
    }
    c.drop_tcp();
    published.extend(publish_all(b.addr, burst(200, 200)).await);

    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(got.last().map(String::as_str), &subs).await;
    assert_eq!(r["type"], "reconnect_success", "{r}");
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["subscriptions"], json!(subs));
    assert_eq!(r["data"]["failed"], json!([]));
    let want = expected(&published);
    assert_eq!(r["data"]["replayed"], want.len() - got.len());
    while got.len() < want.len() {
        got.push(c.recv().await["id"].as_str().expect("id").to_owned());
    }
    // Live delivery continues on the same subscriptions, filters intact.
    published.extend(publish_all(b.addr, burst(400, 50)).await);
    let want = expected(&published);
    while got.len() < want.len() {
        got.push(c.recv().await["id"].as_str().expect("id").to_owned());
    }
    // Exactly once, and in sequence order across the three channels (PROTOCOL.md 5).
    assert_eq!(got, want);
    c.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_reconnecting_at_random_points_under_load_lose_and_repeat_nothing() {
    const CLIENTS: u64 = 50;
    const ROUNDS: usize = 4;
    let mut cfg = config();
    cfg.keys[0].max_connections = Some(400);
    let b = start(cfg);
    let addr = b.addr;

    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS as usize);
    let (done_tx, done_rx) = tokio::sync::watch::channel(0usize);
    for n in 0..CLIENTS {
        let ready = ready_tx.clone();
        let mut total = done_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(n);
            let mut c = Client::ws(addr, SUB_KEY).await;
            let subs = subscribe_three(&mut c).await;
            let _ = ready.send(()).await;
            let mut got: Vec<String> = Vec::new();
            for _ in 0..ROUNDS {
                for _ in 0..rng.random_range(1..120) {
                    match c.next_text(WAIT).await {
                        Some(Ok(v)) if v["type"] != "heartbeat" => {
                            got.push(v["id"].as_str().expect("id").to_owned())
                        }
                        Some(Ok(_)) => {}
                        other => panic!("client {n}: {other:?}"),
                    }
                }
                c.drop_tcp();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
                c = Client::ws(addr, SUB_KEY).await;
                let r = c.reconnect(got.last().map(String::as_str), &subs).await;
                assert_eq!(r["data"]["recovered"], true, "client {n}: {r}");
            }
            // Read until the publisher is done and everything it published arrived.
            let want = loop {
                let target = *total.borrow();
                if target > 0 && got.len() >= target {
                    break target;
                }
                match c.next_text(Duration::from_millis(200)).await {
                    Some(Ok(v)) if v["type"] != "heartbeat" => {
                        got.push(v["id"].as_str().expect("id").to_owned())
                    }
                    Some(Ok(_)) | None => {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(10), total.changed()).await;
                    }
                    Some(Err(e)) => panic!("client {n}: {e:?}"),
                }
            };
            (got, want)
        }));
    }
    for _ in 0..CLIENTS {
        tokio::time::timeout(WAIT * 3, ready_rx.recv())
            .await
            .expect("clients ready");
    }
    let mut published = Vec::new();
    for round in 0..40 {
        published.extend(publish_all(addr, burst(round * 50, 50)).await);
    }
    let want = expected(&published);
    let _ = done_tx.send(want.len());
    for t in tasks {
        let (got, n) = tokio::time::timeout(WAIT * 6, t)
            .await
            .expect("client finished in time")
            .expect("client task");
        assert_eq!(n, want.len());
        assert_eq!(got.len(), want.len(), "lost or repeated events");
        assert_eq!(got, want, "not in sequence order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_4005_then_resumes_with_everything() {
    const EVENTS: u64 = 2000;
    const PER_BATCH: u64 = 40;
    let mut cfg = config();
    cfg.limits.connection_queue_bytes = 2 * 1024 * 1024;
    let b = start(cfg);
    let fat = |n: u64| {
        let mut e = block(n);
        e["data"]["pad"] = json!("p".repeat(16 * 1024));
        e
    };
    let mut stalled = Client::ws(b.addr, SUB_KEY).await;
    let sid = stalled.subscribe("blocks", json!({})).await;
    let mut fast = Client::ws(b.addr, SUB_KEY).await;
    fast.subscribe("blocks", json!({})).await;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..EVENTS {
            ids.push(fast.recv().await["id"].as_str().map(str::to_owned));
        }
        ids
    });
    let mut published = Vec::new();
    for start in (0..EVENTS).step_by(PER_BATCH as usize) {
        let batch: Vec<Value> = (start..start + PER_BATCH).map(fat).collect();
        published.extend(publish_ok(b.addr, &json!(batch)).await);
    }
    let fast_ids = reader.await.expect("fast reader");
    assert_eq!(
        fast_ids,
        published.iter().cloned().map(Some).collect::<Vec<_>>()
    );

    // The stalled client reads again: a gap-free prefix, then 4005.
    let mut got: Vec<String> = Vec::new();
    let code = loop {
        match stalled.next_text(WAIT).await {
            Some(Ok(v)) => got.push(v["id"].as_str().expect("id").to_owned()),
            Some(Err(Ended::Closed(code, _))) => break code,
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    assert_eq!(code, 4005);
    assert!(got.len() < published.len());
    assert_eq!(got[..], published[..got.len()]);
    let mut again = Client::ws(b.addr, SUB_KEY).await;
    let r = again
        .reconnect(got.last().map(String::as_str), &[sid])
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], published.len() - got.len());
    while got.len() < published.len() {
        got.push(again.recv().await["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(got, published);
}

#[tokio::test]
async fn confirmations_filters_survive_a_resume_from_a_release_id() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({"confirmations": 2})).await;
    let ids = publish_ok(b.addr, &json!([block(1), block(2)])).await;
    let release = format!("{}.{}", ids[1], ids[0]);
    let got = c.recv().await;
    assert_eq!(got["id"], release.as_str());
    assert_eq!(got["data"]["number"], 1);
    c.drop_tcp();
    let b3 = publish_ok(b.addr, &block(3)).await.remove(0);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .reconnect(Some(&release), std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], 1);
    // Replayed with the id it had live: released by block 3.
    let got = c.recv().await;
    assert_eq!(got["data"]["number"], 2);
    assert_eq!(got["id"], format!("{b3}.{}", ids[1]));
    let b4 = publish_ok(b.addr, &block(4)).await.remove(0);
    let got = c.recv().await;
    assert_eq!(got["data"]["number"], 3);
    assert_eq!(got["id"], format!("{b4}.{b3}"));
    c.expect_silence(QUIET).await;
    // Again, from the same release id, on another connection: the same replay.
    c.drop_tcp();
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .reconnect(Some(&release), std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], 2);
    assert_eq!(c.recv().await["id"], format!("{b3}.{}", ids[1]));
    assert_eq!(c.recv().await["id"], format!("{b4}.{b3}"));
}

#[tokio::test]
async fn unknown_id_overflow_foreign_key_and_expiry_give_the_documented_replies() {
    let mut cfg = config();
    cfg.limits.connection_queue_frames = 16;
    cfg.resume.history_events = 16;
    cfg.resume.window_ms = 400;
    cfg.heartbeat.interval_ms = 100;
    let b = start(cfg);

    // Unknown last_message_id: restored, nothing replayed, recovered false.
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    c.drop_tcp();
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    let r = c
        .reconnect(Some("no-such-id"), std::slice::from_ref(&sid))
        .await;
    assert_eq!(
        r,
        json!({"id": "r", "type": "reconnect_confirmation", "data": {"recovered": false,
               "subscriptions": [sid], "failed": [], "replayed": 0}})
    );
    publish_ok(b.addr, &block(1)).await;
    let got = c.recv().await;
    assert_eq!(got["data"]["number"], 1);

    // Over the bound while away (the id is the last one received): restored, recovered
    // false, nothing replayed.
    let last = got["id"].as_str().expect("id").to_owned();
    c.drop_tcp();
    let many: Vec<Value> = (2..40).map(block).collect();
    publish_ok(b.addr, &json!(many)).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(Some(&last), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], false);
    assert_eq!(r["data"]["subscriptions"], json!([sid]));
    assert_eq!(r["data"]["replayed"], 0);

    // Another key naming them: failed.
    let mut other = Client::ws(b.addr, ALL_KEY).await;
    let r = other
        .reconnect(Value::Null, std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["failed"], json!([sid]));
    assert_eq!(r["data"]["subscriptions"], json!([]));
    assert_eq!(r["data"]["recovered"], false);

    // Past the window: failed.
    c.drop_tcp();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(Value::Null, std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["failed"], json!([sid]));
    assert_eq!(r["data"]["recovered"], false);
}

#[tokio::test]
async fn a_client_close_1000_drops_the_subscriptions_and_1005_keeps_them() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    c.close().await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(Value::Null, std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["failed"], json!([sid]));

    let sid = c.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &block(1)).await;
    assert_eq!(c.recv().await["id"], ids[0].as_str());
    c.close_with(None).await;
    let ids2 = publish_ok(b.addr, &block(2)).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(Some(&ids[0]), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(c.recv().await["id"], ids2[0].as_str());
}

#[tokio::test]
async fn reconnect_takes_over_subscriptions_still_attached_to_a_live_connection() {
    let b = start(config());
    let mut old = Client::ws(b.addr, SUB_KEY).await;
    let sid = old.subscribe("blocks", json!({})).await;
    let kept = old.subscribe("market_data", json!({})).await;
    let ids = publish_ok(b.addr, &block(1)).await;
    assert_eq!(old.recv().await["id"], ids[0].as_str());
    let mut new = Client::ws(b.addr, SUB_KEY).await;
    let r = new
        .reconnect(Some(&ids[0]), std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["subscriptions"], json!([sid]));
    let ids = publish_ok(b.addr, &block(2)).await;
    assert_eq!(new.recv().await["id"], ids[0].as_str());
    // PROTOCOL.md 10.33: the old connection stays open with the rest of its subscriptions.
    old.expect_silence(QUIET).await;
    let r = old
        .request(json!({"type": "unsubscribe", "id": "u", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(
        r["error"]["code"], 4003,
        "the moved subscription is not the old one's: {r}"
    );
    let tick = tick("MTK/USD", 1);
    let ids = publish_ok(b.addr, &tick).await;
    let got = old.recv().await;
    assert_eq!(
        got["id"],
        ids[0].as_str(),
        "{kept} still delivers on the old connection"
    );
    new.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_is_dropped_and_resumes_elsewhere() {
    // The queue bound is never reached: the socket blocks first, so the connection's
    // actor can no longer run, and only the kernel's stall timeout can cut it off.
    const EVENTS: u64 = 1600;
    let mut cfg = config();
    cfg.limits.connection_queue_bytes = 64 * 1024 * 1024;
    cfg.limits.connection_queue_frames = 100_000;
    cfg.limits.stall_timeout_ms = 500;
    cfg.heartbeat.interval_ms = 100;
    cfg.heartbeat.timeout_ms = Some(60_000);
    let b = start(cfg);
    let mut stalled = Client::ws(b.addr, SUB_KEY).await;
    let sid = stalled.subscribe("blocks", json!({})).await;
    let mut published = Vec::new();
    for start in (0..EVENTS).step_by(40) {
        let batch: Vec<Value> = (start..start + 40)
            .map(|n| {
                let mut e = block(n);
                e["data"]["pad"] = json!("p".repeat(16 * 1024));
                e
            })
            .collect();
        published.extend(publish_ok(b.addr, &json!(batch)).await);
    }
    // The broker drops the stalled connection by itself and parks its subscriptions.
    let mut parked = false;
    for _ in 0..100 {
        let m = metrics(b.addr).await;
        if metric(&m, "rustorium_parked_subscriptions") == Some(1.0)
            && metric(&m, "rustorium_connections") == Some(0.0)
        {
            parked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(parked, "the stalled connection was not dropped and parked");
    drop(stalled);
    // It read nothing, so everything is replayed on a new connection.
    let mut again = Client::ws(b.addr, SUB_KEY).await;
    let r = again.reconnect(Value::Null, &[sid]).await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], published.len());
    let mut got = Vec::new();
    while got.len() < published.len() {
        got.push(again.recv().await["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(got, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_keeps_up_gets_a_stream_far_larger_than_the_resume_bound() {
    // Regression: a full sent log once made an attached connection refuse new events.
    const EVENTS: u64 = 5000;
    let mut cfg = config();
    cfg.limits.connection_queue_frames = 1024;
    cfg.limits.connection_queue_bytes = 1024 * 1024;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..EVENTS {
            ids.push(c.recv().await["id"].as_str().map(str::to_owned));
        }
        ids
    });
    let mut published = Vec::new();
    for start in (0..EVENTS).step_by(100) {
        let batch: Vec<Value> = (start..start + 100)
            .map(|n| {
                let mut e = block(n);
                e["data"]["pad"] = json!("p".repeat(1024));
                e
            })
            .collect();
        published.extend(
            publish_ok(b.addr, &json!(batch))
                .await
                .into_iter()
                .map(Some),
        );
    }
    assert_eq!(reader.await.expect("reader"), published);
    let m = http(b.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        metric(&m.text, "rustorium_drops_total"),
        Some(0.0),
        "{}",
        m.text
    );
}

fn id_of(frame: &Value) -> String {
    frame["id"].as_str().expect("id").to_owned()
}

/// The case pong acknowledgement broke: the client's library answered the pings for
/// everything it received, but the client resumes from the last event it *processed*.
/// Then it does so again from the same id after another drop.
#[tokio::test]
async fn resume_from_an_id_the_transport_acknowledged_and_again_from_the_same_id() {
    let mut cfg = config();
    cfg.heartbeat.interval_ms = 50;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &json!((1..=6).map(block).collect::<Vec<_>>())).await;
    for id in &ids {
        assert_eq!(id_of(&c.recv().await), *id);
    }
    // Several pings answered by the client's library meanwhile.
    c.expect_silence(Duration::from_millis(300)).await;
    c.drop_tcp();
    let more = publish_ok(b.addr, &block(7)).await;
    let want: Vec<String> = ids[2..].iter().chain(&more).cloned().collect();
    for round in 0..2 {
        let mut c = Client::ws(b.addr, SUB_KEY).await;
        let r = c.reconnect(Some(&ids[1]), std::slice::from_ref(&sid)).await;
        assert_eq!(r["data"]["recovered"], true, "round {round}: {r}");
        assert_eq!(r["data"]["replayed"], want.len(), "round {round}");
        for id in &want {
            assert_eq!(id_of(&c.recv().await), *id, "round {round}");
        }
        c.expect_silence(QUIET).await;
        c.drop_tcp();
    }
}

/// A `reconnect` that moves a subscription off a live connection may name an id that
/// connection received long ago: the replay still comes from history.
#[tokio::test]
async fn resume_after_a_move_from_an_earlier_id() {
    let b = start(config());
    let mut old = Client::ws(b.addr, SUB_KEY).await;
    let sid = old.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &json!((1..=5).map(block).collect::<Vec<_>>())).await;
    for id in &ids {
        assert_eq!(id_of(&old.recv().await), *id);
    }
    let mut new = Client::ws(b.addr, SUB_KEY).await;
    let r = new
        .reconnect(Some(&ids[1]), std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], 3);
    for id in &ids[2..] {
        assert_eq!(id_of(&new.recv().await), *id);
    }
    new.expect_silence(QUIET).await;
}

/// `last_message_id` null: everything since the subscription was made, nothing before.
#[tokio::test]
async fn resume_with_a_null_id_replays_from_the_start_of_the_subscription() {
    let b = start(config());
    publish_ok(b.addr, &block(1)).await;
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"type": "subscribe", "id": "s", "data": {"channel": "blocks"}}))
        .await;
    let sid = r["data"]["subscription_id"]
        .as_str()
        .expect("subscribed")
        .to_owned();
    let ids = publish_ok(b.addr, &json!([block(2), block(3)])).await;
    assert_eq!(id_of(&c.recv().await), ids[0]);
    c.drop_tcp();
    for last in [Value::Null, json!("absent")] {
        let mut c = Client::v1(b.addr, SUB_KEY).await;
        let data = if last.is_null() {
            json!({"last_message_id": null, "subscriptions": [sid]})
        } else {
            json!({"subscriptions": [sid]})
        };
        let r = c
            .request(json!({"type": "reconnect", "id": "r", "data": data}))
            .await;
        assert_eq!(r["type"], "reconnect_confirmation", "{r}");
        assert_eq!(r["data"]["recovered"], true, "{r}");
        assert_eq!(r["data"]["replayed"], 2, "{r}");
        assert_eq!(id_of(&c.recv().await), ids[0]);
        assert_eq!(id_of(&c.recv().await), ids[1]);
        c.expect_silence(QUIET).await;
        c.drop_tcp();
    }
}
