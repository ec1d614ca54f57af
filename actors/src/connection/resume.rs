//! `reconnect` (PROTOCOL.md section 7, items 9, 21, 30, 33): claim the named
//! subscriptions (from another live connection of the key, from the engine's parked
//! ones, or this connection's own), attach them here, then replay from the channels'
//! history what they missed up to each hub's cut, merged in sequence order with what
//! arrives live after it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::{ActorFutureExt, AsyncContext, ContextFutureSpawner, WrapFuture};
use actix_web_actors::ws;
use serde_json::Value;

use super::Connection;
use crate::engine::{ParkedSub, Range};
use crate::fanout::hubs::HubRef;
use crate::fanout::outbox::{self, Item};
use crate::messages::{Attach, AttachSub};
use crate::protocol::render::Reply;
use crate::resume::{self, ReplaySub, ResumeFrom};
use crate::sessions::LiveSub;

/// What the asynchronous part of a reconnect found.
struct Resumed {
    restored: Vec<LiveSub>,
    failed: Vec<String>,
    replay: Vec<Item>,
    complete: bool,
}

fn parked(s: &LiveSub, key: &Arc<str>) -> ParkedSub {
    ParkedSub {
        id: s.id.clone(),
        key: key.clone(),
        channel: s.hub.name.clone(),
        filter: s.filter.clone(),
        created: s.created,
    }
}

impl Connection {
    /// Resumes the named subscriptions after `last` (PROTOCOL.md section 7).
    pub(super) fn reconnect(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        last: Option<String>,
        names: Vec<String>,
    ) {
        let core = self.core.clone();
        core.metrics.resumes.fetch_add(1, Ordering::Relaxed);
        let from = ResumeFrom::parse(last.as_deref());
        let now = Instant::now();
        let (conn, key) = (self.conn(), self.key_name.clone());
        let own: Vec<LiveSub> = names
            .iter()
            .filter_map(|n| self.subs.get(n.as_str()).cloned())
            .collect();
        let moved = ctx.address().recipient();
        // A token's grant: only subscriptions inside it are restored (PROTOCOL.md
        // section 12); the rest stay where they are and are listed in `failed`.
        let grant = self.key.token.as_ref().and_then(|t| t.grant.clone());
        let allowed = move |channel: &str, filter: &crate::filter::Filter| {
            grant
                .as_ref()
                .is_none_or(|g| g.allows(channel, filter).is_ok())
        };
        let taken = core.sessions.claim(&key, &names, conn, &moved, |s| {
            allowed(&s.hub.name, &s.filter)
        });
        let rest: Vec<String> = names
            .iter()
            .filter(|n| {
                !own.iter().any(|s| *s.id == ***n) && !taken.iter().any(|t| *t.sub.id == ***n)
            })
            .cloned()
            .collect();
        let mut channels: Vec<Arc<str>> = self.subs.values().map(|s| s.hub.name.clone()).collect();
        let (quota, outbox) = (self.admission.quota.clone(), self.outbox.clone());
        let engine = core.engine.clone();
        async move {
            let claimed = engine.claim(&key, &rest, now).await;
            let mut failed: Vec<String> = rest
                .iter()
                .filter(|n| !claimed.iter().any(|p| *p.id == ***n))
                .cloned()
                .collect();
            // Claimed subscriptions with no room here stay parked for another try.
            let mut give_back = Vec::new();
            let mut subs = own;
            for sub in taken.into_iter().map(|t| t.sub) {
                if quota.try_add_subscription() {
                    subs.push(sub);
                } else {
                    failed.push(sub.id.to_string());
                    give_back.push(parked(&sub, &key));
                }
            }
            for p in claimed {
                match core.hubs.get(&p.channel) {
                    Ok(hub) if allowed(&p.channel, &p.filter) && quota.try_add_subscription() => {
                        subs.push(LiveSub {
                            id: p.id,
                            hub,
                            filter: p.filter,
                            created: p.created,
                        })
                    }
                    _ => {
                        failed.push(p.id.to_string());
                        give_back.push(p);
                    }
                }
            }
            if !give_back.is_empty() {
                engine.park(give_back, now).await;
            }
            channels.extend(subs.iter().map(|s| s.hub.name.clone()));
            channels.sort_unstable();
            channels.dedup();
            if channels.len() > 1 {
                outbox::lock(&outbox).set_ordered();
            }
            // One attach per hub; each answers with its cut.
            let mut groups: Vec<(HubRef, Vec<LiveSub>, u64)> = Vec::new();
            for sub in subs {
                match groups.iter_mut().find(|(h, _, _)| h.name == sub.hub.name) {
                    Some(g) => g.1.push(sub),
                    None => groups.push((sub.hub.clone(), vec![sub], 0)),
                }
            }
            let mut restored = Vec::new();
            let mut attached = Vec::new();
            for (hub, group, _) in groups {
                let msg = Attach {
                    conn,
                    outbox: outbox.clone(),
                    subs: group
                        .iter()
                        .map(|s| AttachSub {
                            id: s.id.clone(),
                            filter: s.filter.clone(),
                            created: Some(s.created),
                        })
                        .collect(),
                };
                // The engine feeds this node the channel from here on, then the hub attaches.
                let sent = match engine.want(&hub.name).await {
                    Ok(()) => hub.addr.send(msg).await.ok(),
                    Err(_) => None,
                };
                match sent {
                    Some(a) => attached.push((hub, group, a.cut)),
                    None => failed.extend(group.iter().map(|s| s.id.to_string())),
                }
            }
            let ranges = attached
                .iter()
                .map(|(hub, group, cut)| Range {
                    channel: hub.name.clone(),
                    after: group
                        .iter()
                        .map(|s| resume::reads_after(s.created, &s.filter, from))
                        .min()
                        .unwrap_or(*cut),
                    upto: *cut,
                })
                .collect();
            let replay_subs: Vec<ReplaySub<'_>> = attached
                .iter()
                .enumerate()
                .flat_map(|(i, (_, group, cut))| {
                    group.iter().map(move |s| ReplaySub {
                        channel: i,
                        filter: &s.filter,
                        created: s.created,
                        cut: *cut,
                    })
                })
                .collect();
            let (replay, complete) = match engine.read(ranges, from.release()).await {
                Ok(snapshot) => resume::replay(&snapshot, &replay_subs, from),
                Err(_) => (Vec::new(), false),
            };
            drop(replay_subs);
            for (_, group, _) in attached {
                restored.extend(group);
            }
            Resumed {
                restored,
                failed,
                replay,
                complete,
            }
        }
        .into_actor(self)
        .map(move |r, this, ctx| {
            let recovered = r.complete && r.failed.is_empty();
            let mut ids = Vec::with_capacity(r.restored.len());
            for sub in r.restored {
                ids.push(sub.id.to_string());
                let moved = ctx.address().recipient();
                this.core
                    .sessions
                    .add(this.conn(), &this.key_name, moved, sub.clone());
                // Already kept in the engine (claimed, moved or own): refreshed as live.
                drop(this.core.engine.live(parked(&sub, &this.key_name)));
                this.subs.insert(sub.id.clone(), sub);
            }
            let metrics = &this.core.metrics;
            if recovered {
                metrics.resumes_recovered.fetch_add(1, Ordering::Relaxed);
            }
            let replayed = r.replay.len();
            metrics
                .replayed
                .fetch_add(replayed as u64, Ordering::Relaxed);
            let reply = Reply::Reconnected {
                recovered,
                subscriptions: ids,
                failed: r.failed,
                replayed,
            };
            this.respond(ctx, id.as_ref(), Ok(reply));
            outbox::lock(&this.outbox).replay(r.replay);
            this.flush(ctx);
        })
        .wait(ctx);
    }
}
