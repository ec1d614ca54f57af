//! Where the Redis master is, and this node's command connections to it: `engine.redis_url`
//! (`redis://` or `rediss://` with `engine.tls_ca_file`, an ACL user and password), or the
//! master that `engine.sentinels` name for `engine.sentinel_master`, confirmed with `ROLE`.
//!
//! One task keeps the link (`keep`): it finds the master, connects, and publishes the
//! connection with a generation number; every command whose reply says the connection or
//! the master is gone (an I/O error, a timeout, `READONLY`, `MASTERDOWN`) marks that
//! generation lost, and so does a `ROLE` check every `engine.probe_interval_ms` that
//! finds a replica or no answer. The task then asks again (the Sentinels, on every
//! reconnect), and the pub/sub side ([`super::fanout`]) follows the generation: it
//! reconnects to the new master and backfills.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::{watch, Notify};

use super::eventlog::Keys;
use super::handover;
use crate::engine::EngineError;
use crate::metrics::Metrics;
use crate::settings::{masked_url, EngineSettings};

/// How the master is found.
enum Target {
    /// `engine.redis_url` is the master.
    Url(Box<Client>),
    /// The Sentinels name it; their URLs (masked) for the log alongside.
    Sentinels(Vec<(Client, String)>),
}

/// The master this node is connected to now.
#[derive(Clone)]
pub(in crate::engine) struct Master {
    /// Counts the connections made: a lost generation is never taken for a later one.
    pub gen: u64,
    /// For the pub/sub connection to the same server.
    pub client: Client,
    /// Commands: appends, reads, leases.
    pub con: MultiplexedConnection,
    /// With `engine.min_replicas_acked`: the appends and their `WAIT`, which blocks its
    /// connection, away from the other commands.
    pub acked: Option<MultiplexedConnection>,
    /// `HOST:PORT`, for the log.
    pub addr: String,
}

/// The link to the master. See the module documentation.
pub(in crate::engine) struct Link {
    settings: EngineSettings,
    target: Result<Target, String>,
    current: watch::Sender<Option<Master>>,
    lost: Notify,
    lost_gen: AtomicU64,
    gens: AtomicU64,
    /// The cluster's keys, for the handover after a failover.
    keys: Keys,
    /// Seconds a channel stream lives after its last append (as the appends set it).
    ttl_secs: u64,
    metrics: Arc<Metrics>,
    /// Replicas the master listed as connected at the last `ROLE` check (0 while there is
    /// no master): with `engine.min_replicas_acked`, `/ready` needs that many.
    replicas: AtomicUsize,
}

/// A command connection of one generation: any reply that says the master is gone marks
/// the generation lost.
#[derive(Clone)]
pub(in crate::engine) struct Con {
    con: MultiplexedConnection,
    gen: u64,
    link: Arc<Link>,
}

/// Whether `e` means the connection or the master is gone (rather than a bad command).
fn signals_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("READONLY" | "MASTERDOWN" | "LOADING" | "NOREPLICAS")
        )
}

impl Con {
    fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r {
            if signals_lost(e) {
                self.link.lost(self.gen);
            }
        }
        r
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.con.req_packed_command(cmd).await;
            self.check(r)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.con.req_packed_commands(pipeline, offset, count).await;
            self.check(r)
        })
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }
}

/// Reads `engine.tls_ca_file`, if set.
fn read_ca(settings: &EngineSettings) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = &settings.tls_ca_file else {
        return Ok(None);
    };
    std::fs::read(path)
        .map(Some)
        .map_err(|e| format!("engine.tls_ca_file: cannot read {path}: {e}"))
}

/// A client of `url`, trusting `ca` for `rediss://`. Errors never show the URL.
fn client(url: &str, ca: &Option<Vec<u8>>) -> Result<Client, String> {
    let made = match ca {
        Some(pem) if url.starts_with("rediss://") => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        _ => Client::open(url),
    };
    made.map_err(|e| format!("{} is not usable: {e}", masked_url(url)))
}

/// `url` with its host and port replaced (the user, password, scheme and database kept).
fn with_address(url: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{user}{host}:{port}{path}")
}

/// `HOST:PORT` of a URL, for the log.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..])
        .to_owned()
}

/// What a failed connection attempt says, with a hint for a refused password naming the
/// `setting` that holds it.
fn describe(e: &RedisError, setting: &str) -> String {
    let text = e.to_string();
    if matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return format!("Redis refused the user or password (check {setting}): {text}");
    }
    text
}

/// Whether a connection error is a refused password or user, or a certificate that the
/// configured authorities do not vouch for (settings to fix, not an outage to wait out).
pub fn is_auth_error(message: &str) -> bool {
    message.contains("Redis refused the user or password")
        || message.contains("invalid peer certificate")
}

impl Link {
    /// The link `settings` describe; it connects once [`keep`] runs. `ttl_secs`: how long a
    /// channel stream lives after its last append (the handover writes them so).
    pub fn new(settings: &EngineSettings, ttl_secs: u64, metrics: Arc<Metrics>) -> Link {
        let target = read_ca(settings).and_then(|ca| {
            if settings.sentinels.is_empty() {
                return client(&settings.redis_url, &ca).map(|c| Target::Url(Box::new(c)));
            }
            settings
                .sentinels
                .iter()
                .map(|u| client(u, &ca).map(|c| (c, masked_url(u))))
                .collect::<Result<Vec<_>, _>>()
                .map(Target::Sentinels)
        });
        Link {
            settings: settings.clone(),
            target,
            current: watch::Sender::new(None),
            lost: Notify::new(),
            lost_gen: AtomicU64::new(0),
            gens: AtomicU64::new(0),
            keys: Keys::new(settings.key_prefix.clone()),
            ttl_secs,
            metrics,
            replicas: AtomicUsize::new(0),
        }
    }

    /// Replicas the master listed as connected at the last check (0 without a master).
    pub fn replicas(&self) -> usize {
        self.replicas.load(Ordering::Relaxed)
    }

    fn set_replicas(&self, n: usize) {
        self.replicas.store(n, Ordering::Relaxed);
        let gauge = i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.engine.replicas.store(gauge, Ordering::Relaxed);
    }

    /// Generation `gen` is gone: [`keep`] finds the master again.
    pub fn lost(&self, gen: u64) {
        self.lost_gen.fetch_max(gen, Ordering::Relaxed);
        self.lost.notify_one();
    }

    /// Follows the master as it changes.
    pub fn watch(&self) -> watch::Receiver<Option<Master>> {
        self.current.subscribe()
    }

    /// Whether there is a master now.
    pub fn has_master(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// A command connection to the master, or `unavailable` while there is none.
    pub fn con(self: &Arc<Self>) -> Result<Con, EngineError> {
        self.con_of(|m| &m.con)
    }

    /// The connection appends take: the `WAIT` connection with `min_replicas_acked`.
    pub fn append_con(self: &Arc<Self>) -> Result<Con, EngineError> {
        self.con_of(|m| m.acked.as_ref().unwrap_or(&m.con))
    }

    /// A handle on the master's connection `pick` names (only that connection is
    /// cloned, once per command), or `unavailable` while there is no master.
    fn con_of(
        self: &Arc<Self>,
        pick: impl FnOnce(&Master) -> &MultiplexedConnection,
    ) -> Result<Con, EngineError> {
        let current = self.current.borrow();
        let m = current.as_ref().ok_or_else(no_master)?;
        Ok(Con {
            con: pick(m).clone(),
            gen: m.gen,
            link: self.clone(),
        })
    }

    fn timeouts(&self, extra: Duration) -> AsyncConnectionConfig {
        let s = &self.settings;
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(s.connect_timeout_ms)))
            .set_response_timeout(Some(
                Duration::from_millis(s.response_timeout_ms).saturating_add(extra),
            ))
    }

    /// Asks the Sentinels, in turn, where the master is.
    async fn ask_sentinels(
        &self,
        sentinels: &[(Client, String)],
    ) -> Result<(Client, String), String> {
        let s = &self.settings;
        let mut why = Vec::new();
        for (sentinel, shown) in sentinels {
            let asked = async {
                let mut con = sentinel
                    .get_multiplexed_async_connection_with_config(&self.timeouts(Duration::ZERO))
                    .await
                    .map_err(|e| describe(&e, "engine.sentinels"))?;
                let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&s.sentinel_master)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                addr.ok_or_else(|| format!("knows no master named {:?}", s.sentinel_master))
            };
            let limit =
                Duration::from_millis(s.connect_timeout_ms.saturating_add(s.response_timeout_ms));
            match tokio::time::timeout(limit, asked).await {
                Ok(Ok((host, port))) => {
                    let url = with_address(&s.redis_url, &host, port);
                    let ca = read_ca(s)?;
                    return Ok((client(&url, &ca)?, format!("{host}:{port}")));
                }
                Ok(Err(e)) => why.push(format!("{shown}: {e}")),
                Err(_) => why.push(format!("{shown}: no answer in time")),
            }
        }
        Err(format!("no Sentinel named the master ({})", why.join("; ")))
    }

    /// Finds the master and connects to it, confirming its role.
    async fn connect(&self) -> Result<Master, String> {
        let (client, addr) = match self.target.as_ref().map_err(Clone::clone)? {
            Target::Url(c) => ((**c).clone(), address_of(&self.settings.redis_url)),
            Target::Sentinels(list) => self.ask_sentinels(list).await?,
        };
        let s = &self.settings;
        let limit =
            Duration::from_millis(s.connect_timeout_ms.saturating_add(s.response_timeout_ms));
        let connect = |extra: Duration| {
            let client = client.clone();
            let config = self.timeouts(extra);
            let addr = addr.clone();
            async move {
                match tokio::time::timeout(
                    limit,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(format!("{addr}: {}", describe(&e, "engine.redis_url"))),
                    Err(_) => Err(format!(
                        "{addr}: no connection within engine.connect_timeout_ms"
                    )),
                }
            }
        };
        let mut con = connect(Duration::ZERO).await?;
        let Some(replicas) = role(&mut con, limit).await? else {
            return Err(match self.target {
                Ok(Target::Sentinels(_)) => {
                    format!("{addr} is not a master (yet): a failover is under way")
                }
                _ => format!(
                    "{addr} is a replica: engine.redis_url must name the master (or use engine.sentinels)"
                ),
            });
        };
        self.set_replicas(replicas);
        let acked = if s.min_replicas_acked > 0 {
            let wait = Duration::from_millis(s.replicas_ack_timeout_ms);
            Some(connect(wait).await?)
        } else {
            None
        };
        Ok(Master {
            gen: self.gens.fetch_add(1, Ordering::Relaxed).saturating_add(1),
            client,
            con,
            acked,
            addr,
        })
    }

    /// Whether the Sentinels still name `addr` as the master (`true` without Sentinels,
    /// and when none answers: the `ROLE` check decides then).
    async fn still_named(&self, addr: &str) -> bool {
        let Ok(Target::Sentinels(list)) = &self.target else {
            return true;
        };
        match self.ask_sentinels(list).await {
            Ok((_, named)) => named == addr,
            Err(_) => true,
        }
    }

    /// Holds generation `gen` until a command reports it lost, a `ROLE` check fails, or
    /// the Sentinels name another master (a failover, planned or not).
    async fn hold(&self, gen: u64, addr: &str, mut con: MultiplexedConnection) {
        let every = Duration::from_millis(self.settings.probe_interval_ms);
        let limit = Duration::from_millis(self.settings.response_timeout_ms);
        loop {
            tokio::select! {
                _ = self.lost.notified() => {
                    if self.lost_gen.load(Ordering::Relaxed) >= gen {
                        log::warn!("Redis: the connection to the master is lost; finding the master again");
                        return;
                    }
                }
                _ = tokio::time::sleep(every) => match role(&mut con, limit).await {
                    Ok(Some(replicas)) if self.still_named(addr).await => {
                        self.set_replicas(replicas);
                    }
                    Ok(Some(_)) => {
                        log::warn!("Redis: the Sentinels name another master; following them");
                        return;
                    }
                    Ok(None) => {
                        log::warn!("Redis: the master became a replica; finding the master again");
                        return;
                    }
                    Err(e) => {
                        log::warn!("Redis: {e}; finding the master again");
                        return;
                    }
                },
            }
        }
    }
}

/// How long a node keeps a handover the new master has not taken yet (it refuses writes,
/// for example with `min-replicas-to-write` until Sentinel gave it a replica), not using
/// that master meanwhile. Fixed: Sentinel makes the old master a replica about 8 s after
/// the switch, and a master that refuses writes for a minute after that is an outage the
/// node cannot bridge; past it the copy is dropped and what it held shows as lost
/// (`recovered: false`), as after an unplanned failover.
const HANDOVER_KEPT: Duration = Duration::from_secs(60);

impl Link {
    fn limit(&self) -> Duration {
        let s = &self.settings;
        Duration::from_millis(
            s.connect_timeout_ms
                .saturating_add(s.response_timeout_ms.saturating_mul(4)),
        )
    }

    /// The read half of the handover from `old` ([`handover::take`]), bounded in time; what
    /// it cannot do is logged.
    async fn take(
        &self,
        old: &Client,
        old_addr: &str,
        mut new: MultiplexedConnection,
    ) -> Option<handover::Taken> {
        let done = handover::take(&self.settings, &self.keys, old, &mut new);
        match tokio::time::timeout(self.limit(), done).await {
            Ok(Ok(Some(t))) => Some(t),
            Ok(Ok(None)) => {
                log::info!("Redis handover: {old_addr} is gone, not the new master's predecessor, or holds nothing newer; nothing to copy");
                None
            }
            Ok(Err(e)) => {
                self.metrics
                    .engine
                    .handover_failures
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("Redis handover from {old_addr}: {e}");
                None
            }
            Err(_) => {
                self.metrics
                    .engine
                    .handover_failures
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("Redis handover from {old_addr}: the old master did not answer in time");
                None
            }
        }
    }

    /// The write half ([`handover::give`]): whether the new master took it.
    async fn give(
        &self,
        taken: &handover::Taken,
        old_addr: &str,
        mut new: MultiplexedConnection,
    ) -> bool {
        let done = handover::give(&self.settings, &self.keys, taken, &mut new, self.ttl_secs);
        let m = &self.metrics.engine;
        match tokio::time::timeout(self.limit(), done).await {
            Ok(Ok(h)) => {
                if h.copied > 0 {
                    m.handovers.fetch_add(1, Ordering::Relaxed);
                    m.handed_over_events.fetch_add(h.copied, Ordering::Relaxed);
                }
                log::info!(
                    "Redis handover from {old_addr}: {} events and head raises copied; the new master's history is complete up to {}",
                    h.copied,
                    h.base
                );
                true
            }
            Ok(Err(e)) => {
                log::warn!(
                    "Redis handover from {old_addr}: {e}; trying again before using the new master"
                );
                false
            }
            Err(_) => {
                log::warn!("Redis handover from {old_addr}: the new master did not answer in time; trying again");
                false
            }
        }
    }
}

fn no_master() -> EngineError {
    EngineError::Unavailable("Redis: no master reachable now".into())
}

/// Asks `ROLE`: for a master, how many replicas it lists as connected; `None` for a
/// replica (or a Sentinel).
async fn role(con: &mut MultiplexedConnection, limit: Duration) -> Result<Option<usize>, String> {
    let role = redis::cmd("ROLE");
    let asked = role.query_async::<Vec<Value>>(con);
    match tokio::time::timeout(limit, asked).await {
        Ok(Ok(role)) => {
            let master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
                || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
            let replicas = match role.get(2) {
                Some(Value::Array(list)) => list.len(),
                _ => 0,
            };
            Ok(master.then_some(replicas))
        }
        Ok(Err(e)) => Err(format!("ROLE: {e}")),
        Err(_) => Err("no answer to ROLE in time".into()),
    }
}

/// One attempt to reach the master, for the start: `Err` only when Redis refused the user
/// or password (a setting to fix); an unreachable Redis is waited for.
pub async fn check(settings: &EngineSettings) -> Result<(), String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let link = Link::new(settings, 0, Arc::new(Metrics::default()));
    match link.connect().await {
        Ok(_) => Ok(()),
        Err(e) if is_auth_error(&e) || link.target.is_err() => Err(e),
        Err(e) => {
            log::warn!("Redis is not reachable yet ({e}); the broker starts and reconnects");
            Ok(())
        }
    }
}

/// Keeps the link for the life of the process: find the master, connect, hold it until
/// lost, back off, again.
pub(in crate::engine) async fn keep(link: Arc<Link>) {
    let min = Duration::from_millis(link.settings.reconnect_min_ms);
    let max = Duration::from_millis(link.settings.reconnect_max_ms);
    let mut backoff = min;
    // The master held before, for the handover when the next one is another server.
    let mut previous: Option<(Client, String)> = None;
    // A handover read from the old master that the new one has not taken yet, since when,
    // and from where.
    let mut pending: Option<(handover::Taken, Instant, String)> = None;
    loop {
        let started = Instant::now();
        match link.connect().await {
            Ok(master) => {
                let (gen, con, addr) = (master.gen, master.con.clone(), master.addr.clone());
                if let Some((old, old_addr)) = previous.take().filter(|(_, a)| *a != addr) {
                    link.metrics
                        .engine
                        .failovers
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!("Redis: the master moved from {old_addr} to {addr}");
                    pending = link
                        .take(&old, &old_addr, con.clone())
                        .await
                        .map(|t| (t, Instant::now(), old_addr));
                }
                previous = Some((master.client.clone(), addr.clone()));
                // Not used before it took the handover: no append may land above what
                // the handover must put below it.
                let usable = match &pending {
                    None => true,
                    Some((taken, since, from)) => {
                        if link.give(taken, from, con.clone()).await {
                            true
                        } else if since.elapsed() > HANDOVER_KEPT {
                            link.metrics
                                .engine
                                .handover_failures
                                .fetch_add(1, Ordering::Relaxed);
                            log::warn!("Redis handover from {from}: the new master did not take it within {HANDOVER_KEPT:?}; dropped (what it held shows as lost)");
                            true
                        } else {
                            false
                        }
                    }
                };
                if usable {
                    pending = None;
                    log::info!("Redis master {addr} (connection {gen})");
                    link.current.send_replace(Some(master));
                    link.hold(gen, &addr, con).await;
                    link.current.send_replace(None);
                    link.set_replicas(0);
                    backoff = min;
                }
            }
            Err(why) => log::warn!("Redis: {why}"),
        }
        if started.elapsed() > max {
            backoff = min;
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_address_replaces_the_host_only() {
        assert_eq!(
            with_address("rediss://app:pw@sentinel-named:1/2", "10.0.0.5", 6380),
            "rediss://app:pw@10.0.0.5:6380/2"
        );
        assert_eq!(with_address("redis://h:1", "::1", 7), "redis://[::1]:7");
        assert_eq!(address_of("redis://u:secret@h:6379/0"), "h:6379");
    }
}
