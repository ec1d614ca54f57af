//! One channel's share of an appended batch, as [`super::delivery::Delivery`] hands it
//! to the channel's hub: its steps, in sequence order.

use std::sync::Arc;

use crate::event::Event;

/// One thing a hub does, in sequence order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Fan this event of the hub's channel out.
    Event(Arc<Event>),
    /// The chain head rose to block `number` with the `blocks` event of sequence number
    /// `by`: release what it confirms, as `by.E`.
    Head {
        /// The new head.
        number: u64,
        /// The sequence number of the block event that raised it.
        by: u64,
    },
    /// The hub has all it will get of its channel up to here ([`crate::engine::Fed::Mark`]).
    Mark(u64),
}

impl Step {
    /// The sequence number the step sits at.
    pub fn seq(&self) -> u64 {
        match self {
            Step::Event(e) => e.seq,
            Step::Head { by, .. } => *by,
            Step::Mark(seq) => *seq,
        }
    }
}
