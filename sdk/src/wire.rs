//! What travels on the wire: requests rendered as JSON text, frames of both dialects read
//! into one [`Incoming`], and event ids ordered as positions in the broker's sequence.

use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorCode};

/// A frame from the broker, read into what the client acts on.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An event of a subscription: it carries `channel` at top level.
    Event(RawEvent),
    /// A heartbeat; its `data.timestamp` is echoed in the `heartbeat_response`.
    Heartbeat(Value),
    /// The answer to a request (`id` as sent), success or error.
    Reply {
        id: Option<String>,
        outcome: Result<Value, (RawCode, String)>,
    },
}

/// An error code as the dialect wrote it.
#[derive(Debug, Clone)]
pub(crate) enum RawCode {
    Number(u64),
    Name(String),
}

impl RawCode {
    /// The code as a typed kind; `command` picks the kind of the node API's 4003.
    pub(crate) fn kind(&self, command: bool) -> ErrorCode {
        match self {
            Self::Number(n) => ErrorCode::from_number(*n, command),
            Self::Name(name) => ErrorCode::from_name(name),
        }
    }
}

/// An event frame as received: its id, channel, event type and data.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// The event's id in the broker's sequence (`"123"`, or `"B.E"` for a release by
    /// confirmations).
    pub id: String,
    /// The channel it came on.
    pub channel: String,
    /// The event `type` (`new_block`, `tx_confirmed`, `state_update`, `update`, or a type
    /// the publisher named).
    pub kind: String,
    /// The event's `data`, as published.
    pub data: Value,
}

/// Reads one text frame of either dialect.
pub(crate) fn parse(text: &str) -> Result<Incoming, Error> {
    let mut frame: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => return Err(Error::Decode(format!("not a JSON object: {}", clip(text)))),
    };
    let kind = match frame.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(Error::Decode(format!("no type: {}", clip(text)))),
    };
    let id = match frame.remove("id") {
        Some(Value::String(id)) => Some(id),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let data = frame.remove("data").unwrap_or(Value::Null);
    if let Some(Value::String(channel)) = frame.remove("channel") {
        let id = id.ok_or_else(|| Error::Decode(format!("event without id: {}", clip(text))))?;
        return Ok(Incoming::Event(RawEvent {
            id,
            channel,
            kind,
            data,
        }));
    }
    match kind.as_str() {
        "heartbeat" => Ok(Incoming::Heartbeat(
            data.get("timestamp").cloned().unwrap_or(Value::Null),
        )),
        "error" => {
            // Node API: `error: {code: 4002, message}`; v1: `data: {code: "invalid_request", message}`.
            let body = match frame.remove("error") {
                Some(error @ Value::Object(_)) => error,
                _ => data,
            };
            let code = match body.get("code") {
                Some(Value::Number(n)) => RawCode::Number(n.as_u64().unwrap_or(0)),
                Some(Value::String(s)) => RawCode::Name(s.clone()),
                _ => RawCode::Name("unknown".into()),
            };
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Ok(Incoming::Reply {
                id,
                outcome: Err((code, message)),
            })
        }
        _ => Ok(Incoming::Reply {
            id,
            outcome: Ok(data),
        }),
    }
}

/// A request frame: `{"type", "id", "data"}`.
pub(crate) fn request(kind: &str, id: &str, data: Value) -> String {
    json!({"type": kind, "id": id, "data": data}).to_string()
}

/// The answer to a heartbeat, echoing its timestamp.
pub(crate) fn heartbeat_response(timestamp: Value) -> String {
    json!({"type": "heartbeat_response", "data": {"timestamp": timestamp}}).to_string()
}

/// The place of an event id in the broker's sequence: `X` is (X, 0), a release `B.E` is
/// (B, E) (protocol section 5).
pub(crate) fn position(id: &str) -> Option<(u64, u64)> {
    match id.split_once('.') {
        Some((block, event)) => Some((block.parse().ok()?, event.parse().ok()?)),
        None => Some((id.parse().ok()?, 0)),
    }
}

/// The start of a frame, for error messages.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_releases_after_their_block() {
        assert_eq!(position("17"), Some((17, 0)));
        assert_eq!(position("20.17"), Some((20, 17)));
        assert!(position("20.17") > position("20"));
        assert!(position("20.17") < position("21"));
        assert_eq!(position("x"), None);
        assert_eq!(position("1.2.3"), None);
    }

    #[test]
    fn reads_errors_of_both_dialects() {
        let node = r#"{"type":"error","id":"7","data":null,"error":{"code":4003,"message":"unknown channel"}}"#;
        let v1 = r#"{"id":"7","type":"error","data":{"code":"forbidden","message":"no"}}"#;
        for (text, kind) in [
            (node, ErrorCode::SubscriptionError),
            (v1, ErrorCode::Forbidden),
        ] {
            match parse(text) {
                Ok(Incoming::Reply {
                    id,
                    outcome: Err((code, _)),
                }) => {
                    assert_eq!(id.as_deref(), Some("7"));
                    assert_eq!(code.kind(false), kind);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_event_is_a_frame_with_a_channel() {
        let text =
            r#"{"type":"new_block","id":"5","data":{"number":1},"error":null,"channel":"blocks"}"#;
        match parse(text) {
            Ok(Incoming::Event(e)) => {
                assert_eq!((e.id.as_str(), e.kind.as_str()), ("5", "new_block"))
            }
            other => panic!("{other:?}"),
        }
    }
}
