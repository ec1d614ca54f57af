//! How the Redis engine writes an event into Redis and reads it back: one compact JSON
//! record, `{"k": type, "b": block or null, "t": unix ms appended, "d": data}`, stored in
//! the channel's stream and carried by its announcement. The channel comes from the
//! stream or pub/sub channel name, the sequence number from the entry id, and a head
//! raise from the announcement, so none of them is repeated in the record.
//!
//! Records come from Redis, which other nodes write: a record that does not decode is
//! skipped by the caller, never trusted further.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::Stored;

#[derive(Serialize)]
struct RecordOut<'a> {
    k: &'a str,
    b: Option<u64>,
    t: u64,
    d: &'a RawValue,
}

#[derive(Deserialize)]
struct RecordIn {
    k: Box<str>,
    b: Option<u64>,
    t: u64,
    d: Box<RawValue>,
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The record of an event of type `kind` naming `block`, whose data is `data`, appended
/// at `unix_ms`.
pub fn encode(kind: &str, block: Option<u64>, data: &RawValue, unix_ms: u64) -> String {
    let out = RecordOut {
        k: kind,
        b: block,
        t: unix_ms,
        d: data,
    };
    // Serializing strings, numbers and already-valid JSON text cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// The stored event behind `record`, sequenced as `seq` on `channel`, which raised the
/// head to `raises_head`; its append time is mapped onto this process's clock (`now`
/// is `unix_now_ms`). `None` when the record does not decode.
pub fn decode(
    seq: u64,
    channel: Arc<str>,
    raises_head: Option<u64>,
    record: &str,
    now: Instant,
    unix_now_ms: u64,
) -> Option<Stored> {
    let r: RecordIn = serde_json::from_str(record).ok()?;
    let age = Duration::from_millis(unix_now_ms.saturating_sub(r.t));
    Some(Stored {
        seq,
        channel,
        kind: r.k,
        data: r.d,
        block: r.b,
        raises_head,
        appended: now.checked_sub(age).unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_its_age_carries_over() {
        let data = RawValue::from_string(r#"{"number":7,"hash":"0xab"}"#.into()).unwrap();
        let text = encode("new_block", Some(7), &data, 1_000_000);
        let now = Instant::now();
        let s = decode(42, Arc::from("blocks"), Some(7), &text, now, 1_000_250).unwrap();
        assert_eq!(s.seq, 42);
        assert_eq!(&*s.channel, "blocks");
        assert_eq!(&*s.kind, "new_block");
        assert_eq!(s.data.get(), r#"{"number":7,"hash":"0xab"}"#);
        assert_eq!((s.block, s.raises_head), (Some(7), Some(7)));
        assert_eq!(now.duration_since(s.appended), Duration::from_millis(250));
    }

    #[test]
    fn what_does_not_decode_is_none() {
        let now = Instant::now();
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"k":1,"b":null,"t":0,"d":{}}"#,
            r#"{"k":"x","b":-1,"t":0,"d":1}"#,
        ] {
            assert!(
                decode(1, Arc::from("c"), None, bad, now, 0).is_none(),
                "{bad}"
            );
        }
        // A record from the future (another node's clock ahead) is not older than now.
        let data = RawValue::from_string("1".into()).unwrap();
        let s = decode(
            1,
            Arc::from("c"),
            None,
            &encode("update", None, &data, 5_000),
            now,
            0,
        );
        assert_eq!(s.map(|s| s.appended), Some(now));
    }
}
