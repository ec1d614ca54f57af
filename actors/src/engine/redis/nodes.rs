//! The cluster's nodes, for the dashboard: each node writes a record of itself (its open
//! connections and when it wrote) into one Redis hash every time it renews its leases; a
//! reader calls a node `up` while its record is younger than a lease, `down` after that,
//! and deletes records older than [`FORGET_AFTER_LEASES`] leases, so the hash stays bounded
//! by the nodes of the last few minutes.

use redis::aio::ConnectionLike;
use redis::RedisResult;
use serde::{Deserialize, Serialize};

use super::eventlog::Keys;
use crate::engine::{NodeInfo, NodeState};

/// A record older than this many leases is deleted by the next reader.
pub const FORGET_AFTER_LEASES: u64 = 10;

/// What a node writes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// Open WebSocket connections on the node.
    pub connections: i64,
    /// When the node wrote the record, Unix milliseconds.
    pub at_ms: u64,
}

/// Writes `record` as node `node`'s.
pub async fn announce<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    node: &str,
    record: &NodeRecord,
) -> RedisResult<()> {
    let text = serde_json::to_string(record).unwrap_or_default();
    redis::cmd("HSET")
        .arg(keys.nodes())
        .arg(node)
        .arg(text)
        .query_async(con)
        .await
}

/// Every node with a record, sorted by name; `me` is this node's name. Records older
/// than [`FORGET_AFTER_LEASES`] leases (or that do not decode) are deleted.
pub async fn list<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    me: &str,
    now_ms: u64,
    lease_ms: u64,
) -> RedisResult<Vec<NodeInfo>> {
    let records: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys.nodes())
        .query_async(con)
        .await?;
    let forget_after = lease_ms.saturating_mul(FORGET_AFTER_LEASES);
    let mut nodes = Vec::new();
    let mut stale = Vec::new();
    for (name, text) in records {
        let Ok(record) = serde_json::from_str::<NodeRecord>(&text) else {
            stale.push(name);
            continue;
        };
        let age = now_ms.saturating_sub(record.at_ms);
        if age > forget_after {
            stale.push(name);
            continue;
        }
        nodes.push(NodeInfo {
            state: if age <= lease_ms {
                NodeState::Up
            } else {
                NodeState::Down
            },
            this: name == me,
            name,
            connections: record.connections,
            last_seen_ms: age,
        });
    }
    if !stale.is_empty() {
        redis::cmd("HDEL")
            .arg(keys.nodes())
            .arg(&stale)
            .query_async::<()>(con)
            .await?;
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}
