//! The v1 dialect on `/v1`: admission, reply and event shapes exactly as PROTOCOL.md
//! writes them, string error codes, the 10-per-second cap, RFC 3339 heartbeats and
//! heartbeat_response liveness, and every channel reachable from either endpoint.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn key_set(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

async fn subscribe(c: &mut Client, data: Value) -> String {
    let r = c
        .request(json!({"id": "1", "type": "subscribe", "data": data}))
        .await;
    assert_eq!(r["type"], "subscription_confirmation", "{r}");
    r["data"]["subscription_id"]
        .as_str()
        .expect("sid")
        .to_owned()
}

#[tokio::test]
async fn replies_and_events_have_the_v1_shapes() {
    let b = start(config());
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"id": "1", "type": "subscribe", "data": {"channel": "token_updates", "token_id": "0xAB"}}))
        .await;
    let sid = r["data"]["subscription_id"]
        .as_str()
        .expect("sid")
        .to_owned();
    assert_eq!(
        r,
        json!({"id": "1", "type": "subscription_confirmation",
               "data": {"status": "subscribed", "channel": "token_updates", "subscription_id": sid}})
    );
    let data = json!({"token_id": "0xab", "price": "1.23", "volume": "1000000", "timestamp": "2024-01-01T12:00:00Z"});
    let ids = publish_ok(b.addr, &json!({"channel": "token_updates", "data": data})).await;
    let e = c.recv().await;
    assert_eq!(
        e,
        json!({"id": ids[0], "type": "update", "data": data, "channel": "token_updates"})
    );
    let r = c
        .request(json!({"id": "2", "type": "unsubscribe", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(
        r,
        json!({"id": "2", "type": "unsubscription_confirmation",
               "data": {"status": "unsubscribed", "subscription_id": sid}})
    );
}

#[tokio::test]
async fn errors_carry_string_codes_inside_data_and_omit_a_missing_id() {
    let b = start(config());
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    c.send_text("{oops").await;
    let e = c.recv().await;
    assert_eq!(key_set(&e), ["data", "type"]);
    assert_eq!(e["type"], "error");
    assert_eq!(e["data"]["code"], "invalid_request");
    assert!(e["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let e = c
        .request(json!({"id": "9", "type": "subscribe", "data": {"channel": "blokcs"}}))
        .await;
    assert_eq!(key_set(&e), ["data", "id", "type"]);
    assert_eq!(e["id"], "9");
    assert_eq!(e["data"]["code"], "subscription_error");
    let e = c
        .request(json!({"id": "10", "type": "unsubscribe", "data": {"subscription_id": "sub_123"}}))
        .await;
    assert_eq!(e["data"]["code"], "subscription_error");
    let mut p = Client::v1(b.addr, PUB_KEY).await;
    let e = p
        .request(json!({"id": "f", "type": "subscribe", "data": {"channel": "market_data"}}))
        .await;
    assert_eq!(e["data"]["code"], "forbidden");
}

#[tokio::test]
async fn a_bad_key_gets_invalid_token_then_close_4000() {
    let b = start(config());
    let mut c = Client::v1(b.addr, "wrong").await;
    let e = c.recv().await;
    assert_eq!(
        e,
        json!({"type": "error", "data": {"code": "invalid_token",
        "message": e["data"]["message"].clone()}})
    );
    assert_eq!(c.expect_close().await.0, 4000);
    // api_key comes first on /v1, token second.
    let mut c = Client::connect(b.addr, &format!("/v1?token={SUB_KEY}")).await;
    subscribe(&mut c, json!({"channel": "blocks"})).await;
}

#[tokio::test]
async fn the_eleventh_message_in_a_second_is_refused_and_the_first_ten_answered() {
    let b = start(config());
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    // One write: the broker reads all eleven at once, well within the 100 ms refill.
    let frames: Vec<Value> = (0..11)
        .map(|i| json!({"id": i, "type": "unsubscribe", "data": {"subscription_id": "x"}}))
        .collect();
    c.send_all(&frames).await;
    for i in 0..10 {
        let r = c.recv().await;
        assert_eq!(r["id"], i);
        assert_eq!(r["data"]["code"], "subscription_error", "{r}");
    }
    let r = c.recv().await;
    assert_eq!(r["id"], 10);
    assert_eq!(r["data"]["code"], "rate_limited", "{r}");
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_4001() {
    let b = start(config());
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    for i in 0..40 {
        c.send_json(&json!({"id": i, "type": "nope"})).await;
    }
    let mut limited = 0;
    let code = loop {
        match c.next_text(WAIT).await {
            Some(Ok(v)) if v["data"]["code"] == "rate_limited" => limited += 1,
            Some(Ok(_)) => {}
            Some(Err(Ended::Closed(code, _))) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 4001);
    assert!(limited > 10, "closed after only {limited} refusals");
}

#[tokio::test]
async fn heartbeats_are_rfc3339_and_heartbeat_response_keeps_a_client_alive() {
    let mut cfg = config();
    cfg.heartbeat.interval_ms = 200;
    cfg.heartbeat.timeout_ms = Some(1000);
    let b = start(cfg);
    let mut answering = Client::v1(b.addr, SUB_KEY).await;
    let mut silent = Client::v1(b.addr, SUB_KEY).await;
    let until = Instant::now() + Duration::from_millis(2500);
    let mut beats = 0;
    while Instant::now() < until {
        let Some(msg) = answering.next_text(Duration::from_millis(300)).await else {
            continue;
        };
        let hb = msg.expect("still open");
        assert_eq!(key_set(&hb), ["data", "type"]);
        assert_eq!(hb["type"], "heartbeat");
        let ts = hb["data"]["timestamp"].as_str().expect("RFC 3339 string");
        assert!(
            ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == "T",
            "{ts}"
        );
        beats += 1;
        answering
            .send_json(&json!({"type": "heartbeat_response", "data": {"timestamp": ts}}))
            .await;
    }
    assert!(beats >= 5);
    assert_eq!(silent.expect_close().await.0, 4004);
    subscribe(&mut answering, json!({"channel": "blocks"})).await;
}

#[tokio::test]
async fn every_channel_is_reachable_from_both_endpoints() {
    let b = start(config());
    let mut v1 = Client::v1(b.addr, SUB_KEY).await;
    let mut ws = Client::ws(b.addr, SUB_KEY).await;
    subscribe(
        &mut v1,
        json!({"channel": "blocks", "filter": {"confirmations": 1}}),
    )
    .await;
    ws.subscribe("market_data", json!({"symbols": ["MTK/USD"]}))
        .await;
    let ids = publish_ok(
        b.addr,
        &json!([block(1), {"channel": "market_data", "data": {
        "symbol": "MTK/USD", "price": "1", "change_24h": "0", "volume_24h": "0",
        "timestamp": "2024-01-01T12:00:00Z"}}]),
    )
    .await;
    let e = v1.recv().await;
    assert_eq!(key_set(&e), ["channel", "data", "id", "type"]);
    assert_eq!(e["type"], "new_block");
    assert_eq!(e["id"], ids[0].as_str());
    let e = ws.recv().await;
    assert_eq!(key_set(&e), ["channel", "data", "error", "id", "type"]);
    assert_eq!(e["id"], ids[1].as_str());
}
