//! `confirmations` gating on the blocks head (PROTOCOL.md section 5, 10.6, 10.20, 10.26).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn blocks_1_to_5_with_k3_deliver_1_to_3_in_order_each_once() {
    let b = start(config());
    let mut k3 = Client::ws(b.addr, SUB_KEY).await;
    let mut k1 = Client::ws(b.addr, SUB_KEY).await;
    k3.subscribe("blocks", json!({"confirmations": 3})).await;
    k1.subscribe("blocks", json!({"confirmations": 1})).await;
    for n in 1..=5 {
        publish_ok(b.addr, &block(n)).await;
    }
    for n in 1..=3 {
        let e = k3.recv().await;
        assert_eq!(e["type"], "new_block");
        assert_eq!(e["data"]["number"], n);
    }
    k3.expect_silence(QUIET).await;
    for n in 1..=5 {
        assert_eq!(k1.recv().await["data"]["number"], n);
    }
    publish_ok(b.addr, &block(6)).await;
    assert_eq!(k3.recv().await["data"]["number"], 4);
    k3.expect_silence(QUIET).await;
}

#[tokio::test]
async fn tx_confirmed_waits_for_its_block_and_carries_its_confirmations() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("transactions", json!({"confirmations": 2}))
        .await;
    let tx = json!({"channel": "transactions", "data": {"tx_hash": "0xaa", "block_number": 10,
        "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}});
    publish_ok(b.addr, &block(10)).await;
    publish_ok(b.addr, &tx).await;
    c.expect_silence(QUIET).await;
    // Publishing several blocks at once releases with the head at delivery.
    publish_ok(b.addr, &json!([block(11), block(12)])).await;
    let e = c.recv().await;
    assert_eq!(e["data"]["tx_hash"], "0xaa");
    assert_eq!(e["data"]["confirmations"], 3);
    c.expect_silence(QUIET).await;
    // An event for a block already confirmed enough goes out at once, rewritten.
    let old = json!({"channel": "transactions", "data": {"tx_hash": "0xbb", "block_number": 5,
        "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}});
    publish_ok(b.addr, &old).await;
    let e = c.recv().await;
    assert_eq!(e["data"]["tx_hash"], "0xbb");
    assert_eq!(e["data"]["confirmations"], 8);
}

#[tokio::test]
async fn state_updates_are_released_in_block_then_publish_order_without_new_fields() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("state", json!({"confirmations": 3, "key_prefix": "0x"}))
        .await;
    let st = |key: &str, n: u64| {
        json!({"channel": "state", "data": {"key": key, "value": "AA==", "block_number": n,
            "timestamp": "2024-01-23T12:34:56Z"}})
    };
    publish_ok(
        b.addr,
        &json!([st("0x02", 2), st("0x01", 1), st("0x03", 2)]),
    )
    .await;
    publish_ok(b.addr, &json!([block(1), block(2)])).await;
    c.expect_silence(QUIET).await;
    publish_ok(b.addr, &block(4)).await;
    for key in ["0x01", "0x02", "0x03"] {
        let e = c.recv().await;
        assert_eq!(e["data"]["key"], key);
        assert!(e["data"].get("confirmations").is_none());
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn different_k_on_one_connection_release_separately_with_the_same_id() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({"confirmations": 1})).await;
    c.subscribe("blocks", json!({"confirmations": 2})).await;
    let ids = publish_ok(b.addr, &block(1)).await;
    let first = c.recv().await;
    assert_eq!(first["id"], ids[0].as_str());
    c.expect_silence(QUIET).await;
    publish_ok(b.addr, &block(2)).await;
    // Block 2 immediately (k=1) and block 1 released (k=2): two frames, any order.
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|e| e["data"]["number"].as_u64());
    assert_eq!(got[0]["id"], ids[0].as_str());
    assert_eq!(got[1]["data"]["number"], 2);
    c.expect_silence(QUIET).await;
}
