//! The ws envelope and every error row of PROTOCOL.md section 3 that a frame can cause;
//! bad input leaves the connection and the broker serving.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

async fn expect_error(c: &mut Client, id: Value, code: u64) -> String {
    let e = c.recv().await;
    assert_eq!(keys(&e), ["data", "error", "id", "type"], "{e}");
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["id"], id, "{e}");
    assert_eq!(e["data"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], code, "{e}");
    let msg = e["error"]["message"].as_str().expect("message").to_owned();
    assert!(!msg.is_empty());
    msg
}

#[tokio::test]
async fn every_invalid_message_gets_4002_and_the_connection_stays() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.send_text("not json").await;
    assert!(expect_error(&mut c, Value::Null, 4002)
        .await
        .starts_with("Invalid message format"));
    c.send_text("[1,2,3]").await;
    expect_error(&mut c, Value::Null, 4002).await;
    c.send_text("\"subscribe\"").await;
    expect_error(&mut c, Value::Null, 4002).await;
    c.send_json(&json!({"id": "m1", "data": {}})).await;
    assert!(expect_error(&mut c, json!("m1"), 4002)
        .await
        .contains("type"));
    c.send_json(&json!({"type": "subscrbe", "id": "m2"})).await;
    assert!(expect_error(&mut c, json!("m2"), 4002)
        .await
        .contains("\"subscrbe\""));
    c.send_json(&json!({"type": 5, "id": "m3"})).await;
    expect_error(&mut c, json!("m3"), 4002).await;
    c.send_json(&json!({"type": "subscribe", "id": "m4", "data": []}))
        .await;
    expect_error(&mut c, json!("m4"), 4002).await;
    c.send_json(&json!({"type": "subscribe", "id": "m5", "data": {"channel": 7}}))
        .await;
    assert!(expect_error(&mut c, json!("m5"), 4002)
        .await
        .contains("channel"));
    c.send_json(&json!({"type": "subscribe", "id": "m6", "data": {}}))
        .await;
    expect_error(&mut c, json!("m6"), 4002).await;
    c.send_json(&json!({"type": "unsubscribe", "id": "m7", "data": {"subscription_id": 3}}))
        .await;
    expect_error(&mut c, json!("m7"), 4002).await;
    c.send(Message::binary(vec![1u8, 2, 3])).await;
    assert!(expect_error(&mut c, Value::Null, 4002)
        .await
        .contains("binary"));
    // Still serving this connection.
    c.subscribe("blocks", json!({})).await;
    publish_ok(b.addr, &block(1)).await;
    assert_eq!(c.recv().await["type"], "new_block");
}

#[tokio::test]
async fn numeric_ids_are_echoed_exactly() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"type": "subscribe", "id": 42, "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["id"], json!(42));
    c.send_json(&json!({"type": "nope", "id": 7.5})).await;
    expect_error(&mut c, json!(7.5), 4002).await;
}

#[tokio::test]
async fn replies_carry_exactly_the_four_keys() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"type": "subscribe", "id": "sub1", "data": {"channel": "blocks", "filter": {"confirmations": 1}}}))
        .await;
    assert_eq!(keys(&r), ["data", "error", "id", "type"]);
    assert_eq!(r["type"], "subscribe_success");
    assert_eq!(r["id"], "sub1");
    assert_eq!(r["error"], Value::Null);
    let sid = r["data"]["subscription_id"].as_str().expect("sid");
    let r = c
        .request(json!({"type": "unsubscribe", "id": "sub1", "data": {"subscription_id": sid}}))
        .await;
    assert_eq!(
        r,
        json!({"type": "unsubscribe_success", "id": "sub1", "data": {}, "error": null})
    );
}

#[tokio::test]
async fn a_flood_of_bad_frames_on_one_connection_does_not_touch_another() {
    let b = start(config());
    let mut good = Client::ws(b.addr, SUB_KEY).await;
    good.subscribe("blocks", json!({})).await;
    let mut bad = Client::ws(b.addr, SUB_KEY).await;
    for i in 0..200 {
        bad.send_text(&format!("{{broken {i}")).await;
    }
    for _ in 0..200 {
        expect_error(&mut bad, Value::Null, 4002).await;
    }
    publish_ok(b.addr, &block(9)).await;
    assert_eq!(good.recv().await["data"]["number"], 9);
}
