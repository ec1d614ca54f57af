//! The Rust SDK (`rustorium-sdk`) against the real broker over real sockets: no loss and
//! no duplicate across connections cut at random points, a killed and restarted broker
//! (backoff intervals, the gap reported), heartbeat silence, a refused key, a stalled
//! reader cut 4005, a v1 typed stream, and the commands.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::broker_process::BrokerProcess;
use common::proxy::Proxy;
use common::*;
use futures_util::{Stream, StreamExt};
use rustorium_sdk::{
    Backoff, Error, ErrorCode, Event, PublishEvent, Subscription, TransactionRequest, Update,
    WebSocketClient,
};
use serde_json::{json, Value};

/// Reconnect waits short enough for many rounds in a test.
fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(40),
        jitter: 0.2,
    }
}

fn client(url: String, key: &str, backoff: Backoff) -> WebSocketClient {
    WebSocketClient::new()
        .with_endpoint(url)
        .with_api_key(key)
        .with_backoff(backoff)
        .build()
        .expect("client settings")
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// The next item of a stream, within WAIT.
async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the wait")
        .expect("the stream goes on")
}

/// The ids of the node API events read until `count` events came; any other item fails.
async fn read_events(stream: &mut rustorium_sdk::EventStream, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        match next(stream).await {
            Event::NewBlock(b) => ids.push(b.meta.id),
            Event::TransactionConfirmed(t) => ids.push(t.meta.id),
            Event::StateUpdate(s) => ids.push(s.meta.id),
            Event::Error(e) => panic!("unexpected error item after {} events: {e}", ids.len()),
        }
    }
    ids
}

fn state(n: u64) -> Value {
    json!({"channel": "state", "data": {"key": format!("0x{n:04x}"), "value": "AQ==", "block_number": n}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_points_lose_and_repeat_nothing() {
    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 20;
    let b = start(config());
    let proxy = Proxy::start(b.addr).await;
    let c = client(ws_url(proxy.addr), SUB_KEY, quick_backoff());
    let mut events = c
        .subscribe_events(&["blocks", "state"])
        .await
        .expect("subscribed");
    // From now on every connection is cut after 100 to 8000 bytes towards the client:
    // inside the upgrade's response, inside a frame, between frames, in the middle of a
    // resume's reply or replay. The one open now is cut at once.
    proxy.cut_after(Some(100..8000));
    proxy.cut_open_connections();
    let addr = b.addr;
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for batch in 0..BATCHES {
            let body: Vec<Value> = (batch * PER_BATCH..(batch + 1) * PER_BATCH)
                .map(|n| if n % 2 == 0 { block(n) } else { state(n) })
                .collect();
            ids.extend(publish_ok(addr, &json!(body)).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ids
    });
    let got = read_events(&mut events, (BATCHES * PER_BATCH) as usize).await;
    let published = publisher.await.expect("publisher");
    assert_eq!(got.len(), published.len());
    assert_eq!(got, published, "the stream is exactly what was published, in order");
    let stats = events.stats();
    assert!(proxy.cuts() >= 50, "only {} cuts", proxy.cuts());
    assert!(stats.resumes >= 50, "{stats:?}");
    assert_eq!(stats.gaps, 0, "{stats:?}");
    eprintln!(
        "{} events over {} cuts, {} resumes, {} connections; {} duplicates dropped by the client",
        got.len(),
        proxy.cuts(),
        stats.resumes,
        proxy.accepted().len(),
        stats.duplicates_dropped
    );
}
