//! Signed tokens (JWT) beside the configured keys (PROTOCOL.md section 12): the
//! `[[token_issuers]]` configuration, loading each issuer's key, and verifying a presented
//! token into the [`ApiKey`] the actors work with. The cryptography and the registered
//! claims (`exp`, `nbf`, `iss`, `aud`) are the `jsonwebtoken` crate's; this file pins each
//! issuer to its one algorithm, sets the leeway from the configuration (not the crate's
//! 60 s), and reads the broker's own claims (`sub`, `roles`, `channels`).
//!
//! Which issuer verifies a token: the one its header's `kid` names, when it has a `kid`;
//! otherwise each issuer configured for the header's `alg`, in configuration order, until
//! one verifies it. A header `alg` no issuer is configured for (`none` included) is refused
//! before any key is tried, so an RSA public key is never used as an HMAC secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustorium_actors::grant::Grant;
use rustorium_actors::messages::IssuerIds;
use rustorium_actors::metrics::Metrics;
use rustorium_actors::token::{self, TokenInfo, TokenRefusal, TokenVerifier};
use rustorium_actors::{ApiKey, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The algorithms an issuer may be configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum TokenAlgorithm {
    /// HMAC with SHA-256: a shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256: an RSA public key in `public_key_file`.
    RS256,
    /// ECDSA on P-256 with SHA-256: an EC public key in `public_key_file`.
    ES256,
    /// Ed25519: an Ed25519 public key in `public_key_file`.
    EdDSA,
}

impl TokenAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            TokenAlgorithm::HS256 => Algorithm::HS256,
            TokenAlgorithm::RS256 => Algorithm::RS256,
            TokenAlgorithm::ES256 => Algorithm::ES256,
            TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }

    /// The name as a JWT header's `alg` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::HS256 => "HS256",
            TokenAlgorithm::RS256 => "RS256",
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }
}

/// Default `leeway_ms`: 5 s of clock difference between the app that signs and the broker.
pub const DEFAULT_LEEWAY_MS: u64 = 5000;
/// Most `leeway_ms` accepted: 5 minutes.
pub const MAX_LEEWAY_MS: u64 = 300_000;
/// Fewest bytes of an HS256 `secret` (the hash's size, RFC 7518 section 3.2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// Longest `sub` accepted, in bytes.
pub const MAX_SUB_BYTES: usize = 256;

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY_MS
}

/// One issuer of signed tokens (`[[token_issuers]]`): the application backend that signs
/// them, with its algorithm and key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerConfig {
    /// Name used in logs, and matched against a token's `kid` header.
    pub name: String,
    /// `HS256`, `RS256`, `ES256` or `EdDSA`: the only algorithm its tokens may use.
    pub algorithm: TokenAlgorithm,
    /// HS256 only: the shared secret, at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// RS256, ES256, EdDSA: a PEM file with the public key (`-----BEGIN PUBLIC KEY-----`,
    /// or `BEGIN RSA PUBLIC KEY` for RS256); relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// When set, tokens must carry this `aud` (or a list holding it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Clock leeway for `exp` and `nbf`, in milliseconds; also how long past `exp` a
    /// connection stays open without a `refresh`. Default 5000, at most 300000.
    #[serde(default = "default_leeway")]
    pub leeway_ms: u64,
    /// Cap on concurrent connections per `sub` for this issuer's tokens; default
    /// `limits.max_connections_per_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_sub: Option<u32>,
}

impl TokenIssuerConfig {
    /// Resolves a relative `public_key_file` against `dir` (the config file's directory).
    pub fn relative_to(&mut self, dir: &Path) {
        if let Some(file) = &mut self.public_key_file {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
}

/// Why an issuer cannot be used: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerError {
    /// The field (`secret`, `public_key_file`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// One loaded issuer.
struct Issuer {
    name: String,
    algorithm: TokenAlgorithm,
    key: DecodingKey,
    validation: Validation,
    leeway_ms: u64,
    max_connections: Option<u32>,
    /// A keyed hash of the configuration that decides which tokens verify.
    id: u64,
}

/// A keyed hash, random per process, of what decides which tokens an issuer accepts.
fn issuer_id(config: &TokenIssuerConfig, key_bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static HASHER: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    HASHER.hash_one((
        &config.name,
        config.algorithm,
        key_bytes,
        &config.iss,
        &config.aud,
    ))
}

fn load(config: &TokenIssuerConfig) -> Result<Issuer, IssuerError> {
    let err = |field: &'static str, message: String| IssuerError { field, message };
    if config.name.trim().is_empty() {
        return Err(err("name", "must not be empty".into()));
    }
    if config.leeway_ms > MAX_LEEWAY_MS {
        return Err(err("leeway_ms", format!("must be at most {MAX_LEEWAY_MS}")));
    }
    if config.max_connections_per_sub == Some(0) {
        return Err(err("max_connections_per_sub", "must be at least 1".into()));
    }
    let (key, bytes) = match config.algorithm {
        TokenAlgorithm::HS256 => {
            if config.public_key_file.is_some() {
                return Err(err(
                    "public_key_file",
                    "HS256 takes a secret, not a public key file".into(),
                ));
            }
            let secret = config.secret.as_deref().unwrap_or("");
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(err(
                    "secret",
                    format!("HS256 needs a secret of at least {MIN_HMAC_SECRET_BYTES} bytes"),
                ));
            }
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| err("secret", e.to_string()))?;
            (key, secret.as_bytes().to_vec())
        }
        alg => {
            if config.secret.is_some() {
                return Err(err(
                    "secret",
                    format!(
                        "{} takes public_key_file (a PEM public key), not a secret",
                        alg.as_str()
                    ),
                ));
            }
            let Some(path) = &config.public_key_file else {
                return Err(err(
                    "public_key_file",
                    format!("{} needs a PEM public key file", alg.as_str()),
                ));
            };
            let pem = std::fs::read(path).map_err(|e| {
                err(
                    "public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let (key, kind) = match alg {
                TokenAlgorithm::RS256 => (DecodingKey::from_rsa_pem(&pem), "an RSA public key"),
                TokenAlgorithm::ES256 => {
                    (DecodingKey::from_ec_pem(&pem), "an EC (P-256) public key")
                }
                _ => (DecodingKey::from_ed_pem(&pem), "an Ed25519 public key"),
            };
            let key = key.map_err(|e| {
                err(
                    "public_key_file",
                    format!("{} is not {kind} in PEM ({e})", path.display()),
                )
            })?;
            (key, pem)
        }
    };
    let mut validation = Validation::new(config.algorithm.jwt());
    // The crate checks in whole seconds: its leeway is rounded up here so that it never
    // refuses what the exact check below (in milliseconds) accepts.
    validation.leeway = config.leeway_ms.div_ceil(1000);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &config.iss {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match &config.aud {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    Ok(Issuer {
        id: issuer_id(config, &bytes),
        name: config.name.clone(),
        algorithm: config.algorithm,
        key,
        validation,
        leeway_ms: config.leeway_ms,
        max_connections: config.max_connections_per_sub,
    })
}

/// Checks every issuer of a configuration (key files readable and of the type the
/// algorithm needs, names unique); the error names `token_issuers[i].FIELD`.
pub fn validate(issuers: &[TokenIssuerConfig]) -> Result<(), (String, String)> {
    for (i, config) in issuers.iter().enumerate() {
        load(config).map_err(|e| (format!("token_issuers[{i}].{}", e.field), e.message))?;
        if issuers[..i].iter().any(|o| o.name == config.name) {
            return Err((
                format!("token_issuers[{i}].name"),
                "is used by another issuer".into(),
            ));
        }
    }
    Ok(())
}

/// The claims read from a verified token. Every field is optional here so that the
/// crate's own checks (`exp`, `nbf`, `iss`, `aud`) decide first and name the reason.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    roles: Option<Value>,
    channels: Option<Value>,
}

/// What a reload changed in the issuers, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IssuerChanges {
    /// Issuers that are new.
    pub added: Vec<String>,
    /// Issuers removed, or whose key or `iss`/`aud` changed: their connections close 4000.
    pub removed: Vec<String>,
    /// The ids of every issuer now (what open connections compare themselves with).
    pub ids: IssuerIds,
}

/// The configured issuers; a reload replaces them all at once. Verifies tokens for the
/// upgrade, the publish route and `refresh`.
pub struct Issuers {
    current: RwLock<Arc<Vec<Issuer>>>,
    metrics: Arc<Metrics>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The header's `alg` and `kid`, read without trusting anything else in it.
fn header(token: &str) -> Option<(String, Option<String>)> {
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?.to_owned();
    let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
    Some((alg, kid))
}

fn refusal_of(e: &jsonwebtoken::errors::Error) -> TokenRefusal {
    match e.kind() {
        JwtError::InvalidSignature => TokenRefusal::Signature,
        JwtError::ExpiredSignature => TokenRefusal::Expired,
        JwtError::ImmatureSignature => TokenRefusal::NotYetValid,
        JwtError::InvalidIssuer => TokenRefusal::Issuer,
        JwtError::InvalidAudience => TokenRefusal::Audience,
        JwtError::InvalidAlgorithm | JwtError::InvalidAlgorithmName => TokenRefusal::Algorithm,
        JwtError::MissingRequiredClaim(c) | JwtError::InvalidClaimFormat(c) => match c.as_str() {
            "exp" => TokenRefusal::Expired,
            "nbf" => TokenRefusal::NotYetValid,
            "iss" => TokenRefusal::Issuer,
            "aud" => TokenRefusal::Audience,
            _ => TokenRefusal::Claims,
        },
        JwtError::InvalidSubject | JwtError::Json(_) => TokenRefusal::Claims,
        _ => TokenRefusal::Malformed,
    }
}

impl Issuers {
    /// The issuers of `configs` (already validated; one that does not load is left out and
    /// logged).
    pub fn new(configs: &[TokenIssuerConfig], metrics: Arc<Metrics>) -> Issuers {
        Issuers {
            current: RwLock::new(Arc::new(load_all(configs))),
            metrics,
        }
    }

    fn current(&self) -> Arc<Vec<Issuer>> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether any issuer is configured.
    pub fn any(&self) -> bool {
        !self.current().is_empty()
    }

    /// Replaces every issuer with `configs` (already validated) and says what changed.
    pub fn replace(&self, configs: &[TokenIssuerConfig]) -> IssuerChanges {
        let old = self.current();
        let new = Arc::new(load_all(configs));
        let mut changes = IssuerChanges::default();
        for issuer in new.iter() {
            changes.ids.insert(issuer.id);
            if !old.iter().any(|o| o.name == issuer.name) {
                changes.added.push(issuer.name.clone());
            }
        }
        for issuer in old.iter() {
            if !changes.ids.contains(&issuer.id) {
                changes.removed.push(issuer.name.clone());
            }
        }
        match self.current.write() {
            Ok(mut c) => *c = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        changes
    }

    /// Verifies `token` against the issuers (see the module documentation for which).
    fn check(&self, token: &str) -> Result<(Arc<ApiKey>, String), (TokenRefusal, String)> {
        let issuers = self.current();
        let Some((alg, kid)) = header(token) else {
            return Err((TokenRefusal::Malformed, "-".into()));
        };
        let candidates: Vec<&Issuer> = match &kid {
            Some(kid) => {
                let Some(issuer) = issuers.iter().find(|i| &i.name == kid) else {
                    return Err((TokenRefusal::UnknownIssuer, "-".into()));
                };
                if issuer.algorithm.as_str() != alg {
                    return Err((TokenRefusal::Algorithm, issuer.name.clone()));
                }
                vec![issuer]
            }
            None => issuers
                .iter()
                .filter(|i| i.algorithm.as_str() == alg)
                .collect(),
        };
        // A refusal other than a bad signature means that issuer's key verified the
        // token: that reason wins over the other issuers' bad signatures.
        let mut refusal = (TokenRefusal::Algorithm, "-".to_owned());
        for issuer in candidates {
            match self.verify_with(issuer, token) {
                Ok(key) => return Ok((key, issuer.name.clone())),
                Err(why) => {
                    if refusal.0 == TokenRefusal::Algorithm || refusal.0 == TokenRefusal::Signature
                    {
                        refusal = (why, issuer.name.clone());
                    }
                }
            }
        }
        Err(refusal)
    }

    fn verify_with(&self, issuer: &Issuer, token: &str) -> Result<Arc<ApiKey>, TokenRefusal> {
        let data = jsonwebtoken::decode::<Claims>(token, &issuer.key, &issuer.validation)
            .map_err(|e| refusal_of(&e))?;
        let claims = data.claims;
        let sub = match claims.sub {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_BYTES => s,
            _ => return Err(TokenRefusal::Claims),
        };
        let exp = claims
            .exp
            .as_ref()
            .and_then(Value::as_u64)
            .ok_or(TokenRefusal::Expired)?;
        let exp_ms = exp.saturating_mul(1000);
        let close_at_ms = exp_ms.saturating_add(issuer.leeway_ms);
        let now = now_ms();
        if now >= close_at_ms {
            return Err(TokenRefusal::Expired);
        }
        if let Some(nbf) = claims.nbf.as_ref() {
            let nbf_ms = nbf
                .as_u64()
                .ok_or(TokenRefusal::NotYetValid)?
                .saturating_mul(1000);
            if nbf_ms > now.saturating_add(issuer.leeway_ms) {
                return Err(TokenRefusal::NotYetValid);
            }
        }
        let roles = match claims.roles {
            None => vec![Role::Subscribe],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|r| match r.as_str() {
                    Some("subscribe") => Some(Role::Subscribe),
                    Some("publish") => Some(Role::Publish),
                    Some("command") => Some(Role::Command),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or(TokenRefusal::Claims)?,
            Some(_) => return Err(TokenRefusal::Claims),
        };
        let grant = match &claims.channels {
            None => None,
            Some(claim) => Some(Grant::parse(claim).map_err(|e| {
                log::info!("token of issuer {} refused: {e}", issuer.name);
                TokenRefusal::Claims
            })?),
        };
        Ok(Arc::new(ApiKey {
            name: token::identity(&sub),
            roles,
            max_connections: issuer.max_connections,
            secret_id: issuer.id,
            token: Some(Arc::new(TokenInfo {
                sub,
                issuer: issuer.name.clone(),
                issuer_id: issuer.id,
                expires_at_ms: exp_ms,
                close_at_ms,
                grant,
            })),
        }))
    }
}

fn load_all(configs: &[TokenIssuerConfig]) -> Vec<Issuer> {
    configs
        .iter()
        .filter_map(|c| match load(c) {
            Ok(issuer) => Some(issuer),
            Err(e) => {
                log::error!(
                    "token issuer {} not loaded: {}: {}",
                    c.name,
                    e.field,
                    e.message
                );
                None
            }
        })
        .collect()
}

impl TokenVerifier for Issuers {
    /// Verifies, and on refusal logs the reason (never the token) and counts it.
    fn verify(&self, token: &str) -> Result<Arc<ApiKey>, TokenRefusal> {
        match self.check(token) {
            Ok((key, _)) => Ok(key),
            Err((why, issuer)) => {
                self.metrics.refuse_token(why);
                log::info!(
                    "signed token refused ({}; issuer {issuer}): {}",
                    why.label(),
                    why.message()
                );
                Err(why)
            }
        }
    }
}

/// Whether `presented` has the shape of a JWT (three dot-separated parts); anything else
/// is looked up as a configured key only.
pub fn looks_like_jwt(presented: &str) -> bool {
    presented.split('.').count() == 3
}
