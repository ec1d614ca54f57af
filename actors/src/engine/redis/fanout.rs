//! A node's half of the Redis engine's fan-out: one pub/sub connection on which it
//! subscribes to the head raises and to the announcements of the channels its connections
//! subscribe to (interest: a node with no subscriber on a channel does not receive it).
//! Redis sends one connection its messages in publish order, and the append script
//! publishes as it sequences, so the node hands its sink events and head raises in
//! sequence order.
//!
//! When the connection drops, the node reconnects with backoff, subscribes again and
//! backfills from the history what it missed, in one consistent read, before it goes on
//! live; if the history no longer reaches back, it counts a gap, and the engine's gap
//! watch closes the node's connections with 1013 so that they resume elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use redis::aio::PubSubStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::eventlog::{parse_announcement, read_log, report, Keys, LogQuery};
use super::link::Master;
use super::record::{decode, unix_ms_now};
use super::{lock, unavailable, Shared, Wanted};
use crate::engine::{EngineError, Fed};
use crate::event::Event;

/// The event an announcement on `pubsub_channel` carries; `None` when the name is not an
/// events channel of `keys` or the announcement does not decode (another node's garbage
/// is skipped, never trusted).
pub fn event_of(
    keys: &Keys,
    pubsub_channel: &str,
    payload: &str,
    now: Instant,
    unix_now_ms: u64,
) -> Option<Arc<Event>> {
    let channel: Arc<str> = Arc::from(keys.channel_of(pubsub_channel)?);
    let a = parse_announcement(payload)?;
    event_from(channel, a.seq, a.raised, a.record, now, unix_now_ms)
}

/// Most messages handed to the sink as one batch.
const MAX_BATCH: usize = 1024;

/// The fence script: the sequence now, announced on a channel's events as `SEQ fence`.
static FENCE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local s = redis.call('GET', KEYS[1]) or '0' \
         redis.call('PUBLISH', ARGV[1], s .. ' fence') return s",
    )
});

/// This node wants `channel`: subscribes to its announcements (if not yet), then sends a
/// fence through them and resolves once the fence reached the channel's hub, so that the
/// hub has everything of the channel it will ever get up to the fence and live delivery
/// goes on from there. Refused `unavailable` while the pub/sub connection is down.
pub(super) async fn want(sh: Arc<Shared>, channel: Arc<str>) -> Result<(), EngineError> {
    {
        let mut wanted = lock(&sh.wanted);
        let w = wanted.entry(channel.clone()).or_insert(Wanted {
            asked: Instant::now(),
            subscribed: false,
            always: false,
        });
        w.asked = Instant::now();
        if w.subscribed {
            return Ok(());
        }
    }
    let mut subscriber = sh.subscriber.lock().await;
    if lock(&sh.wanted).get(&channel).is_some_and(|w| w.subscribed) {
        return Ok(());
    }
    let Some(sink) = subscriber.as_mut() else {
        return Err(unavailable("this node is reconnecting"));
    };
    let events = sh.keys.events(&channel);
    sh.ask(sink.subscribe(&events)).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    lock(&sh.fences)
        .entry(channel.clone())
        .or_default()
        .push(tx);
    let mut con = sh.con()?;
    let mut fence = FENCE.prepare_invoke();
    fence.key(sh.keys.sequence()).arg(&events);
    let fenced = async {
        fence
            .invoke_async::<String>(&mut con)
            .await
            .map_err(unavailable)?;
        rx.await
            .map_err(|_| unavailable("the subscriber reconnected"))
    };
    match tokio::time::timeout(sh.timeout(), fenced).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(unavailable("the fence did not come back in time")),
    }
    if let Some(w) = lock(&sh.wanted).get_mut(&channel) {
        w.subscribed = true;
    }
    Ok(())
}

/// Stops receiving channels that have had no subscriber on this node for
/// `engine.idle_channel_ms` (called on the engine's expiry tick).
pub(super) fn drop_unwanted(sh: Arc<Shared>, now: Instant) {
    let live: HashMap<Arc<str>, i64> = sh.hubs.subscription_counts().into_iter().collect();
    let idle = Duration::from_millis(sh.settings.idle_channel_ms);
    let gone: Vec<Arc<str>> = {
        let mut wanted = lock(&sh.wanted);
        let gone: Vec<Arc<str>> = wanted
            .iter()
            .filter(|(c, w)| {
                !w.always
                    && live.get(*c).copied().unwrap_or(0) <= 0
                    && now.saturating_duration_since(w.asked) > idle
            })
            .map(|(c, _)| c.clone())
            .collect();
        for c in &gone {
            wanted.remove(c);
        }
        gone
    };
    if gone.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut subscriber = sh.subscriber.lock().await;
        if let Some(sink) = subscriber.as_mut() {
            for c in gone {
                // Wanted again meanwhile: keep it.
                if lock(&sh.wanted).contains_key(&c) {
                    continue;
                }
                let _ =
                    tokio::time::timeout(sh.timeout(), sink.unsubscribe(sh.keys.events(&c))).await;
            }
        }
    });
}

/// The node's subscriber, for the life of the process: connect, subscribe, backfill, feed
/// the sink; on any loss, back off and again.
pub(super) async fn run(sh: Arc<Shared>) {
    let min = Duration::from_millis(sh.settings.reconnect_min_ms);
    let max = Duration::from_millis(sh.settings.reconnect_max_ms);
    let mut backoff = min;
    // The last sequence number handed to the sink, or the sequence when the first
    // subscription began: what a reconnect backfills after.
    let mut handed = 0u64;
    // A subscription was established before: the next one backfills.
    let mut established = false;
    loop {
        let started = Instant::now();
        match session(&sh, &mut handed, &mut established).await {
            Ok(()) => {}
            Err(why) => log::warn!("Redis subscriber: {why}"),
        }
        {
            *sh.subscriber.lock().await = None;
            for w in lock(&sh.wanted).values_mut() {
                w.subscribed = false;
            }
            lock(&sh.feed).down();
            lock(&sh.fences).clear();
            sh.metrics.engine.up.store(0, Ordering::Relaxed);
        }
        if started.elapsed() > max {
            backoff = min;
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(max);
    }
}

/// One connection's life, on the master the link has now. Returns when it is lost, when
/// its probe does not come back, or when the master changes.
async fn session(sh: &Arc<Shared>, handed: &mut u64, established: &mut bool) -> Result<(), String> {
    let reconnect = *established;
    let connect = Duration::from_millis(sh.settings.connect_timeout_ms);
    let mut masters = sh.link.watch();
    let master = tokio::time::timeout(connect, masters.wait_for(Option::is_some))
        .await
        .map_err(|_| "no Redis master within engine.connect_timeout_ms".to_string())?
        .map_err(|_| "the link to Redis stopped".to_string())?
        .clone()
        .ok_or("no Redis master")?;
    let gen = master.gen;
    let pubsub = match tokio::time::timeout(connect, master.client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            sh.link.lost(gen);
            return Err(e.to_string());
        }
        Err(_) => {
            sh.link.lost(gen);
            return Err("no connection within engine.connect_timeout_ms".to_string());
        }
    };
    let (mut sink, mut stream) = pubsub.split();
    let timeout = sh.timeout();
    let mut subscriber = sh.subscriber.lock().await;
    let subscribe = |sink: &mut redis::aio::PubSubSink, name: String| {
        let mut sink = sink.clone();
        async move {
            tokio::time::timeout(timeout, sink.subscribe(name))
                .await
                .map_err(|_| "no reply to SUBSCRIBE".to_string())?
                .map_err(|e| e.to_string())
        }
    };
    subscribe(&mut sink, sh.keys.probe(&sh.node)).await?;
    subscribe(&mut sink, sh.keys.head_raises()).await?;
    let channels: Vec<Arc<str>> = lock(&sh.wanted).keys().cloned().collect();
    for c in &channels {
        subscribe(&mut sink, sh.keys.events(c)).await?;
    }
    for c in &channels {
        if let Some(w) = lock(&sh.wanted).get_mut(c) {
            w.subscribed = true;
        }
    }
    if !reconnect {
        // Where this node starts: everything later reaches it live, or by backfill.
        let mut con = sh.con().map_err(|e| e.to_string())?;
        let mut get = redis::cmd("GET");
        get.arg(sh.keys.sequence());
        let now: Option<u64> = sh
            .ask(get.query_async(&mut con))
            .await
            .map_err(|e| e.to_string())?;
        *handed = now.unwrap_or(0);
        *established = true;
    }
    *subscriber = Some(sink.clone());
    drop(subscriber);
    if reconnect {
        sh.metrics.engine.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    let window = Arc::new(Semaphore::new(sh.fanout_window));
    // Everything up to `skip` came by backfill; live messages up to it are repeats.
    let skip = if reconnect {
        backfill(sh, &channels, handed, &window).await?
    } else {
        *handed
    };
    lock(&sh.feed).up = true;
    sh.metrics.engine.up.store(1, Ordering::Relaxed);
    log::info!(
        "Redis subscriber up on {} ({} channels)",
        master.addr,
        channels.len()
    );
    let live = Live {
        handed,
        skip,
        window: &window,
        gen,
        masters,
    };
    feed(sh, &mut stream, live).await
}

/// Reads what the node missed since `handed` on `channels` and hands it on, in order.
/// Returns the last sequence number the read covered.
async fn backfill(
    sh: &Arc<Shared>,
    channels: &[Arc<str>],
    handed: &mut u64,
    window: &Arc<Semaphore>,
) -> Result<u64, String> {
    let limit = sh.settings.max_backfill_events;
    let q = LogQuery {
        after: *handed,
        upto: None,
        limit: limit.saturating_add(1),
        release: None,
        channels: channels.iter().map(|c| (c.to_string(), *handed)).collect(),
    };
    let mut con = sh.con().map_err(|e| e.to_string())?;
    // First the highest id this node handed out: on a master that lost some of them (a
    // failover), they are marked lost before anyone resumes across them.
    let reported = report(
        &mut con,
        &sh.keys,
        (*handed).max(sh.highest.load(Ordering::Relaxed)),
    );
    let lost_ids = sh.ask(reported).await.map_err(|e| e.to_string())?;
    let log = sh
        .ask(read_log(&mut con, &sh.keys, &q))
        .await
        .map_err(|e| e.to_string())?;
    let last = log.last.unwrap_or(*handed);
    let total: usize = log.channels.iter().map(|c| c.entries.len()).sum();
    let trimmed = log
        .channels
        .iter()
        .any(|c| c.kept_from > handed.saturating_add(1));
    // A sequence behind what this node saw: Redis lost its data (restarted empty), or a
    // failover lost ids this node handed out.
    let lost = match log.last {
        None => *handed > 0,
        Some(l) => l < *handed,
    } || failover_cost(sh, lost_ids, &log, *handed);
    let m = &sh.metrics.engine;
    if lost || trimmed || total > limit || log.raises.len() > limit {
        m.gaps.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "Redis subscriber: the history no longer covers the gap after {}; closing this node's connections with 1013",
            *handed
        );
        sh.gaps.send_modify(|n| *n = n.wrapping_add(1));
        *handed = last.max(*handed);
        return Ok(last);
    }
    let (now, unix_now) = (Instant::now(), unix_ms_now());
    let mut fed: Vec<Fed> = Vec::with_capacity(total.saturating_add(log.raises.len()));
    for (channel, c) in channels.iter().zip(log.channels) {
        for (seq, record) in c.entries {
            if let Some(e) = event_from(channel.clone(), seq, None, &record, now, unix_now) {
                fed.push(Fed::Event(e));
            }
        }
    }
    for (by, number) in log.raises {
        fed.push(Fed::Head { number, by });
    }
    // In sequence order; a raise right after the event that made it.
    fed.sort_by_key(|f| (f.seq(), matches!(f, Fed::Head { .. })));
    let n = fed.iter().filter(|f| matches!(f, Fed::Event(_))).count();
    for chunk in fed.chunks(MAX_BATCH) {
        let Ok(permit) = window.clone().acquire_owned().await else {
            return Err("the fan-out stopped".into());
        };
        hand_on(sh, chunk, permit);
    }
    m.backfills.fetch_add(1, Ordering::Relaxed);
    m.backfilled_events.fetch_add(n as u64, Ordering::Relaxed);
    *handed = last.max(*handed);
    Ok(last)
}

/// Whether a failover (or a Redis that lost its data) may have cost this node's
/// subscribers events they can no longer get, so that they must resume elsewhere (1013)
/// and be told `recovered: false` (docs/PROTOCOL.md "Failover"):
/// - Redis restarted empty (the epoch's base is 0) with this node past it: always;
/// - with `engine.min_replicas_acked`, nothing else: lost ids were never acknowledged
///   (their publishes answered `unavailable`), and everything acknowledged is here;
/// - by default: ids this node handed out are lost (`lost_ids`), or a node reported lost
///   ids above where this node is, which its subscribers may have needed.
fn failover_cost(sh: &Shared, lost_ids: bool, log: &super::eventlog::LogRead, handed: u64) -> bool {
    let wiped = log.epoch.is_some_and(|(base, _)| base == 0) && lost_ids;
    if wiped {
        return true;
    }
    if sh.settings.min_replicas_acked > 0 {
        return false;
    }
    lost_ids || lost_beyond(log, handed)
}

/// Whether a reported lost range lies (partly) beyond `handed` within the current epoch:
/// ids lost in an earlier failover that this node already rode through do not count.
fn lost_beyond(log: &super::eventlog::LogRead, handed: u64) -> bool {
    let Some((base, _)) = log.epoch else {
        return false;
    };
    log.lost.iter().any(|(lo, hi)| *lo == base && *hi > handed)
}

/// Hands `fed` to the sink under `permit` (room in the window); the permit and this
/// node's progress for waiting publishers are released when the hubs have it.
fn hand_on(sh: &Arc<Shared>, fed: &[Fed], permit: OwnedSemaphorePermit) {
    let Some(last) = fed.last().map(Fed::seq) else {
        return;
    };
    sh.saw(last);
    let delivered = sh.sink.deliver_fed(fed);
    // Fences handed on (queued to their hub ahead of any later attach): tell who waits.
    for f in fed {
        if let Fed::Mark { channel, .. } = f {
            for tx in lock(&sh.fences).remove(channel).into_iter().flatten() {
                let _ = tx.send(());
            }
        }
    }
    let sh = sh.clone();
    tokio::spawn(async move {
        let _ = delivered.await;
        drop(permit);
        lock(&sh.feed).reached(last);
    });
}

/// Where a live session stands, for [`feed`].
struct Live<'a> {
    /// The last sequence number handed to the sink.
    handed: &'a mut u64,
    /// Live messages up to here came by backfill: repeats.
    skip: u64,
    /// Room in the hubs.
    window: &'a Arc<Semaphore>,
    /// The link generation this connection belongs to.
    gen: u64,
    /// The link's master, to notice that it changed.
    masters: tokio::sync::watch::Receiver<Option<Master>>,
}

/// The liveness probe of one session: a number this node publishes to itself through
/// Redis every `engine.probe_interval_ms`, which must come back on the subscription within
/// `engine.probe_timeout_ms`.
struct Probe {
    /// The last number sent.
    sent: u64,
    /// When the number sent has not come back yet: since when.
    waiting_since: Option<Instant>,
    /// When the next one goes.
    next_at: Instant,
}

impl Probe {
    /// Sends the next probe when it is due; `Err` when the last one is overdue.
    fn tick(&mut self, sh: &Arc<Shared>, now: Instant) -> Result<(), String> {
        let timeout = Duration::from_millis(sh.settings.probe_timeout_ms);
        if let Some(since) = self.waiting_since {
            if now.saturating_duration_since(since) > timeout {
                sh.metrics
                    .engine
                    .probe_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "probe {} did not come back within engine.probe_timeout_ms: the subscription delivers nothing; reconnecting to backfill",
                    self.sent
                ));
            }
            return Ok(());
        }
        if now < self.next_at {
            return Ok(());
        }
        self.sent = self.sent.wrapping_add(1);
        self.waiting_since = Some(now);
        self.next_at = now + Duration::from_millis(sh.settings.probe_interval_ms);
        let (sh, n) = (sh.clone(), self.sent);
        tokio::spawn(async move {
            let Ok(mut con) = sh.con() else { return };
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(sh.keys.probe(&sh.node)).arg(n);
            // Not answered: the probe then does not come back, which is what counts.
            let _ = sh.ask(publish.query_async::<i64>(&mut con)).await;
        });
        Ok(())
    }

    /// Probe `n` came back.
    fn back(&mut self, n: u64) {
        if n == self.sent {
            self.waiting_since = None;
        }
    }
}

/// Feeds live messages to the sink until the connection is lost, its probe does not come
/// back in time (a subscription that stopped delivering without closing), or the link
/// moved to another master. Messages are read off the connection as they come (the client
/// library would otherwise queue them without bound) into a queue of at most
/// `engine.max_pending_messages`; past it this node has fallen too far behind its hubs,
/// drops the connection and backfills from the history after reconnecting.
async fn feed(sh: &Arc<Shared>, stream: &mut PubSubStream, live: Live<'_>) -> Result<(), String> {
    let Live {
        handed,
        skip,
        window,
        gen,
        mut masters,
    } = live;
    let every = Duration::from_millis(sh.settings.probe_interval_ms);
    let bound = sh.settings.max_pending_messages;
    let probe_channel = sh.keys.probe(&sh.node);
    let mut probe = Probe {
        sent: 0,
        waiting_since: None,
        next_at: Instant::now(),
    };
    let mut pending: VecDeque<Fed> = VecDeque::new();
    // The last sequence number taken into `pending` (a fence is placed after it).
    let mut received = *handed;
    loop {
        probe.tick(sh, Instant::now())?;
        tokio::select! {
            biased;
            changed = masters.wait_for(|m| m.as_ref().map(|m| m.gen) != Some(gen)) => {
                return Err(match changed {
                    Ok(_) => "the master changed or was lost; following it".into(),
                    Err(_) => "the link to Redis stopped".into(),
                });
            }
            permit = window.clone().acquire_owned(), if !pending.is_empty() => {
                let Ok(permit) = permit else { return Err("the fan-out stopped".into()) };
                let n = pending.len().min(MAX_BATCH);
                let batch: Vec<Fed> = pending.drain(..n).collect();
                if let Some(last) = batch.last() {
                    *handed = (*handed).max(last.seq());
                }
                hand_on(sh, &batch, permit);
            }
            next = tokio::time::timeout(every, stream.next()) => {
                let first = match next {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return Err("the connection closed".into()),
                    Err(_) => continue,
                };
                let (now, unix_now) = (Instant::now(), unix_ms_now());
                let mut take = |msg: redis::Msg| {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        return;
                    };
                    if msg.get_channel_name() == probe_channel {
                        if let Ok(n) = payload.parse() {
                            probe.back(n);
                        }
                        return;
                    }
                    let Some(item) = fed_of(sh, msg.get_channel_name(), &payload, now, unix_now)
                    else {
                        return;
                    };
                    match item {
                        // Not below anything received before: the hub has everything up to
                        // there once what is queued ahead of it is handed on.
                        Fed::Mark { channel, seq } => pending.push_back(Fed::Mark {
                            channel,
                            seq: seq.max(received).max(skip),
                        }),
                        item if item.seq() > skip => {
                            received = received.max(item.seq());
                            pending.push_back(item);
                        }
                        _ => {}
                    }
                };
                take(first);
                for _ in 1..MAX_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(msg)) => take(msg),
                        Some(None) => return Err("the connection closed".into()),
                        None => break,
                    }
                }
                if pending.len() > bound {
                    return Err(format!(
                        "{} messages waiting for the hubs, over engine.max_pending_messages; reconnecting to backfill",
                        pending.len()
                    ));
                }
            }
        }
    }
}

/// What one message carries: an event of a channel, or a head raise.
fn fed_of(sh: &Shared, name: &str, payload: &str, now: Instant, unix_now: u64) -> Option<Fed> {
    if name == sh.keys.head_raises() {
        let (by, number) = payload.split_once(' ')?;
        return Some(Fed::Head {
            number: number.parse().ok()?,
            by: by.parse().ok()?,
        });
    }
    if let Some(seq) = payload.strip_suffix(" fence") {
        return Some(Fed::Mark {
            channel: Arc::from(sh.keys.channel_of(name)?),
            seq: seq.parse().ok()?,
        });
    }
    event_of(&sh.keys, name, payload, now, unix_now).map(Fed::Event)
}

/// The event a stored record is, with its data parsed (as history turns it back into
/// one); `None` when the record does not decode.
fn event_from(
    channel: Arc<str>,
    seq: u64,
    raised: Option<u64>,
    record: &str,
    now: Instant,
    unix_now: u64,
) -> Option<Arc<Event>> {
    let stored = decode(seq, channel, raised, record, now, unix_now)?;
    Arc::new(stored).event().map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::redis::record::encode;
    use serde_json::value::RawValue;

    #[test]
    fn an_announcement_becomes_the_event_it_carries() {
        let keys = Keys::new("p:");
        let data = RawValue::from_string(r#"{"number":12,"hash":"0x1"}"#.into()).unwrap();
        let record = encode("new_block", Some(12), &data, 1_000);
        let now = Instant::now();
        let e = event_of(&keys, "p:e:blocks", &format!("77 12 {record}"), now, 1_000).unwrap();
        assert_eq!(e.seq, 77);
        assert_eq!(&*e.channel, "blocks");
        assert_eq!(e.kind, "new_block");
        assert_eq!(e.data["number"], 12);
        assert_eq!(e.raises_head, Some(12));
        assert_eq!(e.id, "77");
        // Not ours, or not an announcement: skipped.
        assert!(event_of(&keys, "q:e:blocks", &format!("77 12 {record}"), now, 0).is_none());
        assert!(event_of(&keys, "p:heads", "77 12", now, 0).is_none());
        assert!(event_of(&keys, "p:e:blocks", "77 - {not json", now, 0).is_none());
    }
}
