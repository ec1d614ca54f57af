//! Signed tokens as the actors see them (PROTOCOL.md section 12): whom a token names, until
//! when it holds, what it grants, why one is refused, and the seam through which a
//! connection checks the new token of a `refresh`.
//!
//! The verification itself (issuers, keys, algorithms, claims) lives in the broker crate
//! (`src/tokens.rs`), which implements [`TokenVerifier`]; it turns a valid token into an
//! [`ApiKey`] whose name is [`identity`] of the token's `sub` and whose
//! [`ApiKey::token`] is a [`TokenInfo`].

use std::sync::Arc;

use crate::grant::Grant;
use crate::keys::ApiKey;

/// What the names of token identities start with. Connection caps, live and parked
/// subscriptions are bound to a key name; a token's is this prefix and its `sub`, and no
/// configured key may have a name that starts with it, so the two never collide.
pub const IDENTITY_PREFIX: &str = "jwt:";

/// The key name a token of `sub` counts and owns subscriptions under.
pub fn identity(sub: &str) -> String {
    format!("{IDENTITY_PREFIX}{sub}")
}

/// A valid token, as a connection made with it keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The `sub` claim: whom the token names.
    pub sub: String,
    /// The configured name of the issuer whose key verified it (logs, never the token).
    pub issuer: String,
    /// A keyed hash of the issuer's configuration: a reload that removes the issuer or
    /// changes its key closes the connections it verified.
    pub issuer_id: u64,
    /// The `exp` claim, in milliseconds since the UNIX epoch.
    pub expires_at_ms: u64,
    /// When the broker closes a connection whose token was not refreshed: `exp` plus the
    /// issuer's leeway, in milliseconds since the UNIX epoch.
    pub close_at_ms: u64,
    /// The `channels` claim; `None`: every channel the roles allow.
    pub grant: Option<Grant>,
}

/// Why a token was refused. Each is `invalid_token` (4000, HTTP 401) to the client; the
/// reason goes to the log and to `rustorium_token_refusals_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenRefusal {
    /// Not three base64url parts with a JSON header, or an unreadable claim set.
    Malformed,
    /// No configured issuer takes it (`kid` names none; none has the header's algorithm).
    UnknownIssuer,
    /// The header's algorithm is not the one the issuer is configured for (`none` included).
    Algorithm,
    /// The signature does not verify with the issuer's key.
    Signature,
    /// `exp` is missing, or past (plus the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is missing or not the one the issuer requires.
    Issuer,
    /// `aud` is missing or not the one the issuer requires.
    Audience,
    /// `sub`, `roles` or `channels` is missing or of the wrong shape.
    Claims,
    /// A `refresh` with a valid token of another `sub` (`forbidden`, not 4000).
    OtherSub,
}

impl TokenRefusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [TokenRefusal; 10] = [
        TokenRefusal::Malformed,
        TokenRefusal::UnknownIssuer,
        TokenRefusal::Algorithm,
        TokenRefusal::Signature,
        TokenRefusal::Expired,
        TokenRefusal::NotYetValid,
        TokenRefusal::Issuer,
        TokenRefusal::Audience,
        TokenRefusal::Claims,
        TokenRefusal::OtherSub,
    ];

    /// The `reason` label of `rustorium_token_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "malformed",
            TokenRefusal::UnknownIssuer => "unknown_issuer",
            TokenRefusal::Algorithm => "algorithm",
            TokenRefusal::Signature => "signature",
            TokenRefusal::Expired => "expired",
            TokenRefusal::NotYetValid => "not_yet_valid",
            TokenRefusal::Issuer => "issuer",
            TokenRefusal::Audience => "audience",
            TokenRefusal::Claims => "claims",
            TokenRefusal::OtherSub => "other_sub",
        }
    }

    /// Words for the client's error message (never the token).
    pub fn message(self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "Invalid token: not a signed token (JWT)",
            TokenRefusal::UnknownIssuer => "Invalid token: no configured issuer takes it",
            TokenRefusal::Algorithm => {
                "Invalid token: its algorithm is not the one its issuer is configured for"
            }
            TokenRefusal::Signature => "Invalid token: bad signature",
            TokenRefusal::Expired => "Invalid token: expired or without exp",
            TokenRefusal::NotYetValid => "Invalid token: not valid yet (nbf)",
            TokenRefusal::Issuer => "Invalid token: wrong or missing iss",
            TokenRefusal::Audience => "Invalid token: wrong or missing aud",
            TokenRefusal::Claims => "Invalid token: sub, roles or channels missing or malformed",
            TokenRefusal::OtherSub => "forbidden: the new token names another sub",
        }
    }
}

/// Checks a presented token: implemented by the broker's issuers (`src/tokens.rs`), handed
/// to each connection made with a token so that `refresh` can check the new one.
pub trait TokenVerifier: Send + Sync {
    /// The key a valid token stands for (name [`identity`] of its `sub`, roles from its
    /// claims, [`ApiKey::token`] set), or why it is refused (already logged and counted).
    fn verify(&self, token: &str) -> Result<Arc<ApiKey>, TokenRefusal>;
}
