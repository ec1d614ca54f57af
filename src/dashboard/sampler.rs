//! The dashboard's numbers: one task per broker samples the counters every
//! `dashboard.sample_interval_ms` (at least a second), keeps the last
//! `dashboard.history_samples` samples for a page that opens, and hands each new one to the
//! open pages. It reads what `/metrics` reads (atomics, hub gauges, the limiter's per-key
//! counts, the cluster's node records), so the publish and delivery paths do no work for
//! it at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustorium_actors::messages::ConnectionsByKey;
use rustorium_actors::metrics::Rejection;
use rustorium_actors::settings::EngineKind;
use rustorium_actors::Core;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::config::DashboardConfig;

/// The samples kept and the channel new ones go out on.
pub struct Sampler {
    /// The last samples, oldest first, as JSON text; at most `history_samples`.
    ring: Mutex<VecDeque<Arc<str>>>,
    /// Each new sample, to every open page.
    tx: broadcast::Sender<Arc<str>>,
    /// Open pages; at most `max_viewers`.
    pub viewers: AtomicUsize,
    config: DashboardConfig,
}

/// The totals the previous sample saw, for the rates.
struct Previous {
    at: Instant,
    events_in: u64,
    frames_out: u64,
}

impl Sampler {
    /// Starts sampling `core` on the current actix runtime.
    pub fn start(core: Arc<Core>, config: DashboardConfig) -> Arc<Sampler> {
        // A page that falls this far behind skips samples rather than holding them.
        let (tx, _) = broadcast::channel(8);
        let sampler = Arc::new(Sampler {
            ring: Mutex::new(VecDeque::with_capacity(config.history_samples)),
            tx,
            viewers: AtomicUsize::new(0),
            config,
        });
        let task = sampler.clone();
        actix_web::rt::spawn(async move { task.run(core).await });
        sampler
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DashboardConfig {
        &self.config
    }

    /// The samples kept, oldest first, and a receiver of the next ones.
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (ring.iter().cloned().collect(), self.tx.subscribe())
    }

    async fn run(self: Arc<Self>, core: Arc<Core>) {
        let mut every =
            actix_web::rt::time::interval(Duration::from_millis(self.config.sample_interval_ms));
        let node = node_name();
        let started = Instant::now();
        let mut previous: Option<Previous> = None;
        loop {
            every.tick().await;
            let sample = sample(&core, &node, started, &mut previous, self.watched()).await;
            let text: Arc<str> = Arc::from(sample.to_string());
            {
                let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
                if ring.len() >= self.config.history_samples {
                    ring.pop_front();
                }
                ring.push_back(text.clone());
            }
            // No page open is not an error.
            let _ = self.tx.send(text);
        }
    }

    fn watched(&self) -> bool {
        self.viewers.load(Relaxed) > 0
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The host's name and this process's id.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host} (pid {})", std::process::id())
}

/// One sample. The cluster's node records are read from Redis only while a page watches.
async fn sample(
    core: &Core,
    node: &str,
    started: Instant,
    previous: &mut Option<Previous>,
    watched: bool,
) -> Value {
    let m = &core.metrics;
    let now = Instant::now();
    let events_in = m.events_published.load(Relaxed);
    let frames_out = m.messages_out.load(Relaxed);
    let last = previous.as_ref();
    let rate = |total: u64, before: fn(&Previous) -> u64| match last {
        Some(p) => {
            let secs = now.saturating_duration_since(p.at).as_secs_f64();
            if secs > 0.0 {
                total.saturating_sub(before(p)) as f64 / secs
            } else {
                0.0
            }
        }
        None => 0.0,
    };
    let rates = json!({
        "events_in": rate(events_in, |p| p.events_in),
        "frames_out": rate(frames_out, |p| p.frames_out),
    });
    *previous = Some(Previous {
        at: now,
        events_in,
        frames_out,
    });
    let by_key: Map<String, Value> = core
        .limiter
        .send(ConnectionsByKey)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(k, n)| (k, Value::from(n)))
        .collect();
    let subscriptions: Map<String, Value> = core
        .hubs
        .subscription_counts()
        .into_iter()
        .map(|(channel, n)| (channel.to_string(), Value::from(n.max(0))))
        .collect();
    let rejections: Map<String, Value> = Rejection::ALL
        .iter()
        .map(|r| (r.label().to_owned(), Value::from(m.rejections(*r))))
        .collect();
    let (resumes, recovered) = (m.resumes.load(Relaxed), m.resumes_recovered.load(Relaxed));
    let nodes = if watched {
        core.engine.nodes().await
    } else {
        Vec::new()
    };
    let this = nodes
        .iter()
        .find(|n| n.this)
        .map_or_else(|| node.to_owned(), |n| n.name.clone());
    json!({
        "t": unix_ms(),
        "node": this,
        "engine": match core.settings.engine.kind {
            EngineKind::Memory => "memory",
            EngineKind::Redis => "redis",
        },
        "uptime_s": started.elapsed().as_secs(),
        "connections": m.connections.load(Relaxed).max(0),
        "connections_by_key": by_key,
        "subscriptions": subscriptions,
        "parked": core.engine.parked(),
        "history_events": core.engine.history_size().0,
        "rates": rates,
        "totals": {
            "events_in": events_in,
            "frames_out": frames_out,
            "slow_consumer": m.rejections(Rejection::SlowConsumer),
            "heartbeat_timeout": m.rejections(Rejection::HeartbeatTimeout),
            "resumes_recovered": recovered,
            "resumes_failed": resumes.saturating_sub(recovered),
        },
        "rejections": rejections,
        "nodes": nodes,
    })
}
