//! Connection setup cost of signed tokens against the release binary: connections set up
//! per second with a static key, an HS256 token and an ES256 token. One setup is: TCP
//! connect, WebSocket upgrade with the credential in `?token=`, a `subscribe` and its
//! `subscribe_success` (so admission, verification included, is done), then a close 1000.
//! `--workers N` clients set up connections back to back for `--secs S` per run; the three
//! credentials alternate for `--rounds R`, so that the machine's drift falls on none of them.
//! Also one verification in process (no sockets), per algorithm.
//!
//! `cargo bench --bench tokens -- [--secs 5] [--workers 8] [--rounds 3]`

mod common;
mod loadgen;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{arg, spawn_broker, KEY};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for any one step of a setup.
const STEP: Duration = Duration::from_secs(10);

/// One setup: connect with `credential`, subscribe, read the reply, close 1000.
async fn setup(addr: std::net::SocketAddr, credential: &str) -> Result<(), String> {
    let url = format!("ws://{addr}/ws?token={credential}");
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(
        r#"{"type":"subscribe","id":"s","data":{"channel":"blocks"}}"#,
    ))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("subscribe_success") => break,
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""type":"heartbeat""#) => continue,
            Ok(Some(Ok(Message::Text(t)))) => return Err(format!("refused: {t}")),
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("connection ended: {other:?}")),
        }
    }
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = ws.close(Some(bye)).await;
    Ok(())
}

/// Setups per second with `credential` for `secs` seconds, `workers` at a time.
async fn rate(
    addr: std::net::SocketAddr,
    credential: String,
    secs: u64,
    workers: usize,
) -> Result<(f64, usize), String> {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let credential = credential.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while Instant::now() < until {
                setup(addr, &credential).await?;
                done += 1;
            }
            Ok::<_, String>(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), total))
}

/// Microseconds one in-process verification of `token` takes, over `n` runs (no sockets).
fn verify_us(
    issuers: &rustorium_broker::tokens::Issuers,
    token: &str,
    n: u32,
) -> Result<f64, String> {
    use rustorium_actors::token::TokenVerifier;
    let started = Instant::now();
    for _ in 0..n {
        issuers
            .verify(std::hint::black_box(token))
            .map_err(|e| e.message().to_owned())?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

fn main() {
    let (secs, workers, rounds) = (
        arg("--secs", 5) as u64,
        arg("--workers", 8),
        arg("--rounds", 3),
    );
    let secret = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let pair = match rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256) {
        Ok(p) => p,
        Err(e) => return eprintln!("key pair: {e}"),
    };
    let public =
        std::env::temp_dir().join(format!("rustorium-bench-es-{}.pem", std::process::id()));
    if let Err(e) = std::fs::write(&public, pair.public_key_pem()) {
        return eprintln!("key file: {e}");
    }
    common::run_bench(async move {
        let issuers = format!(
            "[[token_issuers]]\nname = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nmax_connections_per_sub = 100000\n\
             [[token_issuers]]\nname = \"es\"\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\nmax_connections_per_sub = 100000\n",
            public.display()
        );
        let (_broker, addr) = spawn_broker("max_connections = 100000", &issuers)?;
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs()
            + 3600;
        let claims = json!({"sub": "bench-user", "exp": exp});
        let hs_key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
        let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &hs_key)
            .map_err(|e| e.to_string())?;
        let es_key =
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
        let es = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &es_key)
            .map_err(|e| e.to_string())?;
        let configs = rustorium_broker::Config::from_toml(&issuers)
            .map_err(|e| e.to_string())?
            .token_issuers;
        let metrics = std::sync::Arc::new(rustorium_actors::metrics::Metrics::default());
        let local = rustorium_broker::tokens::Issuers::new(&configs, metrics);
        println!(
            "one verification in process: HS256 {:.1} us, ES256 {:.1} us",
            verify_us(&local, &hs, 20_000)?,
            verify_us(&local, &es, 5_000)?
        );
        // Warm-up: the first connections pay for lazy initialisation on both sides.
        rate(addr, KEY.to_owned(), 1, workers).await?;
        println!(
            "connection setups per second, {workers} clients, {secs} s a run, {rounds} rounds \
             alternating the credentials (release broker):"
        );
        let modes = [
            ("static key", KEY.to_owned()),
            ("HS256 token", hs),
            ("ES256 token", es),
        ];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            for (i, (_, credential)) in modes.iter().enumerate() {
                rates[i].push(rate(addr, credential.clone(), secs, workers).await?.0);
            }
        }
        for ((name, _), runs) in modes.iter().zip(&rates) {
            let mean = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
            let low = runs.iter().copied().fold(f64::INFINITY, f64::min);
            let high = runs.iter().copied().fold(0.0, f64::max);
            println!("  {name:<12} {mean:>8.0} /s mean  ({low:.0} - {high:.0})");
        }
        let _ = std::fs::remove_file(&public);
        Ok(())
    });
}
