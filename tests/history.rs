//! The channels' history and its bounds (PROTOCOL.md section 7, items 30, 31): a resume
//! inside the window recovers, one past the window or past the per-channel bound answers
//! `recovered: false` with the subscriptions restored; ids the broker never issued get
//! the same honest answer; events as large as the publish limit reach every reader.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn inside_the_window_recovers_and_past_it_is_recovered_false_with_the_subscription_moved() {
    let mut cfg = config();
    cfg.resume.window_ms = 600;
    let b = start(cfg);
    // The subscription stays live on `holder`; reconnects move it back and forth.
    let mut holder = Client::ws(b.addr, SUB_KEY).await;
    let sid = holder.subscribe("blocks", json!({})).await;
    let first = publish_ok(b.addr, &block(1)).await.remove(0);
    let second = publish_ok(b.addr, &block(2)).await.remove(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(json!(first), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], true, "inside the window: {r}");
    assert_eq!(c.recv().await["id"], second.as_str());
    // Block 2 leaves the window; a resume that needs it cannot be complete.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut d = Client::ws(b.addr, SUB_KEY).await;
    let r = d.reconnect(json!(first), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], false, "past the window: {r}");
    assert_eq!(r["data"]["replayed"], 0);
    assert_eq!(r["data"]["subscriptions"], json!([sid]));
    d.expect_silence(QUIET).await;
    // One that needs nothing evicted still recovers.
    let r = d.reconnect(json!(second), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    let third = publish_ok(b.addr, &block(3)).await.remove(0);
    assert_eq!(d.recv().await["id"], third.as_str());
    let m = metrics(b.addr).await;
    assert!(
        metric(&m, "rustorium_history_evicted_total{reason=\"age\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn past_the_per_channel_bound_is_recovered_false_with_the_subscription_restored() {
    let mut cfg = config();
    cfg.resume.history_events = 10;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &json!((1..=5).map(block).collect::<Vec<_>>())).await;
    for id in &ids {
        assert_eq!(c.recv().await["id"], id.as_str());
    }
    c.drop_tcp();
    // Eight more: the bound of ten still holds everything after ids[1].
    publish_ok(b.addr, &json!((6..=13).map(block).collect::<Vec<_>>())).await;
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(json!(ids[2]), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], true, "just inside the bound: {r}");
    assert_eq!(r["data"]["replayed"], 10);
    for _ in 0..10 {
        c.recv().await;
    }
    c.drop_tcp();
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(json!(ids[1]), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], false, "one past the bound: {r}");
    assert_eq!(r["data"]["replayed"], 0);
    assert_eq!(r["data"]["subscriptions"], json!([sid]));
    let next = publish_ok(b.addr, &block(14)).await.remove(0);
    assert_eq!(c.recv().await["id"], next.as_str(), "live delivery goes on");
    let m = metrics(b.addr).await;
    assert!(
        metric(&m, "rustorium_history_evicted_total{reason=\"bound\"}").unwrap_or(0.0) >= 3.0,
        "{m}"
    );
}

#[tokio::test]
async fn ids_the_broker_never_issued_are_recovered_false_and_non_ids_are_invalid() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("blocks", json!({})).await;
    let ids = publish_ok(b.addr, &json!([block(1), block(2)])).await;
    let tick = tick("MTK/USD", 1);
    let not_block = publish_ok(b.addr, &tick).await.remove(0);
    let last: u64 = not_block.parse().expect("id");
    c.recv().await;
    c.recv().await;
    let garbage = [
        json!("garbage"),
        json!(""),
        json!("-1"),
        json!(" 1"),
        json!("1e9"),
        json!((last + 1000).to_string()),
        json!(format!("{not_block}.{}", ids[0])),
        json!(format!("{}.{}", ids[0], ids[1])),
        json!("99999999999999999999999999999999"),
        json!("x".repeat(10_000)),
        json!(last + 1000),
        json!(1.5),
    ];
    for bad in garbage {
        let r = c.reconnect(bad.clone(), std::slice::from_ref(&sid)).await;
        let bad: String = bad.to_string().chars().take(80).collect();
        assert_eq!(r["type"], "reconnect_success", "{bad}: {r}");
        assert_eq!(r["data"]["recovered"], false, "{bad}: {r}");
        assert_eq!(r["data"]["replayed"], 0, "{bad}: {r}");
        assert_eq!(r["data"]["subscriptions"], json!([sid]), "{bad}: {r}");
        c.expect_silence(Duration::from_millis(50)).await;
    }
    for bad in [json!({"id": 1}), json!(true), json!([ids[0]])] {
        let r = c.reconnect(bad.clone(), std::slice::from_ref(&sid)).await;
        assert_eq!(r["type"], "error", "{bad}: {r}");
        assert_eq!(r["error"]["code"], 4002, "{bad}: {r}");
    }
    // A good id afterwards still works on the same connection.
    let r = c.reconnect(json!(ids[0]), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(c.recv().await["id"], ids[1].as_str());
}

#[tokio::test]
async fn an_event_as_large_as_the_publish_limit_reaches_ws_and_v1_readers() {
    let b = start(config());
    let mut ws = Client::ws(b.addr, SUB_KEY).await;
    ws.subscribe("blocks", json!({})).await;
    let mut v1 = Client::v1(b.addr, SUB_KEY).await;
    let r = v1
        .request(json!({"type": "subscribe", "id": "s", "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["type"], "subscription_confirmation");
    let mut big = block(1);
    // About 1 MiB in all, inside the 1 MiB body limit; larger than the 1 MiB queue bound
    // once rendered with its envelope.
    big["data"]["pad"] = json!("p".repeat(1024 * 1024 - 400));
    let id = publish_ok(b.addr, &big).await.remove(0);
    for c in [&mut ws, &mut v1] {
        let got = c.recv().await;
        assert_eq!(got["id"], id.as_str());
        assert_eq!(
            got["data"]["pad"].as_str().map(str::len),
            Some(1024 * 1024 - 400)
        );
    }
    let m = metrics(b.addr).await;
    assert_eq!(
        metric(&m, "rustorium_rejections_total{reason=\"slow_consumer\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_total_bound_evicts_the_oldest_events_of_any_channel_first() {
    let mut cfg = config();
    cfg.resume.history_bytes = 64 * 1024;
    cfg.resume.history_total_bytes = 64 * 1024;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let sid = c.subscribe("market_data", json!({})).await;
    let first = publish_ok(b.addr, &tick("MTK/USD", 1)).await.remove(0);
    assert_eq!(c.recv().await["id"], first.as_str());
    c.drop_tcp();
    publish_ok(b.addr, &tick("MTK/USD", 2)).await;
    // Blocks on another channel push the whole history past its total: the two ticks are
    // the oldest events anywhere, so they go first, although their channel holds little.
    for start in (0..400).step_by(100) {
        let blocks: Vec<Value> = (start..start + 100).map(block).collect();
        publish_ok(b.addr, &json!(blocks)).await;
    }
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c.reconnect(json!(first), std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_eq!(r["data"]["subscriptions"], json!([sid]));
    let m = metrics(b.addr).await;
    let bytes = metric(&m, "rustorium_history_bytes").unwrap_or(f64::MAX);
    assert!(bytes <= 64.0 * 1024.0, "history holds {bytes} bytes: {m}");
}
