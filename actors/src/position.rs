//! Message ids and their place in the one sequence (PROTOCOL.md section 5, "Message ids
//! and order"): a published event's id `X` sits at (X, 0); a `confirmations` release
//! `B.E` (event `E` released by the arrival of block event `B`) sits at (B, E).

use std::fmt;

/// A place in the sequence. Ordered as the frames of one connection are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The sequence number of the event, or of the block event that released it.
    pub major: u64,
    /// 0 for an event at its own id; the released event's id for a release `B.E`.
    pub minor: u64,
}

impl Position {
    /// The place of the event published with sequence number `seq`.
    pub fn event(seq: u64) -> Position {
        Position {
            major: seq,
            minor: 0,
        }
    }

    /// The place of event `event` released by block event `block`.
    pub fn release(block: u64, event: u64) -> Position {
        Position {
            major: block,
            minor: event,
        }
    }

    /// Whether this is a release `B.E` rather than an event at its own id.
    pub fn is_release(self) -> bool {
        self.minor != 0
    }

    /// Reads a message id as clients send it back: `"X"` or `"B.E"`, decimal digits only.
    /// `None` for anything else (signs, spaces, empty parts, numbers past u64, `E >= B`).
    pub fn parse(id: &str) -> Option<Position> {
        fn number(s: &str) -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        match id.split_once('.') {
            None => number(id).filter(|n| *n > 0).map(Position::event),
            Some((b, e)) => {
                let (b, e) = (number(b)?, number(e)?);
                (e > 0 && e < b).then(|| Position::release(b, e))
            }
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{}", self.major)
        } else {
            write!(f, "{}.{}", self.major, self.minor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn ids_round_trip_and_order_as_the_sequence() {
        let a = Position::parse("17").map(|p| p.to_string());
        assert_eq!(a.as_deref(), Some("17"));
        let r = Position::parse("20.17");
        assert_eq!(r, Some(Position::release(20, 17)));
        assert_eq!(r.map(|p| p.to_string()).as_deref(), Some("20.17"));
        assert!(Position::event(20) < Position::release(20, 17));
        assert!(Position::release(20, 17) < Position::release(20, 18));
        assert!(Position::release(20, 18) < Position::event(21));
    }

    #[test]
    fn garbage_is_not_an_id() {
        for bad in [
            "",
            "x",
            "-1",
            "+1",
            " 1",
            "1.",
            ".1",
            "1.2.3",
            "0",
            "5.5",
            "5.7",
            "5.0",
            "99999999999999999999999",
            "1e3",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }
}
