//! Several brokers, one Redis (PROTOCOL.md section 11): three broker processes and one
//! `redis-server`, all on loopback, started here. Every rule holds across the nodes as
//! if they were one broker.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{prefix, ready, Node, LEASE_MS};
use common::redis_server::redis_server;
use common::{block, publish, publish_ok, tick, Client, Ended, ALL_KEY, SUB_KEY, WAIT};
use serde_json::{json, Value};

/// Three nodes on one Redis, or `None` when Redis is not installed (and not required).
fn cluster(test: &str) -> Option<(common::redis_server::RedisServer, Vec<Node>)> {
    let redis = redis_server()?;
    let p = prefix(test);
    let nodes = (0..3).map(|_| Node::start(&redis.url, &p, "")).collect();
    Some((redis, nodes))
}

/// Receives `n` event frames (skipping heartbeats), each within the wait.
async fn events(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = c.recv().await;
        if v["type"] != "heartbeat" {
            out.push(v);
        }
    }
    out
}

/// Reads event ids (skipping heartbeats) into `got` until it holds `upto`, each within
/// the wait; panics with how far it came otherwise.
async fn read_ids(c: &mut Client, got: &mut Vec<String>, upto: usize) {
    while got.len() < upto {
        match c.next_text(WAIT).await {
            Some(Ok(v)) if v["type"] != "heartbeat" => {
                got.push(v["id"].as_str().expect("an event id").to_owned())
            }
            Some(Ok(_)) => {}
            other => panic!("after {} of {upto} events: {other:?}", got.len()),
        }
    }
}

/// Whether a new connection was admitted: a subscribe is answered (a refused one gets
/// its error and the close 4001 instead).
async fn admitted_now(c: &mut Client) -> bool {
    c.send_json(&json!({"type": "subscribe", "id": "s", "data": {"channel": "blocks"}}))
        .await;
    loop {
        match c.next_text(WAIT).await {
            Some(Ok(v)) if v["type"] == "subscribe_success" => return true,
            Some(Ok(v)) if v["type"] == "error" => continue,
            Some(Ok(v)) if v["type"] == "heartbeat" => continue,
            Some(Err(Ended::Closed(4001, _))) => return false,
            other => panic!("neither admitted nor refused 4001: {other:?}"),
        }
    }
}

async fn v1_subscribe(c: &mut Client, data: Value) -> String {
    let r = c
        .request(json!({"id": "s", "type": "subscribe", "data": data}))
        .await;
    assert_eq!(r["type"], "subscription_confirmation", "{r}");
    r["data"]["subscription_id"]
        .as_str()
        .expect("subscription_id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_every_node_once_in_order_with_the_same_ids() {
    let Some((redis, nodes)) = cluster("fanout") else {
        return;
    };
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let mut on_b = Client::ws(b, SUB_KEY).await;
    on_b.subscribe("market_data", json!({})).await;
    let mut on_c = Client::v1(c, SUB_KEY).await;
    v1_subscribe(&mut on_c, json!({"channel": "market_data"})).await;

    // Over HTTP and over a publisher's WebSocket, both on A.
    let mut ids = publish_ok(
        a,
        &json!((0..20).map(|i| tick("ETH-USD", i)).collect::<Vec<_>>()),
    )
    .await;
    let mut publisher = Client::ws(a, ALL_KEY).await;
    for i in 20..40 {
        let r = publisher
            .request(json!({"type": "publish", "id": format!("p{i}"), "data": tick("ETH-USD", i)}))
            .await;
        assert_eq!(r["type"], "publish_success", "{r}");
        ids.push(r["data"]["ids"][0].as_str().expect("an id").to_owned());
    }
    let numbers: Vec<u128> = ids.iter().map(|i| i.parse().expect("decimal")).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    for (name, client) in [("B /ws", &mut on_b), ("C /v1", &mut on_c)] {
        let got = events(client, 40).await;
        let got_ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap_or("")).collect();
        assert_eq!(got_ids, ids, "{name}: every event once, in order, same ids");
        let prices: Vec<String> = got
            .iter()
            .map(|e| e["data"]["price"].as_str().unwrap_or("").to_owned())
            .collect();
        let want: Vec<String> = (0..40).map(|i: u64| i.to_string()).collect();
        assert_eq!(prices, want, "{name}");
        client.expect_silence(Duration::from_millis(300)).await;
    }

    // Interest: B and C receive market_data from Redis; A, with no subscriber, does not.
    let mut con = redis.node().await;
    let p = prefix("fanout");
    let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{p}e:market_data"))
        .query_async(&mut con)
        .await
        .expect("PUBSUB NUMSUB");
    assert_eq!(
        subscribers, 2,
        "only the nodes with subscribers receive the channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_counts_every_node_and_a_killed_node_frees_its_slots() {
    let Some((_redis, mut nodes)) = cluster("cap") else {
        return;
    };
    // The default cap is 10 per key: 4 + 3 + 3 over the three nodes.
    let mut open = Vec::new();
    for (i, count) in [4, 3, 3].into_iter().enumerate() {
        for _ in 0..count {
            let mut c = Client::ws(nodes[i].addr, SUB_KEY).await;
            c.subscribe("blocks", json!({})).await;
            open.push((i, c));
        }
    }
    for node in &nodes {
        let mut c = Client::ws(node.addr, SUB_KEY).await;
        let (code, reason) = c.expect_close().await;
        assert_eq!(
            code, 4001,
            "the 11th connection on {} : {reason}",
            node.addr
        );
    }
    // Node A dies without a goodbye: its 4 slots come free once their leases run out.
    nodes[0].kill();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(LEASE_MS * 4);
    let mut admitted = Vec::new();
    while admitted.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "A's slots were not freed within the lease ({} of 4 admitted)",
            admitted.len()
        );
        let mut c = Client::ws(nodes[1].addr, SUB_KEY).await;
        if admitted_now(&mut c).await {
            admitted.push(c);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let freed_after = started.elapsed();
    assert!(
        freed_after <= Duration::from_millis(LEASE_MS * 3),
        "freed after {freed_after:?}"
    );
    // And the cap holds again: 3 + 3 + 4 = 10.
    let mut c = Client::ws(nodes[2].addr, SUB_KEY).await;
    assert_eq!(c.expect_close().await.0, 4001);
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_published_on_one_node_release_confirmations_on_another() {
    let Some((_redis, nodes)) = cluster("confirm") else {
        return;
    };
    let (a, c) = (nodes[0].addr, nodes[2].addr);
    let mut sub = Client::ws(c, SUB_KEY).await;
    sub.subscribe("transactions", json!({"confirmations": 3}))
        .await;
    let tx = json!({"channel": "transactions", "data": {"tx_hash": "0xaa", "block_number": 5,
        "timestamp": "2024-01-01T12:00:00Z", "confirmations": 1}});
    let tx_id = publish_ok(a, &tx).await.remove(0);
    let b5 = publish_ok(a, &block(5)).await.remove(0);
    let b6 = publish_ok(a, &block(6)).await.remove(0);
    sub.expect_silence(Duration::from_millis(300)).await;
    let b7 = publish_ok(a, &block(7)).await.remove(0);
    let got = sub.recv().await;
    assert_eq!(got["id"], format!("{b7}.{tx_id}"), "{got}");
    assert_eq!(got["data"]["tx_hash"], "0xaa");
    assert_eq!(got["data"]["confirmations"], 3);
    let _ = (b5, b6);
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_exactly_the_missed_events() {
    let Some((_redis, nodes)) = cluster("resume") else {
        return;
    };
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let mut client = Client::ws(b, SUB_KEY).await;
    let sid = client.subscribe("market_data", json!({})).await;
    let first = publish_ok(
        a,
        &json!((0..5).map(|i| tick("BTC-USD", i)).collect::<Vec<_>>()),
    )
    .await;
    let got = events(&mut client, 5).await;
    assert_eq!(got[4]["id"], first[4].as_str());
    client.drop_tcp();
    let missed = publish_ok(
        a,
        &json!((5..12).map(|i| tick("BTC-USD", i)).collect::<Vec<_>>()),
    )
    .await;

    let mut client = Client::ws(c, SUB_KEY).await;
    let r = client
        .reconnect(&first[4], std::slice::from_ref(&sid))
        .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["replayed"], 7, "{r}");
    let got = events(&mut client, 7).await;
    let got_ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap_or("")).collect();
    assert_eq!(got_ids, missed);
    // Live delivery goes on on the new node.
    let live = publish_ok(a, &tick("BTC-USD", 12)).await.remove(0);
    assert_eq!(client.recv().await["id"], live.as_str());
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_costs_its_resumed_clients_nothing() {
    let Some((_redis, mut nodes)) = cluster("kill") else {
        return;
    };
    let (a, c) = (nodes[0].addr, nodes[2].addr);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = Client::ws(nodes[1].addr, SUB_KEY).await;
        let sid = client.subscribe("market_data", json!({})).await;
        clients.push((client, sid, Vec::<String>::new()));
    }
    // A publisher on A, one event per publish, while B is killed.
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..300u64 {
            let r = publish(a, common::PUB_KEY, &tick("SOL-USD", i)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            ids.push(r.body["data"]["ids"][0].as_str().expect("id").to_owned());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        ids
    });
    // Each client reads a different number of events; then B dies mid-stream.
    for (i, (client, _, got)) in clients.iter_mut().enumerate() {
        read_ids(client, got, 20 + 10 * i).await;
    }
    nodes[1].kill();
    // Resume each on A or C, alternately, from the last id it received.
    let mut resumed = Vec::new();
    for (i, (client, sid, mut got)) in clients.into_iter().enumerate() {
        drop(client);
        let to = if i % 2 == 0 { a } else { c };
        let mut client = Client::ws(to, SUB_KEY).await;
        let last = got.last().cloned().expect("an id");
        let r = client.reconnect(&last, std::slice::from_ref(&sid)).await;
        assert_eq!(r["data"]["recovered"], true, "client {i}: {r}");
        let _ = got.pop();
        got.push(last);
        resumed.push((client, got));
    }
    let published = publisher.await.expect("the publisher ran");
    for (i, (mut client, mut got)) in resumed.into_iter().enumerate() {
        read_ids(&mut client, &mut got, published.len()).await;
        assert_eq!(
            got, published,
            "client {i}: nothing lost, nothing twice, in order"
        );
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_publishes_and_everything_recovers_when_it_returns() {
    let Some((mut redis, nodes)) = cluster("outage") else {
        return;
    };
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut client = Client::ws(b, SUB_KEY).await;
    let sid = client.subscribe("market_data", json!({})).await;
    let before = publish_ok(a, &tick("ADA-USD", 0)).await.remove(0);
    assert_eq!(client.recv().await["id"], before.as_str());

    redis.kill();
    // Publishes are refused unavailable (HTTP 503); none is accepted and then lost.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = publish(a, common::PUB_KEY, &tick("ADA-USD", 1)).await;
        if r.status == 503 {
            assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.text);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            Instant::now() < deadline,
            "publishes still accepted with Redis down"
        );
    }
    // /ready turns 503 on the nodes.
    let deadline = Instant::now() + WAIT;
    while ready(a) != Some(503) || ready(b) != Some(503) {
        assert!(Instant::now() < deadline, "/ready did not turn 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis comes back empty (no persistence): the nodes reconnect by themselves.
    redis.restart();
    for node in &nodes {
        node.wait_ready();
    }
    // Redis lost its data, so B cannot prove its subscriber missed nothing: it closes
    // the connection 1013, and the client resumes with an honest answer.
    match client.next_text(WAIT).await {
        Some(Err(Ended::Closed(1013, _))) => {}
        other => panic!("expected the 1013 close after Redis lost its data: {other:?}"),
    }
    let mut again = Client::ws(b, SUB_KEY).await;
    let r = again.reconnect(&before, std::slice::from_ref(&sid)).await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    again.subscribe("market_data", json!({})).await;
    let after = publish_ok(a, &tick("ADA-USD", 2)).await.remove(0);
    assert_eq!(again.recv().await["id"], after.as_str());
    let (after, before): (u128, u128) = (
        after.parse().expect("decimal"),
        before.parse().expect("decimal"),
    );
    assert!(after > before, "ids keep increasing across a Redis restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_redis_subscription_backfills_without_a_gap() {
    let Some((redis, nodes)) = cluster("backfill") else {
        return;
    };
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut client = Client::ws(b, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..200u64 {
            ids.extend(publish_ok(a, &tick("DOT-USD", i)).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids
    });
    let mut got = Vec::new();
    let mut con = redis.node().await;
    read_ids(&mut client, &mut got, 50).await;
    // Every node's pub/sub connection is cut; Redis keeps its data.
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut con)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 3, "killed {killed} pub/sub connections");
    read_ids(&mut client, &mut got, 200).await;
    let published = publisher.await.expect("the publisher ran");
    assert_eq!(got, published, "nothing lost, nothing twice, in order");
    let text = common::metrics(b).await;
    assert!(
        common::metric(&text, "rustorium_engine_reconnects_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        common::metric(&text, "rustorium_engine_backfills_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        common::metric(&text, "rustorium_engine_gaps_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_data_mid_stream_loses_no_accepted_event() {
    let Some((mut redis, nodes)) = cluster("restart") else {
        return;
    };
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut client = Client::ws(b, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    // A publisher that keeps going through the outage: what is accepted (200) must arrive,
    // what is refused is refused unavailable (503).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(async move {
        let (mut accepted, mut refused) = (Vec::new(), 0u32);
        let mut i = 0u64;
        while !*stop_rx.borrow() && i < 5000 {
            let r = publish(a, common::PUB_KEY, &tick("XRP-USD", i)).await;
            match r.status {
                200 => accepted.push(r.body["data"]["ids"][0].as_str().expect("id").to_owned()),
                503 => {
                    assert_eq!(r.body["error"]["code"], "unavailable", "{}", r.text);
                    refused += 1;
                }
                other => panic!("publish answered {other}: {}", r.text),
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (accepted, refused)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.shutdown_saving().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for node in &nodes {
        node.wait_ready();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let (accepted, refused) = publisher.await.expect("the publisher ran");
    assert!(
        refused > 0,
        "the outage refused nothing: the test did not test it"
    );
    let mut got = Vec::new();
    read_ids(&mut client, &mut got, accepted.len()).await;
    assert_eq!(got, accepted, "every accepted event once, in order, no gap");
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_behind_its_bound_reconnects_and_backfills_without_loss() {
    let Some(redis) = redis_server() else {
        return;
    };
    let p = prefix("behind");
    let a = Node::start(&redis.url, &p, "");
    // B may hold at most 2 messages read from Redis and not yet in its hubs.
    let b = Node::start_with(&redis.url, &p, "max_pending_messages = 2", "");
    let mut client = Client::ws(b.addr, SUB_KEY).await;
    client.subscribe("market_data", json!({})).await;
    let mut published = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<Value> = (0..50).map(|i| tick("LTC-USD", round * 50 + i)).collect();
        published.extend(publish_ok(a.addr, &json!(batch)).await);
    }
    let mut got = Vec::new();
    read_ids(&mut client, &mut got, published.len()).await;
    assert_eq!(got, published, "nothing lost, nothing twice, in order");
    let text = common::metrics(b.addr).await;
    assert!(
        common::metric(&text, "rustorium_engine_backfills_total").unwrap_or(0.0) >= 1.0,
        "B never fell past its bound: {text}"
    );
}
