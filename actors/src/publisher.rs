//! The publisher: validates events against the channel catalogue and hands them to the
//! engine, which sequences them, appends them to history and feeds the fan-out in one
//! step. Every publish path (HTTP, WebSocket, an embedding application's Rust handle, the
//! built-in ledger) goes through [`Publisher::submit`] (or [`Publisher::publish`]).
//!
//! Coalescing (group commit): a submitted publish joins a queue. One appender task drains
//! it: it takes every publish waiting, up to `publish.coalesce_events` events, as one
//! engine batch, in the order they were submitted (flow control, [`crate::flow`], decides
//! whether the next may go; with the Redis engine at most `limits.hub_queue_batches` are
//! between their append and their fan-out). Each publish is answered with its own ids once
//! its batch is fanned out. So consecutive frames of one connection, or concurrent HTTP
//! publishes, travel to the hubs together, and each still gets its own reply.
//!
//! The appender runs on the thread of the publish that found it idle (a connection's
//! worker, or the HTTP handler's), and the memory engine fans a batch out there too: an
//! uncontended publish is appended, fanned out and answered without leaving its thread.
//! Only a caller outside the actor system starts it on the actors' arbiter.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::ArbiterHandle;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::channels::{self, validate_event, ChannelKind};
use crate::engine::{Engine, EngineError};
use crate::event::Draft;
use crate::fanout::delivery::Delivery;
use crate::fanout::hubs::Hubs;
use crate::flow::Flow;
use crate::metrics::Metrics;

/// An event to publish, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The channel (`blocks`, `market_data`, or an allowed plain channel).
    pub channel: String,
    /// The event `type`; `None` takes the channel's (`new_block`, `update`...).
    pub kind: Option<String>,
    /// The payload.
    pub data: Value,
}

impl NewEvent {
    /// An event of the channel's default type.
    pub fn new(channel: impl Into<String>, data: Value) -> NewEvent {
        NewEvent {
            channel: channel.into(),
            kind: None,
            data,
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Event `index` of the batch is bad; `message` names the field. Nothing was published.
    Invalid {
        /// Position in the batch (0 for a single event).
        index: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The batch is empty or larger than the limit.
    BatchSize {
        /// The configured maximum.
        max: usize,
    },
    /// Publishes waiting for the engine already hold `max` events
    /// (`publish.max_queued_events`): nothing was published; the client may retry
    /// (answered `unavailable`, PROTOCOL.md item 34: the broker cannot take it now).
    Busy {
        /// The configured bound.
        max: usize,
    },
    /// The broker cannot take the batch now (shutting down, or its engine unreachable):
    /// nothing was published; the client may retry (PROTOCOL.md item 34).
    Unavailable(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Invalid { index, message } => write!(f, "event {index}: {message}"),
            PublishError::BatchSize { max } => {
                write!(f, "a batch holds from 1 to {max} events")
            }
            PublishError::Busy { max } => write!(
                f,
                "unavailable: the publish queue is full ({max} events wait to be sequenced); nothing was published, retry"
            ),
            PublishError::Unavailable(why) => {
                write!(f, "unavailable: {why}; nothing was published")
            }
        }
    }
}

impl std::error::Error for PublishError {}

/// Where one publish's answer goes.
type Reply = oneshot::Sender<Result<Vec<String>, PublishError>>;

/// One submitted publish waiting for the appender.
struct Entry {
    drafts: Vec<Draft>,
    reply: Reply,
}

/// Publishes waiting for the appender, and whether it runs.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Events in `entries`.
    events: usize,
    /// An appender task is draining the queue.
    running: bool,
}

impl Queue {
    /// Queues `entry` unless that would hold more than `max` events; an empty queue takes
    /// a publish of any size.
    fn push(&mut self, entry: Entry, max: usize) -> Result<(), Entry> {
        let n = entry.drafts.len();
        if !self.entries.is_empty() && self.events.saturating_add(n) > max {
            return Err(entry);
        }
        self.events = self.events.saturating_add(n);
        self.entries.push_back(entry);
        Ok(())
    }

    /// The next coalesced batch: publishes in submit order up to `coalesce` events (at
    /// least one publish, whatever its size); empty when nothing waits.
    fn take(&mut self, coalesce: usize) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut events = 0usize;
        while let Some(next) = self.entries.front() {
            let n = next.drafts.len();
            if !batch.is_empty() && events.saturating_add(n) > coalesce {
                break;
            }
            events = events.saturating_add(n);
            if let Some(e) = self.entries.pop_front() {
                batch.push(e);
            }
        }
        self.events = self.events.saturating_sub(events);
        batch
    }
}

struct Inner {
    hubs: Arc<Hubs>,
    engine: Arc<dyn Engine>,
    delivery: Arc<Delivery>,
    max_batch: usize,
    /// Longest wait per batch for congested connections (flow control).
    max_stall: Duration,
    flow: Arc<Flow>,
    metrics: Arc<Metrics>,
    /// Set when the broker starts shutting down: publishes are refused `unavailable`.
    closing: AtomicBool,
    /// Most events per coalesced batch.
    coalesce: usize,
    /// Most events waiting for the appender.
    max_queued: usize,
    queue: Mutex<Queue>,
    /// Where the appender runs.
    arbiter: ArbiterHandle,
}

/// A cheap, cloneable handle that publishes into the broker.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

fn invalid(index: usize, message: impl Into<String>) -> PublishError {
    PublishError::Invalid {
        index,
        message: message.into(),
    }
}

/// What a publisher is built from.
pub struct PublisherParts {
    /// Channel hubs, for the catalogue (and plain channels).
    pub hubs: Arc<Hubs>,
    /// Sequence and history.
    pub engine: Arc<dyn Engine>,
    /// The fan-out, for its in-flight bound.
    pub delivery: Arc<Delivery>,
    /// Most events per batch.
    pub max_batch: usize,
    /// Longest flow-control wait per batch.
    pub max_stall: Duration,
    /// Flow control, shared with every outbox.
    pub flow: Arc<Flow>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Most events per coalesced batch.
    pub coalesce: usize,
    /// Most events waiting for the appender (`publish.max_queued_events`).
    pub max_queued: usize,
    /// The arbiter the appender task runs on.
    pub arbiter: ArbiterHandle,
}

/// The answer to one submitted publish: its ids in batch order once its batch is fanned
/// out, or why nothing was published.
pub type Submitted = Pin<Box<dyn Future<Output = Result<Vec<String>, PublishError>> + Send>>;

impl Publisher {
    /// A publisher from its parts. Each batch waits up to `max_stall` while connections
    /// are congested (see [`crate::flow`]).
    pub fn new(parts: PublisherParts) -> Publisher {
        Publisher {
            inner: Arc::new(Inner {
                hubs: parts.hubs,
                engine: parts.engine,
                delivery: parts.delivery,
                max_batch: parts.max_batch,
                max_stall: parts.max_stall,
                flow: parts.flow,
                metrics: parts.metrics,
                closing: AtomicBool::new(false),
                coalesce: parts.coalesce.max(1),
                max_queued: parts.max_queued.max(1),
                queue: Mutex::new(Queue::default()),
                arbiter: parts.arbiter,
            }),
        }
    }

    /// From now on every publish is refused `unavailable` (the broker is shutting down).
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
    }

    /// The most events one [`Publisher::publish`] call takes.
    pub fn max_batch(&self) -> usize {
        self.inner.max_batch
    }

    /// Reads events from a JSON body: one event object, or an array of at most
    /// `publish.max_batch_events` ([`parse_events`]).
    pub fn parse_json(&self, body: Value) -> Result<Vec<NewEvent>, PublishError> {
        parse_events(body, self.inner.max_batch)
    }

    /// Validates the whole batch, has the engine sequence and append it (coalesced with
    /// other publishes, see the module documentation), and waits until the node's hubs
    /// have fanned it out. Returns the ids in batch order. One bad event publishes nothing.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<String>, PublishError> {
        self.submit(events)?.await
    }

    /// Validates the whole batch and queues it for the engine now, in call order: a
    /// caller's later submits are appended after this one. The returned future answers
    /// with the ids once the batch is fanned out; dropping it does not withdraw the
    /// publish. One bad event publishes nothing (the error comes at once).
    pub fn submit(&self, events: Vec<NewEvent>) -> Result<Submitted, PublishError> {
        let inner = &self.inner;
        if events.is_empty() || events.len() > inner.max_batch {
            return Err(PublishError::BatchSize {
                max: inner.max_batch,
            });
        }
        let mut drafts = Vec::with_capacity(events.len());
        for (i, ev) in events.into_iter().enumerate() {
            let hub = inner
                .hubs
                .get(&ev.channel)
                .map_err(|e| invalid(i, format!("channel: {e}")))?;
            let kind = channels::event_type(hub.kind, ev.kind).map_err(|m| invalid(i, m))?;
            let block = validate_event(hub.kind, &ev.data).map_err(|m| invalid(i, m))?;
            drafts.push(Draft {
                channel: hub.name.clone(),
                kind,
                data: ev.data,
                block,
                is_block: hub.kind == ChannelKind::Blocks,
            });
        }
        if inner.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = lock(&inner.queue);
            if q.push(Entry { drafts, reply }, inner.max_queued).is_err() {
                return Err(PublishError::Busy {
                    max: inner.max_queued,
                });
            }
            !std::mem::replace(&mut q.running, true)
        };
        // On this thread's arbiter when there is one: no thread crossing to append.
        let here = actix::Arbiter::try_current().unwrap_or_else(|| inner.arbiter.clone());
        if start && !here.spawn(append_loop(self.inner.clone())) {
            // The actors' arbiter is gone: the broker is stopping.
            let mut q = lock(&inner.queue);
            q.running = false;
            for e in q.take(usize::MAX) {
                let _ = e.reply.send(Err(shutting_down()));
            }
        }
        Ok(Box::pin(async move {
            answer.await.unwrap_or_else(|_| Err(shutting_down()))
        }))
    }
}

/// Reads events from a JSON publish body: one event object `{channel, type, data}`, or an
/// array of 1 to `max_batch` of them. Only the shape is checked here; channels and data
/// are validated when the batch is submitted. The error names the event's index.
pub fn parse_events(body: Value, max_batch: usize) -> Result<Vec<NewEvent>, PublishError> {
    let items = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    if items.is_empty() || items.len() > max_batch {
        return Err(PublishError::BatchSize { max: max_batch });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut obj) = item else {
                return Err(invalid(
                    i,
                    "an event must be an object {\"channel\", \"type\", \"data\"}",
                ));
            };
            let channel = match obj.remove("channel") {
                Some(Value::String(c)) => c,
                Some(_) => return Err(invalid(i, "channel must be a string")),
                None => return Err(invalid(i, "channel is required")),
            };
            let kind = match obj.remove("type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(t),
                Some(_) => return Err(invalid(i, "type must be a string")),
            };
            let data = match obj.remove("data") {
                None | Some(Value::Null) => return Err(invalid(i, "data is required")),
                Some(d) => d,
            };
            Ok(NewEvent {
                channel,
                kind,
                data,
            })
        })
        .collect()
}

fn shutting_down() -> PublishError {
    PublishError::Unavailable("the broker is shutting down".into())
}

/// Locks the queue; a poisoned lock is still usable (the queue is consistent between
/// statements).
fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The next coalesced batch; `None` when the queue is empty, and the appender stops.
fn take_batch(inner: &Inner) -> Option<Vec<Entry>> {
    let mut q = lock(&inner.queue);
    let batch = q.take(inner.coalesce);
    if batch.is_empty() {
        q.running = false;
        return None;
    }
    Some(batch)
}

/// The running appender's claim on the queue. If its task is dropped before the queue ran
/// dry (the worker it ran on stopped), the queue would stay claimed with nobody draining
/// it: the claim passes to a new appender on the actors' arbiter instead.
struct Claim {
    inner: Arc<Inner>,
    /// Set when the appender let the queue go itself (it ran dry).
    released: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let inner = &self.inner;
        if !inner.arbiter.spawn(append_loop(inner.clone())) {
            let mut q = lock(&inner.queue);
            q.running = false;
            for e in q.take(usize::MAX) {
                let _ = e.reply.send(Err(shutting_down()));
            }
        }
    }
}

/// The appender: batch after batch, flow control, a fan-out permit, one engine append;
/// the answers go out when the hubs have the batch, while the next batch is appended.
async fn append_loop(inner: Arc<Inner>) {
    let mut claim = Claim {
        inner: inner.clone(),
        released: false,
    };
    append_batches(&inner).await;
    claim.released = true;
}

/// Appends batches until the queue runs dry (and lets it go).
async fn append_batches(inner: &Arc<Inner>) {
    while let Some(batch) = take_batch(inner) {
        let mut drafts = Vec::with_capacity(batch.iter().map(|e| e.drafts.len()).sum());
        let mut replies = Vec::with_capacity(batch.len());
        for entry in batch {
            replies.push((entry.drafts.len(), entry.reply));
            drafts.extend(entry.drafts);
        }
        let fail = |replies: Vec<(usize, Reply)>, e: PublishError| {
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        };
        if inner.closing.load(Ordering::Acquire) {
            fail(replies, shutting_down());
            continue;
        }
        // Room in the hubs first, then flow control: it then sees what the batches
        // before this one did to the subscribers' queues.
        let Some(permit) = inner.delivery.permit().await else {
            fail(replies, shutting_down());
            continue;
        };
        inner.flow.wait(inner.max_stall).await;
        let n = drafts.len() as u64;
        inner
            .metrics
            .publish_batches
            .fetch_add(1, Ordering::Relaxed);
        let appended = match inner.engine.append(drafts).await {
            Ok(appended) => appended,
            Err(EngineError::Unavailable(why)) => {
                fail(replies, PublishError::Unavailable(why));
                continue;
            }
        };
        let mut ids = appended.events.iter().map(|e| e.id.clone());
        let answers: Vec<_> = replies
            .into_iter()
            .map(|(count, reply)| (reply, ids.by_ref().take(count).collect::<Vec<_>>()))
            .collect();
        let metrics = inner.metrics.clone();
        let answer = move || {
            drop(permit);
            metrics.events_published.fetch_add(n, Ordering::Relaxed);
            for (reply, ids) in answers {
                let _ = reply.send(Ok(ids));
            }
        };
        let mut delivered = appended.delivered;
        match delivered.try_recv() {
            // Fanned out already (the memory engine fans out as it appends), or the hubs
            // stopped, which only happens at shutdown: answer now.
            Ok(()) | Err(oneshot::error::TryRecvError::Closed) => answer(),
            // Fanned out later (the Redis engine's feed): answer then, while the next
            // batch is appended.
            Err(oneshot::error::TryRecvError::Empty) => {
                actix::spawn(async move {
                    let _ = delivered.await;
                    answer();
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(events: usize) -> Entry {
        let draft = Draft {
            channel: Arc::from("c"),
            kind: "update".into(),
            data: Value::Null,
            block: None,
            is_block: false,
        };
        Entry {
            drafts: vec![draft; events],
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn the_queue_holds_at_most_its_bound_and_batches_in_submit_order() {
        let mut q = Queue::default();
        // An empty queue takes a publish of any size.
        assert!(q.push(entry(50), 10).is_ok());
        assert!(q.push(entry(1), 10).is_err(), "over the bound");
        assert_eq!(q.take(10).len(), 1, "one publish, whatever its size");
        assert!(q.push(entry(4), 10).is_ok());
        assert!(q.push(entry(6), 10).is_ok());
        assert!(q.push(entry(1), 10).is_err());
        // Coalesced up to 5 events: the 4, then the 6 alone.
        let sizes = |b: Vec<Entry>| b.iter().map(|e| e.drafts.len()).collect::<Vec<_>>();
        assert_eq!(sizes(q.take(5)), vec![4]);
        assert!(q.push(entry(3), 10).is_ok(), "room again");
        assert_eq!(sizes(q.take(100)), vec![6, 3]);
        assert!(q.take(100).is_empty());
        assert_eq!(q.events, 0);
    }
}
