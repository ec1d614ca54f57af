//! The engine seam: where the one sequence, the per-channel history, the chain head and
//! the parked subscriptions live (PROTOCOL.md sections 5, 7 and 11).
//!
//! Nothing above this trait knows which engine runs. [`memory::MemoryEngine`] keeps it
//! all in this process; [`redis::RedisEngine`] (section 11) keeps it in Redis, where
//! [`Engine::append`] is one Lua script: sequence, stream append with trimming,
//! notification. Either way the engine hands every appended batch to the node's
//! [`Sink`] (the local fan-out, [`crate::fanout::delivery::Delivery`]) in sequence order.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Draft, Event};
use crate::filter::Filter;
use crate::history::{HeadTimeline, Stored};
use crate::messages::ConnId;
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

/// One thing the engine feeds the fan-out, in sequence order.
#[derive(Debug, Clone)]
pub enum Fed {
    /// An appended event.
    Event(Arc<Event>),
    /// The chain head rose to block `number` with the `blocks` event of sequence number
    /// `by` (fed right after that event, also to a node that does not receive `blocks`).
    Head {
        /// The new head.
        number: u64,
        /// The sequence number of the block event that raised it.
        by: u64,
    },
    /// From here on the node receives every event of `channel`: its hub has all it will
    /// get of the channel up to `seq` (a resume there replays up to it from history).
    /// Fed when a node begins receiving a channel it did not.
    Mark {
        /// The channel.
        channel: Arc<str>,
        /// The sequence number (not below anything fed before).
        seq: u64,
    },
}

impl Fed {
    /// Where the item sits in the sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Fed::Event(e) => e.seq,
            Fed::Head { by, .. } => *by,
            Fed::Mark { seq, .. } => *seq,
        }
    }
}

/// The node's fan-out, which the engine feeds in sequence order.
pub trait Sink: Send + Sync {
    /// Takes an appended batch, in sequence order after every earlier batch; the head
    /// raises are those of the events' `raises_head`. Returns a receiver that resolves
    /// once the batch is in every subscriber's outbox.
    fn deliver(&self, events: &[Arc<Event>]) -> tokio::sync::oneshot::Receiver<()> {
        let mut fed = Vec::with_capacity(events.len());
        for e in events {
            fed.push(Fed::Event(e.clone()));
            if let Some(number) = e.raises_head {
                fed.push(Fed::Head { number, by: e.seq });
            }
        }
        self.deliver_fed(&fed)
    }

    /// Takes a batch of events and head raises, in sequence order after every earlier
    /// batch (an engine that learns of head raises apart from events calls this).
    fn deliver_fed(&self, fed: &[Fed]) -> tokio::sync::oneshot::Receiver<()>;
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

/// Whether a node of the cluster is alive, as its last record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// It wrote its record within the last lease.
    Up,
    /// Its record is older than a lease: stopped, killed, or cut off from Redis.
    Down,
}

/// One node of the cluster, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// The node's name (host, process id and a random part).
    pub name: String,
    /// Up or down.
    pub state: NodeState,
    /// Its open WebSocket connections when it last wrote.
    pub connections: i64,
    /// Milliseconds since it last wrote.
    pub last_seen_ms: u64,
    /// Whether it is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
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

    /// This node is about to attach a subscription on `channel`: from when this resolves,
    /// the engine feeds every later event of the channel to the node's sink. An engine
    /// that feeds every channel anyway answers at once.
    fn want(&self, channel: &Arc<str>) -> EngineFuture<'_, Result<(), EngineError>> {
        let _ = channel;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Takes a connection slot of key `key_name` for connection `conn` of this node, given
    /// the key's cap, counted across every node that shares the engine. `Ok(false)`: the
    /// cap is full. An engine of one process answers `Ok(true)`; the rate limiter counts.
    fn hold_slot(
        &self,
        key_name: &str,
        conn: ConnId,
        cap: u32,
    ) -> EngineFuture<'_, Result<bool, EngineError>> {
        let _ = (key_name, conn, cap);
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Gives back the slot `hold_slot` took for `conn` (its connection ended).
    fn free_slot(&self, conn: ConnId) {
        let _ = conn;
    }

    /// Subscription `sub` is live on this node: an engine shared by several nodes keeps it
    /// resumable from any node even if this one dies without parking it. Resolves once it
    /// is kept (the call itself starts the work).
    fn live(&self, sub: ParkedSub) -> EngineFuture<'static, ()> {
        let _ = sub;
        Box::pin(std::future::ready(()))
    }

    /// Subscription `id` ended for good (unsubscribed, or its client closed with 1000).
    fn gone(&self, id: &Arc<str>) {
        let _ = id;
    }

    /// The nodes sharing this engine and their state, for the dashboard; empty for an
    /// engine of one process.
    fn nodes(&self) -> EngineFuture<'_, Vec<NodeInfo>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    /// Whether the engine can serve now, for `/ready`.
    fn ready(&self) -> bool {
        true
    }

    /// Counts the times this node lost part of its stream for good (the history did not
    /// cover a gap): each change tells the node to close its connections with 1013, so
    /// they resume elsewhere. `None`: this engine never loses any.
    fn gaps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
