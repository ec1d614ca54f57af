//! Many connections: 1000 subscribers each receive every event of a burst, in order,
//! with the ids the publisher was given.

mod common;

use common::*;
use serde_json::{json, Value};

const SUBSCRIBERS: usize = 1000;
const EVENTS: u64 = 200;
const BATCH: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_receive_every_event_of_a_burst_in_order() {
    rustorium_broker::server::raise_file_limit();
    let mut cfg = config();
    cfg.keys[0].max_connections = Some(SUBSCRIBERS as u32);
    let b = start(cfg);
    let addr = b.addr;

    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::ws(addr, SUB_KEY).await;
            c.subscribe("blocks", json!({})).await;
            let _ = ready.send(()).await;
            let mut got = Vec::with_capacity(EVENTS as usize);
            for _ in 0..EVENTS {
                let e = c.recv().await;
                got.push((
                    e["id"].as_str().map(str::to_owned),
                    e["data"]["number"].as_u64(),
                ));
            }
            got
        }));
    }
    for _ in 0..SUBSCRIBERS {
        tokio::time::timeout(WAIT * 6, ready_rx.recv())
            .await
            .expect("all subscribers ready in time");
    }
    let mut published = Vec::new();
    for start in (0..EVENTS).step_by(BATCH as usize) {
        let batch: Vec<Value> = (start..start + BATCH).map(block).collect();
        for (i, id) in publish_ok(addr, &json!(batch))
            .await
            .into_iter()
            .enumerate()
        {
            published.push((Some(id), Some(start + i as u64)));
        }
    }
    for task in tasks {
        let got = tokio::time::timeout(WAIT * 6, task)
            .await
            .expect("subscriber finished in time")
            .expect("subscriber task");
        assert_eq!(got, published);
    }
    let m = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        metric(&m.text, "rustorium_drops_total"),
        Some(0.0),
        "{}",
        m.text
    );
}
