//! The embedding example, compiled into this test: an app with its own routes plus the
//! broker, a client subscribing, the app publishing through its own route.

mod common;

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use actix_web::{App, HttpServer};
use common::*;
use rustorium_broker::Broker;
use serde_json::json;

const SECRET: &str = "embedded-subscriber";

fn start_app() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let backend = std::sync::Arc::new(embed::AppBackend::default());
            let broker = match Broker::start_with_backend(embed::broker_config(SECRET), backend) {
                Ok(b) => b,
                Err(e) => panic!("broker config refused: {e}"),
            };
            let server =
                HttpServer::new(move || App::new().configure(embed::routes(broker.clone())))
                    .workers(1)
                    .bind("127.0.0.1:0")
                    .expect("bind");
            let addr = server.addrs()[0];
            let _ = tx.send(addr);
            let _ = server.run().await;
        });
    });
    rx.recv_timeout(WAIT).expect("app started")
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
    // The built-in ledger is not running: no blocks appear.
    let mut ws = Client::ws(addr, SECRET).await;
    ws.subscribe("blocks", json!({})).await;
    ws.expect_silence(std::time::Duration::from_millis(300))
        .await;
}
