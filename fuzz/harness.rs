//! What each fuzz target does with its input, shared by the targets in
//! `fuzz/fuzz_targets/` (cargo fuzz, libFuzzer) and by `tests/fuzz_corpus.rs`, which runs
//! every file of `fuzz/corpus/` and `fuzz/regressions/` through the same code on stable
//! Rust. Each function takes any bytes and must neither panic nor loop; what it asserts
//! besides is said in its comment.

use rustorium_actors::channels::{event_type, validate_event, ChannelKind};
use rustorium_actors::filter::Filter;
use rustorium_actors::position::Position;
use rustorium_actors::protocol::request;
use rustorium_actors::publisher::parse_events;
use serde_json::{Map, Value};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// The targets, by name (the files under `fuzz/fuzz_targets/` and the corpus folders).
pub const TARGETS: [(&str, Target); 6] = [
    ("request", request),
    ("filter", filter),
    ("publish_body", publish_body),
    ("config", config),
    ("last_message_id", last_message_id),
    ("ws_frames", ws_frames),
];

/// One client frame of either dialect, through the request parser. A refusal carries a
/// message a client can read (never empty).
pub fn request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = request::parse(text) {
        assert!(!e.message.is_empty(), "an error without a message");
    }
}

/// A subscribe's `data` object, through the filter parser of every channel kind; a filter
/// that parses is then matched against the same object as event data, and the object is
/// validated as an event of each channel.
pub fn filter(data: &[u8]) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let event = Value::Object(map.clone());
    for kind in ChannelKind::KNOWN.into_iter().chain([ChannelKind::Plain]) {
        if let Ok(f) = Filter::parse(kind, kind.name(), &map, 256) {
            let _ = f.matches(&event);
            let _ = f.matches(&Value::Null);
        }
        let _ = validate_event(kind, &event);
        let given = map.get("type").and_then(Value::as_str).map(str::to_owned);
        let _ = event_type(kind, given);
    }
    // Also as a nested filter of a subscription.
    let mut nested = Map::new();
    nested.insert("filter".into(), event);
    for kind in ChannelKind::KNOWN {
        let _ = Filter::parse(kind, kind.name(), &nested, 256);
    }
}

/// A publish body (HTTP, or the `data` of a WebSocket `publish`): the batch shape, then
/// each event's channel, type and data as the publisher validates them.
pub fn publish_body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(events) = parse_events(body, 1000) else {
        return;
    };
    assert!(!events.is_empty() && events.len() <= 1000);
    for e in events {
        let kind = ChannelKind::known(&e.channel).unwrap_or(ChannelKind::Plain);
        let _ = event_type(kind, e.kind.clone());
        let _ = validate_event(kind, &e.data);
    }
}

/// A configuration file, parsed and validated. `[server.tls]` is dropped before
/// validation, which would read the files it names (the fuzzer must not read the disk).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = rustorium_broker::Config::from_toml(text) else {
        return;
    };
    config.server.tls = None;
    if let Ok(valid) = config.finish() {
        // What check-config prints must print.
        assert!(
            valid.masked_toml().is_ok(),
            "a valid config that cannot print"
        );
    }
}

/// A `last_message_id`: an id that parses prints back as the same position.
pub fn last_message_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(p) = Position::parse(text) {
        let shown = p.to_string();
        assert_eq!(
            Position::parse(&shown),
            Some(p),
            "{text:?} printed as {shown:?}"
        );
    }
}

/// The largest message of the `ws_frames` target (the broker's is 64 KiB; smaller here so
/// the fuzzer reaches the limit).
const WS_MAX: usize = 4096;

/// Client bytes of a WebSocket connection after the upgrade, through the broker's frame
/// path: read in pieces whose size the first byte chooses; handed on one frame at a time
/// (`OneFrameAtATime`, which refuses a frame over the limit at its header); decoded by actix-http's codec with the frame limit, as
/// actix-web-actors' stream does (text checked as UTF-8); taken by the connection's
/// `FrameInput` (control budget, fragments, UTF-8 of reassembled text); each whole text
/// message then through the request parser. A text message handed on is within the limit,
/// nothing is taken after the connection ended, and the loop ends.
pub fn ws_frames(data: &[u8]) {
    use actix_http::ws::{Codec, Frame, Message, ProtocolError};
    use actix_web::error::PayloadError;
    use actix_web::web::{Bytes, BytesMut};
    use futures_util::Stream;
    use rustorium_actors::connection::frames::{FrameInput, Inbound};
    use rustorium_actors::read_gate::ReadGate;
    use rustorium_broker::fuzzing::OneFrameAtATime;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Instant;
    use tokio_util::codec::Decoder;

    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut % 64) + 1;
    let reads: Vec<Result<Bytes, PayloadError>> = bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let gate = Arc::new(ReadGate::default());
    let mut input = OneFrameAtATime::new(futures_util::stream::iter(reads), WS_MAX, gate.clone());
    let mut codec = Codec::new().max_size(WS_MAX);
    let mut buf = BytesMut::new();
    let now = Instant::now();
    let mut conn = FrameInput::new(WS_MAX, 8, 4, now);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut input_done = false;
    // Bounded: a round that neither reads nor decodes (the adapter's one pause per frame)
    // is followed by one that does, so twice the input's length is enough.
    for _ in 0..bytes.len().saturating_mul(2).saturating_add(8) {
        let mut read_any = false;
        if !input_done {
            match Pin::new(&mut input).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    buf.extend_from_slice(&chunk);
                    read_any = true;
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => input_done = true,
                Poll::Pending => {}
            }
        }
        let msg = match codec.decode(&mut buf) {
            Ok(Some(frame)) => Ok(match frame {
                Frame::Text(b) => match bytestring::ByteString::try_from(b) {
                    Ok(text) => Message::Text(text),
                    Err(e) => {
                        let io = std::io::Error::other(format!("{e}"));
                        match conn.take(Err(ProtocolError::Io(io)), now) {
                            Inbound::End(_) => return,
                            Inbound::Gone => panic!("bad UTF-8 taken for a failed socket"),
                            other => panic!("bad UTF-8 did not end the connection: {other:?}"),
                        }
                    }
                },
                Frame::Binary(b) => Message::Binary(b),
                Frame::Continuation(item) => Message::Continuation(item),
                Frame::Ping(b) => Message::Ping(b),
                Frame::Pong(b) => Message::Pong(b),
                Frame::Close(reason) => Message::Close(reason),
            }),
            Ok(None) if input_done && !read_any => return,
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        // As the connection does: a frame over the limit is refused at its header, and
        // what the input hands on in its place stands for the refusal.
        let msg = match msg {
            Ok(Message::Pong(p)) if p.is_empty() && gate.take_oversized() => {
                Err(ProtocolError::Overflow)
            }
            other => other,
        };
        match conn.take(msg, now) {
            Inbound::Text(text) => {
                assert!(text.len() <= WS_MAX, "a message past the limit");
                let _ = request::parse(&text);
            }
            Inbound::End(_) | Inbound::Close(_) | Inbound::Gone => return,
            Inbound::Binary | Inbound::Pong(_) | Inbound::Nothing | Inbound::Orphan => {}
        }
    }
}
