//! Embedding the broker in an existing actix-web application: the app keeps its own
//! routes, mounts the broker's (`/ws`, `/v1`, `/api/publish`, `/health`, `/ready`,
//! `/metrics`), publishes from Rust with no HTTP in between, and answers the clients'
//! commands with its own [`Backend`] (not the built-in ledger; no demo feed).
//!
//! Run: `cargo run --example embed` (listens on [`ADDR`]), then connect to
//! `ws://127.0.0.1:8080/ws?token=demo-subscriber-key` ([`SUBSCRIBER_KEY`]), subscribe to
//! `market_data`, and `curl -X POST http://127.0.0.1:8080/prices/MTK%2FUSD/1.23`.
//! `tests/embedding.rs` runs this same [`start`] on a free port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use rustorium_broker::{
    Backend, BackendFuture, Balance, Broker, CommandError, Config, KeyConfig, Role, TokenInfo,
    Transfer, TransferAccepted,
};
use serde_json::json;

/// The app's command backend: it lists one token and forwards transfers to its own
/// settlement (here: it only numbers them).
#[derive(Default)]
pub struct AppBackend {
    submitted: AtomicU64,
}

/// The one token this app knows.
pub const APP_TOKEN: &str = "0xa99";

/// Where `cargo run --example embed` listens.
pub const ADDR: &str = "127.0.0.1:8080";

/// The key of the app's clients (subscribe and commands; there is no publish key: the app
/// publishes from Rust, through its own `/prices` route).
pub const SUBSCRIBER_KEY: &str = "demo-subscriber-key";

impl Backend for AppBackend {
    fn execute_transaction(&self, transfer: Transfer) -> BackendFuture<TransferAccepted> {
        let result = if transfer.token_id.eq_ignore_ascii_case(APP_TOKEN) {
            let n = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(TransferAccepted {
                transaction_id: format!("0x{n:064x}"),
                status: "pending".into(),
            })
        } else {
            Err(CommandError::UnknownToken(transfer.token_id))
        };
        Box::pin(async move { result })
    }

    fn get_token_info(&self, token_id: String) -> BackendFuture<TokenInfo> {
        let result = if token_id.eq_ignore_ascii_case(APP_TOKEN) {
            Ok(TokenInfo {
                token_id,
                name: "App Token".into(),
                symbol: "APP".into(),
                total_supply: 21_000_000,
            })
        } else {
            Err(CommandError::UnknownToken(token_id))
        };
        Box::pin(async move { result })
    }

    fn get_balance(&self, address: String, token_id: String) -> BackendFuture<Balance> {
        Box::pin(async move {
            Ok(Balance {
                address,
                token_id,
                balance: 0,
            })
        })
    }
}

/// The application's own route: takes a new price and publishes it to `market_data`.
pub async fn set_price(
    broker: web::Data<Broker>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (symbol, price) = path.into_inner();
    let data = json!({
        "symbol": symbol,
        "price": price,
        "change_24h": "0",
        "volume_24h": "0",
        "timestamp": "2024-01-01T12:00:00Z",
    });
    match broker.publish("market_data", data).await {
        Ok(id) => HttpResponse::Ok().json(json!({"published": id})),
        Err(e) => HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    }
}

/// The broker's configuration for this app: one key for the app's clients, who may
/// subscribe and send commands.
pub fn broker_config(subscriber_secret: &str) -> Config {
    let mut config = Config::default();
    config.keys.push(KeyConfig {
        name: "app-clients".into(),
        secret: subscriber_secret.into(),
        roles: vec![Role::Subscribe, Role::Command],
        max_connections: None,
    });
    config
}

/// Everything the app mounts: its own routes and the broker's.
pub fn routes(broker: Broker) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(broker.clone()))
            .route("/hello", web::get().to(|| async { "hello from the app" }))
            .route("/prices/{symbol}/{price}", web::post().to(set_price));
        broker.configure()(cfg);
    }
}

/// Starts the whole app on `addr` (port 0 picks a free port): the broker with
/// [`AppBackend`] answering commands, the app's routes and the broker's. Returns the
/// server, to be awaited, and the address bound. Must be called inside a running actix
/// `System`.
pub fn start(addr: &str) -> std::io::Result<(Server, SocketAddr)> {
    let backend = Arc::new(AppBackend::default());
    let broker = Broker::start_with_backend(broker_config(SUBSCRIBER_KEY), backend)
        .map_err(std::io::Error::other)?;
    let on_connect = broker.on_connect();
    let server = HttpServer::new(move || App::new().configure(routes(broker.clone())))
        .on_connect(on_connect)
        .bind(addr)?;
    let bound = server.addrs().first().copied().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr}: no address bound"),
        )
    })?;
    Ok((server.run(), bound))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (server, addr) = start(ADDR)?;
    println!("embed example listening on {addr} (key {SUBSCRIBER_KEY}: subscribe and commands)");
    println!(
        "  app:       GET http://{addr}/hello, POST http://{addr}/prices/{{symbol}}/{{price}}"
    );
    println!("  subscribe: ws://{addr}/ws?token={SUBSCRIBER_KEY}");
    println!("  v1 API:    ws://{addr}/v1?api_key={SUBSCRIBER_KEY}");
    println!(
        "  commands answer token {APP_TOKEN} only (the app's backend, not the built-in ledger)"
    );
    server.await
}
