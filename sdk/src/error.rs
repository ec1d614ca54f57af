//! The SDK's errors: what went wrong, with the broker's own code when the broker said it.

use std::fmt;

/// The kinds of error the broker answers with (section 3 of the protocol), in both dialects:
/// the node API's numeric codes and the v1 API's string codes map to the same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// 4000 / `invalid_token`: the API key is missing or unknown. Not retried.
    InvalidToken,
    /// 4001 / `rate_limited`: too many connections for the key, or too many messages.
    RateLimited,
    /// 4002 / `invalid_request`: the broker could not read the request.
    InvalidRequest,
    /// 4003 / `subscription_error`: unknown channel, bad filter, unknown subscription id.
    SubscriptionError,
    /// 4003 / `command_failed`: a well-formed command the backend refused (unknown token,
    /// insufficient balance).
    CommandFailed,
    /// 4006 / `forbidden`: the key lacks the role the request needs.
    Forbidden,
    /// 4007 / `unavailable`: the broker cannot take the request now; nothing was done.
    Unavailable,
    /// A code this SDK does not know, as the broker sent it.
    Other(String),
}

impl ErrorCode {
    /// The kind of a node API (`/ws`) numeric code. 4003 is a subscription error or a
    /// failed command depending on the request, which `command` says.
    pub fn from_number(code: u64, command: bool) -> Self {
        match code {
            4000 => Self::InvalidToken,
            4001 => Self::RateLimited,
            4002 => Self::InvalidRequest,
            4003 if command => Self::CommandFailed,
            4003 => Self::SubscriptionError,
            4006 => Self::Forbidden,
            4007 => Self::Unavailable,
            other => Self::Other(other.to_string()),
        }
    }

    /// The kind of a v1 API (`/v1`) string code.
    pub fn from_name(code: &str) -> Self {
        match code {
            "invalid_token" => Self::InvalidToken,
            "rate_limited" => Self::RateLimited,
            "invalid_request" => Self::InvalidRequest,
            "subscription_error" => Self::SubscriptionError,
            "command_failed" => Self::CommandFailed,
            "forbidden" => Self::Forbidden,
            "unavailable" => Self::Unavailable,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The v1 name of the kind (`invalid_token`, ...).
    pub fn name(&self) -> &str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::RateLimited => "rate_limited",
            Self::InvalidRequest => "invalid_request",
            Self::SubscriptionError => "subscription_error",
            Self::CommandFailed => "command_failed",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Other(code) => code,
        }
    }
}

/// Events a stream could not deliver: the broker's history no longer reached back to the
/// last event received when the client resumed (or the broker restarted and has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The id of the last event the stream delivered before the gap (`None` when none had
    /// arrived yet).
    pub last_message_id: Option<String>,
    /// The channels whose subscriptions the broker no longer had; the client subscribed
    /// them again, so their events flow again from the moment of the new subscription.
    pub resubscribed: Vec<String>,
}

/// Everything that can go wrong, as one enum to branch on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The builder's settings cannot work (no endpoint, no key, a bad URL); says which.
    Config(String),
    /// The connection could not be opened or failed (refused, TLS, HTTP upgrade).
    Connect(String),
    /// The broker answered with an error.
    Broker {
        /// Its kind.
        code: ErrorCode,
        /// The broker's message, meant for a human.
        message: String,
    },
    /// The broker closed the connection with this WebSocket close code (4000 invalid key,
    /// 4001 rate limited, 4004 heartbeat timeout, 4005 slow consumer, 1001 shutting down,
    /// 1013 try again later, ...).
    Closed {
        /// The close code (1006 when the connection ended without a close frame).
        code: u16,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// No reply came within the request timeout. A command may still have been executed.
    Timeout,
    /// Events were lost across a reconnect; see [`Gap`]. The stream goes on after it.
    Gap(Gap),
    /// A frame or reply that does not have the documented shape; the stream goes on.
    Decode(String),
    /// The client was dropped or its connection task ended.
    Stopped,
    /// The token provider ([`crate::TokenProvider`]) failed, or gave a token that cannot
    /// be sent; says why.
    Token(String),
}

impl Error {
    /// The broker's error kind, when the broker said it (an error reply, or a close code of
    /// the admission table: 4000 invalid key, 4001 rate limited).
    ///
    /// ```
    /// use rustorium_sdk::{Error, ErrorCode};
    /// let refused = Error::Closed { code: 4000, reason: "Invalid token".into() };
    /// assert_eq!(refused.code(), Some(ErrorCode::InvalidToken));
    /// assert_eq!(Error::Timeout.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(code.clone()),
            Self::Closed { code: 4000, .. } => Some(ErrorCode::InvalidToken),
            Self::Closed { code: 4001, .. } => Some(ErrorCode::RateLimited),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(what) => write!(f, "invalid client settings: {what}"),
            Self::Connect(what) => write!(f, "cannot connect: {what}"),
            Self::Broker { code, message } => write!(f, "{}: {message}", code.name()),
            Self::Closed { code, reason } if reason.is_empty() => {
                write!(f, "connection closed with code {code}")
            }
            Self::Closed { code, reason } => {
                write!(f, "connection closed with code {code}: {reason}")
            }
            Self::Timeout => f.write_str("no reply within the request timeout"),
            Self::Gap(gap) => {
                write!(f, "events lost across a reconnect")?;
                if let Some(id) = &gap.last_message_id {
                    write!(f, " after id {id}")?;
                }
                if !gap.resubscribed.is_empty() {
                    write!(f, "; subscribed again to {}", gap.resubscribed.join(", "))?;
                }
                Ok(())
            }
            Self::Decode(what) => write!(f, "unexpected frame: {what}"),
            Self::Stopped => f.write_str("the client has stopped"),
            Self::Token(why) => write!(f, "no token: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// The SDK's result type.
pub type Result<T> = std::result::Result<T, Error>;
