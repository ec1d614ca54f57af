//! What one subscription saw: the publisher numbers each channel's events 1, 2, 3...,
//! so a subscription that must miss nothing sees each number exactly once, in order.

/// A subscription's sequence check.
#[derive(Debug, Default, Clone)]
pub struct Seq {
    /// The last number seen; `None` before the first (a new subscription starts where it
    /// joins).
    pub last: Option<u64>,
    /// Events seen.
    pub seen: u64,
    /// Events seen twice (or out of order, backwards).
    pub dups: u64,
    /// Events skipped (numbers jumped over).
    pub lost: u64,
}

impl Seq {
    /// Takes event number `n`.
    pub fn see(&mut self, n: u64) {
        self.seen += 1;
        match self.last {
            Some(last) if n <= last => self.dups += 1,
            Some(last) => {
                self.lost += n - last - 1;
                self.last = Some(n);
            }
            None => self.last = Some(n),
        }
    }

    /// Starts again, as a new subscription (what it saw stays counted).
    pub fn restart(&mut self) {
        self.last = None;
    }
}
