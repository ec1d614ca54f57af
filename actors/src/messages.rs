//! Every message the actors exchange: who sends it, to whom, and what it returns.

use std::sync::Arc;
use std::time::Instant;

use actix::{Message, Recipient};
use bytestring::ByteString;

use crate::fanout::outbox::Outbox;

use crate::disconnect::Disconnect;
use crate::filter::Filter;
use crate::keys::ApiKey;
use crate::protocol::Dialect;
use crate::rate_limiter::{Admission, AdmitError};

/// Identifies one WebSocket connection for the lifetime of the broker.
pub type ConnId = u64;

/// One subscription to attach to a hub.
pub struct AttachSub {
    /// Its id.
    pub id: Arc<str>,
    /// What it matches.
    pub filter: Filter,
    /// For a resumed subscription, the sequence number last issued when it was made;
    /// `None` for a new one (the hub takes the last number handed to it).
    pub created: Option<u64>,
}

/// Connection → ChannelHub: attach subscriptions to connection `conn`, whose outbox
/// receives their events from the next step on. A subscription another connection holds
/// is moved (a `reconnect`, PROTOCOL.md 10.9 and 10.33). Returns [`Attached`].
#[derive(Message)]
#[rtype(result = "Attached")]
pub struct Attach {
    /// The connection taking them.
    pub conn: ConnId,
    /// Its outbox.
    pub outbox: Outbox,
    /// The subscriptions.
    pub subs: Vec<AttachSub>,
}

/// What [`Attach`] did.
pub struct Attached {
    /// Each subscription's created-at sequence number, in the order given.
    pub created: Vec<u64>,
    /// The last sequence number the hub had processed: a replay covers the channel's
    /// history up to here, live delivery everything after.
    pub cut: u64,
}

/// Sessions (on a reconnect elsewhere) → Connection: these subscriptions moved to
/// another connection; forget them and stay open with the rest (PROTOCOL.md 10.33).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Moved(pub Vec<Arc<str>>);

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
    /// Where a reload's new keys go.
    pub rekey: Recipient<Rekey>,
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

/// Heartbeat → Connection: close now, for this reason (1001 at shutdown, 1013 when the
/// node lost part of its engine stream).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Shutdown(pub Disconnect);

/// Broker handle (or the engine's gap watch) → Heartbeat: tell every connection to close
/// for this reason. Returns how many connections were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll(pub Disconnect);

/// The keys after a configuration reload, by name, each with its roles, cap and secret id.
pub type KeyTable = std::collections::HashMap<String, Arc<ApiKey>>;

/// The ids of the configured token issuers after a configuration reload (a keyed hash of
/// each issuer's name and key, [`crate::token::TokenInfo::issuer_id`]).
pub type IssuerIds = std::collections::HashSet<u64>;

/// Heartbeat → Connection, after a configuration reload: take your key's new roles and
/// cap from the table; close with 4000 if it is not there (removed) or has another
/// secret id (rotated). A connection made with a signed token closes with 4000 when its
/// issuer is not among `issuers` (removed, or its key changed).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Rekey {
    /// Every configured key, by name.
    pub keys: Arc<KeyTable>,
    /// Every configured token issuer.
    pub issuers: Arc<IssuerIds>,
}

/// Broker handle → Heartbeat: pass the reloaded keys and issuers to every connection.
/// Returns how many connections were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RekeyAll(pub Rekey);

/// Dashboard sampler → RateLimiter: open connections per key name, sorted by name (keys
/// with none are left out). Bounded by the configured keys.
#[derive(Message)]
#[rtype(result = "Vec<(String, u32)>")]
pub struct ConnectionsByKey;
