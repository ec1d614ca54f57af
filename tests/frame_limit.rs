//! The frame limit: 64 KiB for subscribers (larger closes 1009), the publish body limit
//! for keys with the publish role.

mod common;

use common::*;
use serde_json::json;

fn request_of_size(n: usize) -> String {
    let head = r#"{"type":"nope","id":"big","data":{"pad":""#;
    let tail = r#""}}"#;
    format!("{head}{}{tail}", "x".repeat(n - head.len() - tail.len()))
}

#[tokio::test]
async fn a_frame_of_exactly_64_kib_is_read_and_one_byte_more_closes_1009() {
    let b = start(config());
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.send_text(&request_of_size(64 * 1024)).await;
    let r = c.recv().await;
    assert_eq!(r["id"], "big");
    assert_eq!(r["error"]["code"], 4002);
    c.send_text(&request_of_size(64 * 1024 + 1)).await;
    assert_eq!(c.expect_close().await.0, 1009);
    let mut other = Client::ws(b.addr, SUB_KEY).await;
    other.subscribe("blocks", json!({})).await;
}

#[tokio::test]
async fn publisher_keys_may_send_frames_up_to_the_publish_body_limit() {
    let b = start(config());
    let mut c = Client::ws(b.addr, ALL_KEY).await;
    c.send_text(&request_of_size(512 * 1024)).await;
    assert_eq!(c.recv().await["error"]["code"], 4002);
}
