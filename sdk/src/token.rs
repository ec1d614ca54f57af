//! Signed tokens instead of a fixed key: the application's provider (an async callback the
//! client asks before each connection and before the token expires), the token's `exp` as
//! the client reads it (its own token, so unverified), and when to refresh in place.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A token being fetched from the provider.
pub(crate) type Fetch = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// The application's token provider: asked for a fresh signed token (JWT) before each
/// connection and before the current token's `exp`. Cheap to clone.
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn() -> Fetch + Send + Sync>);

impl TokenProvider {
    /// A provider from an async callback, typically one that asks the application's
    /// backend for a token (`fetch("/api/broker-token")`); its error is reported as
    /// [`crate::Error::Token`].
    pub fn new<F, Fut, E>(callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        TokenProvider(Arc::new(move || {
            let asked = callback();
            Box::pin(async move { asked.await.map_err(|e| e.to_string()) })
        }))
    }

    /// Asks for a token.
    pub(crate) fn fetch(&self) -> Fetch {
        (self.0)()
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

/// The token's `exp` in milliseconds since the UNIX epoch, read from its claims without
/// checking the signature (the broker does that); `None` when it has none.
pub(crate) fn expiry_ms(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_u64()?.checked_mul(1000)
}

/// How long from now to refresh a token that expires at `exp_ms`: `before` ahead of its
/// expiry, but never less than half of what is left (a token of a few seconds is
/// refreshed half-way).
pub(crate) fn refresh_in(exp_ms: u64, before: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let left = Duration::from_millis(exp_ms.saturating_sub(now));
    left.saturating_sub(before.min(left / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_and_refreshes_half_way_for_short_tokens() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64("{}"),
            b64(r#"{"sub":"a","exp":2000000000}"#)
        );
        assert_eq!(expiry_ms(&token), Some(2_000_000_000_000));
        assert_eq!(expiry_ms("not-a-token"), None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let short = refresh_in(now + 4000, Duration::from_secs(10));
        assert!(short <= Duration::from_millis(2000) && short >= Duration::from_millis(1500));
        let long = refresh_in(now + 600_000, Duration::from_secs(10));
        assert!(long <= Duration::from_secs(590) && long >= Duration::from_secs(589));
    }
}
