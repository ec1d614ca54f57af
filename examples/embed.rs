//! Embedding the broker in an existing actix-web application: the app keeps its own
//! routes, mounts the broker's (`/ws`, `/v1`, `/api/publish`, `/health`, `/ready`,
//! `/metrics`), publishes from Rust with no HTTP in between, and answers the clients'
//! commands with its own [`Backend`].
//!
//! Run: `cargo run --example embed`, then connect to
//! `ws://127.0.0.1:8080/ws?token=demo-subscriber-key`, subscribe to `market_data`, and
//! `curl -X POST http://127.0.0.1:8080/prices/MTK%2FUSD/1.23`.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let broker =
        Broker::start(broker_config("demo-subscriber-key")).map_err(std::io::Error::other)?;
    let on_connect = broker.on_connect();
    HttpServer::new(move || App::new().configure(routes(broker.clone())))
        .on_connect(on_connect)
        .bind("127.0.0.1:8080")?
        .run()
        .await
}
