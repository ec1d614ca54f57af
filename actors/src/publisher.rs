//! The publisher: validates events, stamps them with message ids, and hands each channel's
//! events to its hub. Every publish path (HTTP, an embedding application's Rust handle,
//! later WebSocket) goes through [`Publisher::publish`].
//!
//! This is the seam where a publish leaves the process: `Publisher::dispatch` is the one
//! place that hands stamped events to local fan-out, and where a shared engine (Redis) will
//! sit between processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::event::Event;
use crate::filter::{validate_event, ChannelKind, MAX_CHANNEL_NAME};
use crate::hubs::{HubRef, Hubs};
use crate::messages::{HeadAdvanced, PublishBatch};
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
    /// The broker is stopping; the events may not all have been delivered.
    Unavailable,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Invalid { index, message } => write!(f, "event {index}: {message}"),
            PublishError::BatchSize { max } => {
                write!(f, "a batch holds from 1 to {max} events")
            }
            PublishError::Unavailable => write!(f, "the broker is shutting down"),
        }
    }
}

impl std::error::Error for PublishError {}

struct Inner {
    hubs: Arc<Hubs>,
    next_seq: AtomicU64,
    /// Highest block seen on `blocks`, plus one; 0 when none.
    head: AtomicU64,
    max_batch: usize,
    /// Longest wait per batch for congested connections (flow control).
    max_stall: Duration,
    metrics: Arc<Metrics>,
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

impl Publisher {
    /// A publisher into `hubs`. Message ids start from the current time in microseconds,
    /// so they keep increasing across restarts. Each batch waits up to `max_stall` while
    /// connections are congested (see [`crate::flow`]).
    pub fn new(
        hubs: Arc<Hubs>,
        max_batch: usize,
        max_stall: Duration,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Publisher {
            inner: Arc::new(Inner {
                hubs,
                next_seq: AtomicU64::new(start),
                head: AtomicU64::new(0),
                max_batch,
                max_stall,
                metrics,
            }),
        }
    }

    /// The most events one [`Publisher::publish`] call takes.
    pub fn max_batch(&self) -> usize {
        self.inner.max_batch
    }

    /// Reads events from a JSON body: one event object, or an array of them.
    pub fn parse_json(&self, body: Value) -> Result<Vec<NewEvent>, PublishError> {
        let items = match body {
            Value::Array(items) => items,
            one => vec![one],
        };
        if items.is_empty() || items.len() > self.inner.max_batch {
            return Err(PublishError::BatchSize {
                max: self.inner.max_batch,
            });
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

    /// Validates the whole batch, stamps message ids, and fans it out. Returns the ids in
    /// batch order once every hub has fanned its events out (after waiting while flow
    /// control holds publishers back). One bad event publishes nothing.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<String>, PublishError> {
        let inner = &self.inner;
        if events.is_empty() || events.len() > inner.max_batch {
            return Err(PublishError::BatchSize {
                max: inner.max_batch,
            });
        }
        let mut checked = Vec::with_capacity(events.len());
        for (i, ev) in events.into_iter().enumerate() {
            let hub = inner
                .hubs
                .get(&ev.channel)
                .map_err(|e| invalid(i, format!("channel: {e}")))?;
            let kind = match (hub.kind, ev.kind) {
                (ChannelKind::Plain, None) => "update".to_owned(),
                (ChannelKind::Plain, Some(t)) if !t.is_empty() && t.len() <= MAX_CHANNEL_NAME => t,
                (ChannelKind::Plain, Some(_)) => {
                    return Err(invalid(i, "type must be 1 to 64 characters"))
                }
                (k, None) => k.event_type().to_owned(),
                (k, Some(t)) if t == k.event_type() => t,
                (k, Some(_)) => {
                    return Err(invalid(
                        i,
                        format!(
                            "type must be \"{}\" on channel {} (or omitted)",
                            k.event_type(),
                            k.name()
                        ),
                    ))
                }
            };
            let block = validate_event(hub.kind, &ev.data).map_err(|m| invalid(i, m))?;
            checked.push((hub, kind, ev.data, block));
        }
        let n = checked.len() as u64;
        inner.metrics.flow.wait(inner.max_stall).await;
        let first = inner.next_seq.fetch_add(n, Ordering::Relaxed);
        let stamped: Vec<(HubRef, Arc<Event>)> = checked
            .into_iter()
            .zip(first..)
            .map(|((hub, kind, data, block), seq)| {
                let event = Event::new(seq, hub.name.clone(), kind, data, block);
                (hub, Arc::new(event))
            })
            .collect();
        let ids = stamped.iter().map(|(_, e)| e.id.clone()).collect();
        self.dispatch(stamped).await?;
        inner
            .metrics
            .events_published
            .fetch_add(n, Ordering::Relaxed);
        Ok(ids)
    }

    /// Hands stamped events to their hubs, grouped per hub in publish order, then tells the
    /// block-naming hubs if `blocks` moved the head.
    async fn dispatch(&self, stamped: Vec<(HubRef, Arc<Event>)>) -> Result<(), PublishError> {
        let mut new_head = None;
        let mut groups: HashMap<Arc<str>, (HubRef, Vec<Arc<Event>>)> = HashMap::new();
        for (hub, event) in stamped {
            if hub.kind == ChannelKind::Blocks {
                new_head = new_head.max(event.block);
            }
            groups
                .entry(hub.name.clone())
                .or_insert_with(|| (hub, Vec::new()))
                .1
                .push(event);
        }
        // Every hub's batch is queued at once (`send` enqueues before it is awaited), so
        // hubs on several channels work in parallel; each hub still gets its events in
        // publish order. Waiting for every hub to have fanned its batch out (rather than
        // only queued it) is what lets flow control see congestion before the next batch.
        let sent: Vec<_> = groups
            .into_values()
            .map(|(hub, events)| hub.addr.send(PublishBatch(events)))
            .collect();
        for done in futures_util::future::join_all(sent).await {
            done.map_err(|_| PublishError::Unavailable)?;
        }
        if let Some(n) = new_head {
            let before = self.inner.head.fetch_max(n + 1, Ordering::AcqRel);
            if n + 1 > before {
                for hub in self.inner.hubs.block_hubs() {
                    hub.addr
                        .send(HeadAdvanced(n))
                        .await
                        .map_err(|_| PublishError::Unavailable)?;
                }
            }
        }
        Ok(())
    }
}
