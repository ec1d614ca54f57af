//! Command-line flags for the common settings; each also reads an environment variable.
//! Flags and variables override the configuration file.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use rustorium_actors::settings::EngineKind;

use crate::config::{parse_key_flag, Config, ConfigError};

/// rustorium-broker: a real-time WebSocket message broker for the Rustorium API.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do instead of running the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file (not with `check-config`, whose PATH is the file).
    #[arg(long, env = "RUSTORIUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9072).
    #[arg(long, env = "RUSTORIUM_BIND", global = true)]
    pub bind: Option<String>,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "RUSTORIUM_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// An API key, NAME:SECRET[:ROLE+ROLE] (roles: subscribe, publish, command, admin). Repeatable;
    /// the variable takes a comma-separated list. Added to the file's keys.
    #[arg(
        long = "key",
        env = "RUSTORIUM_KEYS",
        value_delimiter = ',',
        global = true
    )]
    pub keys: Vec<String>,
    /// Milliseconds between heartbeats (default 30000).
    #[arg(long, env = "RUSTORIUM_HEARTBEAT_INTERVAL_MS", global = true)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds of client silence before closing 4004 (default 2 intervals + 10 s).
    #[arg(long, env = "RUSTORIUM_HEARTBEAT_TIMEOUT_MS", global = true)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Concurrent connections per key (default 10).
    #[arg(long, env = "RUSTORIUM_MAX_CONNECTIONS_PER_KEY", global = true)]
    pub max_connections_per_key: Option<u32>,
    /// Accept channel names beyond the six of the contract as plain channels.
    #[arg(long, env = "RUSTORIUM_ALLOW_PLAIN_CHANNELS", global = true)]
    pub allow_plain_channels: Option<bool>,
    /// The engine: `memory` (one process, the default) or `redis` (a cluster).
    #[arg(long, env = "RUSTORIUM_ENGINE", global = true)]
    pub engine: Option<EngineKind>,
    /// The Redis server of the `redis` engine (default redis://127.0.0.1:6379/).
    #[arg(long, env = "RUSTORIUM_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of the cluster's Redis keys (default `rustorium:`).
    #[arg(long, env = "RUSTORIUM_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,
    /// How log lines on stderr look: `text` for people, `json` (one object a line) for
    /// log shippers.
    #[arg(
        long,
        env = "RUSTORIUM_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

/// The operator commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validates a configuration file as a start would (the flags and environment on
    /// top, the TLS certificate and key included), prints the effective configuration
    /// with secrets masked, and exits 0; on an error, names the field and exits 2.
    CheckConfig {
        /// The TOML file.
        path: PathBuf,
    },
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
    /// `check-config PATH`: what to print (the effective configuration, masked), or the
    /// error naming the field.
    pub fn check_config(&self, path: &std::path::Path) -> Result<String, ConfigError> {
        let mut cli = self.clone();
        cli.config = Some(path.to_path_buf());
        let config = cli.load()?;
        let mut out = format!("# effective configuration of {}: valid\n", path.display());
        if config.dev_key.is_some() {
            out.push_str(
                "# no keys are configured: a development key \"dev\" (every role) is generated at each start\n",
            );
        }
        out.push('\n');
        out.push_str(&config.masked_toml()?);
        Ok(out)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rustorium-broker").chain(args.iter().copied()))
    }

    #[test]
    fn flags_apply_before_or_after_check_config() {
        for args in [
            &[
                "--key",
                "bob:pw",
                "--log-format",
                "json",
                "check-config",
                "b.toml",
            ][..],
            &[
                "check-config",
                "b.toml",
                "--key",
                "bob:pw",
                "--log-format",
                "json",
            ][..],
        ] {
            let cli = parse(args);
            assert!(
                cli.as_ref().is_ok_and(|c| c.keys == ["bob:pw"]
                    && c.log_format == LogFormat::Json
                    && matches!(&c.command, Some(Command::CheckConfig { path }) if path.as_os_str() == "b.toml")),
                "{args:?}: {cli:?}"
            );
        }
    }

    #[test]
    fn plain_flags_still_run_the_broker() {
        let cli = parse(&["--bind", "127.0.0.1:0", "--key", "a:b"]);
        assert!(cli.is_ok_and(|c| c.command.is_none() && c.bind.as_deref() == Some("127.0.0.1:0")));
    }
}
