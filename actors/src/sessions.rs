//! The live-subscription registry of this node: which connection holds each
//! subscription, so that a `reconnect` naming a subscription still attached to another
//! live connection of the same key can move it (PROTOCOL.md 10.9, 10.33). Subscriptions
//! of ended connections are parked in the engine ([`crate::engine::Engine::park`]), not
//! here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix::Recipient;

use crate::fanout::hubs::HubRef;
use crate::filter::Filter;
use crate::messages::{ConnId, Moved};

/// One live subscription as its connection and this registry know it.
#[derive(Clone)]
pub struct LiveSub {
    /// Its id.
    pub id: Arc<str>,
    /// Its channel's hub.
    pub hub: HubRef,
    /// Its filter.
    pub filter: Filter,
    /// The sequence number last issued when it was made.
    pub created: u64,
}

struct Holder {
    conn: ConnId,
    key: Arc<str>,
    moved: Recipient<Moved>,
    sub: LiveSub,
}

/// A live subscription claimed from another connection.
pub struct Taken {
    /// The subscription.
    pub sub: LiveSub,
    /// The connection that held it (already told it moved).
    pub from: ConnId,
}

/// The registry. Bounded by the admitted connections times their subscription cap.
#[derive(Default)]
pub struct Sessions {
    by_sub: Mutex<HashMap<Arc<str>, Holder>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Holder>> {
        self.by_sub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that live connection `conn` of `key` holds `sub`.
    pub fn add(&self, conn: ConnId, key: &Arc<str>, moved: Recipient<Moved>, sub: LiveSub) {
        let holder = Holder {
            conn,
            key: key.clone(),
            moved,
            sub,
        };
        self.lock().insert(holder.sub.id.clone(), holder);
    }

    /// Forgets subscription `id` if `conn` still holds it.
    pub fn remove(&self, conn: ConnId, id: &str) {
        let mut subs = self.lock();
        if subs.get(id).is_some_and(|h| h.conn == conn) {
            subs.remove(id);
        }
    }

    /// Forgets the subscriptions `conn` still holds (those not moved away) and hands them
    /// to `then` (which parks them) before anyone else can look: a `reconnect` finds each
    /// either still live here or already parked, never neither.
    pub fn end_conn(&self, conn: ConnId, ids: &[Arc<str>], then: impl FnOnce(Vec<LiveSub>)) {
        let mut subs = self.lock();
        let mut taken = Vec::new();
        for id in ids {
            if subs.get(&**id).is_some_and(|h| h.conn == conn) {
                taken.extend(subs.remove(&**id).map(|h| h.sub));
            }
        }
        then(taken);
    }

    /// Moves the named subscriptions that live connections of `key` (other than `to`)
    /// hold, and that `allow` accepts (a token's grant), to connection `to`, telling each
    /// old holder which of its subscriptions left.
    pub fn claim(
        &self,
        key: &str,
        ids: &[String],
        to: ConnId,
        moved: &Recipient<Moved>,
        allow: impl Fn(&LiveSub) -> bool,
    ) -> Vec<Taken> {
        let mut subs = self.lock();
        let mut taken = Vec::new();
        let mut tell: HashMap<ConnId, (Recipient<Moved>, Vec<Arc<str>>)> = HashMap::new();
        for id in ids {
            let Some(h) = subs.get_mut(id.as_str()) else {
                continue;
            };
            if *h.key != *key || h.conn == to || !allow(&h.sub) {
                continue;
            }
            let from = std::mem::replace(&mut h.conn, to);
            let old = std::mem::replace(&mut h.moved, moved.clone());
            tell.entry(from)
                .or_insert_with(|| (old, Vec::new()))
                .1
                .push(h.sub.id.clone());
            taken.push(Taken {
                sub: h.sub.clone(),
                from,
            });
        }
        drop(subs);
        for (_, (recipient, ids)) in tell {
            // One per old connection, bounded by the ids named.
            recipient.do_send(Moved(ids));
        }
        taken
    }
}
