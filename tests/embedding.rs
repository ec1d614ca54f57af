//! The embedding example, compiled into this test: the same `start` that
//! `cargo run --example embed` runs (its backend, its key, its routes), on a free port. A
//! client subscribes, the app publishes through its own route, and commands are answered
//! by the app's backend.

mod common;

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use common::*;
use serde_json::json;

use embed::SUBSCRIBER_KEY as SECRET;

/// Runs the example's `start` on 127.0.0.1:0 in a System of its own; returns the address.
fn start_app() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match embed::start("127.0.0.1:0") {
                Ok((server, addr)) => {
                    let _ = tx.send(Ok(addr));
                    let _ = server.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => panic!("the example did not start: {e}"),
        Err(e) => panic!("the example did not start in time: {e}"),
    }
}

#[tokio::test]
async fn the_app_keeps_its_routes_and_publishes_to_broker_subscribers() {
    let addr = start_app();
    let hello = http(addr, "GET", "/hello", &[], b"").await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text, "hello from the app");
    assert_eq!(http(addr, "GET", "/health", &[], b"").await.status, 200);

    let mut c = Client::ws(addr, SECRET).await;
    c.subscribe("market_data", json!({"symbols": ["MTK/USD"]}))
        .await;
    let r = http(addr, "POST", "/prices/MTK%2FUSD/1.23", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = c.recv().await;
    assert_eq!(e["type"], "update");
    assert_eq!(e["channel"], "market_data");
    assert_eq!(e["id"], r.body["published"]);
    assert_eq!(e["data"]["symbol"], "MTK/USD");
    assert_eq!(e["data"]["price"], "1.23");
}

#[tokio::test]
async fn commands_are_answered_by_the_apps_backend() {
    let addr = start_app();
    let mut c = Client::v1(addr, SECRET).await;
    let r = c
        .request(
            json!({"id": "3", "type": "get_token_info", "data": {"token_id": embed::APP_TOKEN}}),
        )
        .await;
    assert_eq!(
        r,
        json!({"id": "3", "type": "token_info", "data": {"token_id": embed::APP_TOKEN,
               "name": "App Token", "symbol": "APP", "total_supply": "21000000"}})
    );
    let r = c
        .request(
            json!({"id": "4", "type": "execute_transaction", "data": {"from": "0x1",
               "to": "0x2", "amount": "10", "token_id": "0xbad"}}),
        )
        .await;
    assert_eq!(r["data"]["code"], "command_failed");

    // The same answer on the node API, and a token the app does not know is refused: the
    // built-in ledger (whose tokens these are not) does not answer.
    let mut ws = Client::ws(addr, SECRET).await;
    let r = ws
        .request(
            json!({"type": "get_token_info", "id": "t", "data": {"token_id": embed::APP_TOKEN}}),
        )
        .await;
    assert_eq!(r["type"], "token_info", "{r}");
    assert_eq!(r["id"], "t");
    assert_eq!(r["error"], serde_json::Value::Null);
    assert_eq!(
        r["data"],
        json!({"token_id": embed::APP_TOKEN, "name": "App Token", "symbol": "APP",
               "total_supply": "21000000"})
    );
    let mtk = "0x4d544b0000000000000000000000000000000001";
    let r = ws
        .request(json!({"type": "get_token_info", "id": "m", "data": {"token_id": mtk}}))
        .await;
    assert_eq!(r["error"]["code"], 4003, "{r}");
    ws.close().await;

    // The built-in ledger is not running: no blocks appear.
    let mut ws = Client::ws(addr, SECRET).await;
    ws.subscribe("blocks", json!({})).await;
    ws.expect_silence(std::time::Duration::from_millis(300))
        .await;
}
