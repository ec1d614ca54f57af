//! The demo feed: synthetic activity so a freshly started broker shows live events on all
//! six channels. Transfers between the genesis accounts go through the ledger exactly as a
//! client's would; a random-walk price feed publishes `token_updates` and `market_data`
//! (`MTK/USD`, ...). Both streams are bounded in rate and in count. Everything here is
//! synthetic, and the banner and README say so.

use std::sync::Arc;
use std::time::Duration;

use rustorium_actors::backend::{Backend, Transfer};
use rustorium_actors::{NewEvent, Publisher};
use serde_json::json;

use crate::ledger::config::{DemoConfig, LedgerConfig};
use crate::ledger::Ledger;

/// Starts both synthetic feeds. Call inside an actix System.
pub fn spawn(
    config: &DemoConfig,
    ledger_config: &LedgerConfig,
    ledger: Arc<Ledger>,
    publisher: Publisher,
) {
    let accounts: Vec<String> = {
        let mut a: Vec<String> = ledger_config
            .tokens
            .iter()
            .flat_map(|t| t.balances.keys().map(|k| k.to_ascii_lowercase()))
            .collect();
        a.sort();
        a.dedup();
        a
    };
    let tokens: Vec<String> = ledger_config
        .tokens
        .iter()
        .map(|t| t.token_id.clone())
        .collect();
    if accounts.len() >= 2 && !tokens.is_empty() {
        let (every, max) = (config.transfer_interval_ms, config.max_transfers);
        let ledger = ledger.clone();
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(Duration::from_millis(every));
            for _ in 0..max {
                tick.tick().await;
                let from = rand::random_range(0..accounts.len());
                let to = (from + rand::random_range(1..accounts.len())) % accounts.len();
                let transfer = Transfer {
                    from: accounts[from].clone(),
                    to: accounts[to].clone(),
                    amount: rand::random_range(1..=100),
                    token_id: tokens[rand::random_range(0..tokens.len())].clone(),
                };
                // A refusal (the sender ran dry) is part of the demo, like a client's.
                let _ = ledger.execute_transaction(transfer).await;
            }
            log::info!("demo: {max} synthetic transfers done; the transfer feed stops");
        });
    }
    let (every, max) = (config.price_interval_ms, config.max_price_updates);
    actix_web::rt::spawn(async move {
        let start: Vec<(String, String, f64)> = ledger
            .tokens()
            .into_iter()
            .map(|(id, symbol, price)| (id, symbol, price.parse().unwrap_or(1.0)))
            .collect();
        let mut prices: Vec<f64> = start.iter().map(|t| t.2).collect();
        let mut volumes: Vec<u64> = vec![0; start.len()];
        let mut tick = actix_web::rt::time::interval(Duration::from_millis(every));
        for _ in 0..max {
            tick.tick().await;
            let timestamp = rustorium_actors::heartbeat::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            let mut events = Vec::with_capacity(start.len() * 2);
            for (i, (id, symbol, first)) in start.iter().enumerate() {
                let step = 1.0 + (rand::random::<f64>() - 0.5) * 0.02;
                prices[i] = (prices[i] * step).max(0.0001);
                let volume = rand::random_range(100..10_000u64);
                volumes[i] += volume;
                let price = format!("{:.4}", prices[i]);
                let change = if *first > 0.0 {
                    (prices[i] / first - 1.0) * 100.0
                } else {
                    0.0
                };
                ledger.set_price(id, price.clone());
                events.push(NewEvent::new(
                    "token_updates",
                    json!({"token_id": id, "price": price, "volume": volume.to_string(),
                           "timestamp": timestamp}),
                ));
                events.push(NewEvent::new(
                    "market_data",
                    json!({"symbol": format!("{symbol}/USD"), "price": price,
                           "change_24h": format!("{change:.2}"),
                           "volume_24h": volumes[i].to_string(), "timestamp": timestamp}),
                ));
            }
            if let Err(e) = publisher.publish(events).await {
                log::warn!("demo: price update not published: {e}");
            }
        }
        log::info!("demo: {max} synthetic price rounds done; the price feed stops");
    });
}
