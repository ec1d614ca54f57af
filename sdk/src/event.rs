//! Typed events: the node API stream's [`Event`] and the data of every documented channel.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::wire::RawEvent;

/// An item of the node API stream of [`WebSocketClient::subscribe_events`]
/// (`crate::WebSocketClient`), the four variants of the node API document's example.
///
/// [`WebSocketClient::subscribe_events`]: crate::WebSocketClient::subscribe_events
#[derive(Debug, Clone)]
pub enum Event {
    /// An event of `blocks`.
    NewBlock(Block),
    /// An event of `transactions`.
    TransactionConfirmed(Transaction),
    /// An event of `state`.
    StateUpdate(StateUpdate),
    /// Something the application should know; the stream goes on after it unless it was
    /// the last item (a refused key, [`Error::Closed`] with 4000). Events lost across a
    /// reconnect come as [`Error::Gap`].
    Error(Error),
}

/// Where an event sits: its id, channel and type, as the frame carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The event's id in the broker's sequence.
    pub id: String,
    /// The channel it came on.
    pub channel: String,
    /// The event type (`new_block`, or a publisher's own such as `block_reorg`).
    pub kind: String,
}

/// A timestamp as publishers send it: Unix seconds (node API) or RFC 3339 text (v1 API).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// Seconds since the Unix epoch.
    Unix(u64),
    /// Text, usually RFC 3339.
    Text(String),
}

/// A block (`blocks` channel).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Block {
    /// The block number.
    pub number: u64,
    /// The block hash.
    #[serde(default)]
    pub hash: Option<String>,
    /// The parent block's hash.
    #[serde(default)]
    pub parent_hash: Option<String>,
    /// When the block was made.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// The block's transactions, as published.
    #[serde(default)]
    pub transactions: Vec<Value>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A confirmed transaction (`transactions` channel, `tx_confirmed`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Transaction {
    /// The transaction hash (`tx_hash` on the wire).
    #[serde(rename = "tx_hash")]
    pub hash: String,
    /// The block that holds it.
    pub block_number: u64,
    /// When it was confirmed.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// Its confirmations at delivery (rewritten by the broker for `confirmations` k > 1).
    #[serde(default)]
    pub confirmations: Option<u64>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A state change (`state` channel).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StateUpdate {
    /// The state key.
    pub key: String,
    /// The new value, base64 as published.
    #[serde(default)]
    pub value: Option<String>,
    /// The block that changed it.
    pub block_number: u64,
    /// When.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A token's price and volume (`token_updates`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenUpdate {
    /// The token.
    pub token_id: String,
    /// The price, a decimal string.
    #[serde(default, deserialize_with = "decimal")]
    pub price: Option<String>,
    /// The volume, a decimal string.
    #[serde(default, deserialize_with = "decimal")]
    pub volume: Option<String>,
    /// When.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A transaction's status for an address (`transaction_updates`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransactionUpdate {
    /// The transaction.
    pub transaction_id: String,
    /// Its status (`pending`, `confirmed`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Sender, when published.
    #[serde(default)]
    pub from: Option<String>,
    /// Recipient, when published.
    #[serde(default)]
    pub to: Option<String>,
    /// The address concerned, when published.
    #[serde(default)]
    pub address: Option<String>,
    /// When.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A market's figures (`market_data`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MarketUpdate {
    /// The market, such as `MTK/USD`.
    pub symbol: String,
    /// The price, a decimal string.
    #[serde(default, deserialize_with = "decimal")]
    pub price: Option<String>,
    /// The change over 24 hours, a decimal string.
    #[serde(default, deserialize_with = "decimal")]
    pub change_24h: Option<String>,
    /// The volume over 24 hours, a decimal string.
    #[serde(default, deserialize_with = "decimal")]
    pub volume_24h: Option<String>,
    /// When.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    /// Fields beyond the documented ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Id, channel and type of the frame.
    #[serde(skip)]
    pub meta: Meta,
}

/// A decimal published as a string (as documented) or as a JSON number.
fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Reads an event's data as `T`, with its [`Meta`].
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    event: RawEvent,
    meta: fn(&mut T) -> &mut Meta,
) -> Result<T, Error> {
    let mut value: T = serde_json::from_value(event.data).map_err(|e| {
        Error::Decode(format!(
            "event {} on {} ({}): {e}",
            event.id, event.channel, event.kind
        ))
    })?;
    *meta(&mut value) = Meta {
        id: event.id,
        channel: event.channel,
        kind: event.kind,
    };
    Ok(value)
}

impl Event {
    /// The node API event of a frame of `blocks`, `transactions` or `state`.
    pub(crate) fn from_raw(event: RawEvent) -> Event {
        let read = match event.channel.as_str() {
            "blocks" => typed(event, |b: &mut Block| &mut b.meta).map(Event::NewBlock),
            "transactions" => {
                typed(event, |t: &mut Transaction| &mut t.meta).map(Event::TransactionConfirmed)
            }
            "state" => typed(event, |s: &mut StateUpdate| &mut s.meta).map(Event::StateUpdate),
            other => Err(Error::Decode(format!(
                "event {} on {other}: the node API stream carries blocks, transactions and state",
                event.id
            ))),
        };
        read.unwrap_or_else(Event::Error)
    }
}
