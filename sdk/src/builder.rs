//! The client's settings and the builder that checks them.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use crate::backoff::Backoff;
use crate::client::WebSocketClient;
use crate::error::{Error, Result};
use crate::token::TokenProvider;

/// How a connection presents itself.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// A fixed API key, as the `Authorization: Bearer` header.
    Key(HeaderValue),
    /// A signed token from the provider, asked before each connection and refreshed in
    /// place before it expires.
    Tokens {
        provider: TokenProvider,
        /// How long before `exp` a refresh starts (at most half the token's life left).
        refresh_before: Duration,
    },
}

/// Everything a client's connections work with, checked by [`ClientBuilder::build`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) endpoint: String,
    pub(crate) credentials: Credentials,
    pub(crate) backoff: Backoff,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_margin: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) buffer: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_frame_bytes: usize,
    /// The TLS client of a `wss://` endpoint; `None` for `ws://`.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// How long a connection may stay silent before it counts as dead: two heartbeat
    /// intervals plus the margin (protocol section 6).
    pub(crate) fn silence_limit(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(2)
            .saturating_add(self.heartbeat_margin)
    }
}

/// Builds a [`WebSocketClient`]; start from [`WebSocketClient::new`]. Every setting but the
/// endpoint and the key has a default.
///
/// ```
/// use std::time::Duration;
/// use rustorium_sdk::{Backoff, Error, WebSocketClient};
///
/// let client = WebSocketClient::new()
///     .with_endpoint("ws://127.0.0.1:9072/v1")
///     .with_api_key("my-key")
///     .with_backoff(Backoff { initial: Duration::from_millis(500), ..Backoff::default() })
///     .with_buffer(256)
///     .build();
/// assert!(client.is_ok());
///
/// let no_key = WebSocketClient::new().with_endpoint("ws://127.0.0.1:9072/ws").build();
/// assert!(matches!(no_key, Err(Error::Config(_))));
/// ```
#[derive(Debug, Clone)]
#[must_use = "call build() to get the client"]
pub struct ClientBuilder {
    endpoint: Option<String>,
    api_key: Option<String>,
    token_provider: Option<TokenProvider>,
    token_refresh_before: Duration,
    backoff: Backoff,
    heartbeat_interval: Duration,
    heartbeat_margin: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    buffer: usize,
    max_in_flight: usize,
    max_frame_bytes: usize,
    extra_roots: Vec<u8>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoint: None,
            api_key: None,
            token_provider: None,
            token_refresh_before: Duration::from_secs(10),
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_margin: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            buffer: 1024,
            max_in_flight: 256,
            max_frame_bytes: 4 << 20,
            extra_roots: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// The broker's WebSocket URL: `ws://HOST:PORT/ws` (node API) or `ws://HOST:PORT/v1`
    /// (v1 API), or the same with `wss://` for a broker with TLS; the client reads the
    /// replies of both. Required.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The API key; sent in the `Authorization` header, never in the URL. Required.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Signed tokens (JWT) instead of a fixed key, for a broker with `[[token_issuers]]`:
    /// `provider` is asked for a token before each connection (sent in the
    /// `Authorization` header) and, on a stream's connection, again before the token's
    /// `exp`: the new token replaces the old in place with a `refresh` request, without
    /// reconnecting. Should the broker still close a connection 4000 `token expired` (no
    /// fresh token in time), the stream reconnects with a new token and resumes. Either
    /// this or [`with_api_key`](Self::with_api_key).
    ///
    /// ```
    /// use rustorium_sdk::{TokenProvider, WebSocketClient};
    ///
    /// let client = WebSocketClient::new()
    ///     .with_endpoint("ws://127.0.0.1:9072/ws")
    ///     .with_token_provider(TokenProvider::new(|| async {
    ///         // Ask the application's backend for a token of the signed-in user.
    ///         Ok::<_, std::io::Error>("eyJ...".to_owned())
    ///     }))
    ///     .build();
    /// assert!(client.is_ok());
    /// ```
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.token_provider = Some(provider);
        self
    }

    /// How long before a token's `exp` its refresh starts (default 10 s; at most half of
    /// the token's life left, so a token of a few seconds is refreshed half-way).
    pub fn with_token_refresh_before(mut self, before: Duration) -> Self {
        self.token_refresh_before = before;
        self
    }

    /// The reconnect policy (default: 1 s, doubling, at most 30 s, 20 % jitter).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The broker's heartbeat interval (default 30 s, the broker's default). A connection
    /// silent for two intervals plus the margin is dropped and resumed.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// The margin past two heartbeat intervals (default 10 s).
    pub fn with_heartbeat_margin(mut self, margin: Duration) -> Self {
        self.heartbeat_margin = margin;
        self
    }

    /// How long opening a connection may take, TCP and upgrade (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may wait for its reply (default 10 s): subscribing, resuming,
    /// commands and publishes.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many items a stream holds for an application that reads slowly (default 1024).
    /// When it is full the client stops reading the socket; the broker then holds the
    /// events, up to its slow-consumer bound, and past it closes the connection (4005),
    /// which the client resumes once the application reads again. Memory stays bounded and
    /// nothing is lost.
    pub fn with_buffer(mut self, items: usize) -> Self {
        self.buffer = items;
        self
    }

    /// How many commands and publishes may wait for their replies at once (default 256);
    /// more wait for a free place.
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Certificates (PEM) to trust for a `wss://` endpoint besides the usual public
    /// authorities (Mozilla's list, built in): a private CA, or a broker's self-signed
    /// certificate. Each call adds to the ones before.
    pub fn with_root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.extra_roots.extend_from_slice(pem.as_ref());
        self.extra_roots.push(b'\n');
        self
    }

    /// The largest frame accepted from the broker (default 4 MiB).
    pub fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Checks the settings and makes the client. Connects nothing yet: each stream opens
    /// its own connection, commands share one opened on first use.
    pub fn build(self) -> Result<WebSocketClient> {
        let endpoint = self
            .endpoint
            .ok_or_else(|| Error::Config("no endpoint: call with_endpoint".into()))?;
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| Error::Config(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => None,
            Some("wss") => Some(tls_client(&self.extra_roots)?),
            _ => {
                return Err(Error::Config(format!(
                    "endpoint {endpoint:?} must start with ws:// or wss://"
                )))
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(Error::Config(format!("endpoint {endpoint:?} has no host")));
        }
        let credentials = match (self.api_key, self.token_provider) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "with_api_key and with_token_provider: choose one".into(),
                ))
            }
            (None, Some(provider)) => Credentials::Tokens {
                provider,
                refresh_before: self.token_refresh_before,
            },
            (None, None) => {
                return Err(Error::Config(
                    "no API key: call with_api_key (or with_token_provider)".into(),
                ))
            }
            (Some(key), None) => {
                if key.is_empty() {
                    return Err(Error::Config("the API key is empty".into()));
                }
                Credentials::Key(bearer(&key).ok_or_else(|| {
                    Error::Config("the API key holds characters a header cannot".into())
                })?)
            }
        };
        for (name, value) in [
            ("with_heartbeat_interval", self.heartbeat_interval),
            ("with_connect_timeout", self.connect_timeout),
            ("with_request_timeout", self.request_timeout),
            ("with_backoff (initial)", self.backoff.initial),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} must be more than zero")));
            }
        }
        if self.backoff.max < self.backoff.initial {
            return Err(Error::Config(
                "with_backoff: max must be at least initial".into(),
            ));
        }
        if self.buffer == 0 || self.max_in_flight == 0 {
            return Err(Error::Config(
                "with_buffer and with_max_in_flight must be at least 1".into(),
            ));
        }
        Ok(WebSocketClient::from_settings(Arc::new(Settings {
            endpoint,
            credentials,
            backoff: self.backoff,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_margin: self.heartbeat_margin,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            buffer: self.buffer,
            max_in_flight: self.max_in_flight,
            max_frame_bytes: self.max_frame_bytes,
            tls,
        })))
    }
}

/// `Bearer KEY` as a sensitive header value; `None` when the key holds characters a
/// header cannot.
pub(crate) fn bearer(key: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The TLS client of `wss://` endpoints: Mozilla's authorities plus `extra_pem`.
fn tls_client(extra_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in CertificateDer::pem_slice_iter(extra_pem) {
        let cert = cert.map_err(|e| {
            Error::Config(format!(
                "with_root_certificates_pem: not a PEM certificate: {e}"
            ))
        })?;
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "with_root_certificates_pem: unusable certificate: {e}"
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
