//! The `ChannelHub` actor: one per channel. It owns the channel's subscriptions and
//! filters, tracks the chain head for `confirmations`, and fans each event out: one item
//! (a pointer to the shared event, whose frame is rendered once per dialect) into the
//! outbox of every matching connection, once per connection however many of its
//! subscriptions match.
//!
//! Pushing never waits: a full outbox turns its connection slow (closed 4005) and keeps
//! what it can for resume; the hub goes on with the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::{Actor, Context, Handler};

use crate::event::Event;
use crate::filter::{ChannelKind, Filter, MAX_CONFIRMATIONS};
use crate::messages::{
    ConnId, ConnectionClosed, HeadAdvanced, PublishBatch, Reattach, Subscribe, Unsubscribe,
};
use crate::metrics::Metrics;
use crate::outbox::{self, Item, Outbox, OutboxState, Pushed};

struct Sub {
    id: Arc<str>,
    filter: Filter,
    /// The first hub sequence number this subscription may see: it gets only events
    /// published after it was made.
    from_seq: u64,
}

struct Subscriber {
    outbox: Outbox,
    subs: Vec<Sub>,
}

/// Pushes one item into a locked outbox, counting a drop; false when the outbox is closed
/// for good (the hub forgets the connection).
fn push(outbox: &mut OutboxState, item: Item, metrics: &Metrics) -> bool {
    match outbox.push(item) {
        Pushed::Queued | Pushed::TurnedSlow => true,
        Pushed::Dropped => {
            metrics.drops.fetch_add(1, Ordering::Relaxed);
            true
        }
        Pushed::Closed => false,
    }
}

/// The hub actor for one channel.
pub struct ChannelHub {
    name: Arc<str>,
    kind: ChannelKind,
    metrics: Arc<Metrics>,
    /// This channel's live subscription count, read by `/metrics`.
    gauge: Arc<AtomicI64>,
    mailbox: usize,
    /// Subscribers by connection; each connection's subscriptions are bounded by the
    /// per-connection cap, connections by admission.
    conns: HashMap<ConnId, Subscriber>,
    /// Which connection owns each subscription id.
    owner: HashMap<Arc<str>, ConnId>,
    /// Highest block seen on `blocks`, as told by the publisher.
    head: Option<u64>,
    /// Events processed by this hub, for publish order and `from_seq`.
    seq: u64,
    /// Subscriptions with `confirmations` above 1; when zero nothing is held back.
    gated: usize,
    /// Events held for `confirmations` subscriptions, by block number, in publish order.
    pending: BTreeMap<u64, Vec<(u64, Arc<Event>)>>,
    pending_len: usize,
    max_pending: usize,
}

impl ChannelHub {
    /// A hub for channel `name` of `kind`.
    pub fn new(
        name: Arc<str>,
        kind: ChannelKind,
        metrics: Arc<Metrics>,
        gauge: Arc<AtomicI64>,
        mailbox: usize,
        max_pending: usize,
    ) -> ChannelHub {
        ChannelHub {
            name,
            kind,
            metrics,
            gauge,
            mailbox,
            conns: HashMap::new(),
            owner: HashMap::new(),
            head: None,
            seq: 0,
            gated: 0,
            pending: BTreeMap::new(),
            pending_len: 0,
            max_pending,
        }
    }

    /// Which item, if any, `event` makes for a connection with subscriptions `subs`:
    /// `Some(None)` as published, `Some(Some(k))` rewritten to `k` confirmations.
    fn item_for(
        subs: &[Sub],
        event: &Event,
        block: Option<u64>,
        head: Option<u64>,
    ) -> Option<Option<u64>> {
        // The first matching subscription decides the item; one as published wins over a
        // rewritten one (PROTOCOL.md 10.26: one frame per moment).
        let mut confirmations: Option<Option<u64>> = None;
        for sub in subs {
            if !sub.filter.matches(&event.data) {
                continue;
            }
            let k = sub.filter.confirmations;
            match (block, head) {
                (Some(n), Some(h)) if k > 1 && n.saturating_add(k - 1) <= h => {
                    confirmations.get_or_insert(Some(h - n + 1));
                }
                (Some(_), _) if k > 1 => {}
                _ => return Some(None),
            }
        }
        confirmations
    }

    /// Fans a batch out: each connection's outbox is locked once for the whole batch and
    /// gets its matching events in publish order.
    fn fan_out(&mut self, events: Vec<Arc<Event>>) {
        let has_blocks = self.kind.has_blocks();
        let block_of = |e: &Event| if has_blocks { e.block } else { None };
        let head = self.head;
        let metrics = &self.metrics;
        let mut dead = Vec::new();
        for (conn, s) in &self.conns {
            let mut locked = None;
            for event in &events {
                let Some(confirmations) = Self::item_for(&s.subs, event, block_of(event), head)
                else {
                    continue;
                };
                let outbox = locked.get_or_insert_with(|| outbox::lock(&s.outbox));
                let item = Item {
                    event: event.clone(),
                    confirmations,
                };
                if !push(outbox, item, metrics) {
                    dead.push(*conn);
                    break;
                }
            }
        }
        self.drop_conns(dead);
        for event in events {
            self.seq += 1;
            let Some(n) = block_of(&event) else { continue };
            if self.gated == 0 {
                continue;
            }
            self.pending.entry(n).or_default().push((self.seq, event));
            self.pending_len += 1;
            while self.pending_len > self.max_pending {
                let Some((_, dropped)) = self.pending.pop_first() else {
                    break;
                };
                self.pending_len -= dropped.len();
                self.metrics
                    .pending_dropped
                    .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Delivers what the head moving from `h0` to `h1` releases for `confirmations`
    /// subscriptions: for each, the events of blocks N with h0 < N+k-1 <= h1.
    fn release(&mut self, h0: Option<u64>, h1: u64) {
        if self.gated > 0 {
            let pending = &self.pending;
            let metrics = &self.metrics;
            let mut dead = Vec::new();
            for (conn, s) in &self.conns {
                let mut out: Vec<(u64, u64, &Arc<Event>)> = Vec::new();
                for sub in s.subs.iter().filter(|s| s.filter.confirmations > 1) {
                    let k = i128::from(sub.filter.confirmations);
                    let hi = i128::from(h1) + 1 - k;
                    let lo = h0.map_or(0, |h0| (i128::from(h0) + 2 - k).max(0));
                    if hi < lo {
                        continue;
                    }
                    for (n, events) in pending.range(lo as u64..=hi as u64) {
                        for (hseq, e) in events {
                            if *hseq >= sub.from_seq && sub.filter.matches(&e.data) {
                                out.push((*n, *hseq, e));
                            }
                        }
                    }
                }
                out.sort_unstable_by_key(|(n, hseq, _)| (*n, *hseq));
                out.dedup_by_key(|(_, hseq, _)| *hseq);
                if out.is_empty() {
                    continue;
                }
                let mut outbox = outbox::lock(&s.outbox);
                let alive = out.into_iter().all(|(n, _, e)| {
                    let item = Item {
                        event: e.clone(),
                        confirmations: Some(h1 - n + 1),
                    };
                    push(&mut outbox, item, metrics)
                });
                if !alive {
                    dead.push(*conn);
                }
            }
            self.drop_conns(dead);
        }
        // Every subscription (k <= 64) has released the blocks N with N + 63 <= h1.
        let Some(keep_from) = (h1 + 2).checked_sub(MAX_CONFIRMATIONS) else {
            return;
        };
        let kept = self.pending.split_off(&keep_from);
        let dropped = std::mem::replace(&mut self.pending, kept);
        self.pending_len -= dropped.values().map(Vec::len).sum::<usize>();
    }

    fn drop_conns(&mut self, conns: Vec<ConnId>) {
        for conn in conns {
            if let Some(subscriber) = self.conns.remove(&conn) {
                for sub in &subscriber.subs {
                    self.remove_sub(sub);
                }
            }
        }
    }

    fn remove_sub(&mut self, sub: &Sub) {
        self.owner.remove(&sub.id);
        if sub.filter.confirmations > 1 {
            self.gated -= 1;
        }
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Actor for ChannelHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        log::debug!("hub for channel {} started", self.name);
    }
}

impl Handler<Subscribe> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if msg.filter.confirmations > 1 {
            self.gated += 1;
        }
        self.gauge.fetch_add(1, Ordering::Relaxed);
        self.owner.insert(msg.subscription_id.clone(), msg.conn);
        let subscriber = self.conns.entry(msg.conn).or_insert_with(|| Subscriber {
            outbox: msg.outbox,
            subs: Vec::new(),
        });
        subscriber.subs.push(Sub {
            id: msg.subscription_id,
            filter: msg.filter,
            from_seq: self.seq + 1,
        });
    }
}

impl Handler<Unsubscribe> for ChannelHub {
    type Result = bool;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> bool {
        if self.owner.get(&msg.subscription_id) != Some(&msg.conn) {
            return false;
        }
        let Some(subscriber) = self.conns.get_mut(&msg.conn) else {
            return false;
        };
        let Some(pos) = subscriber
            .subs
            .iter()
            .position(|s| s.id == msg.subscription_id)
        else {
            return false;
        };
        let sub = subscriber.subs.swap_remove(pos);
        if subscriber.subs.is_empty() {
            self.conns.remove(&msg.conn);
        }
        self.remove_sub(&sub);
        true
    }
}

impl Handler<Reattach> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: Reattach, _: &mut Context<Self>) {
        let Some(old) = self.conns.get_mut(&msg.from) else {
            return;
        };
        let mut moved = Vec::new();
        old.subs.retain_mut(|sub| {
            if msg.subscription_ids.contains(&sub.id) {
                moved.push(Sub {
                    id: sub.id.clone(),
                    filter: sub.filter.clone(),
                    from_seq: sub.from_seq,
                });
                false
            } else {
                true
            }
        });
        if old.subs.is_empty() {
            self.conns.remove(&msg.from);
        }
        if moved.is_empty() {
            return;
        }
        for sub in &moved {
            self.owner.insert(sub.id.clone(), msg.to);
        }
        self.conns
            .entry(msg.to)
            .or_insert_with(|| Subscriber {
                outbox: msg.outbox,
                subs: Vec::new(),
            })
            .subs
            .extend(moved);
    }
}

impl Handler<ConnectionClosed> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        self.drop_conns(vec![msg.conn]);
    }
}

impl Handler<PublishBatch> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: PublishBatch, _: &mut Context<Self>) {
        self.fan_out(msg.0);
    }
}

impl Handler<HeadAdvanced> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: HeadAdvanced, _: &mut Context<Self>) {
        if self.head.is_some_and(|h| h >= msg.0) {
            return;
        }
        let h0 = self.head.replace(msg.0);
        self.release(h0, msg.0);
    }
}
