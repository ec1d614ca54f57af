//! The wire protocol: one core, two renderings.
//!
//! A dialect is a parser and a renderer, nothing more: [`request`] turns a client frame
//! into a [`request::Request`] the same way for both endpoints, and [`render`] writes
//! replies, errors, heartbeats and events in the shape of the dialect's document
//! (PROTOCOL.md sections 2 and 3).

pub mod render;
pub mod request;

/// Which API document a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The node API on `/ws`: four-key envelope, numeric error codes.
    Ws,
    /// The v1 API on `/v1`: `id` omitted when none, string error codes inside `data`.
    V1,
}

impl Dialect {
    /// Number of dialects, for per-dialect caches indexed by [`Dialect::index`].
    pub const COUNT: usize = 2;

    /// Position of this dialect in per-dialect arrays.
    pub fn index(self) -> usize {
        match self {
            Dialect::Ws => 0,
            Dialect::V1 => 1,
        }
    }
}

/// The kinds of error of PROTOCOL.md section 3; each has a ws code and a v1 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Missing or unknown key (4000, `invalid_token`).
    InvalidToken,
    /// Too many connections or messages (4001, `rate_limited`).
    RateLimited,
    /// Not JSON, not an object, missing or unknown `type`, wrong field types, binary
    /// frame (4002, `invalid_request`).
    InvalidRequest,
    /// Unknown channel, bad filter, unknown subscription, too many subscriptions
    /// (4003, `subscription_error`).
    SubscriptionError,
    /// A well-formed command the backend refused (4003, `command_failed`).
    CommandFailed,
    /// The key lacks the role the request needs (4006, `forbidden`).
    Forbidden,
    /// The broker cannot take the request now: shutting down, or its engine unreachable
    /// (4007, `unavailable`; PROTOCOL.md item 34). Nothing was done; retry.
    Unavailable,
}

impl ErrorKind {
    /// The numeric `error.code` of the ws dialect.
    pub fn ws_code(self) -> u16 {
        match self {
            ErrorKind::InvalidToken => 4000,
            ErrorKind::RateLimited => 4001,
            ErrorKind::InvalidRequest => 4002,
            ErrorKind::SubscriptionError | ErrorKind::CommandFailed => 4003,
            ErrorKind::Forbidden => 4006,
            ErrorKind::Unavailable => 4007,
        }
    }

    /// The string `data.code` of the v1 dialect (also used by the HTTP API).
    pub fn v1_code(self) -> &'static str {
        match self {
            ErrorKind::InvalidToken => "invalid_token",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::SubscriptionError => "subscription_error",
            ErrorKind::CommandFailed => "command_failed",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}
