//! The built-in in-memory ledger, the standalone broker's default command backend:
//! tokens, balances, transfers that answer `pending` and are included in the next block.
//! Each block publishes, in this order, `new_block`, `tx_confirmed` per transaction,
//! `state_update` per changed balance, `transaction_updates` per transaction and
//! `token_updates` per token moved. The ledger is a publisher like any other.

pub mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rustorium_actors::backend::{
    Backend, BackendFuture, Balance, CommandError, TokenInfo, Transfer, TransferAccepted,
};
use rustorium_actors::heartbeat::rfc3339;
use rustorium_actors::{NewEvent, Publisher};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use config::LedgerConfig;

/// A token's id as stored: hex ids lowercased, so clients may write any case.
fn token_key(token_id: &str) -> String {
    if token_id.starts_with("0x") || token_id.starts_with("0X") {
        token_id.to_ascii_lowercase()
    } else {
        token_id.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn now_rfc3339() -> String {
    rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

struct Token {
    id: String,
    name: String,
    symbol: String,
    total_supply: u128,
    price: String,
}

struct Pending {
    id: String,
    transfer: Transfer,
    token: String,
}

struct State {
    /// Tokens by [`token_key`].
    tokens: HashMap<String, Token>,
    /// Balances by (token key, lowercase address); bounded by `max_accounts`.
    balances: HashMap<(String, String), u128>,
    /// Transfers waiting for a block; bounded by `max_pending_transactions`.
    pending: VecDeque<Pending>,
    height: u64,
    head_hash: String,
    nonce: u64,
}

/// The ledger. Cheap to share: an `Arc<Ledger>` is the backend.
pub struct Ledger {
    state: Mutex<State>,
    publisher: Publisher,
    config: LedgerConfig,
    max_batch: usize,
}

/// What a block did to one transaction.
enum Outcome {
    Confirmed,
    Failed(String),
}

impl Ledger {
    /// A ledger at its genesis (validated by the config), publishing through `publisher`
    /// in batches of at most `max_batch` events.
    pub fn new(config: &LedgerConfig, publisher: Publisher, max_batch: usize) -> Arc<Ledger> {
        let mut tokens = HashMap::new();
        let mut balances = HashMap::new();
        for t in &config.tokens {
            let key = token_key(&t.token_id);
            for (addr, amount) in &t.balances {
                let n = amount.parse().unwrap_or(0);
                balances.insert((key.clone(), addr.to_ascii_lowercase()), n);
            }
            tokens.insert(
                key,
                Token {
                    id: t.token_id.clone(),
                    name: t.name.clone(),
                    symbol: t.symbol.clone(),
                    total_supply: t.total_supply.parse().unwrap_or(0),
                    price: t.price.clone(),
                },
            );
        }
        Arc::new(Ledger {
            state: Mutex::new(State {
                tokens,
                balances,
                pending: VecDeque::new(),
                height: 0,
                head_hash: hex(&[0; 32]),
                nonce: 0,
            }),
            publisher,
            config: config.clone(),
            max_batch: max_batch.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Produces a block every `block_interval_ms`, forever. Call inside an actix System.
    pub fn spawn_blocks(self: &Arc<Self>) {
        let ledger = self.clone();
        let every = Duration::from_millis(self.config.block_interval_ms);
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                ledger.produce_block().await;
            }
        });
    }

    /// Includes pending transfers (up to the per-block maximum) in a new block and
    /// publishes its events. Returns the block number, or None when there was nothing to
    /// do and empty blocks are off.
    pub async fn produce_block(&self) -> Option<u64> {
        let (number, events) = self.build_block()?;
        for chunk in events.chunks(self.max_batch) {
            if let Err(e) = self.publisher.publish(chunk.to_vec()).await {
                log::warn!("ledger: block {number} not fully published: {e}");
                break;
            }
        }
        Some(number)
    }

    fn build_block(&self) -> Option<(u64, Vec<NewEvent>)> {
        let mut st = self.lock();
        if st.pending.is_empty() && !self.config.empty_blocks {
            return None;
        }
        let take = st.pending.len().min(self.config.max_block_transactions);
        let txs: Vec<Pending> = st.pending.drain(..take).collect();
        let number = st.height + 1;
        let timestamp = now_rfc3339();
        let mut changed: Vec<(String, String)> = Vec::new();
        let mut volumes: Vec<(String, u128)> = Vec::new();
        let mut outcomes = Vec::with_capacity(txs.len());
        for tx in &txs {
            let t = &tx.transfer;
            let from_key = (tx.token.clone(), t.from.clone());
            let to_key = (tx.token.clone(), t.to.clone());
            let held = st.balances.get(&from_key).copied().unwrap_or(0);
            let new_account = !st.balances.contains_key(&to_key);
            let outcome = if held < t.amount {
                Outcome::Failed(format!(
                    "insufficient balance: the sender holds {held}, the transfer needs {}",
                    t.amount
                ))
            } else if new_account && st.balances.len() >= self.config.max_accounts {
                Outcome::Failed("the ledger holds its maximum number of accounts".into())
            } else {
                st.balances.insert(from_key.clone(), held - t.amount);
                let to = st.balances.entry(to_key.clone()).or_insert(0);
                // Cannot overflow: every balance of a token sums to its total supply.
                *to = to.saturating_add(t.amount);
                for k in [from_key, to_key] {
                    if !changed.contains(&k) {
                        changed.push(k);
                    }
                }
                match volumes.iter_mut().find(|(k, _)| *k == tx.token) {
                    Some((_, v)) => *v = v.saturating_add(t.amount),
                    None => volumes.push((tx.token.clone(), t.amount)),
                }
                Outcome::Confirmed
            };
            outcomes.push(outcome);
        }
        let mut hasher = Sha256::new();
        hasher.update(st.head_hash.as_bytes());
        hasher.update(number.to_be_bytes());
        for tx in &txs {
            hasher.update(tx.id.as_bytes());
        }
        let hash = hex(&hasher.finalize());
        let parent_hash = std::mem::replace(&mut st.head_hash, hash.clone());
        st.height = number;

        let ev = |channel: &str, data: Value| NewEvent::new(channel, data);
        let mut events = Vec::with_capacity(1 + txs.len() * 2 + changed.len() + volumes.len());
        let ids: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
        events.push(ev(
            "blocks",
            json!({"number": number, "hash": hash, "parent_hash": parent_hash,
                   "timestamp": timestamp, "transactions": ids}),
        ));
        for (tx, outcome) in txs.iter().zip(&outcomes) {
            let status = match outcome {
                Outcome::Confirmed => "confirmed",
                Outcome::Failed(_) => "failed",
            };
            events.push(ev(
                "transactions",
                json!({"tx_hash": tx.id, "block_number": number, "timestamp": timestamp,
                       "confirmations": 1, "status": status}),
            ));
        }
        for (token, address) in &changed {
            let balance = st
                .balances
                .get(&(token.clone(), address.clone()))
                .copied()
                .unwrap_or(0);
            let value = base64::engine::general_purpose::STANDARD.encode(balance.to_string());
            events.push(ev(
                "state",
                json!({"key": format!("{token}:{address}"), "value": value,
                       "block_number": number, "timestamp": timestamp}),
            ));
        }
        for (tx, outcome) in txs.iter().zip(&outcomes) {
            let t = &tx.transfer;
            let mut data = json!({"transaction_id": tx.id, "status": "confirmed",
                "from": t.from, "to": t.to, "amount": t.amount.to_string(),
                "token_id": t.token_id, "block_number": number, "timestamp": timestamp});
            if let Outcome::Failed(reason) = outcome {
                data["status"] = "failed".into();
                data["reason"] = reason.clone().into();
            }
            events.push(ev("transaction_updates", data));
        }
        for (token, volume) in volumes {
            if let Some(t) = st.tokens.get(&token) {
                events.push(ev(
                    "token_updates",
                    json!({"token_id": t.id, "price": t.price, "volume": volume.to_string(),
                           "timestamp": timestamp}),
                ));
            }
        }
        Some((number, events))
    }

    /// Sets a token's current price (the price feed does); unknown tokens are ignored.
    pub fn set_price(&self, token_id: &str, price: String) {
        if let Some(t) = self.lock().tokens.get_mut(&token_key(token_id)) {
            t.price = price;
        }
    }

    /// The genesis tokens as (token id, symbol, price).
    pub fn tokens(&self) -> Vec<(String, String, String)> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .tokens
            .values()
            .map(|t| (t.id.clone(), t.symbol.clone(), t.price.clone()))
            .collect();
        v.sort();
        v
    }

    fn accept(&self, t: Transfer) -> Result<TransferAccepted, CommandError> {
        let mut st = self.lock();
        let token = token_key(&t.token_id);
        if !st.tokens.contains_key(&token) {
            return Err(CommandError::UnknownToken(t.token_id));
        }
        let held = st
            .balances
            .get(&(token.clone(), t.from.clone()))
            .copied()
            .unwrap_or(0);
        if held < t.amount {
            return Err(CommandError::InsufficientBalance {
                available: held,
                requested: t.amount,
            });
        }
        if st.pending.len() >= self.config.max_pending_transactions {
            return Err(CommandError::Rejected(format!(
                "the ledger already has {} transfers waiting for a block; retry after the next block",
                self.config.max_pending_transactions
            )));
        }
        st.nonce += 1;
        let mut hasher = Sha256::new();
        hasher.update(st.nonce.to_be_bytes());
        hasher.update(t.from.as_bytes());
        hasher.update(t.to.as_bytes());
        hasher.update(t.amount.to_be_bytes());
        hasher.update(token.as_bytes());
        let id = hex(&hasher.finalize());
        st.pending.push_back(Pending {
            id: id.clone(),
            transfer: t,
            token,
        });
        Ok(TransferAccepted {
            transaction_id: id,
            status: "pending".into(),
        })
    }
}

impl Backend for Ledger {
    fn execute_transaction(&self, transfer: Transfer) -> BackendFuture<TransferAccepted> {
        let result = self.accept(transfer);
        Box::pin(async move { result })
    }

    fn get_token_info(&self, token_id: String) -> BackendFuture<TokenInfo> {
        let result = match self.lock().tokens.get(&token_key(&token_id)) {
            Some(t) => Ok(TokenInfo {
                token_id: t.id.clone(),
                name: t.name.clone(),
                symbol: t.symbol.clone(),
                total_supply: t.total_supply,
            }),
            None => Err(CommandError::UnknownToken(token_id)),
        };
        Box::pin(async move { result })
    }

    fn get_balance(&self, address: String, token_id: String) -> BackendFuture<Balance> {
        let st = self.lock();
        let token = token_key(&token_id);
        let result = if st.tokens.contains_key(&token) {
            let balance = st
                .balances
                .get(&(token, address.clone()))
                .copied()
                .unwrap_or(0);
            Ok(Balance {
                address,
                token_id,
                balance,
            })
        } else {
            Err(CommandError::UnknownToken(token_id))
        };
        Box::pin(async move { result })
    }
}
