//! Publishing over WebSocket (PROTOCOL.md section 8, 10.16, 10.19): single events and
//! batches on both dialects, validated whole like HTTP, in order when pipelined, outside
//! the subscriber message caps but within the publisher's own cap.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn market(i: u64) -> Value {
    json!({"channel": "market_data", "data": {"symbol": "MTK/USD", "price": i.to_string(),
        "change_24h": "0", "volume_24h": "0", "timestamp": "2024-01-01T12:00:00Z"}})
}

#[tokio::test]
async fn single_and_batch_publish_on_both_dialects() {
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    let mut ws = Client::ws(b.addr, PUB_KEY).await;
    let r = ws
        .request(json!({"type": "publish", "id": "p1", "data": market(1)}))
        .await;
    assert_eq!(r["type"], "publish_success", "{r}");
    assert_eq!(r["id"], "p1");
    assert_eq!(r["error"], Value::Null);
    let first = r["data"]["ids"][0].as_str().expect("id").to_owned();
    let mut v1 = Client::v1(b.addr, PUB_KEY).await;
    let r = v1
        .request(json!({"id": "p2", "type": "publish", "data": {"events": [market(2), market(3)]}}))
        .await;
    assert_eq!(r["type"], "publish_confirmation", "{r}");
    let ids: Vec<String> = serde_json::from_value(r["data"]["ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 2);
    for (id, price) in [(&first, "1"), (&ids[0], "2"), (&ids[1], "3")] {
        let e = sub.recv().await;
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["data"]["price"], price);
    }
}

#[tokio::test]
async fn bad_batches_publish_nothing_and_roles_are_checked() {
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    let mut p = Client::ws(b.addr, PUB_KEY).await;
    let bad = json!({"type": "publish", "id": "b", "data": {"events": [market(1), {"channel": "market_data", "data": {"price": "1"}}]}});
    let r = p.request(bad).await;
    assert_eq!(r["error"]["code"], 4002);
    let msg = r["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("event 1") && msg.contains("data.symbol"),
        "{msg}"
    );
    let many: Vec<Value> = (0..1001).map(market).collect();
    let r = p
        .request(json!({"type": "publish", "id": "m", "data": {"events": many}}))
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1000")),
        "{r}"
    );
    sub.expect_silence(std::time::Duration::from_millis(300))
        .await;
    let r = sub
        .request(json!({"type": "publish", "id": "f", "data": market(1)}))
        .await;
    assert_eq!(r["error"]["code"], 4006);
    let mut v1 = Client::v1(b.addr, SUB_KEY).await;
    let r = v1
        .request(json!({"id": "f", "type": "publish", "data": market(1)}))
        .await;
    assert_eq!(r["data"]["code"], "forbidden");
}

#[tokio::test]
async fn pipelined_publishes_arrive_in_order_past_the_subscriber_message_cap() {
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    // 1500 frames in a burst: over the 1000-per-minute cap of subscribers' messages.
    let mut p = Client::ws(b.addr, PUB_KEY).await;
    let frames: Vec<Value> = (0..1500)
        .map(|i| json!({"type": "publish", "id": i, "data": market(i)}))
        .collect();
    p.send_all(&frames).await;
    for i in 0..1500u64 {
        let r = p.recv().await;
        assert_eq!(r["type"], "publish_success", "{r}");
        assert_eq!(r["id"], i);
        assert_eq!(sub.recv().await["data"]["price"], i.to_string());
    }
}

/// Frames read together travel to the engine as fewer batches than frames, yet every
/// frame gets its own answer, in frame order, a refused frame included; with the read
/// gate closing after every frame (an in-flight bound of one byte) nothing changes but
/// the pace.
#[tokio::test]
async fn pipelined_frames_are_coalesced_and_answered_one_by_one_in_frame_order() {
    for in_flight in [1024 * 1024, 1] {
        let mut cfg = config();
        cfg.publish.connection_in_flight_bytes = in_flight;
        let b = start(cfg);
        let mut sub = Client::ws(b.addr, SUB_KEY).await;
        sub.subscribe("market_data", json!({})).await;
        let mut p = Client::ws(b.addr, PUB_KEY).await;
        let n = 600u64;
        let frames: Vec<Value> = (0..n)
            .map(|i| {
                if i % 100 == 50 {
                    // No data: refused, and answered in its place.
                    json!({"type": "publish", "id": i, "data": {"channel": "market_data"}})
                } else {
                    json!({"type": "publish", "id": i, "data": market(i)})
                }
            })
            .collect();
        p.send_all(&frames).await;
        let mut last_id = 0u64;
        for i in 0..n {
            let r = p.recv().await;
            assert_eq!(r["id"], i, "in_flight {in_flight}: {r}");
            if i % 100 == 50 {
                assert_eq!(r["type"], "error", "{r}");
                assert_eq!(r["error"]["code"], 4002, "{r}");
                continue;
            }
            assert_eq!(r["type"], "publish_success", "{r}");
            let id: u64 = r["data"]["ids"][0]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap();
            assert!(
                id > last_id,
                "ids increase in frame order: {id} after {last_id}"
            );
            last_id = id;
            let ev = sub.recv().await;
            assert_eq!(ev["data"]["price"], i.to_string());
            assert_eq!(ev["id"], id.to_string());
        }
        let m = metrics(b.addr).await;
        let batches = metric(&m, "rustorium_publish_batches_total").unwrap();
        let published = metric(&m, "rustorium_events_published_total").unwrap();
        assert_eq!(published, (n - n / 100) as f64);
        let pauses = metric(&m, "rustorium_publish_read_pauses_total").unwrap();
        if in_flight > 1 {
            assert!(
                batches < published,
                "{batches} batches for {published} pipelined events: nothing was coalesced"
            );
        } else {
            // Every frame reaches a one-byte bound: the socket was not read past it.
            assert!(pauses >= 1.0, "the read gate never closed");
        }
    }
}

#[tokio::test]
async fn the_publishers_own_cap_refuses_what_is_over_it() {
    let mut cfg = config();
    cfg.limits.publish_events_per_second = 100;
    let b = start(cfg);
    let mut p = Client::v1(b.addr, PUB_KEY).await;
    let batch = |n: u64| json!({"id": n, "type": "publish", "data": {"events": (0..n).map(market).collect::<Vec<_>>()}});
    let r = p.request(batch(100)).await;
    assert_eq!(r["type"], "publish_confirmation", "{r}");
    // Refilling 100 takes a full second; the next frame comes within milliseconds.
    let r = p.request(batch(100)).await;
    assert_eq!(r["data"]["code"], "rate_limited", "{r}");
}

/// PROTOCOL.md item 34: once the broker is shutting down, publishing is refused
/// `unavailable` on every path and nothing is published.
#[tokio::test]
async fn publishing_while_shutting_down_is_unavailable_on_both_dialects_and_http() {
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("blocks", json!({})).await;
    let mut ws = Client::ws(b.addr, PUB_KEY).await;
    let mut v1 = Client::v1(b.addr, PUB_KEY).await;
    // What shutdown does first, before it closes the connections with 1001.
    b.broker.publisher().close();
    let r = ws
        .request(json!({"type": "publish", "id": 1, "data": block(1)}))
        .await;
    assert_eq!(r["error"]["code"], 4007, "{r}");
    assert_eq!(r["id"], 1);
    let r = v1
        .request(json!({"type": "publish", "id": "p", "data": block(2)}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["data"]["code"], "unavailable", "{r}");
    let r = publish(b.addr, PUB_KEY, &block(3)).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "unavailable");
    sub.expect_silence(Duration::from_millis(300)).await;
}
