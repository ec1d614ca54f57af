//! A published event, stamped with its broker message id, and its frames rendered once
//! per dialect and shared by every subscriber.

use std::sync::{Arc, OnceLock};

use bytestring::ByteString;
use serde_json::Value;

use crate::protocol::{render, Dialect};

/// An event as it travels from the publisher through a channel hub to connections.
#[derive(Debug)]
pub struct Event {
    /// The broker-assigned message id, unique within the broker, increasing in publish order.
    pub seq: u64,
    /// `seq` as the string clients see in the frame's `id`.
    pub id: String,
    /// The channel it was published on.
    pub channel: Arc<str>,
    /// The event `type` (`new_block`, `update`...).
    pub kind: String,
    /// The payload, as published.
    pub data: Value,
    /// The block the event names (`number` or `block_number`), for `confirmations`.
    pub block: Option<u64>,
    frames: [OnceLock<ByteString>; Dialect::COUNT],
}

impl Event {
    /// Stamps an already validated event with its message id.
    pub fn new(
        seq: u64,
        channel: Arc<str>,
        kind: String,
        data: Value,
        block: Option<u64>,
    ) -> Event {
        Event {
            seq,
            id: seq.to_string(),
            channel,
            kind,
            data,
            block,
            frames: Default::default(),
        }
    }

    /// The shared frame for `dialect`, rendered on first use.
    fn shared(&self, dialect: Dialect) -> &ByteString {
        self.frames[dialect.index()]
            .get_or_init(|| render::event(dialect, &self.id, &self.channel, &self.kind, &self.data))
    }

    /// The event frame for `dialect`, rendered on first use and shared afterwards.
    pub fn frame(&self, dialect: Dialect) -> ByteString {
        self.shared(dialect).clone()
    }

    /// The length of the shared frame for `dialect`, without taking a reference to it.
    pub fn frame_len(&self, dialect: Dialect) -> usize {
        self.shared(dialect).len()
    }

    /// The frame with `data.confirmations` set to `confirmations`, for subscriptions with
    /// `confirmations` above 1 (PROTOCOL.md 10.6 and 10.20): only events whose data
    /// already carries the field are rewritten; others get the shared frame.
    pub fn frame_at_confirmations(&self, dialect: Dialect, confirmations: u64) -> ByteString {
        match &self.data {
            Value::Object(map) if map.contains_key("confirmations") => {
                let mut data = map.clone();
                data.insert("confirmations".into(), confirmations.into());
                render::event(
                    dialect,
                    &self.id,
                    &self.channel,
                    &self.kind,
                    &Value::Object(data),
                )
            }
            _ => self.frame(dialect),
        }
    }
}
