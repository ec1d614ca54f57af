//! Publisher flow control: how many live connections have a queue past its high-water
//! mark (half the slow-consumer bound). While any has, publishers wait before handing a
//! batch to the hubs, up to `publish.max_stall_ms` per batch, so a burst slows its
//! publisher instead of turning readers that are merely behind into slow consumers
//! (closed 4005). A reader that stays stuck is still cut at the full bound: the wait is
//! bounded, so one stuck client cannot stop publishing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shared by every outbox (which marks itself congested or not) and the publisher
/// (which waits while any is).
#[derive(Debug, Default)]
pub struct Flow {
    congested: AtomicUsize,
    /// Publish batches that waited, for `/metrics`.
    pub stalls: AtomicU64,
    /// Total microseconds publishers waited, for `/metrics`.
    pub stalled_us: AtomicU64,
}

/// How often a waiting publisher looks again.
const RECHECK: Duration = Duration::from_millis(1);

impl Flow {
    /// An outbox crossed its high-water mark (up) or drained / left (down).
    pub fn set(&self, congested: bool) {
        if congested {
            self.congested.fetch_add(1, Ordering::AcqRel);
        } else {
            self.congested.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Live connections past their high-water mark now.
    pub fn congested(&self) -> usize {
        self.congested.load(Ordering::Acquire)
    }

    /// Waits while any connection is congested, at most `max_stall`.
    pub async fn wait(&self, max_stall: Duration) {
        if self.congested() == 0 || max_stall.is_zero() {
            return;
        }
        let start = Instant::now();
        while self.congested() > 0 && start.elapsed() < max_stall {
            actix::clock::sleep(RECHECK).await;
        }
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.stalled_us
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}
