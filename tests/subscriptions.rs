//! subscribe / unsubscribe: reply shapes, ids, ownership, the per-connection cap, unknown
//! channels, plain channels, roles, one frame per connection.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn subscription_ids_are_unguessable_and_unique() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let sid = c.subscribe("blocks", json!({})).await;
        let hex = sid.trim_start_matches("sub_");
        assert!(hex.len() * 4 >= 96, "{sid} carries fewer than 96 bits");
        assert!(seen.insert(sid));
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_unknown_ids_get_4003() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    publish_ok(b.addr, &block(1)).await;
    assert_eq!(c.recv().await["data"]["number"], 1);
    let r = c
        .request(json!({"type": "unsubscribe", "id": "u", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(r["type"], "unsubscribe_success");
    publish_ok(b.addr, &block(2)).await;
    c.expect_silence(QUIET).await;
    let r = c
        .request(json!({"type": "unsubscribe", "id": "u2", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    assert_eq!(r["id"], "u2");
}

#[tokio::test]
async fn another_connection_of_the_same_key_cannot_unsubscribe() {
    let b = start(config());
    let mut owner = Client::ws(b.addr, SUB_KEY).await;
    let sid = owner.subscribe("blocks", json!({})).await;
    let mut other = Client::ws(b.addr, SUB_KEY).await;
    let r = other
        .request(json!({"type": "unsubscribe", "id": "x", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    publish_ok(b.addr, &block(1)).await;
    assert_eq!(owner.recv().await["data"]["number"], 1);
}

#[tokio::test]
async fn the_101st_subscription_is_refused_and_a_freed_slot_is_reusable() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let mut sids = Vec::new();
    for _ in 0..100 {
        sids.push(
            c.subscribe("market_data", json!({"symbols": ["A/B", "C/D", "E/F"]}))
                .await,
        );
    }
    let r = c
        .request(json!({"type": "subscribe", "id": "over", "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    assert_eq!(r["id"], "over");
    assert!(r["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("100")));
    let r = c
        .request(json!({"type": "unsubscribe", "id": "u", "data": {"subscription_id": sids[0]}}))
        .await;
    assert_eq!(r["type"], "unsubscribe_success");
    c.subscribe("blocks", json!({})).await;
}

#[tokio::test]
async fn unknown_channel_is_named_in_the_error() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"type": "subscribe", "id": "t", "data": {"channel": "blokcs"}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    assert!(r["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("unknown channel \"blokcs\"")));
}

#[tokio::test]
async fn plain_channels_work_only_when_allowed() {
    let mut cfg = config();
    cfg.channels.allow_plain = true;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    // Flat fields on a plain channel are ignored; a non-empty filter object is refused.
    let r = c
        .request(json!({"type": "subscribe", "id": "p", "data": {"channel": "news.eu", "filter": {"x": 1}}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    let r = c
        .request(json!({"type": "subscribe", "id": "p", "data": {"channel": "news.eu", "token_id": "0x1", "filter": {}}}))
        .await;
    assert_eq!(r["type"], "subscribe_success");
    let r = c
        .request(json!({"type": "subscribe", "id": "bad", "data": {"channel": "Bad Name"}}))
        .await;
    assert_eq!(r["error"]["code"], 4003);
    let ids = publish_ok(
        b.addr,
        &json!({"channel": "news.eu", "data": {"headline": "hi"}}),
    )
    .await;
    let e = c.recv().await;
    assert_eq!(
        e,
        json!({"type": "update", "id": ids[0], "data": {"headline": "hi"}, "error": null, "channel": "news.eu"})
    );
    let ids = publish_ok(
        b.addr,
        &json!({"channel": "news.eu", "type": "flash", "data": [1, 2]}),
    )
    .await;
    let e = c.recv().await;
    assert_eq!(e["type"], "flash");
    assert_eq!(e["id"], ids[0].as_str());
    assert_eq!(e["data"], json!([1, 2]));
}

#[tokio::test]
async fn a_key_without_the_subscribe_role_gets_4006() {
    let b = start(config());
    let mut c = Client::ws(b.addr, PUB_KEY).await;
    let r = c
        .request(json!({"type": "subscribe", "id": "f", "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["error"]["code"], 4006);
    assert_eq!(r["id"], "f");
}

#[tokio::test]
async fn several_matching_subscriptions_of_one_connection_get_one_frame() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("market_data", json!({})).await;
    c.subscribe("market_data", json!({"symbols": ["MTK/USD"]}))
        .await;
    let ev = json!({"channel": "market_data", "data": {"symbol": "MTK/USD", "price": "1.23",
        "change_24h": "5.2", "volume_24h": "1000000", "timestamp": "2024-01-01T12:00:00Z"}});
    publish_ok(b.addr, &ev).await;
    assert_eq!(c.recv().await["data"]["symbol"], "MTK/USD");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_closed_connection_releases_its_subscriptions() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    c.subscribe("state", json!({})).await;
    let blocks = "rustorium_subscriptions{channel=\"blocks\"}";
    assert_eq!(metric(&metrics(b.addr).await, blocks), Some(1.0));
    c.close().await;
    let mut last = None;
    for _ in 0..100 {
        last = metric(&metrics(b.addr).await, blocks);
        if last == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, Some(0.0));
}
