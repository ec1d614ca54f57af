//! Server-to-client frames, per dialect: replies, errors, heartbeats and events.
//!
//! ws frames always carry the four keys `type`, `id`, `data`, `error`; v1 frames carry
//! `id` (omitted when none), `type`, `data`. Event frames of both add `channel`.

use bytestring::ByteString;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Dialect, ErrorKind};
use crate::backend::{Balance, TokenInfo, TransferAccepted};

/// A successful answer to a request, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `subscribe` succeeded.
    Subscribed {
        /// The new subscription's id.
        subscription_id: String,
        /// The channel subscribed to.
        channel: String,
    },
    /// `unsubscribe` succeeded.
    Unsubscribed {
        /// The removed subscription's id.
        subscription_id: String,
    },
    /// `execute_transaction` accepted.
    Transaction(TransferAccepted),
    /// `get_token_info` answered.
    Token(TokenInfo),
    /// `get_balance` answered.
    Balance(Balance),
    /// `publish` done: the events' message ids, in order.
    Published {
        /// The ids.
        ids: Vec<String>,
    },
    /// `reconnect` done; the replayed events follow this reply.
    Reconnected {
        /// Every named subscription restored and every event after the id replayed.
        recovered: bool,
        /// Restored subscription ids.
        subscriptions: Vec<String>,
        /// Subscription ids not restored.
        failed: Vec<String>,
        /// Events replayed after this reply.
        replayed: usize,
    },
    /// `refresh` done: the connection's token was replaced.
    Refreshed {
        /// The new token's `exp`, RFC 3339.
        expires_at: String,
    },
}

fn to_frame(value: &impl Serialize) -> ByteString {
    // Serializing a tree of strings, numbers and maps with string keys cannot fail.
    ByteString::from(serde_json::to_string(value).unwrap_or_default())
}

/// A frame with the dialect's envelope around `data`.
pub fn envelope(dialect: Dialect, kind: &str, id: Option<&Value>, data: Value) -> ByteString {
    match dialect {
        Dialect::Ws => to_frame(&json!({"type": kind, "id": id, "data": data, "error": null})),
        Dialect::V1 => {
            let mut m = Map::new();
            if let Some(id) = id {
                m.insert("id".into(), id.clone());
            }
            m.insert("type".into(), kind.into());
            m.insert("data".into(), data);
            to_frame(&m)
        }
    }
}

/// The reply frame for a successful request.
pub fn reply(dialect: Dialect, id: Option<&Value>, reply: &Reply) -> ByteString {
    match (dialect, reply) {
        (
            Dialect::Ws,
            Reply::Subscribed {
                subscription_id, ..
            },
        ) => envelope(
            dialect,
            "subscribe_success",
            id,
            json!({"subscription_id": subscription_id}),
        ),
        (
            Dialect::V1,
            Reply::Subscribed {
                subscription_id,
                channel,
            },
        ) => envelope(
            dialect,
            "subscription_confirmation",
            id,
            json!({"status": "subscribed", "channel": channel, "subscription_id": subscription_id}),
        ),
        (Dialect::Ws, Reply::Unsubscribed { .. }) => {
            envelope(dialect, "unsubscribe_success", id, json!({}))
        }
        (Dialect::V1, Reply::Unsubscribed { subscription_id }) => envelope(
            dialect,
            "unsubscription_confirmation",
            id,
            json!({"status": "unsubscribed", "subscription_id": subscription_id}),
        ),
        (
            _,
            Reply::Reconnected {
                recovered,
                subscriptions,
                failed,
                replayed,
            },
        ) => envelope(
            dialect,
            match dialect {
                Dialect::Ws => "reconnect_success",
                Dialect::V1 => "reconnect_confirmation",
            },
            id,
            json!({"recovered": recovered, "subscriptions": subscriptions, "failed": failed,
                   "replayed": replayed}),
        ),
        (_, Reply::Refreshed { expires_at }) => envelope(
            dialect,
            match dialect {
                Dialect::Ws => "refresh_success",
                Dialect::V1 => "refresh_confirmation",
            },
            id,
            json!({"expires_at": expires_at}),
        ),
        (_, Reply::Published { ids }) => envelope(
            dialect,
            match dialect {
                Dialect::Ws => "publish_success",
                Dialect::V1 => "publish_confirmation",
            },
            id,
            json!({"ids": ids}),
        ),
        (_, Reply::Transaction(t)) => envelope(
            dialect,
            "transaction_response",
            id,
            json!({"transaction_id": t.transaction_id, "status": t.status}),
        ),
        (_, Reply::Token(t)) => envelope(
            dialect,
            "token_info",
            id,
            json!({"token_id": t.token_id, "name": t.name, "symbol": t.symbol,
                   "total_supply": t.total_supply.to_string()}),
        ),
        (_, Reply::Balance(b)) => envelope(
            dialect,
            "balance",
            id,
            json!({"address": b.address, "token_id": b.token_id, "balance": b.balance.to_string()}),
        ),
    }
}

/// An error frame (PROTOCOL.md section 3).
pub fn error(dialect: Dialect, id: Option<&Value>, kind: ErrorKind, message: &str) -> ByteString {
    match dialect {
        Dialect::Ws => to_frame(&json!({
            "type": "error",
            "id": id,
            "data": null,
            "error": {"code": kind.ws_code(), "message": message},
        })),
        Dialect::V1 => envelope(
            dialect,
            "error",
            id,
            json!({"code": kind.v1_code(), "message": message}),
        ),
    }
}

/// The heartbeat frame: ws carries UNIX seconds, v1 an RFC 3339 timestamp.
pub fn heartbeat(dialect: Dialect, unix_seconds: u64, rfc3339: &str) -> ByteString {
    match dialect {
        Dialect::Ws => envelope(
            dialect,
            "heartbeat",
            None,
            json!({"timestamp": unix_seconds}),
        ),
        Dialect::V1 => envelope(dialect, "heartbeat", None, json!({"timestamp": rfc3339})),
    }
}

#[derive(Serialize)]
struct WsEvent<'a, D: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    data: &'a D,
    error: (),
    channel: &'a str,
}

#[derive(Serialize)]
struct V1Event<'a, D: ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a D,
    channel: &'a str,
}

/// An event frame. Called once per event and dialect by the channel hub; the result is
/// shared by every subscriber. `data` is a parsed [`Value`] or, for an event restored
/// from history, its JSON text as a [`serde_json::value::RawValue`].
pub fn event<D: Serialize + ?Sized>(
    dialect: Dialect,
    id: &str,
    channel: &str,
    kind: &str,
    data: &D,
) -> ByteString {
    match dialect {
        Dialect::Ws => to_frame(&WsEvent {
            kind,
            id,
            data,
            error: (),
            channel,
        }),
        Dialect::V1 => to_frame(&V1Event {
            id,
            kind,
            data,
            channel,
        }),
    }
}
