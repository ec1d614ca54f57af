//! Subscriptions in Redis (PROTOCOL.md sections 7 and 11), one hash each (`k`: the key
//! name, `r`: the record): written when made and renewed while live (so they outlive a
//! node that dies), kept for the resume window once their connection ended, so that a
//! client can resume on any node, also after its node died.
//!
//! Parking takes effect at once on this node (a reconnect here that comes before the
//! write finds them in `parking`); the write to Redis goes on in the background. A claim
//! on another node reads each hash in one script (`claim.lua`), checking the key, and
//! extends it to a live subscription's lifetime.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{lock, Shared};
use crate::engine::ParkedSub;
use crate::filter::Filter;

static CLAIM: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("claim.lua")));

#[derive(Serialize, Deserialize)]
struct Record {
    /// Channel.
    c: String,
    /// Filter.
    f: Filter,
    /// The sequence number last issued when it was made.
    n: u64,
}

/// Keeps `sub`, live on this node, resumable for the window plus a lease after this
/// node's last renewal (so also after this node died). Resolves once written.
pub(super) async fn live(sh: Arc<Shared>, sub: ParkedSub) {
    lock(&sh.live).insert(sub.id.clone(), ());
    let ttl = live_ttl_ms(&sh);
    write(sh, vec![sub], ttl, false).await;
}

/// Forgets `id` for good.
pub(super) fn gone(sh: &Arc<Shared>, id: &Arc<str>) {
    lock(&sh.live).remove(id);
    let (sh, name) = (sh.clone(), sh.keys.parked(id));
    tokio::spawn(async move {
        if let Ok(mut con) = sh.con() {
            let mut del = redis::cmd("DEL");
            del.arg(name);
            let _ = sh.ask(del.query_async::<()>(&mut con)).await;
        }
    });
}

/// How long a live subscription's record lasts unless renewed.
pub(super) fn live_ttl_ms(sh: &Shared) -> u64 {
    u64::try_from(sh.limits.window.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(sh.settings.lease_ms)
}

/// Renews the records of the subscriptions live on this node.
pub(super) async fn renew_live(sh: &Shared, con: &mut super::link::Con) -> bool {
    let ids: Vec<Arc<str>> = lock(&sh.live).keys().cloned().collect();
    let ttl = live_ttl_ms(sh);
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("PEXPIRE")
                .arg(sh.keys.parked(id))
                .arg(ttl)
                .ignore();
        }
        let sent = pipe.query_async::<()>(con);
        if sh.ask(sent).await.is_err() {
            return false;
        }
    }
    true
}

/// Parks `subs` (at most `resume.max_parked` per window on this node; past it they are
/// counted and not kept). Returns how many were kept.
pub(super) fn park(sh: &Arc<Shared>, subs: Vec<ParkedSub>, now: Instant) -> usize {
    let mut kept = Vec::with_capacity(subs.len());
    {
        let mut parks = lock(&sh.parks);
        let mut parking = lock(&sh.parking);
        for sub in subs {
            if parks.len() >= sh.max_parked {
                sh.metrics.parked_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            parks.push_back(now);
            lock(&sh.live).remove(&sub.id);
            parking.insert(sub.id.clone(), (sub.clone(), false));
            kept.push(sub);
        }
    }
    let n = kept.len();
    if n > 0 {
        let ttl = u64::try_from(sh.limits.window.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(write(sh.clone(), kept, ttl, true));
    }
    n
}

/// Writes the subscriptions' records, living `ttl` ms; `parking`: they are in `parking`
/// until written.
async fn write(sh: Arc<Shared>, subs: Vec<ParkedSub>, ttl: u64, parking: bool) {
    let mut pipe = redis::pipe();
    for sub in &subs {
        let record = Record {
            c: sub.channel.to_string(),
            f: sub.filter.clone(),
            n: sub.created,
        };
        let Ok(text) = serde_json::to_string(&record) else {
            continue;
        };
        let name = sh.keys.parked(&sub.id);
        pipe.cmd("HSET")
            .arg(&name)
            .arg("k")
            .arg(&*sub.key)
            .arg("r")
            .arg(text)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&name)
            .arg(ttl)
            .ignore();
    }
    let written = match sh.con().ok() {
        Some(mut con) => {
            let sent = pipe.query_async::<()>(&mut con);
            sh.ask(sent).await.is_ok()
        }
        None => false,
    };
    if !parking {
        return;
    }
    if !written {
        log::warn!(
            "{} parked subscriptions were not written to Redis; they resume on this node only",
            subs.len()
        );
    }
    // Done: a claim here now reads Redis like any other node.
    let mut parking = lock(&sh.parking);
    for s in &subs {
        parking.remove(&s.id);
    }
}

/// Takes the named subscriptions of `key`: first those still being written from this
/// node (each once), then from Redis, whose records stay, extended to a live lifetime.
pub(super) async fn claim(sh: &Shared, key: &str, ids: &[String]) -> Vec<ParkedSub> {
    let mut claimed = Vec::new();
    let mut rest = Vec::new();
    {
        let mut parking = lock(&sh.parking);
        for id in ids {
            match parking.get_mut(id.as_str()) {
                Some((sub, taken)) if !*taken && *sub.key == *key => {
                    *taken = true;
                    claimed.push(sub.clone());
                }
                Some(_) => {}
                None => rest.push(id.clone()),
            }
        }
    }
    if rest.is_empty() {
        return claimed;
    }
    let Ok(mut con) = sh.con() else {
        return claimed;
    };
    let mut call = CLAIM.prepare_invoke();
    for id in &rest {
        call.key(sh.keys.parked(id));
    }
    call.arg(key).arg(live_ttl_ms(sh));
    let Ok(records) = sh.ask(call.invoke_async::<Vec<String>>(&mut con)).await else {
        log::warn!("parked subscriptions could not be read from Redis");
        return claimed;
    };
    for (id, text) in rest.iter().zip(records) {
        let Ok(r) = serde_json::from_str::<Record>(&text) else {
            continue;
        };
        claimed.push(ParkedSub {
            id: Arc::from(id.as_str()),
            key: Arc::from(key),
            channel: Arc::from(r.c),
            filter: r.f,
            created: r.n,
        });
    }
    claimed
}
