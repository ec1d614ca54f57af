//! Command-line flags for the common settings; each also reads an environment variable.
//! Flags and variables override the configuration file.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use rustorium_actors::settings::EngineKind;

use crate::config::{parse_key_flag, Config, ConfigError};

/// rustorium-broker: a real-time WebSocket message broker for the Rustorium API.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "RUSTORIUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9072).
    #[arg(long, env = "RUSTORIUM_BIND")]
    pub bind: Option<String>,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "RUSTORIUM_WORKERS")]
    pub workers: Option<usize>,
    /// An API key, NAME:SECRET[:ROLE+ROLE] (roles: subscribe, publish, command, admin). Repeatable;
    /// the variable takes a comma-separated list. Added to the file's keys.
    #[arg(long = "key", env = "RUSTORIUM_KEYS", value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Milliseconds between heartbeats (default 30000).
    #[arg(long, env = "RUSTORIUM_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds of client silence before closing 4004 (default 2 intervals + 10 s).
    #[arg(long, env = "RUSTORIUM_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Concurrent connections per key (default 10).
    #[arg(long, env = "RUSTORIUM_MAX_CONNECTIONS_PER_KEY")]
    pub max_connections_per_key: Option<u32>,
    /// Accept channel names beyond the six of the contract as plain channels.
    #[arg(long, env = "RUSTORIUM_ALLOW_PLAIN_CHANNELS")]
    pub allow_plain_channels: Option<bool>,
    /// The engine: `memory` (one process, the default) or `redis` (a cluster).
    #[arg(long, env = "RUSTORIUM_ENGINE")]
    pub engine: Option<EngineKind>,
    /// The Redis server of the `redis` engine (default redis://127.0.0.1:6379/).
    #[arg(long, env = "RUSTORIUM_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of the cluster's Redis keys (default `rustorium:`).
    #[arg(long, env = "RUSTORIUM_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// How log lines on stderr look: `text` for people, `json` (one object a line) for
    /// log shippers.
    #[arg(long, env = "RUSTORIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The shape of the broker's log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// env_logger's text lines.
    Text,
    /// One JSON object a line: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`.
    Json,
}

impl Cli {
    /// The configuration: the file (or defaults), these overrides, then validation.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.read()?.finish()
    }

    /// The file (or defaults) with these overrides, not yet validated: what a reload
    /// reads again.
    pub fn read(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = &self.bind {
            config.server.bind = bind.clone();
        }
        if let Some(workers) = self.workers {
            config.server.workers = workers;
        }
        for key in &self.keys {
            config.keys.push(parse_key_flag(key)?);
        }
        if let Some(ms) = self.heartbeat_interval_ms {
            config.heartbeat.interval_ms = ms;
        }
        if let Some(ms) = self.heartbeat_timeout_ms {
            config.heartbeat.timeout_ms = Some(ms);
        }
        if let Some(n) = self.max_connections_per_key {
            config.limits.max_connections_per_key = n;
        }
        if let Some(allow) = self.allow_plain_channels {
            config.channels.allow_plain = allow;
        }
        if let Some(kind) = self.engine {
            config.engine.kind = kind;
        }
        if let Some(url) = &self.redis_url {
            config.engine.redis_url = url.clone();
        }
        if let Some(prefix) = &self.redis_prefix {
            config.engine.key_prefix = prefix.clone();
        }
        Ok(config)
    }
}
