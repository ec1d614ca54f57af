//! The Redis engine's fan-out against a real `redis-server` (PROTOCOL.md section 11): a
//! node receives the events of the channels it has interest in, and only those, in
//! sequence order, rebuilt with their ids, types and data; interest comes and goes.
//!
//! Skipped with a message when `redis-server` is not installed, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::{redis_server, TRIM};
use rustorium_actors::engine::redis_fanout::{deliver_all, Interest};
use rustorium_actors::engine::redis_log::{append, Keys, LogEntry};
use rustorium_actors::engine::redis_record::encode;
use rustorium_actors::engine::Sink;
use rustorium_actors::event::Event;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// A node's fan-out stand-in: it keeps what it is given.
#[derive(Default)]
struct Collect(Mutex<Vec<Arc<Event>>>);

impl Sink for Collect {
    fn deliver(&self, events: &[Arc<Event>]) -> oneshot::Receiver<()> {
        self.0.lock().expect("lock").extend(events.iter().cloned());
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        rx
    }
}

impl Collect {
    /// Waits until `n` events arrived (5 s at most) and returns them.
    async fn wait_for(&self, n: usize) -> Vec<Arc<Event>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.0.lock().expect("lock").clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn market(price: &str) -> LogEntry {
    let data = format!(r#"{{"symbol":"MTK/USD","price":"{price}"}}"#);
    let raw = RawValue::from_string(data).expect("JSON");
    LogEntry {
        channel: "market_data".into(),
        record: encode("update", None, &raw, 0),
        block: None,
        is_block: false,
    }
}

fn block(n: u64) -> LogEntry {
    let raw = RawValue::from_string(format!(r#"{{"number":{n}}}"#)).expect("JSON");
    LogEntry {
        channel: "blocks".into(),
        record: encode("new_block", Some(n), &raw, 0),
        block: Some(n),
        is_block: true,
    }
}

#[tokio::test]
async fn a_node_receives_what_it_has_interest_in_in_sequence_order() {
    let Some(server) = redis_server() else {
        return;
    };
    let keys = Keys::new("fanout:");
    let (psink, pstream) = server.pubsub().await.split();
    let mut interest = Interest::new(psink, keys.clone());
    interest.add("market_data").await.expect("interest");
    let collect = Arc::new(Collect::default());
    let sink: Arc<dyn Sink> = collect.clone();
    let task = tokio::spawn(deliver_all(pstream, keys.clone(), sink));
    let mut publisher = server.node().await;

    let ids = append(
        &mut publisher,
        &keys,
        TRIM,
        &[market("1"), block(5), market("2")],
    )
    .await
    .expect("append");
    let got = collect.wait_for(2).await;
    let seen: Vec<(u64, String, String)> = got
        .iter()
        .map(|e| (e.seq, e.kind.clone(), e.data["price"].to_string()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (ids[0].seq, "update".into(), "\"1\"".into()),
            (ids[2].seq, "update".into(), "\"2\"".into()),
        ],
        "only market_data, in sequence order (no blocks: no interest)"
    );
    assert_eq!(got[0].id, ids[0].seq.to_string());

    // Interest moves from market_data to blocks: the next market_data event, sequenced
    // before the block, is not received; the block is.
    interest.remove("market_data").await.expect("interest");
    interest.add("blocks").await.expect("interest");
    let later = append(&mut publisher, &keys, TRIM, &[market("3"), block(6)])
        .await
        .expect("append");
    let got = collect.wait_for(3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].seq, later[1].seq);
    assert_eq!(&*got[2].channel, "blocks");
    assert_eq!(got[2].raises_head, Some(6));
    assert_eq!(got[2].data["number"], 6);
    task.abort();
}
