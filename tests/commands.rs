//! Commands on both dialects: reply shapes, validation errors naming the field
//! (invalid_request / 4002), backend refusals (command_failed / 4003), and roles.

mod common;

use common::*;
use rustorium_broker::ledger::config::DEMO_ACCOUNTS;
use serde_json::{json, Value};

const MTK: &str = "0x4d544b0000000000000000000000000000000001";

fn transfer(id: &str, from: &str, to: &str, amount: &str, token: &str) -> Value {
    json!({"id": id, "type": "execute_transaction",
           "data": {"from": from, "to": to, "amount": amount, "token_id": token}})
}

#[tokio::test]
async fn v1_commands_answer_in_the_documented_shapes() {
    let b = start(config());
    let mut c = Client::v1(b.addr, ALL_KEY).await;
    let r = c
        .request(transfer(
            "2",
            DEMO_ACCOUNTS[0],
            DEMO_ACCOUNTS[1],
            "1000",
            MTK,
        ))
        .await;
    let tx = r["data"]["transaction_id"]
        .as_str()
        .expect("transaction_id");
    assert!(tx.starts_with("0x") && tx.len() == 66, "{tx}");
    assert_eq!(
        r,
        json!({"id": "2", "type": "transaction_response",
               "data": {"transaction_id": tx, "status": "pending"}})
    );
    let r = c
        .request(json!({"id": "3", "type": "get_token_info", "data": {"token_id": MTK}}))
        .await;
    assert_eq!(
        r,
        json!({"id": "3", "type": "token_info", "data": {"token_id": MTK, "name": "My Token",
               "symbol": "MTK", "total_supply": "1000000"}})
    );
    let r = c
        .request(json!({"id": "4", "type": "get_balance",
                        "data": {"address": DEMO_ACCOUNTS[3].to_uppercase().replace("0X", "0x"), "token_id": MTK}}))
        .await;
    assert_eq!(r["type"], "balance");
    assert_eq!(r["data"]["address"], DEMO_ACCOUNTS[3]);
    assert_eq!(r["data"]["balance"], "100000");
}

#[tokio::test]
async fn ws_commands_use_the_ws_envelope() {
    let b = start(config());
    let mut c = Client::ws(b.addr, ALL_KEY).await;
    let r = c
        .request(json!({"type": "get_token_info", "id": "t", "data": {"token_id": MTK.to_uppercase().replace("0X", "0x")}}))
        .await;
    assert_eq!(r["type"], "token_info");
    assert_eq!(r["id"], "t");
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["data"]["symbol"], "MTK");
    let r = c
        .request(transfer("x", DEMO_ACCOUNTS[0], DEMO_ACCOUNTS[1], "5", MTK))
        .await;
    assert_eq!(r["type"], "transaction_response");
    assert_eq!(r["data"]["status"], "pending");
}

#[tokio::test]
async fn malformed_commands_are_invalid_requests_naming_the_field() {
    let b = start(config());
    let mut v1 = Client::v1(b.addr, ALL_KEY).await;
    let mut ws = Client::ws(b.addr, ALL_KEY).await;
    let (a, z) = (DEMO_ACCOUNTS[0], DEMO_ACCOUNTS[1]);
    let cases = [
        (transfer("1", "alice", z, "1", MTK), "data.from"),
        (transfer("1", a, "0xnothex", "1", MTK), "data.to"),
        (transfer("1", a, z, "1.5", MTK), "data.amount"),
        (transfer("1", a, z, "-3", MTK), "data.amount"),
        (transfer("1", a, z, "", MTK), "data.amount"),
        (
            json!({"id": "1", "type": "execute_transaction", "data": {"from": a, "to": z, "amount": 5, "token_id": MTK}}),
            "data.amount",
        ),
        (
            json!({"id": "1", "type": "execute_transaction", "data": {"from": a, "to": z, "amount": "5"}}),
            "data.token_id",
        ),
        (
            json!({"id": "1", "type": "get_token_info", "data": {}}),
            "data.token_id",
        ),
        (
            json!({"id": "1", "type": "get_balance", "data": {"token_id": MTK}}),
            "data.address",
        ),
    ];
    for (req, field) in cases {
        let r = v1.request(req.clone()).await;
        assert_eq!(r["data"]["code"], "invalid_request", "{req} -> {r}");
        assert!(
            r["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{r}"
        );
        let r = ws.request(req.clone()).await;
        assert_eq!(r["error"]["code"], 4002, "{req} -> {r}");
    }
}

#[tokio::test]
async fn refusals_of_the_ledger_are_command_failed() {
    let b = start(config());
    let mut v1 = Client::v1(b.addr, ALL_KEY).await;
    let mut ws = Client::ws(b.addr, ALL_KEY).await;
    let unknown = json!({"id": "u", "type": "get_token_info", "data": {"token_id": "0xdead"}});
    let r = v1.request(unknown.clone()).await;
    assert_eq!(r["data"]["code"], "command_failed");
    assert!(r["data"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("0xdead")));
    assert_eq!(ws.request(unknown).await["error"]["code"], 4003);
    let too_much = transfer("m", DEMO_ACCOUNTS[3], DEMO_ACCOUNTS[0], "100001", MTK);
    let r = v1.request(too_much.clone()).await;
    assert_eq!(r["data"]["code"], "command_failed");
    assert!(r["data"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("insufficient balance")));
    assert_eq!(ws.request(too_much).await["error"]["code"], 4003);
    let r = v1
        .request(transfer(
            "t",
            DEMO_ACCOUNTS[0],
            DEMO_ACCOUNTS[1],
            "1",
            "0xdead",
        ))
        .await;
    assert_eq!(r["data"]["code"], "command_failed");
}

#[tokio::test]
async fn commands_need_the_command_role() {
    let b = start(config());
    let mut c = Client::v1(b.addr, SUB_KEY).await;
    let r = c
        .request(json!({"id": "f", "type": "get_token_info", "data": {"token_id": MTK}}))
        .await;
    assert_eq!(r["data"]["code"], "forbidden");
    let mut c = Client::ws(b.addr, SUB_KEY).await;
    let r = c
        .request(transfer("f", DEMO_ACCOUNTS[0], DEMO_ACCOUNTS[1], "1", MTK))
        .await;
    assert_eq!(r["error"]["code"], 4006);
}
