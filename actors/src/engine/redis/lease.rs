//! The per-key connection cap across a cluster (PROTOCOL.md section 11): each connection
//! holds a slot of its key in Redis under a lease that its node renews; a node that dies
//! (even by SIGKILL) stops renewing, and its slots are free once their leases run out
//! (`lease.lua`).
//!
//! The Redis engine takes a slot when it admits a connection ([`crate::engine::Engine::hold_slot`]),
//! renews its slots every third of the lease ([`renew`]) and frees one when its connection
//! ends. Tested against a real `redis-server` (`tests/redis_lease.rs`).

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::eventlog::Keys;

static LEASE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("lease.lua")));

/// One connection's claim on a slot of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot<'a> {
    /// The key's configured name.
    pub key_name: &'a str,
    /// The connection, unique in the cluster (its node's id and its number there).
    pub conn: &'a str,
}

/// Takes or renews `slot` until `expires_ms` (Unix milliseconds), given the time `now_ms`
/// and the key's connection `cap`. Expired slots are dropped first. Returns whether the
/// connection holds a slot: `false` means the cap is full (for a renewal: its lease had
/// run out and others took the room).
pub async fn acquire<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    slot: &Slot<'_>,
    now_ms: u64,
    expires_ms: u64,
    cap: u32,
) -> RedisResult<bool> {
    let held: u8 = LEASE
        .key(keys.slots(slot.key_name))
        .arg(now_ms)
        .arg(slot.conn)
        .arg(expires_ms)
        .arg(cap)
        .invoke_async(con)
        .await?;
    Ok(held == 1)
}

/// Gives the slot back (the connection ended).
pub async fn release<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    slot: &Slot<'_>,
) -> RedisResult<()> {
    redis::cmd("ZREM")
        .arg(keys.slots(slot.key_name))
        .arg(slot.conn)
        .query_async(con)
        .await
}

/// Extends the leases of `members` (slots of `key_name` this node holds) to `expires_ms`,
/// in one command. Only slots still held are renewed: one whose lease ran out stays gone.
pub async fn renew<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    key_name: &str,
    members: &[String],
    expires_ms: u64,
) -> RedisResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let name = keys.slots(key_name);
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(&name).arg("XX");
    for m in members {
        zadd.arg(expires_ms).arg(m);
    }
    redis::pipe()
        .add_command(zadd)
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&name)
        .arg(expires_ms)
        .arg("GT")
        .ignore()
        .query_async(con)
        .await
}

/// Slots of `key_name` whose lease runs past `now_ms`.
pub async fn held<C: ConnectionLike>(
    con: &mut C,
    keys: &Keys,
    key_name: &str,
    now_ms: u64,
) -> RedisResult<u64> {
    redis::cmd("ZCOUNT")
        .arg(keys.slots(key_name))
        .arg(now_ms)
        .arg("+inf")
        .query_async(con)
        .await
}
