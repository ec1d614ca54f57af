//! Client-to-server frames, both dialects: `{"type", "id"?, "data"?}` into a [`Request`].
//!
//! Only the envelope and the request's own field types are checked here; channels and
//! filters are checked against the catalogue in [`crate::filter`].

use serde_json::{Map, Value};

use super::ErrorKind;

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
}

impl RequestBody {
    /// Whether the per-connection message cap applies to this request.
    pub fn is_rate_limited(&self) -> bool {
        !matches!(self, RequestBody::HeartbeatResponse)
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
pub const KNOWN_TYPES: &str = "subscribe, unsubscribe, heartbeat_response";

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
    fn non_object_is_invalid() {
        assert!(parse("[1,2]").is_err());
        assert!(parse("nope").is_err());
        assert!(parse(r#"{"id":"x"}"#).is_err());
    }
}
