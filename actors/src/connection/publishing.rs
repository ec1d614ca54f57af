//! A connection's publishes in flight. Each publish frame is submitted to the publisher
//! the moment it is read (the publisher coalesces consecutive frames into one engine
//! batch) and answered in frame order once its events are queued for every subscriber.
//! While the frames read and not yet answered reach `publish.connection_in_flight_bytes`,
//! the connection's [`ReadGate`] is closed: the broker stops reading the socket, and TCP
//! slows the publisher. A single frame of any size is always taken.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{ActorFutureExt, ContextFutureSpawner, WrapFuture};
use actix_web_actors::ws;
use serde_json::Value;

use super::requests::Failure;
use super::Connection;
use crate::metrics::Metrics;
use crate::protocol::render::Reply;
use crate::publisher::Submitted;
use crate::read_gate::ReadGate;

/// One publish frame waiting for its answer.
struct Slot {
    id: Option<Value>,
    bytes: usize,
    result: Option<Result<Reply, Failure>>,
}

/// The frames in flight, oldest first, and the gate they hold shut.
pub(super) struct InFlight {
    slots: VecDeque<Slot>,
    /// The number of `slots[0]` among all frames this connection submitted.
    front: u64,
    bytes: usize,
    limit: usize,
    gate: Arc<ReadGate>,
    /// Counts the gate's closings.
    metrics: Arc<Metrics>,
}

impl InFlight {
    /// Nothing in flight; reading pauses at `limit` bytes.
    pub(super) fn new(limit: usize, metrics: Arc<Metrics>) -> InFlight {
        InFlight {
            slots: VecDeque::new(),
            front: 0,
            bytes: 0,
            limit,
            gate: Arc::new(ReadGate::default()),
            metrics,
        }
    }

    /// The gate the connection's input waits on.
    pub(super) fn gate(&self) -> Arc<ReadGate> {
        self.gate.clone()
    }

    /// Whether the frame just read stands for one the input refused for being over the
    /// limit ([`ReadGate::take_oversized`]).
    pub(super) fn take_oversized(&self) -> bool {
        self.gate.take_oversized()
    }

    /// Whether nothing is waiting for an answer.
    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds a frame of `bytes` (answered already when `result` is set); returns its
    /// number. Closes the gate when the bound is reached.
    fn push(
        &mut self,
        id: Option<Value>,
        bytes: usize,
        result: Option<Result<Reply, Failure>>,
    ) -> u64 {
        let number = self.front.saturating_add(self.slots.len() as u64);
        self.slots.push_back(Slot { id, bytes, result });
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes >= self.limit && !self.gate.is_paused() {
            self.gate.pause();
            let m = &self.metrics;
            m.publish_read_pauses.fetch_add(1, Ordering::Relaxed);
        }
        number
    }

    /// Records frame `number`'s answer.
    fn settle(&mut self, number: u64, result: Result<Reply, Failure>) {
        let Some(at) = number.checked_sub(self.front) else {
            return;
        };
        if let Some(slot) = usize::try_from(at).ok().and_then(|i| self.slots.get_mut(i)) {
            slot.result = Some(result);
        }
    }

    /// The oldest frame's answer, if it has one; opens the gate below the bound.
    fn pop_ready(&mut self) -> Option<(Option<Value>, Result<Reply, Failure>)> {
        if self.slots.front().is_none_or(|s| s.result.is_none()) {
            return None;
        }
        let slot = self.slots.pop_front()?;
        self.front = self.front.saturating_add(1);
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        if self.bytes < self.limit {
            self.gate.resume();
        }
        Some((slot.id, slot.result?))
    }
}

impl Connection {
    /// Answers a publish frame of `bytes` that failed before it reached the publisher: at
    /// once when nothing is in flight, otherwise after the frames before it (counted
    /// against the bound meanwhile, so refused frames cannot pile up either).
    pub(super) fn publish_refused(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        bytes: usize,
        failure: Failure,
    ) {
        if self.in_flight.is_empty() {
            return self.respond(ctx, id.as_ref(), Err(failure));
        }
        self.in_flight.push(id, bytes, Some(Err(failure)));
    }

    /// Tracks a submitted publish frame of `bytes` and answers it, in frame order, when
    /// the publisher does.
    pub(super) fn publish_submitted(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        bytes: usize,
        submitted: Submitted,
    ) {
        let number = self.in_flight.push(id, bytes, None);
        submitted
            .into_actor(self)
            .map(move |res, this, ctx| {
                let res = res
                    .map(|ids| Reply::Published { ids })
                    .map_err(Failure::from);
                this.in_flight.settle(number, res);
                while let Some((id, result)) = this.in_flight.pop_ready() {
                    this.respond(ctx, id.as_ref(), result);
                }
                this.end_if_answered(ctx);
            })
            .spawn(ctx);
    }
}
