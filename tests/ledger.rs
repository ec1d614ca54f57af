//! The built-in ledger end to end: a transfer answers pending, then its block publishes
//! new_block, tx_confirmed, state_update, transaction_updates and token_updates in that
//! order; balances follow; refused transfers change nothing; blocks chain; concurrent
//! transfers from many connections never create or destroy tokens.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::*;
use rustorium_broker::ledger::config::DEMO_ACCOUNTS;
use serde_json::{json, Value};

const MTK: &str = "0x4d544b0000000000000000000000000000000001";
const STK: &str = "0x53544b0000000000000000000000000000000002";

async fn execute(c: &mut Client, from: &str, to: &str, amount: u128, token: &str) -> Value {
    c.request(json!({"id": "x", "type": "execute_transaction",
        "data": {"from": from, "to": to, "amount": amount.to_string(), "token_id": token}}))
        .await
}

async fn balance(c: &mut Client, address: &str, token: &str) -> u128 {
    let r = c
        .request(json!({"id": "b", "type": "get_balance", "data": {"address": address, "token_id": token}}))
        .await;
    r["data"]["balance"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no balance in {r}"))
}

fn decode(value: &Value) -> u128 {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 string"))
        .expect("valid base64");
    String::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a decimal balance")
}

#[tokio::test]
async fn a_transfer_publishes_every_event_of_its_block_in_order() {
    let b = start(config());
    let (alice, bob) = (DEMO_ACCOUNTS[0], DEMO_ACCOUNTS[1]);
    let mut sub = Client::v1(b.addr, SUB_KEY).await;
    for data in [
        json!({"channel": "blocks"}),
        json!({"channel": "transactions"}),
        json!({"channel": "state", "key_prefix": MTK}),
        json!({"channel": "transaction_updates", "address": bob.to_uppercase().replace("0X", "0x")}),
        json!({"channel": "token_updates", "token_id": MTK}),
    ] {
        let r = sub
            .request(json!({"id": "s", "type": "subscribe", "data": data}))
            .await;
        assert_eq!(r["type"], "subscription_confirmation", "{r}");
    }
    let mut cmd = Client::v1(b.addr, ALL_KEY).await;
    let r = execute(&mut cmd, alice, bob, 1500, MTK).await;
    assert_eq!(r["data"]["status"], "pending");
    let tx = r["data"]["transaction_id"].as_str().expect("id").to_owned();

    let mut got: HashMap<String, Vec<Value>> = HashMap::new();
    for _ in 0..6 {
        let e = sub.recv().await;
        got.entry(e["channel"].as_str().expect("channel").to_owned())
            .or_default()
            .push(e);
    }
    let id = |e: &Value| {
        e["id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .expect("id")
    };
    let block = &got["blocks"][0];
    assert_eq!(block["type"], "new_block");
    assert_eq!(block["data"]["transactions"], json!([tx]));
    let n = block["data"]["number"].as_u64().expect("number");
    let confirmed = &got["transactions"][0];
    assert_eq!(confirmed["type"], "tx_confirmed");
    assert_eq!(confirmed["data"]["tx_hash"], tx.as_str());
    assert_eq!(confirmed["data"]["block_number"], n);
    assert_eq!(confirmed["data"]["confirmations"], 1);
    let states = &got["state"];
    assert_eq!(states.len(), 2);
    let mut values: Vec<u128> = states.iter().map(|s| decode(&s["data"]["value"])).collect();
    values.sort_unstable();
    assert_eq!(values, [301_500, 398_500]);
    let update = &got["transaction_updates"][0];
    assert_eq!(update["type"], "update");
    assert_eq!(update["data"]["transaction_id"], tx.as_str());
    assert_eq!(update["data"]["status"], "confirmed");
    assert_eq!(update["data"]["from"], alice);
    assert_eq!(update["data"]["to"], bob);
    let token = &got["token_updates"][0];
    assert_eq!(token["data"]["token_id"], MTK);
    assert_eq!(token["data"]["volume"], "1500");
    // Publish order: new_block, tx_confirmed, state_update..., transaction_updates, token_updates.
    let order = [
        id(block),
        id(confirmed),
        id(&states[0]).min(id(&states[1])),
        id(&states[0]).max(id(&states[1])),
        id(update),
        id(token),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(balance(&mut cmd, alice, MTK).await, 398_500);
    assert_eq!(balance(&mut cmd, bob, MTK).await, 301_500);
}

#[tokio::test]
async fn a_refused_transfer_changes_nothing_and_an_overdraft_in_a_block_fails() {
    let b = start(config());
    let (bob, dave) = (DEMO_ACCOUNTS[1], DEMO_ACCOUNTS[3]);
    let mut sub = Client::ws(b.addr, SUB_KEY).await;
    sub.subscribe("transaction_updates", json!({"address": bob}))
        .await;
    let mut cmd = Client::ws(b.addr, ALL_KEY).await;
    let r = execute(&mut cmd, bob, dave, 300_001, MTK).await;
    assert_eq!(r["error"]["code"], 4003);
    sub.expect_silence(Duration::from_millis(400)).await;
    assert_eq!(balance(&mut cmd, bob, MTK).await, 300_000);
    // Two transfers each within the balance, together over it, in one block.
    let first = execute(&mut cmd, bob, dave, 200_000, MTK).await;
    let second = execute(&mut cmd, bob, dave, 200_000, MTK).await;
    let (first, second) = (
        &first["data"]["transaction_id"],
        &second["data"]["transaction_id"],
    );
    let a = sub.recv().await;
    let z = sub.recv().await;
    assert_eq!(a["data"]["transaction_id"], *first);
    assert_eq!(a["data"]["status"], "confirmed");
    assert_eq!(z["data"]["transaction_id"], *second);
    assert_eq!(z["data"]["status"], "failed");
    assert!(z["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("insufficient balance")));
    assert_eq!(balance(&mut cmd, bob, MTK).await, 100_000);
    assert_eq!(balance(&mut cmd, dave, MTK).await, 300_000);
}

#[tokio::test]
async fn blocks_chain_and_come_every_interval_even_when_empty() {
    let mut cfg = config();
    cfg.ledger.empty_blocks = true;
    let b = start(cfg);
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    c.subscribe("blocks", json!({})).await;
    let mut prev: Option<Value> = None;
    for _ in 0..4 {
        let e = c.recv().await;
        assert_eq!(e["data"]["transactions"], json!([]));
        if let Some(p) = prev {
            assert_eq!(e["data"]["parent_hash"], p["data"]["hash"]);
            assert_eq!(
                e["data"]["number"].as_u64(),
                p["data"]["number"].as_u64().map(|n| n + 1)
            );
        }
        prev = Some(e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_from_many_connections_conserve_the_supply() {
    let mut cfg = config();
    cfg.keys[2].max_connections = Some(32);
    let b = start(cfg);
    let outsiders = [
        "0x00000000000000000000000000000000000000e1",
        "0x00000000000000000000000000000000000000e2",
    ];
    let mut tasks = Vec::new();
    for conn in 0..16u64 {
        let addr = b.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::v1(addr, ALL_KEY).await;
            let mut accepted = 0;
            for i in 0..40u64 {
                let from = DEMO_ACCOUNTS[((conn + i) % 4) as usize];
                let to = if i % 5 == 0 {
                    outsiders[(i % 2) as usize]
                } else {
                    DEMO_ACCOUNTS[((conn + i + 1) % 4) as usize]
                };
                let token = if i % 2 == 0 { MTK } else { STK };
                let amount = 1 + (conn * 7919 + i * 104_729) % 60_000;
                // Paced under the v1 cap of 10 messages per second.
                tokio::time::sleep(Duration::from_millis(105)).await;
                let r = execute(&mut c, from, to, amount.into(), token).await;
                if r["type"] == "transaction_response" {
                    accepted += 1;
                } else {
                    assert_eq!(r["data"]["code"], "command_failed", "{r}");
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.expect("task");
    }
    assert!(accepted > 100, "only {accepted} transfers accepted");
    // Count every holder until two full reads agree (no block landed in between).
    let mut c = Client::ws(b.addr, ALL_KEY).await;
    let mut previous = None;
    for _ in 0..50 {
        let mut totals = Vec::new();
        let mut outsiders_hold = 0;
        for token in [MTK, STK] {
            let mut total = 0;
            for a in DEMO_ACCOUNTS.iter().chain(outsiders.iter()) {
                let n = balance(&mut c, a, token).await;
                if outsiders.contains(a) {
                    outsiders_hold += n;
                }
                total += n;
            }
            totals.push(total);
        }
        if previous.as_ref() == Some(&totals) && outsiders_hold > 0 {
            break;
        }
        previous = Some(totals);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        previous,
        Some(vec![1_000_000, 5_000_000]),
        "the supply changed"
    );
}
