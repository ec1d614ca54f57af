//! Refusals counted per cap period, for the flood rule of PROTOCOL.md decision 7: a client
//! refused more times than its cap within one period is flooding, and is closed 4001. The
//! message caps (`requests.rs`) and the ping cap (`control.rs`) both count with it.

use std::time::{Duration, Instant};

/// One connection's refusals under one cap, in the current period.
pub struct Refusals {
    count: u32,
    since: Instant,
}

impl Refusals {
    /// None yet; the first period starts at `now`.
    pub fn new(now: Instant) -> Refusals {
        Refusals {
            count: 0,
            since: now,
        }
    }

    /// Counts one refusal at `now` under a cap of `cap` per `period`; true when this
    /// period's refusals now exceed the cap (the client is flooding).
    pub fn refuse(&mut self, cap: u32, period: Duration, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) >= period {
            self.since = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count > cap
    }
}
