//! The standalone broker process: bind the listener (TLS with `[server.tls]`), print the
//! ready-to-paste banner, reload the configuration on SIGHUP, run until SIGINT/SIGTERM,
//! then stop accepting, close connections with 1001, and exit within the configured time.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use std::rc::Rc;

use actix_codec::Framed;
use actix_http::{h1, HttpService, Request, TlsAcceptorConfig};
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::rt::net::TcpStream;
use actix_web::App;

use crate::{Broker, Config, ConfigError};

/// Why the standalone broker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid; the message names the field.
    Config(ConfigError),
    /// The address could not be bound.
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        error: std::io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The address the walk-through event comes from, for a subscription that sees only it.
pub const WALKTHROUGH_ADDRESS: &str = "0x000000000000000000000000000000000000c0de";

/// The event the banner's `curl` line publishes.
const WALKTHROUGH_EVENT: &str = r#"{"channel":"transaction_updates","data":{"transaction_id":"0xfeed","status":"confirmed","from":"0x000000000000000000000000000000000000c0de","to":"0xa11ce00000000000000000000000000000000001","timestamp":"2024-01-01T12:00:00Z"}}"#;

/// Reads the configuration again for a reload: the file with the command line on top,
/// not yet validated ([`crate::cli::Cli::read`]).
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// A bound, not yet running, standalone broker.
pub struct Standalone {
    broker: Broker,
    server: Server,
    addr: SocketAddr,
    source: Option<ConfigSource>,
}

impl Standalone {
    /// Validates `config`, starts the actors and binds the listener. Must be called
    /// inside a running actix `System`.
    pub fn bind(config: Config) -> Result<Standalone, StartError> {
        let broker = Broker::start(config).map_err(StartError::Config)?;
        let config = broker.config();
        let server_cfg = &config.server;
        let bind_err = |error| StartError::Bind {
            addr: server_cfg.bind.clone(),
            error,
        };
        let listener = TcpListener::bind(&server_cfg.bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        // A connection that has not sent its request head (the upgrade, with its key) by
        // then gets 408 and is closed; the TLS handshake has as long before it.
        let handshake = Duration::from_millis(config.limits.handshake_timeout_ms);
        let io_limits = crate::upgrade::IoLimits::from(&config.limits);
        // actix-web's `HttpServer`, with its defaults, except that WebSocket upgrades go to
        // `crate::upgrade`, which drops the HTTP/1 dispatcher's buffers.
        let mut builder = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(1)
            .max_concurrent_connections(1 << 20)
            .backlog(4096);
        if server_cfg.workers > 0 {
            builder = builder.workers(server_cfg.workers);
        }
        let on_connect = Arc::new(broker.on_connect());
        let routes = broker.clone();
        // One worker's HTTP service over the IO type `$io`; the app answers both the plain
        // requests and the upgrade requests (a second instance, for the upgrade hook).
        macro_rules! service {
            ($io:ty) => {{
                let on_connect = on_connect.clone();
                let upgrades = routes.clone();
                HttpService::build()
                    .client_request_timeout(handshake)
                    .client_disconnect_timeout(io_limits.linger)
                    .local_addr(addr)
                    .on_connect_ext(move |io: &$io, data: &mut Extensions| {
                        (on_connect)(io as &dyn std::any::Any, data)
                    })
                    .upgrade(fn_factory(move || {
                        let app = App::new().configure(upgrades.configure());
                        async move {
                            let app = Rc::new(
                                app.into_factory().new_service(AppConfig::default()).await?,
                            );
                            Ok::<_, ()>(fn_service(
                                move |(req, framed): (Request, Framed<$io, h1::Codec>)| {
                                    crate::upgrade::serve(app.clone(), req, framed, io_limits)
                                },
                            ))
                        }
                    }))
                    .finish(map_config(
                        App::new()
                            .configure(routes.configure())
                            .into_factory()
                            .map_err(|e| e.error_response()),
                        |_| AppConfig::default(),
                    ))
            }};
        }
        let builder = match broker.rustls_config() {
            None => builder.listen("rustorium-broker", listener, move || {
                service!(TcpStream).tcp()
            }),
            Some(tls) => {
                let tls = tls.map_err(|e| StartError::Config(ConfigError::Tls(e)))?;
                builder.listen("rustorium-broker", listener, move || {
                    let accept = TlsAcceptorConfig::default().handshake_timeout(handshake);
                    service!(crate::tls::Stream).rustls_0_23_with_config(tls.clone(), accept)
                })
            }
        };
        let server = builder.map_err(bind_err)?.run();
        Ok(Standalone {
            broker,
            server,
            addr,
            source: None,
        })
    }

    /// Reloads the configuration from `source` on SIGHUP ([`Broker::reload`]).
    pub fn reload_from(mut self, source: ConfigSource) -> Standalone {
        self.source = Some(source);
        self
    }

    /// The address actually bound (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker, for publishing from the same process.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The lines printed at start: where to connect and how to publish.
    pub fn banner(&self) -> String {
        let addr = self.addr;
        let config = self.broker.config();
        let (ws, http) = match config.server.tls {
            Some(_) => ("wss", "https"),
            None => ("ws", "http"),
        };
        let mut out = format!("rustorium-broker listening on {addr}\n");
        let (key, note) = match &config.dev_key {
            Some(secret) => (
                secret.as_str(),
                "development key \"dev\" (every role), generated because no keys are configured; it changes at each start",
            ),
            None => ("YOUR_KEY", "using the configured keys"),
        };
        out.push_str(&format!("{note}\n\n"));
        out.push_str(&format!("  subscribe:  {ws}://{addr}/ws?token={key}\n"));
        out.push_str(&format!("  v1 API:     {ws}://{addr}/v1?api_key={key}\n"));
        out.push_str(&format!(
            "  publish:    curl -s -X POST {http}://{addr}/api/publish -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{WALKTHROUGH_EVENT}'\n"
        ));
        out.push_str(&format!(
            "  dashboard:  {http}://{addr}/dashboard (a key with the admin role)\n"
        ));
        if config.ledger.enabled {
            out.push_str(&format!(
                "\nbuilt-in ledger: a block every {} ms; commands execute_transaction, get_token_info, get_balance\n",
                config.ledger.block_interval_ms
            ));
            for t in &config.ledger.tokens {
                out.push_str(&format!(
                    "  token {} ({}): {}\n",
                    t.symbol, t.name, t.token_id
                ));
            }
        }
        if config.demo.enabled {
            out.push_str("\nDEMO FEED ON: the transfers between the genesis accounts and the prices on token_updates and\nmarket_data are SYNTHETIC (random), for trying the broker out. Turn off with [demo] enabled = false.\n");
        }
        out
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let broker = self.broker.clone();
        let timeout = Duration::from_millis(broker.config().server.shutdown_timeout_ms);
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            log::info!("signal received: no new connections; closing the open ones");
            // Stop accepting first, so nobody connects while the others are told to go.
            handle.pause().await;
            broker.shutdown(timeout).await;
            handle.stop(true).await;
        });
        if let Some(source) = self.source {
            let broker = self.broker.clone();
            actix_web::rt::spawn(reload_on_sighup(broker, source));
        }
        self.broker.set_ready(true);
        self.server.await
    }
}

/// Reloads the configuration at each SIGHUP, for as long as the broker runs.
async fn reload_on_sighup(broker: Broker, source: ConfigSource) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            log::warn!("cannot watch SIGHUP ({e}); configuration reload is off");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        log::info!("SIGHUP: reloading the configuration");
        match source() {
            // `reload` validates, logs and counts; a refused file changes nothing.
            Ok(config) => {
                let _ = broker.reload(config).await;
            }
            Err(e) => {
                broker.count_refused_reload(&e);
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises the open-file limit as far as the process may: the soft limit to the hard one,
/// and, where allowed, both to the kernel's `fs.nr_open`. Returns the soft limit in effect afterwards.
pub fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        for want in [nr_open.max(lim.rlim_max), lim.rlim_max] {
            if want <= lim.rlim_cur {
                break;
            }
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
                break;
            }
        }
    }
    lim.rlim_cur
}
