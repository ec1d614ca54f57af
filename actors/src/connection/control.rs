//! The budget for a connection's control frames (pings and pongs): a count per one-second
//! window; past it a frame is refused, and refusals follow the flood rule of the message
//! caps ([`super::refusals`], PROTOCOL.md decision 7).

use std::time::{Duration, Instant};

use super::refusals::Refusals;

/// The window the cap counts in.
const WINDOW: Duration = Duration::from_secs(1);

/// What to do with one control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the cap: answer it as usual.
    Answer,
    /// Over the cap: no pong, nothing else.
    Ignore,
    /// Refused more times than the cap within the window: close 4001.
    Flooding,
}

/// Control frames counted in the current one-second window.
pub struct ControlBudget {
    per_second: u32,
    seen: u32,
    window_start: Instant,
    refused: Refusals,
}

impl ControlBudget {
    /// A budget of `per_second` frames (`limits.max_control_frames_per_second`).
    pub fn new(per_second: u32, now: Instant) -> ControlBudget {
        ControlBudget {
            per_second,
            seen: 0,
            window_start: now,
            refused: Refusals::new(now),
        }
    }

    /// The cap, frames per second.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts one control frame arriving at `now`.
    pub fn count(&mut self, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(1);
        if self.seen <= self.per_second {
            Verdict::Answer
        } else if self.refused.refuse(self.per_second, WINDOW, now) {
            Verdict::Flooding
        } else {
            Verdict::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_cap_ignores_past_it_and_flags_a_flood() {
        let t0 = Instant::now();
        let mut b = ControlBudget::new(3, t0);
        let verdicts: Vec<Verdict> = (0..7).map(|_| b.count(t0)).collect();
        // Three answered, three refused (no more than the cap), the fourth refusal floods.
        assert_eq!(
            verdicts,
            [
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Ignore,
                Verdict::Ignore,
                Verdict::Ignore,
                Verdict::Flooding
            ]
        );
        // A new window starts afresh.
        assert_eq!(b.count(t0 + Duration::from_secs(1)), Verdict::Answer);
    }
}
