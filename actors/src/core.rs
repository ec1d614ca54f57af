//! The actor system of one broker, started together: the hubs, the rate limiter and the
//! heartbeat on an arbiter of their own, the publisher, and the shared metrics.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};

use crate::backend::Backend;
use crate::heartbeat::Heartbeat;
use crate::hubs::Hubs;
use crate::messages::CloseAll;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::rate_limiter::RateLimiter;
use crate::sessions::Sessions;
use crate::settings::Settings;

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
    /// Answers commands.
    pub backend: Arc<dyn Backend>,
    /// Which subscription belongs to which connection, and the parked ones.
    pub sessions: Arc<Sessions>,
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
        let hubs = Arc::new(Hubs::start(
            handle.clone(),
            settings.clone(),
            metrics.clone(),
        ));
        let (limits, m) = (settings.limits.clone(), metrics.clone());
        let limiter = RateLimiter::start_in_arbiter(&handle, move |_| RateLimiter::new(limits, m));
        let sessions = Arc::new(Sessions::new(
            Duration::from_millis(settings.resume.window_ms),
            settings.resume.max_parked,
        ));
        let interval = settings.heartbeat.interval();
        let expiring = sessions.clone();
        let heartbeat =
            Heartbeat::start_in_arbiter(&handle, move |_| Heartbeat::new(interval, expiring));
        let publisher = Publisher::new(
            hubs.clone(),
            settings.publish.max_batch_events,
            Duration::from_millis(settings.publish.max_stall_ms),
            metrics.clone(),
        );
        let backend = backend(&publisher);
        Arc::new(Core {
            settings,
            hubs,
            limiter,
            heartbeat,
            publisher,
            metrics,
            backend,
            sessions,
            arbiter,
        })
    }

    /// Tells every connection to close with 1001; returns how many were told.
    pub async fn close_all(&self) -> usize {
        self.heartbeat.send(CloseAll).await.unwrap_or(0)
    }

    /// Stops the actors' arbiter (after the connections are gone).
    pub fn stop(&self) {
        self.arbiter.stop();
    }
}
