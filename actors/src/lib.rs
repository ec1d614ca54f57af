//! The actor system of rustorium-broker.
//!
//! Where each thing lives (one noun per file):
//!
//! | file | what |
//! | --- | --- |
//! | [`core`] | the actor system of one broker, started together |
//! | [`connection`] | one admitted client: lifecycle, frames, flush, ticks; its [`connection::refused`] sibling answers refused ones |
//! | [`connection::frames`] | what a connection reads before requests: ping budget (`connection/control.rs`), fragments, UTF-8 |
//! | `connection/requests.rs` | every request: quota, role, handler, one exit for replies and errors |
//! | `connection/resume.rs` | `reconnect`: claim, attach, replay, then live (only what a token's grant allows) |
//! | `connection/refresh.rs` | a signed token's life on a connection: the expiry close 4000 and `refresh` |
//! | [`disconnect`] | every reason a connection ends: code, reason, metric |
//! | [`fanout`] | the fan-out, importing in one direction: [`fanout::progress`] the watermark and a batch's ticket; [`fanout::outbox`] the bounded per-connection queue, drained in sequence order; [`fanout::index`] a hub's subscriptions by filter value and prefix; [`fanout::batch`] a hub's steps; [`fanout::channel_hub`] one channel's subscriptions and its fan-out; [`fanout::hubs`] the registry; [`fanout::delivery`] the engine's sink, batches to hubs in sequence order |
//! | [`confirmations`] | the `confirmations` gate: held events, the head, release ids `B.E` |
//! | [`channels`] | the catalogue: names, event types, routing fields, publish validation |
//! | [`filter`] | subscription filters: parse, match |
//! | [`token`] | signed tokens as the actors see them: identity, expiry, refusal reasons, the verifier seam |
//! | [`grant`] | a token's `channels` grant and whether a subscription is inside it |
//! | [`engine`] | the seam: sequence, history, head, parked subscriptions: [`engine::memory`] for one process, [`engine::redis`] for a cluster on one Redis ([`engine::redis::link`] the master: a URL or Sentinel, TLS and ACL users, following failovers; [`engine::redis::eventlog`] the keys, atomic append and consistent read, ids across failovers; [`engine::redis::fanout`] this node's feed, liveness probe, reconnect and backfill; [`engine::redis::lease`] connection slots; [`engine::redis::record`] the stored record) |
//! | [`history`] | one channel's kept events and the head's timeline |
//! | [`resume`] | what a resume replays from history, and whether it is complete |
//! | [`position`] | message ids and their place in the sequence |
//! | [`flow`] | publisher back-pressure |
//! | [`read_gate`] | stop reading a publisher's socket while its publishes are at their bound |
//! | `connection/publishing.rs` | a connection's publishes in flight, answered in frame order |
//! | [`publisher`] | validation, coalescing (group commit), then the engine |
//! | [`sessions`] | which live connection holds each subscription |
//! | [`rate_limiter`], [`heartbeat`], [`metrics`], [`settings`], [`backend`], [`keys`], [`protocol`], [`messages`], [`event`] | as named |
//!
//! Who sends what to whom:
//!
//! - The HTTP layer resolves a key, asks the [`rate_limiter::RateLimiter`] to admit the
//!   connection ([`messages::Admit`]), and starts a [`connection::Connection`] (or a
//!   [`connection::refused::Refused`] that writes one error and closes).
//! - A connection parses client frames ([`protocol::request`]) and sends
//!   [`messages::Attach`] / [`messages::Unsubscribe`] to the [`fanout::channel_hub::ChannelHub`]
//!   of the channel (found in [`fanout::hubs::Hubs`]); it answers in its dialect
//!   ([`protocol::render`]).
//! - A publish goes through [`publisher::Publisher`] (validated against [`channels`]) to
//!   the [`engine::Engine`], which in one step gives each event its id in the one
//!   sequence, appends it to its channel's [`history`], raises the chain head, and hands
//!   the batch to [`fanout::delivery::Delivery`]; that has each hub fan its steps
//!   ([`fanout::batch::Step`]) out in sequence order, there and then, on the appending
//!   thread (the hub's [`fanout::channel_hub::SharedHub`]).
//! - A hub finds the subscriptions an event matches in its [`fanout::index`] and pushes
//!   the event, once per connection, into the connection's [`fanout::outbox`] and wakes
//!   it; releases by `confirmations` go in at `B.E`. The connection writes the event's
//!   frame, rendered once per dialect and shared by every subscriber.
//!   An outbox fed by several hubs drains only up to the watermark
//!   ([`fanout::progress::Progress`]) so frames leave in sequence order; past its bound the
//!   connection is a slow consumer (closed 4005) and resumes from history.
//! - A connection that ends any way but a client close 1000 parks its subscriptions in
//!   the engine for the resume window; a `reconnect` claims them (or moves them from a
//!   live connection, [`sessions`]), attaches them, and replays from history
//!   ([`resume`]) up to each hub's cut, merged with what arrives live after it.
//! - The [`heartbeat::Heartbeat`] actor ticks once for the whole broker and sends
//!   [`messages::Tick`] to every connection, which writes the heartbeat and a ping and
//!   closes itself 4004 when the client has been silent too long.
//! - Commands go to the [`backend::Backend`] the broker was started with.
//!
//! Per-message path: publish → `Publisher` (parse, validate) → engine (sequence,
//! history) → `Delivery` → hub (fan-out) → outbox → `Connection` (frame rendered once,
//! write).

// Nothing a client, a publisher or a config file controls may panic.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod channels;
pub mod confirmations;
pub mod connection;
pub mod core;
pub mod disconnect;
pub mod engine;
pub mod event;
pub mod fanout;
pub mod filter;
pub mod flow;
pub mod grant;
pub mod heartbeat;
pub mod history;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod position;
pub mod protocol;
pub mod publisher;
pub mod rate_limiter;
pub mod read_gate;
pub mod resume;
pub mod sessions;
pub mod settings;
pub mod token;

pub use crate::core::Core;
pub use keys::{ApiKey, Role};
pub use publisher::{NewEvent, PublishError, Publisher};
pub use settings::Settings;
