//! The actor system of one broker, started together: the hubs, the rate limiter and the
//! heartbeat on an arbiter of their own, the publisher, and the shared metrics.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};

use crate::backend::Backend;
use crate::disconnect::Disconnect;
use crate::engine::memory::MemoryEngine;
use crate::engine::redis::{RedisEngine, RedisParts};
use crate::engine::Engine;
use crate::fanout::delivery::Delivery;
use crate::fanout::hubs::Hubs;
use crate::fanout::progress::Progress;
use crate::flow::Flow;
use crate::heartbeat::Heartbeat;
use crate::messages::CloseAll;
use crate::metrics::Metrics;
use crate::publisher::{Publisher, PublisherParts};
use crate::rate_limiter::RateLimiter;
use crate::sessions::Sessions;
use crate::settings::{EngineKind, Settings};

/// Everything a connection or a route needs from the broker, shared through an `Arc`.
pub struct Core {
    /// The validated settings.
    pub settings: Settings,
    /// Channel hubs by name.
    pub hubs: Arc<Hubs>,
    /// The rate limiter.
    pub limiter: Addr<RateLimiter>,
    /// The heartbeat, which also knows every connection.
    pub heartbeat: Addr<Heartbeat>,
    /// The publish path.
    pub publisher: Publisher,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Publisher back-pressure: outboxes mark themselves congested, publishers wait.
    pub flow: Arc<Flow>,
    /// Answers commands.
    pub backend: Arc<dyn Backend>,
    /// Which live connection holds each subscription.
    pub sessions: Arc<Sessions>,
    /// Sequence, history, chain head and parked subscriptions.
    pub engine: Arc<dyn Engine>,
    /// How far the node's fan-out has come (ordered outboxes drain up to it).
    pub progress: Arc<Progress>,
    arbiter: Arbiter,
}

impl Core {
    /// Starts the actor system; `backend` makes the command backend, given the publisher
    /// (the built-in ledger publishes its blocks through it). Must be called inside a
    /// running actix `System`.
    pub fn start(
        settings: Settings,
        backend: impl FnOnce(&Publisher) -> Arc<dyn Backend>,
    ) -> Arc<Core> {
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let metrics = Arc::new(Metrics::default());
        let progress = Arc::new(Progress::default());
        let hubs = Arc::new(Hubs::start(
            handle.clone(),
            settings.clone(),
            metrics.clone(),
            progress.clone(),
        ));
        let delivery = Arc::new(Delivery::new(
            hubs.clone(),
            progress.clone(),
            settings.limits.hub_queue_batches,
        ));
        let engine: Arc<dyn Engine> = match settings.engine.kind {
            EngineKind::Memory => Arc::new(MemoryEngine::new(
                settings.resume.history(),
                settings.resume.max_parked,
                delivery.clone(),
                metrics.clone(),
            )),
            EngineKind::Redis => Arc::new(RedisEngine::start(RedisParts {
                settings: settings.engine.clone(),
                limits: settings.resume.history(),
                max_parked: settings.resume.max_parked,
                sink: delivery.clone(),
                hubs: hubs.clone(),
                metrics: metrics.clone(),
                fanout_window: settings.limits.hub_queue_batches,
                arbiter: handle.clone(),
            })),
        };
        let (limits, m, e) = (settings.limits.clone(), metrics.clone(), engine.clone());
        let limiter =
            RateLimiter::start_in_arbiter(&handle, move |_| RateLimiter::new(limits, m, e));
        let interval = settings.heartbeat.interval();
        let heartbeat = Heartbeat::start_in_arbiter(&handle, move |_| Heartbeat::new(interval));
        if let Some(mut gaps) = engine.gaps() {
            // A gap this node cannot fill: its connections resume elsewhere (1013).
            let heartbeat = heartbeat.clone();
            handle.spawn(async move {
                while gaps.changed().await.is_ok() {
                    heartbeat.do_send(CloseAll(Disconnect::TryAgainLater));
                }
            });
        }
        // Parked subscriptions and history leave by age even when nothing is published.
        let expiring = engine.clone();
        handle.spawn(async move {
            let mut every = actix::clock::interval(interval);
            loop {
                every.tick().await;
                expiring.expire(std::time::Instant::now());
            }
        });
        let flow = Arc::new(Flow::default());
        let publisher = Publisher::new(PublisherParts {
            flow: flow.clone(),
            hubs: hubs.clone(),
            engine: engine.clone(),
            delivery,
            max_batch: settings.publish.max_batch_events,
            max_stall: Duration::from_millis(settings.publish.max_stall_ms),
            metrics: metrics.clone(),
            coalesce: settings.publish.coalesce_events,
            max_queued: settings.publish.max_queued_events,
            arbiter: handle.clone(),
        });
        let backend = backend(&publisher);
        Arc::new(Core {
            settings,
            hubs,
            limiter,
            heartbeat,
            publisher,
            metrics,
            flow,
            backend,
            sessions: Arc::new(Sessions::default()),
            engine,
            progress,
            arbiter,
        })
    }

    /// Refuses publishes from now on (`unavailable`) and tells every connection to close
    /// with 1001; returns how many were told.
    pub async fn close_all(&self) -> usize {
        self.publisher.close();
        self.heartbeat
            .send(CloseAll(Disconnect::Shutdown))
            .await
            .unwrap_or(0)
    }

    /// Stops the actors' arbiter (after the connections are gone).
    pub fn stop(&self) {
        self.arbiter.stop();
    }
}
