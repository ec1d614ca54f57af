//! `confirmations` gating on the blocks head (PROTOCOL.md section 5, 10.6, 10.20, 10.26):
//! what is held, when it is released, and the release ids `B.E` with their place in the
//! sequence (after block `B`, before anything published after it).

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
    let tx_id = publish_ok(b.addr, &tx).await.remove(0);
    c.expect_silence(QUIET).await;
    // Several blocks in one batch: block 11 is the one that gives block 10 its second
    // confirmation, so the release is `11.E` with the head as it was at that place.
    let blocks = publish_ok(b.addr, &json!([block(11), block(12)])).await;
    let e = c.recv().await;
    assert_eq!(e["data"]["tx_hash"], "0xaa");
    assert_eq!(e["id"], format!("{}.{tx_id}", blocks[0]));
    assert_eq!(e["data"]["confirmations"], 2);
    c.expect_silence(QUIET).await;
    // An event for a block already confirmed enough goes out at once, rewritten.
    let old = json!({"channel": "transactions", "data": {"tx_hash": "0xbb", "block_number": 5,
        "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}});
    let old_id = publish_ok(b.addr, &old).await.remove(0);
    let e = c.recv().await;
    assert_eq!(e["data"]["tx_hash"], "0xbb");
    assert_eq!(e["id"], old_id.as_str(), "not held: it keeps its own id");
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
    let held = publish_ok(
        b.addr,
        &json!([st("0x02", 2), st("0x01", 1), st("0x03", 2)]),
    )
    .await;
    publish_ok(b.addr, &json!([block(1), block(2)])).await;
    c.expect_silence(QUIET).await;
    // One block at a time: block 3 releases block 1's update, block 4 block 2's two.
    let b3 = publish_ok(b.addr, &block(3)).await.remove(0);
    let b4 = publish_ok(b.addr, &block(4)).await.remove(0);
    let want = [
        ("0x01", format!("{b3}.{}", held[1])),
        ("0x02", format!("{b4}.{}", held[0])),
        ("0x03", format!("{b4}.{}", held[2])),
    ];
    for (key, id) in want {
        let e = c.recv().await;
        assert_eq!(e["data"]["key"], key);
        assert_eq!(e["id"], id.as_str());
        assert!(e["data"].get("confirmations").is_none());
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn one_block_releasing_several_sends_them_in_sequence_order_of_their_ids() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("state", json!({"confirmations": 3})).await;
    let st = |key: &str, n: u64| {
        json!({"channel": "state", "data": {"key": key, "value": "AA==", "block_number": n,
            "timestamp": "2024-01-23T12:34:56Z"}})
    };
    let held = publish_ok(b.addr, &json!([st("k2", 2), st("k1", 1)])).await;
    publish_ok(b.addr, &block(1)).await;
    // The head jumps from 1 to 9: one rise releases both, as `B.E` in the order of E.
    let b9 = publish_ok(b.addr, &block(9)).await.remove(0);
    for (key, e) in [("k2", &held[0]), ("k1", &held[1])] {
        let got = c.recv().await;
        assert_eq!(got["data"]["key"], key);
        assert_eq!(got["id"], format!("{b9}.{e}"));
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn different_k_on_one_connection_release_separately_after_the_releasing_block() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({"confirmations": 1})).await;
    c.subscribe("blocks", json!({"confirmations": 2})).await;
    let b1 = publish_ok(b.addr, &block(1)).await.remove(0);
    let first = c.recv().await;
    assert_eq!(first["id"], b1.as_str());
    c.expect_silence(QUIET).await;
    let b2 = publish_ok(b.addr, &block(2)).await.remove(0);
    // Block 2 at its own id (k=1), then block 1 released by it (k=2) as `B2.B1`.
    let got = c.recv().await;
    assert_eq!(got["id"], b2.as_str());
    assert_eq!(got["data"]["number"], 2);
    let got = c.recv().await;
    assert_eq!(got["id"], format!("{b2}.{b1}"));
    assert_eq!(got["data"]["number"], 1);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_release_comes_after_its_block_and_before_anything_published_after_it() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("transactions", json!({"confirmations": 2}))
        .await;
    c.subscribe("blocks", json!({})).await;
    c.subscribe("market_data", json!({})).await;
    let tx = json!({"channel": "transactions", "data": {"tx_hash": "0xaa", "block_number": 5,
        "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}});
    let tick = tick("MTK/USD", 1);
    let ids = publish_ok(b.addr, &json!([block(5), tx, block(6), tick])).await;
    let want = [
        ids[0].clone(),
        ids[2].clone(),
        format!("{}.{}", ids[2], ids[1]),
        ids[3].clone(),
    ];
    for id in want {
        assert_eq!(c.recv().await["id"], id.as_str());
    }
    c.expect_silence(QUIET).await;
}
