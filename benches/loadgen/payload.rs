//! The events the load generator publishes: a JSON object carrying a sequence number and a
//! send timestamp, padded to a fixed size, and the cheap scan that finds both in a
//! delivered frame without building a JSON tree.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The payload of event `seq`, stamped `ts` (nanoseconds since the generator's epoch),
/// padded with `x` to `size` bytes (never shorter than its two numbers need).
pub fn payload(seq: u64, ts: u64, size: usize) -> String {
    payload_with(seq, ts, size, "")
}

/// [`payload`] with more members (`"k":v,` each, trailing comma) before the padding: the
/// routing fields of a channel that needs them. They count towards `size`.
pub fn payload_with(seq: u64, ts: u64, size: usize, fields: &str) -> String {
    let mut out = Vec::with_capacity(size.max(64 + fields.len()));
    write_payload(&mut out, seq, ts, size, fields);
    // Only ASCII digits, the fields' text and constant ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`payload_with`]'s text to `out` without allocating.
pub fn write_payload(out: &mut Vec<u8>, seq: u64, ts: u64, size: usize, fields: &str) {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    out.push(b',');
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(b"\"pad\":\"");
    let pad = size.saturating_sub(out.len() - start + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

/// The keys [`scan`] looks for, each searched with a finder built once.
static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static TS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"ts\":"));

fn number_after(frame: &[u8], key: &Finder<'_>) -> Option<(u64, usize)> {
    let at = key.find(frame)? + key.needle().len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut n = 0u64;
    for b in &frame[at..at + digits] {
        n = n * 10 + u64::from(b - b'0');
    }
    Some((n, at + digits))
}

/// `(seq, ts)` from a frame holding a [`payload`], or None (heartbeats, replies).
pub fn scan(frame: &[u8]) -> Option<(u64, u64)> {
    let (seq, end) = number_after(frame, &SEQ)?;
    let (ts, _) = number_after(&frame[end..], &TS)?;
    Some((seq, ts))
}
