//! Order per connection (PROTOCOL.md section 5, "Message ids and order", item 29): whatever
//! publishes at once (several HTTP publishers, a WebSocket publisher, the built-in ledger)
//! on several channels, one subscriber on all of them gets every frame once, in increasing
//! sequence order; the same holds across a drop and a resume.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Events each HTTP publisher sends, in batches of `BATCH`.
const PER_HTTP: u64 = 300;
const BATCH: u64 = 10;
/// Events the WebSocket publisher sends, one per frame, pipelined.
const PER_WS: u64 = 300;

fn token(i: u64) -> Value {
    json!({"channel": "token_updates", "data": {"token_id": format!("0x{:x}", i % 7),
        "price": "1", "volume": "2", "timestamp": "2024-01-01T12:00:00Z"}})
}

fn transfer(i: u64) -> Value {
    json!({"channel": "transaction_updates", "data": {"transaction_id": format!("0x{i:x}"),
        "status": "confirmed", "from": "0xaa", "to": "0xbb", "timestamp": "2024-01-01T12:00:00Z"}})
}

/// The ids as numbers; every frame here is at its own id (no `confirmations`).
fn seq(frame: &Value) -> u64 {
    frame["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("event frame without a plain id: {frame}"))
}

/// Subscribes to the four channels on either dialect; `blocks` last, since the ledger's
/// blocks may start flowing as soon as it is subscribed.
async fn subscribe_all(c: &mut Client) -> Vec<String> {
    let mut subs = Vec::new();
    for ch in [
        "market_data",
        "token_updates",
        "transaction_updates",
        "blocks",
    ] {
        let r = c
            .request(json!({"type": "subscribe", "id": ch, "data": {"channel": ch}}))
            .await;
        let sid = r["data"]["subscription_id"].as_str();
        subs.push(
            sid.unwrap_or_else(|| panic!("not subscribed: {r}"))
                .to_owned(),
        );
    }
    subs
}

/// Reads event frames until `stop` says so; asserts each id is larger than the last.
async fn read_in_order(c: &mut Client, got: &mut Vec<u64>, until: impl Fn(&[u64]) -> bool) {
    while !until(got) {
        let frame = c.recv().await;
        let id = seq(&frame);
        if let Some(last) = got.last() {
            assert!(id > *last, "{id} after {last}: out of sequence order");
        }
        got.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_publishers_on_several_channels_reach_one_subscriber_in_sequence_order() {
    let mut cfg = config();
    // The ledger publishes an (empty) block every 20 ms throughout.
    cfg.ledger.empty_blocks = true;
    cfg.ledger.block_interval_ms = 20;
    let b = start(cfg);
    let addr = b.addr;
    let mut c = Client::v1(addr, SUB_KEY).await;
    let subs = subscribe_all(&mut c).await;

    let mut publishers = Vec::new();
    for p in 0..3u64 {
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for start in (0..PER_HTTP).step_by(BATCH as usize) {
                let batch: Vec<Value> = (start..start + BATCH)
                    .map(|i| match (i + p) % 3 {
                        0 => tick("MTK/USD", i),
                        1 => token(i),
                        _ => transfer(i),
                    })
                    .collect();
                ids.extend(publish_ok(addr, &json!(batch)).await);
            }
            ids
        }));
    }
    publishers.push(tokio::spawn(async move {
        let mut ws = Client::ws(addr, PUB_KEY).await;
        let frames: Vec<Value> = (0..PER_WS)
            .map(|i| json!({"type": "publish", "id": i, "data": tick("STK/USD", i)}))
            .collect();
        ws.send_all(&frames).await;
        let mut ids = Vec::new();
        for _ in 0..PER_WS {
            let r = ws.recv().await;
            assert_eq!(r["type"], "publish_success", "{r}");
            ids.push(r["data"]["ids"][0].as_str().expect("id").to_owned());
        }
        ids
    }));

    // Half-way through, the subscriber drops and resumes from the last id it read.
    let mut got: Vec<u64> = Vec::new();
    read_in_order(&mut c, &mut got, |g| g.len() >= 400).await;
    c.drop_tcp();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = Client::ws(addr, SUB_KEY).await;
    let last = got.last().map(u64::to_string);
    let r = c
        .request(json!({"type": "reconnect", "id": "r",
            "data": {"last_message_id": last, "subscriptions": subs}}))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");

    let mut published: HashSet<u64> = HashSet::new();
    for p in publishers {
        let ids = tokio::time::timeout(WAIT * 3, p)
            .await
            .expect("publisher finished")
            .expect("publisher");
        published.extend(ids.iter().map(|i| i.parse::<u64>().expect("id")));
    }
    let newest = published.iter().copied().max().unwrap_or(0);
    read_in_order(&mut c, &mut got, |g| g.last().is_some_and(|l| *l >= newest)).await;
    let seen: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(seen.len(), got.len(), "a frame came twice");
    let missing = published.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} published events never arrived");
    let ledger = got.len() - published.len();
    println!(
        "order: {} frames in sequence order ({} from HTTP and WebSocket publishers, {ledger} ledger blocks), one resume",
        got.len(),
        published.len()
    );
    assert!(ledger > 0, "the ledger published no block meanwhile");
}

#[tokio::test]
async fn one_connection_on_several_channels_gets_one_batch_in_sequence_order() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    subscribe_all(&mut c).await;
    let batch: Vec<Value> = (0..60)
        .map(|i| match i % 4 {
            0 => block(i),
            1 => tick("MTK/USD", i),
            2 => token(i),
            _ => transfer(i),
        })
        .collect();
    let ids = publish_ok(b.addr, &json!(batch)).await;
    let mut got = Vec::new();
    read_in_order(&mut c, &mut got, |g| g.len() >= ids.len()).await;
    let want: Vec<u64> = ids.iter().map(|i| i.parse().expect("id")).collect();
    assert_eq!(got, want);
}
