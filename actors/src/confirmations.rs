//! The `confirmations` gate (PROTOCOL.md section 5): when an event that names block N
//! reaches a subscription asking for k confirmations, what a hub holds back until then,
//! and which held events a rise of the chain head releases, as `B.E`.
//!
//! Live delivery (the hubs) and replay ([`crate::resume`]) both decide with
//! [`on_publish`] and [`releases_at`], so a replay gives the frames live delivery gave.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::Event;

/// Highest `confirmations` a filter may ask for.
pub const MAX_CONFIRMATIONS: u64 = 64;

/// What happens to an event when it is published, for one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtPublish {
    /// Delivered now, at its own id; `Some(c)` rewrites `data.confirmations` to `c`.
    Now(Option<u64>),
    /// Held until the head rises far enough.
    Held,
}

/// Decides for an event naming `block` (if any), a subscription asking for `k`, and the
/// head `head` in force just before the event.
pub fn on_publish(block: Option<u64>, k: u64, head: Option<u64>) -> AtPublish {
    let Some(n) = block.filter(|_| k > 1) else {
        return AtPublish::Now(None);
    };
    match head {
        Some(h) if n.saturating_add(k - 1) <= h => AtPublish::Now(Some((h - n).saturating_add(1))),
        _ => AtPublish::Held,
    }
}

/// Whether a held event naming block `n` is released, for `k`, by the head rising from
/// `from` to `to`; the confirmations it then has.
pub fn releases_at(n: u64, k: u64, from: Option<u64>, to: u64) -> Option<u64> {
    let needed = n.saturating_add(k.saturating_sub(1));
    let before = from.is_some_and(|h| h >= needed);
    (!before && to >= needed).then(|| (to - n).saturating_add(1))
}

/// A hub's held events of recent blocks, kept whether or not a subscription waits on
/// them now (a resumed one may), bounded in count.
#[derive(Debug, Default)]
pub struct Gate {
    /// The head as this hub has processed it.
    pub head: Option<u64>,
    /// Events by the block they name, in sequence order within a block.
    held: BTreeMap<u64, Vec<Arc<Event>>>,
    len: usize,
}

impl Gate {
    /// Holds an event naming a block; returns how many were dropped over `max`.
    pub fn hold(&mut self, event: Arc<Event>, max: usize) -> usize {
        let Some(n) = event.block else { return 0 };
        if let Some(h) = self.head {
            if n.saturating_add(MAX_CONFIRMATIONS - 1) <= h {
                return 0;
            }
        }
        self.held.entry(n).or_default().push(event);
        self.len += 1;
        let mut dropped = 0;
        while self.len > max {
            let Some((_, old)) = self.held.pop_first() else {
                break;
            };
            self.len -= old.len();
            dropped += old.len();
        }
        dropped
    }

    /// Held events that the head rising from `from` to `to` can release for some k (of
    /// blocks N with `from` < N + 63 and N <= `to`), with their block, in block order.
    pub fn candidates(&self, from: Option<u64>, to: u64) -> impl Iterator<Item = &Arc<Event>> {
        let lo = from.map_or(0, |h| h.saturating_sub(MAX_CONFIRMATIONS - 2));
        self.held.range(lo..=to).flat_map(|(_, v)| v.iter())
    }

    /// Drops what every k has released once the head is `head`.
    pub fn trim(&mut self, head: u64) {
        let Some(keep_from) = (head + 2).checked_sub(MAX_CONFIRMATIONS) else {
            return;
        };
        let kept = self.held.split_off(&keep_from);
        let gone = std::mem::replace(&mut self.held, kept);
        self.len -= gone.values().map(Vec::len).sum::<usize>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_at_the_ends_of_u64_neither_overflow_nor_wrap() {
        // A publisher controls both numbers: block 0 under a head at u64::MAX has more
        // confirmations than u64 counts; it saturates.
        assert!(matches!(
            on_publish(Some(0), 2, Some(u64::MAX)),
            AtPublish::Now(Some(u64::MAX))
        ));
        assert_eq!(releases_at(0, 2, Some(0), u64::MAX), Some(u64::MAX));
        // The block a subscription waits for saturates at u64::MAX, which the head reaches.
        assert!(matches!(
            on_publish(Some(u64::MAX), u64::MAX, Some(u64::MAX)),
            AtPublish::Now(Some(1))
        ));
        assert_eq!(releases_at(u64::MAX, 2, None, u64::MAX), Some(1));
    }

    #[test]
    fn k_one_and_unnamed_blocks_are_immediate() {
        assert_eq!(on_publish(Some(5), 1, None), AtPublish::Now(None));
        assert_eq!(on_publish(None, 3, Some(9)), AtPublish::Now(None));
    }

    #[test]
    fn deep_enough_is_immediate_with_its_confirmations_else_held() {
        assert_eq!(on_publish(Some(5), 3, Some(7)), AtPublish::Now(Some(3)));
        assert_eq!(on_publish(Some(5), 3, Some(6)), AtPublish::Held);
        assert_eq!(on_publish(Some(5), 3, None), AtPublish::Held);
    }

    #[test]
    fn each_rise_releases_once() {
        assert_eq!(releases_at(5, 3, Some(6), 7), Some(3));
        assert_eq!(releases_at(5, 3, Some(7), 8), None);
        assert_eq!(releases_at(5, 3, None, 9), Some(5));
        assert_eq!(releases_at(5, 3, Some(5), 6), None);
    }
}
