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
//! - A hub renders each event once per dialect and `try_send`s [`messages::Deliver`] to
//!   every matching connection; a full mailbox marks the connection slow (closed 4005).
//! - The [`heartbeat::Heartbeat`] actor ticks once for the whole broker and sends
//!   [`messages::Tick`] to every connection, which writes the heartbeat and a ping and
//!   closes itself 4004 when the client has been silent too long.
//!
//! Per-message path: client frame → `Connection` → (subscribe) hub; publish →
//! `Publisher` → hub → `Deliver` → `Connection` → socket.

// Nothing a client or a config file controls may panic the broker.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod channel_hub;
pub mod connection;
pub mod core;
pub mod event;
pub mod filter;
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
