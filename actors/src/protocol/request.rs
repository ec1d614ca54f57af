//! Client-to-server frames, both dialects: `{"type", "id"?, "data"?}` into a [`Request`].
//!
//! Only the envelope and the request's own field types are checked here; channels and
//! filters are checked against the catalogue in [`crate::filter`].

use serde_json::{Map, Value};

use super::ErrorKind;
use crate::backend::Transfer;
use crate::keys::Role;

/// Longest `token_id` accepted in a command.
pub const MAX_TOKEN_ID: usize = 256;

/// Longest address: `0x` and 64 hex digits.
pub const MAX_ADDRESS_HEX: usize = 64;

/// A request that parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's `id`, a string or a number, echoed exactly in the reply.
    pub id: Option<Value>,
    /// What is asked.
    pub body: RequestBody,
}

/// The request types the broker answers.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// `subscribe`: the channel, and `data` as sent (for `data.filter` and flat filters).
    Subscribe {
        /// `data.channel`.
        channel: String,
        /// The whole `data` object.
        data: Map<String, Value>,
    },
    /// `unsubscribe` with `data.subscription_id`.
    Unsubscribe {
        /// The subscription to end.
        subscription_id: String,
    },
    /// `heartbeat_response`: liveness only, no reply, never rate-limited.
    HeartbeatResponse,
    /// A command for the backend.
    Command(Command),
    /// `publish`: `data` is one event `{channel, type?, data}` or `{events: [...]}`.
    Publish {
        /// The events, as sent (validated by the publisher).
        events: Value,
    },
    /// `reconnect`: resume subscriptions of a connection that ended.
    Reconnect {
        /// The id of the last event frame the client received, if any.
        last_message_id: Option<String>,
        /// The subscriptions to restore.
        subscriptions: Vec<String>,
    },
    /// `refresh` (PROTOCOL.md section 12): replace the connection's signed token by
    /// `data.token`, a valid token of the same `sub`.
    Refresh {
        /// The new token, as sent (never logged).
        token: String,
    },
}

/// The commands of PROTOCOL.md section 4 (and `get_balance`, 10.14), validated in shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `execute_transaction`.
    ExecuteTransaction(Transfer),
    /// `get_token_info`.
    GetTokenInfo {
        /// The token.
        token_id: String,
    },
    /// `get_balance`.
    GetBalance {
        /// The address, lowercase.
        address: String,
        /// The token.
        token_id: String,
    },
}

impl RequestBody {
    /// The role the key needs for this request (PROTOCOL.md 10.16, 10.17).
    pub fn role(&self) -> Option<Role> {
        match self {
            RequestBody::Subscribe { .. } | RequestBody::Reconnect { .. } => Some(Role::Subscribe),
            RequestBody::Publish { .. } => Some(Role::Publish),
            RequestBody::Command(_) => Some(Role::Command),
            RequestBody::Unsubscribe { .. }
            | RequestBody::HeartbeatResponse
            | RequestBody::Refresh { .. } => None,
        }
    }

    /// Whether the per-connection message cap applies to this request (publishers have a
    /// cap of their own, in events).
    pub fn is_rate_limited(&self) -> bool {
        !matches!(
            self,
            RequestBody::HeartbeatResponse | RequestBody::Publish { .. }
        )
    }
}

/// A frame that is not a valid request: the error to send, with the id when it was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    /// The request's `id` when it could be read.
    pub id: Option<Value>,
    /// The error kind (always [`ErrorKind::InvalidRequest`] from the parser).
    pub kind: ErrorKind,
    /// What was wrong, for the client author.
    pub message: String,
}

/// The request types, for the "unknown type" message.
pub const KNOWN_TYPES: &str = "subscribe, unsubscribe, reconnect, refresh, heartbeat_response, publish, execute_transaction, get_token_info, get_balance";

/// Most subscription ids one `reconnect` may name.
pub const MAX_RECONNECT_SUBSCRIPTIONS: usize = 1000;

fn invalid(id: Option<Value>, message: impl Into<String>) -> RequestError {
    RequestError {
        id,
        kind: ErrorKind::InvalidRequest,
        message: message.into(),
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| invalid(None, format!("Invalid message format: not JSON ({e})")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid(
            None,
            "Invalid message format: expected a JSON object {\"type\", \"id\", \"data\"}",
        ));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => return Err(invalid(None, "\"id\" must be a string or a number")),
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(invalid(id, "missing \"type\"")),
        Some(_) => return Err(invalid(id, "\"type\" must be a string")),
    };
    let data = match obj.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid(id, "\"data\" must be an object")),
    };
    let body = match kind.as_str() {
        "subscribe" => match data.get("channel") {
            Some(Value::String(channel)) => RequestBody::Subscribe {
                channel: channel.clone(),
                data,
            },
            None | Some(Value::Null) => {
                return Err(invalid(id, "subscribe needs \"data.channel\", a string"))
            }
            Some(_) => return Err(invalid(id, "\"data.channel\" must be a string")),
        },
        "unsubscribe" => match data.get("subscription_id") {
            Some(Value::String(sid)) => RequestBody::Unsubscribe {
                subscription_id: sid.clone(),
            },
            None | Some(Value::Null) => {
                return Err(invalid(
                    id,
                    "unsubscribe needs \"data.subscription_id\", a string",
                ))
            }
            Some(_) => return Err(invalid(id, "\"data.subscription_id\" must be a string")),
        },
        "heartbeat_response" => RequestBody::HeartbeatResponse,
        "refresh" => match data.get("token") {
            Some(Value::String(token)) if !token.is_empty() => RequestBody::Refresh {
                token: token.clone(),
            },
            _ => {
                return Err(invalid(
                    id,
                    "refresh needs \"data.token\", a non-empty string (a signed token)",
                ))
            }
        },
        "publish" => {
            let mut data = data;
            let events = match data.remove("events") {
                Some(list @ Value::Array(_)) => list,
                Some(_) => return Err(invalid(id, "data.events must be an array of events")),
                None => Value::Object(data),
            };
            RequestBody::Publish { events }
        }
        "reconnect" => match reconnect(&data) {
            Ok(body) => body,
            Err(msg) => return Err(invalid(id, msg)),
        },
        "execute_transaction" => match transfer(&data) {
            Ok(t) => RequestBody::Command(Command::ExecuteTransaction(t)),
            Err(msg) => return Err(invalid(id, msg)),
        },
        "get_token_info" => match token_id(&data) {
            Ok(token_id) => RequestBody::Command(Command::GetTokenInfo { token_id }),
            Err(msg) => return Err(invalid(id, msg)),
        },
        "get_balance" => match (address(&data, "address"), token_id(&data)) {
            (Ok(address), Ok(token_id)) => {
                RequestBody::Command(Command::GetBalance { address, token_id })
            }
            (Err(msg), _) | (_, Err(msg)) => return Err(invalid(id, msg)),
        },
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(invalid(
                id,
                format!("unknown type \"{shown}\"; expected one of {KNOWN_TYPES}"),
            ));
        }
    };
    Ok(Request { id, body })
}

fn reconnect(data: &Map<String, Value>) -> Result<RequestBody, String> {
    let last_message_id = match data.get("last_message_id") {
        None | Some(Value::Null) => None,
        // Any string or number is read as an id; one the broker never issued (garbage
        // included) resumes with `recovered: false`. No id is longer than 41 characters,
        // so a longer string is kept only as far as it can still be told apart.
        Some(Value::String(s)) => Some(s.chars().take(64).collect()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(
                "data.last_message_id must be a message id (a string or a number), or null".into(),
            )
        }
    };
    let bad = || {
        format!(
            "data.subscriptions must be an array of at most {MAX_RECONNECT_SUBSCRIPTIONS} subscription ids (strings)"
        )
    };
    let list = data
        .get("subscriptions")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    if list.len() > MAX_RECONNECT_SUBSCRIPTIONS {
        return Err(bad());
    }
    let mut subscriptions: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let id = v.as_str().filter(|s| s.len() <= 128).ok_or_else(bad)?;
        if !subscriptions.iter().any(|s| s == id) {
            subscriptions.push(id.to_owned());
        }
    }
    Ok(RequestBody::Reconnect {
        last_message_id,
        subscriptions,
    })
}

fn address(data: &Map<String, Value>, field: &str) -> Result<String, String> {
    let bad =
        || format!("data.{field} must be an address: \"0x\" and 1 to {MAX_ADDRESS_HEX} hex digits");
    let text = data.get(field).and_then(Value::as_str).ok_or_else(bad)?;
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or_else(bad)?;
    if hex.is_empty() || hex.len() > MAX_ADDRESS_HEX || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    Ok(text.to_ascii_lowercase())
}

fn token_id(data: &Map<String, Value>) -> Result<String, String> {
    match data.get("token_id").and_then(Value::as_str) {
        Some(t) if !t.is_empty() && t.len() <= MAX_TOKEN_ID => Ok(t.to_owned()),
        _ => Err(format!(
            "data.token_id must be a non-empty string of at most {MAX_TOKEN_ID} bytes"
        )),
    }
}

fn amount(data: &Map<String, Value>) -> Result<u128, String> {
    let bad = || {
        "data.amount must be a non-negative integer as a decimal string (\"1000\"), at most 2^128-1"
            .to_owned()
    };
    let text = data.get("amount").and_then(Value::as_str).ok_or_else(bad)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

fn transfer(data: &Map<String, Value>) -> Result<Transfer, String> {
    Ok(Transfer {
        from: address(data, "from")?,
        to: address(data, "to")?,
        amount: amount(data)?,
        token_id: token_id(data)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_id_is_kept_exactly() {
        let r = parse(r#"{"type":"heartbeat_response","id":7}"#);
        assert_eq!(r.map(|r| r.id), Ok(Some(Value::from(7))));
    }

    #[test]
    fn unknown_type_keeps_the_id() {
        let e = parse(r#"{"type":"subscrbe","id":"a"}"#).err();
        assert_eq!(e.map(|e| e.id), Some(Some(Value::from("a"))));
    }

    #[test]
    fn command_fields_are_checked_in_shape() {
        let t = r#"{"type":"execute_transaction","id":"2","data":{"from":"0xAB","to":"0xcd","amount":"1000","token_id":"0x1"}}"#;
        let body = parse(t).map(|r| r.body);
        assert_eq!(
            body,
            Ok(RequestBody::Command(Command::ExecuteTransaction(
                Transfer {
                    from: "0xab".into(),
                    to: "0xcd".into(),
                    amount: 1000,
                    token_id: "0x1".into(),
                }
            )))
        );
        for bad in [
            r#"{"from":"ab","to":"0xcd","amount":"1","token_id":"t"}"#,
            r#"{"from":"0xab","to":"0xzz","amount":"1","token_id":"t"}"#,
            r#"{"from":"0xab","to":"0xcd","amount":"1.5","token_id":"t"}"#,
            r#"{"from":"0xab","to":"0xcd","amount":"-1","token_id":"t"}"#,
            r#"{"from":"0xab","to":"0xcd","amount":1,"token_id":"t"}"#,
            r#"{"from":"0xab","to":"0xcd","amount":"1"}"#,
        ] {
            let frame = format!(r#"{{"type":"execute_transaction","data":{bad}}}"#);
            assert!(parse(&frame).is_err(), "{bad} passed");
        }
    }

    #[test]
    fn non_object_is_invalid() {
        assert!(parse("[1,2]").is_err());
        assert!(parse("nope").is_err());
        assert!(parse(r#"{"id":"x"}"#).is_err());
    }
}
