//! The publisher: validates events against the channel catalogue and hands the batch to
//! the engine, which sequences it, appends it to history and feeds the fan-out in one
//! step. Every publish path (HTTP, WebSocket, an embedding application's Rust handle, the
//! built-in ledger) goes through [`Publisher::publish`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::channels::{self, validate_event, ChannelKind};
use crate::delivery::Delivery;
use crate::engine::{Engine, EngineError};
use crate::event::Draft;
use crate::flow::Flow;
use crate::hubs::Hubs;
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
            PublishError::Unavailable(why) => {
                write!(f, "unavailable: {why}; nothing was published")
            }
        }
    }
}

impl std::error::Error for PublishError {}

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
}

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

    /// Validates the whole batch, has the engine sequence and append it, and waits until
    /// the node's hubs have fanned it out (after waiting while flow control holds
    /// publishers back). Returns the ids in batch order. One bad event publishes nothing.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<String>, PublishError> {
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
        let n = drafts.len() as u64;
        let shutting_down = || PublishError::Unavailable("the broker is shutting down".into());
        if inner.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        inner.flow.wait(inner.max_stall).await;
        let permit = inner.delivery.permit().await.ok_or_else(shutting_down)?;
        let appended = inner
            .engine
            .append(drafts)
            .await
            .map_err(|EngineError::Unavailable(why)| PublishError::Unavailable(why))?;
        let ids = appended.events.iter().map(|e| e.id.clone()).collect();
        // Fanned out (or the hubs stopped, which only happens at shutdown).
        let _ = appended.delivered.await;
        drop(permit);
        inner
            .metrics
            .events_published
            .fetch_add(n, Ordering::Relaxed);
        Ok(ids)
    }
}
