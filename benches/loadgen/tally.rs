//! What the subscribers of a run received, shared by every task of the generator's one
//! thread: per-event delivery counts (for the closed loop's "in flight"), loss, duplicates,
//! order violations, and the end-to-end latency histogram.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::topic::Topic;

/// A fixed mix of `x` (splitmix64's finaliser): pseudo-random, no state.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Shared by every subscriber and the publisher of one run (one thread: no locks).
pub struct Tally {
    epoch: Instant,
    /// Subscribers on each channel: an event on channel `c` is complete after this many
    /// deliveries.
    per_channel: Vec<u32>,
    /// Routed by wallet (scenario F): event `seq` goes to a pseudo-random wallet.
    wallets: bool,
    events: u64,
    got: RefCell<Vec<u32>>,
    completed: Cell<u64>,
    received: Cell<u64>,
    duplicates: Cell<u64>,
    disorder: Cell<u64>,
    strays: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    last_delivery: Cell<Option<Instant>>,
    hist: RefCell<Histogram<u64>>,
    /// Signalled when an event completes (the closed-loop publisher waits on it).
    pub progress: Notify,
}

/// The figures a run reports from the tally.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Deliveries expected: each event times the subscribers of its channel.
    pub expected: u64,
    /// Distinct deliveries received in order.
    pub received: u64,
    /// Events delivered to every subscriber of their channel.
    pub completed: u64,
    /// The same event twice in a row on one subscription.
    pub duplicates: u64,
    /// An event older than one already received on the same subscription.
    pub disorder: u64,
    /// Frames naming an event the run never published.
    pub strays: u64,
    /// Subscribers that failed or were closed; the first reason.
    pub errors: u64,
    /// The first subscriber error.
    pub first_error: Option<String>,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max (0 when none).
    pub latency_us: [f64; 4],
    /// When the last delivery arrived.
    pub last_delivery: Option<Instant>,
}

impl Tally {
    /// A tally for `events` events over `channels` channels with `subscribers` spread
    /// round-robin (subscriber `i` on channel `i % channels`).
    pub fn new(subscribers: usize, channels: usize, events: u64) -> Tally {
        let channels = channels.max(1);
        let per_channel = (0..channels)
            .map(|c| (subscribers / channels + usize::from(c < subscribers % channels)) as u32)
            .collect();
        Tally {
            epoch: Instant::now(),
            per_channel,
            wallets: false,
            events,
            got: RefCell::new(vec![0; events as usize]),
            completed: Cell::new(0),
            received: Cell::new(0),
            duplicates: Cell::new(0),
            disorder: Cell::new(0),
            strays: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            last_delivery: Cell::new(None),
            // 1 µs to 10 minutes, 3 significant digits.
            hist: RefCell::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds"),
            ),
            progress: Notify::new(),
        }
    }

    /// Nanoseconds since the run's epoch: the timestamp the publisher writes.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Events fully delivered so far.
    pub fn completed(&self) -> u64 {
        self.completed.get()
    }

    /// The same tally routed by wallet: each "channel" is a wallet, and event `seq` goes
    /// to a wallet drawn from `seq` (the same in every run, spread evenly).
    pub fn wallets(mut self) -> Tally {
        self.wallets = true;
        self
    }

    /// The channel (or wallet) event `seq` is published to.
    pub fn channel_of(&self, seq: u64) -> usize {
        let n = self.per_channel.len() as u64;
        if self.wallets {
            (splitmix64(seq) % n) as usize
        } else {
            (seq % n) as usize
        }
    }

    /// Where event `seq` is published.
    pub fn topic_of(&self, seq: u64) -> Topic {
        Topic::new(self.wallets, self.channel_of(seq))
    }

    /// Records one delivery of `(seq, ts)` on a subscription whose last sequence is `last`.
    pub fn deliver(&self, last: &mut Option<u64>, seq: u64, ts: u64) {
        if seq >= self.events {
            self.strays.set(self.strays.get() + 1);
            return;
        }
        match *last {
            Some(l) if seq == l => return self.duplicates.set(self.duplicates.get() + 1),
            Some(l) if seq < l => return self.disorder.set(self.disorder.get() + 1),
            _ => {}
        }
        *last = Some(seq);
        let now = Instant::now();
        self.last_delivery.set(Some(now));
        self.received.set(self.received.get() + 1);
        let latency_us =
            (now.duration_since(self.epoch).as_nanos() as u64).saturating_sub(ts) / 1000;
        let _ = self.hist.borrow_mut().record(latency_us.max(1));
        let mut got = self.got.borrow_mut();
        let slot = &mut got[seq as usize];
        *slot += 1;
        if *slot == self.per_channel[self.channel_of(seq)] {
            self.completed.set(self.completed.get() + 1);
            self.progress.notify_one();
        }
    }

    /// Records a subscriber that failed or was closed.
    pub fn error(&self, why: String) {
        self.errors.set(self.errors.get() + 1);
        self.first_error.borrow_mut().get_or_insert(why);
    }

    /// Subscriber errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.get()
    }

    /// Distinct deliveries received so far (cheap: for progress checks).
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    /// Deliveries the first `published` events promise: each times its channel's
    /// subscribers.
    pub fn expected(&self, published: u64) -> u64 {
        (0..published.min(self.events))
            .map(|s| u64::from(self.per_channel[self.channel_of(s)]))
            .sum()
    }

    /// The figures, for `published` events (the first `published` sequence numbers).
    pub fn summary(&self, published: u64) -> Received {
        let h = self.hist.borrow();
        let latency_us = if h.is_empty() {
            [0.0; 4]
        } else {
            [
                h.value_at_quantile(0.5) as f64,
                h.value_at_quantile(0.99) as f64,
                h.value_at_quantile(0.999) as f64,
                h.max() as f64,
            ]
        };
        Received {
            expected: self.expected(published),
            received: self.received.get(),
            completed: self.completed.get(),
            duplicates: self.duplicates.get(),
            disorder: self.disorder.get(),
            strays: self.strays.get(),
            errors: self.errors.get(),
            first_error: self.first_error.borrow().clone(),
            latency_us,
            last_delivery: self.last_delivery.get(),
        }
    }
}
