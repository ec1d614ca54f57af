//! The Redis engine's log: the keys it uses under its prefix, and the one atomic append
//! (`append.lua`: sequence, head, stream append with trimming, announcement) that every
//! node runs for a batch (PROTOCOL.md section 11).
//!
//! Tested against a real `redis-server` (`tests/redis_log.rs`); the engine that uses it
//! is [`super::RedisEngine`].

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

/// The append script, loaded once per process; Redis caches it by its SHA1.
static APPEND: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(concat!(
        include_str!("epoch.lua"),
        include_str!("append.lua")
    ))
});

/// The report script (a node's highest id, on a new connection), loaded once per process.
static REPORT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(concat!(
        include_str!("epoch.lua"),
        include_str!("report.lua")
    ))
});

/// The names of the Redis keys and pub/sub channels of one cluster, under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (for example `rustorium:`), so that several clusters or other
    /// applications can share one Redis.
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The one sequence counter.
    pub fn sequence(&self) -> String {
        format!("{}seq", self.prefix)
    }

    /// The chain head: a hash of `number` and `by` (the sequence number that raised it).
    pub fn head(&self) -> String {
        format!("{}head", self.prefix)
    }

    /// A channel's history stream; entry ids are `SEQ-0`.
    pub fn history(&self, channel: &str) -> String {
        format!("{}h:{channel}", self.prefix)
    }

    /// The pub/sub channel announcing a channel's events, which a node subscribes to
    /// while it has subscribers on that channel.
    pub fn events(&self, channel: &str) -> String {
        format!("{}e:{channel}", self.prefix)
    }

    /// The broker channel an events pub/sub channel announces ([`Keys::events`] read
    /// back); `None` for any other name.
    pub fn channel_of<'a>(&self, pubsub_channel: &'a str) -> Option<&'a str> {
        pubsub_channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("e:")
    }

    /// The cluster's nodes: a hash of node name → its last record ([`super::nodes`]).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// An API key's connection slots across the cluster (by the key's configured name).
    pub fn slots(&self, key_name: &str) -> String {
        format!("{}slots:{key_name}", self.prefix)
    }

    /// The head's timeline: a stream of the raises, entry id `SEQ-0`, field `n`.
    pub fn raises(&self) -> String {
        format!("{}raises", self.prefix)
    }

    /// The first sequence number the cluster issued.
    pub fn first(&self) -> String {
        format!("{}first", self.prefix)
    }

    /// The master's epoch: a hash of `replid`, `base` and `start` (`epoch.lua`).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The ranges of ids lost in failovers: a sorted set of `"LO HI"` (`epoch.lua`).
    pub fn lost(&self) -> String {
        format!("{}lost", self.prefix)
    }

    /// The index of the channels' history streams: a sorted set of their key names scored
    /// by the second of their last append, for the handover after a failover
    /// ([`super::handover`]), which copies what the old master has and the new one lacks.
    pub fn streams(&self) -> String {
        format!("{}streams", self.prefix)
    }

    /// The pub/sub channel on which node `node` sends itself its liveness probes.
    pub fn probe(&self, node: &str) -> String {
        format!("{}probe:{node}", self.prefix)
    }

    /// A parked subscription (a hash of its key name and record), living for the window.
    pub fn parked(&self, id: &str) -> String {
        format!("{}parked:{id}", self.prefix)
    }

    /// The pub/sub channel announcing head raises, which every node subscribes to.
    pub fn head_raises(&self) -> String {
        format!("{}heads", self.prefix)
    }
}

/// One event to append: its channel, its record (opaque text, stored and announced as
/// is), and for the chain head its block number and whether it is a `blocks` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The channel.
    pub channel: String,
    /// What is stored and announced.
    pub record: String,
    /// The block it names, if any.
    pub block: Option<u64>,
    /// A `blocks` event: it may raise the chain head.
    pub is_block: bool,
}

/// What the append gave one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number, one cluster-wide sequence.
    pub seq: u64,
    /// The head it raised the chain to, if it did.
    pub raised: Option<u64>,
}

/// The bounds the append trims each channel stream by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Most entries kept per channel (Redis trims approximately, never below this).
    pub max_len: u64,
    /// Seconds a channel's stream lives after its last append.
    pub ttl_secs: u64,
}

/// Appends `entries` in one atomic step: each gets the next sequence number, in order.
/// An empty batch does nothing.
pub async fn append<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    trim: Trim,
    entries: &[LogEntry],
) -> RedisResult<Vec<Appended>> {
    append_above(con, keys, trim, 0, entries).await
}

/// [`append`] by a node that handed out ids up to `floor`: every new id is above it, also
/// on a master promoted after a failover that lost some of them (`epoch.lua`), and a
/// `floor` among the lost ids marks them lost.
pub async fn append_above<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    trim: Trim,
    floor: u64,
    entries: &[LogEntry],
) -> RedisResult<Vec<Appended>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = APPEND.prepare_invoke();
    call.key(keys.sequence())
        .key(keys.head())
        .key(keys.raises())
        .key(keys.first())
        .key(keys.epoch())
        .key(keys.lost())
        .key(keys.streams());
    // Where a new sequence starts: the clock in microseconds, as the memory engine does.
    let start = super::record::unix_ms_now().saturating_mul(1000);
    call.arg(trim.max_len)
        .arg(trim.ttl_secs.max(1))
        .arg(keys.head_raises())
        .arg(start)
        .arg(floor);
    for e in entries {
        call.key(keys.history(&e.channel));
        call.arg(keys.events(&e.channel))
            .arg(&e.record)
            .arg(e.block.map(|b| b.to_string()).unwrap_or_default())
            .arg(if e.is_block { "1" } else { "0" });
    }
    let raw: Vec<(u64, String)> = call.invoke_async(con).await?;
    Ok(raw
        .into_iter()
        .map(|(seq, raised)| Appended {
            seq,
            raised: raised.parse().ok(),
        })
        .collect())
}

/// Tells the master the highest id this node handed out (`report.lua`, when its pub/sub
/// connection starts): true when ids up to it were lost in a failover.
pub async fn report<C: ConnectionLike>(con: &mut C, keys: &Keys, floor: u64) -> RedisResult<bool> {
    let mut call = REPORT.prepare_invoke();
    call.key(keys.sequence())
        .key(keys.first())
        .key(keys.epoch())
        .key(keys.lost());
    call.arg(super::record::unix_ms_now().saturating_mul(1000))
        .arg(floor);
    let lost: i64 = call.invoke_async(con).await?;
    Ok(lost == 1)
}

/// A channel's stored records after sequence number `after` and up to `upto`, oldest
/// first, at most `limit` of them: `(seq, record)`. Entries whose id or fields are not the
/// append's are skipped.
pub async fn read<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    channel: &str,
    after: u64,
    upto: u64,
    limit: usize,
) -> RedisResult<Vec<(u64, String)>> {
    if upto <= after || limit == 0 {
        return Ok(Vec::new());
    }
    // `(` makes the start exclusive (Redis 6.2 and later).
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.history(channel))
        .arg(format!("({after}-0"))
        .arg(format!("{upto}-0"))
        .arg("COUNT")
        .arg(limit)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let seq = id.strip_suffix("-0")?.parse().ok()?;
            let (_, record) = fields.into_iter().find(|(f, _)| f == "r")?;
            Some((seq, record))
        })
        .collect())
}

/// The read script, loaded once per process.
static READ: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("read.lua")));

/// What [`read_log`] reads: each channel after its own sequence number, all of them and
/// the head's timeline up to one bound, in one consistent step.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// The head's timeline is read after this sequence number (and the last raise at or
    /// before it is the base).
    pub after: u64,
    /// Everything is read up to this sequence number; `None`: to the end.
    pub upto: Option<u64>,
    /// Most entries read per stream.
    pub limit: usize,
    /// A release's `B` to look up among the raises.
    pub release: Option<u64>,
    /// The channels, each read after its own sequence number.
    pub channels: Vec<(String, u64)>,
}

/// One channel as [`read_log`] found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelLog {
    /// Every entry with a smaller sequence number may have been trimmed (0: none was).
    pub kept_from: u64,
    /// `(seq, record)`, oldest first.
    pub entries: Vec<(u64, String)>,
}

/// What [`read_log`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The last sequence number issued (`None`: none yet).
    pub last: Option<u64>,
    /// The first the cluster issued.
    pub first: Option<u64>,
    /// Whether the release's `B` asked about is a raise still kept.
    pub release_known: bool,
    /// The last raise at or before `after`: `(seq, block)`.
    pub base: Option<(u64, u64)>,
    /// The raises in the range: `(seq, block)`, in order.
    pub raises: Vec<(u64, u64)>,
    /// Per channel asked, in order.
    pub channels: Vec<ChannelLog>,
    /// The master's epoch: its history ends at `base`, its ids start above `start`; ids
    /// between were issued by an old master and are lost (`epoch.lua`).
    pub epoch: Option<(u64, u64)>,
    /// Ranges `(lo, hi]` of ids that nodes handed out and a failover lost.
    pub lost: Vec<(u64, u64)>,
}

fn entry_seq(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

type RawEntry = (String, Vec<String>);
type RawRead = (
    String,
    String,
    i64,
    Vec<String>,
    Vec<RawEntry>,
    Vec<(String, Vec<RawEntry>)>,
    Vec<String>,
    Vec<String>,
);

/// Reads channels' histories and the head's timeline in one atomic step (`read.lua`), for a
/// replay or a node's backfill. Entries that are not the append's are skipped.
pub async fn read_log<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    q: &LogQuery,
) -> RedisResult<LogRead> {
    let mut call = READ.prepare_invoke();
    call.key(keys.sequence())
        .key(keys.first())
        .key(keys.raises())
        .key(keys.epoch())
        .key(keys.lost());
    call.arg(q.after)
        .arg(q.upto.map_or_else(|| "+".to_string(), |u| u.to_string()))
        .arg(q.limit.max(1))
        .arg(q.release.map(|b| b.to_string()).unwrap_or_default());
    for (channel, after) in &q.channels {
        call.key(keys.history(channel));
        call.arg(*after);
    }
    let (last, first, known, base, raises, channels, epoch, lost): RawRead =
        call.invoke_async(con).await?;
    let raise = |(id, fields): &RawEntry| -> Option<(u64, u64)> {
        Some((entry_seq(id)?, fields.get(1)?.parse().ok()?))
    };
    Ok(LogRead {
        last: last.parse().ok(),
        first: first.parse().ok(),
        release_known: known == 1,
        base: match base.as_slice() {
            [id, n] => Some((
                entry_seq(id).unwrap_or_default(),
                n.parse().unwrap_or_default(),
            )),
            _ => None,
        },
        raises: raises.iter().filter_map(raise).collect(),
        channels: channels
            .into_iter()
            .map(|(kept, entries)| ChannelLog {
                kept_from: entry_seq(&kept).unwrap_or_default(),
                entries: entries
                    .into_iter()
                    .filter_map(|(id, mut fields)| {
                        let seq = entry_seq(&id)?;
                        (fields.len() == 2 && fields[0] == "r").then_some(())?;
                        Some((seq, fields.pop()?))
                    })
                    .collect(),
            })
            .collect(),
        epoch: match epoch.as_slice() {
            [b, s] => b.parse().ok().zip(s.parse().ok()),
            _ => None,
        },
        lost: lost
            .iter()
            .filter_map(|m| {
                let (lo, hi) = m.split_once(' ')?;
                Some((lo.parse().ok()?, hi.parse().ok()?))
            })
            .collect(),
    })
}

/// An announcement read from a channel's pub/sub channel: `SEQ RAISED RECORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// The event's sequence number.
    pub seq: u64,
    /// The head it raised, if it did.
    pub raised: Option<u64>,
    /// Its record.
    pub record: &'a str,
}

/// Reads an announcement; `None` when it is not one (never trusted further).
pub fn parse_announcement(text: &str) -> Option<Announcement<'_>> {
    let mut parts = text.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let raised = match parts.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    let record = parts.next()?;
    Some(Announcement {
        seq,
        raised,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_and_garbage_does_not() {
        let a = parse_announcement("42 - {\"x\": 1}").unwrap();
        assert_eq!((a.seq, a.raised, a.record), (42, None, "{\"x\": 1}"));
        let b = parse_announcement("43 18446744073709551615 r e c").unwrap();
        assert_eq!((b.raised, b.record), (Some(u64::MAX), "r e c"));
        for bad in ["", "x - r", "1 y r", "1 -", "18446744073709551616 - r"] {
            assert_eq!(parse_announcement(bad), None, "{bad:?}");
        }
    }
}
