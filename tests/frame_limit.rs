//! The frame limit: 64 KiB for subscribers (larger closes 1009), the publish body limit
//! for keys with the publish role.

mod common;

use common::*;
use serde_json::{json, Value};

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

/// A `publish` request on `market_data` whose JSON text is exactly `n` bytes.
fn publish_of_size(n: usize, id: &str) -> String {
    let head = format!(
        r#"{{"type":"publish","id":"{id}","data":{{"channel":"market_data","data":{{"symbol":"A","price":"1","change_24h":"0","volume_24h":"1","timestamp":"t","pad":""#
    );
    let tail = r#""}}}"#;
    format!("{head}{}{tail}", "x".repeat(n - head.len() - tail.len()))
}

/// Connects the publisher key on `/ws` or `/v1`.
async fn publisher(addr: std::net::SocketAddr, v1: bool) -> Client {
    if v1 {
        Client::v1(addr, ALL_KEY).await
    } else {
        Client::ws(addr, ALL_KEY).await
    }
}

const PUBLISH_LIMIT: usize = 1024 * 1024;

/// Issue 22: a publisher's frame over `publish.max_body_bytes` was neither refused nor
/// read (actix-http's decoder waits for a whole frame before it checks its length, and
/// the input handed it one piece and waited). It closes 1009 at once now, on both
/// dialects, and a frame of exactly the limit is still published.
#[tokio::test]
async fn a_publisher_frame_over_the_publish_limit_closes_1009_at_once_on_both_dialects() {
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    for v1 in [false, true] {
        for size in [PUBLISH_LIMIT + 1, 2_000_000] {
            let mut p = publisher(b.addr, v1).await;
            let sent = std::time::Instant::now();
            p.send_text(&publish_of_size(size, "big")).await;
            let (code, reason) = p.expect_close().await;
            assert_eq!(code, 1009, "v1 {v1}, {size} bytes: {reason}");
            assert!(
                sent.elapsed() < std::time::Duration::from_secs(5),
                "v1 {v1}, {size} bytes: closed only after {:?}",
                sent.elapsed()
            );
        }
        // Exactly the limit: published.
        let mut p = publisher(b.addr, v1).await;
        let r = p.request_text(&publish_of_size(PUBLISH_LIMIT, "max")).await;
        let ok = if v1 {
            "publish_confirmation"
        } else {
            "publish_success"
        };
        assert_eq!(r["type"], ok, "v1 {v1}: {r}");
        let ev = sub.recv().await;
        assert_eq!(ev["channel"], "market_data");
        assert_eq!(ev["id"], r["data"]["ids"][0]);
    }
    // Nothing of the refused frames reached the subscriber.
    sub.expect_silence(std::time::Duration::from_millis(300))
        .await;
    let m = metrics(b.addr).await;
    let name = "rustorium_rejections_total{reason=\"frame_too_large\"}";
    assert_eq!(metric(&m, name), Some(4.0));
}

/// The same limit when the message comes in fragments: a message whose fragments add up
/// past the limit, and a single fragment past it, both close 1009 on both dialects.
#[tokio::test]
async fn a_fragmented_publish_over_the_limit_closes_1009_on_both_dialects() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let b = start(config());
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    let text = publish_of_size(PUBLISH_LIMIT + 200_000, "frag");
    let bytes = text.as_bytes();
    for v1 in [false, true] {
        // Three fragments of about 400 KB: each within the limit, together over it.
        let mut p = publisher(b.addr, v1).await;
        let parts: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(3)).collect();
        for (i, part) in parts.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let last = i == parts.len() - 1;
            p.send(Message::Frame(Frame::message(part.to_vec(), op, last)))
                .await;
        }
        assert_eq!(p.expect_close().await.0, 1009, "v1 {v1}: fragments");
        // A first fragment that is itself over the limit.
        let mut p = publisher(b.addr, v1).await;
        let first = Frame::message(bytes.to_vec(), OpCode::Data(Data::Text), false);
        p.send(Message::Frame(first)).await;
        assert_eq!(
            p.expect_close().await.0,
            1009,
            "v1 {v1}: one large fragment"
        );
    }
    sub.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

/// Publishes `frames` batches of 1000 events, pipelined, then one frame over the limit.
/// Returns the publish replies that came before the close, and the close code.
async fn pipelined_then_too_big(p: &mut Client, frames: usize) -> (Vec<Value>, u16) {
    for f in 0..frames {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"channel": "market_data", "data": {"symbol": format!("S{f}"),
                    "price": i.to_string(), "change_24h": "0", "volume_24h": "1",
                    "timestamp": "t"}})
            })
            .collect();
        let frame = json!({"type": "publish", "id": f, "data": {"events": events}});
        p.send_text(&frame.to_string()).await;
    }
    p.send_text(&publish_of_size(PUBLISH_LIMIT + 1, "big"))
        .await;
    let mut replies = Vec::new();
    loop {
        match p.next_text(WAIT).await {
            Some(Ok(v)) if v["type"] == "heartbeat" => {}
            Some(Ok(v)) => replies.push(v),
            Some(Err(Ended::Closed(code, _))) => return (replies, code),
            other => panic!(
                "expected replies then a close, got {other:?} after {} replies: {:?}",
                replies.len(),
                replies.last()
            ),
        }
    }
}

/// Publishes, then a frame over the limit, on each dialect against a broker with
/// `close_wait_ms`; returns the publish answers each got before its close, and the
/// broker's count of closes that waited and of waits that ran out.
async fn run_pipelined(close_wait_ms: u64, frames: usize) -> (Vec<usize>, f64, f64) {
    let mut cfg = config();
    cfg.limits.close_wait_ms = close_wait_ms;
    // 12,000 events a connection in well under a second: above the publisher's own cap.
    cfg.limits.publish_events_per_second = 1_000_000;
    let b = start(cfg);
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("market_data", json!({})).await;
    let mut answered = Vec::new();
    for v1 in [false, true] {
        let mut p = publisher(b.addr, v1).await;
        let (replies, code) = pipelined_then_too_big(&mut p, frames).await;
        assert_eq!(code, 1009, "wait {close_wait_ms}, v1 {v1}");
        let ok = if v1 {
            "publish_confirmation"
        } else {
            "publish_success"
        };
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(
                r["type"], ok,
                "wait {close_wait_ms}, v1 {v1}: {}",
                r["type"]
            );
            assert_eq!(r["id"], i, "answers in frame order");
        }
        answered.push(replies.len());
        // Whatever was published reached the subscriber whole: each frame's 1000 events
        // or none of them; with the answers awaited, all of them.
        let want = if close_wait_ms > 0 {
            frames * 1000
        } else {
            usize::MAX
        };
        let quiet = std::time::Duration::from_millis(1000);
        let mut got = 0usize;
        while got < want {
            match sub.next_text(quiet).await {
                Some(Ok(v)) if v["type"] == "heartbeat" => {}
                Some(Ok(_)) => got += 1,
                _ => break,
            }
        }
        if close_wait_ms > 0 {
            assert_eq!(
                got,
                frames * 1000,
                "v1 {v1}: every answered publish delivered"
            );
        } else {
            assert_eq!(
                got % 1000,
                0,
                "v1 {v1}: a publish delivered in part ({got})"
            );
        }
    }
    let m = metrics(b.addr).await;
    let waits = metric(&m, "rustorium_close_waits_total").unwrap_or(f64::NAN);
    let expired = metric(&m, "rustorium_close_wait_expired_total").unwrap_or(f64::NAN);
    (answered, waits, expired)
}

/// A frame over the limit behind pipelined publishes: every publish before it is
/// answered, in order, before the 1009, and every answered event reached the subscriber.
/// Whether the publishes are still in flight when the large frame is refused depends on
/// timing, so each run goes until the broker counted a close that waited for them (at
/// most 5 rounds). With no time to wait (`limits.close_wait_ms = 0`) the close overtakes
/// the answers: the control that shows the wait is what keeps them.
#[tokio::test]
async fn a_frame_over_the_limit_behind_pipelined_publishes_closes_after_their_answers() {
    const FRAMES: usize = 12;
    let mut waited = false;
    for _ in 0..5 {
        let (answered, waits, expired) = run_pipelined(10_000, FRAMES).await;
        assert_eq!(answered, vec![FRAMES, FRAMES], "every publish answered");
        assert_eq!(expired, 0.0);
        if waits >= 1.0 {
            waited = true;
            break;
        }
    }
    assert!(waited, "in 5 rounds no close found publishes in flight");
    let mut overtaken = false;
    for _ in 0..5 {
        let (answered, waits, expired) = run_pipelined(0, FRAMES).await;
        assert!(expired <= waits, "{expired} waits ran out of {waits}");
        if expired >= 1.0 {
            assert!(
                answered.iter().any(|&n| n < FRAMES),
                "a close that ran out of time still came after every answer: {answered:?}"
            );
            overtaken = true;
            break;
        }
    }
    assert!(overtaken, "in 5 rounds no close found publishes in flight");
}
