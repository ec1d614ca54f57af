//! What to subscribe to: a channel and its filter, built with typed methods, and the typed
//! items of a stream of such subscriptions.

use serde_json::{json, Map, Value};

use crate::error::{Error, Gap};
use crate::event::{
    typed, Block, MarketUpdate, StateUpdate, TokenUpdate, Transaction, TransactionUpdate,
};
use crate::wire::RawEvent;

/// One subscription: a channel and its filter (protocol section 5). Works on either
/// endpoint.
///
/// ```
/// use rustorium_sdk::Subscription;
/// let subs = [
///     Subscription::blocks().confirmations(6),
///     Subscription::token_updates().token_id("0x4d544b0000000000000000000000000000000001"),
///     Subscription::transaction_updates().address("0x000000000000000000000000000000000000c0de"),
///     Subscription::market_data(["MTK/USD", "STK/USD"]),
/// ];
/// assert_eq!(subs[0].channel_name(), "blocks");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    channel: String,
    filter: Map<String, Value>,
}

impl Subscription {
    /// A subscription to any channel by name, with no filter (plain channels, when the
    /// broker allows them, or a documented channel given by name).
    pub fn channel(name: impl Into<String>) -> Self {
        Self {
            channel: name.into(),
            filter: Map::new(),
        }
    }

    /// `blocks`: every block.
    pub fn blocks() -> Self {
        Self::channel("blocks")
    }

    /// `transactions`: confirmed transactions.
    pub fn transactions() -> Self {
        Self::channel("transactions")
    }

    /// `state`: state changes.
    pub fn state() -> Self {
        Self::channel("state")
    }

    /// `token_updates`: every token, or one with [`Subscription::token_id`].
    pub fn token_updates() -> Self {
        Self::channel("token_updates")
    }

    /// `transaction_updates`: every address, or one with [`Subscription::address`].
    pub fn transaction_updates() -> Self {
        Self::channel("transaction_updates")
    }

    /// `market_data` for these symbols (1 to 100).
    pub fn market_data<S: Into<String>>(symbols: impl IntoIterator<Item = S>) -> Self {
        let symbols: Vec<Value> = symbols
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect();
        Self::channel("market_data").with("symbols", Value::Array(symbols))
    }

    /// Deliver an event of block N once the chain's head is N + k − 1 (`blocks`,
    /// `transactions`, `state`; k from 1 to 64).
    pub fn confirmations(self, k: u32) -> Self {
        self.with("confirmations", json!(k))
    }

    /// Only this token (`token_updates`).
    pub fn token_id(self, token_id: impl Into<String>) -> Self {
        self.with("token_id", Value::String(token_id.into()))
    }

    /// Only transactions from, to or about this address (`transaction_updates`).
    pub fn address(self, address: impl Into<String>) -> Self {
        self.with("address", Value::String(address.into()))
    }

    /// Only this transaction (`transactions`).
    pub fn tx_hash(self, hash: impl Into<String>) -> Self {
        self.with("tx_hash", Value::String(hash.into()))
    }

    /// Only this state key (`state`).
    pub fn key(self, key: impl Into<String>) -> Self {
        self.with("key", Value::String(key.into()))
    }

    /// Only state keys starting with this (`state`).
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        self.with("key_prefix", Value::String(prefix.into()))
    }

    /// Any filter field by name, for fields this SDK does not know yet.
    pub fn with(mut self, field: impl Into<String>, value: Value) -> Self {
        self.filter.insert(field.into(), value);
        self
    }

    /// The channel's name.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }

    /// The `data` of the `subscribe` request (the filter as `data.filter`, which both
    /// dialects accept).
    pub(crate) fn request_data(&self) -> Value {
        if self.filter.is_empty() {
            json!({"channel": self.channel})
        } else {
            json!({"channel": self.channel, "filter": self.filter})
        }
    }
}

/// An item of a typed stream ([`WebSocketClient::subscribe`](crate::WebSocketClient::subscribe)).
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// `blocks`.
    Block(Block),
    /// `transactions`.
    TransactionConfirmed(Transaction),
    /// `state`.
    State(StateUpdate),
    /// `token_updates`.
    Token(TokenUpdate),
    /// `transaction_updates`.
    Transaction(TransactionUpdate),
    /// `market_data`.
    Market(MarketUpdate),
    /// An event of another channel (plain channels), as received.
    Other(RawEvent),
    /// Events were lost across a reconnect; the stream goes on after it.
    Gap(Gap),
}

impl Update {
    /// The typed item of an event frame.
    pub(crate) fn from_raw(event: RawEvent) -> Result<Update, Error> {
        match event.channel.as_str() {
            "blocks" => typed(event, |b: &mut Block| &mut b.meta).map(Update::Block),
            "transactions" => {
                typed(event, |t: &mut Transaction| &mut t.meta).map(Update::TransactionConfirmed)
            }
            "state" => typed(event, |s: &mut StateUpdate| &mut s.meta).map(Update::State),
            "token_updates" => typed(event, |t: &mut TokenUpdate| &mut t.meta).map(Update::Token),
            "transaction_updates" => {
                typed(event, |t: &mut TransactionUpdate| &mut t.meta).map(Update::Transaction)
            }
            "market_data" => typed(event, |m: &mut MarketUpdate| &mut m.meta).map(Update::Market),
            _ => Ok(Update::Other(event)),
        }
    }
}
