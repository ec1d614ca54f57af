//! The node's fan-out side of the engine seam: takes each appended batch in sequence
//! order, splits it into one list of steps per channel hub (events, and the head's
//! raises for the block-naming hubs), and queues each hub's list in the same order.
//!
//! It also keeps the node's [`Progress`]: the highest sequence number up to which every
//! hub has fanned out (the watermark). A connection fed by several hubs writes only up
//! to the watermark, which is what puts its frames in sequence order across channels
//! (PROTOCOL.md section 5); a connection fed by one hub never waits for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::Recipient;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::{Fed, Sink};
use crate::event::Event;
use crate::hubs::{HubRef, Hubs};
use crate::messages::PublishBatch;
use crate::outbox::Wake;

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
    /// The hub has all it will get of its channel up to here ([`Fed::Mark`]).
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

#[derive(Default)]
struct Pending {
    /// Batches queued to hubs and not fanned out yet: first sequence number → last.
    in_flight: BTreeMap<u64, u64>,
    /// The last sequence number of the last batch begun.
    last: u64,
    /// Connections waiting for the watermark to pass what they hold; each registers at
    /// most once per wait, so bounded by the connections.
    waiters: Vec<Recipient<Wake>>,
}

/// How far the node's fan-out has come.
#[derive(Default)]
pub struct Progress {
    /// Every hub has fanned out every batch up to here (the watermark).
    complete: AtomicU64,
    /// The last sequence number handed to the hubs.
    begun: AtomicU64,
    pending: Mutex<Pending>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watermark: everything up to it is in every subscriber's outbox.
    pub fn complete(&self) -> u64 {
        self.complete.load(Ordering::Acquire)
    }

    /// The last sequence number handed to the hubs: a subscription made now gets only
    /// later events.
    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    fn begin(&self, first: u64, last: u64) {
        let mut p = self.lock();
        p.in_flight.insert(first, last);
        p.last = last;
        self.begun.store(last, Ordering::Release);
    }

    fn finish(&self, first: u64) {
        let waiters = {
            let mut p = self.lock();
            p.in_flight.remove(&first);
            let mark = match p.in_flight.first_key_value() {
                Some((f, _)) => f.saturating_sub(1),
                None => p.last,
            };
            if mark <= self.complete() {
                return;
            }
            self.complete.store(mark, Ordering::Release);
            std::mem::take(&mut p.waiters)
        };
        for w in waiters {
            // A full mailbox already holds a wake-up or a tick, either of which flushes.
            let _ = w.try_send(Wake);
        }
    }

    /// Registers `wake` to be woken when the watermark reaches `seq`; false (not
    /// registered) when it already has.
    pub fn wait_for(&self, seq: u64, wake: &Recipient<Wake>) -> bool {
        let mut p = self.lock();
        if self.complete() >= seq {
            return false;
        }
        p.waiters.push(wake.clone());
        true
    }
}

/// Held by every hub's share of one batch; the last to drop it marks the batch fanned
/// out and tells the publisher.
pub struct Ticket {
    /// The batch's first sequence number in the watermark (`None`: a batch of fences
    /// only, which the watermark does not count).
    first: Option<u64>,
    progress: Arc<Progress>,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(first) = self.first {
            self.progress.finish(first);
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// The fan-out. See the module documentation.
pub struct Delivery {
    hubs: Arc<Hubs>,
    progress: Arc<Progress>,
    /// Batches in the hubs at once (`limits.hub_queue_batches`): publishers wait for a
    /// permit, so hub mailboxes stay bounded although batches are queued without waiting.
    in_flight: Arc<Semaphore>,
}

impl Delivery {
    /// A fan-out into `hubs` with at most `max_in_flight` batches queued at once.
    pub fn new(hubs: Arc<Hubs>, progress: Arc<Progress>, max_in_flight: usize) -> Delivery {
        Delivery {
            hubs,
            progress,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Waits for room for one more batch; the permit is held until it is fanned out.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().acquire_owned().await.ok()
    }

    /// The index in `lists` of `channel`'s step list (added when new); `index` finds it
    /// in one lookup however many channels the batch spans.
    fn hub_of<'a>(
        &self,
        lists: &mut Vec<(HubRef, Vec<Step>)>,
        index: &mut HashMap<&'a str, usize>,
        channel: &'a str,
    ) -> Option<usize> {
        if let Some(&i) = index.get(channel) {
            return Some(i);
        }
        let hub = self.hubs.get(channel).ok()?;
        lists.push((hub, Vec::new()));
        let i = lists.len() - 1;
        index.insert(channel, i);
        Some(i)
    }
}

impl Sink for Delivery {
    fn deliver_fed(&self, fed: &[Fed]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if fed.is_empty() {
            let _ = tx.send(());
            return rx;
        }
        // Fences are not events: the watermark counts the rest (a fence's number may
        // repeat the last event's).
        let mut counted = fed
            .iter()
            .filter(|f| !matches!(f, Fed::Mark { .. }))
            .map(Fed::seq);
        let first = counted.next();
        let last = counted.next_back().or(first);
        let mut lists: Vec<(HubRef, Vec<Step>)> = Vec::new();
        let mut index = HashMap::new();
        for item in fed {
            match item {
                Fed::Event(event) => {
                    if let Some(i) = self.hub_of(&mut lists, &mut index, &event.channel) {
                        lists[i].1.push(Step::Event(event.clone()));
                    }
                }
                &Fed::Head { number, by } => {
                    for hub in self.hubs.block_hubs() {
                        if let Some(i) = self.hub_of(&mut lists, &mut index, &hub.name) {
                            lists[i].1.push(Step::Head { number, by });
                        }
                    }
                }
                Fed::Mark { channel, seq } => {
                    if let Some(i) = self.hub_of(&mut lists, &mut index, channel) {
                        lists[i].1.push(Step::Mark(*seq));
                    }
                }
            }
        }
        if let (Some(first), Some(last)) = (first, last) {
            self.progress.begin(first, last);
        }
        let ticket = Arc::new(Ticket {
            first,
            progress: self.progress.clone(),
            done: Some(tx),
        });
        for (hub, steps) in lists {
            // `do_send` queues at once, in this (sequence) order; the permit bounds it.
            hub.addr.do_send(PublishBatch {
                steps,
                ticket: ticket.clone(),
            });
        }
        rx
    }
}
