//! The per-connection message cap: 1000 per minute on /ws by default, a rate-limited
//! error for each excess message, 4001 for a client that keeps flooding.

mod common;

use common::*;
use serde_json::json;

fn unsubscribe(i: usize) -> serde_json::Value {
    json!({"type": "unsubscribe", "id": i, "data": {"subscription_id": "nope"}})
}

#[tokio::test]
async fn the_1001st_message_in_a_minute_is_refused_and_the_first_1000_are_answered() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    for i in 0..1000 {
        c.send_json(&unsubscribe(i)).await;
    }
    for i in 0..1000 {
        let r = c.recv().await;
        assert_eq!(r["id"], i);
        assert_eq!(
            r["error"]["code"], 4003,
            "message {i} was not processed: {r}"
        );
    }
    let r = c.request(unsubscribe(1000)).await;
    assert_eq!(r["id"], 1000);
    assert_eq!(r["error"]["code"], 4001);
    // Still open: other connections of the key are unaffected too.
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
