//! The per-key connection cap across nodes, on a real `redis-server` (PROTOCOL.md section
//! 11): slots up to the cap whichever node asks, a released slot free at once, a renewal
//! keeping its slot, and the slots of a node that stopped renewing (as one killed with
//! SIGKILL does) free once their leases run out.
//!
//! Skipped with a message when `redis-server` is not installed, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set.

mod common;

use common::redis_server::redis_server;
use rustorium_actors::engine::redis::eventlog::Keys;
use rustorium_actors::engine::redis::lease::{acquire, held, release, Slot};
use rustorium_actors::engine::redis::record::unix_ms_now;

fn slot(conn: &str) -> Slot<'_> {
    Slot {
        key_name: "wallet",
        conn,
    }
}

#[tokio::test]
async fn slots_count_across_nodes_and_a_dead_nodes_leases_run_out() {
    let Some(server) = redis_server() else {
        return;
    };
    let keys = Keys::new("lease:");
    let mut a = server.node().await;
    let mut b = server.node().await;
    // Leases of 60 s from now; later moments are given explicitly (no sleeping), and the
    // set itself lives as long as its latest lease, far past the test's end.
    let (t, lease) = (unix_ms_now(), 60_000u64);

    assert!(acquire(&mut a, &keys, &slot("a:1"), t, t + lease, 2)
        .await
        .expect("a:1"));
    assert!(acquire(&mut b, &keys, &slot("b:1"), t, t + lease, 2)
        .await
        .expect("b:1"));
    assert!(
        !acquire(&mut b, &keys, &slot("b:2"), t, t + lease, 2)
            .await
            .expect("b:2"),
        "the cap of 2 counts both nodes"
    );
    assert_eq!(held(&mut a, &keys, "wallet", t).await.expect("held"), 2);
    // Another key has its own slots.
    let other = Slot {
        key_name: "explorer",
        conn: "b:9",
    };
    assert!(acquire(&mut b, &keys, &other, t, t + lease, 1)
        .await
        .expect("other key"));

    // A release frees the slot at once.
    release(&mut a, &keys, &slot("a:1")).await.expect("release");
    assert!(acquire(&mut b, &keys, &slot("b:2"), t, t + lease, 2)
        .await
        .expect("b:2 again"));

    // Node B renews its slots; node A takes one more and then dies: it never renews.
    assert!(
        acquire(&mut a, &keys, &slot("a:2"), t + 100, t + 100 + lease, 3)
            .await
            .expect("a:2")
    );
    let later = t + 59_000;
    for conn in ["b:1", "b:2"] {
        assert!(
            acquire(&mut b, &keys, &slot(conn), later, later + lease, 3)
                .await
                .expect("renew"),
            "a renewal keeps its slot"
        );
    }
    assert!(
        !acquire(&mut b, &keys, &slot("b:3"), later, later + lease, 3)
            .await
            .expect("b:3"),
        "full while node A's lease runs"
    );
    // Past node A's lease (t + 60.1 s), its slot is free; node B's renewed ones are not.
    let after = t + 61_000;
    assert_eq!(held(&mut b, &keys, "wallet", after).await.expect("held"), 2);
    assert!(
        acquire(&mut b, &keys, &slot("b:3"), after, after + lease, 3)
            .await
            .expect("b:3")
    );
    assert!(
        !acquire(&mut b, &keys, &slot("b:4"), after, after + lease, 3)
            .await
            .expect("b:4"),
        "the cap still holds"
    );
}
