//! The session registry: which subscription belongs to which connection, key and outbox,
//! so that a `reconnect` can claim them (PROTOCOL.md section 7). A connection that ends
//! any way but a client close 1000 is parked here for the resume window; expired sessions
//! are swept by the heartbeat.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Recipient;

use crate::filter::Filter;
use crate::hubs::HubRef;
use crate::messages::{ConnId, Evict};
use crate::outbox::{self, Mode, Outbox};

/// One subscription as the registry knows it.
#[derive(Clone)]
pub struct SessionSub {
    /// Its id.
    pub id: std::sync::Arc<str>,
    /// Its channel's hub.
    pub hub: HubRef,
    /// Its filter (for replay).
    pub filter: Filter,
}

struct Session {
    key: String,
    outbox: Outbox,
    subs: Vec<SessionSub>,
    /// The live connection, to evict when its subscriptions are claimed elsewhere.
    live: Option<Recipient<Evict>>,
    parked: Option<Instant>,
}

/// A session whose subscriptions a reconnect claimed.
pub struct Claimed {
    /// The connection that held them.
    pub conn: ConnId,
    /// Its outbox, with what it sent and what was queued since.
    pub outbox: Outbox,
    /// The claimed subscriptions.
    pub subs: Vec<SessionSub>,
    /// Every hub the old session had subscriptions in (to drop the unclaimed ones).
    pub hubs: Vec<HubRef>,
}

/// What a claim found.
pub struct Claim {
    /// Sessions the named subscriptions came from.
    pub sessions: Vec<Claimed>,
    /// Subscription ids that could not be restored.
    pub failed: Vec<String>,
}

/// The registry. Bounded: one session per live connection, plus at most `max_parked`
/// parked ones.
pub struct Sessions {
    inner: Mutex<Inner>,
    window: Duration,
    max_parked: usize,
}

#[derive(Default)]
struct Inner {
    by_sub: HashMap<std::sync::Arc<str>, ConnId>,
    by_conn: HashMap<ConnId, Session>,
    parked: usize,
}

fn hubs_of(subs: &[SessionSub]) -> Vec<HubRef> {
    let mut hubs: Vec<HubRef> = Vec::new();
    for s in subs {
        if !hubs.iter().any(|h| h.name == s.hub.name) {
            hubs.push(s.hub.clone());
        }
    }
    hubs
}

impl Sessions {
    /// A registry keeping parked sessions for `window`, at most `max_parked` at once.
    pub fn new(window: Duration, max_parked: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(Inner::default()),
            window,
            max_parked,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new subscription of live connection `conn`.
    pub fn add_sub(
        &self,
        conn: ConnId,
        key: &str,
        outbox: &Outbox,
        live: Recipient<Evict>,
        sub: SessionSub,
    ) {
        let mut inner = self.lock();
        inner.by_sub.insert(sub.id.clone(), conn);
        let session = inner.by_conn.entry(conn).or_insert_with(|| Session {
            key: key.to_owned(),
            outbox: outbox.clone(),
            subs: Vec::new(),
            live: Some(live),
            parked: None,
        });
        session.subs.push(sub);
    }

    /// Forgets one subscription (unsubscribe).
    pub fn remove_sub(&self, conn: ConnId, id: &str) {
        let mut inner = self.lock();
        if inner.by_sub.get(id) == Some(&conn) {
            inner.by_sub.remove(id);
        }
        if let Some(s) = inner.by_conn.get_mut(&conn) {
            s.subs.retain(|s| &*s.id != id);
        }
    }

    fn remove(inner: &mut Inner, conn: ConnId) -> Option<Session> {
        let session = inner.by_conn.remove(&conn)?;
        for sub in &session.subs {
            if inner.by_sub.get(&sub.id) == Some(&conn) {
                inner.by_sub.remove(&sub.id);
            }
        }
        if session.parked.is_some() {
            inner.parked -= 1;
        }
        Some(session)
    }

    /// The connection ended with a client close 1000: its session goes. Returns the hubs to
    /// tell.
    pub fn forget(&self, conn: ConnId) -> Vec<HubRef> {
        let session = Sessions::remove(&mut self.lock(), conn);
        match session {
            Some(s) => {
                outbox::lock(&s.outbox).close();
                hubs_of(&s.subs)
            }
            None => Vec::new(),
        }
    }

    /// The connection ended any other way: keep its session for the resume window.
    /// Returns the hubs to tell when it cannot be kept (too many parked sessions).
    pub fn park(&self, conn: ConnId, now: Instant) -> Vec<HubRef> {
        let mut inner = self.lock();
        if inner.parked >= self.max_parked {
            drop(inner);
            return self.forget(conn);
        }
        if inner.by_conn.get(&conn).is_some_and(|s| s.subs.is_empty()) {
            drop(inner);
            return self.forget(conn);
        }
        let counted = match inner.by_conn.get_mut(&conn) {
            Some(s) if s.parked.is_none() => {
                s.parked = Some(now);
                s.live = None;
                outbox::lock(&s.outbox).park(now);
                true
            }
            _ => false,
        };
        if counted {
            inner.parked += 1;
        }
        Vec::new()
    }

    /// Claims the named subscriptions for a reconnect with `key`. Subscriptions of
    /// another key, unknown ones and expired ones are `failed`. The sessions they came from
    /// leave the registry; their live connections, if any, are evicted.
    pub fn claim(&self, key: &str, ids: &[String], now: Instant) -> Claim {
        let mut inner = self.lock();
        let mut sessions: Vec<Claimed> = Vec::new();
        let mut failed = Vec::new();
        for id in ids {
            let Some(&conn) = inner.by_sub.get(id.as_str()) else {
                if !sessions.iter().any(|c| c.subs.iter().any(|s| &*s.id == id)) {
                    failed.push(id.clone());
                }
                continue;
            };
            let usable = inner.by_conn.get(&conn).is_some_and(|s| {
                s.key == key
                    && s.parked
                        .is_none_or(|at| now.duration_since(at) <= self.window)
            });
            if !usable {
                failed.push(id.clone());
                continue;
            }
            if !sessions.iter().any(|c| c.conn == conn) {
                let Some(session) = Sessions::remove(&mut inner, conn) else {
                    failed.push(id.clone());
                    continue;
                };
                if let Some(live) = &session.live {
                    live.do_send(Evict);
                }
                let hubs = hubs_of(&session.subs);
                let mut claimed = Claimed {
                    conn,
                    outbox: session.outbox,
                    subs: session.subs,
                    hubs,
                };
                // Keep only the named subscriptions (in any order, each once).
                claimed.subs.retain(|s| ids.iter().any(|i| **i == *s.id));
                sessions.push(claimed);
            }
        }
        Claim { sessions, failed }
    }

    /// Removes sessions parked longer than the window; returns (connection, hubs) to tell.
    pub fn expire(&self, now: Instant) -> Vec<(ConnId, Vec<HubRef>)> {
        let mut inner = self.lock();
        let expired: Vec<ConnId> = inner
            .by_conn
            .iter()
            .filter(|(_, s)| {
                s.parked
                    .is_some_and(|at| now.duration_since(at) > self.window)
            })
            .map(|(c, _)| *c)
            .collect();
        expired
            .into_iter()
            .filter_map(|conn| {
                let s = Sessions::remove(&mut inner, conn)?;
                let mut ob = outbox::lock(&s.outbox);
                ob.close();
                drop(ob);
                Some((conn, hubs_of(&s.subs)))
            })
            .collect()
    }

    /// Parked sessions now.
    pub fn parked(&self) -> usize {
        self.lock().parked
    }

    /// The largest number of bytes queued in one attached outbox (for the metrics); a slow
    /// or parked one holds its resume buffer, bounded by `resume.keep_bytes`.
    pub fn max_queued_bytes(&self) -> usize {
        self.lock()
            .by_conn
            .values()
            .filter_map(|s| {
                let ob = outbox::lock(&s.outbox);
                (ob.mode == Mode::Attached).then(|| ob.queued_bytes())
            })
            .max()
            .unwrap_or(0)
    }
}
