//! Broker-wide counters and gauges, updated with atomics on the hot path and rendered as
//! Prometheus text by the `/metrics` route.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::token::TokenRefusal;

/// Why the broker refused something; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or unknown key at connect.
    InvalidToken,
    /// The key already had its maximum connections.
    ConnectionLimit,
    /// A client message over the message cap.
    RateLimited,
    /// A client flooding past the cap, closed 4001.
    Flooding,
    /// A frame that is not a valid request.
    InvalidRequest,
    /// A subscribe or unsubscribe refused.
    SubscriptionError,
    /// A request the key has no role for.
    Forbidden,
    /// A frame over the size limit, closed 1009.
    FrameTooLarge,
    /// A connection closed 4004 for silence.
    HeartbeatTimeout,
    /// A connection closed 4005 for not reading.
    SlowConsumer,
    /// A refused HTTP publish.
    PublishRejected,
    /// A command the backend refused.
    CommandFailed,
    /// A connection closed at accept: its address (or the broker) already had its
    /// maximum of connections without a valid key.
    AddressLimit,
    /// A client closed 4001 for sending pings or pongs past its cap.
    ControlFlood,
    /// A client closed 4001 for sending one message in more fragments than allowed.
    FragmentFlood,
    /// A connection closed for breaking the WebSocket protocol (1002) or sending text
    /// that is not UTF-8 (1007).
    ProtocolError,
}

impl Rejection {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Rejection; 16] = [
        Rejection::InvalidToken,
        Rejection::ConnectionLimit,
        Rejection::RateLimited,
        Rejection::Flooding,
        Rejection::InvalidRequest,
        Rejection::SubscriptionError,
        Rejection::Forbidden,
        Rejection::FrameTooLarge,
        Rejection::HeartbeatTimeout,
        Rejection::SlowConsumer,
        Rejection::PublishRejected,
        Rejection::CommandFailed,
        Rejection::AddressLimit,
        Rejection::ControlFlood,
        Rejection::FragmentFlood,
        Rejection::ProtocolError,
    ];

    /// The reason's name, as the `reason` label of `rustorium_rejections_total`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::InvalidToken => "invalid_token",
            Rejection::ConnectionLimit => "connection_limit",
            Rejection::RateLimited => "rate_limited",
            Rejection::Flooding => "flooding",
            Rejection::InvalidRequest => "invalid_request",
            Rejection::SubscriptionError => "subscription_error",
            Rejection::Forbidden => "forbidden",
            Rejection::FrameTooLarge => "frame_too_large",
            Rejection::HeartbeatTimeout => "heartbeat_timeout",
            Rejection::SlowConsumer => "slow_consumer",
            Rejection::PublishRejected => "publish_rejected",
            Rejection::CommandFailed => "command_failed",
            Rejection::AddressLimit => "address_limit",
            Rejection::ControlFlood => "control_flood",
            Rejection::FragmentFlood => "fragment_flood",
            Rejection::ProtocolError => "protocol_error",
        }
    }
}

/// Gauges read from the hubs and the session registry when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Live subscriptions per channel.
    pub subscriptions: Vec<(Arc<str>, i64)>,
    /// Parked subscriptions.
    pub parked: usize,
    /// Events kept in the channels' history.
    pub history_events: usize,
    /// Bytes kept in the channels' history.
    pub history_bytes: usize,
    /// Publish batches that waited for congested connections ([`crate::flow::Flow`]).
    pub publish_stalls: u64,
    /// Microseconds they waited in all.
    pub publish_stalled_us: u64,
}

/// The broker's metrics; shared by every actor through an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Connections admitted since start.
    pub connections_total: AtomicU64,
    /// Client frames received.
    pub messages_in: AtomicU64,
    /// Frames sent to clients (events, replies, errors, heartbeats).
    pub messages_out: AtomicU64,
    /// Events accepted from publishers.
    pub events_published: AtomicU64,
    /// Batches the publisher handed the engine (coalesced publishes count once).
    pub publish_batches: AtomicU64,
    /// Times a publisher's socket stopped being read because its frames in flight
    /// reached `publish.connection_in_flight_bytes`.
    pub publish_read_pauses: AtomicU64,
    /// Closes that waited for the answers to the connection's publishes in flight.
    pub close_waits: AtomicU64,
    /// Connections closed before every publish they had in flight was answered:
    /// `limits.close_wait_ms` ran out.
    pub close_wait_expired: AtomicU64,
    /// Events not queued for a connection because it had just turned slow consumer
    /// (it resumes them from history).
    pub drops: AtomicU64,
    /// Events dropped from a hub's confirmations backlog because it was full.
    pub pending_dropped: AtomicU64,
    /// `reconnect` requests.
    pub resumes: AtomicU64,
    /// `reconnect` requests answered `recovered: true`.
    pub resumes_recovered: AtomicU64,
    /// Events replayed by reconnects.
    pub replayed: AtomicU64,
    /// History events evicted because they left the resume window.
    pub history_evicted_age: AtomicU64,
    /// History events evicted by the per-channel event or byte bound.
    pub history_evicted_bound: AtomicU64,
    /// Subscriptions not parked because `resume.max_parked` were parked already.
    pub parked_refused: AtomicU64,
    /// Configuration reloads applied.
    pub reloads: AtomicU64,
    /// Configuration reloads refused (the file did not validate; the old one stays).
    pub reload_failures: AtomicU64,
    /// Connections closed 4000 because a reload removed their key.
    pub key_revocations: AtomicU64,
    /// Connections open that have not presented a valid key yet (set by the server's
    /// `on_connect` accounting; zero in an app that does not install it).
    pub unauthenticated: AtomicI64,
    /// Connections that closed before any request reached the broker's routes: request
    /// heads that timed out (408), oversized or malformed heads (431, 400), scanners.
    pub closed_without_request: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
    /// Signed tokens refused, by reason (PROTOCOL.md section 12).
    token_refusals: [AtomicU64; TokenRefusal::ALL.len()],
    /// Connections closed 4000 at their token's `exp` plus the leeway, not refreshed.
    pub tokens_expired: AtomicU64,
    /// `refresh` requests that replaced a connection's token.
    pub token_refreshes: AtomicU64,
    /// The engine's own counters (the Redis engine; zero with the memory engine).
    pub engine: EngineMetrics,
}

/// What the Redis engine counts on this node.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// 1 while the node's Redis subscription is connected and caught up, else 0.
    pub up: AtomicI64,
    /// Appends (one script call per coalesced batch) that Redis answered.
    pub appends: AtomicU64,
    /// Microseconds those appends took, from sending to the reply.
    pub append_us: AtomicU64,
    /// Appends refused because Redis did not answer.
    pub append_failures: AtomicU64,
    /// Times the node's Redis subscription was (re)established after a loss.
    pub reconnects: AtomicU64,
    /// Backfills after a reconnect that closed the gap.
    pub backfills: AtomicU64,
    /// Events those backfills delivered.
    pub backfilled_events: AtomicU64,
    /// Reconnects whose gap the history no longer covered (the node's connections were
    /// closed with 1013).
    pub gaps: AtomicU64,
    /// Connection-slot lease renewals sent to Redis.
    pub lease_renewals: AtomicU64,
    /// Renewals Redis did not answer.
    pub lease_renewal_failures: AtomicU64,
    /// Master switches this node followed (a new master at another address).
    pub failovers: AtomicU64,
    /// Handovers after a switch that copied events the new master lacked from the old one.
    pub handovers: AtomicU64,
    /// Events and head raises those handovers copied.
    pub handed_over_events: AtomicU64,
    /// Handovers that failed or ran out of time (the old master was reachable).
    pub handover_failures: AtomicU64,
    /// Liveness probes that did not come back in time: a subscription that stopped
    /// delivering (reconnected and backfilled).
    pub probe_failures: AtomicU64,
    /// Publishes that fewer than `engine.min_replicas_acked` replicas took within
    /// `engine.replicas_ack_timeout_ms` (answered unavailable).
    pub wait_timeouts: AtomicU64,
    /// Replicas the master listed as connected at this node's last `ROLE` check.
    pub replicas: AtomicI64,
}

impl Metrics {
    /// Counts one rejection.
    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts one refused token, under its reason.
    pub fn refuse_token(&self, why: TokenRefusal) {
        self.token_refusals[why as usize].fetch_add(1, Relaxed);
    }

    /// The count of one token refusal reason.
    pub fn token_refusals(&self, why: TokenRefusal) -> u64 {
        self.token_refusals[why as usize].load(Relaxed)
    }

    /// The count of one rejection reason.
    pub fn rejections(&self, why: Rejection) -> u64 {
        self.rejections[why as usize].load(Relaxed)
    }

    /// Prometheus text exposition, with the gauges read from elsewhere at scrape time.
    pub fn render(&self, gauges: &Gauges) -> String {
        let subscriptions = &gauges.subscriptions;
        let mut out = String::with_capacity(2048);
        let (resumes, recovered) = (
            self.resumes.load(Relaxed),
            self.resumes_recovered.load(Relaxed),
        );
        // f64, so a time keeps its fraction; whole counts still print with no decimals.
        let e = &self.engine;
        let scalars: &[(&str, &str, &str, f64)] = &[
            (
                "rustorium_connections",
                "gauge",
                "Open WebSocket connections.",
                self.connections.load(Relaxed).max(0) as f64,
            ),
            (
                "rustorium_connections_total",
                "counter",
                "Connections admitted since start.",
                self.connections_total.load(Relaxed) as f64,
            ),
            (
                "rustorium_messages_in_total",
                "counter",
                "Client frames received.",
                self.messages_in.load(Relaxed) as f64,
            ),
            (
                "rustorium_messages_out_total",
                "counter",
                "Frames sent to clients.",
                self.messages_out.load(Relaxed) as f64,
            ),
            (
                "rustorium_events_published_total",
                "counter",
                "Events accepted from publishers.",
                self.events_published.load(Relaxed) as f64,
            ),
            (
                "rustorium_publish_batches_total",
                "counter",
                "Batches handed to the engine; publishes that arrived together count once.",
                self.publish_batches.load(Relaxed) as f64,
            ),
            (
                "rustorium_publish_read_pauses_total",
                "counter",
                "Times a publisher's socket stopped being read: its frames awaiting replies reached publish.connection_in_flight_bytes.",
                self.publish_read_pauses.load(Relaxed) as f64,
            ),
            (
                "rustorium_close_waits_total",
                "counter",
                "Closes that waited for the answers to the connection's publishes in flight.",
                self.close_waits.load(Relaxed) as f64,
            ),
            (
                "rustorium_close_wait_expired_total",
                "counter",
                "Connections closed before all their publishes in flight were answered: limits.close_wait_ms ran out.",
                self.close_wait_expired.load(Relaxed) as f64,
            ),
            (
                "rustorium_drops_total",
                "counter",
                "Events not kept for a connection past its resume bound.",
                self.drops.load(Relaxed) as f64,
            ),
            (
                "rustorium_pending_dropped_total",
                "counter",
                "Events dropped from a full confirmations backlog.",
                self.pending_dropped.load(Relaxed) as f64,
            ),
            (
                "rustorium_resumes_total",
                "counter",
                "reconnect requests.",
                resumes as f64,
            ),
            (
                "rustorium_resumes_recovered_total",
                "counter",
                "reconnect requests answered recovered: true.",
                recovered as f64,
            ),
            (
                "rustorium_resumes_failed_total",
                "counter",
                "reconnect requests answered recovered: false.",
                resumes.saturating_sub(recovered) as f64,
            ),
            (
                "rustorium_replayed_events_total",
                "counter",
                "Events replayed by reconnects.",
                self.replayed.load(Relaxed) as f64,
            ),
            (
                "rustorium_parked_subscriptions",
                "gauge",
                "Subscriptions of ended connections kept for resume.",
                gauges.parked as f64,
            ),
            (
                "rustorium_parked_refused_total",
                "counter",
                "Subscriptions not kept for resume because resume.max_parked were kept already.",
                self.parked_refused.load(Relaxed) as f64,
            ),
            (
                "rustorium_config_reloads_total",
                "counter",
                "Configuration reloads applied (SIGHUP).",
                self.reloads.load(Relaxed) as f64,
            ),
            (
                "rustorium_config_reload_failures_total",
                "counter",
                "Configuration reloads refused because the file did not validate; the running configuration stayed.",
                self.reload_failures.load(Relaxed) as f64,
            ),
            (
                "rustorium_key_revocations_total",
                "counter",
                "Connections closed 4000 because a reload removed their key or changed its secret.",
                self.key_revocations.load(Relaxed) as f64,
            ),
            (
                "rustorium_tokens_expired_total",
                "counter",
                "Connections closed 4000 (token expired) at their token's exp plus the leeway.",
                self.tokens_expired.load(Relaxed) as f64,
            ),
            (
                "rustorium_token_refreshes_total",
                "counter",
                "refresh requests that replaced a connection's token.",
                self.token_refreshes.load(Relaxed) as f64,
            ),
            (
                "rustorium_unauthenticated_connections",
                "gauge",
                "Connections open that have not presented a valid key yet.",
                self.unauthenticated.load(Relaxed).max(0) as f64,
            ),
            (
                "rustorium_closed_without_request_total",
                "counter",
                "Connections closed before any request reached the broker: request heads that timed out (408), oversized or malformed heads, scanners.",
                self.closed_without_request.load(Relaxed) as f64,
            ),
            (
                "rustorium_history_events",
                "gauge",
                "Events kept in the channels' history for resume.",
                gauges.history_events as f64,
            ),
            (
                "rustorium_history_bytes",
                "gauge",
                "Bytes (rendered frames) kept in the channels' history for resume.",
                gauges.history_bytes as f64,
            ),
            (
                "rustorium_publish_stalls_total",
                "counter",
                "Publish batches that waited for congested connections to drain.",
                gauges.publish_stalls as f64,
            ),
            (
                "rustorium_publish_stalled_seconds_total",
                "counter",
                "Time publish batches waited for congested connections to drain.",
                gauges.publish_stalled_us as f64 / 1e6,
            ),
            (
                "rustorium_engine_up",
                "gauge",
                "Redis engine: 1 while this node's subscription to Redis is connected and caught up.",
                e.up.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_appends_total",
                "counter",
                "Redis engine: appends (one script call per coalesced batch) Redis answered.",
                e.appends.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_append_seconds_total",
                "counter",
                "Redis engine: time appends took from sending to Redis's reply (divide by appends for the mean).",
                e.append_us.load(Relaxed) as f64 / 1e6,
            ),
            (
                "rustorium_engine_append_failures_total",
                "counter",
                "Redis engine: appends refused unavailable because Redis did not answer.",
                e.append_failures.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_reconnects_total",
                "counter",
                "Redis engine: times this node's Redis subscription was re-established after a loss.",
                e.reconnects.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_backfills_total",
                "counter",
                "Redis engine: reconnects whose gap was filled from the history.",
                e.backfills.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_backfilled_events_total",
                "counter",
                "Redis engine: events delivered by backfills.",
                e.backfilled_events.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_gaps_total",
                "counter",
                "Redis engine: reconnects the history no longer covered (connections closed 1013).",
                e.gaps.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_lease_renewals_total",
                "counter",
                "Redis engine: connection-slot lease renewals sent.",
                e.lease_renewals.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_lease_renewal_failures_total",
                "counter",
                "Redis engine: lease renewals Redis did not answer.",
                e.lease_renewal_failures.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_failovers_total",
                "counter",
                "Redis engine: master switches this node followed (a new master at another address).",
                e.failovers.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_handovers_total",
                "counter",
                "Redis engine: handovers after a switch that copied what the new master lacked from the old one.",
                e.handovers.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_handed_over_events_total",
                "counter",
                "Redis engine: events and head raises those handovers copied.",
                e.handed_over_events.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_handover_failures_total",
                "counter",
                "Redis engine: handovers that failed or ran out of time with the old master reachable.",
                e.handover_failures.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_probe_failures_total",
                "counter",
                "Redis engine: liveness probes not back in time (a subscription that stopped delivering: reconnected and backfilled).",
                e.probe_failures.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_wait_timeouts_total",
                "counter",
                "Redis engine: publishes fewer than min_replicas_acked replicas took in time (answered unavailable).",
                e.wait_timeouts.load(Relaxed) as f64,
            ),
            (
                "rustorium_engine_replicas",
                "gauge",
                "Redis engine: replicas the master listed as connected at this node's last ROLE check.",
                e.replicas.load(Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        labelled(
            &mut out,
            (
                "rustorium_subscriptions",
                "gauge",
                "Live subscriptions per channel.",
            ),
            "channel",
            subscriptions.iter().map(|(c, n)| (&**c, *n as f64)),
        );
        labelled(
            &mut out,
            (
                "rustorium_history_evicted_total",
                "counter",
                "History events evicted: past the resume window (age) or the per-channel bound (bound).",
            ),
            "reason",
            [
                ("age", self.history_evicted_age.load(Relaxed) as f64),
                ("bound", self.history_evicted_bound.load(Relaxed) as f64),
            ],
        );
        labelled(
            &mut out,
            (
                "rustorium_rejections_total",
                "counter",
                "Refusals by reason.",
            ),
            "reason",
            Rejection::ALL.map(|why| (why.label(), self.rejections(why) as f64)),
        );
        labelled(
            &mut out,
            (
                "rustorium_token_refusals_total",
                "counter",
                "Signed tokens refused, by reason.",
            ),
            "reason",
            TokenRefusal::ALL.map(|why| (why.label(), self.token_refusals(why) as f64)),
        );
        out
    }
}

/// Writes one series with a label: its `# HELP` and `# TYPE` lines (`(name, kind, help)`),
/// then a line per `(label value, value)`.
fn labelled<'a>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    rows: impl IntoIterator<Item = (&'a str, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}
