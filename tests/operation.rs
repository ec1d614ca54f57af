//! `/health`, `/ready`, `/metrics`: counts of connections, subscriptions per channel,
//! messages, and rejections by reason.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let b = start(config());
    let h = http(b.addr, "GET", "/health", &[], b"").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "ok");
    assert_eq!(http(b.addr, "GET", "/ready", &[], b"").await.status, 200);

    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    c.subscribe("market_data", json!({"symbols": ["A/B"]}))
        .await;
    c.send_text("garbage").await;
    c.recv().await;
    let mut refused = Client::ws(b.addr, "bad-key").await;
    refused.expect_close().await;
    publish_ok(b.addr, &block(1)).await;
    c.recv().await;

    let m = http(b.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(m.status, 200);
    let t = &m.text;
    assert_eq!(metric(t, "rustorium_connections"), Some(1.0), "{t}");
    assert_eq!(
        metric(t, "rustorium_subscriptions{channel=\"blocks\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(t, "rustorium_subscriptions{channel=\"market_data\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(t, "rustorium_subscriptions{channel=\"state\"}"),
        Some(0.0)
    );
    assert_eq!(metric(t, "rustorium_events_published_total"), Some(1.0));
    assert_eq!(metric(t, "rustorium_messages_in_total"), Some(3.0));
    assert!(metric(t, "rustorium_messages_out_total").is_some_and(|n| n >= 4.0));
    assert_eq!(
        metric(t, "rustorium_rejections_total{reason=\"invalid_token\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(t, "rustorium_rejections_total{reason=\"invalid_request\"}"),
        Some(1.0)
    );
    assert_eq!(metric(t, "rustorium_drops_total"), Some(0.0));
}
