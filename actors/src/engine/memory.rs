//! The in-memory engine, for one broker process: a counter for the sequence, a
//! [`ChannelHistory`] per channel, the head's [`HeadTimeline`] and the parked
//! subscriptions, behind one lock each. Appending and handing the batch to the sink happen
//! under the same lock, so batches reach the fan-out in sequence order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{
    Appended, ChannelRead, Engine, EngineError, EngineFuture, ParkedSub, Range, Sink, Snapshot,
};
use crate::event::{Draft, Event};
use crate::history::{ChannelHistory, HeadRaise, HeadTimeline, HistoryLimits, Stored};
use crate::metrics::Metrics;
use crate::position::Position;

struct Log {
    /// The first sequence number this engine issues.
    first: u64,
    /// The next one.
    next: u64,
    head: Option<u64>,
    timeline: HeadTimeline,
    /// Bounded: the six channels plus at most `channels.max_plain` plain ones.
    channels: HashMap<Arc<str>, ChannelHistory>,
    /// What all channels keep, in bytes (bounded by `limits.max_total_bytes`).
    total_bytes: usize,
}

impl Log {
    /// Runs `f` on one channel's history, keeping the total in step.
    fn with_channel<T>(
        &mut self,
        channel: &Arc<str>,
        f: impl FnOnce(&mut ChannelHistory) -> T,
    ) -> T {
        let h = self.channels.entry(channel.clone()).or_default();
        let before = h.bytes();
        let out = f(h);
        self.total_bytes = (self.total_bytes + h.bytes()).saturating_sub(before);
        out
    }

    /// Evicts the oldest events of the whole history while it is over `max`; returns how
    /// many went.
    fn trim_total(&mut self, max: usize) -> u64 {
        let mut evicted = 0;
        while self.total_bytes > max {
            let oldest = self
                .channels
                .iter()
                .filter_map(|(name, h)| h.front_seq().map(|s| (s, name.clone())))
                .min();
            let Some((_, name)) = oldest else { break };
            if !self.with_channel(&name, ChannelHistory::evict_oldest) {
                break;
            }
            evicted += 1;
        }
        evicted
    }
}

#[derive(Default)]
struct Parked {
    by_id: HashMap<Arc<str>, (ParkedSub, Instant)>,
    /// Park order, for expiry; entries whose id was claimed are skipped.
    order: VecDeque<(Instant, Arc<str>)>,
}

/// The in-memory engine.
pub struct MemoryEngine {
    log: Mutex<Log>,
    parked: Mutex<Parked>,
    limits: HistoryLimits,
    max_parked: usize,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryEngine {
    /// An engine keeping `limits` of history per channel and at most `max_parked` parked
    /// subscriptions, feeding `sink`. Sequence numbers start from the current time in
    /// microseconds, so ids keep increasing across restarts of the process.
    pub fn new(
        limits: HistoryLimits,
        max_parked: usize,
        sink: Arc<dyn Sink>,
        metrics: Arc<Metrics>,
    ) -> MemoryEngine {
        let first = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(1))
            .unwrap_or(1)
            .max(1);
        MemoryEngine {
            log: Mutex::new(Log {
                first,
                next: first,
                head: None,
                timeline: HeadTimeline::default(),
                channels: HashMap::new(),
                total_bytes: 0,
            }),
            parked: Mutex::new(Parked::default()),
            limits,
            max_parked,
            sink,
            metrics,
        }
    }

    fn count_evicted(&self, e: crate::history::Evicted) {
        let m = &self.metrics;
        m.history_evicted_age.fetch_add(e.by_age, Ordering::Relaxed);
        m.history_evicted_bound
            .fetch_add(e.by_bound, Ordering::Relaxed);
    }

    fn append_now(&self, drafts: Vec<Draft>) -> Result<Appended, EngineError> {
        // History keeps the data as text; it is written before the lock is taken.
        let mut texts = Vec::with_capacity(drafts.len());
        for d in &drafts {
            let text = serde_json::value::to_raw_value(&d.data)
                .map_err(|e| EngineError::Unavailable(format!("event data: {e}")))?;
            texts.push(text);
        }
        let now = Instant::now();
        let mut log = lock(&self.log);
        let n = drafts.len() as u64;
        let first = log.next;
        let Some(next) = first.checked_add(n) else {
            return Err(EngineError::Unavailable("the sequence is exhausted".into()));
        };
        log.next = next;
        let mut events = Vec::with_capacity(drafts.len());
        for ((seq, draft), text) in (first..).zip(drafts).zip(texts) {
            let raises_head = match (draft.is_block, draft.block) {
                (true, Some(b)) if log.head.is_none_or(|h| b > h) => Some(b),
                _ => None,
            };
            if let Some(b) = raises_head {
                log.head = Some(b);
                let raise = HeadRaise {
                    seq,
                    number: b,
                    at: now,
                };
                log.timeline.push(raise, &self.limits, now);
            }
            let stored = Arc::new(Stored::new(seq, &draft, raises_head, now, text));
            let event = Arc::new(Event::from_stored(draft, stored.clone()));
            let evicted = log.with_channel(&event.channel, |h| h.push(stored, &self.limits, now));
            self.count_evicted(evicted);
            events.push(event);
        }
        let by_bound = log.trim_total(self.limits.max_total_bytes);
        self.count_evicted(crate::history::Evicted {
            by_age: 0,
            by_bound,
        });
        // Still under the lock: the sink sees batches in sequence order.
        let delivered = self.sink.deliver(&events);
        Ok(Appended { events, delivered })
    }
}

impl Engine for MemoryEngine {
    fn append(&self, drafts: Vec<Draft>) -> EngineFuture<'_, Result<Appended, EngineError>> {
        let result = self.append_now(drafts);
        Box::pin(std::future::ready(result))
    }

    fn read(
        &self,
        ranges: Vec<Range>,
        release: Option<Position>,
    ) -> EngineFuture<'_, Result<Snapshot, EngineError>> {
        let now = Instant::now();
        let mut log = lock(&self.log);
        let (lo, hi) = ranges.iter().fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.after), hi.max(r.upto))
        });
        let mut channels = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let read = if log.channels.contains_key(&r.channel) {
                let limits = &self.limits;
                let (evicted, read) = log.with_channel(&r.channel, |h| {
                    let evicted = h.trim(limits, now);
                    let read = ChannelRead {
                        events: h.range(r.after, r.upto),
                        evicted_upto: h.evicted_upto,
                        evicted_max_block: h.evicted_max_block,
                    };
                    (evicted, read)
                });
                self.count_evicted(evicted);
                read
            } else {
                ChannelRead::default()
            };
            channels.push(read);
        }
        let snapshot = Snapshot {
            channels,
            heads: log.timeline.slice(lo.min(hi), hi),
            issued: (log.next > log.first).then(|| (log.first, log.next - 1)),
            release_block_known: release.is_some_and(|p| log.timeline.is_raise(p.major)),
        };
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn park(&self, subs: Vec<ParkedSub>, now: Instant) -> EngineFuture<'static, usize> {
        let mut parked = lock(&self.parked);
        let mut kept = 0;
        for sub in subs {
            if parked.by_id.len() >= self.max_parked {
                self.metrics.parked_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            parked.order.push_back((now, sub.id.clone()));
            parked.by_id.insert(sub.id.clone(), (sub, now));
            kept += 1;
        }
        Box::pin(std::future::ready(kept))
    }

    fn claim(&self, key: &str, ids: &[String], now: Instant) -> EngineFuture<'_, Vec<ParkedSub>> {
        let mut parked = lock(&self.parked);
        let window = self.limits.window;
        let mut claimed = Vec::new();
        for id in ids {
            let usable = parked.by_id.get(id.as_str()).is_some_and(|(s, at)| {
                *s.key == *key && now.saturating_duration_since(*at) <= window
            });
            if usable {
                if let Some((sub, _)) = parked.by_id.remove(id.as_str()) {
                    claimed.push(sub);
                }
            }
        }
        Box::pin(std::future::ready(claimed))
    }

    fn expire(&self, now: Instant) {
        let window = self.limits.window;
        {
            let mut parked = lock(&self.parked);
            while let Some((at, _)) = parked.order.front() {
                if now.saturating_duration_since(*at) <= window {
                    break;
                }
                let Some((at, id)) = parked.order.pop_front() else {
                    break;
                };
                if parked.by_id.get(&id).is_some_and(|(_, a)| *a == at) {
                    parked.by_id.remove(&id);
                }
            }
            // Entries claimed earlier leave `order` only by age; keep it bounded too.
            if parked.order.len() > self.max_parked.saturating_mul(2) {
                let live: std::collections::HashSet<Arc<str>> =
                    parked.by_id.keys().cloned().collect();
                parked.order.retain(|(_, id)| live.contains(id));
            }
        }
        let mut log = lock(&self.log);
        let mut total = crate::history::Evicted::default();
        let names: Vec<Arc<str>> = log.channels.keys().cloned().collect();
        for name in names {
            let e = log.with_channel(&name, |h| h.trim(&self.limits, now));
            total.by_age += e.by_age;
            total.by_bound += e.by_bound;
        }
        self.count_evicted(total);
    }

    fn parked(&self) -> usize {
        lock(&self.parked).by_id.len()
    }

    fn history_size(&self) -> (usize, usize) {
        let log = lock(&self.log);
        log.channels
            .values()
            .fold((0, 0), |(n, b), h| (n + h.len(), b + h.bytes()))
    }
}
