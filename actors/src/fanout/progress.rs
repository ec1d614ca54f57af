//! How far the node's fan-out has come: the highest sequence number up to which every
//! hub has fanned out (the watermark), and the [`Ticket`] each batch carries through the
//! hubs to move it. A connection fed by several hubs writes only up to the watermark,
//! which is what puts its frames in sequence order across channels (PROTOCOL.md section
//! 5); a connection fed by one hub never waits for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::{Message, Recipient};
use tokio::sync::oneshot;

/// Outbox or Progress → Connection: there is something to write (or the connection
/// turned slow).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

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

    /// Marks the batch `first..=last` handed to the hubs.
    pub(super) fn begin(&self, first: u64, last: u64) {
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

impl Ticket {
    /// The ticket of a batch starting at `first` (`None`: fences only); `done` hears when
    /// every hub has fanned it out.
    pub(super) fn new(
        first: Option<u64>,
        progress: Arc<Progress>,
        done: oneshot::Sender<()>,
    ) -> Ticket {
        Ticket {
            first,
            progress,
            done: Some(done),
        }
    }
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
