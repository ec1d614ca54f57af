//! The Rust client of the Rustorium WebSocket API (the broker's `/ws` node API and `/v1`
//! API), on tokio.
//!
//! ```no_run
//! use futures::StreamExt;
//! use rustorium_sdk::{Event, WebSocketClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = WebSocketClient::new()
//!     .with_endpoint("ws://localhost:9072/ws")
//!     .with_api_key("KEY")
//!     .build()?;
//! let mut events = client.subscribe_events(&["blocks", "transactions"]).await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::NewBlock(block) => println!("New block: {}", block.number),
//!         Event::TransactionConfirmed(tx) => println!("Transaction confirmed: {}", tx.hash),
//!         Event::StateUpdate(update) => println!("State updated: {update:?}"),
//!         Event::Error(error) => eprintln!("Error: {error}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! **No loss across drops.** A stream keeps the id of the last event it handed on and the
//! ids of its subscriptions. When its connection ends for any reason but a refused key, it
//! reconnects ([`Backoff`]: at once after a connection that was up, else 1 s, doubling, at
//! most 30 s, with jitter), sends `reconnect` with that id, and goes on with the events the
//! broker replays: the application sees every event once, in order. When the broker cannot
//! make the stream whole (its history no longer reaches back, or it restarted), the stream
//! says so ([`Error::Gap`] in an [`Event::Error`], [`Update::Gap`]) and subscribes again
//! what the broker lost. Heartbeats are answered; a connection silent for two heartbeat
//! intervals plus a margin counts as dead and is resumed. Close codes: 4000 (refused key)
//! ends the stream after reporting it, except 4000 `token expired` with a
//! [`TokenProvider`], which reconnects with a new token and resumes; 4001 backs off; 4004,
//! 4005, 1001 and 1013 resume at once. A stream holds at most [`ClientBuilder::with_buffer`] items; while it is full the
//! client reads nothing more, the broker holds the events (and past its slow-consumer bound
//! closes with 4005), and the client resumes once the application reads again.
//!
//! # Crate map
//! - [`client`](WebSocketClient): the client, its streams and its commands.
//! - `builder`: [`ClientBuilder`], the settings and their defaults.
//! - `backoff`: [`Backoff`], the reconnect waits.
//! - `driver`: the task behind a stream: connect, subscribe, resume, hand events on.
//! - `stream`: [`EventStream`] and [`UpdateStream`], what the application reads.
//! - `event`: [`Event`] and the typed data of each channel ([`Block`], [`Transaction`], ...).
//! - `subscription`: [`Subscription`] (channel and filter) and [`Update`].
//! - `commands`: the shared command connection; [`TransactionRequest`], [`TokenInfo`], ...
//! - `wire`: frames of both dialects in and out, event ids as positions.
//! - `token`: [`TokenProvider`], signed tokens asked before each connection and refreshed
//!   in place before they expire.
//! - `transport`: opening a connection, reading why it closed.
//! - `error`: [`Error`], [`ErrorCode`], [`Gap`].

// Nothing a client, a publisher or a config file controls may panic.
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

mod backoff;
mod builder;
mod client;
mod commands;
mod driver;
mod error;
mod event;
mod stream;
mod subscription;
mod token;
mod transport;
mod wire;

pub use backoff::Backoff;
pub use builder::ClientBuilder;
pub use client::WebSocketClient;
pub use commands::{Balance, PublishEvent, TokenInfo, TransactionRequest, TransactionResponse};
pub use error::{Error, ErrorCode, Gap, Result};
pub use event::{
    Block, Event, MarketUpdate, Meta, StateUpdate, Timestamp, TokenUpdate, Transaction,
    TransactionUpdate,
};
pub use stream::{EventStream, StreamStats, UpdateStream};
pub use subscription::{Subscription, Update};
pub use token::TokenProvider;
pub use wire::RawEvent;
