//! Configuration: a TOML file, then environment variables and command-line flags on top,
//! then validation that names the bad field. With no keys configured on a loopback
//! address, a random development key with every role is generated.

use std::net::SocketAddr;
use std::path::Path;

use rustorium_actors::settings::{
    ChannelSettings, EngineSettings, HeartbeatSettings, Limits, PublishSettings, ResumeSettings,
    SettingError,
};
use rustorium_actors::{Role, Settings};
use serde::{Deserialize, Serialize};

use crate::ledger::config::{DemoConfig, LedgerConfig};

/// Where the broker listens and how it stops (`[server]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:9072`. Port 0 picks a free port.
    pub bind: String,
    /// HTTP worker threads; 0 means one per CPU core. Default 0.
    pub workers: usize,
    /// Milliseconds a shutdown waits for connections to close after sending them 1001,
    /// before dropping them. Default 5000.
    pub shutdown_timeout_ms: u64,
    /// `[server.tls]`: serve `wss://` and `https://` with this certificate. Default: none
    /// (plain `ws://` and `http://`).
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:9072".into(),
            workers: 0,
            shutdown_timeout_ms: 5000,
            tls: None,
        }
    }
}

/// The operator dashboard (`[dashboard]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve `/dashboard` and sample the counters for it. Default true.
    pub enabled: bool,
    /// Milliseconds between samples (the page's updates); at least 1000. Default 1000.
    pub sample_interval_ms: u64,
    /// Samples kept for a page that opens (the chart's span): 300 at the default interval
    /// is the last 5 minutes. 1 to 3600. Default 300.
    pub history_samples: usize,
    /// Pages open at once; more are refused with 503. 1 to 1000. Default 16.
    pub max_viewers: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            sample_interval_ms: 1000,
            history_samples: 300,
            max_viewers: 16,
        }
    }
}

/// One API key (`[[keys]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name used in logs and metrics; the secret never is.
    pub name: String,
    /// The secret clients present (`?token=`, `?api_key=`, `Authorization: Bearer`).
    pub secret: String,
    /// Roles: `subscribe`, `publish`, `command`, `admin` (the dashboard). Default
    /// `["subscribe"]`.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// This key's cap on concurrent connections; default `limits.max_connections_per_key`.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Subscribe]
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener and shutdown.
    pub server: ServerConfig,
    /// API keys. Empty (and no token issuers): a development key is generated (loopback
    /// addresses only).
    pub keys: Vec<KeyConfig>,
    /// Issuers of signed tokens (JWT) accepted beside the keys (`[[token_issuers]]`).
    /// Default: none.
    pub token_issuers: Vec<crate::tokens::TokenIssuerConfig>,
    /// Per-connection and per-key limits.
    pub limits: Limits,
    /// Heartbeat interval and liveness timeout.
    pub heartbeat: HeartbeatSettings,
    /// Publishing limits.
    pub publish: PublishSettings,
    /// Plain channels.
    pub channels: ChannelSettings,
    /// Resume after reconnect.
    pub resume: ResumeSettings,
    /// The engine: `memory` (one process) or `redis` (a cluster).
    pub engine: EngineSettings,
    /// The built-in ledger (the standalone broker's command backend) and its genesis.
    pub ledger: LedgerConfig,
    /// The synthetic demo feed.
    pub demo: DemoConfig,
    /// The operator dashboard (`/dashboard`).
    pub dashboard: DashboardConfig,
    /// The generated development key, if one was made (never read from the file).
    #[serde(skip)]
    pub dev_key: Option<String>,
}

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML for this schema; the message names the field.
    Parse {
        /// The path given.
        path: String,
        /// The parser's message, with the field and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    Invalid(SettingError),
    /// The TLS certificate or key of `[server.tls]` cannot be used; names the file.
    Tls(crate::tls::TlsError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, message } => write!(f, "cannot read {path}: {message}"),
            ConfigError::Parse { path, message } => write!(f, "{path}: {message}"),
            ConfigError::Invalid(e) => write!(f, "{e}"),
            ConfigError::Tls(e) => write!(f, "server.tls: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(SettingError {
        field: field.into(),
        message: message.into(),
    })
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut config = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: shown,
                message,
            },
            other => other,
        })?;
        if let (Some(tls), Some(dir)) = (config.server.tls.as_mut(), path.parent()) {
            tls.relative_to(dir);
        }
        if let Some(dir) = path.parent() {
            for issuer in &mut config.token_issuers {
                issuer.relative_to(dir);
            }
        }
        Ok(config)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "config".into(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// The configuration as TOML of the file's schema, every default filled in, with each
    /// key's secret and the password of `engine.redis_url` replaced by `***` (what
    /// `rustorium-broker check-config` prints).
    pub fn masked_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        for key in &mut shown.keys {
            key.secret = MASK.into();
        }
        for issuer in &mut shown.token_issuers {
            if issuer.secret.is_some() {
                issuer.secret = Some(MASK.into());
            }
        }
        shown.engine.redis_url = mask_password(&shown.engine.redis_url);
        for url in &mut shown.engine.sentinels {
            *url = mask_password(url);
        }
        toml::to_string(&shown).map_err(|e| invalid("config", format!("cannot print: {e}")))
    }

    /// The settings the actor system needs.
    pub fn settings(&self) -> Settings {
        Settings {
            limits: self.limits.clone(),
            heartbeat: self.heartbeat.clone(),
            publish: self.publish.clone(),
            channels: self.channels.clone(),
            resume: self.resume.clone(),
            engine: self.engine.clone(),
        }
    }

    /// The bind address, parsed.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| {
            invalid(
                "server.bind",
                format!(
                    "\"{}\" is not an address such as 127.0.0.1:9072",
                    self.server.bind
                ),
            )
        })
    }

    /// [`Config::finish`] for a reload of `running`: when neither configures a key, the
    /// running development key stays (a new one would revoke it).
    pub fn finish_reload(mut self, running: &Config) -> Result<Config, ConfigError> {
        if self.keys.is_empty() {
            if let Some(secret) = &running.dev_key {
                if let Some(dev) = running.keys.iter().find(|k| &k.secret == secret) {
                    self.keys.push(dev.clone());
                    self.dev_key = Some(secret.clone());
                }
            }
        }
        self.finish()
    }

    /// Checks every field, and generates the development key when no key is configured
    /// and the address is loopback. The error names the field.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        let addr = self.bind_addr()?;
        self.settings().validate().map_err(ConfigError::Invalid)?;
        let d = &self.dashboard;
        if d.sample_interval_ms < 1000 {
            return Err(invalid(
                "dashboard.sample_interval_ms",
                "must be at least 1000 (the page updates at most once a second)",
            ));
        }
        if !(1..=3600).contains(&d.history_samples) {
            return Err(invalid("dashboard.history_samples", "must be 1 to 3600"));
        }
        if !(1..=1000).contains(&d.max_viewers) {
            return Err(invalid("dashboard.max_viewers", "must be 1 to 1000"));
        }
        if let Some(tls) = &self.server.tls {
            crate::tls::load(tls).map_err(ConfigError::Tls)?;
        }
        crate::ledger::config::validate(&self.ledger, &self.demo)
            .map_err(|(f, m)| invalid(f, m))?;
        for (i, key) in self.keys.iter().enumerate() {
            let field = |f: &str| format!("keys[{i}].{f}");
            if key.name.trim().is_empty() {
                return Err(invalid(field("name"), "must not be empty"));
            }
            if key.secret.is_empty() {
                return Err(invalid(field("secret"), "must not be empty"));
            }
            if key.roles.is_empty() {
                return Err(invalid(
                    field("roles"),
                    "must name at least one of subscribe, publish, command, admin",
                ));
            }
            if key.max_connections == Some(0) {
                return Err(invalid(field("max_connections"), "must be at least 1"));
            }
            if self.keys[..i].iter().any(|k| k.name == key.name) {
                return Err(invalid(field("name"), "is used by another key"));
            }
            if self.keys[..i].iter().any(|k| k.secret == key.secret) {
                return Err(invalid(field("secret"), "is used by another key"));
            }
            if key
                .name
                .starts_with(rustorium_actors::token::IDENTITY_PREFIX)
            {
                return Err(invalid(
                    field("name"),
                    format!(
                        "must not start with \"{}\" (reserved for signed tokens' subs)",
                        rustorium_actors::token::IDENTITY_PREFIX
                    ),
                ));
            }
        }
        crate::tokens::validate(&self.token_issuers).map_err(|(f, m)| invalid(f, m))?;
        if self.keys.is_empty() && self.token_issuers.is_empty() {
            if !addr.ip().is_loopback() {
                return Err(invalid(
                    "keys",
                    format!(
                        "refusing to listen on {addr} with no keys configured: add [[keys]] to the config file or pass --key NAME:SECRET:ROLES"
                    ),
                ));
            }
            let secret = format!("dev_{:032x}", rand::random::<u128>());
            self.keys.push(KeyConfig {
                name: "dev".into(),
                secret: secret.clone(),
                roles: vec![Role::Subscribe, Role::Publish, Role::Command, Role::Admin],
                max_connections: None,
            });
            self.dev_key = Some(secret);
        }
        Ok(self)
    }
}

/// What a masked secret reads as.
pub const MASK: &str = rustorium_actors::settings::MASK;

use rustorium_actors::settings::masked_url as mask_password;

/// Parses `NAME:SECRET[:ROLE+ROLE...]` as given to `--key`.
pub fn parse_key_flag(text: &str) -> Result<KeyConfig, ConfigError> {
    let mut parts = text.splitn(3, ':');
    let (Some(name), Some(secret)) = (parts.next(), parts.next()) else {
        return Err(invalid(
            "--key",
            "expected NAME:SECRET or NAME:SECRET:ROLE+ROLE",
        ));
    };
    let roles = match parts.next() {
        None => default_roles(),
        Some(list) => list
            .split('+')
            .map(|r| match r {
                "subscribe" => Ok(Role::Subscribe),
                "publish" => Ok(Role::Publish),
                "command" => Ok(Role::Command),
                "admin" => Ok(Role::Admin),
                other => Err(invalid(
                    "--key",
                    format!(
                        "unknown role \"{other}\"; expected subscribe, publish, command or admin"
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(KeyConfig {
        name: name.into(),
        secret: secret.into(),
        roles,
        max_connections: None,
    })
}

/// Logs a warning when one publish at its limits (`publish.max_batch_events` events,
/// `publish.max_body_bytes` bytes) can fill half a connection's queue
/// (`limits.connection_queue_*`): every reader of such a batch's channel would then be cut
/// 4005 however fast it reads. Allowed (a deployment may never publish such batches), but
/// said at start.
pub fn warn_queue_below_batch(config: &Config) {
    let (limits, publish) = (&config.limits, &config.publish);
    if limits.connection_queue_frames < publish.max_batch_events.saturating_mul(2)
        || limits.connection_queue_bytes < publish.max_body_bytes.saturating_mul(2)
    {
        log::warn!(
            "limits.connection_queue_frames ({}) and connection_queue_bytes ({}) should be at least twice publish.max_batch_events ({}) and max_body_bytes ({}): one publish at its limits can cut every reader of its channel 4005",
            limits.connection_queue_frames,
            limits.connection_queue_bytes,
            publish.max_batch_events,
            publish.max_body_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_a_dev_key_on_loopback() {
        let c = Config::default().finish();
        assert!(c.is_ok_and(|c| c.dev_key.is_some() && c.keys.len() == 1));
    }

    #[test]
    fn non_loopback_without_keys_is_refused() {
        let mut c = Config::default();
        c.server.bind = "0.0.0.0:9072".into();
        let e = c.finish().err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.starts_with("keys: refusing")));
    }

    #[test]
    fn masked_toml_hides_secrets_and_reads_back() {
        let text = "[[keys]]\nname = \"alice\"\nsecret = \"s3cret-alice-123\"\n\
                    [engine]\nredis_url = \"redis://user:hunter2@10.0.0.1:6379/0\"\n";
        let config = Config::from_toml(text).and_then(Config::finish);
        let shown = config.and_then(|c| c.masked_toml());
        let Ok(shown) = shown else {
            panic!("masked: {shown:?}");
        };
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://user:***@10.0.0.1:6379/0"),
            "{shown}"
        );
        let back = Config::from_toml(&shown).and_then(Config::finish);
        assert!(back.is_ok_and(|c| c.keys[0].name == "alice" && c.keys[0].secret == MASK));
    }

    #[test]
    fn sentinel_urls_are_masked_and_checked() {
        let text = "[engine]\nkind = \"redis\"\nredis_url = \"rediss://app:pw-one@h:6380/\"\n\
                    sentinels = [\"redis://:pw-two@10.0.0.2:26379\"]\n";
        let shown = Config::from_toml(text)
            .and_then(Config::finish)
            .and_then(|c| c.masked_toml());
        let Ok(shown) = shown else {
            panic!("masked: {shown:?}");
        };
        assert!(
            !shown.contains("pw-one") && !shown.contains("pw-two"),
            "{shown}"
        );
        assert!(shown.contains("redis://:***@10.0.0.2:26379"), "{shown}");
        let debug = Config::from_toml(text).map(|c| format!("{:?}", c.engine));
        assert!(debug.is_ok_and(|d| !d.contains("pw-one") && !d.contains("pw-two")));
        let bad = "[engine]\nkind = \"redis\"\nsentinels = [\"http://:secret@h:1\"]\n";
        let e = Config::from_toml(bad).and_then(Config::finish).err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("engine.sentinels[0]") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn a_url_without_password_is_unchanged() {
        for url in ["redis://127.0.0.1:6379/", "redis://user@host/", "not a url"] {
            assert_eq!(mask_password(url), url);
        }
        assert_eq!(mask_password("redis://:pw@h/"), "redis://:***@h/");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_toml("[limits]\nmax_frame_byte = 5\n").err();
        assert!(e.is_some_and(|e| e.to_string().contains("max_frame_byte")));
    }

    #[test]
    fn out_of_range_is_named() {
        let c = Config::from_toml("[limits]\nmax_subscriptions_per_connection = 0\n");
        let e = c.and_then(Config::finish).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.starts_with("limits.max_subscriptions_per_connection")));
    }
}
