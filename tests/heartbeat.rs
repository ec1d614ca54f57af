//! Heartbeats (frame and ping every interval) and liveness: silence past the timeout is
//! closed 4004; any frame from the client, heartbeat_response included, keeps it alive.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn fast() -> rustorium_broker::Config {
    let mut c = config();
    c.heartbeat.interval_ms = 200;
    c.heartbeat.timeout_ms = Some(1000);
    c
}

#[tokio::test]
async fn heartbeat_frames_have_the_ws_shape_and_come_every_interval() {
    let b = start(fast());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let started = Instant::now();
    let mut beats = 0;
    while beats < 3 {
        match c.next_text(WAIT).await {
            Some(Ok(v)) => {
                assert_eq!(v["type"], "heartbeat");
                assert_eq!(v["id"], serde_json::Value::Null);
                assert_eq!(v["error"], serde_json::Value::Null);
                let ts = v["data"]["timestamp"].as_u64().expect("UNIX seconds");
                assert!(ts > 1_700_000_000);
                beats += 1;
            }
            other => panic!("expected heartbeats, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_silent_client_is_closed_4004_and_a_reading_one_is_not() {
    let b = start(fast());
    let mut silent = Client::ws(b.addr, SUB_KEY).await;
    let mut alive = Client::ws(b.addr, SUB_KEY).await;
    alive.subscribe("blocks", json!({})).await;
    // Do not read (so no pong) for well past the timeout, while `alive` keeps reading.
    let until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < until {
        if let Some(Ok(v)) = alive.next_text(Duration::from_millis(100)).await {
            assert_eq!(v["type"], "heartbeat", "unexpected {v}");
        }
    }
    let (code, reason) = silent.expect_close().await;
    assert_eq!(code, 4004, "{reason}");
    // The reading client (its library answers pings) was not closed, and still receives.
    publish_ok(b.addr, &block(1)).await;
    assert_eq!(alive.recv().await["data"]["number"], 1);
}

#[tokio::test]
async fn heartbeat_responses_count_as_alive_and_are_not_rate_limited() {
    let mut cfg = fast();
    cfg.limits.ws_messages_per_minute = 2;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let until = Instant::now() + Duration::from_millis(2000);
    let mut sent = 0;
    while Instant::now() < until {
        c.send_json(&json!({"type": "heartbeat_response", "data": {"timestamp": 1}}))
            .await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent > 10);
    // Not closed, and the message cap (2) was not used up by the responses.
    let r = c
        .request(json!({"type": "subscribe", "id": "a", "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["type"], "subscribe_success", "{r}");
}
