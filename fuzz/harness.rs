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
pub const TARGETS: [(&str, Target); 5] = [
    ("request", request),
    ("filter", filter),
    ("publish_body", publish_body),
    ("config", config),
    ("last_message_id", last_message_id),
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
