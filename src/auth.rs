//! API key lookup: where a request presents its key (PROTOCOL.md section 1 and 10.1), and
//! a constant-time comparison against every configured secret.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest};
use rustorium_actors::protocol::Dialect;
use rustorium_actors::ApiKey;

use crate::config::KeyConfig;

/// The configured keys.
pub struct KeyStore {
    keys: Vec<(Vec<u8>, Arc<ApiKey>)>,
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
            keys: keys
                .iter()
                .map(|k| {
                    let key = ApiKey {
                        name: k.name.clone(),
                        roles: k.roles.clone(),
                        max_connections: k.max_connections,
                    };
                    (k.secret.as_bytes().to_vec(), Arc::new(key))
                })
                .collect(),
        }
    }

    /// The key whose secret is `presented`. Every secret is compared, in constant time.
    pub fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let mut found = None;
        for (secret, key) in &self.keys {
            if constant_time_eq(secret, presented.as_bytes()) {
                found = Some(key.clone());
            }
        }
        found
    }
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
