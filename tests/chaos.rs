//! Chaos: 60 clients with mixed channels, filters and `confirmations` drop at random
//! points and resume while two publishers (HTTP batches and pipelined WebSocket frames)
//! run flat out. Every client's frames must equal, id for id and in order, what a model
//! of PROTOCOL.md section 5 computes from everything published: nothing missing, nothing
//! twice, releases at `B.E`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: u64 = 60;
const DROPS: usize = 3;
const HTTP_BATCHES: u64 = 60;
const HTTP_BATCH: u64 = 25;
const WS_EVENTS: u64 = 1200;

/// One subscription as the model sees it.
#[derive(Clone, Debug)]
enum Sub {
    Blocks(u64),
    Transactions(u64),
    Market(String),
    Transfers(String),
}

impl Sub {
    fn request(&self) -> (&'static str, Value) {
        match self {
            Sub::Blocks(k) => ("blocks", json!({"confirmations": k})),
            Sub::Transactions(k) => ("transactions", json!({"confirmations": k})),
            Sub::Market(s) => ("market_data", json!({"symbols": [s]})),
            Sub::Transfers(a) => ("transaction_updates", json!({"address": a})),
        }
    }

    /// `Some(k)` when the subscription takes `event`.
    fn takes(&self, event: &Value) -> Option<u64> {
        let data = &event["data"];
        match (self, event["channel"].as_str()) {
            (Sub::Blocks(k), Some("blocks")) => Some(*k),
            (Sub::Transactions(k), Some("transactions")) => Some(*k),
            (Sub::Market(s), Some("market_data")) => (data["symbol"] == s.as_str()).then_some(1),
            (Sub::Transfers(a), Some("transaction_updates")) => {
                let hit = ["from", "to"]
                    .iter()
                    .any(|f| data[*f].as_str().is_some_and(|v| v.eq_ignore_ascii_case(a)));
                hit.then_some(1)
            }
            _ => None,
        }
    }
}

fn block_of(event: &Value) -> Option<u64> {
    let data = &event["data"];
    data["number"].as_u64().or(data["block_number"].as_u64())
}

/// The frame ids a client with `subs` must receive, from every published (seq, event) in
/// sequence order: the contract's rules, written out independently of the broker's code.
fn model(published: &[(u64, Value)], subs: &[Sub]) -> Vec<String> {
    let mut frames = Vec::new();
    let mut head: Option<u64> = None;
    // Held per subscription: (block, seq).
    let mut held: Vec<Vec<(u64, u64)>> = vec![Vec::new(); subs.len()];
    for (seq, event) in published {
        let block = block_of(event);
        let mut now = false;
        for (i, sub) in subs.iter().enumerate() {
            let Some(k) = sub.takes(event) else { continue };
            match block {
                Some(n) if k > 1 && head.is_none_or(|h| h < n + k - 1) => held[i].push((n, *seq)),
                _ => now = true,
            }
        }
        if now {
            frames.push(seq.to_string());
        }
        let raise =
            event["channel"] == "blocks" && block.is_some_and(|n| head.is_none_or(|h| n > h));
        if let (true, Some(n)) = (raise, block) {
            head = Some(n);
            let mut released: Vec<u64> = Vec::new();
            for (i, sub) in subs.iter().enumerate() {
                let k = match sub {
                    Sub::Blocks(k) | Sub::Transactions(k) => *k,
                    _ => continue,
                };
                held[i].retain(|(b, e)| {
                    let due = b + k - 1 <= n;
                    if due {
                        released.push(*e);
                    }
                    !due
                });
            }
            released.sort_unstable();
            released.dedup();
            frames.extend(released.into_iter().map(|e| format!("{seq}.{e}")));
        }
    }
    frames
}

fn subs_for(rng: &mut rand::rngs::StdRng) -> Vec<Sub> {
    let mut subs = Vec::new();
    if rng.random_bool(0.6) {
        subs.push(Sub::Blocks(rng.random_range(1..=3)));
    }
    if rng.random_bool(0.6) {
        subs.push(Sub::Transactions(rng.random_range(1..=3)));
    }
    if rng.random_bool(0.5) {
        subs.push(Sub::Market(format!("S{}/USD", rng.random_range(0..3))));
    }
    if rng.random_bool(0.5) || subs.is_empty() {
        subs.push(Sub::Transfers(format!("0xA{}", rng.random_range(0..4))));
    }
    subs
}

fn http_batch(round: u64) -> Vec<Value> {
    (0..HTTP_BATCH)
        .map(|i| {
            let n = round * HTTP_BATCH + i;
            if i % 5 == 0 {
                block(n / 5 + 1)
            } else {
                // Transactions name recent blocks, some already deep, some ahead.
                let b = (n / 5).saturating_sub(i % 3);
                json!({"channel": "transactions", "data": {"tx_hash": format!("0x{n:x}"),
                    "block_number": b, "timestamp": "2024-01-23T12:34:56Z", "confirmations": 1}})
            }
        })
        .collect()
}

fn ws_event(i: u64) -> Value {
    if i.is_multiple_of(2) {
        json!({"channel": "market_data", "data": {"symbol": format!("S{}/USD", i % 3),
            "price": format!("{i}"), "change_24h": "0", "volume_24h": "0",
            "timestamp": "2024-01-01T12:00:00Z"}})
    } else {
        json!({"channel": "transaction_updates", "data": {"transaction_id": format!("0x{i:x}"),
            "status": "confirmed", "from": format!("0xa{}", i % 4), "to": format!("0xA{}", (i + 1) % 4),
            "timestamp": "2024-01-01T12:00:00Z"}})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_clients_dropping_at_random_get_exactly_what_the_model_says_in_order() {
    let mut cfg = config();
    cfg.keys[0].max_connections = Some(400);
    cfg.limits.publish_events_per_second = 1_000_000;
    let b = start(cfg);
    chaos(&[b.addr]).await;
}

/// The same across three broker processes on one Redis (PROTOCOL.md section 11): each
/// client starts on one node and resumes on the next after every drop; the HTTP publisher
/// is on the first node, the WebSocket publisher on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_run_across_three_nodes_on_one_redis_gets_exactly_what_the_model_says() {
    let Some(redis) = redis_server::redis_server() else {
        return;
    };
    let p = cluster::prefix("chaos");
    let extra = "[limits]\nmax_connections_per_key = 400\npublish_events_per_second = 1000000\n";
    let nodes: Vec<cluster::Node> = (0..3)
        .map(|_| cluster::Node::start(&redis.url, &p, extra))
        .collect();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    chaos(&addrs).await;
}

/// Clients spread over `nodes`, dropping and resuming (on the next node each time), while
/// two publishers run; every client's frames are checked against the model.
async fn chaos(nodes: &[std::net::SocketAddr]) {
    let node = |i: u64| nodes[(i as usize) % nodes.len()];
    let addr = nodes[0];
    let ws_addr = node(1);

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS as usize);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let ready = ready_tx.clone();
        let mut done = done_rx.clone();
        let nodes = nodes.to_vec();
        clients.push(tokio::spawn(async move {
            let node = |i: u64| nodes[(i as usize) % nodes.len()];
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + n);
            let subs = subs_for(&mut rng);
            let mut c = if n.is_multiple_of(2) {
                Client::ws(node(n), SUB_KEY).await
            } else {
                Client::v1(node(n), SUB_KEY).await
            };
            let mut sids = Vec::new();
            for s in &subs {
                let (channel, filter) = s.request();
                let r = c
                    .request(json!({"type": "subscribe", "id": "s",
                        "data": {"channel": channel, "filter": filter}}))
                    .await;
                let sid = r["data"]["subscription_id"].as_str();
                sids.push(sid.unwrap_or_else(|| panic!("client {n}: {r}")).to_owned());
            }
            let _ = ready.send(()).await;
            let mut got: Vec<String> = Vec::new();
            let mut drops = 0;
            let mut until_drop = rng.random_range(1..150);
            loop {
                let wait = if *done.borrow() {
                    Duration::from_millis(700)
                } else {
                    WAIT
                };
                match c.next_text(wait).await {
                    Some(Ok(v)) if v["type"] == "heartbeat" => continue,
                    Some(Ok(v)) => {
                        let id = v["id"].as_str();
                        got.push(id.unwrap_or_else(|| panic!("client {n}: {v}")).to_owned())
                    }
                    None if *done.borrow() => break,
                    None => {
                        let _ = tokio::time::timeout(WAIT, done.changed()).await;
                        continue;
                    }
                    Some(Err(e)) => panic!("client {n}: {e:?}"),
                }
                until_drop -= 1;
                if until_drop == 0 && drops < DROPS {
                    drops += 1;
                    until_drop = rng.random_range(1..150);
                    c.drop_tcp();
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
                    c = Client::ws(node(n + drops as u64), SUB_KEY).await;
                    let r = c
                        .request(json!({"type": "reconnect", "id": "r",
                            "data": {"last_message_id": got.last(), "subscriptions": sids}}))
                        .await;
                    assert_eq!(r["data"]["recovered"], true, "client {n}: {r}");
                }
            }
            (subs, got, drops)
        }));
    }
    for _ in 0..CLIENTS {
        tokio::time::timeout(WAIT * 3, ready_rx.recv())
            .await
            .expect("clients ready");
    }

    let http = tokio::spawn(async move {
        let mut out = Vec::new();
        for round in 0..HTTP_BATCHES {
            let batch = http_batch(round);
            let ids = publish_ok(addr, &json!(batch)).await;
            out.extend(ids.into_iter().zip(batch));
        }
        out
    });
    let ws = tokio::spawn(async move {
        let mut p = Client::ws(ws_addr, PUB_KEY).await;
        let events: Vec<Value> = (0..WS_EVENTS).map(ws_event).collect();
        let frames: Vec<Value> = events
            .iter()
            .map(|e| json!({"type": "publish", "id": "p", "data": e}))
            .collect();
        p.send_all(&frames).await;
        let mut out = Vec::new();
        for e in events {
            let r = p.recv().await;
            let id = r["data"]["ids"][0].as_str().expect("published").to_owned();
            out.push((id, e));
        }
        out
    });
    let mut published: BTreeMap<u64, Value> = BTreeMap::new();
    for part in [http, ws] {
        let events = tokio::time::timeout(WAIT * 6, part)
            .await
            .expect("publisher finished")
            .expect("publisher");
        for (id, e) in events {
            published.insert(id.parse().expect("id"), e);
        }
    }
    let _ = done_tx.send(true);
    let published: Vec<(u64, Value)> = published.into_iter().collect();

    let (mut frames, mut resumes, mut releases) = (0, 0, 0);
    for (n, client) in clients.into_iter().enumerate() {
        let (subs, got, drops) = tokio::time::timeout(WAIT * 6, client)
            .await
            .expect("client finished in time")
            .expect("client task");
        let want = model(&published, &subs);
        if got != want {
            let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
            let dup: Vec<&String> = got
                .iter()
                .enumerate()
                .filter(|(i, g)| got[..*i].contains(g))
                .map(|(_, g)| g)
                .collect();
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            eprintln!(
                "client {n}: extra {extra:?}, repeated {dup:?}, first difference at {first_diff:?}: got {:?} want {:?}",
                first_diff.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())]),
                first_diff.map(|i| &want[i.saturating_sub(2)..(i + 3).min(want.len())])
            );
        }
        assert_eq!(
            got.len(),
            want.len(),
            "client {n} ({subs:?}) got {} frames, the model says {}",
            got.len(),
            want.len()
        );
        assert_eq!(got, want, "client {n} ({subs:?})");
        frames += got.len();
        resumes += drops;
        releases += got.iter().filter(|id| id.contains('.')).count();
    }
    println!(
        "chaos: {CLIENTS} clients, {} events published, {frames} frames checked ({releases} releases), {resumes} drops and resumes",
        published.len()
    );
    assert!(
        resumes >= CLIENTS as usize,
        "too few drops to mean anything"
    );
    assert!(releases > 0, "no confirmations release was exercised");
}
