//! The command backend: what answers `execute_transaction`, `get_token_info` and
//! `get_balance` (PROTOCOL.md sections 4 and 8). The standalone broker plugs in its
//! built-in ledger; an embedding application implements [`Backend`] itself.
//!
//! Requests reach a backend already validated in shape (addresses are `0x` hex, amounts
//! non-negative integers); a backend refuses only what its state refuses.

use std::future::Future;
use std::pin::Pin;

/// What a backend call returns: a boxed future, so the trait stays object-safe.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = Result<T, CommandError>> + Send>>;

/// A transfer to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Sender address, `0x` hex, lowercase.
    pub from: String,
    /// Recipient address, `0x` hex, lowercase.
    pub to: String,
    /// Amount in the token's smallest unit.
    pub amount: u128,
    /// The token, as the client wrote it.
    pub token_id: String,
}

/// A transfer the backend accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAccepted {
    /// The transaction id (the built-in ledger uses the `tx_hash` of its `tx_confirmed`).
    pub transaction_id: String,
    /// Its status now; `pending` until it is in a block.
    pub status: String,
}

/// A token's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's id.
    pub token_id: String,
    /// Its name.
    pub name: String,
    /// Its symbol.
    pub symbol: String,
    /// Total supply, in the smallest unit.
    pub total_supply: u128,
}

/// One address's balance of one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The address, lowercase.
    pub address: String,
    /// The token.
    pub token_id: String,
    /// The balance, in the smallest unit.
    pub balance: u128,
}

/// Why a backend refused a well-formed command: answered as `command_failed` (4003).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No such token.
    UnknownToken(String),
    /// The sender holds less than the amount.
    InsufficientBalance {
        /// What the sender holds.
        available: u128,
        /// What it tried to send.
        requested: u128,
    },
    /// Refused for another reason the client can act on (a full mempool, say).
    Rejected(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::UnknownToken(t) => {
                let shown: String = t.chars().take(80).collect();
                write!(f, "unknown token \"{shown}\"")
            }
            CommandError::InsufficientBalance {
                available,
                requested,
            } => write!(
                f,
                "insufficient balance: the sender holds {available}, the transfer needs {requested}"
            ),
            CommandError::Rejected(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Answers commands. Implementations must be cheap to call from many connections at once.
pub trait Backend: Send + Sync + 'static {
    /// Accepts a transfer (status `pending`) or refuses it.
    fn execute_transaction(&self, transfer: Transfer) -> BackendFuture<TransferAccepted>;
    /// Describes a token.
    fn get_token_info(&self, token_id: String) -> BackendFuture<TokenInfo>;
    /// One address's balance of one token.
    fn get_balance(&self, address: String, token_id: String) -> BackendFuture<Balance>;
}

/// The backend of a broker that has none: every command fails, saying so.
pub struct NoBackend;

fn none<T>() -> BackendFuture<T> {
    Box::pin(async {
        Err(CommandError::Rejected(
            "this broker has no command backend configured".into(),
        ))
    })
}

impl Backend for NoBackend {
    fn execute_transaction(&self, _: Transfer) -> BackendFuture<TransferAccepted> {
        none()
    }

    fn get_token_info(&self, _: String) -> BackendFuture<TokenInfo> {
        none()
    }

    fn get_balance(&self, _: String, _: String) -> BackendFuture<Balance> {
        none()
    }
}
