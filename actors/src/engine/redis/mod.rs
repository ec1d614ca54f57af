//! The Redis engine (PROTOCOL.md section 11): several broker processes share one Redis,
//! which holds the one sequence, every channel's history, the chain head's timeline, the
//! parked subscriptions and the per-key connection slots.
//!
//! - Append: one script call per coalesced batch ([`eventlog::append`]), through a
//!   connection manager with a response timeout; no reply means `unavailable`, never an
//!   event accepted and then lost.
//! - Fan-out: this node receives, on one pub/sub connection and so in sequence order, the
//!   channels it has subscribers on and the head raises ([`fanout`]); a
//!   publish is answered once this node's own fan-out passed its events.
//! - Replay: one consistent read of the histories and the timeline (`read.lua`).
//! - Parked subscriptions and connection slots: `parked.rs` and
//!   [`lease`], with the slots renewed on a timer.

pub mod eventlog;
pub mod fanout;
// Public only for the tests against real servers (tests/redis_handover.rs), which run it
// between two of them as a node does when it follows a failover; not part of the API.
#[doc(hidden)]
pub mod handover;
pub mod lease;
pub mod link;
pub mod nodes;
mod parked;
pub mod record;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use redis::aio::PubSubSink;
use tokio::sync::{oneshot, watch};

use self::eventlog::{Keys, LogEntry, LogQuery, Trim};
use self::lease::Slot;
use self::record::{decode, encode, unix_ms_now};
use crate::channels::ChannelKind;
use crate::engine::{
    Appended, ChannelRead, Engine, EngineError, EngineFuture, NodeInfo, ParkedSub, Range, Sink,
    Snapshot,
};
use crate::event::{Draft, Event};
use crate::fanout::hubs::Hubs;
use crate::history::{HeadRaise, HeadTimeline, HistoryLimits, Stored};
use crate::messages::ConnId;
use crate::metrics::Metrics;
use crate::position::Position;
use crate::settings::EngineSettings;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How far this node's fan-out has come, for the publishers waiting on it.
#[derive(Default)]
pub(super) struct Feed {
    /// The pub/sub connection is up and caught up.
    pub up: bool,
    /// Every event up to here that this node receives is in its subscribers' outboxes.
    pub done: u64,
    /// Publishes waiting for `done` to reach a sequence number. Bounded by the publish
    /// batches in flight (`limits.hub_queue_batches`).
    pub waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

impl Feed {
    /// Everything up to `seq` is fanned out: answers the publishes waiting for it.
    pub fn reached(&mut self, seq: u64) {
        self.done = self.done.max(seq);
        let later = self.waiting.split_off(&(self.done.saturating_add(1)));
        for tx in std::mem::replace(&mut self.waiting, later)
            .into_values()
            .flatten()
        {
            let _ = tx.send(());
        }
    }

    /// The connection is lost: nobody waits for what may now come only by backfill.
    pub fn down(&mut self) {
        self.up = false;
        for tx in std::mem::take(&mut self.waiting).into_values().flatten() {
            let _ = tx.send(());
        }
    }
}

/// A channel this node wants, and since when.
pub(super) struct Wanted {
    /// Last time a subscription asked for it.
    pub asked: Instant,
    /// Redis confirmed the subscription (and its fence came back): its events reach
    /// this node.
    pub subscribed: bool,
    /// Received whether or not anyone here subscribes: the block-naming channels, whose
    /// `confirmations` releases need every event in the hub.
    pub always: bool,
}

/// What the engine's parts share.
pub(super) struct Shared {
    pub settings: EngineSettings,
    pub limits: HistoryLimits,
    pub keys: Keys,
    /// The master and the command connections to it.
    pub link: Arc<link::Link>,
    /// The highest id this node handed out (appended or fanned out): every append goes
    /// above it, also after a failover to a master that lacks some of them.
    pub highest: AtomicU64,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    pub hubs: Arc<Hubs>,
    /// Batches in the hubs at once from this node's fan-out (`limits.hub_queue_batches`).
    pub fanout_window: usize,
    /// Bounded by the channels that exist (six, plus `channels.max_plain`).
    pub wanted: Mutex<HashMap<Arc<str>, Wanted>>,
    /// The command half of the live pub/sub connection, `None` while it is down.
    pub subscriber: tokio::sync::Mutex<Option<PubSubSink>>,
    pub feed: Mutex<Feed>,
    /// `want` calls waiting for their fence to reach the channel's hub. Bounded by the
    /// channels that exist.
    pub fences: Mutex<HashMap<Arc<str>, Vec<oneshot::Sender<()>>>>,
    pub gaps: watch::Sender<u64>,
    /// This node's name in slot members: unique per process.
    pub node: String,
    /// Slots this node holds: connection → key name. Bounded by admitted connections.
    pub slots: Mutex<HashMap<ConnId, Arc<str>>>,
    /// Parks in the window on this node, for the bound and the gauge.
    pub parks: Mutex<VecDeque<Instant>>,
    pub max_parked: usize,
    /// Parks whose write to Redis is under way: claimed here meanwhile → deleted after.
    pub parking: Mutex<HashMap<Arc<str>, (ParkedSub, bool)>>,
    /// Subscriptions live on this node, whose records it renews. Bounded by admitted
    /// connections times their subscription cap.
    pub live: Mutex<HashMap<Arc<str>, ()>>,
}

impl Shared {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.response_timeout_ms)
    }

    /// Waits for a Redis reply at most `engine.response_timeout_ms`; an error or no reply
    /// is `unavailable`.
    pub async fn ask<T>(
        &self,
        reply: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.timeout(), reply).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("no reply within engine.response_timeout_ms")),
        }
    }

    /// A command connection to the master, or `unavailable` while there is none.
    pub fn con(&self) -> Result<link::Con, EngineError> {
        self.link.con()
    }

    /// This node handed out ids up to `seq`.
    pub fn saw(&self, seq: u64) {
        self.highest.fetch_max(seq, Ordering::Relaxed);
    }
}

/// What the Redis engine is built from.
pub struct RedisParts {
    /// `[engine]`.
    pub settings: EngineSettings,
    /// The resume window and history bounds.
    pub limits: HistoryLimits,
    /// Most subscriptions this node parks per window.
    pub max_parked: usize,
    /// The node's fan-out.
    pub sink: Arc<dyn Sink>,
    /// The node's hubs (which channels have subscribers).
    pub hubs: Arc<Hubs>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `limits.hub_queue_batches`.
    pub fanout_window: usize,
    /// Where the engine's tasks run (the actors' arbiter).
    pub arbiter: ArbiterHandle,
}

/// The Redis engine. See the module documentation.
pub struct RedisEngine {
    shared: Arc<Shared>,
}

/// Seconds a channel's history stream lives after its last append: the resume window and
/// a minute, so that a resume at the window's end still finds what it needs.
fn stream_ttl_secs(limits: &HistoryLimits) -> u64 {
    limits.window.as_secs().saturating_add(60)
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("Redis: {e}"))
}

fn node_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}.{}", nanos, std::process::id())
}

impl RedisEngine {
    /// Starts the engine: the link to the master, its subscriber (reconnecting with
    /// backoff) and its lease renewals run on `parts.arbiter`. Redis need not be up yet.
    pub fn start(parts: RedisParts) -> RedisEngine {
        // rustls needs one crypto provider for `rediss://`; the broker's is aws-lc-rs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ttl_secs = stream_ttl_secs(&parts.limits);
        let link = Arc::new(link::Link::new(
            &parts.settings,
            ttl_secs,
            parts.metrics.clone(),
        ));
        let shared = Arc::new(Shared {
            keys: Keys::new(parts.settings.key_prefix.clone()),
            settings: parts.settings,
            limits: parts.limits,
            link: link.clone(),
            highest: AtomicU64::new(0),
            sink: parts.sink,
            metrics: parts.metrics,
            hubs: parts.hubs,
            fanout_window: parts.fanout_window.max(1),
            wanted: Mutex::new(
                ChannelKind::KNOWN
                    .into_iter()
                    .filter(|k| k.has_blocks())
                    .map(|k| {
                        let w = Wanted {
                            asked: Instant::now(),
                            subscribed: false,
                            always: true,
                        };
                        (Arc::from(k.name()), w)
                    })
                    .collect(),
            ),
            fences: Mutex::new(HashMap::new()),
            subscriber: tokio::sync::Mutex::new(None),
            feed: Mutex::new(Feed::default()),
            gaps: watch::Sender::new(0),
            node: node_name(),
            slots: Mutex::new(HashMap::new()),
            parks: Mutex::new(VecDeque::new()),
            max_parked: parts.max_parked,
            parking: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
        });
        parts.arbiter.spawn(link::keep(link));
        parts.arbiter.spawn(fanout::run(shared.clone()));
        parts.arbiter.spawn(renew_leases(shared.clone()));
        RedisEngine { shared }
    }

    async fn append_now(&self, drafts: Vec<Draft>) -> Result<Appended, EngineError> {
        let sh = &self.shared;
        let unix_ms = unix_ms_now();
        let mut entries = Vec::with_capacity(drafts.len());
        let mut texts = Vec::with_capacity(drafts.len());
        for d in &drafts {
            let text = serde_json::value::to_raw_value(&d.data)
                .map_err(|e| EngineError::Unavailable(format!("event data: {e}")))?;
            entries.push(LogEntry {
                channel: d.channel.to_string(),
                record: encode(&d.kind, d.block, &text, unix_ms),
                block: d.block,
                is_block: d.is_block,
            });
            texts.push(text);
        }
        let trim = Trim {
            max_len: sh.settings.stream_max_len,
            ttl_secs: stream_ttl_secs(&sh.limits),
        };
        let mut con = sh.link.append_con()?;
        let started = Instant::now();
        let floor = sh.highest.load(Ordering::Relaxed);
        let sent = sh.ask(eventlog::append_above(
            &mut con, &sh.keys, trim, floor, &entries,
        ));
        let answer = sent.await;
        // Appended and announced, whatever `WAIT` says next: the ids are handed out.
        if let Some(last) = answer.iter().flatten().map(|a| a.seq).max() {
            sh.saw(last);
        }
        let answer = match answer {
            Ok(a) if sh.settings.min_replicas_acked > 0 => {
                self.replicas_took(&mut con).await.map(|()| a)
            }
            other => other,
        };
        let appended = match answer {
            Ok(a) if a.len() == drafts.len() => a,
            answer => {
                sh.metrics
                    .engine
                    .append_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(answer.map_or_else(
                    |e| e,
                    |a| {
                        unavailable(format!(
                            "the append answered {} ids for {} events",
                            a.len(),
                            drafts.len()
                        ))
                    },
                ));
            }
        };
        let m = &sh.metrics.engine;
        m.appends.fetch_add(1, Ordering::Relaxed);
        m.append_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut events = Vec::with_capacity(drafts.len());
        let mut need = 0;
        {
            let wanted = lock(&sh.wanted);
            for ((draft, text), a) in drafts.into_iter().zip(texts).zip(appended) {
                if wanted.get(&draft.channel).is_some_and(|w| w.subscribed) {
                    need = need.max(a.seq);
                }
                let stored = Arc::new(Stored::new(a.seq, &draft, a.raised, now, text));
                events.push(Arc::new(Event::from_stored(draft, stored)));
            }
        }
        Ok(Appended {
            events,
            delivered: self.fanned_out(need),
        })
    }

    /// `WAIT engine.min_replicas_acked engine.replicas_ack_timeout_ms` on the connection
    /// that appended (`WAIT` covers that connection's writes): `unavailable` when fewer
    /// replicas took them in time (the events may still be applied and delivered).
    async fn replicas_took(&self, con: &mut link::Con) -> Result<(), EngineError> {
        let s = &self.shared.settings;
        let mut wait = redis::cmd("WAIT");
        wait.arg(s.min_replicas_acked)
            .arg(s.replicas_ack_timeout_ms);
        let limit = self
            .shared
            .timeout()
            .saturating_add(Duration::from_millis(s.replicas_ack_timeout_ms));
        let took: i64 = match tokio::time::timeout(limit, wait.query_async(con)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer to WAIT in time")),
        };
        if took < i64::from(s.min_replicas_acked) {
            self.shared
                .metrics
                .engine
                .wait_timeouts
                .fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Unavailable(format!(
                "Redis: {took} replica(s) took the publish within engine.replicas_ack_timeout_ms, fewer than engine.min_replicas_acked ({}); it may still be applied",
                s.min_replicas_acked
            )));
        }
        Ok(())
    }

    /// Resolves once this node's fan-out passed `seq` (at once for 0, or while the
    /// subscriber is down: those events reach this node's subscribers by backfill or the
    /// 1013 close), at the latest after the response timeout.
    fn fanned_out(&self, seq: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if seq == 0 {
            let _ = tx.send(());
            return rx;
        }
        let (wait_tx, wait_rx) = oneshot::channel();
        {
            let mut feed = lock(&self.shared.feed);
            if !feed.up || feed.done >= seq {
                let _ = tx.send(());
                return rx;
            }
            feed.waiting.entry(seq).or_default().push(wait_tx);
        }
        let timeout = self.shared.timeout();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, wait_rx).await;
            let _ = tx.send(());
        });
        rx
    }

    async fn read_now(
        &self,
        ranges: Vec<Range>,
        release: Option<Position>,
    ) -> Result<Snapshot, EngineError> {
        let sh = &self.shared;
        let (lo, hi) = ranges.iter().fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.after), hi.max(r.upto))
        });
        let lo = lo.min(hi);
        let q = LogQuery {
            after: lo,
            upto: Some(hi),
            limit: usize::try_from(sh.settings.stream_max_len)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
            release: release.map(|p| p.major),
            channels: ranges
                .iter()
                .map(|r| (r.channel.to_string(), r.after))
                .collect(),
        };
        let mut con = sh.con()?;
        let log = sh.ask(eventlog::read_log(&mut con, &sh.keys, &q)).await?;
        let now = Instant::now();
        let unix_now = unix_ms_now();
        let raise = |(seq, number): (u64, u64)| HeadRaise {
            seq,
            number,
            at: now,
        };
        let heads = HeadTimeline::from_parts(
            log.base.map(raise),
            log.raises.iter().copied().map(raise).collect(),
        );
        let mut channels = Vec::with_capacity(ranges.len());
        let lost: Vec<u64> = ranges
            .iter()
            .map(|r| lost_after(&log, r.after, r.upto, sh.settings.min_replicas_acked > 0))
            .collect();
        for ((r, c), lost) in ranges.iter().zip(log.channels).zip(lost) {
            let mut read = ChannelRead::default();
            // Ids a failover lost, after where this read starts: what went is not known.
            if lost > 0 {
                read.evicted_upto = lost;
                read.evicted_max_block = Some(u64::MAX);
            }
            if c.kept_from > 0 {
                // Trimmed by the stream bound: what went is not known, only where.
                read.evicted_upto = read.evicted_upto.max(c.kept_from.saturating_sub(1));
                read.evicted_max_block = Some(u64::MAX);
            }
            for (seq, record) in c.entries {
                if seq > r.upto {
                    break;
                }
                let Some(stored) = decode(seq, r.channel.clone(), None, &record, now, unix_now)
                else {
                    continue;
                };
                if now.saturating_duration_since(stored.appended) > sh.limits.window {
                    // Past the resume window: evicted, as the memory engine would have.
                    read.evicted_upto = read.evicted_upto.max(seq);
                    if let Some(b) = stored.block {
                        read.evicted_max_block = read.evicted_max_block.max(Some(b));
                    }
                    continue;
                }
                read.events.push(Arc::new(stored));
            }
            channels.push(read);
        }
        Ok(Snapshot {
            channels,
            heads,
            issued: log.first.zip(log.last).filter(|(f, l)| f <= l),
            release_block_known: log.release_known,
        })
    }
}

impl Engine for RedisEngine {
    fn append(&self, drafts: Vec<Draft>) -> EngineFuture<'_, Result<Appended, EngineError>> {
        Box::pin(self.append_now(drafts))
    }

    fn read(
        &self,
        ranges: Vec<Range>,
        release: Option<Position>,
    ) -> EngineFuture<'_, Result<Snapshot, EngineError>> {
        Box::pin(self.read_now(ranges, release))
    }

    fn park(&self, subs: Vec<ParkedSub>, now: Instant) -> EngineFuture<'static, usize> {
        let kept = parked::park(&self.shared, subs, now);
        Box::pin(std::future::ready(kept))
    }

    fn claim(&self, key: &str, ids: &[String], _: Instant) -> EngineFuture<'_, Vec<ParkedSub>> {
        // The window is the hashes' lifetime in Redis.
        let (key, ids) = (key.to_owned(), ids.to_vec());
        Box::pin(async move { parked::claim(&self.shared, &key, &ids).await })
    }

    fn expire(&self, now: Instant) {
        let sh = &self.shared;
        {
            let mut parks = lock(&sh.parks);
            while parks
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) > sh.limits.window)
            {
                parks.pop_front();
            }
        }
        fanout::drop_unwanted(sh.clone(), now);
    }

    fn parked(&self) -> usize {
        lock(&self.shared.parks).len()
    }

    fn history_size(&self) -> (usize, usize) {
        // History lives in Redis; its memory is Redis's to report.
        (0, 0)
    }

    fn want(&self, channel: &Arc<str>) -> EngineFuture<'_, Result<(), EngineError>> {
        let channel = channel.clone();
        Box::pin(fanout::want(self.shared.clone(), channel))
    }

    fn hold_slot(
        &self,
        key_name: &str,
        conn: ConnId,
        cap: u32,
    ) -> EngineFuture<'_, Result<bool, EngineError>> {
        let key_name: Arc<str> = Arc::from(key_name);
        Box::pin(async move {
            let sh = &self.shared;
            let mut con = sh.con()?;
            let member = format!("{}:{conn}", sh.node);
            let slot = Slot {
                key_name: &key_name,
                conn: &member,
            };
            let now = unix_ms_now();
            let expires = now.saturating_add(sh.settings.lease_ms);
            let asked = lease::acquire(&mut con, &sh.keys, &slot, now, expires, cap);
            let held = sh.ask(asked).await?;
            if held {
                lock(&sh.slots).insert(conn, key_name.clone());
            }
            Ok(held)
        })
    }

    fn free_slot(&self, conn: ConnId) {
        let sh = self.shared.clone();
        let Some(key_name) = lock(&sh.slots).remove(&conn) else {
            return;
        };
        tokio::spawn(async move {
            let Ok(mut con) = sh.con() else { return };
            let member = format!("{}:{conn}", sh.node);
            let slot = Slot {
                key_name: &key_name,
                conn: &member,
            };
            // Not answered: the lease runs out by itself.
            let _ = sh.ask(lease::release(&mut con, &sh.keys, &slot)).await;
        });
    }

    fn live(&self, sub: ParkedSub) -> EngineFuture<'static, ()> {
        let written = tokio::spawn(parked::live(self.shared.clone(), sub));
        Box::pin(async move {
            let _ = written.await;
        })
    }

    fn gone(&self, id: &Arc<str>) {
        parked::gone(&self.shared, id);
    }

    fn ready(&self) -> bool {
        // Up only with a master to write to, a subscription that delivers, and with
        // `min_replicas_acked = N` N replicas connected (else no publish is acknowledged).
        let replicas =
            usize::try_from(self.shared.settings.min_replicas_acked).unwrap_or(usize::MAX);
        lock(&self.shared.feed).up
            && self.shared.link.has_master()
            && self.shared.link.replicas() >= replicas
    }

    fn nodes(&self) -> EngineFuture<'_, Vec<NodeInfo>> {
        let sh = self.shared.clone();
        Box::pin(async move {
            let Ok(mut con) = sh.con() else {
                return Vec::new();
            };
            let listed = nodes::list(
                &mut con,
                &sh.keys,
                &sh.node,
                unix_ms_now(),
                sh.settings.lease_ms,
            );
            sh.ask(listed).await.unwrap_or_default()
        })
    }

    fn gaps(&self) -> Option<watch::Receiver<u64>> {
        Some(self.shared.gaps.subscribe())
    }
}

/// The highest id a failover lost that a read after `after` (up to `upto`) needed, 0 for
/// none: a recorded lost range `(lo, hi]` with `hi` above `after`, or `after` itself among
/// the ids the master's epoch says an old master issued and this one never had. With
/// `acked` (`min_replicas_acked`), none unless Redis lost everything.
fn lost_after(log: &eventlog::LogRead, after: u64, upto: u64, acked: bool) -> u64 {
    if acked && log.epoch.is_some_and(|(base, _)| base > 0) {
        // With `min_replicas_acked`, lost ids were never acknowledged: nothing a resume
        // needed is missing (docs/PROTOCOL.md "Failover").
        return 0;
    }
    let mut lost = log
        .lost
        .iter()
        .filter(|(lo, hi)| *hi > after && *lo < upto)
        .map(|(_, hi)| (*hi).min(upto))
        .max()
        .unwrap_or(0);
    if let Some((base, start)) = log.epoch {
        if after > base && after <= start {
            lost = lost.max(start.min(upto));
        }
    }
    lost
}

/// Renews this node's connection slots, key by key, and its live subscriptions' records,
/// every third of the lease.
async fn renew_leases(sh: Arc<Shared>) {
    let every = Duration::from_millis(sh.settings.lease_ms / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let mut by_key: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for (conn, key) in lock(&sh.slots).iter() {
            by_key
                .entry(key.clone())
                .or_default()
                .push(format!("{}:{conn}", sh.node));
        }
        let Ok(mut con) = sh.con() else { continue };
        let record = nodes::NodeRecord {
            connections: sh.metrics.connections.load(Ordering::Relaxed),
            at_ms: unix_ms_now(),
        };
        let announced = nodes::announce(&mut con, &sh.keys, &sh.node, &record);
        if sh.ask(announced).await.is_err() {
            log::debug!("cannot write this node's record to Redis");
        }
        if !parked::renew_live(&sh, &mut con).await {
            sh.metrics
                .engine
                .lease_renewal_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let expires = unix_ms_now().saturating_add(sh.settings.lease_ms);
        for (key, members) in by_key {
            let m = &sh.metrics.engine;
            m.lease_renewals.fetch_add(1, Ordering::Relaxed);
            let renewed = lease::renew(&mut con, &sh.keys, &key, &members, expires);
            if sh.ask(renewed).await.is_err() {
                m.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
