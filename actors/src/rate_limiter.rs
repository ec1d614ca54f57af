//! The `RateLimiter` actor: per-key connection counts, and the per-connection quotas
//! (message rate as a governor GCRA bucket, subscription count) handed to each connection.
//!
//! Admission is one message per connection; the per-message checks run on the quota the
//! connection holds, with atomics, so the hot path never waits for this actor.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::engine::Engine;
use crate::messages::{Admit, ConnId, ConnectionsByKey, Release};
use crate::metrics::{Metrics, Rejection};
use crate::protocol::Dialect;
use crate::settings::Limits;

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    /// The key already has `max` connections open.
    TooManyConnections {
        /// The key's cap.
        max: u32,
    },
}

/// One connection's quotas, shared between the connection and the limiter.
#[derive(Debug)]
pub struct ConnectionQuota {
    messages: DefaultDirectRateLimiter,
    /// Messages allowed per `period`.
    pub cap: u32,
    /// The period `cap` applies to (a minute on `/ws`, a second on `/v1`).
    pub period: Duration,
    subscriptions: AtomicUsize,
    /// Subscriptions allowed.
    pub max_subscriptions: usize,
    /// Events per second this connection may publish. Every connection has the bucket:
    /// the role is checked per request, so a reload that grants the publish role applies
    /// to open connections too.
    publish: (DefaultDirectRateLimiter, u32),
}

impl ConnectionQuota {
    fn new(
        cap: u32,
        period: Duration,
        max_subscriptions: usize,
        publish_per_second: u32,
    ) -> ConnectionQuota {
        let burst = NonZeroU32::new(cap).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period / burst.get())
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let publish = (
            DefaultDirectRateLimiter::direct(Quota::per_second(
                NonZeroU32::new(publish_per_second).unwrap_or(NonZeroU32::MIN),
            )),
            publish_per_second,
        );
        ConnectionQuota {
            messages: DefaultDirectRateLimiter::direct(quota),
            cap,
            period,
            subscriptions: AtomicUsize::new(0),
            max_subscriptions,
            publish,
        }
    }

    /// Takes one message from the bucket; false when over the cap.
    pub fn check_message(&self) -> bool {
        self.messages.check().is_ok()
    }

    /// Takes `events` from the publish bucket. `Err(cap)` when over the per-second cap.
    /// (Whether the key may publish at all is the caller's check, by role.)
    pub fn check_publish(&self, events: usize) -> Result<(), u32> {
        let (bucket, cap) = &self.publish;
        let n = u32::try_from(events)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            _ => Err(*cap),
        }
    }

    /// Reserves one subscription; false when the connection already has the maximum.
    pub fn try_add_subscription(&self) -> bool {
        self.subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_subscriptions).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees one subscription slot.
    pub fn remove_subscription(&self) {
        let _ = self
            .subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Frees the connection's slot when dropped (by the connection actor as it stops).
#[derive(Debug)]
pub struct Ticket {
    conn: ConnId,
    limiter: Addr<RateLimiter>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limiter.do_send(Release { conn: self.conn });
    }
}

/// An admitted connection: its id, its quotas, and the ticket holding its slot.
#[derive(Debug)]
pub struct Admission {
    /// The connection's id.
    pub conn: ConnId,
    /// Its quotas.
    pub quota: Arc<ConnectionQuota>,
    /// Holds the key's connection slot until dropped.
    pub ticket: Ticket,
}

/// The rate-limiter actor. One per broker.
pub struct RateLimiter {
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Holds the cluster-wide slots (the Redis engine); told when a connection ends.
    engine: Arc<dyn Engine>,
    /// Open connections per key name; entries are removed at zero, so the map is bounded
    /// by the configured keys.
    per_key: HashMap<String, u32>,
    /// Which key each open connection belongs to, to decrement on release.
    conns: HashMap<ConnId, String>,
    next_conn: ConnId,
}

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits, metrics: Arc<Metrics>, engine: Arc<dyn Engine>) -> RateLimiter {
        RateLimiter {
            limits,
            metrics,
            engine,
            per_key: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
        }
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;
}

impl Handler<Admit> for RateLimiter {
    type Result = Result<Admission, AdmitError>;

    fn handle(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Self::Result {
        let max = msg
            .key
            .max_connections
            .unwrap_or(self.limits.max_connections_per_key);
        let open = self.per_key.entry(msg.key.name.clone()).or_insert(0);
        if *open >= max {
            self.metrics.reject(Rejection::ConnectionLimit);
            return Err(AdmitError::TooManyConnections { max });
        }
        *open += 1;
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, msg.key.name.clone());
        let (cap, period) = match msg.dialect {
            Dialect::Ws => (self.limits.ws_messages_per_minute, Duration::from_secs(60)),
            Dialect::V1 => (self.limits.v1_messages_per_second, Duration::from_secs(1)),
        };
        Ok(Admission {
            conn,
            quota: Arc::new(ConnectionQuota::new(
                cap,
                period,
                self.limits.max_subscriptions_per_connection,
                self.limits.publish_events_per_second,
            )),
            ticket: Ticket {
                conn,
                limiter: ctx.address(),
            },
        })
    }
}

impl Handler<Release> for RateLimiter {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        self.engine.free_slot(msg.conn);
        let Some(key) = self.conns.remove(&msg.conn) else {
            return;
        };
        if let Some(open) = self.per_key.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.per_key.remove(&key);
            }
        }
    }
}

impl Handler<ConnectionsByKey> for RateLimiter {
    type Result = Vec<(String, u32)>;

    fn handle(&mut self, _: ConnectionsByKey, _: &mut Context<Self>) -> Vec<(String, u32)> {
        let mut counts: Vec<_> = self.per_key.iter().map(|(k, n)| (k.clone(), *n)).collect();
        counts.sort();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_exactly_the_burst() {
        let q = ConnectionQuota::new(10, Duration::from_secs(1), 2, 5);
        assert_eq!(q.check_publish(5), Ok(()));
        assert_eq!(q.check_publish(1), Err(5));
        let passed = (0..11).filter(|_| q.check_message()).count();
        assert_eq!(passed, 10);
        assert!(q.try_add_subscription());
        assert!(q.try_add_subscription());
        assert!(!q.try_add_subscription());
        q.remove_subscription();
        assert!(q.try_add_subscription());
    }
}
