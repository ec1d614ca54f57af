//! Embedding the broker in an existing actix-web application: the app keeps its own
//! routes, mounts the broker's (`/ws`, `/api/publish`, `/health`, `/ready`, `/metrics`),
//! and publishes from Rust with no HTTP in between.
//!
//! Run: `cargo run --example embed`, then connect to
//! `ws://127.0.0.1:8080/ws?token=demo-subscriber-key`, subscribe to `market_data`, and
//! `curl -X POST http://127.0.0.1:8080/prices/MTK%2FUSD/1.23`.

use actix_web::{web, App, HttpResponse, HttpServer};
use rustorium_broker::{Broker, Config, KeyConfig, Role};
use serde_json::json;

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

/// The broker's configuration for this app: one subscriber key for the app's clients.
pub fn broker_config(subscriber_secret: &str) -> Config {
    let mut config = Config::default();
    config.keys.push(KeyConfig {
        name: "app-clients".into(),
        secret: subscriber_secret.into(),
        roles: vec![Role::Subscribe],
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
    HttpServer::new(move || App::new().configure(routes(broker.clone())))
        .bind("127.0.0.1:8080")?
        .run()
        .await
}
