//! Each of the six channels, its event shape and each of its filters, given as
//! `data.filter` or flat; bad filters name the field.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

async fn sub_flat(c: &mut Client, data: Value) -> Value {
    c.request(json!({"type": "subscribe", "id": "f", "data": data}))
        .await
}

fn tx(hash: &str, n: u64) -> Value {
    json!({"channel": "transactions", "data": {"tx_hash": hash, "block_number": n,
        "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}})
}

fn state(key: &str, n: u64) -> Value {
    json!({"channel": "state", "data": {"key": key, "value": "AQID", "block_number": n,
        "timestamp": "2024-01-23T12:34:56Z"}})
}

fn token(id: &str, price: &str) -> Value {
    json!({"channel": "token_updates", "data": {"token_id": id, "price": price,
        "volume": "1000000", "timestamp": "2024-01-01T12:00:00Z"}})
}

fn transfer(id: &str, from: &str, to: &str) -> Value {
    json!({"channel": "transaction_updates", "data": {"transaction_id": id, "status": "confirmed",
        "from": from, "to": to, "timestamp": "2024-01-01T12:00:00Z"}})
}

fn market(symbol: &str) -> Value {
    json!({"channel": "market_data", "data": {"symbol": symbol, "price": "1.23", "change_24h": "5.2",
        "volume_24h": "1000000", "timestamp": "2024-01-01T12:00:00Z"}})
}

#[tokio::test]
async fn blocks_events_have_the_documented_shape_and_shared_ids() {
    let b = start(config());
    let mut c1 = Client::ws(b.addr, SUB_KEY).await;
    let mut c2 = Client::ws(b.addr, SUB_KEY).await;
    c1.subscribe("blocks", json!({"confirmations": 1})).await;
    c2.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &json!([block(1), block(2)])).await;
    for c in [&mut c1, &mut c2] {
        let e = c.recv().await;
        assert_eq!(e["type"], "new_block");
        assert_eq!(e["id"], ids[0].as_str());
        assert_eq!(e["error"], Value::Null);
        assert_eq!(e["channel"], "blocks");
        assert_eq!(e["data"], block(1)["data"]);
        assert_eq!(c.recv().await["id"], ids[1].as_str());
    }
    assert!(ids[0].parse::<u64>().ok() < ids[1].parse::<u64>().ok());
}

#[tokio::test]
async fn transactions_filter_by_tx_hash_case_insensitively() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("transactions", json!({"tx_hash": "0xABcd"}))
        .await;
    publish_ok(b.addr, &json!([tx("0xffff", 1), tx("0xabCD", 1)])).await;
    let e = c.recv().await;
    assert_eq!(e["type"], "tx_confirmed");
    assert_eq!(e["data"]["tx_hash"], "0xabCD");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn state_filters_by_key_and_key_prefix() {
    let b = start(config());
    let mut by_key = Client::ws(b.addr, SUB_KEY).await;
    let mut by_prefix = Client::ws(b.addr, SUB_KEY).await;
    by_key.subscribe("state", json!({"key": "0x12AB"})).await;
    let r = sub_flat(
        &mut by_prefix,
        json!({"channel": "state", "key_prefix": "0x12"}),
    )
    .await;
    assert_eq!(r["type"], "subscribe_success");
    publish_ok(
        b.addr,
        &json!([state("0x99", 1), state("0x12ab", 1), state("0x12cd", 1)]),
    )
    .await;
    let e = by_key.recv().await;
    assert_eq!(e["type"], "state_update");
    assert_eq!(e["data"]["key"], "0x12ab");
    by_key.expect_silence(QUIET).await;
    assert_eq!(by_prefix.recv().await["data"]["key"], "0x12ab");
    assert_eq!(by_prefix.recv().await["data"]["key"], "0x12cd");
    by_prefix.expect_silence(QUIET).await;
}

#[tokio::test]
async fn token_updates_filter_by_token_id_flat_or_nested_and_none_means_all() {
    let b = start(config());
    let mut flat = Client::ws(b.addr, SUB_KEY).await;
    let mut nested = Client::ws(b.addr, SUB_KEY).await;
    let mut all = Client::ws(b.addr, SUB_KEY).await;
    let r = sub_flat(
        &mut flat,
        json!({"channel": "token_updates", "token_id": "0xAA"}),
    )
    .await;
    assert_eq!(r["type"], "subscribe_success");
    nested
        .subscribe("token_updates", json!({"token_id": "0xaa"}))
        .await;
    all.subscribe("token_updates", json!({})).await;
    publish_ok(b.addr, &json!([token("0xbb", "2"), token("0xaa", "1")])).await;
    for c in [&mut flat, &mut nested] {
        let e = c.recv().await;
        assert_eq!(e["type"], "update");
        assert_eq!(e["channel"], "token_updates");
        assert_eq!(e["data"]["token_id"], "0xaa");
        c.expect_silence(QUIET).await;
    }
    assert_eq!(all.recv().await["data"]["token_id"], "0xbb");
    assert_eq!(all.recv().await["data"]["token_id"], "0xaa");
}

#[tokio::test]
async fn transaction_updates_match_address_on_from_to_or_address() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = sub_flat(
        &mut c,
        json!({"channel": "transaction_updates", "address": "0xABC"}),
    )
    .await;
    assert_eq!(r["type"], "subscribe_success");
    let by_address = json!({"channel": "transaction_updates", "data": {"transaction_id": "0x3",
        "status": "failed", "address": "0xaBc", "timestamp": "2024-01-01T12:00:00Z"}});
    publish_ok(
        b.addr,
        &json!([
            transfer("0x1", "0xabc", "0xdef"),
            transfer("0x9", "0x111", "0x222"),
            transfer("0x2", "0xdef", "0xABC"),
            by_address
        ]),
    )
    .await;
    for id in ["0x1", "0x2", "0x3"] {
        assert_eq!(c.recv().await["data"]["transaction_id"], id);
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn market_data_filters_by_symbols() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = sub_flat(
        &mut c,
        json!({"channel": "market_data", "symbols": ["MTK/USD", "STK/USD"]}),
    )
    .await;
    assert_eq!(r["type"], "subscribe_success");
    publish_ok(
        b.addr,
        &json!([
            market("XYZ/USD"),
            market("STK/USD"),
            market("mtk/usd"),
            market("MTK/USD")
        ]),
    )
    .await;
    assert_eq!(c.recv().await["data"]["symbol"], "STK/USD");
    assert_eq!(c.recv().await["data"]["symbol"], "MTK/USD");
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn bad_filters_are_4003_naming_the_field_and_change_nothing() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let cases = [
        (
            json!({"channel": "blocks", "filter": {"confirmations": "3"}}),
            "filter.confirmations",
        ),
        (
            json!({"channel": "blocks", "filter": {"confirmations": 0}}),
            "filter.confirmations",
        ),
        (
            json!({"channel": "blocks", "filter": {"confirmations": 65}}),
            "filter.confirmations",
        ),
        (
            json!({"channel": "blocks", "confirmations": 1.5}),
            "confirmations",
        ),
        (json!({"channel": "market_data", "symbols": []}), "symbols"),
        (
            json!({"channel": "market_data", "symbols": "MTK/USD"}),
            "symbols",
        ),
        (
            json!({"channel": "token_updates", "filter": {"tokenid": "0x1"}}),
            "\"tokenid\"",
        ),
        (
            json!({"channel": "blocks", "filter": {"address": "0x1"}}),
            "\"address\"",
        ),
        (
            json!({"channel": "token_updates", "token_id": 5}),
            "token_id",
        ),
        (json!({"channel": "blocks", "filter": 3}), "filter"),
    ];
    for (data, field) in cases {
        let r = sub_flat(&mut c, data.clone()).await;
        assert_eq!(r["error"]["code"], 4003, "{data} -> {r}");
        assert_eq!(r["id"], "f");
        let msg = r["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(field),
            "{data}: message {msg:?} does not name {field}"
        );
    }
    // Unknown flat fields are ignored.
    let r = sub_flat(&mut c, json!({"channel": "blocks", "colour": "red"})).await;
    assert_eq!(r["type"], "subscribe_success");
    publish_ok(b.addr, &block(3)).await;
    assert_eq!(c.recv().await["data"]["number"], 3);
}
