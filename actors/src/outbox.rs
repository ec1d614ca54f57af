//! A connection's outbox: the bounded queue hubs push events into, and the log of what was
//! written but may not have reached the client, kept for resume (PROTOCOL.md section 7).
//!
//! Hubs push items and wake the connection only when the queue goes from empty to
//! non-empty; the connection drains the queue in one go, writes the frames, and moves the
//! items to the sent log. Pings carry the sent log's position: a pong acknowledges every
//! item before it, so the log holds only what may still be in flight.
//!
//! Bounds: while attached, `queue_frames` / `queue_bytes` (past them the connection is a
//! slow consumer: closed 4005, fed no more); while parked or slow, everything held (queue
//! and sent log) stays within `keep_frames` / `keep_bytes`, past which items are refused
//! (or, in the sent log, evicted) and resume reports `recovered: false`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::{Message, Recipient};

use crate::event::Event;
use crate::flow::Flow;
use crate::messages::ConnId;
use crate::protocol::Dialect;

/// Outbox → Connection: the queue went non-empty (or the connection turned slow).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// One event for one connection: the event and, for `confirmations` releases, the
/// confirmations to write into its data.
#[derive(Debug, Clone)]
pub struct Item {
    /// The event (shared with every other subscriber).
    pub event: Arc<Event>,
    /// `Some(k)`: the frame's `data.confirmations` becomes `k`.
    pub confirmations: Option<u64>,
}

impl Item {
    /// The frame for `dialect`.
    pub fn frame(&self, dialect: Dialect) -> bytestring::ByteString {
        match self.confirmations {
            Some(c) => self.event.frame_at_confirmations(dialect, c),
            None => self.event.frame(dialect),
        }
    }

    fn bytes(&self, dialect: Dialect) -> usize {
        // The shared frame's length; rewritten frames differ by a few digits at most.
        self.event.frame_len(dialect)
    }
}

/// The outbox's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Items queued for an attached connection before it is a slow consumer.
    pub queue_frames: usize,
    /// Bytes queued for an attached connection before it is a slow consumer.
    pub queue_bytes: usize,
    /// Items kept in all (queue and sent log) for resume.
    pub keep_frames: usize,
    /// Bytes kept in all for resume.
    pub keep_bytes: usize,
    /// A congested outbox not drained for this long stops holding publishers back.
    pub stuck_after: std::time::Duration,
}

/// Where the outbox's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live connection drains it.
    Attached,
    /// The live connection fell behind past the queue bound; it is being closed 4005.
    Slow,
    /// The connection ended; held for resume since the instant given.
    Parked(Instant),
    /// Given up: nothing is kept any more.
    Closed,
}

/// The state behind the lock.
pub struct OutboxState {
    /// How frames are rendered for the attached connection.
    pub dialect: Dialect,
    /// The attached connection's id.
    pub conn: ConnId,
    wake: Option<Recipient<Wake>>,
    wake_pending: bool,
    /// Items not yet written.
    pub queue: VecDeque<Item>,
    queue_bytes: usize,
    /// Items written, oldest first, not yet acknowledged by a pong.
    pub sent: VecDeque<Item>,
    sent_bytes: usize,
    /// Position (count of items ever written) of `sent[0]`.
    sent_base: u64,
    /// Id of the last item a pong acknowledged.
    pub last_acked: Option<String>,
    /// Whether an unacknowledged written item was evicted from the sent log: a resume from
    /// before it cannot be complete.
    pub evicted: bool,
    /// Whether an item was refused over the resume bound: no resume can be complete.
    pub dropped: bool,
    /// Current mode.
    pub mode: Mode,
    limits: OutboxLimits,
    /// Publisher flow control, told when the queue passes half its bound and drains.
    flow: Option<Arc<Flow>>,
    congested: bool,
    /// Set when congested and not drained for `stuck_after`; cleared by a drain.
    stuck: bool,
    last_drain: Instant,
}

/// A connection's outbox, shared by the hubs (which push) and the connection (which drains).
pub type Outbox = Arc<Mutex<OutboxState>>;

/// A new, attached outbox.
pub fn new_outbox(
    conn: ConnId,
    dialect: Dialect,
    wake: Recipient<Wake>,
    limits: OutboxLimits,
    flow: Arc<Flow>,
) -> Outbox {
    let mut state = OutboxState::new(conn, dialect, Some(wake), limits);
    state.flow = Some(flow);
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
    /// Queued.
    Queued,
    /// Queued, and this push made the connection a slow consumer.
    TurnedSlow,
    /// Not kept: over the resume bound (the outbox is now lossy).
    Dropped,
    /// The outbox is closed; the hub should forget this subscriber.
    Closed,
}

impl OutboxState {
    fn new(
        conn: ConnId,
        dialect: Dialect,
        wake: Option<Recipient<Wake>>,
        limits: OutboxLimits,
    ) -> OutboxState {
        OutboxState {
            dialect,
            conn,
            wake,
            wake_pending: false,
            queue: VecDeque::new(),
            queue_bytes: 0,
            sent: VecDeque::new(),
            sent_bytes: 0,
            sent_base: 0,
            last_acked: None,
            evicted: false,
            dropped: false,
            mode: Mode::Attached,
            limits,
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

    fn held_frames(&self) -> usize {
        self.queue.len() + self.sent.len()
    }

    fn held_bytes(&self) -> usize {
        self.queue_bytes + self.sent_bytes
    }

    /// Queues an item; wakes the connection when the queue was empty.
    pub fn push(&mut self, item: Item) -> Pushed {
        let bytes = item.bytes(self.dialect);
        let mut result = Pushed::Queued;
        match self.mode {
            Mode::Closed => return Pushed::Closed,
            Mode::Attached => {
                let l = self.limits;
                if self.queue.len() >= l.queue_frames || self.queue_bytes + bytes > l.queue_bytes {
                    self.mode = Mode::Slow;
                    self.set_congested(false);
                    result = Pushed::TurnedSlow;
                } else if self.congested {
                    if self.last_drain.elapsed() > l.stuck_after {
                        // Not reading at all: let publishers go on; the bound will cut it.
                        self.stuck = true;
                        self.set_congested(false);
                    }
                } else if !self.stuck
                    && (self.queue.len() >= l.queue_frames / 2
                        || self.queue_bytes + bytes > l.queue_bytes / 2)
                {
                    self.set_congested(true);
                }
            }
            Mode::Slow | Mode::Parked(_) => {}
        }
        // Over the resume bound, the oldest written items go first (most likely read
        // already); only a queue that alone fills the bound refuses the new item.
        while self.held_frames() >= self.limits.keep_frames
            || self.held_bytes() + bytes > self.limits.keep_bytes
        {
            if !self.evict_oldest() {
                self.dropped = true;
                return Pushed::Dropped;
            }
        }
        self.queue_bytes += bytes;
        self.queue.push_back(item);
        if !self.wake_pending && matches!(self.mode, Mode::Attached | Mode::Slow) {
            if let Some(w) = &self.wake {
                // A full mailbox already holds a Wake or will be drained soon.
                self.wake_pending = w.try_send(Wake).is_ok();
            }
        }
        result
    }

    /// Takes every queued item for writing, returning the frames to write, and moves the
    /// items to the sent log (evicting the oldest unacknowledged items past the resume
    /// bound). Called by the connection.
    pub fn drain(&mut self) -> Vec<bytestring::ByteString> {
        self.wake_pending = false;
        self.set_congested(false);
        self.stuck = false;
        self.last_drain = Instant::now();
        let mut frames = Vec::with_capacity(self.queue.len());
        for item in self.queue.drain(..) {
            frames.push(item.frame(self.dialect));
            self.sent_bytes += item.bytes(self.dialect);
            self.sent.push_back(item);
        }
        self.queue_bytes = 0;
        while self.sent.len() > self.limits.keep_frames || self.sent_bytes > self.limits.keep_bytes
        {
            if !self.evict_oldest() {
                break;
            }
        }
        frames
    }

    /// Evicts the oldest unacknowledged written item; false when the sent log is empty.
    fn evict_oldest(&mut self) -> bool {
        let Some(old) = self.sent.pop_front() else {
            return false;
        };
        self.sent_bytes -= old.bytes(self.dialect).min(self.sent_bytes);
        self.sent_base += 1;
        self.evicted = true;
        true
    }

    /// Whether the sent log holds a quarter of the resume bound: time to ask for an
    /// acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.sent.len() > self.limits.keep_frames / 4
            || self.sent_bytes > self.limits.keep_bytes / 4
    }

    /// Records replayed items as written (they go out before anything queued).
    pub fn record_sent(&mut self, items: &[Item]) {
        for item in items {
            self.sent_bytes += item.bytes(self.dialect);
            self.sent.push_back(item.clone());
        }
    }

    /// The position after the last written item: a ping's payload.
    pub fn position(&self) -> u64 {
        self.sent_base + self.sent.len() as u64
    }

    /// A pong for `position` came back: the client has read everything before it.
    pub fn ack(&mut self, position: u64) {
        while self.sent_base < position {
            let Some(old) = self.sent.pop_front() else {
                break;
            };
            self.sent_bytes -= old.bytes(self.dialect).min(self.sent_bytes);
            self.sent_base += 1;
            self.last_acked = Some(old.event.id.clone());
        }
    }

    /// Parks the outbox: its connection ended; hubs keep filling it for resume.
    pub fn park(&mut self, now: Instant) {
        self.set_congested(false);
        if self.mode != Mode::Closed {
            self.mode = Mode::Parked(now);
            self.wake = None;
            self.wake_pending = false;
        }
    }

    /// Closes the outbox and frees what it holds.
    pub fn close(&mut self) {
        self.set_congested(false);
        self.mode = Mode::Closed;
        self.wake = None;
        self.queue.clear();
        self.sent.clear();
        self.queue_bytes = 0;
        self.sent_bytes = 0;
    }

    /// Bytes queued and not yet written (for the metrics).
    pub fn queued_bytes(&self) -> usize {
        self.queue_bytes
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
    use serde_json::json;

    fn item(seq: u64) -> Item {
        Item {
            event: Arc::new(Event::new(
                seq,
                Arc::from("c"),
                "update".into(),
                json!({}),
                None,
            )),
            confirmations: None,
        }
    }

    fn state(limits: OutboxLimits) -> OutboxState {
        OutboxState::new(1, Dialect::Ws, None, limits)
    }

    const LIMITS: OutboxLimits = OutboxLimits {
        queue_frames: 3,
        queue_bytes: 1 << 20,
        keep_frames: 5,
        keep_bytes: 1 << 20,
        stuck_after: std::time::Duration::from_millis(500),
    };

    #[test]
    fn the_queue_bound_makes_a_slow_consumer_and_the_keep_bound_a_lossy_one() {
        let mut s = state(LIMITS);
        assert_eq!(s.push(item(1)), Pushed::Queued);
        assert_eq!(s.push(item(2)), Pushed::Queued);
        assert_eq!(s.push(item(3)), Pushed::Queued);
        assert_eq!(s.push(item(4)), Pushed::TurnedSlow);
        assert_eq!(s.push(item(5)), Pushed::Queued);
        assert!(!s.dropped);
        assert_eq!(s.push(item(6)), Pushed::Dropped);
        assert!(s.dropped);
    }

    #[test]
    fn the_resume_bound_evicts_written_items_before_refusing_new_ones() {
        let mut s = state(LIMITS);
        for n in 1..=3 {
            assert_eq!(s.push(item(n)), Pushed::Queued);
        }
        s.drain();
        for n in 4..=6 {
            assert_eq!(s.push(item(n)), Pushed::Queued);
        }
        assert!(s.evicted && !s.dropped);
        assert_eq!(s.sent.len() + s.queue.len(), 5);
    }

    #[test]
    fn past_half_its_bound_an_outbox_holds_publishers_back_until_drained() {
        let flow = Arc::new(Flow::default());
        let limits = OutboxLimits {
            queue_frames: 4,
            ..LIMITS
        };
        let mut s = state(limits);
        s.flow = Some(flow.clone());
        s.push(item(1));
        assert_eq!(flow.congested(), 0);
        s.push(item(2));
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
        let limits = OutboxLimits {
            queue_frames: 8,
            keep_frames: 64,
            stuck_after: std::time::Duration::ZERO,
            ..LIMITS
        };
        let mut s = state(limits);
        s.flow = Some(flow.clone());
        for n in 1..=5 {
            s.push(item(n));
        }
        assert_eq!(flow.congested(), 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.push(item(6));
        assert_eq!(flow.congested(), 0, "not drained for stuck_after: stuck");
        s.push(item(7));
        assert_eq!(flow.congested(), 0, "a stuck outbox is not marked again");
        for n in 8..=9 {
            s.push(item(n));
        }
        assert_eq!(s.mode, Mode::Slow, "and it is still cut at its bound");
    }

    #[test]
    fn pongs_trim_the_sent_log() {
        let mut s = state(LIMITS);
        for n in 1..=3 {
            s.push(item(n));
        }
        assert_eq!(s.drain().len(), 3);
        let p = s.position();
        s.push(item(4));
        s.drain();
        s.ack(p);
        assert_eq!(s.sent.len(), 1);
        assert_eq!(s.last_acked.as_deref(), Some("3"));
        assert!(!s.evicted);
    }
}
