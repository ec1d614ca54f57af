//! A connection's outbox: the bounded queue hubs push its items into, in sequence order.
//!
//! Hubs push items and wake the connection when the queue goes from empty to non-empty;
//! the connection drains the queue in one go and writes the frames. An outbox fed by one
//! hub is drained whole. One fed by several ([`OutboxState::set_ordered`]) is drained up
//! to the node's fan-out watermark ([`Progress`]): everything below it has arrived from
//! every hub, so frames leave in sequence order across channels (PROTOCOL.md section 5).
//!
//! Bounds: `queue_frames` / `queue_bytes` of live items (a single item of any size
//! passes, PROTOCOL.md 10.31); past them the connection is a slow consumer, closed 4005
//! and fed no more: it resumes from the channels' history. Items a resume replays are
//! bounded by that history and not counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Recipient;
use bytestring::ByteString;

use crate::event::Event;
use crate::fanout::progress::{Progress, Wake};
use crate::flow::Flow;
use crate::position::Position;
use crate::protocol::Dialect;

/// One frame for one connection: the event, where it sits in the sequence (its own id,
/// or a release `B.E`), and the confirmations to write into its data.
#[derive(Debug, Clone)]
pub struct Item {
    /// The event (shared with every other subscriber).
    pub event: Arc<Event>,
    /// Its place, and so its id.
    pub position: Position,
    /// `Some(k)`: the frame's `data.confirmations` becomes `k`.
    pub confirmations: Option<u64>,
    /// Put here by a resume's replay (not counted against the queue bound).
    replayed: bool,
}

impl Item {
    /// A live item.
    pub fn new(event: Arc<Event>, position: Position, confirmations: Option<u64>) -> Item {
        Item {
            event,
            position,
            confirmations,
            replayed: false,
        }
    }

    /// The frame for `dialect`.
    pub fn frame(&self, dialect: Dialect) -> ByteString {
        self.event
            .frame_at(dialect, self.position, self.confirmations)
    }

    fn bytes(&self, dialect: Dialect) -> usize {
        // The shared frame's length; a release differs by a few digits at most.
        self.event.frame_len(dialect)
    }
}

/// The outbox's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Live items queued before the connection is a slow consumer.
    pub queue_frames: usize,
    /// Live bytes queued before the connection is a slow consumer.
    pub queue_bytes: usize,
    /// A congested outbox not drained for this long stops holding publishers back.
    pub stuck_after: Duration,
}

/// Where the outbox's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live connection drains it.
    Attached,
    /// The connection fell behind past the queue bound; it is being closed 4005 and is
    /// fed no more.
    Slow,
    /// The connection ended.
    Closed,
}

/// The state behind the lock.
pub struct OutboxState {
    /// How frames are rendered for the connection.
    pub dialect: Dialect,
    wake: Option<Recipient<Wake>>,
    wake_pending: bool,
    /// Items not yet written, in sequence order.
    queue: VecDeque<Item>,
    live_frames: usize,
    live_bytes: usize,
    /// Current mode.
    pub mode: Mode,
    limits: OutboxLimits,
    /// Several hubs feed it: drain only up to the watermark.
    ordered: bool,
    progress: Option<Arc<Progress>>,
    /// Publisher flow control, told when the queue passes half its bound and drains.
    flow: Option<Arc<Flow>>,
    congested: bool,
    /// Set when congested and not drained for `stuck_after`; cleared by a drain.
    stuck: bool,
    last_drain: Instant,
}

/// A connection's outbox, shared by the hubs (which push) and the connection (which drains).
pub type Outbox = Arc<Mutex<OutboxState>>;

/// A new, attached outbox; its connection gives it a wake-up address when it starts.
pub fn new_outbox(
    dialect: Dialect,
    limits: OutboxLimits,
    flow: Arc<Flow>,
    progress: Arc<Progress>,
) -> Outbox {
    let mut state = OutboxState::new(dialect, None, limits);
    state.flow = Some(flow);
    state.progress = Some(progress);
    Arc::new(Mutex::new(state))
}

/// Locks an outbox; a poisoned lock is still usable (its state is always consistent
/// between statements).
pub fn lock(outbox: &Outbox) -> MutexGuard<'_, OutboxState> {
    outbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`OutboxState::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (or, for a slow consumer, let go: it resumes from history).
    Queued,
    /// This push made the connection a slow consumer; the item was not kept.
    Dropped,
    /// The outbox is closed; the hub should forget this subscriber.
    Closed,
}

impl OutboxState {
    fn new(dialect: Dialect, wake: Option<Recipient<Wake>>, limits: OutboxLimits) -> OutboxState {
        OutboxState {
            dialect,
            wake,
            wake_pending: false,
            queue: VecDeque::new(),
            live_frames: 0,
            live_bytes: 0,
            mode: Mode::Attached,
            limits,
            ordered: false,
            progress: None,
            flow: None,
            congested: false,
            stuck: false,
            last_drain: Instant::now(),
        }
    }

    /// Tells flow control whether this outbox is congested (live, past half its bound).
    fn set_congested(&mut self, congested: bool) {
        if self.congested != congested {
            self.congested = congested;
            if let Some(f) = &self.flow {
                f.set(congested);
            }
        }
    }

    /// Where to send wake-ups (the connection, once started).
    pub fn set_wake(&mut self, wake: Recipient<Wake>) {
        if self.mode != Mode::Closed {
            self.wake = Some(wake);
        }
    }

    /// From now on several hubs feed this outbox: drain in sequence order.
    pub fn set_ordered(&mut self) {
        self.ordered = true;
    }

    fn insert(&mut self, item: Item) {
        // Almost always an append; items of several hubs may interleave.
        let at = match self.queue.back() {
            Some(last) if last.position > item.position => {
                self.queue.partition_point(|i| i.position <= item.position)
            }
            _ => self.queue.len(),
        };
        self.queue.insert(at, item);
    }

    fn wake(&mut self) {
        if !self.wake_pending {
            if let Some(w) = &self.wake {
                // A full mailbox already holds a Wake or a Tick, either of which flushes.
                self.wake_pending = w.try_send(Wake).is_ok();
            }
        }
    }

    /// Queues a live item; wakes the connection when the queue was empty.
    pub fn push(&mut self, item: Item) -> Pushed {
        match self.mode {
            Mode::Closed => return Pushed::Closed,
            Mode::Slow => return Pushed::Queued,
            Mode::Attached => {}
        }
        let bytes = item.bytes(self.dialect);
        let l = self.limits;
        let over = self.live_frames >= l.queue_frames
            || (self.live_frames > 0 && self.live_bytes.saturating_add(bytes) > l.queue_bytes);
        if over {
            self.mode = Mode::Slow;
            self.set_congested(false);
            self.wake_pending = false;
            self.wake();
            return Pushed::Dropped;
        }
        if self.congested {
            if self.last_drain.elapsed() > l.stuck_after {
                // Not reading at all: let publishers go on; the bound will cut it.
                self.stuck = true;
                self.set_congested(false);
            }
        } else if !self.stuck
            && (self.live_frames >= l.queue_frames / 2
                || self.live_bytes.saturating_add(bytes) > l.queue_bytes / 2)
        {
            self.set_congested(true);
        }
        self.live_frames += 1;
        self.live_bytes = self.live_bytes.saturating_add(bytes);
        self.insert(item);
        self.wake();
        Pushed::Queued
    }

    /// Merges a resume's replay into the queue, in sequence order.
    pub fn replay(&mut self, items: Vec<Item>) {
        for mut item in items {
            item.replayed = true;
            self.insert(item);
        }
    }

    /// Takes the items that may be written now (all of them, or for an ordered outbox
    /// those up to the watermark) and returns their frames. When items stay behind, the
    /// connection is woken again once the watermark passes the first of them.
    pub fn drain(&mut self) -> Vec<ByteString> {
        self.wake_pending = false;
        self.set_congested(false);
        self.stuck = false;
        self.last_drain = Instant::now();
        let mut frames = Vec::new();
        loop {
            let upto = match (&self.progress, self.ordered) {
                (Some(p), true) => p.complete(),
                _ => u64::MAX,
            };
            while let Some(first) = self.queue.front() {
                if first.position.major > upto {
                    break;
                }
                let Some(item) = self.queue.pop_front() else {
                    break;
                };
                if !item.replayed {
                    self.live_frames = self.live_frames.saturating_sub(1);
                    self.live_bytes = self.live_bytes.saturating_sub(item.bytes(self.dialect));
                }
                frames.push(item.frame(self.dialect));
            }
            let (Some(first), Some(p), Some(w)) = (self.queue.front(), &self.progress, &self.wake)
            else {
                break;
            };
            if p.wait_for(first.position.major, w) {
                break;
            }
        }
        frames
    }

    /// Closes the outbox and frees what it holds.
    pub fn close(&mut self) {
        self.set_congested(false);
        self.mode = Mode::Closed;
        self.wake = None;
        self.queue.clear();
        self.live_frames = 0;
        self.live_bytes = 0;
    }
}

impl Drop for OutboxState {
    fn drop(&mut self) {
        self.set_congested(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Draft;
    use serde_json::json;

    fn event(seq: u64, bytes: usize) -> Arc<Event> {
        let draft = Draft {
            channel: Arc::from("c"),
            kind: "update".into(),
            data: json!({ "pad": "x".repeat(bytes) }),
            block: None,
            is_block: false,
        };
        Arc::new(Event::new(seq, draft, None, Instant::now()))
    }

    fn item(seq: u64) -> Item {
        Item::new(event(seq, 0), Position::event(seq), None)
    }

    fn state(limits: OutboxLimits) -> OutboxState {
        OutboxState::new(Dialect::Ws, None, limits)
    }

    const LIMITS: OutboxLimits = OutboxLimits {
        queue_frames: 4,
        queue_bytes: 1 << 20,
        stuck_after: Duration::from_millis(500),
    };

    #[test]
    fn the_queue_bound_makes_a_slow_consumer_that_is_fed_no_more() {
        let mut s = state(LIMITS);
        for n in 1..=4 {
            assert_eq!(s.push(item(n)), Pushed::Queued);
        }
        assert_eq!(s.push(item(5)), Pushed::Dropped);
        assert_eq!(s.mode, Mode::Slow);
        assert_eq!(s.push(item(6)), Pushed::Queued);
        assert_eq!(s.queue.len(), 4);
    }

    #[test]
    fn one_item_larger_than_the_byte_bound_still_passes() {
        let mut s = state(OutboxLimits {
            queue_bytes: 1024,
            ..LIMITS
        });
        let big = Item::new(event(1, 4096), Position::event(1), None);
        assert_eq!(s.push(big), Pushed::Queued);
        assert_eq!(s.mode, Mode::Attached);
        assert_eq!(s.push(item(2)), Pushed::Dropped, "but not a second one");
    }

    #[test]
    fn items_of_several_hubs_are_kept_in_sequence_order() {
        let mut s = state(LIMITS);
        s.push(item(5));
        s.push(Item::new(event(3, 0), Position::release(7, 3), None));
        s.push(item(2));
        s.push(item(7));
        let order: Vec<Position> = s.queue.iter().map(|i| i.position).collect();
        let want = [
            Position::event(2),
            Position::event(5),
            Position::event(7),
            Position::release(7, 3),
        ];
        assert_eq!(order, want);
    }

    #[test]
    fn replayed_items_do_not_count_against_the_bound() {
        let mut s = state(LIMITS);
        s.replay((1..=100).map(item).collect());
        assert_eq!(s.push(item(101)), Pushed::Queued);
        assert_eq!(s.drain().len(), 101);
    }

    #[test]
    fn past_half_its_bound_an_outbox_holds_publishers_back_until_drained() {
        let flow = Arc::new(Flow::default());
        let mut s = state(LIMITS);
        s.flow = Some(flow.clone());
        s.push(item(1));
        s.push(item(2));
        assert_eq!(flow.congested(), 0);
        s.push(item(3));
        assert_eq!(flow.congested(), 1, "two queued of four: congested");
        s.drain();
        assert_eq!(flow.congested(), 0, "drained: publishers go on");
        for n in 4..=6 {
            s.push(item(n));
        }
        assert_eq!(flow.congested(), 1);
        drop(s);
        assert_eq!(flow.congested(), 0, "a dropped outbox releases its mark");
    }

    #[test]
    fn a_congested_outbox_that_is_not_drained_is_stuck_and_stops_holding_publishers() {
        let flow = Arc::new(Flow::default());
        let mut s = state(OutboxLimits {
            queue_frames: 8,
            stuck_after: Duration::ZERO,
            ..LIMITS
        });
        s.flow = Some(flow.clone());
        for n in 1..=5 {
            s.push(item(n));
        }
        assert_eq!(flow.congested(), 1);
        std::thread::sleep(Duration::from_millis(2));
        s.push(item(6));
        assert_eq!(flow.congested(), 0, "not drained for stuck_after: stuck");
        s.push(item(7));
        assert_eq!(flow.congested(), 0, "a stuck outbox is not marked again");
        s.push(item(8));
        s.push(item(9));
        assert_eq!(s.mode, Mode::Slow, "and it is still cut at its bound");
    }
}
