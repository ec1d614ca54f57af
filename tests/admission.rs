//! Admission: where the key comes from, refusals (4000), and the per-key connection cap (4001).

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn assert_refused(mut c: Client, code: u16, v1_code: u64) {
    let err = c.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], serde_json::Value::Null);
    assert_eq!(err["data"], serde_json::Value::Null);
    assert_eq!(err["error"]["code"], v1_code);
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(c.expect_close().await.0, code);
}

async fn assert_admitted(c: &mut Client) {
    let sid = c.subscribe("blocks", json!({})).await;
    assert!(!sid.is_empty());
}

#[tokio::test]
async fn token_api_key_and_bearer_are_accepted() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    assert_admitted(&mut c).await;
    let mut c = Client::connect(b.addr, &format!("/ws?api_key={SUB_KEY}")).await;
    assert_admitted(&mut c).await;
    let mut req = format!("ws://{}/ws", b.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {SUB_KEY}").parse().expect("header"),
    );
    let mut c = Client::connect_request(req).await;
    assert_admitted(&mut c).await;
}

#[tokio::test]
async fn missing_unknown_and_empty_keys_get_4000() {
    let b = start(config());
    assert_refused(Client::connect(b.addr, "/ws").await, 4000, 4000).await;
    assert_refused(Client::ws(b.addr, "nope").await, 4000, 4000).await;
    // An empty token is present, so it decides (and is invalid) even with a good api_key.
    let c = Client::connect(b.addr, &format!("/ws?token=&api_key={SUB_KEY}")).await;
    assert_refused(c, 4000, 4000).await;
    // The broker still serves others.
    let mut ok = Client::ws(b.addr, SUB_KEY).await;
    assert_admitted(&mut ok).await;
}

#[tokio::test]
async fn eleventh_connection_of_a_key_is_closed_4001() {
    let b = start(config());
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut c = Client::ws(b.addr, SUB_KEY).await;
        assert_admitted(&mut c).await;
        open.push(c);
    }
    assert_refused(Client::ws(b.addr, SUB_KEY).await, 4001, 4001).await;
    // Other keys are not affected, and the ten still work.
    let mut other = Client::ws(b.addr, ALL_KEY).await;
    assert_admitted(&mut other).await;
    for c in open.iter_mut() {
        assert_admitted(c).await;
    }
    // Closing one frees a slot.
    if let Some(c) = open.pop() {
        c.close().await;
    }
    let mut again = None;
    for _ in 0..50 {
        let mut c = Client::ws(b.addr, SUB_KEY).await;
        match c.next_text(std::time::Duration::from_millis(200)).await {
            Some(Ok(v)) if v["type"] == "error" => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            _ => {
                again = Some(c);
                break;
            }
        }
    }
    let mut again = again.expect("a slot is freed after a close");
    assert_admitted(&mut again).await;
}

#[tokio::test]
async fn a_keys_own_cap_overrides_the_default() {
    let mut cfg = config();
    cfg.keys[0].max_connections = Some(2);
    let b = start(cfg);
    let mut a = Client::ws(b.addr, SUB_KEY).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    assert_admitted(&mut a).await;
    assert_admitted(&mut c).await;
    assert_refused(Client::ws(b.addr, SUB_KEY).await, 4001, 4001).await;
}
