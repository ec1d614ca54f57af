//! A published event, stamped with its place in the sequence, and its frame rendered once
//! per dialect and shared by every subscriber that gets it at its own id.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytestring::ByteString;
use serde_json::Value;

use crate::history::Stored;
use crate::position::Position;
use crate::protocol::{render, Dialect};

/// An event as it travels from the engine through a channel hub to connections, and as
/// the channel's history keeps it for resume.
#[derive(Debug)]
pub struct Event {
    /// Its number in the one sequence (PROTOCOL.md section 5); its id is the decimal string.
    pub seq: u64,
    /// `seq` as the string clients see in the frame's `id`.
    pub id: String,
    /// The channel it was published on.
    pub channel: Arc<str>,
    /// The event `type` (`new_block`, `update`, or the publisher's own).
    pub kind: String,
    /// The payload, as published.
    pub data: Value,
    /// The block the event names (`number` or `block_number`), on block-naming channels.
    pub block: Option<u64>,
    /// For a `blocks` event that raised the chain head: the new head (this block's number).
    pub raises_head: Option<u64>,
    /// When the engine appended it (the resume window counts from here).
    pub appended: Instant,
    /// Its stored record, when the engine made one: frames render from its JSON text.
    stored: Option<Arc<Stored>>,
    frames: [OnceLock<ByteString>; Dialect::COUNT],
}

/// An event before the engine sequenced it: validated, with its channel's routing facts.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The channel.
    pub channel: Arc<str>,
    /// The event `type`.
    pub kind: String,
    /// The payload.
    pub data: Value,
    /// The block it names, on block-naming channels.
    pub block: Option<u64>,
    /// Whether it is a `blocks` event (which may raise the chain head).
    pub is_block: bool,
}

impl Event {
    /// Stamps a draft with its sequence number (done by the engine only).
    pub fn new(seq: u64, draft: Draft, raises_head: Option<u64>, appended: Instant) -> Event {
        Event {
            seq,
            id: seq.to_string(),
            channel: draft.channel,
            kind: draft.kind,
            data: draft.data,
            block: draft.block,
            raises_head,
            appended,
            stored: None,
            frames: Default::default(),
        }
    }

    /// The event of a stored record: its frames render from the record's JSON text (the
    /// data is serialized once, by the engine); `draft.data` is the parsed data for
    /// filters and rewrites, or null where nothing needs it (a replay that only writes).
    pub fn from_stored(draft: Draft, stored: Arc<Stored>) -> Event {
        let mut event = Event::new(stored.seq, draft, stored.raises_head, stored.appended);
        event.stored = Some(stored);
        event
    }

    fn render(&self, dialect: Dialect, id: &str, data: Option<&Value>) -> ByteString {
        match (data, &self.stored) {
            (Some(data), _) => render::event(dialect, id, &self.channel, &self.kind, data),
            (None, Some(stored)) => {
                render::event(dialect, id, &self.channel, &self.kind, &*stored.data)
            }
            (None, None) => render::event(dialect, id, &self.channel, &self.kind, &self.data),
        }
    }

    /// The shared frame for `dialect`, rendered on first use.
    fn shared(&self, dialect: Dialect) -> &ByteString {
        self.frames[dialect.index()].get_or_init(|| self.render(dialect, &self.id, None))
    }

    /// The event frame for `dialect` at its own id, rendered on first use and shared.
    pub fn frame(&self, dialect: Dialect) -> ByteString {
        self.shared(dialect).clone()
    }

    /// The length of the shared frame for `dialect` (a release differs by a few digits).
    pub fn frame_len(&self, dialect: Dialect) -> usize {
        self.shared(dialect).len()
    }

    /// The frame at `position` (a release `B.E` carries that id) with `data.confirmations`
    /// set to `confirmations` when given and the data already has the field (PROTOCOL.md
    /// 10.6, 10.20). The shared frame when neither applies.
    pub fn frame_at(
        &self,
        dialect: Dialect,
        position: Position,
        confirmations: Option<u64>,
    ) -> ByteString {
        let rewrite = match (&self.data, confirmations) {
            (Value::Object(map), Some(c)) if map.contains_key("confirmations") => {
                let mut data = map.clone();
                data.insert("confirmations".into(), c.into());
                Some(Value::Object(data))
            }
            _ => None,
        };
        if rewrite.is_none() && !position.is_release() {
            return self.frame(dialect);
        }
        self.render(dialect, &position.to_string(), rewrite.as_ref())
    }
}
