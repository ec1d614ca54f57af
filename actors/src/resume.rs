//! What a resume replays (PROTOCOL.md section 7, item 30): from a [`Snapshot`] of the
//! channels' history, every event the resumed subscriptions match after the client's
//! last id and after each subscription was made, up to where live delivery takes over,
//! with `confirmations` releases at the ids they had live; and whether that is all of it.

use std::sync::Arc;

use crate::confirmations::{self, AtPublish};
use crate::engine::Snapshot;
use crate::fanout::outbox::Item;
use crate::filter::Filter;
use crate::history::HeadAt;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::{json, Map, Value};

    use super::*;
    use crate::channels::ChannelKind;
    use crate::engine::ChannelRead;
    use crate::event::Draft;
    use crate::history::{ChannelHistory, HeadRaise, HeadTimeline, HistoryLimits, Stored};

    const LIMITS: HistoryLimits = HistoryLimits {
        window: Duration::from_secs(3600),
        max_events: 1000,
        max_bytes: 1 << 20,
        max_total_bytes: 1 << 20,
    };

    /// A channel's history and the head timeline from `(seq, channel, data)` in order.
    struct World {
        blocks: ChannelHistory,
        txs: ChannelHistory,
        heads: HeadTimeline,
        head: Option<u64>,
    }

    impl World {
        fn new() -> World {
            World {
                blocks: ChannelHistory::default(),
                txs: ChannelHistory::default(),
                heads: HeadTimeline::default(),
                head: None,
            }
        }

        fn block(&mut self, seq: u64, n: u64) {
            let raise = self.head.is_none_or(|h| n > h).then_some(n);
            if let Some(n) = raise {
                self.head = Some(n);
                let at = Instant::now();
                let r = HeadRaise { seq, number: n, at };
                self.heads.push(r, &LIMITS, at);
            }
            let e = self.event(seq, "blocks", json!({"number": n}), Some(n), raise);
            self.blocks.push(e, &LIMITS, Instant::now());
        }

        fn tx(&mut self, seq: u64, n: u64) {
            let data = json!({"tx_hash": format!("0x{seq:x}"), "block_number": n});
            let e = self.event(seq, "transactions", data, Some(n), None);
            self.txs.push(e, &LIMITS, Instant::now());
        }

        fn event(
            &self,
            seq: u64,
            channel: &str,
            data: Value,
            block: Option<u64>,
            raises: Option<u64>,
        ) -> Arc<Stored> {
            let draft = Draft {
                channel: Arc::from(channel),
                kind: "update".into(),
                data: data.clone(),
                block,
                is_block: channel == "blocks",
            };
            let text = serde_json::value::to_raw_value(&data).unwrap_or_else(|_| unreachable!());
            Arc::new(Stored::new(seq, &draft, raises, Instant::now(), text))
        }

        fn snapshot(&self, issued: (u64, u64), release_block_known: bool) -> Snapshot {
            let read = |h: &ChannelHistory| ChannelRead {
                events: h.range(0, u64::MAX),
                evicted_upto: h.evicted_upto,
                evicted_max_block: h.evicted_max_block,
            };
            Snapshot {
                channels: vec![read(&self.blocks), read(&self.txs)],
                heads: self.heads.clone(),
                issued: Some(issued),
                release_block_known,
            }
        }
    }

    fn filter(kind: ChannelKind, k: u64) -> Filter {
        let mut data = Map::new();
        data.insert("confirmations".into(), k.into());
        Filter::parse(kind, kind.name(), &data, 256).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A resumed subscription on channel `channel` of the snapshot.
    fn on(channel: usize, filter: &Filter, created: u64, cut: u64) -> ReplaySub<'_> {
        ReplaySub {
            channel,
            filter,
            created,
            cut,
        }
    }

    fn ids(items: &[Item]) -> Vec<String> {
        items.iter().map(|i| i.position.to_string()).collect()
    }

    /// Blocks 1..=4 at seqs 10, 20, 30, 40; transactions of block 2 at 21 and of block 3
    /// at 31.
    fn world() -> World {
        let mut w = World::new();
        w.block(10, 1);
        w.block(20, 2);
        w.tx(21, 2);
        w.block(30, 3);
        w.tx(31, 3);
        w.block(40, 4);
        w
    }

    #[test]
    fn a_k2_replay_gives_releases_at_the_ids_they_had_live_in_sequence_order() {
        let w = world();
        let snap = w.snapshot((10, 40), false);
        let (b, t) = (
            filter(ChannelKind::Blocks, 2),
            filter(ChannelKind::Transactions, 2),
        );
        let subs = [on(0, &b, 0, 40), on(1, &t, 0, 40)];
        let (items, complete) = replay(&snap, &subs, ResumeFrom::Start);
        assert!(complete);
        // Block 1 released by block 2 (20.10); block 2 and tx 21 by block 3 (30.20,
        // 30.21); block 3 and tx 31 by block 4 (40.30, 40.31).
        assert_eq!(ids(&items), ["20.10", "30.20", "30.21", "40.30", "40.31"]);
        let from = ResumeFrom::parse(Some("30.20"));
        let (items, _) = replay(&w.snapshot((10, 40), true), &subs, from);
        assert_eq!(ids(&items), ["30.21", "40.30", "40.31"]);
    }

    #[test]
    fn the_cut_and_the_subscription_start_bound_the_replay() {
        let w = world();
        let snap = w.snapshot((10, 40), false);
        let t = filter(ChannelKind::Transactions, 1);
        let subs = [on(1, &t, 21, 30)];
        let (items, complete) = replay(&snap, &subs, ResumeFrom::Start);
        assert!(complete);
        assert!(
            items.is_empty(),
            "21 is not after the start, 31 is past the cut"
        );
        let subs = [on(1, &t, 0, 40)];
        let (items, _) = replay(&snap, &subs, ResumeFrom::parse(Some("21")));
        assert_eq!(ids(&items), ["31"]);
    }

    #[test]
    fn ids_never_issued_replay_nothing_and_are_not_recovered() {
        let w = world();
        let t = filter(ChannelKind::Transactions, 1);
        let subs = [on(1, &t, 0, 40)];
        for (last, known) in [
            ("garbage", true),
            ("41", true),
            ("9", true),
            ("30.21", false),
            ("31.21", false),
        ] {
            let snap = w.snapshot((10, 40), known);
            let (items, complete) = replay(&snap, &subs, ResumeFrom::parse(Some(last)));
            assert!(items.is_empty() && !complete, "{last}");
        }
    }

    #[test]
    fn evicted_events_make_a_replay_that_needs_them_incomplete_and_empty() {
        let mut w = World::new();
        let tight = HistoryLimits {
            max_events: 2,
            ..LIMITS
        };
        for seq in 1..=4 {
            let e = w.event(
                seq,
                "transactions",
                json!({"tx_hash": "0x1", "block_number": 1}),
                Some(1),
                None,
            );
            w.txs.push(e, &tight, Instant::now());
        }
        let snap = w.snapshot((1, 4), false);
        let t = filter(ChannelKind::Transactions, 1);
        let subs = [on(1, &t, 0, 4)];
        let (items, complete) = replay(&snap, &subs, ResumeFrom::parse(Some("1")));
        assert!(items.is_empty() && !complete, "2 was evicted");
        let (items, complete) = replay(&snap, &subs, ResumeFrom::parse(Some("2")));
        assert!(complete);
        assert_eq!(ids(&items), ["3", "4"]);
    }
}
