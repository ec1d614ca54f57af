//! One client that stops reading never delays the others: the hub's `try_send` to its
//! full mailbox fails, the drop is counted, and the client is closed 4005 after the
//! contiguous prefix it was sent. (Resume of what it missed is a later issue.)

mod common;

use common::*;
use serde_json::{json, Value};

const EVENTS: u64 = 2000;
const PER_BATCH: u64 = 50;

fn fat_block(n: u64) -> Value {
    let mut b = block(n);
    b["data"]["pad"] = json!("p".repeat(16 * 1024));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_4005_and_the_others_get_everything() {
    let mut cfg = config();
    cfg.limits.connection_queue_frames = 16;
    let b = start(cfg);
    let mut stalled = Client::ws(b.addr, SUB_KEY).await;
    stalled.subscribe("blocks", json!({})).await;
    let mut fast = Client::ws(b.addr, SUB_KEY).await;
    fast.subscribe("blocks", json!({})).await;

    let reader = tokio::spawn(async move {
        let mut numbers = Vec::new();
        for _ in 0..EVENTS {
            numbers.push(fast.recv().await["data"]["number"].as_u64());
        }
        numbers
    });
    for start in (0..EVENTS).step_by(PER_BATCH as usize) {
        let batch: Vec<Value> = (start..start + PER_BATCH).map(fat_block).collect();
        publish_ok(b.addr, &json!(batch)).await;
    }
    let numbers = reader.await.expect("fast reader");
    assert_eq!(numbers, (0..EVENTS).map(Some).collect::<Vec<_>>());

    let m = http(b.addr, "GET", "/metrics", &[], b"").await;
    let drops: u64 = m
        .text
        .lines()
        .find_map(|l| l.strip_prefix("rustorium_drops_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(drops > 0, "the stalled client's queue never filled");

    // The stalled client now reads: a gap-free prefix, then 4005.
    let mut expect = 0;
    let code = loop {
        match stalled.next_text(WAIT).await {
            Some(Ok(v)) => {
                assert_eq!(
                    v["data"]["number"], expect,
                    "gap in the stalled client's prefix"
                );
                expect += 1;
            }
            Some(Err(Ended::Closed(code, _))) => break code,
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    assert_eq!(code, 4005);
    assert!(expect < EVENTS);
}
