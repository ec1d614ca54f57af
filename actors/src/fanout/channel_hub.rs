//! The `ChannelHub` actor: one per channel. It owns the channel's subscriptions and
//! filters (subscribe, unsubscribe and a connection's end are messages to it), kept in a
//! [`HubCore`] that the fan-out also reaches through a [`SharedHub`]. Each batch is fanned
//! out step by step in sequence order: an event goes, once per connection however many of
//! its subscriptions match, into the outbox of every matching connection (a pointer to the
//! shared event, whose frame is rendered once per dialect); a rise of the chain head
//! releases what `confirmations` subscriptions were waiting for ([`crate::confirmations`]).
//!
//! The fan-out runs on the thread that appended the batch ([`super::delivery`]), under the
//! core's lock, not in the actor's mailbox: an event crosses no thread between its
//! publisher and the outboxes, and the only wake-up it costs is each subscriber's.
//!
//! The hub finds the connections an event may match in its [`Index`]
//! ([`super::index`]): a connection with an unfiltered subscription is a candidate
//! for every event, as before; the others only for the events whose values their
//! filters name, so an event costs what its subscribers cost, not the channel's.
//!
//! Pushing never waits: a full outbox turns its connection slow (closed 4005, resumed
//! from history); the hub goes on with the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::{Actor, Context, Handler, MessageResult};

use crate::channels::ChannelKind;
use crate::confirmations::{self, AtPublish, Gate};
use crate::event::Event;
use crate::fanout::batch::Step;
use crate::fanout::index::Index;
use crate::fanout::outbox::{self, Item, Outbox, OutboxState, Pushed};
use crate::fanout::progress::Progress;
use crate::filter::Filter;
use crate::messages::{Attach, Attached, ConnId, ConnectionClosed, Unsubscribe};
use crate::metrics::Metrics;
use crate::position::Position;

struct Sub {
    id: Arc<str>,
    filter: Filter,
    /// The last sequence number issued when it was made: it gets only later events.
    created: u64,
}

struct Subscriber {
    outbox: Outbox,
    subs: Vec<Sub>,
}

/// What the hub was told when it started.
pub struct HubSetup {
    /// The channel's name.
    pub name: Arc<str>,
    /// Its kind.
    pub kind: ChannelKind,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// This channel's live subscription count, read by `/metrics`.
    pub gauge: Arc<AtomicI64>,
    /// The node's fan-out progress (new subscriptions start after its last batch).
    pub progress: Arc<Progress>,
    /// Most events held for `confirmations` (`limits.max_pending_confirmations`).
    pub max_held: usize,
}

/// One channel's subscriptions, filed for the fan-out; owned by its [`ChannelHub`] and
/// shared with the fan-out through a [`SharedHub`].
pub struct HubCore {
    setup: HubSetup,
    /// Subscribers by connection; each connection's subscriptions are bounded by the
    /// per-connection cap, connections by admission.
    conns: HashMap<ConnId, Subscriber>,
    /// Which connection owns each subscription id.
    owner: HashMap<Arc<str>, ConnId>,
    /// Every subscription, filed by its filter's values: who an event may match.
    index: Index<ConnId>,
    /// The head as processed here and the events held for `confirmations`.
    gate: Gate,
    /// Connections with subscriptions asking `confirmations` above 1, with how many each
    /// has; when empty no release is computed.
    gated: HashMap<ConnId, u32>,
    /// The last sequence number processed: where a resume's replay hands over to live.
    processed: u64,
}

/// Which item, if any, an event makes for a connection with subscriptions `subs`: the
/// first matching subscription decides, and one as published wins over a rewritten one
/// (PROTOCOL.md 10.26: one frame per moment).
fn item_for(subs: &[Sub], event: &Arc<Event>, head: Option<u64>) -> Option<Item> {
    let mut decided: Option<Option<u64>> = None;
    for sub in subs {
        if event.seq <= sub.created || !sub.filter.matches(&event.data) {
            continue;
        }
        match confirmations::on_publish(event.block, sub.filter.confirmations, head) {
            AtPublish::Now(None) => {
                decided = Some(None);
                break;
            }
            AtPublish::Now(Some(c)) => {
                decided.get_or_insert(Some(c));
            }
            AtPublish::Held => {}
        }
    }
    decided.map(|confirmations| Item::new(event.clone(), Position::event(event.seq), confirmations))
}

/// A hub's core as the actor and the fan-out share it.
#[derive(Clone)]
pub struct SharedHub(Arc<Mutex<HubCore>>);

impl SharedHub {
    /// A new, empty core.
    pub fn new(setup: HubSetup) -> SharedHub {
        SharedHub(Arc::new(Mutex::new(HubCore::new(setup))))
    }

    /// Locks the core; a poisoned lock is still usable (the core is consistent between
    /// statements, and a fan-out that stopped part-way only left some outboxes short).
    /// Only the actor and [`SharedHub::fan_out`] reach the core.
    fn lock(&self) -> MutexGuard<'_, HubCore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fans `steps` (this channel's share of one batch, in sequence order) out now, on
    /// the calling thread. Called by [`super::delivery::Delivery`] in sequence order.
    pub fn fan_out(&self, steps: &[Step]) {
        self.lock().fan_out(steps);
    }
}

impl HubCore {
    fn new(setup: HubSetup) -> HubCore {
        HubCore {
            setup,
            conns: HashMap::new(),
            owner: HashMap::new(),
            index: Index::default(),
            gate: Gate::default(),
            gated: HashMap::new(),
            processed: 0,
        }
    }

    /// Fans a batch out. Heads in force at each step are worked out first (and held
    /// events recorded); then each connection's outbox is locked once for the batch and
    /// gets its items in sequence order.
    fn fan_out(&mut self, steps: &[Step]) {
        let has_blocks = self.setup.kind.has_blocks();
        // The head before each step, and for a rise the head it rose from.
        let mut heads = Vec::with_capacity(steps.len());
        let mut releases_any = false;
        for step in steps {
            heads.push(self.gate.head);
            match step {
                Step::Event(e) if has_blocks => {
                    let dropped = self.gate.hold(e.clone(), self.setup.max_held);
                    if dropped > 0 {
                        self.setup
                            .metrics
                            .pending_dropped
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                }
                Step::Event(_) => {}
                Step::Head { number, .. } => {
                    if self.gate.head.is_none_or(|h| *number > h) {
                        self.gate.head = Some(*number);
                        releases_any = true;
                    }
                }
                Step::Mark(_) => {}
            }
            self.processed = self.processed.max(step.seq());
        }
        let releases = releases_any && !self.gated.is_empty();
        let gate = &self.gate;
        let metrics = &self.setup.metrics;
        let mut dead = Vec::new();
        // Connections with an unfiltered subscription: every event is a candidate.
        for conn in self.index.unfiltered() {
            let Some(s) = self.conns.get(conn) else {
                continue;
            };
            let mut locked = None;
            let mut alive = true;
            for (step, head) in steps.iter().zip(&heads) {
                match step {
                    Step::Event(e) => {
                        if let Some(item) = item_for(&s.subs, e, *head) {
                            alive = push(&mut locked, &s.outbox, item, metrics);
                        }
                    }
                    Step::Head { number, by } if releases => {
                        for item in released(&s.subs, gate, *head, *number, *by) {
                            alive = push(&mut locked, &s.outbox, item, metrics);
                        }
                    }
                    Step::Head { .. } | Step::Mark(_) => {}
                }
                if !alive {
                    dead.push(*conn);
                    break;
                }
            }
        }
        // The others: the index names each event's candidates; their items are gathered
        // in step order, then each connection's outbox is locked once.
        let mut pending: Vec<(ConnId, Item)> = Vec::new();
        let mut found = Vec::new();
        for (step, head) in steps.iter().zip(&heads) {
            match step {
                Step::Event(e) => {
                    self.index.filtered(&e.data, &mut found);
                    for conn in &found {
                        if self.index.is_unfiltered(conn) {
                            continue;
                        }
                        let Some(s) = self.conns.get(conn) else {
                            continue;
                        };
                        if let Some(item) = item_for(&s.subs, e, *head) {
                            pending.push((*conn, item));
                        }
                    }
                }
                Step::Head { number, by } if releases => {
                    for conn in self.gated.keys() {
                        if self.index.is_unfiltered(conn) {
                            continue;
                        }
                        let Some(s) = self.conns.get(conn) else {
                            continue;
                        };
                        for item in released(&s.subs, gate, *head, *number, *by) {
                            pending.push((*conn, item));
                        }
                    }
                }
                Step::Head { .. } | Step::Mark(_) => {}
            }
        }
        // Stable: a connection's items stay in step (sequence) order.
        pending.sort_by_key(|(conn, _)| *conn);
        let mut pending = pending.into_iter().peekable();
        while let Some((conn, item)) = pending.next() {
            let Some(s) = self.conns.get(&conn) else {
                continue;
            };
            let mut locked = None;
            let mut alive = push(&mut locked, &s.outbox, item, metrics);
            while let Some((_, item)) = pending.next_if(|(c, _)| *c == conn) {
                if alive {
                    alive = push(&mut locked, &s.outbox, item, metrics);
                }
            }
            if !alive {
                dead.push(conn);
            }
        }
        if let Some(h) = self.gate.head {
            self.gate.trim(h);
        }
        self.drop_conns(dead);
    }

    fn drop_conns(&mut self, conns: Vec<ConnId>) {
        for conn in conns {
            if let Some(subscriber) = self.conns.remove(&conn) {
                for sub in &subscriber.subs {
                    self.forget(conn, sub);
                }
            }
        }
    }

    fn forget(&mut self, conn: ConnId, sub: &Sub) {
        self.owner.remove(&sub.id);
        self.index.remove(&sub.filter, conn);
        if sub.filter.confirmations > 1 {
            if let Some(n) = self.gated.get_mut(&conn) {
                *n -= 1;
                if *n == 0 {
                    self.gated.remove(&conn);
                }
            }
        }
        self.setup.gauge.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes subscription `id` from whichever connection has it.
    fn detach(&mut self, id: &str) -> Option<Sub> {
        let conn = self.owner.get(id).copied()?;
        let subscriber = self.conns.get_mut(&conn)?;
        let pos = subscriber.subs.iter().position(|s| &*s.id == id)?;
        let sub = subscriber.subs.swap_remove(pos);
        if subscriber.subs.is_empty() {
            self.conns.remove(&conn);
        }
        self.forget(conn, &sub);
        Some(sub)
    }
}

/// Pushes one item, locking the outbox on first use (once per batch); false when the
/// outbox is closed for good (the hub forgets the connection).
fn push<'a>(
    locked: &mut Option<MutexGuard<'a, OutboxState>>,
    outbox: &'a Outbox,
    item: Item,
    metrics: &Metrics,
) -> bool {
    let state = locked.get_or_insert_with(|| outbox::lock(outbox));
    match state.push(item) {
        Pushed::Queued => true,
        Pushed::Dropped => {
            metrics.drops.fetch_add(1, Ordering::Relaxed);
            true
        }
        Pushed::Closed => false,
    }
}

/// The releases by the head rising from `from` to `to` with block event `by`, for one
/// connection's gated subscriptions: each held event once, in sequence order, at `by.E`.
fn released(subs: &[Sub], gate: &Gate, from: Option<u64>, to: u64, by: u64) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for sub in subs.iter().filter(|s| s.filter.confirmations > 1) {
        let k = sub.filter.confirmations;
        for e in gate.candidates(from, to) {
            if e.seq <= sub.created || e.seq >= by || !sub.filter.matches(&e.data) {
                continue;
            }
            let Some(n) = e.block else { continue };
            if let Some(c) = confirmations::releases_at(n, k, from, to) {
                out.push(Item::new(e.clone(), Position::release(by, e.seq), Some(c)));
            }
        }
    }
    out.sort_unstable_by_key(|i| i.position);
    out.dedup_by_key(|i| i.position);
    out
}

/// The hub actor for one channel: the owner of its subscriptions.
pub struct ChannelHub {
    core: SharedHub,
}

impl ChannelHub {
    /// The actor owning `core`.
    pub fn new(core: SharedHub) -> ChannelHub {
        ChannelHub { core }
    }
}

impl Actor for ChannelHub {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        log::debug!("hub for channel {} started", self.core.lock().setup.name);
    }
}

impl HubCore {
    fn attach(&mut self, msg: Attach) -> Attached {
        let now = self.setup.progress.begun();
        let mut created = Vec::with_capacity(msg.subs.len());
        for s in msg.subs {
            // A move takes it from whichever connection had it (PROTOCOL.md 10.33).
            self.detach(&s.id);
            let c = s.created.unwrap_or(now);
            created.push(c);
            if s.filter.confirmations > 1 {
                *self.gated.entry(msg.conn).or_insert(0) += 1;
            }
            self.index.insert(&s.filter, msg.conn);
            self.setup.gauge.fetch_add(1, Ordering::Relaxed);
            self.owner.insert(s.id.clone(), msg.conn);
            self.conns
                .entry(msg.conn)
                .or_insert_with(|| Subscriber {
                    outbox: msg.outbox.clone(),
                    // Most connections hold one subscription per channel.
                    subs: Vec::with_capacity(1),
                })
                .subs
                .push(Sub {
                    id: s.id,
                    filter: s.filter,
                    created: c,
                });
        }
        Attached {
            created,
            cut: self.processed,
        }
    }

    fn unsubscribe(&mut self, msg: &Unsubscribe) -> bool {
        if self.owner.get(&msg.subscription_id) != Some(&msg.conn) {
            return false;
        }
        self.detach(&msg.subscription_id).is_some()
    }
}

impl Handler<Attach> for ChannelHub {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) -> MessageResult<Attach> {
        MessageResult(self.core.lock().attach(msg))
    }
}

impl Handler<Unsubscribe> for ChannelHub {
    type Result = bool;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> bool {
        self.core.lock().unsubscribe(&msg)
    }
}

impl Handler<ConnectionClosed> for ChannelHub {
    type Result = ();

    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        self.core.lock().drop_conns(vec![msg.conn]);
    }
}
