//! The actor system of rustorium-broker.
//!
//! Who sends what to whom:
//!
//! - The HTTP layer resolves a key, asks the [`rate_limiter::RateLimiter`] to admit the
//!   connection ([`messages::Admit`]), and starts a [`connection::Connection`] actor.
//! - A connection parses client frames ([`protocol::request`]), sends
//!   [`messages::Subscribe`] / [`messages::Unsubscribe`] to the
//!   [`channel_hub::ChannelHub`] of the channel (found in [`hubs::Hubs`]), and answers in
//!   its dialect ([`protocol::render`]). Per-message quotas are checked on the
//!   [`rate_limiter::ConnectionQuota`] it was given at admission.
//! - A publish goes through [`publisher::Publisher`]: validated ([`filter`]), stamped with
//!   a message id ([`event::Event`]), and sent as [`messages::PublishBatch`] to each hub,
//!   then [`messages::HeadAdvanced`] when `blocks` moved the chain head.
//! - A hub pushes each matching event, once per connection, into the connection's
//!   [`outbox`] (a bounded queue plus the log of what was written, for resume) and wakes the
//!   connection ([`outbox::Wake`]) when the queue was empty; the connection writes the
//!   event's frame, rendered once per dialect and shared by every subscriber. A queue past
//!   its bound makes the connection a slow consumer (closed 4005).
//! - The [`sessions::Sessions`] registry knows which subscription belongs to which
//!   connection and key; a connection that ends any way but a client close 1000 is parked
//!   there for the resume window, and a `reconnect` claims its subscriptions, moving them
//!   inside each hub ([`messages::Reattach`]) before replaying what was missed.
//! - The [`heartbeat::Heartbeat`] actor ticks once for the whole broker and sends
//!   [`messages::Tick`] to every connection, which writes the heartbeat and a ping (whose
//!   pong acknowledges the outbox's sent log) and closes itself 4004 when the client has
//!   been silent too long. Each tick also sweeps expired parked sessions.
//! - Commands go to the [`backend::Backend`] the broker was started with.
//!
//! Per-message path: client frame → `Connection` → (subscribe) hub; publish →
//! `Publisher` → hub → outbox → `Connection` → socket.

pub mod backend;
pub mod channel_hub;
pub mod connection;
pub mod core;
pub mod event;
pub mod filter;
pub mod flow;
pub mod heartbeat;
pub mod hubs;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod publisher;
pub mod rate_limiter;
pub mod sessions;
pub mod settings;

pub use crate::core::Core;
pub use keys::{ApiKey, Role};
pub use publisher::{NewEvent, PublishError, Publisher};
pub use settings::Settings;
