//! The reconnect policy: exponential backoff with jitter, as both API documents ask.

use std::time::Duration;

/// How long to wait before each reconnect attempt: `initial` for the first, doubling after
/// each failed attempt, never more than `max`; each wait is stretched by a random share of
/// up to `jitter` (0.2: up to 20 % longer, still at most `max`) so that many clients dropped
/// at once do not come back at once. A connection that was up at least `initial` and ended
/// by a drop the broker means to be resumed (4004, 4005, 1001, 1013, or no close frame)
/// is resumed at once, without a wait, and the doubling starts again.
///
/// ```
/// use std::time::Duration;
/// use rustorium_sdk::Backoff;
///
/// let b = Backoff::default();
/// let waits: Vec<u64> = (0..7).map(|n| b.delay(n, 0.0).as_secs()).collect();
/// assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
/// // With the largest random draw a wait is 20 % longer, and still at most 30 s.
/// assert_eq!(b.delay(0, 1.0), Duration::from_millis(1200));
/// assert_eq!(b.delay(4, 1.0), Duration::from_millis(19_200));
/// assert_eq!(b.delay(5, 1.0), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first wait (default 1 s).
    pub initial: Duration,
    /// The longest wait (default 30 s).
    pub max: Duration,
    /// The random stretch of each wait, from 0.0 (none) to 1.0 (default 0.2).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1` after `failures` failed attempts in a row, for
    /// a random draw `r` in `[0, 1)`.
    pub fn delay(&self, failures: u32, r: f64) -> Duration {
        let doubled = self
            .initial
            .checked_mul(2u32.saturating_pow(failures.min(31)))
            .unwrap_or(self.max)
            .min(self.max);
        let stretch = 1.0 + self.jitter.clamp(0.0, 1.0) * r.clamp(0.0, 1.0);
        doubled.mul_f64(stretch).min(self.max)
    }

    /// [`Backoff::delay`] with a fresh random draw.
    pub fn next_delay(&self, failures: u32) -> Duration {
        self.delay(failures, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_thirty() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..7).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(1000, 0.99), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stretches_by_at_most_its_share() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(1100));
        assert!(b.delay(3, 0.999) < Duration::from_millis(9600));
    }
}
