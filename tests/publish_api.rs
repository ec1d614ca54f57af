//! `POST /api/publish`: single and batch, roles, and 400/401/403/413 in the error envelope.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn assert_failure(r: &Response, status: u16, code: &str) -> String {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["data"], Value::Null);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    r.body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned()
}

#[tokio::test]
async fn single_and_batch_publish_return_ids_in_order() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    let r = publish(b.addr, PUB_KEY, &block(1)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["error"], Value::Null);
    let one = r.body["data"]["ids"][0].as_str().expect("id").to_owned();
    let batch = publish_ok(b.addr, &json!([block(2), block(3), block(4)])).await;
    assert_eq!(batch.len(), 3);
    for (i, id) in std::iter::once(&one).chain(&batch).enumerate() {
        let e = c.recv().await;
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["data"]["number"], i + 1);
    }
}

#[tokio::test]
async fn keys_are_checked_401_then_roles_403() {
    let b = start(config());
    let r = http(
        b.addr,
        "POST",
        "/api/publish",
        &[],
        block(1).to_string().as_bytes(),
    )
    .await;
    assert_failure(&r, 401, "invalid_token");
    assert_failure(
        &publish(b.addr, "wrong", &block(1)).await,
        401,
        "invalid_token",
    );
    assert_failure(&publish(b.addr, SUB_KEY, &block(1)).await, 403, "forbidden");
    assert_eq!(publish(b.addr, ALL_KEY, &block(1)).await.status, 200);
}

#[tokio::test]
async fn a_bad_event_names_index_and_field_and_publishes_nothing() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    let bad = json!([block(1), block(2), {"channel": "blocks", "data": {"number": "three"}}]);
    let msg = assert_failure(
        &publish(b.addr, PUB_KEY, &bad).await,
        400,
        "invalid_request",
    );
    assert!(
        msg.contains("event 2") && msg.contains("data.number"),
        "{msg}"
    );
    c.expect_silence(Duration::from_millis(300)).await;
    let cases = [
        (json!({"channel": "blokcs", "data": {}}), "channel"),
        (json!({"data": {}}), "channel"),
        (json!({"channel": "blocks"}), "data"),
        (
            json!({"channel": "blocks", "type": "", "data": {"number": 1}}),
            "type",
        ),
        (
            json!({"channel": "blocks", "type": 7, "data": {"number": 1}}),
            "type",
        ),
        (
            json!({"channel": "blocks", "type": "block_reorg", "data": {"hash": "0x1"}}),
            "data.number",
        ),
        (
            json!({"channel": "transactions", "data": {"tx_hash": "0x1"}}),
            "data.block_number",
        ),
        (
            json!({"channel": "transaction_updates", "data": {"transaction_id": "0x1", "status": "confirmed"}}),
            "from",
        ),
        (
            json!({"channel": "market_data", "data": {"price": "1"}}),
            "data.symbol",
        ),
        (json!({"channel": "token_updates", "data": []}), "data"),
        (json!(7), "object"),
    ];
    for (event, field) in cases {
        let msg = assert_failure(
            &publish(b.addr, PUB_KEY, &event).await,
            400,
            "invalid_request",
        );
        assert!(
            msg.contains("event 0") && msg.contains(field),
            "{event}: {msg}"
        );
    }
}

/// PROTOCOL.md 10.32: on the six channels a publisher may name the event type; it
/// reaches subscribers as given, and filters still apply.
#[tokio::test]
async fn publishers_name_their_event_type_and_filters_still_apply() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    let mut v1 = Client::v1(b.addr, SUB_KEY).await;
    let r = v1
        .request(json!({"type": "subscribe", "id": "s",
            "data": {"channel": "market_data", "symbols": ["MTK/USD"]}}))
        .await;
    assert_eq!(r["type"], "subscription_confirmation", "{r}");
    let reorg = json!({"channel": "blocks", "type": "block_reorg",
        "data": {"number": 7, "hash": "0x7", "dropped": ["0x6"]}});
    let ids = publish_ok(b.addr, &reorg).await;
    let got = c.recv().await;
    assert_eq!(got["type"], "block_reorg");
    assert_eq!(got["id"], ids[0].as_str());
    assert_eq!(got["data"]["dropped"], json!(["0x6"]));
    let halt = |symbol: &str| {
        json!({"channel": "market_data", "type": "trading_halted",
            "data": {"symbol": symbol, "price": "1", "change_24h": "0", "volume_24h": "0",
                     "timestamp": "2024-01-01T12:00:00Z"}})
    };
    publish_ok(b.addr, &json!([halt("STK/USD"), halt("MTK/USD")])).await;
    let got = v1.recv().await;
    assert_eq!(got["type"], "trading_halted");
    assert_eq!(got["data"]["symbol"], "MTK/USD");
    v1.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn empty_oversized_and_non_json_bodies_are_refused() {
    let b = start(config());
    assert_failure(
        &publish(b.addr, PUB_KEY, &json!([])).await,
        400,
        "invalid_request",
    );
    let many: Vec<Value> = (0..1001).map(block).collect();
    let msg = assert_failure(
        &publish(b.addr, PUB_KEY, &json!(many)).await,
        400,
        "invalid_request",
    );
    assert!(msg.contains("1000"), "{msg}");
    let thousand: Vec<Value> = (0..1000).map(block).collect();
    assert_eq!(publish(b.addr, PUB_KEY, &json!(thousand)).await.status, 200);
    let auth = format!("Bearer {PUB_KEY}");
    let r = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        b"{nope",
    )
    .await;
    assert_failure(&r, 400, "invalid_request");
    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        &huge,
    )
    .await;
    assert_failure(&r, 413, "payload_too_large");
    // Still serving.
    assert_eq!(publish(b.addr, PUB_KEY, &block(5)).await.status, 200);
}

#[tokio::test]
async fn the_rust_handle_publishes_without_http() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("market_data", json!({"symbols": ["MTK/USD"]}))
        .await;
    let data = json!({"symbol": "MTK/USD", "price": "1.23", "change_24h": "5.2",
        "volume_24h": "1000000", "timestamp": "2024-01-01T12:00:00Z"});
    let id = b
        .broker
        .publish("market_data", data.clone())
        .await
        .expect("published");
    let e = c.recv().await;
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["data"], data);
    let err = b.broker.publish("market_data", json!({"price": "1"})).await;
    assert!(matches!(
        err,
        Err(rustorium_broker::PublishError::Invalid { index: 0, .. })
    ));
}
