//! The Redis engine's log against a real `redis-server` started here (PROTOCOL.md section
//! 11): one cluster sequence across connections ("nodes"), each event in its channel's
//! stream under its sequence number and read back by range, announcements in sequence order on one subscriber
//! connection across channels, and the chain head raised only by higher blocks.
//!
//! Skipped with a message when `redis-server` is not installed, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set (the test command sets it when it installed Redis).

mod common;

use std::time::Duration;

use common::redis_server::{redis_server, TRIM};

use futures_util::StreamExt;
use rustorium_actors::engine::redis::eventlog::{
    append, append_above, parse_announcement, read, read_log, report, Keys, LogEntry, LogQuery,
};

fn entry(channel: &str, record: &str, block: Option<u64>, is_block: bool) -> LogEntry {
    LogEntry {
        channel: channel.into(),
        record: record.into(),
        block,
        is_block,
    }
}

#[tokio::test]
async fn one_sequence_streams_announcements_and_the_head() {
    let Some(server) = redis_server() else {
        return;
    };
    let keys = Keys::new("test:");
    // A subscriber connection, as a node with subscribers on both channels has.
    let mut pubsub = server.pubsub().await;
    let names = [
        keys.events("blocks"),
        keys.events("market_data"),
        keys.head_raises(),
    ];
    pubsub.subscribe(&names).await.expect("subscribe");
    let mut node_a = server.node().await;
    let mut node_b = server.node().await;

    let a = append(
        &mut node_a,
        &keys,
        TRIM,
        &[
            entry("blocks", "b10", Some(10), true),
            entry("market_data", "m1 with spaces", None, false),
        ],
    )
    .await
    .expect("append on A");
    let b = append(
        &mut node_b,
        &keys,
        TRIM,
        &[
            // Lower than the head: no raise.
            entry("blocks", "b9", Some(9), true),
            entry("market_data", "m2", None, false),
            // Past 2^53: compared as text, kept exactly.
            entry("blocks", "big", Some(u64::MAX), true),
        ],
    )
    .await
    .expect("append on B");
    let seqs: Vec<u64> = a.iter().chain(&b).map(|x| x.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "one increasing sequence: {seqs:?}"
    );
    assert_eq!(a[0].raised, Some(10));
    assert_eq!(a[1].raised, None);
    assert_eq!(b[0].raised, None, "block 9 is below the head 10");
    assert_eq!(b[2].raised, Some(u64::MAX));

    // Each channel's stream holds its events under their sequence numbers, in order, and
    // a read takes what comes after a sequence number, up to another, at most so many.
    let mut con = node_a;
    let all = read(&mut con, &keys, "blocks", 0, u64::MAX, 100)
        .await
        .expect("read");
    let blocks: Vec<(u64, &str)> = all.iter().map(|(s, r)| (*s, r.as_str())).collect();
    assert_eq!(
        blocks,
        vec![(seqs[0], "b10"), (seqs[2], "b9"), (seqs[4], "big")]
    );
    let after = read(&mut con, &keys, "blocks", seqs[0], seqs[4], 100)
        .await
        .expect("read");
    assert_eq!(
        after,
        vec![(seqs[2], "b9".to_string()), (seqs[4], "big".to_string())]
    );
    let first = read(&mut con, &keys, "blocks", 0, u64::MAX, 1)
        .await
        .expect("read");
    assert_eq!(first, vec![(seqs[0], "b10".to_string())]);
    assert!(read(&mut con, &keys, "nothing_here", 0, u64::MAX, 10)
        .await
        .expect("read")
        .is_empty());
    let stream: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.history("market_data"))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    let got: Vec<(String, &str)> = stream
        .iter()
        .map(|(id, fields)| (id.clone(), fields[0].1.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (format!("{}-0", seqs[1]), "m1 with spaces"),
            (format!("{}-0", seqs[3]), "m2")
        ]
    );
    let head: (String, String) = redis::cmd("HMGET")
        .arg(keys.head())
        .arg("number")
        .arg("by")
        .query_async(&mut con)
        .await
        .expect("head");
    assert_eq!(head, (u64::MAX.to_string(), seqs[4].to_string()));

    // One subscriber connection gets every announcement in sequence order, across
    // channels, with the head raises announced right after the event that made them.
    let mut messages = pubsub.on_message();
    let mut seen = Vec::new();
    let deadline = Duration::from_secs(5);
    while seen.len() < 7 {
        let msg = tokio::time::timeout(deadline, messages.next())
            .await
            .expect("announcements within 5 s")
            .expect("the pub/sub stream stays open");
        let text: String = msg.get_payload().expect("text");
        if msg.get_channel_name() == keys.head_raises() {
            seen.push(format!("head {text}"));
        } else {
            let a = parse_announcement(&text).expect("an announcement");
            seen.push(format!("{} {:?} {}", a.seq, a.raised, a.record));
        }
    }
    let s = &seqs;
    assert_eq!(
        seen,
        vec![
            format!("{} Some(10) b10", s[0]),
            format!("head {} 10", s[0]),
            format!("{} None m1 with spaces", s[1]),
            format!("{} None b9", s[2]),
            format!("{} None m2", s[3]),
            format!("{} Some({}) big", s[4], u64::MAX),
            format!("head {} {}", s[4], u64::MAX),
        ]
    );
}

/// A failover that lost the last event, as a promoted replica behind its old master shows
/// it: the sequence behind what a node handed out, the last entry missing, and another
/// replication id than the one the epoch recorded.
#[tokio::test]
async fn after_a_failover_ids_never_repeat_and_lost_ones_are_recorded() {
    let Some(server) = redis_server() else {
        return;
    };
    let keys = Keys::new("epoch:");
    let mut node_a = server.node().await;
    let mut node_b = server.node().await;
    let first = append(
        &mut node_a,
        &keys,
        TRIM,
        &[
            entry("market_data", "one", None, false),
            entry("market_data", "two", None, false),
            entry("market_data", "three", None, false),
        ],
    )
    .await
    .expect("append");
    let (kept, handed) = (first[1].seq, first[2].seq);
    // The new master has everything up to `kept`, not `handed`.
    let mut con = server.node().await;
    let () = redis::cmd("SET")
        .arg(keys.sequence())
        .arg(kept)
        .query_async(&mut con)
        .await
        .expect("SET");
    let _: i64 = redis::cmd("XDEL")
        .arg(keys.history("market_data"))
        .arg(format!("{handed}-0"))
        .query_async(&mut con)
        .await
        .expect("XDEL");
    let () = redis::cmd("HSET")
        .arg(keys.epoch())
        .arg("replid")
        .arg("the-old-master")
        .query_async(&mut con)
        .await
        .expect("HSET");

    // A node that never saw `handed` appends first: its id is still above it.
    let b = append(
        &mut node_b,
        &keys,
        TRIM,
        &[entry("market_data", "four", None, false)],
    )
    .await
    .expect("append on the new master");
    assert!(
        b[0].seq > handed,
        "{} repeats or precedes {handed}",
        b[0].seq
    );
    // The node that handed `handed` out reports it: it is lost, and recorded.
    assert!(report(&mut node_a, &keys, handed).await.expect("report"));
    assert!(
        !report(&mut node_a, &keys, kept).await.expect("report"),
        "what the new master has is not lost"
    );
    let a = append_above(
        &mut node_a,
        &keys,
        TRIM,
        handed,
        &[entry("market_data", "five", None, false)],
    )
    .await
    .expect("append above");
    assert!(a[0].seq > b[0].seq);
    let q = LogQuery {
        after: kept,
        upto: None,
        limit: 100,
        release: None,
        channels: vec![("market_data".into(), kept)],
    };
    let log = read_log(&mut con, &keys, &q).await.expect("read_log");
    assert_eq!(log.lost, vec![(kept, handed)]);
    let (base, start) = log.epoch.expect("an epoch");
    assert_eq!(base, kept);
    assert!(start >= handed && start < b[0].seq, "{start}");
    let ids: Vec<u64> = log.channels[0].entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        ids,
        vec![b[0].seq, a[0].seq],
        "the lost event is not replayed"
    );
}
