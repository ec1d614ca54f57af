//! Every reason the broker ends a connection: its close code, the reason text the client
//! reads, the metric it counts under, and whether the client should come back
//! (PROTOCOL.md sections 1, 3 and 6). Subscriptions survive every one of them for the
//! resume window; only the client's own close 1000 drops them.

use crate::metrics::Rejection;

/// Why the broker closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// Missing, empty or unknown key at connect (4000). Do not retry with the same key.
    InvalidToken,
    /// The connection's key was removed (or its secret changed) by a configuration
    /// reload (4000). Do not retry with the same key.
    KeyRevoked,
    /// A signed token refused at connect (4000), for this reason (PROTOCOL.md section 12).
    /// Do not retry with the same token.
    TokenRefused(crate::token::TokenRefusal),
    /// The connection's token reached its `exp` plus the leeway without a `refresh`
    /// (4000, reason `token expired`). Reconnect with a new token of the same `sub` and
    /// resume: the subscriptions are kept for the resume window.
    TokenExpired,
    /// A configuration reload removed the issuer of the connection's token, or changed its
    /// key (4000). Reconnect with a token of a configured issuer.
    IssuerRemoved,
    /// The key already has its maximum connections (4001).
    TooManyConnections {
        /// The key's cap.
        max: u32,
    },
    /// The client kept sending past its message cap (4001).
    Flooding,
    /// A frame or message larger than the limit (1009).
    TooBig {
        /// The limit, in bytes.
        max: usize,
    },
    /// A frame that breaks the WebSocket protocol (1002).
    ProtocolError,
    /// A text message that is not UTF-8 (1007).
    InvalidUtf8,
    /// The client kept sending pings or pongs past its cap (4001).
    ControlFlood {
        /// Control frames per second allowed.
        max: u32,
    },
    /// One message arrived in more fragments than allowed (4001).
    TooManyFragments {
        /// Fragments per message allowed.
        max: u32,
    },
    /// No frame from the client for the heartbeat timeout (4004). Reconnect and resume.
    HeartbeatTimeout {
        /// The timeout, in milliseconds.
        ms: u128,
    },
    /// The client did not read fast enough (4005). Reconnect and resume.
    SlowConsumer,
    /// The broker is shutting down (1001). Reconnect (elsewhere) and resume.
    Shutdown,
    /// This node cannot keep the connection's stream gap-free (it lost part of its engine
    /// stream), or cannot reach its engine at connect (1013). Reconnect, elsewhere if you
    /// can, and resume: the engine's history has everything.
    TryAgainLater,
}

impl Disconnect {
    /// The close code.
    pub fn code(&self) -> u16 {
        match self {
            Disconnect::InvalidToken
            | Disconnect::KeyRevoked
            | Disconnect::TokenRefused(_)
            | Disconnect::TokenExpired
            | Disconnect::IssuerRemoved => 4000,
            Disconnect::TooManyConnections { .. }
            | Disconnect::Flooding
            | Disconnect::ControlFlood { .. }
            | Disconnect::TooManyFragments { .. } => 4001,
            Disconnect::InvalidUtf8 => 1007,
            Disconnect::TooBig { .. } => 1009,
            Disconnect::ProtocolError => 1002,
            Disconnect::HeartbeatTimeout { .. } => 4004,
            Disconnect::SlowConsumer => 4005,
            Disconnect::Shutdown => 1001,
            Disconnect::TryAgainLater => 1013,
        }
    }

    /// The close reason, in words a client author can act on.
    pub fn reason(&self) -> String {
        match self {
            Disconnect::InvalidToken => "Invalid token: missing or unknown API key".into(),
            Disconnect::KeyRevoked => "Invalid token: this API key was revoked".into(),
            Disconnect::TokenRefused(why) => why.message().into(),
            Disconnect::TokenExpired => "token expired".into(),
            Disconnect::IssuerRemoved => "Invalid token: its issuer was removed".into(),
            Disconnect::TooManyConnections { max } => {
                format!("Rate limited: this key already has its maximum of {max} connections")
            }
            Disconnect::Flooding => "rate limited: too many messages over the cap".into(),
            Disconnect::TooBig { max } => format!("message larger than {max} bytes"),
            Disconnect::ProtocolError => "WebSocket protocol error".into(),
            Disconnect::InvalidUtf8 => "text message is not valid UTF-8".into(),
            Disconnect::ControlFlood { max } => {
                format!("rate limited: more than {max} pings and pongs per second")
            }
            Disconnect::TooManyFragments { max } => {
                format!("rate limited: a message in more than {max} fragments")
            }
            Disconnect::HeartbeatTimeout { ms } => {
                format!("heartbeat timeout: no frame from the client for {ms} ms")
            }
            Disconnect::SlowConsumer => {
                "slow consumer: events arrived faster than this client read them; reconnect and resume".into()
            }
            Disconnect::Shutdown => "server shutting down".into(),
            Disconnect::TryAgainLater => {
                "try again later: this node lost its engine stream; reconnect and resume".into()
            }
        }
    }

    /// The refusal it counts as in `/metrics` (shutdown, revocation and 1013 count none here).
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Disconnect::InvalidToken | Disconnect::TokenRefused(_) => Some(Rejection::InvalidToken),
            Disconnect::TooManyConnections { .. } => Some(Rejection::ConnectionLimit),
            Disconnect::Flooding => Some(Rejection::Flooding),
            Disconnect::TooBig { .. } => Some(Rejection::FrameTooLarge),
            Disconnect::HeartbeatTimeout { .. } => Some(Rejection::HeartbeatTimeout),
            Disconnect::SlowConsumer => Some(Rejection::SlowConsumer),
            Disconnect::ControlFlood { .. } => Some(Rejection::ControlFlood),
            Disconnect::TooManyFragments { .. } => Some(Rejection::FragmentFlood),
            Disconnect::ProtocolError | Disconnect::InvalidUtf8 => Some(Rejection::ProtocolError),
            Disconnect::KeyRevoked
            | Disconnect::TokenExpired
            | Disconnect::IssuerRemoved
            | Disconnect::Shutdown
            | Disconnect::TryAgainLater => None,
        }
    }
}
