//! The handover after a failover (docs/PROTOCOL.md decision 50) with something to copy,
//! between two real `redis-server` processes on loopback, made deterministic without
//! Sentinel or timing: B replicates A and has synced 60 events; B is promoted
//! (`REPLICAOF NO ONE`, so its `master_replid2` is A's replid); A, still a master,
//! acknowledges 40 more that B never gets. The handover a node runs when it follows the
//! switch from A to B (`handover::take`, then `handover::give`, the functions the engine's
//! link calls) must then write those 40 events and their head raises to B with the ids A
//! gave them, in order per stream, and move B's epoch so that nothing is reported lost; a
//! later append on B gets ids above all of them. A killed A is not copied from (the loss
//! is reported), and a second handover copies nothing.
//!
//! Skipped with a message when `redis-server` is not installed, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set (the test command sets it when it installed Redis).

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{redis_server, RedisServer, TRIM};

use redis::aio::MultiplexedConnection;
use rustorium_actors::engine::redis::eventlog::{
    append, append_above, read_log, report, Appended, Keys, LogEntry, LogQuery, LogRead,
};
use rustorium_actors::engine::redis::handover;
use rustorium_actors::settings::EngineSettings;

/// The channels the events go to: every third is a `blocks` event that raises the head.
const CHANNELS: [&str; 3] = ["blocks", "market_data", "trades"];

/// Events B holds before its promotion, and events A acknowledges after it.
const SYNCED: u64 = 60;
const AFTER: u64 = 40;

/// The `i`-th event of the test (1-based).
fn event(i: u64) -> LogEntry {
    let channel = CHANNELS[(i % 3) as usize];
    let is_block = channel == "blocks";
    LogEntry {
        channel: channel.into(),
        record: format!("{channel}-{i}"),
        block: is_block.then_some(1000 + i),
        is_block,
    }
}

/// Appends events `from..=to` on `con`, in batches of 5 as a node's coalescer does;
/// returns what each got, in order.
async fn publish(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    from: u64,
    to: u64,
) -> Vec<Appended> {
    let mut out = Vec::new();
    let events: Vec<LogEntry> = (from..=to).map(event).collect();
    for batch in events.chunks(5) {
        out.extend(append(con, keys, TRIM, batch).await.expect("append"));
    }
    out
}

async fn info(con: &mut MultiplexedConnection) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query_async(con)
        .await
        .expect("INFO replication")
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Makes `replica` replicate `master` and waits until it has everything `master` wrote.
async fn replicate(master: &RedisServer, replica: &RedisServer) {
    let mut m = master.node().await;
    // A full sync now, not after the default 5 s wait for more replicas.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg(0)
        .query_async(&mut m)
        .await
        .expect("CONFIG SET");
    let mut r = replica.node().await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query_async(&mut r)
        .await
        .expect("REPLICAOF");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mi, ri) = (info(&mut m).await, info(&mut r).await);
        let up = field(&ri, "master_link_status") == Some("up");
        let offset = |i: &str, f: &str| field(i, f).and_then(|v| v.parse::<u64>().ok());
        let (Some(mo), Some(ro)) = (
            offset(&mi, "master_repl_offset"),
            offset(&ri, "slave_repl_offset"),
        ) else {
            panic!("no replication offsets: {mi} / {ri}");
        };
        if up && ro >= mo {
            return;
        }
        assert!(Instant::now() < deadline, "the replica did not sync: {ri}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every entry of a stream on `con`: `(id, [field, value])`.
async fn xrange(con: &mut MultiplexedConnection, key: &str) -> Vec<(String, Vec<String>)> {
    redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE")
}

fn seq(id: &str) -> u64 {
    id.strip_suffix("-0")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an id SEQ-0: {id}"))
}

/// A and B with 60 events on both, B promoted, and 40 more on A only: what each append
/// got, in order (100 of them).
struct Split {
    a: RedisServer,
    b: RedisServer,
    keys: Keys,
    acked: Vec<Appended>,
}

async fn split(test: &str) -> Option<Split> {
    let a = redis_server()?;
    let b = redis_server()?;
    let keys = Keys::new(format!("test:{test}:"));
    replicate(&a, &b).await;
    let mut on_a = a.node().await;
    let mut acked = publish(&mut on_a, &keys, 1, SYNCED).await;
    replicate(&a, &b).await;
    let mut on_b = b.node().await;
    let before: u64 = redis::cmd("GET")
        .arg(keys.sequence())
        .query_async(&mut on_b)
        .await
        .expect("B's sequence");
    assert_eq!(before, acked[SYNCED as usize - 1].seq, "B synced the 60");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut on_b)
        .await
        .expect("REPLICAOF NO ONE");
    let (ai, bi) = (info(&mut on_a).await, info(&mut on_b).await);
    assert_eq!(field(&bi, "role"), Some("master"));
    assert_eq!(
        field(&bi, "master_replid2"),
        field(&ai, "master_replid"),
        "B was promoted from A's history"
    );
    // Acknowledged by A, never replicated to B.
    acked.extend(publish(&mut on_a, &keys, SYNCED + 1, SYNCED + AFTER).await);
    let on_b_now: u64 = redis::cmd("GET")
        .arg(keys.sequence())
        .query_async(&mut on_b)
        .await
        .expect("B's sequence");
    assert_eq!(on_b_now, before, "B lacks the last 40");
    Some(Split { a, b, keys, acked })
}

/// Everything B's log holds after `after`, on every test channel (what a resume from
/// `after` reads).
async fn read_after(con: &mut MultiplexedConnection, keys: &Keys, after: u64) -> LogRead {
    read_log(
        con,
        keys,
        &LogQuery {
            after,
            upto: None,
            limit: 1000,
            release: None,
            channels: CHANNELS.iter().map(|c| (c.to_string(), after)).collect(),
        },
    )
    .await
    .expect("read_log")
}

fn settings() -> EngineSettings {
    EngineSettings {
        connect_timeout_ms: 500,
        response_timeout_ms: 1000,
        probe_interval_ms: 200,
        handover_pause_ms: 1500,
        ..EngineSettings::default()
    }
}

fn assert_increasing(ids: &[u64], who: &str) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{who}: ids repeat or go backwards: {ids:?}"
    );
}

#[tokio::test]
async fn a_planned_failover_copies_what_the_new_master_lacks_with_its_ids() {
    let Some(Split { a, b, keys, acked }) = split("copy").await else {
        return;
    };
    let ids: Vec<u64> = acked.iter().map(|x| x.seq).collect();
    assert_increasing(&ids, "A");
    let raises_after = acked[SYNCED as usize..]
        .iter()
        .filter(|x| x.raised.is_some())
        .count() as u64;
    assert!(raises_after > 0, "some of the 40 raise the head");
    let last = *ids.last().expect("ids");
    let synced_last = ids[SYNCED as usize - 1];
    let settings = settings();

    // Two nodes follow the switch at once: both read before either writes.
    let (mut b1, mut b2) = (b.node().await, b.node().await);
    let first = handover::take(&settings, &keys, &a.client(), &mut b1)
        .await
        .expect("the first node's read")
        .expect("something to hand over");
    let second = handover::take(&settings, &keys, &a.client(), &mut b2)
        .await
        .expect("the second node's read")
        .expect("something to hand over, B not written yet");
    assert_eq!(first.count() as u64, AFTER + raises_after);
    assert_eq!(first.upto(), last);
    assert_eq!(second.count(), first.count());

    // A's writes are paused: an append there waits instead of being acknowledged and lost.
    let mut on_a = a.node().await;
    let blocked = tokio::time::timeout(
        Duration::from_millis(300),
        append(&mut on_a, &keys, TRIM, &[event(999)]),
    )
    .await;
    assert!(blocked.is_err(), "A still takes writes during the handover");

    let handed = handover::give(&settings, &keys, &first, &mut b1, TRIM.ttl_secs)
        .await
        .expect("B takes the handover");
    assert_eq!(
        handed.copied,
        AFTER + raises_after,
        "every event and raise copied"
    );
    assert_eq!(
        handed.base, last,
        "B's history is complete up to A's last id"
    );
    let again = handover::give(&settings, &keys, &second, &mut b2, TRIM.ttl_secs)
        .await
        .expect("B takes the second node's handover");
    assert_eq!(again.copied, 0, "the second node finds nothing missing");
    assert_eq!(again.base, last);
    // A third node, later: its read finds nothing above B's history.
    let mut b3 = b.node().await;
    let third = handover::take(&settings, &keys, &a.client(), &mut b3)
        .await
        .expect("the third node's read");
    assert!(third.is_none(), "nothing left to hand over");

    // Per channel stream, B holds what A holds: the same ids, records, in order.
    let mut on_b = b.node().await;
    let mut on_a_read = a.node().await;
    let mut copied_ids = Vec::new();
    for ch in CHANNELS {
        let on_a_stream = xrange(&mut on_a_read, &keys.history(ch)).await;
        let on_b_stream = xrange(&mut on_b, &keys.history(ch)).await;
        assert_eq!(
            on_b_stream, on_a_stream,
            "channel {ch}: B holds A's history"
        );
        let got: Vec<u64> = on_b_stream.iter().map(|(id, _)| seq(id)).collect();
        assert_increasing(&got, ch);
        let sent: Vec<u64> = acked
            .iter()
            .zip(1..)
            .filter(|(_, i)| event(*i).channel == ch)
            .map(|(x, _)| x.seq)
            .collect();
        assert_eq!(got, sent, "channel {ch}: every acknowledged id, in order");
        copied_ids.extend(got.into_iter().filter(|s| *s > synced_last));
    }
    copied_ids.sort_unstable();
    assert_eq!(copied_ids, ids[SYNCED as usize..].to_vec(), "the 40 ids");
    // The head's timeline and the head.
    assert_eq!(
        xrange(&mut on_b, &keys.raises()).await,
        xrange(&mut on_a_read, &keys.raises()).await,
        "B holds A's head raises"
    );
    let head = |con: &mut MultiplexedConnection| {
        let key = keys.head();
        let mut con = con.clone();
        async move {
            redis::cmd("HGETALL")
                .arg(key)
                .query_async::<Vec<String>>(&mut con)
                .await
                .expect("the head")
        }
    };
    assert_eq!(
        head(&mut on_b).await,
        head(&mut on_a_read).await,
        "B's head is A's"
    );

    // Nothing reported lost: not to a node that handed out ids up to A's last, nor to a
    // resume from any id B had before.
    assert!(
        !report(&mut on_b, &keys, last).await.expect("report"),
        "ids up to A's last are not lost"
    );
    let log = read_after(&mut on_b, &keys, synced_last).await;
    assert!(log.lost.is_empty(), "lost ranges: {:?}", log.lost);
    let (base, start) = log.epoch.expect("B's epoch");
    assert_eq!(base, last, "B's history complete up to A's last id");
    assert!(start >= last);
    let resumed: usize = log.channels.iter().map(|c| c.entries.len()).sum();
    assert_eq!(resumed as u64, AFTER, "a resume from the 60th gets the 40");
    assert_eq!(log.raises.len() as u64, raises_after);

    // A later append on B gets ids above all of them.
    let later = append_above(&mut on_b, &keys, TRIM, last, &[event(101), event(102)])
        .await
        .expect("append on B");
    assert!(
        later[0].seq > last && later[1].seq > later[0].seq,
        "{later:?}"
    );
    let after_copy = handover::take(&settings, &keys, &a.client(), &mut b3)
        .await
        .expect("a read after appends on B");
    assert!(
        after_copy.is_none(),
        "nothing to hand over once B is in use"
    );
    eprintln!(
        "handover: {AFTER} events and {raises_after} head raises ({} in all) copied from A to B, up to id {last}; the second node copied {}; B's next id {}",
        handed.copied, again.copied, later[0].seq
    );
}

#[tokio::test]
async fn a_killed_master_is_not_copied_from_and_its_loss_is_reported() {
    let Some(Split {
        mut a,
        b,
        keys,
        acked,
    }) = split("killed").await
    else {
        return;
    };
    let last = acked.last().expect("acked").seq;
    let synced_last = acked[SYNCED as usize - 1].seq;
    let client = a.client();
    a.kill();
    let mut on_b = b.node().await;
    let taken = handover::take(&settings(), &keys, &client, &mut on_b)
        .await
        .expect("a read that finds A gone");
    assert!(taken.is_none(), "nothing copied from a killed master");
    // A node that handed out ids up to A's last reports them: the 40 are lost, and a
    // resume from among them is answered recovered: false.
    assert!(
        report(&mut on_b, &keys, last).await.expect("report"),
        "the 40 are reported lost"
    );
    let log = read_after(&mut on_b, &keys, synced_last).await;
    assert_eq!(log.lost, vec![(synced_last, last)], "the lost range");
    let (base, start) = log.epoch.expect("B's epoch");
    assert_eq!(base, synced_last);
    assert!(start > last);
    assert!(
        log.channels.iter().all(|c| c.entries.is_empty()),
        "none of the 40 on B"
    );
}

#[tokio::test]
async fn a_server_that_was_not_the_predecessor_is_not_copied_from() {
    // C, a master with a history of its own (not the one B was promoted from), is never
    // copied to B.
    let Some(Split { a: _a, b, keys, .. }) = split("unrelated").await else {
        return;
    };
    let Some(c) = redis_server() else {
        return;
    };
    let mut on_c = c.node().await;
    publish(&mut on_c, &keys, 1, 10).await;
    let mut on_b = b.node().await;
    let taken = handover::take(&settings(), &keys, &c.client(), &mut on_b)
        .await
        .expect("a read");
    assert!(taken.is_none(), "C is not B's predecessor");
}

#[tokio::test]
async fn an_empty_master_after_a_jump_counts_every_id_handed_out_as_lost_and_issues_above_them() {
    // Sentinel can promote a server that holds nothing (one that came back empty and
    // was still listed as a replica). The nodes have handed out ids above the clock (an
    // earlier failover jumped them by 10^9): the new sequence must start above them, and
    // they must read as lost, so that a resume across them is recovered: false, never a
    // silent gap.
    let Some(b) = redis_server() else {
        return;
    };
    let keys = Keys::new("test:empty:");
    let mut on_b = b.node().await;
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let floor = clock + 3_000_000_000;
    assert!(
        report(&mut on_b, &keys, floor).await.expect("report"),
        "ids handed out on the lost history are reported lost"
    );
    let got = append_above(&mut on_b, &keys, TRIM, floor, &[event(1), event(2)])
        .await
        .expect("append");
    let ids: Vec<u64> = got.iter().map(|a| a.seq).collect();
    assert!(
        ids.iter().all(|id| *id > floor),
        "{ids:?} not above {floor}"
    );
    assert_increasing(&ids, "the empty master");
    let resumed_from = floor - 10;
    let log = read_after(&mut on_b, &keys, resumed_from).await;
    assert!(
        log.lost
            .iter()
            .any(|(lo, hi)| *lo < resumed_from && *hi >= floor),
        "a resume from below the highest id handed out crosses a lost range: {:?}",
        log.lost
    );
    assert!(
        log.first.is_some_and(|f| f > floor),
        "the first id this master issued is above every id handed out: {:?}",
        log.first
    );
    // A second node that had handed out more of the lost history reaches the master
    // later: its ids are above anything this master issued, so they are lost too, and
    // no one is given them again.
    let last_here = *ids.last().expect("ids");
    let second = last_here + 2_000_000_000;
    assert!(
        report(&mut on_b, &keys, second).await.expect("report"),
        "the second node's ids are reported lost"
    );
    let again = append_above(&mut on_b, &keys, TRIM, floor, &[event(3)])
        .await
        .expect("append");
    assert!(
        again[0].seq > second,
        "an append by the first node goes above the second's ids: {} <= {second}",
        again[0].seq
    );
    let log = read_after(&mut on_b, &keys, last_here).await;
    assert!(
        log.lost.contains(&(last_here, second)),
        "(last issued here, second node's highest] is lost: {:?}",
        log.lost
    );
    // A node that handed out only ids this master issued reports nothing lost.
    assert!(
        !report(&mut on_b, &keys, again[0].seq)
            .await
            .expect("report"),
        "ids this master issued are not lost"
    );
}
