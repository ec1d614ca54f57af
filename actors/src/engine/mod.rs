//! The engine seam: where the one sequence, the per-channel history, the chain head and
//! the parked subscriptions live (PROTOCOL.md sections 5, 7 and 11).
//!
//! Nothing above this trait knows which engine runs. [`memory::MemoryEngine`] keeps it
//! all in this process; a Redis engine (section 11) keeps it in Redis, where
//! [`Engine::append`] is one Lua script: sequence, stream append with trimming,
//! notification. Either way the engine hands every appended batch to the node's
//! [`Sink`] (the local fan-out, [`crate::delivery::Delivery`]) in sequence order.

pub mod memory;
pub mod redis_fanout;
pub mod redis_lease;
pub mod redis_log;
pub mod redis_record;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Draft, Event};
use crate::filter::Filter;
use crate::history::{HeadTimeline, Stored};
use crate::position::Position;

/// A boxed future, so that engines may do I/O.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the engine could not do what was asked (PROTOCOL.md item 34: `unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The engine cannot be reached, or the node is shutting down.
    Unavailable(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// The node's fan-out, which the engine feeds in sequence order.
pub trait Sink: Send + Sync {
    /// Takes an appended batch, in sequence order after every earlier batch. Returns a
    /// receiver that resolves once the batch is in every subscriber's outbox.
    fn deliver(&self, events: &[Arc<Event>]) -> tokio::sync::oneshot::Receiver<()>;
}

/// An appended batch.
pub struct Appended {
    /// The events with their ids, in batch order.
    pub events: Vec<Arc<Event>>,
    /// Resolves once the node's hubs have fanned the batch out.
    pub delivered: tokio::sync::oneshot::Receiver<()>,
}

/// A subscription kept for the resume window after its connection ended.
#[derive(Debug, Clone)]
pub struct ParkedSub {
    /// Its id.
    pub id: Arc<str>,
    /// The configured name of the key that made it (a reconnect must present the same).
    pub key: Arc<str>,
    /// Its channel.
    pub channel: Arc<str>,
    /// Its filter.
    pub filter: Filter,
    /// The sequence number that was last issued when it was made: it gets only later events.
    pub created: u64,
}

/// What a replay reads: the named channels' kept events in a range and the head's
/// timeline over it, taken at one instant.
pub struct Snapshot {
    /// Per channel asked, in the order asked.
    pub channels: Vec<ChannelRead>,
    /// The head's timeline over the range.
    pub heads: HeadTimeline,
    /// The first and last sequence numbers this engine issued (`None`: none yet).
    pub issued: Option<(u64, u64)>,
    /// Whether the `B` of a release id asked about is a block that raised the head.
    pub release_block_known: bool,
}

/// What a snapshot holds of one channel.
#[derive(Debug, Default)]
pub struct ChannelRead {
    /// The kept events of the range, in sequence order.
    pub events: Vec<Arc<Stored>>,
    /// The highest sequence number the channel evicted (0: none yet).
    pub evicted_upto: u64,
    /// The highest block number an evicted event named.
    pub evicted_max_block: Option<u64>,
}

/// One channel's range to read.
pub struct Range {
    /// The channel.
    pub channel: Arc<str>,
    /// Events with `after < seq`.
    pub after: u64,
    /// and `seq <= upto`.
    pub upto: u64,
}

/// The seam. See the module documentation.
pub trait Engine: Send + Sync {
    /// Sequences `drafts`, appends each to its channel's history (trimming by age and
    /// bounds), advances the chain head for `blocks` events, and hands the batch to the
    /// sink, as one step: no other append interleaves.
    fn append(&self, drafts: Vec<Draft>) -> EngineFuture<'_, Result<Appended, EngineError>>;

    /// Reads the ranges and the head timeline over them, for a replay. `release` is the
    /// release id a client resumes from, if it named one (its `B` is checked).
    fn read(
        &self,
        ranges: Vec<Range>,
        release: Option<Position>,
    ) -> EngineFuture<'_, Result<Snapshot, EngineError>>;

    /// Keeps subscriptions for the resume window. Past the bound on parked subscriptions
    /// they are not kept; resolves to how many were kept. A `claim` on this node made after
    /// `park` returns must find them (the call takes effect at once; the future only
    /// reports), so a client that reconnects at once does not race its old connection.
    fn park(&self, subs: Vec<ParkedSub>, now: Instant) -> EngineFuture<'static, usize>;

    /// Takes the named parked subscriptions of `key` (each once); others stay.
    fn claim(&self, key: &str, ids: &[String], now: Instant) -> EngineFuture<'_, Vec<ParkedSub>>;

    /// Forgets parked subscriptions past the window and trims history by age.
    fn expire(&self, now: Instant);

    /// Parked subscriptions now.
    fn parked(&self) -> usize;

    /// Events and bytes held in history now, for `/metrics`.
    fn history_size(&self) -> (usize, usize);
}
