//! Every limit and interval the actors obey, as named settings with documented defaults.
//!
//! The root crate reads these sections from the TOML file (`[limits]`, `[heartbeat]`,
//! `[publish]`, `[channels]`); unknown fields are refused so a typo fails at start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A setting that failed validation: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// Dotted path of the field, as written in the TOML file (`limits.max_frame_bytes`).
    pub field: String,
    /// What a valid value looks like.
    pub message: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SettingError {}

fn at_least(field: &str, value: u64, min: u64) -> Result<(), SettingError> {
    if value < min {
        return Err(SettingError {
            field: field.to_owned(),
            message: format!("must be at least {min} (got {value})"),
        });
    }
    Ok(())
}

/// Per-connection and per-key limits (`[limits]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections per API key, both endpoints together. Default 10.
    /// A key's own `max_connections` overrides it.
    pub max_connections_per_key: u32,
    /// Subscriptions per connection. Default 100.
    pub max_subscriptions_per_connection: usize,
    /// Client messages per minute per connection on `/ws`. Default 1000.
    pub ws_messages_per_minute: u32,
    /// Client messages per second per connection on `/v1`. Default 10.
    pub v1_messages_per_second: u32,
    /// Events per second a publisher connection may publish over WebSocket (its `publish`
    /// frames do not count against the message caps above). Default 10000.
    pub publish_events_per_second: u32,
    /// Largest WebSocket frame a subscriber may send, in bytes; larger closes 1009. Default 65536.
    pub max_frame_bytes: usize,
    /// Frames queued for one connection, not yet written, before it counts as a slow
    /// consumer (closed 4005, its subscriptions kept for resume). Default 2048: twice
    /// `publish.max_batch_events`, so one publish at its limits fits a reader's queue while
    /// flow control holds the next (a smaller bound cuts readers on every such batch).
    pub connection_queue_frames: usize,
    /// Bytes queued for one connection before it counts as a slow consumer. Default 2 MiB,
    /// twice `publish.max_body_bytes`, for the same reason.
    pub connection_queue_bytes: usize,
    /// Coalesced publish batches appended and not yet fanned out, at once; the next
    /// waits. A batch is fanned out on the thread that appends it, so with the memory
    /// engine there is never more than one; with the Redis engine it bounds the batches
    /// a node has appended and not yet received back through its feed. Flow control sees
    /// a batch once it is fanned out, so keep this times `publish.coalesce_events` below
    /// half of `connection_queue_frames`. Default 2.
    pub hub_queue_batches: usize,
    /// Longest string accepted as a filter value (`address`, `key_prefix`...), in bytes. Default 256.
    pub max_filter_value_bytes: usize,
    /// Events a channel hub holds back for `confirmations` subscriptions. Default 100000;
    /// past it the oldest block's events are dropped (and counted).
    pub max_pending_confirmations: usize,
    /// Milliseconds a connection may leave the broker's data unread (TCP window closed) or
    /// unacknowledged before the kernel drops it (`TCP_USER_TIMEOUT`, set by the
    /// server's `on_connect`). This is how a client that stopped reading is cut off: its
    /// actor cannot run to close it. Default 30000.
    pub stall_timeout_ms: u64,
    /// Milliseconds the broker waits, after sending a close frame, for the client's close
    /// before dropping the TCP connection (the RFC 6455 closing handshake). Default 1000.
    pub close_grace_ms: u64,
    /// Milliseconds a connection that is to be closed (a frame over its limit, a flood, a
    /// shutdown) waits for the answers to its publishes in flight before it sends its
    /// close, so that a publisher learns the fate of every publish it sent before the
    /// one that ended it; what it reads meanwhile is not taken. Past this the close goes out
    /// without the missing answers (counted as `close_wait_expired`). Default 10000, above
    /// the longest a publish waits (`publish.max_stall_ms` plus the engine's timeout).
    pub close_wait_ms: u64,
    /// Milliseconds a new connection has to finish its TLS handshake, and then again to
    /// send its whole request head (the upgrade with its key); past it the broker answers
    /// 408 and closes. Set by the standalone server on its listener. Default 5000.
    pub handshake_timeout_ms: u64,
    /// Connections one IP address may hold open before any of them presented a valid key
    /// (slow or unfinished upgrades, requests without a key). A connection past it is
    /// closed at once, before it is read. Default 1024.
    pub max_unauthenticated_per_address: u32,
    /// The same bound over all addresses together. Default 8192.
    pub max_unauthenticated: u32,
    /// WebSocket control frames (pings, pongs) a connection may send per second. Past it
    /// a ping gets no pong; a client refused more times than the cap within a second is
    /// closed 4001 (the flood rule of the message caps). Default 50.
    pub max_control_frames_per_second: u32,
    /// Frames one fragmented message may arrive in; more closes the connection 4001.
    /// Default 1024.
    pub max_fragments_per_message: u32,
    /// Milliseconds a connection that is over (its close sent, or the client gone) still
    /// reads and discards the client's input, so that the client sees the end of the
    /// output instead of a reset; also the HTTP server's `client_disconnect_timeout`.
    /// Default 1000.
    pub close_linger_ms: u64,
    /// Most bytes of a WebSocket connection's queued frames joined into one socket write
    /// (frames are written together while more are ready). Default 32768, actix-http's
    /// HTTP/1 write buffer.
    pub write_coalesce_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_key: 10,
            max_subscriptions_per_connection: 100,
            ws_messages_per_minute: 1000,
            v1_messages_per_second: 10,
            publish_events_per_second: 10_000,
            max_frame_bytes: 64 * 1024,
            connection_queue_frames: 2048,
            connection_queue_bytes: 2 * 1024 * 1024,
            hub_queue_batches: 2,
            max_filter_value_bytes: 256,
            max_pending_confirmations: 100_000,
            stall_timeout_ms: 30_000,
            close_grace_ms: 1000,
            close_wait_ms: 10_000,
            handshake_timeout_ms: 5000,
            max_unauthenticated_per_address: 1024,
            max_unauthenticated: 8192,
            max_control_frames_per_second: 50,
            max_fragments_per_message: 1024,
            close_linger_ms: 1000,
            write_coalesce_bytes: 32 * 1024,
        }
    }
}

impl Limits {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingError> {
        at_least(
            "limits.max_connections_per_key",
            self.max_connections_per_key.into(),
            1,
        )?;
        at_least(
            "limits.max_subscriptions_per_connection",
            self.max_subscriptions_per_connection as u64,
            1,
        )?;
        at_least(
            "limits.ws_messages_per_minute",
            self.ws_messages_per_minute.into(),
            1,
        )?;
        at_least(
            "limits.v1_messages_per_second",
            self.v1_messages_per_second.into(),
            1,
        )?;
        at_least(
            "limits.publish_events_per_second",
            self.publish_events_per_second.into(),
            1,
        )?;
        at_least("limits.max_frame_bytes", self.max_frame_bytes as u64, 256)?;
        at_least(
            "limits.connection_queue_frames",
            self.connection_queue_frames as u64,
            16,
        )?;
        at_least(
            "limits.connection_queue_bytes",
            self.connection_queue_bytes as u64,
            1024,
        )?;
        at_least("limits.hub_queue_batches", self.hub_queue_batches as u64, 1)?;
        at_least(
            "limits.max_filter_value_bytes",
            self.max_filter_value_bytes as u64,
            1,
        )?;
        at_least("limits.stall_timeout_ms", self.stall_timeout_ms, 100)?;
        at_least(
            "limits.handshake_timeout_ms",
            self.handshake_timeout_ms,
            100,
        )?;
        at_least(
            "limits.max_unauthenticated_per_address",
            self.max_unauthenticated_per_address.into(),
            1,
        )?;
        at_least(
            "limits.max_unauthenticated",
            self.max_unauthenticated.into(),
            self.max_unauthenticated_per_address.into(),
        )?;
        at_least(
            "limits.max_control_frames_per_second",
            self.max_control_frames_per_second.into(),
            1,
        )?;
        at_least(
            "limits.max_fragments_per_message",
            self.max_fragments_per_message.into(),
            2,
        )?;
        at_least(
            "limits.write_coalesce_bytes",
            self.write_coalesce_bytes as u64,
            1,
        )?;
        at_least(
            "limits.max_pending_confirmations",
            self.max_pending_confirmations as u64,
            1,
        )
    }
}

/// Heartbeat and liveness (`[heartbeat]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// Milliseconds between heartbeat frames (and WebSocket pings). Default 30000.
    pub interval_ms: u64,
    /// Milliseconds of client silence before the connection is closed 4004.
    /// Default: two intervals plus 10 s.
    pub timeout_ms: Option<u64>,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings {
            interval_ms: 30_000,
            timeout_ms: None,
        }
    }
}

impl HeartbeatSettings {
    /// Time between heartbeats.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Silence after which a connection is closed 4004.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(
            self.timeout_ms
                .unwrap_or_else(|| self.interval_ms.saturating_mul(2).saturating_add(10_000)),
        )
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingError> {
        at_least("heartbeat.interval_ms", self.interval_ms, 10)?;
        if let Some(t) = self.timeout_ms {
            at_least("heartbeat.timeout_ms", t, 10)?;
        }
        Ok(())
    }
}

/// Resume after reconnect (`[resume]`): the channels' history and the parked
/// subscriptions.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ResumeSettings {
    /// Milliseconds each channel's events, and a dropped connection's subscriptions, are
    /// kept for a `reconnect`. Default 120000.
    pub window_ms: u64,
    /// Most events kept per channel (the oldest go first). Default 1000000.
    pub history_events: usize,
    /// Most bytes kept per channel (each event's data as JSON text plus a record of about
    /// 100 bytes; the process holds about 1.4 times this); the newest event is always kept.
    /// Default 536870912 (512 MiB: 120 s of 10,000 events/s of 200 bytes).
    pub history_bytes: usize,
    /// Most bytes kept by all channels together; past it the oldest events of the whole
    /// history go first. Default 2147483648 (2 GiB).
    pub history_total_bytes: usize,
    /// Most subscriptions of ended connections kept at once; past it a dropped
    /// connection's subscriptions are not kept (counted). Default 100000.
    pub max_parked: usize,
}

impl Default for ResumeSettings {
    fn default() -> Self {
        ResumeSettings {
            window_ms: 120_000,
            history_events: 1_000_000,
            history_bytes: 512 * 1024 * 1024,
            history_total_bytes: 2048 * 1024 * 1024,
            max_parked: 100_000,
        }
    }
}

impl ResumeSettings {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingError> {
        at_least("resume.window_ms", self.window_ms, 1)?;
        at_least("resume.history_events", self.history_events as u64, 1)?;
        at_least("resume.history_bytes", self.history_bytes as u64, 1024)?;
        at_least(
            "resume.history_total_bytes",
            self.history_total_bytes as u64,
            self.history_bytes as u64,
        )
    }

    /// The history bounds these settings give.
    pub fn history(&self) -> crate::history::HistoryLimits {
        crate::history::HistoryLimits {
            window: Duration::from_millis(self.window_ms),
            max_events: self.history_events,
            max_bytes: self.history_bytes,
            max_total_bytes: self.history_total_bytes,
        }
    }
}

/// Publishing (`[publish]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSettings {
    /// Largest `POST /api/publish` body, in bytes; larger answers 413. Default 1048576.
    pub max_body_bytes: usize,
    /// Most events in one batch. Default 1000.
    pub max_batch_events: usize,
    /// Longest a publish batch waits, in milliseconds, while some connection's queue is
    /// past half its slow-consumer bound (flow control: a burst slows its publisher
    /// rather than cutting readers that are only behind). 0 turns the wait off.
    /// Default 5000, as long as `stuck_reader_ms`: a reader that still drains holds
    /// publishers until it catches up; one that drains nothing for that long is stuck.
    pub max_stall_ms: u64,
    /// A congested connection that has written nothing for this many milliseconds is
    /// stuck, not slow: it stops holding publishers back (and is cut at its bound).
    /// Default 5000.
    pub stuck_reader_ms: u64,
    /// Most events the publisher hands the engine as one batch: publishes that arrive
    /// while a batch is being appended (consecutive frames of one connection, concurrent
    /// HTTP requests) are coalesced up to this many (a single publish larger than this
    /// still goes whole). Default 250.
    pub coalesce_events: usize,
    /// Bytes of publish frames one WebSocket connection may have read and not yet
    /// answered; past this the broker stops reading its socket until replies go out, so
    /// TCP slows the publisher. A single frame of any size is always taken. Default
    /// 1048576.
    pub connection_in_flight_bytes: usize,
    /// Most published events waiting to be sequenced, all publishers together; past it a
    /// publish is refused `unavailable` (HTTP 503, ws 4007) and nothing of it is published. A
    /// publish of any size is taken when nothing waits. Default 100000.
    pub max_queued_events: usize,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            max_stall_ms: 5000,
            stuck_reader_ms: 5000,
            coalesce_events: 250,
            connection_in_flight_bytes: 1024 * 1024,
            max_queued_events: 100_000,
        }
    }
}

impl PublishSettings {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingError> {
        at_least("publish.max_body_bytes", self.max_body_bytes as u64, 1024)?;
        at_least("publish.max_batch_events", self.max_batch_events as u64, 1)?;
        at_least("publish.coalesce_events", self.coalesce_events as u64, 1)?;
        at_least(
            "publish.connection_in_flight_bytes",
            self.connection_in_flight_bytes as u64,
            1,
        )?;
        at_least(
            "publish.max_queued_events",
            self.max_queued_events as u64,
            1,
        )
    }
}

/// Channels beyond the six of the contract (`[channels]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    /// Whether names outside the six channels (matching `[a-z0-9_.:-]{1,64}`) are plain
    /// channels. Default false, so a typo such as `blokcs` is an unknown channel.
    pub allow_plain: bool,
    /// Most plain channels that may exist at once. Default 10000.
    pub max_plain: usize,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            allow_plain: false,
            max_plain: 10_000,
        }
    }
}

/// Which engine keeps the sequence, history, chain head and parked subscriptions.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// In this process: one broker (the default).
    #[default]
    Memory,
    /// In Redis: several brokers sharing one Redis (PROTOCOL.md section 11).
    Redis,
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EngineKind, String> {
        match s {
            "memory" => Ok(EngineKind::Memory),
            "redis" => Ok(EngineKind::Redis),
            _ => Err(format!("expected memory or redis (got {s:?})")),
        }
    }
}

/// The engine (`[engine]`). The Redis fields matter only with `kind = "redis"`. Its
/// `Debug` shows the URLs with their passwords masked ([`masked_url`]).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// `"memory"` (default) or `"redis"`.
    pub kind: EngineKind,
    /// The Redis server, as a `redis://[USER:PASSWORD@]HOST:PORT/DB` URL, or `rediss://`
    /// for TLS. With `sentinels`, its scheme, user, password and database are used for the
    /// master Sentinel names, and its host and port are not. Default
    /// `redis://127.0.0.1:6379/`. The password is never logged nor printed.
    pub redis_url: String,
    /// A PEM file of the certificate authorities that `rediss://` connections (to Redis and
    /// to the Sentinels) trust, for a private authority; relative to the working directory.
    /// Default none: the system's roots.
    pub tls_ca_file: Option<String>,
    /// The Sentinels that name the master, each `redis://[:PASSWORD@]HOST:PORT` (or
    /// `rediss://`). Non-empty: the master is whichever they name (confirmed with `ROLE`),
    /// asked again on every reconnect and whenever the master answers an error or
    /// `READONLY`. Default empty: `redis_url` is the master.
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels. Default `mymaster`.
    pub sentinel_master: String,
    /// Milliseconds between this node's liveness probes: a message it publishes through
    /// Redis to itself, which its pub/sub connection must deliver back, and a `ROLE` check
    /// of the master. Default 1000.
    pub probe_interval_ms: u64,
    /// Milliseconds within which a probe must come back; past it the pub/sub connection is
    /// treated as lost (reconnect and backfill), even if it is still open. Default 3000.
    pub probe_timeout_ms: u64,
    /// Replicas that must have a publish (Redis `WAIT`) before it is acknowledged; 0
    /// acknowledges once the master has it. With N, a failover loses no acknowledged
    /// publish as long as one of the N replicas is promoted. Default 0.
    pub min_replicas_acked: u32,
    /// Milliseconds a publish waits for `min_replicas_acked` replicas; past it the publish
    /// answers `unavailable` (it may still have been applied). Default 1000.
    pub replicas_ack_timeout_ms: u64,
    /// Milliseconds for which a node that follows a failover pauses writes on the old
    /// master (`CLIENT PAUSE ... WRITE`) before it copies what the new master lacks (the
    /// handover, docs/PROTOCOL.md decision 50), so that the old master acknowledges nothing
    /// more that the failover would throw away. Long enough for every node to notice the
    /// switch (never less than `response_timeout_ms` + `probe_interval_ms`, which is used
    /// when it is set lower: a node still on the old master sees its append time out or its
    /// check find another master within that), short
    /// enough not to hold up Sentinel turning the old master into a replica (the new
    /// master's replica then). 0 pauses nothing (the copy still runs). Default 5000.
    pub handover_pause_ms: u64,
    /// Prefix of every Redis key and pub/sub channel of this cluster, so that several
    /// clusters can share one Redis. Default `rustorium:`.
    pub key_prefix: String,
    /// Milliseconds to wait for a connection to Redis. Default 2000.
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for a reply from Redis before a publish is refused
    /// `unavailable`. Default 2000.
    pub response_timeout_ms: u64,
    /// First wait before reconnecting to Redis, in milliseconds; it doubles on each
    /// failure. Default 100.
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnect attempts, in milliseconds. Default 5000.
    pub reconnect_max_ms: u64,
    /// Milliseconds a node's hold on a connection slot lasts unless renewed (renewed every
    /// third of it): a node killed without a goodbye stops counting within this time.
    /// Default 15000.
    pub lease_ms: u64,
    /// Most entries each channel's history stream keeps in Redis (trimmed approximately,
    /// never below this). Default 100000.
    pub stream_max_len: u64,
    /// Most events a node reads back from Redis after reconnecting before it gives up on a
    /// gap-free stream and closes its connections with 1013. Default 100000.
    pub max_backfill_events: usize,
    /// Most messages a node has read from its Redis subscription and not yet handed to its
    /// hubs; past it the node drops the subscription and backfills from the history after
    /// reconnecting (or closes with 1013 past `max_backfill_events`). Default 100000.
    pub max_pending_messages: usize,
    /// Milliseconds a channel without subscribers on a node stays received there before
    /// the node unsubscribes from it (checked every heartbeat interval). Default 30000.
    pub idle_channel_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            kind: EngineKind::Memory,
            redis_url: "redis://127.0.0.1:6379/".into(),
            tls_ca_file: None,
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
            probe_interval_ms: 1000,
            probe_timeout_ms: 3000,
            min_replicas_acked: 0,
            replicas_ack_timeout_ms: 1000,
            handover_pause_ms: 5_000,
            key_prefix: "rustorium:".into(),
            connect_timeout_ms: 2000,
            response_timeout_ms: 2000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            lease_ms: 15_000,
            stream_max_len: 100_000,
            max_backfill_events: 100_000,
            idle_channel_ms: 30_000,
            max_pending_messages: 100_000,
        }
    }
}

impl std::fmt::Debug for EngineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sentinels: Vec<String> = self.sentinels.iter().map(|u| masked_url(u)).collect();
        f.debug_struct("EngineSettings")
            .field("kind", &self.kind)
            .field("redis_url", &masked_url(&self.redis_url))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("sentinels", &sentinels)
            .field("sentinel_master", &self.sentinel_master)
            .field("key_prefix", &self.key_prefix)
            .field("min_replicas_acked", &self.min_replicas_acked)
            .finish_non_exhaustive()
    }
}

/// What a masked password reads as.
pub const MASK: &str = "***";

/// `url` with the password of its user part (`scheme://user:PASSWORD@host...`) replaced
/// by [`MASK`]: how a Redis or Sentinel URL is shown in logs, errors and `check-config`.
pub fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{MASK}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl EngineSettings {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SettingError> {
        let is_url = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        if self.kind == EngineKind::Redis && !is_url(&self.redis_url) {
            return Err(SettingError {
                field: "engine.redis_url".into(),
                message: "must be a redis:// or rediss:// URL".into(),
            });
        }
        for (i, s) in self.sentinels.iter().enumerate() {
            if !is_url(s) {
                return Err(SettingError {
                    field: format!("engine.sentinels[{i}]"),
                    message: "must be a redis:// or rediss:// URL".into(),
                });
            }
        }
        if !self.sentinels.is_empty() && self.sentinel_master.is_empty() {
            return Err(SettingError {
                field: "engine.sentinel_master".into(),
                message: "must name the master when engine.sentinels is set".into(),
            });
        }
        at_least("engine.probe_interval_ms", self.probe_interval_ms, 10)?;
        at_least(
            "engine.probe_timeout_ms",
            self.probe_timeout_ms,
            self.probe_interval_ms,
        )?;
        at_least(
            "engine.replicas_ack_timeout_ms",
            self.replicas_ack_timeout_ms,
            1,
        )?;
        at_least("engine.connect_timeout_ms", self.connect_timeout_ms, 1)?;
        at_least("engine.response_timeout_ms", self.response_timeout_ms, 1)?;
        at_least("engine.reconnect_min_ms", self.reconnect_min_ms, 1)?;
        at_least(
            "engine.reconnect_max_ms",
            self.reconnect_max_ms,
            self.reconnect_min_ms,
        )?;
        at_least("engine.lease_ms", self.lease_ms, 300)?;
        at_least("engine.stream_max_len", self.stream_max_len, 1)?;
        at_least(
            "engine.max_backfill_events",
            self.max_backfill_events as u64,
            1,
        )?;
        at_least(
            "engine.max_pending_messages",
            self.max_pending_messages as u64,
            1,
        )
    }
}

/// All the settings the actor system needs, gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Per-connection and per-key limits.
    pub limits: Limits,
    /// Heartbeat interval and liveness timeout.
    pub heartbeat: HeartbeatSettings,
    /// Publishing limits.
    pub publish: PublishSettings,
    /// Plain channels.
    pub channels: ChannelSettings,
    /// Resume after reconnect.
    pub resume: ResumeSettings,
    /// Where the sequence, history and shared state live.
    pub engine: EngineSettings,
}

impl Settings {
    /// Checks every section; the error names the first bad field.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.limits.validate()?;
        self.heartbeat.validate()?;
        self.resume.validate()?;
        self.engine.validate()?;
        self.publish.validate()
    }
}
