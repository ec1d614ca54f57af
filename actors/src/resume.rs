//! What a resume replays (PROTOCOL.md section 7, item 30): from a [`Snapshot`] of the
//! channels' history, every event the resumed subscriptions match after the client's
//! last id and after each subscription was made, up to where live delivery takes over,
//! with `confirmations` releases at the ids they had live; and whether that is all of it.

use std::sync::Arc;

use crate::confirmations::{self, AtPublish};
use crate::engine::Snapshot;
use crate::filter::Filter;
use crate::history::HeadAt;
use crate::outbox::Item;
use crate::position::Position;

/// Where the client said it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFrom {
    /// `last_message_id` null or absent: from the start of each subscription.
    Start,
    /// After this id.
    After(Position),
    /// Not an id the broker issued (garbage, a future id, a `B.E` whose `B` is not a
    /// block): nothing is replayed and `recovered` is false.
    Unknown,
}

impl ResumeFrom {
    /// Reads `last_message_id` as sent.
    pub fn parse(last: Option<&str>) -> ResumeFrom {
        match last {
            None => ResumeFrom::Start,
            Some(id) => Position::parse(id).map_or(ResumeFrom::Unknown, ResumeFrom::After),
        }
    }

    /// The release id whose `B` the engine must confirm is a block, if any.
    pub fn release(self) -> Option<Position> {
        match self {
            ResumeFrom::After(p) if p.is_release() => Some(p),
            _ => None,
        }
    }
}

/// One resumed subscription, as the replay needs it.
pub struct ReplaySub<'a> {
    /// Index of its channel in the snapshot.
    pub channel: usize,
    /// Its filter.
    pub filter: &'a Filter,
    /// The sequence number last issued when it was made.
    pub created: u64,
    /// Its hub's cut: live delivery has everything after it.
    pub cut: u64,
}

/// The first sequence number of a channel a replay of `sub` needs from history.
pub fn reads_after(sub_created: u64, filter: &Filter, from: ResumeFrom) -> u64 {
    match from {
        ResumeFrom::After(p) if filter.confirmations <= 1 => sub_created.max(p.major),
        _ => sub_created,
    }
}

/// The replay and whether it is complete.
pub fn replay(snapshot: &Snapshot, subs: &[ReplaySub<'_>], from: ResumeFrom) -> (Vec<Item>, bool) {
    let after = match from {
        ResumeFrom::Start => Position::default(),
        ResumeFrom::After(p) => {
            let issued = snapshot
                .issued
                .is_some_and(|(first, last)| p.major >= first && p.major <= last);
            if !issued || (p.is_release() && !snapshot.release_block_known) {
                return (Vec::new(), false);
            }
            p
        }
        ResumeFrom::Unknown => return (Vec::new(), false),
    };
    let heads = &snapshot.heads;
    let mut complete = true;
    let mut items: Vec<Item> = Vec::new();
    for sub in subs {
        let Some(history) = snapshot.channels.get(sub.channel) else {
            complete = false;
            continue;
        };
        let k = sub.filter.confirmations;
        let needed = reads_after(sub.created, sub.filter, from);
        if history.evicted_upto > needed {
            // Lost events matter unless each was delivered at or before `after`.
            let delivered_before = k > 1
                && history.evicted_upto <= after.major
                && match (history.evicted_max_block, heads.head_before(after.major)) {
                    (None, _) => true,
                    (Some(n), HeadAt::Block(h)) => n.saturating_add(k - 1) <= h,
                    _ => false,
                };
            if !delivered_before {
                complete = false;
            }
        }
        let start = history.events.partition_point(|e| e.seq <= needed);
        let stored = history.events[start..]
            .iter()
            .take_while(|e| e.seq <= sub.cut);
        // Parsing is what a replay costs most: only filters and rewrites need the data.
        let parse = !sub.filter.matches_all() || k > 1;
        for s in stored.filter(|e| e.seq > sub.created) {
            let e = if parse {
                match s.event() {
                    Some(e) if sub.filter.matches(&e.data) => e,
                    _ => continue,
                }
            } else {
                s.event_unparsed()
            };
            let e = Arc::new(e);
            // Only a held-back event needs the head it met.
            let gated = k > 1 && e.block.is_some();
            let head = match heads.head_before(e.seq) {
                _ if !gated => None,
                HeadAt::None => None,
                HeadAt::Block(h) => Some(h),
                HeadAt::Unknown => {
                    complete = false;
                    continue;
                }
            };
            let placed = match confirmations::on_publish(e.block, k, head) {
                AtPublish::Now(c) => Some((Position::event(e.seq), c)),
                AtPublish::Held => {
                    let n = e.block.unwrap_or_default();
                    let mut prev = head;
                    let mut found = None;
                    for r in heads.raises(e.seq, sub.cut) {
                        if let Some(c) = confirmations::releases_at(n, k, prev, r.number) {
                            found = Some((Position::release(r.seq, e.seq), Some(c)));
                            break;
                        }
                        prev = Some(r.number);
                    }
                    // None: not released by the cut; live delivery releases it.
                    found
                }
            };
            if let Some((position, c)) = placed.filter(|(p, _)| *p > after) {
                items.push(Item::new(e.clone(), position, c));
            }
        }
    }
    if !complete {
        // The history no longer reaches back: nothing is replayed (never a partial replay).
        return (Vec::new(), false);
    }
    // One frame per position; as published wins over a rewritten one (PROTOCOL.md 10.26).
    items.sort_by_key(|i| (i.position, i.confirmations.is_some()));
    items.dedup_by_key(|i| i.position);
    (items, complete)
}
