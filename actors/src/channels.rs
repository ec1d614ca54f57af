//! The channel catalogue (PROTOCOL.md section 5): the six channels and plain ones, their
//! event types and routing fields, and the validation of a published event.

use serde_json::Value;

/// Longest plain channel name.
pub const MAX_CHANNEL_NAME: usize = 64;

/// The six channels of the contract, and plain channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `blocks`: `new_block` events.
    Blocks,
    /// `transactions`: `tx_confirmed` events.
    Transactions,
    /// `state`: `state_update` events.
    State,
    /// `token_updates`: `update` events per token.
    TokenUpdates,
    /// `transaction_updates`: `update` events per address.
    TransactionUpdates,
    /// `market_data`: `update` events per symbol.
    MarketData,
    /// Any other allowed name: no filters, events as published.
    Plain,
}

impl ChannelKind {
    /// The six documented channels.
    pub const KNOWN: [ChannelKind; 6] = [
        ChannelKind::Blocks,
        ChannelKind::Transactions,
        ChannelKind::State,
        ChannelKind::TokenUpdates,
        ChannelKind::TransactionUpdates,
        ChannelKind::MarketData,
    ];

    /// The documented channel with this name, if any.
    pub fn known(name: &str) -> Option<ChannelKind> {
        ChannelKind::KNOWN.into_iter().find(|k| k.name() == name)
    }

    /// The channel's name (`"plain"` for plain channels, whose name is their own).
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Blocks => "blocks",
            ChannelKind::Transactions => "transactions",
            ChannelKind::State => "state",
            ChannelKind::TokenUpdates => "token_updates",
            ChannelKind::TransactionUpdates => "transaction_updates",
            ChannelKind::MarketData => "market_data",
            ChannelKind::Plain => "plain",
        }
    }

    /// The event `type` on this channel.
    pub fn event_type(self) -> &'static str {
        match self {
            ChannelKind::Blocks => "new_block",
            ChannelKind::Transactions => "tx_confirmed",
            ChannelKind::State => "state_update",
            _ => "update",
        }
    }

    /// Filter fields this channel accepts.
    pub fn filter_fields(self) -> &'static [&'static str] {
        match self {
            ChannelKind::Blocks => &["confirmations"],
            ChannelKind::Transactions => &["confirmations", "tx_hash"],
            ChannelKind::State => &["confirmations", "key", "key_prefix"],
            ChannelKind::TokenUpdates => &["token_id"],
            ChannelKind::TransactionUpdates => &["address"],
            ChannelKind::MarketData => &["symbols"],
            ChannelKind::Plain => &[],
        }
    }

    /// Whether events on this channel name a block (and so can wait for confirmations).
    pub fn has_blocks(self) -> bool {
        matches!(
            self,
            ChannelKind::Blocks | ChannelKind::Transactions | ChannelKind::State
        )
    }
}

/// Whether `name` is acceptable as a plain channel: `[a-z0-9_.:-]{1,64}`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'-'))
}

/// The `type` a published event gets on a channel of `kind`: the publisher's own when
/// given (PROTOCOL.md 10.32: `block_reorg` on `blocks`), else the channel's default.
pub fn event_type(kind: ChannelKind, given: Option<String>) -> Result<String, String> {
    match given {
        None => Ok(kind.event_type().to_owned()),
        Some(t) if !t.is_empty() && t.len() <= MAX_CHANNEL_NAME => Ok(t),
        Some(_) => Err(format!("type must be 1 to {MAX_CHANNEL_NAME} characters")),
    }
}

/// Checks a published event's `data` for the fields its channel needs (PROTOCOL.md
/// section 5) and returns the block it names, if any. The error names the field.
pub fn validate_event(kind: ChannelKind, data: &Value) -> Result<Option<u64>, String> {
    if kind == ChannelKind::Plain {
        return Ok(None);
    }
    let Value::Object(map) = data else {
        return Err("data must be an object".into());
    };
    let need_str = |field: &str| match map.get(field) {
        Some(Value::String(_)) => Ok(()),
        None => Err(format!("data.{field} is required (a string)")),
        Some(_) => Err(format!("data.{field} must be a string")),
    };
    let need_u64 = |field: &str| match map.get(field) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("data.{field} must be a non-negative integer")),
        None => Err(format!("data.{field} is required (a non-negative integer)")),
    };
    let opt_str = |field: &str| match map.get(field) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("data.{field} must be a string")),
    };
    match kind {
        ChannelKind::Blocks => {
            let n = need_u64("number")?;
            opt_str("hash")?;
            opt_str("parent_hash")?;
            if map.get("transactions").is_some_and(|t| !t.is_array()) {
                return Err("data.transactions must be an array".into());
            }
            Ok(Some(n))
        }
        ChannelKind::Transactions => {
            need_str("tx_hash")?;
            if map.contains_key("confirmations") {
                need_u64("confirmations")?;
            }
            need_u64("block_number").map(Some)
        }
        ChannelKind::State => {
            need_str("key")?;
            need_str("value")?;
            need_u64("block_number").map(Some)
        }
        ChannelKind::TokenUpdates => need_str("token_id").map(|_| None),
        ChannelKind::TransactionUpdates => {
            need_str("transaction_id")?;
            need_str("status")?;
            for f in ["from", "to", "address"] {
                opt_str(f)?;
            }
            if !["from", "to", "address"]
                .iter()
                .any(|f| map.contains_key(*f))
            {
                return Err("data needs at least one of from, to, address (strings)".into());
            }
            Ok(None)
        }
        ChannelKind::MarketData => need_str("symbol").map(|_| None),
        ChannelKind::Plain => Ok(None),
    }
}
