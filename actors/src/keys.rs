//! API keys as the actors see them: a name for logs and limits, and the roles it grants.
//!
//! The secret never reaches the actors; the HTTP layer resolves it to an [`ApiKey`]. A
//! signed token resolves to one too, named after its `sub` ([`crate::token`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::token::TokenInfo;

/// What a key may do. A key with any role may connect (PROTOCOL.md 10.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May send `subscribe`.
    Subscribe,
    /// May publish events (HTTP or WebSocket).
    Publish,
    /// May send commands (`execute_transaction`, `get_token_info`).
    Command,
    /// May open the operator dashboard (`/dashboard`). Grants nothing else.
    Admin,
}

impl Role {
    /// The role's name as written in config and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Subscribe => "subscribe",
            Role::Publish => "publish",
            Role::Command => "command",
            Role::Admin => "admin",
        }
    }
}

/// An admitted key: its configured name (safe to log) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The configured name; logs and metrics use it, never the secret.
    pub name: String,
    /// Roles granted.
    pub roles: Vec<Role>,
    /// This key's own cap on concurrent connections, overriding the default.
    pub max_connections: Option<u32>,
    /// A keyed hash of the secret (never the secret): after a reload that rotated the
    /// key's secret, it tells the connections made with the old secret from the new ones.
    pub secret_id: u64,
    /// For a signed token (PROTOCOL.md section 12): its `sub`, issuer, expiry and grant.
    /// `None` for a configured key.
    pub token: Option<Arc<TokenInfo>>,
}

impl ApiKey {
    /// Whether the key grants `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
