//! Per-channel history for resume (PROTOCOL.md section 7): each channel's events for the
//! resume window, bounded in events and bytes, and the chain head's timeline, from which
//! a replay recomputes `confirmations` releases with the ids they had live.
//!
//! Both are plain data kept by an engine ([`crate::engine`]); what a resume reads from
//! them is computed in [`crate::resume`]. History keeps each event compactly
//! ([`Stored`]: its data as JSON text, not a parsed tree, and no rendered frames), since
//! it holds minutes of traffic and is read only by a resume.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::{Draft, Event};

/// How much history each channel keeps (from `[resume]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events older than this are evicted.
    pub window: Duration,
    /// Most events kept per channel.
    pub max_events: usize,
    /// Most bytes kept per channel (see [`Stored::size`]).
    pub max_bytes: usize,
    /// Most bytes kept by all channels together; past it the oldest event of the whole
    /// history goes first.
    pub max_total_bytes: usize,
}

/// What eviction removed, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Evicted because they left the resume window.
    pub by_age: u64,
    /// Evicted by the per-channel event or byte bound.
    pub by_bound: u64,
}

/// An event as history keeps it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence number.
    pub seq: u64,
    /// Its channel.
    pub channel: Arc<str>,
    /// Its `type`.
    pub kind: Box<str>,
    /// Its data, as compact JSON text.
    pub data: Box<RawValue>,
    /// The block it names, on block-naming channels.
    pub block: Option<u64>,
    /// For a `blocks` event that raised the head: the new head.
    pub raises_head: Option<u64>,
    /// When it was appended.
    pub appended: Instant,
}

impl Stored {
    /// The record of `draft` sequenced as `seq`, whose data serializes to `data`.
    pub fn new(
        seq: u64,
        draft: &Draft,
        raises_head: Option<u64>,
        appended: Instant,
        data: Box<RawValue>,
    ) -> Stored {
        Stored {
            seq,
            channel: draft.channel.clone(),
            kind: draft.kind.as_str().into(),
            data,
            block: draft.block,
            raises_head,
            appended,
        }
    }

    /// The bytes it counts for against the byte bound.
    pub fn size(&self) -> usize {
        // The record, its two reference counts, its text.
        self.data.get().len() + self.kind.len() + std::mem::size_of::<Stored>() + 16
    }

    fn draft(&self, data: Value) -> Draft {
        Draft {
            channel: self.channel.clone(),
            kind: self.kind.to_string(),
            data,
            block: self.block,
            is_block: self.raises_head.is_some(),
        }
    }

    /// The event again with its data parsed, for a replay that matches filters or
    /// rewrites confirmations. `None` if the data no longer parses, which cannot happen
    /// for data the engine serialized.
    pub fn event(self: &Arc<Stored>) -> Option<Event> {
        let data = serde_json::from_str(self.data.get()).ok()?;
        Some(Event::from_stored(self.draft(data), self.clone()))
    }

    /// The event again with its data left as text: for a replay that only writes it.
    pub fn event_unparsed(self: &Arc<Stored>) -> Event {
        Event::from_stored(self.draft(Value::Null), self.clone())
    }
}

fn size(stored: &Stored) -> usize {
    stored.size()
}

/// One channel's kept events, oldest first, in sequence order.
#[derive(Debug, Default)]
pub struct ChannelHistory {
    events: VecDeque<Arc<Stored>>,
    bytes: usize,
    /// Highest sequence number evicted from this channel (0: nothing evicted yet).
    pub evicted_upto: u64,
    /// Highest block number named by an evicted event (for `confirmations` replays).
    pub evicted_max_block: Option<u64>,
}

impl ChannelHistory {
    /// Appends an event (newer than every kept one) and evicts past the bounds.
    pub fn push(&mut self, event: Arc<Stored>, limits: &HistoryLimits, now: Instant) -> Evicted {
        self.bytes = self.bytes.saturating_add(size(&event));
        self.events.push_back(event);
        self.trim(limits, now)
    }

    /// Evicts what left the window, then the oldest past the event and byte bounds
    /// (the newest event is always kept, whatever its size).
    pub fn trim(&mut self, limits: &HistoryLimits, now: Instant) -> Evicted {
        let mut evicted = Evicted::default();
        while let Some(old) = self.events.front() {
            let expired = now.saturating_duration_since(old.appended) > limits.window;
            let over = self.events.len() > limits.max_events
                || (self.bytes > limits.max_bytes && self.events.len() > 1);
            if !expired && !over {
                break;
            }
            if expired {
                evicted.by_age += 1;
            } else {
                evicted.by_bound += 1;
            }
            self.evict_front();
        }
        evicted
    }

    /// The sequence number of the oldest kept event.
    pub fn front_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// Evicts the oldest kept event (over the total bound); false when there is none.
    pub fn evict_oldest(&mut self) -> bool {
        let any = !self.events.is_empty();
        self.evict_front();
        any
    }

    fn evict_front(&mut self) {
        let Some(old) = self.events.pop_front() else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(size(&old));
        self.evicted_upto = self.evicted_upto.max(old.seq);
        if let Some(n) = old.block {
            self.evicted_max_block = Some(self.evicted_max_block.map_or(n, |m| m.max(n)));
        }
    }

    /// Kept events with `after < seq <= upto`, in sequence order.
    pub fn range(&self, after: u64, upto: u64) -> Vec<Arc<Stored>> {
        let start = self.events.partition_point(|e| e.seq <= after);
        self.events
            .range(start..)
            .take_while(|e| e.seq <= upto)
            .cloned()
            .collect()
    }

    /// Events kept now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Where the chain head rose: one entry per `blocks` event that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRaise {
    /// The sequence number of the `blocks` event.
    pub seq: u64,
    /// The block number it raised the head to.
    pub number: u64,
    /// When it was appended.
    pub at: Instant,
}

/// The head's history for the resume window, plus the last raise evicted from it (so the
/// head is known at every position after that raise).
#[derive(Debug, Default, Clone)]
pub struct HeadTimeline {
    raises: VecDeque<HeadRaise>,
    base: Option<HeadRaise>,
}

/// The head the hubs had at some position: `Unknown` when the timeline no longer reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadAt {
    /// No block had raised the head yet.
    None,
    /// The head was this block number.
    Block(u64),
    /// The timeline was trimmed past this position.
    Unknown,
}

impl HeadTimeline {
    /// Records a raise (newer than every kept one), trimming by the same bounds as history.
    pub fn push(&mut self, raise: HeadRaise, limits: &HistoryLimits, now: Instant) {
        self.raises.push_back(raise);
        while let Some(old) = self.raises.front() {
            let expired = now.saturating_duration_since(old.at) > limits.window;
            if !expired && self.raises.len() <= limits.max_events {
                break;
            }
            self.base = self.raises.pop_front();
        }
    }

    /// The head as a hub saw it just before processing position (`seq`, 0): the highest
    /// raise with a smaller sequence number.
    pub fn head_before(&self, seq: u64) -> HeadAt {
        let i = self.raises.partition_point(|r| r.seq < seq);
        if let Some(r) = i.checked_sub(1).and_then(|i| self.raises.get(i)) {
            return HeadAt::Block(r.number);
        }
        match self.base {
            None => HeadAt::None,
            Some(b) if b.seq < seq => HeadAt::Block(b.number),
            Some(_) => HeadAt::Unknown,
        }
    }

    /// Raises with `after < seq <= upto`, in order.
    pub fn raises(&self, after: u64, upto: u64) -> Vec<HeadRaise> {
        let start = self.raises.partition_point(|r| r.seq <= after);
        self.raises
            .range(start..)
            .take_while(|r| r.seq <= upto)
            .copied()
            .collect()
    }

    /// Whether `seq` is a raise the timeline still holds.
    pub fn is_raise(&self, seq: u64) -> bool {
        let i = self.raises.partition_point(|r| r.seq < seq);
        self.raises.get(i).is_some_and(|r| r.seq == seq)
    }

    /// A timeline read back from an engine that keeps it elsewhere: `base` the last raise
    /// at or before the range, `raises` those in it, in order.
    pub fn from_parts(base: Option<HeadRaise>, raises: Vec<HeadRaise>) -> HeadTimeline {
        HeadTimeline {
            raises: raises.into(),
            base,
        }
    }

    /// A copy holding only what a replay over `(after, upto]` needs.
    pub fn slice(&self, after: u64, upto: u64) -> HeadTimeline {
        let start = self.raises.partition_point(|r| r.seq <= after);
        let base = start
            .checked_sub(1)
            .and_then(|i| self.raises.get(i).copied())
            .or(self.base);
        HeadTimeline {
            raises: self
                .raises
                .range(start..)
                .take_while(|r| r.seq <= upto)
                .copied()
                .collect(),
            base,
        }
    }
}
