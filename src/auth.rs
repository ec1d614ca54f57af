//! API key lookup: where a request presents its key (PROTOCOL.md section 1 and 10.1), a
//! constant-time comparison against every configured secret, and, for a presented value
//! that is no configured key, the signed-token issuers ([`crate::tokens`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix_web::{http::header, web, HttpRequest};
use rustorium_actors::messages::KeyTable;
use rustorium_actors::protocol::Dialect;
use rustorium_actors::token::{TokenRefusal, TokenVerifier};
use rustorium_actors::ApiKey;

use crate::config::KeyConfig;
use crate::tokens::{looks_like_jwt, Issuers};

type Entries = Vec<(Vec<u8>, Arc<ApiKey>)>;

/// The configured keys; a reload replaces them all at once.
pub struct KeyStore {
    keys: RwLock<Arc<Entries>>,
}

/// What a reload changed in the keys, by name (never by secret).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyChanges {
    /// Keys that are new.
    pub added: Vec<String>,
    /// Keys that are gone: their connections close with 4000.
    pub removed: Vec<String>,
    /// Keys whose secret changed: connections made with the old secret close with 4000.
    pub rotated: Vec<String>,
    /// Keys whose roles or connection cap changed.
    pub changed: Vec<String>,
    /// Every key now, by name, with its roles, cap and secret id (what open connections
    /// compare themselves with).
    pub table: KeyTable,
}

/// A keyed hash of a secret: random per process, so it tells secrets apart without
/// revealing them.
fn secret_id(secret: &str) -> u64 {
    use std::hash::BuildHasher;
    static HASHER: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    HASHER.hash_one(secret)
}

fn entries(keys: &[KeyConfig]) -> Entries {
    keys.iter()
        .map(|k| {
            let key = ApiKey {
                name: k.name.clone(),
                roles: k.roles.clone(),
                max_connections: k.max_connections,
                secret_id: secret_id(&k.secret),
                token: None,
            };
            (k.secret.as_bytes().to_vec(), Arc::new(key))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KeyStore {
    /// A store of `keys`.
    pub fn new(keys: &[KeyConfig]) -> KeyStore {
        KeyStore {
            keys: RwLock::new(Arc::new(entries(keys))),
        }
    }

    fn current(&self) -> Arc<Entries> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces every key with `keys` (already validated) and says what changed. A key is
    /// kept when a key of the same name has the same secret.
    pub fn replace(&self, keys: &[KeyConfig]) -> KeyChanges {
        let old = self.current();
        let new = Arc::new(entries(keys));
        let mut changes = KeyChanges::default();
        for (secret, key) in new.iter() {
            changes.table.insert(key.name.clone(), key.clone());
            match old.iter().find(|(_, k)| k.name == key.name) {
                None => changes.added.push(key.name.clone()),
                Some((old_secret, old_key)) if constant_time_eq(old_secret, secret) => {
                    if **old_key != **key {
                        changes.changed.push(key.name.clone());
                    }
                }
                // Same name, new secret: the old secret is revoked.
                Some(_) => changes.rotated.push(key.name.clone()),
            }
        }
        for (_, key) in old.iter() {
            if !new.iter().any(|(_, k)| k.name == key.name) {
                changes.removed.push(key.name.clone());
            }
        }
        match self.keys.write() {
            Ok(mut keys) => *keys = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        changes
    }

    /// The key whose secret is `presented`. Every secret is compared, in constant time.
    pub fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let mut found = None;
        for (secret, key) in self.current().iter() {
            if constant_time_eq(secret, presented.as_bytes()) {
                found = Some(key.clone());
            }
        }
        found
    }
}

/// The key `presented` stands for: a configured key (its secret, compared in constant
/// time), else, when it has the shape of a JWT and issuers are configured, a valid signed
/// token. `Err(None)`: no such key; `Err(Some(why))`: a refused token (logged and counted).
pub fn resolve(
    keys: &KeyStore,
    issuers: &Issuers,
    presented: &str,
) -> Result<Arc<ApiKey>, Option<TokenRefusal>> {
    if let Some(key) = keys.lookup(presented) {
        return Ok(key);
    }
    if looks_like_jwt(presented) && issuers.any() {
        return issuers.verify(presented).map_err(Some);
    }
    Err(None)
}

/// The Bearer token of the `Authorization` header, if that header is present.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    let text = value.to_str().unwrap_or("");
    Some(
        text.strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .unwrap_or("")
            .trim()
            .to_owned(),
    )
}

/// The key a WebSocket upgrade presents: the first present source in the dialect's
/// order (ws: `token`, `api_key`, Bearer; v1: `api_key`, `token`, Bearer). An empty
/// value counts as present.
pub fn presented_key(req: &HttpRequest, dialect: Dialect) -> Option<String> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let order = match dialect {
        Dialect::Ws => ["token", "api_key"],
        Dialect::V1 => ["api_key", "token"],
    };
    order
        .iter()
        .find_map(|name| query.get(*name).cloned())
        .or_else(|| bearer(req))
}
