//! Signed tokens (PROTOCOL.md section 12) on real sockets, both dialects: every algorithm
//! and key source accepted; every refusal 4000 / `invalid_token` / HTTP 401 with its metric
//! reason; a grant on subscribe and on reconnect; `refresh` past the first `exp`; expiry
//! closing 4000 and a resume with a new token; the per-`sub` cap across tokens; a reload
//! that removes an issuer; `check-config` on bad issuers. Keys are generated here (rcgen),
//! tokens minted here with the `jsonwebtoken` crate.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustorium_broker::tokens::{TokenAlgorithm, TokenIssuerConfig};
use rustorium_broker::Config;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A key pair made in the test: what signs (the app's side) and the public PEM file the
/// broker reads.
struct Keys {
    signing: EncodingKey,
    public_file: PathBuf,
    public_pem: String,
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "rustorium-tokens-{}-{}-{name}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, text).expect("write key file");
    path
}

fn keys(alg: &'static rcgen::SignatureAlgorithm, name: &str) -> Keys {
    let pair = rcgen::KeyPair::generate_for(alg).expect("key pair generated");
    let private = pair.serialize_pem();
    let signing = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        EncodingKey::from_ec_pem(private.as_bytes())
    } else if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(private.as_bytes())
    } else {
        EncodingKey::from_rsa_pem(private.as_bytes())
    }
    .expect("signing key");
    let public_pem = pair.public_key_pem();
    Keys {
        signing,
        public_file: temp_file(&format!("{name}.pem"), &public_pem),
        public_pem,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token of `claims`, signed with `key` by `alg`, with `kid` in its header if given.
fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).expect("token minted")
}

fn hs_secret() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

fn hs_issuer(name: &str, secret: &str, leeway_ms: u64) -> TokenIssuerConfig {
    TokenIssuerConfig {
        name: name.into(),
        algorithm: TokenAlgorithm::HS256,
        secret: Some(secret.into()),
        public_key_file: None,
        iss: None,
        aud: None,
        leeway_ms,
        max_connections_per_sub: None,
    }
}

fn pem_issuer(name: &str, algorithm: TokenAlgorithm, file: &std::path::Path) -> TokenIssuerConfig {
    TokenIssuerConfig {
        public_key_file: Some(file.to_path_buf()),
        secret: None,
        algorithm,
        ..hs_issuer(name, "", 1000)
    }
}

/// The common config with `issuers` besides the keys.
fn with_issuers(issuers: Vec<TokenIssuerConfig>) -> Config {
    let mut c = config();
    c.token_issuers = issuers;
    c
}

/// An HS256 token of `sub` valid for `secs`, with `extra` claims.
fn hs(secret: &str, sub: &str, secs: u64, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + secs});
    if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        c.extend(extra);
    }
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
    mint(Algorithm::HS256, None, &key, claims)
}

/// Connects with `token` on `/ws` (`?token=`) or `/v1` (`?api_key=`).
async fn connect(addr: std::net::SocketAddr, v1: bool, token: &str) -> Client {
    if v1 {
        Client::v1(addr, token).await
    } else {
        Client::ws(addr, token).await
    }
}

/// The error code of a frame, as the dialect writes it (ws number, v1 string).
fn code(frame: &Value) -> Value {
    if frame["error"].is_object() {
        frame["error"]["code"].clone()
    } else {
        frame["data"]["code"].clone()
    }
}

/// Subscribes on either dialect; returns the subscription id.
async fn sub(c: &mut Client, channel: &str) -> String {
    let reply = c
        .request(json!({"type": "subscribe", "id": "s", "data": {"channel": channel}}))
        .await;
    reply["data"]["subscription_id"]
        .as_str()
        .unwrap_or_else(|| panic!("subscribe refused: {reply}"))
        .to_owned()
}

/// Asserts the connection was refused: one `invalid_token` error, then close 4000.
async fn assert_refused_4000(mut c: Client, v1: bool, what: &str) {
    let err = c.recv().await;
    assert_eq!(err["type"], "error", "{what}: {err}");
    let want = if v1 {
        json!("invalid_token")
    } else {
        json!(4000)
    };
    assert_eq!(code(&err), want, "{what}: {err}");
    assert_eq!(c.expect_close().await.0, 4000, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_and_key_source_is_accepted_and_roles_apply_to_http_publish() {
    let secret = hs_secret();
    let es = keys(&rcgen::PKCS_ECDSA_P256_SHA256, "es");
    let ed = keys(&rcgen::PKCS_ED25519, "ed");
    let rs = keys(&rcgen::PKCS_RSA_SHA256, "rs");
    let b = start(with_issuers(vec![
        hs_issuer("app-hs", &secret, 1000),
        pem_issuer("app-es", TokenAlgorithm::ES256, &es.public_file),
        pem_issuer("app-ed", TokenAlgorithm::EdDSA, &ed.public_file),
        pem_issuer("app-rs", TokenAlgorithm::RS256, &rs.public_file),
    ]));
    let claims = |sub: &str| json!({"sub": sub, "exp": now() + 60});
    let hs_token = hs(&secret, "alice", 60, json!({}));
    let es_token = mint(Algorithm::ES256, None, &es.signing, claims("bob"));
    let ed_token = mint(
        Algorithm::EdDSA,
        Some("app-ed"),
        &ed.signing,
        claims("carol"),
    );
    let rs_token = mint(Algorithm::RS256, None, &rs.signing, claims("dave"));

    // ?token= on /ws, ?api_key= on /v1, Authorization: Bearer on /ws, ?token= on /v1.
    let mut a = Client::ws(b.addr, &hs_token).await;
    a.subscribe("blocks", json!({})).await;
    let mut e = Client::v1(b.addr, &es_token).await;
    let reply = e
        .request(json!({"type": "subscribe", "id": 1, "data": {"channel": "market_data"}}))
        .await;
    assert_eq!(reply["type"], "subscription_confirmation", "{reply}");
    let mut req = format!("ws://{}/ws", b.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {ed_token}").parse().expect("header"),
    );
    let mut d = Client::connect_request(req).await;
    d.subscribe("state", json!({})).await;
    let mut r = Client::connect(b.addr, &format!("/v1?token={rs_token}")).await;
    let reply = r
        .request(json!({"type": "subscribe", "id": 1, "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(reply["type"], "subscription_confirmation", "{reply}");

    // Roles: a subscribe-only token may not publish (403), a publish token may (200).
    assert_eq!(publish(b.addr, &hs_token, &block(1)).await.status, 403);
    let publisher = hs(&secret, "feed", 60, json!({"roles": ["publish"]}));
    assert_eq!(publish(b.addr, &publisher, &block(1)).await.status, 200);
    let got = a.recv().await;
    assert_eq!(got["type"], "new_block", "{got}");
    // A subscribe-only token may not command (4006).
    let reply = a
        .request(json!({"type": "get_token_info", "id": "c", "data": {"token_id": "0x1"}}))
        .await;
    assert_eq!(code(&reply), json!(4006), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_4000_on_both_dialects_401_on_publish_with_its_metric() {
    let secret = hs_secret();
    let other_secret = hs_secret();
    let rs = keys(&rcgen::PKCS_RSA_SHA256, "rs");
    let es = keys(&rcgen::PKCS_ECDSA_P256_SHA256, "es");
    let mut strict = hs_issuer("strict", &hs_secret(), 1000);
    strict.iss = Some("https://app.example".into());
    strict.aud = Some("rustorium".into());
    let strict_secret = strict.secret.clone().expect("secret");
    let b = start(with_issuers(vec![
        hs_issuer("app-hs", &secret, 1000),
        pem_issuer("app-rs", TokenAlgorithm::RS256, &rs.public_file),
        strict,
    ]));
    let hmac = |s: &str| EncodingKey::from_secret(s.as_bytes()).expect("hmac key");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let good = json!({"sub": "mallory", "exp": now() + 60});
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    // The RSA public key used as an HMAC secret, naming the RS256 issuer, or not.
    let confused_kid = mint(
        Algorithm::HS256,
        Some("app-rs"),
        &hmac(&rs.public_pem),
        good.clone(),
    );
    let strict_claims =
        |iss: &str, aud: &str| json!({"sub": "mallory", "exp": now() + 60, "iss": iss, "aud": aud});
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "algorithm"),
        ("RSA public key as HMAC secret", confused_kid, "algorithm"),
        (
            "ES256 token (no issuer for ES256)",
            mint(Algorithm::ES256, None, &es.signing, good.clone()),
            "algorithm",
        ),
        (
            "bad signature",
            mint(Algorithm::HS256, None, &hmac(&other_secret), good.clone()),
            "signature",
        ),
        (
            "no exp",
            mint(
                Algorithm::HS256,
                None,
                &hmac(&secret),
                json!({"sub": "mallory"}),
            ),
            "expired",
        ),
        (
            "exp as a string (CVE-2026-25537)",
            mint(
                Algorithm::HS256,
                None,
                &hmac(&secret),
                json!({"sub": "mallory", "exp": (now() + 60).to_string()}),
            ),
            "expired",
        ),
        (
            "past exp",
            mint(
                Algorithm::HS256,
                None,
                &hmac(&secret),
                json!({"sub": "mallory", "exp": now() - 30}),
            ),
            "expired",
        ),
        (
            "future nbf",
            mint(
                Algorithm::HS256,
                None,
                &hmac(&secret),
                json!({"sub": "mallory", "exp": now() + 60, "nbf": now() + 30}),
            ),
            "not_yet_valid",
        ),
        (
            "wrong iss",
            mint(
                Algorithm::HS256,
                Some("strict"),
                &hmac(&strict_secret),
                strict_claims("https://evil.example", "rustorium"),
            ),
            "issuer",
        ),
        (
            "wrong aud",
            mint(
                Algorithm::HS256,
                Some("strict"),
                &hmac(&strict_secret),
                strict_claims("https://app.example", "other"),
            ),
            "audience",
        ),
        (
            "unknown kid",
            mint(
                Algorithm::HS256,
                Some("nobody"),
                &hmac(&secret),
                good.clone(),
            ),
            "unknown_issuer",
        ),
        (
            "roles outside subscribe, publish, command",
            hs(&secret, "mallory", 60, json!({"roles": ["admin"]})),
            "claims",
        ),
        (
            "a channels grant of the wrong shape",
            hs(&secret, "mallory", 60, json!({"channels": ["blocks"]})),
            "claims",
        ),
        ("three parts of garbage", "a.b.c".to_owned(), "malformed"),
    ];
    for (what, token, _) in &cases {
        assert_refused_4000(Client::ws(b.addr, token).await, false, what).await;
        assert_refused_4000(Client::v1(b.addr, token).await, true, what).await;
        let r = publish(b.addr, token, &block(1)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_token", "{what}");
    }
    // The strict issuer takes its own good token: the refusals above were for the reason.
    let fine = mint(
        Algorithm::HS256,
        Some("strict"),
        &hmac(&strict_secret),
        strict_claims("https://app.example", "rustorium"),
    );
    let mut ok = Client::ws(b.addr, &fine).await;
    ok.subscribe("blocks", json!({})).await;
    let text = metrics(b.addr).await;
    for (what, _, reason) in &cases {
        let name = format!("rustorium_token_refusals_total{{reason=\"{reason}\"}}");
        let n = metric(&text, &name).unwrap_or(0.0);
        assert!(n >= 3.0, "{what}: {name} is {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_limits_subscribe_and_reconnect_and_a_sub_never_claims_another_subs() {
    let secret = hs_secret();
    let b = start(with_issuers(vec![hs_issuer("app", &secret, 1000)]));
    let grant = json!({"channels": {"transaction_updates": {"address": ["0xAbC"]}, "blocks": {}}});
    let granted = hs(&secret, "wallet", 60, grant.clone());
    for v1 in [false, true] {
        let mut c = connect(b.addr, v1, &granted).await;
        let forbidden = if v1 { json!("forbidden") } else { json!(4006) };
        let inside = c
            .request(json!({"type": "subscribe", "id": 1, "data": {"channel": "transaction_updates", "address": "0xabc"}}))
            .await;
        assert!(
            inside["data"]["subscription_id"].is_string(),
            "inside the grant: {inside}"
        );
        for outside in [
            json!({"channel": "transaction_updates"}),
            json!({"channel": "transaction_updates", "filter": {"address": "0xdef"}}),
            json!({"channel": "token_updates"}),
            json!({"channel": "market_data", "symbols": ["BTC-USD"]}),
        ] {
            let reply = c
                .request(json!({"type": "subscribe", "id": "x", "data": outside}))
                .await;
            assert_eq!(reply["type"], "error", "{outside}: {reply}");
            assert_eq!(code(&reply), forbidden, "{outside}: {reply}");
            assert_eq!(reply["id"], "x");
        }
        let blocks = c
            .request(json!({"type": "subscribe", "id": 2, "data": {"channel": "blocks", "filter": {"confirmations": 2}}}))
            .await;
        assert!(blocks["data"]["subscription_id"].is_string(), "{blocks}");
    }

    // The same sub without a grant subscribes to three channels, then drops.
    let wide = hs(&secret, "wallet", 60, json!({}));
    let mut w = Client::ws(b.addr, &wide).await;
    let tu = w.subscribe("transaction_updates", json!({})).await;
    let bl = w.subscribe("blocks", json!({})).await;
    let md = w
        .subscribe("market_data", json!({"symbols": ["BTC-USD"]}))
        .await;
    w.drop_tcp();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = vec![tu.clone(), bl.clone(), md.clone()];

    // The granted token restores only blocks; the rest are failed (and stay parked).
    let mut g = Client::v1(b.addr, &granted).await;
    let reply = g.reconnect(Value::Null, &all).await;
    assert_eq!(reply["type"], "reconnect_confirmation", "{reply}");
    assert_eq!(reply["data"]["subscriptions"], json!([bl]), "{reply}");
    let mut failed: Vec<String> =
        serde_json::from_value(reply["data"]["failed"].clone()).expect("failed is a list");
    failed.sort();
    let mut want = vec![tu.clone(), md.clone()];
    want.sort();
    assert_eq!(failed, want, "{reply}");
    assert_eq!(reply["data"]["recovered"], false);

    // Another sub, with no grant at all, claims none of them.
    let stranger = hs(&secret, "thief", 60, json!({}));
    let mut t = Client::ws(b.addr, &stranger).await;
    let reply = t.reconnect(Value::Null, &all).await;
    assert_eq!(reply["data"]["subscriptions"], json!([]), "{reply}");
    // Nor does a configured key.
    let mut k = Client::ws(b.addr, SUB_KEY).await;
    let reply = k.reconnect(Value::Null, &all).await;
    assert_eq!(reply["data"]["subscriptions"], json!([]), "{reply}");

    // The sub's wide token gets the two that were outside the grant back.
    let mut w2 = Client::ws(b.addr, &wide).await;
    let reply = w2.reconnect(Value::Null, &[tu.clone(), md.clone()]).await;
    assert_eq!(reply["type"], "reconnect_success", "{reply}");
    assert_eq!(reply["data"]["failed"], json!([]), "{reply}");
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_a_connection_past_its_first_exp_and_refusals_keep_the_old_token() {
    let secret = hs_secret();
    let b = start(with_issuers(vec![hs_issuer("app", &secret, 200)]));
    let first = now() + 2;
    let token = |sub: &str, exp: u64| {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
        mint(
            Algorithm::HS256,
            None,
            &key,
            json!({"sub": sub, "exp": exp}),
        )
    };
    let mut ws = Client::ws(b.addr, &token("reader", first)).await;
    let mut v1 = Client::v1(b.addr, &token("reader", first)).await;
    for c in [&mut ws, &mut v1] {
        sub(c, "blocks").await;
    }
    publish_ok(b.addr, &block(1)).await;
    for c in [&mut ws, &mut v1] {
        assert_eq!(c.recv().await["data"]["number"], 1);
    }
    let later = now() + 8;
    for (c, v1_dialect) in [(&mut ws, false), (&mut v1, true)] {
        // An invalid token: invalid_request; another sub: forbidden; the old one stays.
        let reply = c
            .request(json!({"type": "refresh", "id": "bad", "data": {"token": "a.b.c"}}))
            .await;
        let want = if v1_dialect {
            json!("invalid_request")
        } else {
            json!(4002)
        };
        assert_eq!(code(&reply), want, "{reply}");
        assert_eq!(reply["id"], "bad");
        let reply = c
            .request(json!({"type": "refresh", "id": "other", "data": {"token": token("someone-else", later)}}))
            .await;
        let want = if v1_dialect {
            json!("forbidden")
        } else {
            json!(4006)
        };
        assert_eq!(code(&reply), want, "{reply}");
        let reply = c
            .request(
                json!({"type": "refresh", "id": "ok", "data": {"token": token("reader", later)}}),
            )
            .await;
        let kind = if v1_dialect {
            "refresh_confirmation"
        } else {
            "refresh_success"
        };
        assert_eq!(reply["type"], kind, "{reply}");
        assert_eq!(reply["id"], "ok");
        let expires = reply["data"]["expires_at"].as_str().unwrap_or_default();
        assert_eq!(
            expires,
            rustorium_actors::heartbeat::rfc3339(later),
            "{reply}"
        );
    }
    // Past the first exp and its leeway: still open, still delivering, same subscription.
    let past = Duration::from_secs(first + 1 - now()).max(Duration::from_millis(1200));
    tokio::time::sleep(past).await;
    publish_ok(b.addr, &block(2)).await;
    for c in [&mut ws, &mut v1] {
        assert_eq!(c.recv().await["data"]["number"], 2);
    }
    // A connection made with a configured key has no token to refresh.
    let mut k = Client::ws(b.addr, SUB_KEY).await;
    let reply = k
        .request(json!({"type": "refresh", "id": 1, "data": {"token": token("reader", later)}}))
        .await;
    assert_eq!(code(&reply), json!(4006), "{reply}");
    let text = metrics(b.addr).await;
    assert!(metric(&text, "rustorium_token_refreshes_total").unwrap_or(0.0) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_4000_and_a_new_token_of_the_sub_resumes_what_was_missed() {
    let secret = hs_secret();
    let b = start(with_issuers(vec![hs_issuer("app", &secret, 200)]));
    let token = |exp: u64| {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
        mint(
            Algorithm::HS256,
            None,
            &key,
            json!({"sub": "walker", "exp": exp}),
        )
    };
    let first = token(now() + 2);
    let mut ws = Client::ws(b.addr, &first).await;
    let mut v1 = Client::v1(b.addr, &first).await;
    let ws_sid = ws.subscribe("blocks", json!({})).await;
    let v1_sid = sub(&mut v1, "blocks").await;
    let ids = publish_ok(b.addr, &block(1)).await;
    for c in [&mut ws, &mut v1] {
        assert_eq!(c.recv().await["id"], ids[0].as_str());
    }
    for c in [&mut ws, &mut v1] {
        let (code, reason) = c.expect_close().await;
        assert_eq!((code, reason.as_str()), (4000, "token expired"));
    }
    let missed = publish_ok(b.addr, &json!([block(2), block(3)])).await;
    let fresh = token(now() + 60);
    for (v1_dialect, sid) in [(false, &ws_sid), (true, &v1_sid)] {
        let mut c = connect(b.addr, v1_dialect, &fresh).await;
        let reply = c.reconnect(&ids[0], std::slice::from_ref(sid)).await;
        assert_eq!(reply["data"]["recovered"], true, "{reply}");
        assert_eq!(reply["data"]["replayed"], 2, "{reply}");
        for id in &missed {
            assert_eq!(c.recv().await["id"], id.as_str());
        }
    }
    let text = metrics(b.addr).await;
    assert!(metric(&text, "rustorium_tokens_expired_total").unwrap_or(0.0) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_counts_per_sub_across_tokens() {
    let secret = hs_secret();
    let mut issuer = hs_issuer("app", &secret, 1000);
    issuer.max_connections_per_sub = Some(2);
    let b = start(with_issuers(vec![issuer]));
    let one = hs(&secret, "alice", 60, json!({}));
    let two = hs(
        &secret,
        "alice",
        90,
        json!({"roles": ["subscribe", "command"]}),
    );
    let mut a1 = Client::ws(b.addr, &one).await;
    a1.subscribe("blocks", json!({})).await;
    let mut a2 = Client::v1(b.addr, &two).await;
    let r = a2
        .request(json!({"type": "subscribe", "id": 1, "data": {"channel": "blocks"}}))
        .await;
    assert_eq!(r["type"], "subscription_confirmation", "{r}");
    for (v1, token) in [(false, &one), (true, &two)] {
        let mut third = connect(b.addr, v1, token).await;
        let err = third.recv().await;
        let want = if v1 {
            json!("rate_limited")
        } else {
            json!(4001)
        };
        assert_eq!(code(&err), want, "{err}");
        assert_eq!(third.expect_close().await.0, 4001);
    }
    // Another sub has a cap of its own.
    let mut bob = Client::ws(b.addr, &hs(&secret, "bob", 60, json!({}))).await;
    bob.subscribe("blocks", json!({})).await;
    // A freed place can be taken again.
    a1.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Client::ws(b.addr, &two).await;
    again.subscribe("blocks", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_that_removes_an_issuer_closes_its_connections_4000() {
    let (old, new) = (hs_secret(), hs_secret());
    let issuer = |name: &str, secret: &str| {
        format!(
            "[[token_issuers]]\nname = \"{name}\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n"
        )
    };
    let file = |issuers: &str| {
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nworkers = 1\n[ledger]\nenabled = false\n[demo]\nenabled = false\n\
             [[keys]]\nname = \"pub\"\nsecret = \"{PUB_KEY}\"\nroles = [\"publish\"]\n{issuers}"
        )
    };
    let path = temp_file(
        "reload.toml",
        &file(&(issuer("old", &old) + &issuer("new", &new))),
    );
    let broker = common::broker_process::BrokerProcess::spawn_logging(
        &["--config", path.to_str().expect("utf-8 path")],
        "info",
    );
    let addr = broker.addr;
    let old_token = hs(&old, "u1", 60, json!({}));
    let new_token = hs(&new, "u2", 60, json!({}));
    let mut o = Client::ws(addr, &old_token).await;
    let mut n = Client::v1(addr, &new_token).await;
    o.subscribe("blocks", json!({})).await;
    sub(&mut n, "blocks").await;

    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, file(&issuer("new", &new))).expect("write config");
    std::fs::rename(&tmp, &path).expect("rename config");
    broker.hangup();
    let line = broker.log_until("configuration reloaded");
    assert!(
        line.contains("token issuers added: none; removed: old"),
        "{line}"
    );
    assert!(
        !line.contains(&old) && !line.contains(&new),
        "no secret in the log: {line}"
    );
    let (code, reason) = o.expect_close().await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("issuer was removed"), "{reason}");
    // The other issuer's connection stays and delivers.
    publish_ok(addr, &block(7)).await;
    assert_eq!(n.recv().await["data"]["number"], 7);
    // The removed issuer's tokens are refused from now on.
    assert_refused_4000(Client::ws(addr, &old_token).await, false, "removed issuer").await;
    let text = metrics(addr).await;
    assert!(metric(&text, "rustorium_key_revocations_total").unwrap_or(0.0) >= 1.0);
}

#[test]
fn check_config_names_an_unusable_issuer_and_masks_secrets() {
    let rs = keys(&rcgen::PKCS_RSA_SHA256, "rs");
    let es = keys(&rcgen::PKCS_ECDSA_P256_SHA256, "es");
    let check = |issuer: &str| {
        let text = format!("[server]\nbind = \"127.0.0.1:0\"\n[[token_issuers]]\n{issuer}");
        let path = temp_file("config.toml", &text);
        std::process::Command::new(env!("CARGO_BIN_EXE_rustorium-broker"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("check-config ran")
    };
    let file = |p: &std::path::Path| p.display().to_string().replace('\\', "\\\\");
    let bad = [
        (
            format!(
                "name = \"a\"\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\n",
                file(&rs.public_file)
            ),
            "token_issuers[0].public_key_file",
        ),
        (
            format!(
                "name = \"a\"\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\n",
                file(&es.public_file)
            ),
            "token_issuers[0].public_key_file",
        ),
        (
            "name = \"a\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"/nonexistent/key.pem\"\n"
                .to_owned(),
            "cannot read",
        ),
        (
            "name = \"a\"\nalgorithm = \"HS256\"\nsecret = \"short\"\n".to_owned(),
            "token_issuers[0].secret",
        ),
        (
            format!(
                "name = \"a\"\nalgorithm = \"RS256\"\nsecret = \"{}\"\n",
                hs_secret()
            ),
            "token_issuers[0].secret",
        ),
        (
            "name = \"a\"\nalgorithm = \"none\"\nsecret = \"x\"\n".to_owned(),
            "algorithm",
        ),
    ];
    for (issuer, named) in &bad {
        let out = check(issuer);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{issuer}: {err}");
        assert!(err.contains(named), "{issuer}: {err}");
    }
    let secret = hs_secret();
    let out = check(&format!(
        "name = \"a\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nleeway_ms = 250\n"
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(&secret), "{text}");
    assert!(text.contains("leeway_ms = 250"), "{text}");
    // A configured key may not take a token identity's name.
    let mut c = config();
    c.keys[0].name = "jwt:alice".into();
    let e = c.finish().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("keys[0].name"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_sub_cap_counts_every_node_and_only_the_sub_resumes_elsewhere() {
    let Some(redis) = common::redis_server::redis_server() else {
        return;
    };
    let secret = hs_secret();
    let issuer = format!(
        "[[token_issuers]]\nname = \"app\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nmax_connections_per_sub = 2\n"
    );
    let p = common::cluster::prefix("tokens");
    let nodes: Vec<common::cluster::Node> = (0..2)
        .map(|_| common::cluster::Node::start(&redis.url, &p, &issuer))
        .collect();
    let one = hs(&secret, "alice", 60, json!({}));
    let two = hs(&secret, "alice", 90, json!({}));
    let mut a = Client::ws(nodes[0].addr, &one).await;
    let sid = a.subscribe("blocks", json!({})).await;
    let mut b = Client::v1(nodes[1].addr, &two).await;
    sub(&mut b, "blocks").await;
    // Two connections of alice on two nodes: a third is refused on either.
    for node in &nodes {
        let mut third = Client::ws(node.addr, &one).await;
        let err = third.recv().await;
        assert_eq!(code(&err), json!(4001), "{err}");
        assert_eq!(third.expect_close().await.0, 4001);
    }
    // alice's subscription, dropped on one node, is claimed on the other by alice only.
    a.drop_tcp();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut thief = Client::ws(nodes[1].addr, &hs(&secret, "mallory", 60, json!({}))).await;
    let reply = thief
        .reconnect(Value::Null, std::slice::from_ref(&sid))
        .await;
    assert_eq!(reply["data"]["failed"], json!([sid]), "{reply}");
    let mut again = Client::ws(nodes[1].addr, &hs(&secret, "alice", 120, json!({}))).await;
    let reply = again
        .reconnect(Value::Null, std::slice::from_ref(&sid))
        .await;
    assert_eq!(reply["data"]["subscriptions"], json!([sid]), "{reply}");
}
