//! Every message the actors exchange: who sends it, to whom, and what it returns.

use std::sync::Arc;
use std::time::Instant;

use actix::{Message, Recipient};
use bytestring::ByteString;

use crate::outbox::Outbox;

use crate::event::Event;
use crate::filter::Filter;
use crate::keys::ApiKey;
use crate::protocol::Dialect;
use crate::rate_limiter::{Admission, AdmitError};

/// Identifies one WebSocket connection for the lifetime of the broker.
pub type ConnId = u64;

/// Connection → ChannelHub: register a subscription. Returns once it is live, so that
/// an event published after the reply reaches it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The subscribing connection.
    pub conn: ConnId,
    /// The new subscription's id.
    pub subscription_id: Arc<str>,
    /// What it matches.
    pub filter: Filter,
    /// Where matching events go.
    pub outbox: Outbox,
}

/// Connection (reconnect) → ChannelHub: move these subscriptions of `from` to `to`, whose
/// outbox receives their events from now on. Filters and pending `confirmations` releases
/// move with them. Returns once moved.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reattach {
    /// The connection that had them.
    pub from: ConnId,
    /// The connection that takes them.
    pub to: ConnId,
    /// Which subscriptions.
    pub subscription_ids: Vec<Arc<str>>,
    /// The new connection's outbox.
    pub outbox: Outbox,
}

/// Sessions → Connection: a reconnect elsewhere claimed this connection's subscriptions;
/// close without keeping them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

/// Connection → ChannelHub: end a subscription. Returns whether it existed for `conn`.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Unsubscribe {
    /// The connection that owns it.
    pub conn: ConnId,
    /// The subscription to end.
    pub subscription_id: Arc<str>,
}

/// Connection → ChannelHub: the connection ended; drop all its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    /// The connection that ended.
    pub conn: ConnId,
}

/// Publisher → ChannelHub: events for this channel, in publish order. Returns when the
/// hub has fanned them out (publishers wait, so hub queues stay bounded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishBatch(pub Vec<Arc<Event>>);

/// Publisher → ChannelHub: the highest block seen on `blocks` rose to this number.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HeadAdvanced(pub u64);

/// HTTP upgrade handler → RateLimiter: admit a connection for `key`. Returns the
/// connection's quotas and a ticket that frees the slot when dropped.
#[derive(Message)]
#[rtype(result = "Result<Admission, AdmitError>")]
pub struct Admit {
    /// The key connecting.
    pub key: Arc<ApiKey>,
    /// Which endpoint (decides the message cap).
    pub dialect: Dialect,
}

/// Ticket (on drop) → RateLimiter: the connection ended; free its slot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The connection that ended.
    pub conn: ConnId,
}

/// Connection → Heartbeat: include this connection in heartbeats and shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// The connection.
    pub conn: ConnId,
    /// Where heartbeat ticks go.
    pub tick: Recipient<Tick>,
    /// Where the shutdown notice goes.
    pub shutdown: Recipient<Shutdown>,
}

/// Connection → Heartbeat: the connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// The connection that ended.
    pub conn: ConnId,
}

/// Heartbeat → Connection, every interval: send the heartbeat frame and a ping, and close
/// 4004 if the client has been silent past the timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick {
    /// The heartbeat frame per dialect, rendered once per tick.
    pub frames: Arc<[ByteString; Dialect::COUNT]>,
    /// When the tick was taken.
    pub at: Instant,
}

/// Heartbeat → Connection: the broker is shutting down; close with 1001.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Broker handle → Heartbeat: tell every connection to close with 1001. Returns how many
/// connections were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll;
