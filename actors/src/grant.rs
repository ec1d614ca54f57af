//! A token's `channels` grant (PROTOCOL.md section 12): per channel, the values its filter
//! fields may take; and whether a subscription lies inside it.
//!
//! The rule (docs/PROTOCOL.md, decision 41): a subscription is inside the grant when its
//! channel is named in the grant and, for every field the grant names for that channel,
//! the subscription's filter names that field with granted values only. A field the grant
//! does not name is free. So `{"transaction_updates": {"address": ["0xabc"]}, "blocks": {}}`
//! allows `blocks` with any filter and `transaction_updates` only with `address` `0xabc`;
//! an unfiltered `transaction_updates` subscription is outside it. Hex values (`0x…`)
//! compare case-insensitively, as filters do; `key_prefix` is inside when it starts with a
//! granted prefix; `symbols` when every symbol is granted. `confirmations` cannot be
//! restricted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::channels::{self, ChannelKind};
use crate::filter::Filter;

/// The parsed `channels` claim: channel name → field → granted values (hex lowercased).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    channels: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// A hex value (`0x…`) lowercased, as [`Filter`] keeps it; anything else as given.
fn normal(value: &str) -> String {
    crate::filter::normalise(value).into_owned()
}

impl Grant {
    /// Parses a token's `channels` claim. The error says what is wrong with it (the token
    /// is then refused as a whole).
    pub fn parse(claim: &Value) -> Result<Grant, String> {
        let Value::Object(by_channel) = claim else {
            return Err("channels must be an object of channel name to field grants".into());
        };
        let mut channels = BTreeMap::new();
        for (channel, fields) in by_channel {
            let kind = ChannelKind::known(channel);
            if kind.is_none() && !channels::is_plain_name(channel) {
                return Err(format!(
                    "channels: \"{}\" is not a channel name",
                    clip(channel)
                ));
            }
            let Value::Object(fields) = fields else {
                return Err(format!(
                    "channels.{}: must be an object of filter field to allowed values",
                    clip(channel)
                ));
            };
            let allowed: &[&str] = kind.map_or(&[], ChannelKind::filter_fields);
            let mut granted = BTreeMap::new();
            for (field, values) in fields {
                if field == "confirmations" || !allowed.contains(&field.as_str()) {
                    return Err(format!(
                        "channels.{}: \"{}\" is not a filter field a grant can restrict",
                        clip(channel),
                        clip(field)
                    ));
                }
                let bad = || {
                    format!(
                        "channels.{}.{field}: must be a non-empty string or an array of them",
                        clip(channel)
                    )
                };
                let list: Vec<String> = match values {
                    Value::String(s) if !s.is_empty() => vec![normal(s)],
                    Value::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|v| v.as_str().filter(|s| !s.is_empty()).map(normal))
                        .collect::<Option<_>>()
                        .ok_or_else(bad)?,
                    _ => return Err(bad()),
                };
                granted.insert(field.clone(), list);
            }
            channels.insert(channel.clone(), granted);
        }
        Ok(Grant { channels })
    }

    /// Whether a subscription to `channel` with `filter` is inside the grant; the error is
    /// the `forbidden` message, naming the channel and the field.
    pub fn allows(&self, channel: &str, filter: &Filter) -> Result<(), String> {
        let Some(fields) = self.channels.get(channel) else {
            return Err(format!(
                "forbidden: this token does not grant the channel \"{}\"",
                clip(channel)
            ));
        };
        for (field, granted) in fields {
            let inside = match (field.as_str(), filter.values(field)) {
                (_, None) => false,
                ("key_prefix", Some(asked)) => asked
                    .iter()
                    .all(|a| granted.iter().any(|g| a.starts_with(g.as_str()))),
                (_, Some(asked)) => asked.iter().all(|a| granted.iter().any(|g| g == a)),
            };
            if !inside {
                return Err(format!(
                    "forbidden: this token grants {channel} only with filter field {field} set to granted values"
                ));
            }
        }
        Ok(())
    }
}

/// A name as far as an error message shows it.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(kind: ChannelKind, data: Value) -> Filter {
        let Value::Object(m) = data else {
            panic!("not an object")
        };
        match Filter::parse(kind, kind.name(), &m, 256) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_restricted_field_must_be_named_with_granted_values() {
        let grant = Grant::parse(&json!({
            "transaction_updates": {"address": ["0xABC"]},
            "blocks": {},
            "market_data": {"symbols": ["BTC-USD", "ETH-USD"]},
            "state": {"key_prefix": "0xaa"},
        }));
        let Ok(grant) = grant else {
            panic!("{grant:?}")
        };
        let tu = ChannelKind::TransactionUpdates;
        assert!(grant
            .allows(
                "transaction_updates",
                &filter(tu, json!({"address": "0xabc"}))
            )
            .is_ok());
        assert!(grant
            .allows(
                "transaction_updates",
                &filter(tu, json!({"address": "0xAbC"}))
            )
            .is_ok());
        assert!(grant
            .allows(
                "transaction_updates",
                &filter(tu, json!({"address": "0xabd"}))
            )
            .is_err());
        assert!(grant
            .allows("transaction_updates", &filter(tu, json!({})))
            .is_err());
        let blocks = filter(ChannelKind::Blocks, json!({"filter": {"confirmations": 3}}));
        assert!(grant.allows("blocks", &blocks).is_ok());
        assert!(grant
            .allows(
                "token_updates",
                &filter(ChannelKind::TokenUpdates, json!({}))
            )
            .is_err());
        let md = ChannelKind::MarketData;
        assert!(grant
            .allows("market_data", &filter(md, json!({"symbols": ["ETH-USD"]})))
            .is_ok());
        assert!(grant
            .allows(
                "market_data",
                &filter(md, json!({"symbols": ["ETH-USD", "DOGE"]}))
            )
            .is_err());
        let st = ChannelKind::State;
        assert!(grant
            .allows("state", &filter(st, json!({"key_prefix": "0xAAB"})))
            .is_ok());
        assert!(grant
            .allows("state", &filter(st, json!({"key_prefix": "0xab"})))
            .is_err());
        assert!(grant
            .allows("state", &filter(st, json!({"key": "0xaab"})))
            .is_err());
    }

    #[test]
    fn bad_grants_are_refused() {
        for bad in [
            json!([]),
            json!({"blocks": []}),
            json!({"blocks": {"confirmations": [1]}}),
            json!({"transaction_updates": {"adress": ["0x1"]}}),
            json!({"transaction_updates": {"address": []}}),
            json!({"transaction_updates": {"address": [1]}}),
            json!({"Not A Channel": {}}),
        ] {
            assert!(Grant::parse(&bad).is_err(), "{bad} passed");
        }
    }
}
