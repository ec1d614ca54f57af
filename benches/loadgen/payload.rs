//! The events the load generator publishes: a JSON object carrying a sequence number and a
//! send timestamp, padded to a fixed size, and the cheap scan that finds both in a
//! delivered frame without building a JSON tree.

use memchr::memmem;

/// The payload of event `seq`, stamped `ts` (nanoseconds since the generator's epoch),
/// padded with `x` to `size` bytes (never shorter than its two numbers need).
pub fn payload(seq: u64, ts: u64, size: usize) -> String {
    payload_with(seq, ts, size, "")
}

/// [`payload`] with more members (`"k":v,` each, trailing comma) before the padding: the
/// routing fields of a channel that needs them. They count towards `size`.
pub fn payload_with(seq: u64, ts: u64, size: usize, fields: &str) -> String {
    let mut s = String::with_capacity(size.max(64 + fields.len()));
    s.push_str("{\"seq\":");
    s.push_str(itoa::Buffer::new().format(seq));
    s.push_str(",\"ts\":");
    s.push_str(itoa::Buffer::new().format(ts));
    s.push(',');
    s.push_str(fields);
    s.push_str("\"pad\":\"");
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

fn number_after(frame: &[u8], key: &[u8]) -> Option<(u64, usize)> {
    let at = memmem::find(frame, key)? + key.len();
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
    let (seq, end) = number_after(frame, b"\"seq\":")?;
    let (ts, _) = number_after(&frame[end..], b"\"ts\":")?;
    Some((seq, ts))
}
