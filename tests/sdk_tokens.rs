//! The Rust SDK's token provider against the real broker: tokens that expire every few
//! seconds during a stream, on both dialects, are refreshed in place (no reconnect, no event
//! lost); and when the provider cannot give one in time, the broker's 4000 `token expired`
//! is followed by a reconnect with a new token that resumes with nothing lost.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustorium_broker::tokens::{TokenAlgorithm, TokenIssuerConfig};
use rustorium_sdk::{Backoff, Event, Subscription, TokenProvider, Update, WebSocketClient};
use serde_json::json;

/// How long each token lives: a few seconds (whole seconds, as `exp` counts).
const TOKEN_SECS: u64 = 3;

fn secret() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

fn broker(secret: &str) -> TestBroker {
    let mut c = config();
    c.token_issuers = vec![TokenIssuerConfig {
        name: "app".into(),
        algorithm: TokenAlgorithm::HS256,
        secret: Some(secret.into()),
        public_key_file: None,
        iss: None,
        aud: None,
        leeway_ms: 200,
        max_connections_per_sub: None,
    }];
    start(c)
}

/// A provider minting a token of `sub` for TOKEN_SECS at each call, counting the calls;
/// calls whose number `fails` accepts answer an error instead.
fn provider(
    secret: &str,
    sub: &'static str,
    calls: Arc<AtomicU64>,
    fails: fn(u64) -> bool,
) -> TokenProvider {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
    TokenProvider::new(move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = json!({"sub": sub, "exp": now + TOKEN_SECS});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key);
        async move {
            if fails(n) {
                return Err(format!("the app's backend is down (call {n})"));
            }
            token.map_err(|e| e.to_string())
        }
    })
}

fn client(url: String, provider: TokenProvider) -> WebSocketClient {
    WebSocketClient::new()
        .with_endpoint(url)
        .with_token_provider(provider)
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(40),
            jitter: 0.2,
        })
        .build()
        .expect("client settings")
}

/// Publishes a block every 40 ms for `span`; returns the ids in order.
async fn feed(addr: std::net::SocketAddr, span: Duration) -> Vec<String> {
    let started = tokio::time::Instant::now();
    let mut ids = Vec::new();
    let mut n = 1;
    while started.elapsed() < span {
        ids.extend(publish_ok(addr, &block(n)).await);
        n += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_every_few_seconds_are_refreshed_in_place_on_both_dialects() {
    let secret = secret();
    let b = broker(&secret);
    let (ws_calls, v1_calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let never = |_| false;
    let ws = client(
        format!("ws://{}/ws", b.addr),
        provider(&secret, "viewer", ws_calls.clone(), never),
    );
    let v1 = client(
        format!("ws://{}/v1", b.addr),
        provider(&secret, "viewer", v1_calls.clone(), never),
    );
    let mut events = ws.subscribe_events(&["blocks"]).await.expect("subscribed");
    let mut updates = v1
        .subscribe([Subscription::blocks()])
        .await
        .expect("subscribed");
    // Three token lifetimes and more.
    let published = feed(b.addr, Duration::from_secs(3 * TOKEN_SECS + 1)).await;
    let mut got_ws = Vec::new();
    while got_ws.len() < published.len() {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::NewBlock(block))) => got_ws.push(block.meta.id),
            other => panic!("after {} events: {other:?}", got_ws.len()),
        }
    }
    let mut got_v1 = Vec::new();
    while got_v1.len() < published.len() {
        match tokio::time::timeout(WAIT, updates.next()).await {
            Ok(Some(Ok(Update::Block(block)))) => got_v1.push(block.meta.id),
            other => panic!("after {} updates: {other:?}", got_v1.len()),
        }
    }
    assert_eq!(got_ws, published, "every event, once, in order (ws)");
    assert_eq!(got_v1, published, "every event, once, in order (v1)");
    for (stats, calls) in [(events.stats(), &ws_calls), (updates.stats(), &v1_calls)] {
        assert_eq!(stats.connections, 1, "no reconnect: {stats:?}");
        assert_eq!(stats.resumes, 0, "no resume: {stats:?}");
        assert!(stats.token_refreshes >= 3, "refreshed in place: {stats:?}");
        assert!(calls.load(Ordering::SeqCst) >= 4, "the provider was asked");
    }
    let text = metrics(b.addr).await;
    assert_eq!(metric(&text, "rustorium_tokens_expired_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_runs_out_is_replaced_by_a_reconnect_that_resumes_with_nothing_lost() {
    let secret = secret();
    let b = broker(&secret);
    let calls = Arc::new(AtomicU64::new(0));
    // The first refreshes fail (the app's backend is down) until the token runs out.
    let client = client(
        format!("ws://{}/ws", b.addr),
        provider(&secret, "viewer", calls.clone(), |n| (2..=5).contains(&n)),
    );
    let mut events = client
        .subscribe_events(&["blocks"])
        .await
        .expect("subscribed");
    let published = feed(b.addr, Duration::from_secs(2 * TOKEN_SECS + 2)).await;
    let mut got = Vec::new();
    while got.len() < published.len() {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::NewBlock(block))) => got.push(block.meta.id),
            other => panic!("after {} events: {other:?}", got.len()),
        }
    }
    assert_eq!(got, published, "every event, once, in order");
    let stats = events.stats();
    assert!(stats.resumes >= 1, "resumed after the expiry: {stats:?}");
    assert_eq!(stats.gaps, 0, "{stats:?}");
    let text = metrics(b.addr).await;
    assert!(metric(&text, "rustorium_tokens_expired_total").unwrap_or(0.0) >= 1.0);
}
