//! The handover after a failover (docs/PROTOCOL.md decision 50): what the old master
//! acknowledged and its successor lacks is copied to the successor, with its ids, before
//! this node uses the new master.
//!
//! Why. Sentinel promotes a replica without waiting for it to catch up, also in a planned
//! failover (`SENTINEL FAILOVER`: `REPLICAOF NO ONE` to the replica, no pause of the
//! master), and it turns the old master into a replica only well after the switch (at
//! least four times its 2 s publish period; about 20 s with Redis 7.0 in the tests). Until
//! then the old master still holds every event
//! it acknowledged, including the last ones its replica had not received. So a node that
//! follows a failover and can still reach the old master:
//!
//! 1. checks that the new master was promoted from the old one's history (the new
//!    master's `master_replid2` is the old one's `master_replid`; a server that has
//!    resynced from the new master, or any other, is left alone);
//! 2. pauses writes on the old master, if it is still a master (`CLIENT PAUSE
//!    engine.handover_pause_ms WRITE`): a node that has not noticed the failover yet gets
//!    no more acknowledgements from it (its appends wait, time out and answer
//!    `unavailable`), so nothing more is acknowledged and thrown away;
//! 3. reads on the old master, in one read-only script (`handover_read.lua`), the events
//!    and head raises above the new master's history (the epoch's base) and below its
//!    jump, from every channel stream the index names (`append.lua` keeps it);
//! 4. writes them to the new master with their ids (`handover.lua`), which moves the
//!    epoch's base up: resumes across them are complete, nothing is marked lost. A new
//!    master that refuses writes meanwhile (`min-replicas-to-write` before it has a
//!    replica) is not used until it took them: the node keeps what it read and tries
//!    again on each reconnect, so no append lands there before the copy.
//!
//! Every node does this when it follows a switch; the first copies, the others find
//! nothing missing. An old master that is gone (killed) is skipped after
//! `engine.connect_timeout_ms`: that loss shows as `recovered: false` as before.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script, Value};

use super::eventlog::Keys;
use crate::settings::EngineSettings;

/// The read on the old master. Sent whole with `EVAL` (it runs once per failover): a
/// `SCRIPT LOAD` would wait out the pause, which holds every command that replicates.
const READ: &str = include_str!("handover_read.lua");

/// The write on the new master, loaded once per process.
static WRITE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(concat!(
        include_str!("epoch.lua"),
        include_str!("handover.lua")
    ))
});

/// Reads of the old master's index that may find it changed under them before the handover
/// gives up (the index changes only while the old master still takes writes, which the
/// pause stops: a second read normally agrees).
const INDEX_READS: usize = 3;

/// What a handover did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    /// Events and head raises copied to the new master.
    pub copied: u64,
    /// The new master's epoch base after it: its history is complete up to here.
    pub base: u64,
}

/// A field of `INFO replication`.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn replication(con: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("INFO").arg("replication").query_async(con).await
}

/// One entry of `XRANGE` as the scripts return it: its sequence number and its one value.
fn entry(v: &Value) -> Option<(u64, String)> {
    let Value::Array(parts) = v else { return None };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let seq = std::str::from_utf8(id)
        .ok()?
        .strip_suffix("-0")?
        .parse()
        .ok()?;
    let [_, Value::BulkString(value)] = fields.as_slice() else {
        return None;
    };
    Some((seq, String::from_utf8(value.clone()).ok()?))
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

/// What the old master holds above `after` and up to `upto`: its replication id, its
/// sequence, and `(stream number, seq, value)` in sequence order (stream 0: head raises;
/// `i`: the `i`-th of `streams`). `None` when its index kept changing.
async fn read_old(
    old: &mut MultiplexedConnection,
    keys: &Keys,
    after: u64,
    upto: u64,
    per_stream: u64,
) -> Result<Option<(String, Option<u64>, Vec<String>, Vec<(usize, u64, String)>)>, String> {
    for _ in 0..INDEX_READS {
        let streams: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.streams())
            .arg(0)
            .arg(-1)
            .query_async(old)
            .await
            .map_err(|e| format!("the old master's stream index: {e}"))?;
        let mut call = redis::cmd("EVAL");
        call.arg(READ)
            .arg(streams.len().saturating_add(4))
            .arg(keys.sequence())
            .arg(keys.raises())
            .arg(keys.head())
            .arg(keys.streams());
        for s in &streams {
            call.arg(s);
        }
        call.arg(after).arg(upto).arg(per_stream);
        let raw: Vec<Value> = call
            .query_async(old)
            .await
            .map_err(|e| format!("reading the old master: {e}"))?;
        let [replid, seq, complete, raises, per] = raw.as_slice() else {
            return Err("the old master's read answered an unexpected shape".into());
        };
        if text(complete) != "1" {
            continue;
        }
        let mut items: Vec<(usize, u64, String)> = Vec::new();
        if let Value::Array(rs) = raises {
            items.extend(rs.iter().filter_map(entry).map(|(s, v)| (0, s, v)));
        }
        if let Value::Array(per) = per {
            for (i, es) in per.iter().enumerate() {
                if let Value::Array(es) = es {
                    items.extend(es.iter().filter_map(entry).map(|(s, v)| (i + 1, s, v)));
                }
            }
        }
        items.sort_by_key(|(i, s, _)| (*s, *i != 0));
        return Ok(Some((text(replid), text(seq).parse().ok(), streams, items)));
    }
    Ok(None)
}

/// What a handover read from the old master, kept by the node until the new master took
/// it (a new master may refuse writes for a while: `min-replicas-to-write` with no
/// replica yet, until Sentinel made the old master its replica, which also wipes what the
/// old master held).
pub struct Taken {
    /// The old master's replication id: the new master must have been promoted from it.
    replid: String,
    /// Everything the old master issued up to here is in `items`.
    upto: u64,
    /// The history streams `items` name (1-based).
    streams: Vec<String>,
    /// `(stream number, seq, value)` in sequence order; stream 0: head raises.
    items: Vec<(usize, u64, String)>,
}

impl Taken {
    /// How many events and head raises it carries.
    pub fn count(&self) -> usize {
        self.items.len()
    }

    /// The old master issued every id up to here that it carries.
    pub fn upto(&self) -> u64 {
        self.upto
    }
}

/// Reads from the old master (`old`, if still reachable and the predecessor of the master
/// `new` is connected to) what it issued above the new master's history, pausing its
/// writes first. `Ok(None)`: nothing to hand over.
pub async fn take(
    settings: &EngineSettings,
    keys: &Keys,
    old: &Client,
    new: &mut MultiplexedConnection,
) -> Result<Option<Taken>, String> {
    let connect = Duration::from_millis(settings.connect_timeout_ms);
    let response = Duration::from_millis(settings.response_timeout_ms);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response));
    let new_info = replication(new)
        .await
        .map_err(|e| format!("the new master's INFO: {e}"))?;
    let (Some(replid2), Some(new_replid)) = (
        info_field(&new_info, "master_replid2"),
        info_field(&new_info, "master_replid"),
    ) else {
        return Ok(None);
    };
    // Gone (the unplanned case): nothing to copy from.
    let mut old_con = match tokio::time::timeout(
        connect.saturating_add(response),
        old.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(c)) => c,
        _ => return Ok(None),
    };
    let Ok(old_info) = replication(&mut old_con).await else {
        return Ok(None);
    };
    if info_field(&old_info, "master_replid") != Some(replid2) {
        return Ok(None);
    }
    if info_field(&old_info, "role") == Some("master") && settings.handover_pause_ms > 0 {
        let pause = settings.handover_pause_ms.max(
            settings
                .response_timeout_ms
                .saturating_add(settings.probe_interval_ms),
        );
        let paused: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(pause)
            .arg("WRITE")
            .query_async(&mut old_con)
            .await;
        if let Err(e) = paused {
            // Still copied; a node that keeps appending there may have its last
            // acknowledged events lost (said as recovered: false).
            log::warn!("Redis handover: cannot pause writes on the old master ({e}); copying anyway (the ACL user needs +client|pause)");
        }
    }
    // Where the new master's own history ends: its epoch's base once it started one (a
    // script ran there), else its sequence as replicated.
    let (epoch_replid, epoch_base, seq): (Option<String>, Option<u64>, Option<u64>) = redis::pipe()
        .cmd("HGET")
        .arg(keys.epoch())
        .arg("replid")
        .cmd("HGET")
        .arg(keys.epoch())
        .arg("base")
        .cmd("GET")
        .arg(keys.sequence())
        .query_async(new)
        .await
        .map_err(|e| format!("the new master's sequence: {e}"))?;
    let after = match epoch_replid {
        Some(r) if r == new_replid => epoch_base.unwrap_or(0),
        _ => seq.unwrap_or(0),
    };
    // No stream is read past what the handover may carry (`max_backfill_events`).
    let carried = u64::try_from(settings.max_backfill_events).unwrap_or(u64::MAX);
    let per_stream = settings
        .stream_max_len
        .min(carried.saturating_add(1))
        .max(1);
    let Some((replid, seq, streams, mut items)) =
        read_old(&mut old_con, keys, after, u64::MAX, per_stream).await?
    else {
        log::warn!("Redis handover: the old master's stream index kept changing; not copied");
        return Ok(None);
    };
    if replid != replid2 {
        return Ok(None);
    }
    // Up to where the copy is complete: the old master's sequence, and no further than
    // what a stream read cut at its bound or what the handover may carry.
    // Per stream read (0: the head's raises, then the history streams): how many
    // entries came back and the last; a stream that filled its read was cut there.
    let mut upto = seq.unwrap_or(0);
    let mut read = vec![(0u64, 0u64); streams.len() + 1];
    for (j, s, _) in &items {
        if let Some((n, last)) = read.get_mut(*j) {
            *n += 1;
            *last = (*last).max(*s);
        }
    }
    for (n, last) in read {
        if n >= per_stream {
            upto = upto.min(last);
        }
    }
    if items.len() > settings.max_backfill_events {
        if let Some((_, s, _)) = items.get(settings.max_backfill_events) {
            upto = upto.min(s.saturating_sub(1));
        }
    }
    items.retain(|(_, s, _)| *s <= upto);
    if upto <= after {
        return Ok(None);
    }
    Ok(Some(Taken {
        replid,
        upto,
        streams,
        items,
    }))
}

/// Writes what [`take`] read to the new master (`handover.lua`): what it lacks, with its
/// ids. `Err` when the new master did not take it (for example `NOREPLICAS`): the node
/// keeps `taken` and tries again before it uses the new master.
pub async fn give(
    settings: &EngineSettings,
    keys: &Keys,
    taken: &Taken,
    new: &mut MultiplexedConnection,
    ttl_secs: u64,
) -> Result<Handed, String> {
    let mut call = WRITE.prepare_invoke();
    call.key(keys.sequence())
        .key(keys.first())
        .key(keys.epoch())
        .key(keys.lost())
        .key(keys.raises())
        .key(keys.head())
        .key(keys.streams());
    for s in &taken.streams {
        call.key(s);
    }
    call.arg(super::record::unix_ms_now().saturating_mul(1000))
        .arg(&taken.replid)
        .arg(taken.upto)
        .arg(settings.stream_max_len.max(1))
        .arg(ttl_secs.max(1));
    for (i, s, v) in &taken.items {
        call.arg(*i).arg(*s).arg(v);
    }
    let (copied, base): (u64, u64) = call
        .invoke_async(new)
        .await
        .map_err(|e| format!("writing to the new master: {e}"))?;
    Ok(Handed { copied, base })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Replication\r\nrole:master\r\nmaster_replid:abc\r\nmaster_replid2:def\r\n";
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "master_replid"), Some("abc"));
        assert_eq!(info_field(info, "master_replid2"), Some("def"));
        assert_eq!(info_field(info, "master_repl"), None);
    }
}
