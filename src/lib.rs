//! rustorium-broker: a real-time WebSocket message broker for the Rustorium WebSocket API.
//!
//! Crate map:
//! - [`config`]: the TOML file, flags and environment, validation, the development key.
//! - [`cli`]: the command-line flags of the binary.
//! - [`auth`]: where a request presents its key, constant-time lookup, replacing the keys.
//! - [`tokens`]: `[[token_issuers]]`: signed tokens (JWT) beside the keys, verified into keys.
//! - `http`: the routes (`/ws`, `/v1`, `/api/publish`, `/health`, `/ready`, `/metrics`).
//! - `dashboard`: `/dashboard`, its page and its stream of samples (`dashboard::sampler`).
//! - [`tls`]: `[server.tls]`: the certificate files, the resolver a reload swaps.
//! - `preauth`: connections without a valid key yet: the per-address and total caps.
//! - [`reload`]: SIGHUP: new keys and certificate without a restart, what needs one.
//! - [`server`]: the standalone broker process: bind, banner, signals, graceful stop.
//! - `upgrade`: WebSocket upgrades the standalone server serves without the HTTP/1
//!   dispatcher's 8 KiB read and write buffers (the memory of an idle connection).
//! - [`Broker`] (here): the embedding handle: start the actor system, mount its routes
//!   into an actix-web `App`, publish from Rust, shut down.
//! - The actors themselves live in the `rustorium-actors` crate (`actors/`).
//!
//! Embedding, in short (see `examples/embed.rs`):
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use rustorium_broker::{Broker, Config};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let broker = Broker::start(Config::default()).expect("valid config");
//!     let routes = broker.clone();
//!     HttpServer::new(move || App::new().configure(routes.configure()))
//!         .bind("127.0.0.1:8080")?
//!         .run()
//!         .await
//! }
//! ```

// Nothing a client or a config file controls may panic the broker.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod cli;
pub mod config;
mod dashboard;
pub mod demo;
mod http;
pub mod ledger;
mod preauth;
pub mod reload;
pub mod server;
pub mod tls;
pub mod tokens;
mod upgrade;

/// For the fuzz targets (`fuzz/`) only; not part of the embedding API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::input::OneFrameAtATime;
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::web::ServiceConfig;
use rustorium_actors::Core;
use serde_json::Value;

pub use config::{Config, ConfigError, KeyConfig};
pub use ledger::Ledger;
pub use rustorium_actors::backend::{
    Backend, BackendFuture, Balance, CommandError, NoBackend, TokenInfo, Transfer, TransferAccepted,
};
pub use rustorium_actors::{NewEvent, PublishError, Publisher, Role};

/// A running broker's actor system, ready to be mounted into actix-web apps.
/// Cheap to clone; every clone is the same broker.
#[derive(Clone)]
pub struct Broker {
    state: http::AppState,
    /// The configuration in effect; a reload replaces it.
    running: Arc<RwLock<Arc<Config>>>,
    /// The listener's certificate, when `[server.tls]` is configured.
    certs: Option<Arc<tls::CertStore>>,
}

impl Broker {
    /// Validates `config` (see [`Config::finish`]) and starts the actor system, with the
    /// built-in ledger answering commands when `ledger.enabled` (and the demo feed when
    /// `demo.enabled`). Must be called inside a running actix `System` (e.g. under
    /// `#[actix_web::main]`).
    pub fn start(config: Config) -> Result<Broker, ConfigError> {
        let config = config.finish()?;
        config::warn_queue_below_batch(&config);
        let certs = tls::cert_store(&config)?;
        if !config.ledger.enabled {
            let core = Core::start(config.settings(), |_| {
                Arc::new(NoBackend) as Arc<dyn Backend>
            });
            return Ok(Broker::assemble(config, core, certs));
        }
        let mut ledger = None;
        let core = Core::start(config.settings(), |publisher| {
            let l = Ledger::new(&config.ledger, publisher.clone(), publisher.max_batch());
            ledger = Some(l.clone());
            l as Arc<dyn Backend>
        });
        if let Some(ledger) = ledger {
            ledger.spawn_blocks();
            if config.demo.enabled {
                demo::spawn(&config.demo, &config.ledger, ledger, core.publisher.clone());
            }
        }
        Ok(Broker::assemble(config, core, certs))
    }

    /// Like [`Broker::start`], with `backend` answering commands instead of the built-in
    /// ledger, and no demo feed.
    pub fn start_with_backend(
        config: Config,
        backend: Arc<dyn Backend>,
    ) -> Result<Broker, ConfigError> {
        let mut config = config.finish()?;
        let certs = tls::cert_store(&config)?;
        config.ledger.enabled = false;
        config.demo.enabled = false;
        let core = Core::start(config.settings(), |_| backend);
        Ok(Broker::assemble(config, core, certs))
    }

    fn assemble(config: Config, core: Arc<Core>, certs: Option<Arc<tls::CertStore>>) -> Broker {
        let dashboard = config
            .dashboard
            .enabled
            .then(|| dashboard::sampler::Sampler::start(core.clone(), config.dashboard.clone()));
        let unauthenticated = preauth::Unauthenticated::new(
            config.limits.max_unauthenticated_per_address,
            config.limits.max_unauthenticated,
            core.metrics.clone(),
        );
        let issuers = Arc::new(tokens::Issuers::new(
            &config.token_issuers,
            core.metrics.clone(),
        ));
        let state = http::AppState {
            core,
            keys: Arc::new(auth::KeyStore::new(&config.keys)),
            issuers,
            ready: Arc::new(AtomicBool::new(true)),
            dashboard,
            unauthenticated,
        };
        Broker {
            state,
            running: Arc::new(RwLock::new(Arc::new(config))),
            certs,
        }
    }

    /// The configuration in effect: validated, with a generated development key if any,
    /// and the keys and certificate of the last reload.
    pub fn config(&self) -> Arc<Config> {
        match self.running.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The rustls configuration serving `[server.tls]`'s certificate (and the one of each
    /// reload), for `HttpServer::listen_rustls_0_23`; `None` without `[server.tls]`.
    pub fn rustls_config(&self) -> Option<Result<rustls::ServerConfig, tls::TlsError>> {
        self.certs.clone().map(tls::server_config)
    }

    /// A function that mounts the broker's routes (`/ws`, `/api/publish`, `/health`,
    /// `/ready`, `/metrics`) for `App::configure`. Call it once per worker.
    pub fn configure(&self) -> impl FnOnce(&mut ServiceConfig) {
        let state = self.state.clone();
        move |cfg| http::mount(state, cfg)
    }

    /// For `HttpServer::on_connect`: sets `TCP_USER_TIMEOUT` (`limits.stall_timeout_ms`) on
    /// every accepted socket, so the kernel drops a client that stopped reading (its
    /// subscriptions are then parked for resume), and `TCP_NODELAY`, so a small event frame
    /// is not held back by Nagle's algorithm waiting for the client's delayed ACK.
    ///
    /// It also counts the socket among the connections without a valid key yet, and shuts
    /// it down before it is read when its address has `limits.max_unauthenticated_per_address`
    /// of them already, or the broker `limits.max_unauthenticated` (counted as
    /// `rustorium_rejections_total{reason="address_limit"}`).
    ///
    /// The standalone server installs it; an embedding app should too:
    /// `HttpServer::new(...).on_connect(broker.on_connect())`.
    pub fn on_connect(
        &self,
    ) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
        let timeout = Duration::from_millis(self.config().limits.stall_timeout_ms);
        let unauthenticated = self.state.unauthenticated.clone();
        move |conn, data| {
            let tcp = conn
                .downcast_ref::<actix_web::rt::net::TcpStream>()
                .or_else(|| {
                    conn.downcast_ref::<tls::Stream>()
                        .map(|tls| tls.get_ref().0)
                });
            let Some(tcp) = tcp else {
                return;
            };
            let socket = socket2::SockRef::from(tcp);
            if let Ok(peer) = tcp.peer_addr() {
                match unauthenticated.admit(peer.ip()) {
                    Ok(pending) => {
                        data.insert(pending);
                    }
                    Err(why) => {
                        log::debug!("connection from {peer} closed at accept: {why:?}");
                        // Nothing is read from it: the dispatcher sees the end at once.
                        if let Err(e) = socket.shutdown(std::net::Shutdown::Both) {
                            log::debug!("cannot shut down a refused connection: {e}");
                        }
                        return;
                    }
                }
            }
            if let Err(e) = socket.set_tcp_user_timeout(Some(timeout)) {
                log::warn!("cannot set TCP_USER_TIMEOUT on a connection: {e}");
            }
            if let Err(e) = tcp.set_nodelay(true) {
                log::warn!("cannot set TCP_NODELAY on a connection: {e}");
            }
        }
    }

    /// The publish handle, for publishing from Rust with no HTTP in between.
    pub fn publisher(&self) -> Publisher {
        self.state.core.publisher.clone()
    }

    /// Publishes one event of the channel's default type; returns its message id.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<String, PublishError> {
        let ids = self
            .publisher()
            .publish(vec![NewEvent::new(channel, data)])
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| PublishError::Unavailable("no id was returned".into()))
    }

    /// Sets what `/ready` answers.
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Release);
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> i64 {
        self.state.core.metrics.connections.load(Ordering::Relaxed)
    }

    /// Marks the broker not ready, closes every connection with 1001, and waits up to
    /// `timeout` for them to be gone.
    pub async fn shutdown(&self, timeout: Duration) {
        self.set_ready(false);
        let told = self.state.core.close_all().await;
        log::info!("closing {told} connections with 1001");
        let deadline = Instant::now() + timeout;
        while self.connections() > 0 && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
