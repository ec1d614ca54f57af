//! The per-connection message cap: 1000 per minute on /ws by default, a rate-limited
//! error for each excess message, 4001 for a client that keeps flooding.

mod common;

use std::time::Instant;

use common::*;
use serde_json::json;

fn unsubscribe(i: usize) -> serde_json::Value {
    json!({"type": "unsubscribe", "id": i, "data": {"subscription_id": "nope"}})
}

#[tokio::test]
async fn a_burst_gets_exactly_the_cap_plus_what_the_bucket_refilled() {
    // 1000 per minute, burst 1000: one message refills every 60 ms.
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let started = Instant::now();
    for i in 0..1100 {
        c.send_json(&unsubscribe(i)).await;
    }
    let (mut answered, mut refused, mut after_refusal) = (0u64, 0u64, 0u64);
    for i in 0..1100 {
        let r = c.recv().await;
        assert_eq!(r["id"], i);
        match r["error"]["code"].as_u64() {
            Some(4003) => {
                if refused > 0 {
                    after_refusal += 1;
                }
                answered += 1;
            }
            Some(4001) => refused += 1,
            other => panic!("unexpected code {other:?} for message {i}"),
        }
    }
    let refills = started.elapsed().as_millis() as u64 / 60 + 1;
    // Once the bucket is empty, only what it refilled meanwhile (one per 60 ms) gets through.
    assert!(
        after_refusal <= refills,
        "{after_refusal} processed after a refusal, more than the {refills} refilled"
    );
    assert!(
        answered >= 1000,
        "only {answered} of the first 1000 answered"
    );
    assert!(
        answered <= 1000 + refills,
        "{answered} answered, more than 1000 + {refills} refilled"
    );
    assert!(refused > 0);
    // Refusals below the cap keep the connection open; other connections are unaffected.
    tokio::time::sleep(std::time::Duration::from_millis(130)).await;
    let r = c
        .request(json!({"type": "subscribe", "id": "later", "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["type"], "subscribe_success", "{r}");
    let mut other = Client::ws(b.addr, SUB_KEY).await;
    other.subscribe("blocks", json!({})).await;
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_4001_after_its_error() {
    let mut cfg = config();
    cfg.limits.ws_messages_per_minute = 5;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    for i in 0..11 {
        c.send_json(&unsubscribe(i)).await;
    }
    for i in 0..5 {
        assert_eq!(c.recv().await["error"]["code"], 4003, "message {i}");
    }
    // Rejections 1..=5 are errors; the 6th rejection exceeds the cap: error, then close.
    for i in 5..11 {
        let r = c.recv().await;
        assert_eq!(r["id"], i);
        assert_eq!(r["error"]["code"], 4001);
    }
    assert_eq!(c.expect_close().await.0, 4001);
    let mut other = Client::ws(b.addr, SUB_KEY).await;
    other.subscribe("blocks", json!({})).await;
}
