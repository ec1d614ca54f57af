//! Subscription filters (PROTOCOL.md section 5): parsing a `subscribe` request's filter
//! against its channel's fields, and matching events.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::channels::ChannelKind;
use crate::confirmations::MAX_CONFIRMATIONS;

/// Most symbols in one `market_data` filter.
pub const MAX_SYMBOLS: usize = 100;

/// A value as filters compare it: a `0x…` string in lower case (PROTOCOL.md 10.13), any
/// other as given. A filter's values are stored this way when it is parsed; a hub's index
/// normalises an event's values once per event.
pub fn normalise(value: &str) -> Cow<'_, str> {
    let hex = value.starts_with("0x") || value.starts_with("0X");
    if hex && value.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(value.to_ascii_lowercase())
    } else {
        Cow::Borrowed(value)
    }
}

/// An equality field a hub's index looks events up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexField {
    /// `tx_hash` (event field `tx_hash`).
    TxHash,
    /// `key` (event field `key`).
    Key,
    /// `token_id` (event field `token_id`).
    TokenId,
    /// `address` (event fields `from`, `to` and `address`).
    Address,
    /// One of `symbols` (event field `symbol`, compared exactly).
    Symbol,
}

impl IndexField {
    /// Every indexed field.
    pub const ALL: [IndexField; 5] = [
        IndexField::TxHash,
        IndexField::Key,
        IndexField::TokenId,
        IndexField::Address,
        IndexField::Symbol,
    ];

    /// The event fields whose value this field is compared with.
    pub fn event_fields(self) -> &'static [&'static str] {
        match self {
            IndexField::TxHash => &["tx_hash"],
            IndexField::Key => &["key"],
            IndexField::TokenId => &["token_id"],
            IndexField::Address => &["from", "to", "address"],
            IndexField::Symbol => &["symbol"],
        }
    }

    /// Whether `0x…` values of this field compare case-insensitively (all but symbols).
    pub fn hex_folds(self) -> bool {
        self != IndexField::Symbol
    }
}

/// Where a subscription sits in its hub's index: under the most selective field its
/// filter sets (an equality before a prefix), or with the unfiltered ones. Its other
/// fields are checked by [`Filter::matches`] once the index has found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKey<'a> {
    /// Under one value (normalised) of an equality field.
    Value(IndexField, &'a str),
    /// Under each of its `symbols`.
    Symbols(&'a [String]),
    /// Under its `key_prefix` (normalised).
    Prefix(&'a str),
    /// Matches every event as far as the index can tell (no field, or `confirmations` only).
    All,
}

/// A filter string; `0x…` values compare case-insensitively (PROTOCOL.md 10.13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Text {
    value: String,
    hex: bool,
}

impl Text {
    fn new(value: &str) -> Text {
        Text {
            value: normalise(value).into_owned(),
            hex: value.starts_with("0x") || value.starts_with("0X"),
        }
    }

    fn equals(&self, other: &str) -> bool {
        if self.hex {
            self.value.eq_ignore_ascii_case(other)
        } else {
            self.value == other
        }
    }

    fn is_prefix_of(&self, other: &str) -> bool {
        if self.hex {
            let n = self.value.len();
            other.len() >= n && other.as_bytes()[..n].eq_ignore_ascii_case(self.value.as_bytes())
        } else {
            other.starts_with(&self.value)
        }
    }
}

/// A parsed subscription filter. Absent fields match everything. It serializes so that
/// the Redis engine can keep a parked subscription for any node to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Blocks of confirmation required before delivery, 1 to 64; 1 is immediate.
    pub confirmations: u64,
    // Boxed: most subscriptions set none of these, and every hub, connection and session
    // entry holds a filter, so its size is paid per subscription (8 bytes each here).
    tx_hash: Option<Box<Text>>,
    key: Option<Box<Text>>,
    key_prefix: Option<Box<Text>>,
    token_id: Option<Box<Text>>,
    address: Option<Box<Text>>,
    symbols: Option<Box<[String]>>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            confirmations: 1,
            tx_hash: None,
            key: None,
            key_prefix: None,
            token_id: None,
            address: None,
            symbols: None,
        }
    }
}

fn str_field<'a>(data: &'a Value, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

impl Filter {
    /// Whether the filter matches every event of its channel (no field given besides
    /// `confirmations`).
    pub fn matches_all(&self) -> bool {
        self.tx_hash.is_none()
            && self.key.is_none()
            && self.key_prefix.is_none()
            && self.token_id.is_none()
            && self.address.is_none()
            && self.symbols.is_none()
    }

    /// Where the hub's index files this filter (see [`IndexKey`]).
    pub fn index_key(&self) -> IndexKey<'_> {
        let fields = [
            (IndexField::TxHash, &self.tx_hash),
            (IndexField::Key, &self.key),
            (IndexField::TokenId, &self.token_id),
            (IndexField::Address, &self.address),
        ];
        for (field, text) in fields {
            if let Some(t) = text {
                return IndexKey::Value(field, &t.value);
            }
        }
        if let Some(symbols) = &self.symbols {
            return IndexKey::Symbols(symbols);
        }
        match &self.key_prefix {
            Some(p) => IndexKey::Prefix(&p.value),
            None => IndexKey::All,
        }
    }

    /// Parses the filter of a `subscribe` request: `data.filter` and flat fields beside
    /// `channel` (PROTOCOL.md 10.4 and 10.18). The error names the field.
    pub fn parse(
        kind: ChannelKind,
        channel: &str,
        data: &Map<String, Value>,
        max_value_bytes: usize,
    ) -> Result<Filter, String> {
        let nested = match data.get("filter") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err("filter must be an object".into()),
        };
        let mut filter = Filter::default();
        if kind == ChannelKind::Plain {
            if nested.is_some_and(|m| !m.is_empty()) {
                return Err(format!(
                    "channel \"{channel}\" is a plain channel and takes no filter"
                ));
            }
            return Ok(filter);
        }
        let allowed = kind.filter_fields();
        if let Some(nested) = nested {
            for (field, value) in nested {
                if !allowed.contains(&field.as_str()) {
                    let shown: String = field.chars().take(64).collect();
                    return Err(format!(
                        "unknown filter field \"{shown}\" for channel {}; expected {}",
                        kind.name(),
                        allowed.join(", ")
                    ));
                }
                filter.set(field, &format!("filter.{field}"), value, max_value_bytes)?;
            }
        }
        for field in allowed {
            let Some(value) = data.get(*field) else {
                continue;
            };
            if let Some(other) = nested.and_then(|m| m.get(*field)) {
                if other != value {
                    return Err(format!(
                        "{field} is given both flat and in filter, with different values"
                    ));
                }
            }
            filter.set(field, field, value, max_value_bytes)?;
        }
        Ok(filter)
    }

    fn set(
        &mut self,
        field: &str,
        shown: &str,
        value: &Value,
        max_bytes: usize,
    ) -> Result<(), String> {
        let text = |value: &Value| -> Result<Text, String> {
            match value.as_str() {
                Some(s) if !s.is_empty() && s.len() <= max_bytes => Ok(Text::new(s)),
                _ => Err(format!(
                    "{shown} must be a non-empty string of at most {max_bytes} bytes"
                )),
            }
        };
        match field {
            "confirmations" => match value.as_u64() {
                Some(k) if (1..=MAX_CONFIRMATIONS).contains(&k) => self.confirmations = k,
                _ => {
                    return Err(format!(
                        "{shown} must be an integer from 1 to {MAX_CONFIRMATIONS}"
                    ))
                }
            },
            "tx_hash" => self.tx_hash = Some(Box::new(text(value)?)),
            "key" => self.key = Some(Box::new(text(value)?)),
            "key_prefix" => self.key_prefix = Some(Box::new(text(value)?)),
            "token_id" => self.token_id = Some(Box::new(text(value)?)),
            "address" => self.address = Some(Box::new(text(value)?)),
            "symbols" => {
                let bad = || {
                    format!(
                        "{shown} must be an array of 1 to {MAX_SYMBOLS} non-empty strings of at most {max_bytes} bytes"
                    )
                };
                let items = value.as_array().ok_or_else(bad)?;
                if items.is_empty() || items.len() > MAX_SYMBOLS {
                    return Err(bad());
                }
                let mut symbols = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.is_empty() && s.len() <= max_bytes => {
                            symbols.push(s.to_owned())
                        }
                        _ => return Err(bad()),
                    }
                }
                self.symbols = Some(symbols.into_boxed_slice());
            }
            _ => return Err(format!("unknown filter field \"{field}\"")),
        }
        Ok(())
    }

    /// The values this filter gives `field` (`tx_hash`, `key`, `key_prefix`, `token_id`,
    /// `address`: one value, hex lowercased; `symbols`: each symbol), or `None` when the
    /// filter leaves the field open. What a token's grant ([`crate::grant`]) checks.
    pub fn values(&self, field: &str) -> Option<Vec<&str>> {
        fn one(t: &Option<Box<Text>>) -> Option<Vec<&str>> {
            t.as_ref().map(|t| vec![t.value.as_str()])
        }
        match field {
            "tx_hash" => one(&self.tx_hash),
            "key" => one(&self.key),
            "key_prefix" => one(&self.key_prefix),
            "token_id" => one(&self.token_id),
            "address" => one(&self.address),
            "symbols" => self
                .symbols
                .as_ref()
                .map(|s| s.iter().map(String::as_str).collect()),
            _ => None,
        }
    }

    /// Whether an event's `data` passes every field of this filter (not `confirmations`,
    /// which the hub applies against the chain head).
    pub fn matches(&self, data: &Value) -> bool {
        let eq = |f: &Option<Box<Text>>, field: &str| match f {
            None => true,
            Some(t) => str_field(data, field).is_some_and(|v| t.equals(v)),
        };
        if !eq(&self.tx_hash, "tx_hash") || !eq(&self.key, "key") || !eq(&self.token_id, "token_id")
        {
            return false;
        }
        if let Some(p) = &self.key_prefix {
            if !str_field(data, "key").is_some_and(|k| p.is_prefix_of(k)) {
                return false;
            }
        }
        if let Some(a) = &self.address {
            let hit = ["from", "to", "address"]
                .iter()
                .any(|f| str_field(data, f).is_some_and(|v| a.equals(v)));
            if !hit {
                return false;
            }
        }
        if let Some(symbols) = &self.symbols {
            match str_field(data, "symbol") {
                Some(s) if symbols.iter().any(|x| x == s) => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(kind: ChannelKind, data: Value) -> Result<Filter, String> {
        let Value::Object(m) = data else {
            return Err("not an object".into());
        };
        Filter::parse(kind, kind.name(), &m, 256)
    }

    #[test]
    fn hex_address_matches_any_case_on_from_to_address() {
        let f = parse(
            ChannelKind::TransactionUpdates,
            json!({"channel": "transaction_updates", "address": "0xAbC"}),
        );
        let Ok(f) = f else { panic!("filter refused") };
        assert!(f.matches(&json!({"from": "0xabc"})));
        assert!(f.matches(&json!({"to": "0XABC"})));
        assert!(f.matches(&json!({"address": "0xaBc"})));
        assert!(!f.matches(&json!({"from": "0xabd"})));
    }

    #[test]
    fn key_prefix_is_case_insensitive_for_hex() {
        let Ok(f) = parse(
            ChannelKind::State,
            json!({"channel": "state", "filter": {"key_prefix": "0xAB"}}),
        ) else {
            panic!("filter refused")
        };
        assert!(f.matches(&json!({"key": "0xab12"})));
        assert!(!f.matches(&json!({"key": "0xac12"})));
        assert!(!f.matches(&json!({"key": "0x"})));
    }

    #[test]
    fn bad_filters_name_the_field() {
        let e = parse(
            ChannelKind::Blocks,
            json!({"filter": {"confirmations": "3"}}),
        );
        assert_eq!(
            e.err().as_deref(),
            Some("filter.confirmations must be an integer from 1 to 64")
        );
        let e = parse(ChannelKind::Blocks, json!({"filter": {"confirmation": 3}}));
        assert!(e.err().is_some_and(|m| m.contains("\"confirmation\"")));
        let e = parse(ChannelKind::MarketData, json!({"symbols": []}));
        assert!(e.err().is_some_and(|m| m.starts_with("symbols must be")));
    }
}
