//! Reloading the configuration while the broker runs (SIGHUP in the standalone broker):
//! the keys, the token issuers and the TLS certificate take effect at once; a connection
//! whose key was removed, or whose token's issuer was, closes with 4000, every other
//! connection stays. A file that does not validate
//! is refused and the running configuration stays. Every other section needs a restart,
//! and the report names it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustorium_actors::messages::{Rekey, RekeyAll};

use crate::{Broker, Config, ConfigError};

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys that are new (by name).
    pub added: Vec<String>,
    /// Keys removed: their connections were told to close 4000.
    pub removed: Vec<String>,
    /// Keys whose secret changed: connections made with the old one were told to close
    /// 4000.
    pub rotated: Vec<String>,
    /// Keys whose roles or connection cap changed; their connections stay.
    pub changed: Vec<String>,
    /// Token issuers that are new (by name).
    pub issuers_added: Vec<String>,
    /// Token issuers removed, or whose key, `iss` or `aud` changed: connections made with
    /// their tokens were told to close 4000.
    pub issuers_removed: Vec<String>,
    /// Whether a new certificate was loaded (the next handshake presents it).
    pub certificate_reloaded: bool,
    /// Sections that changed in the file but take effect only after a restart; the
    /// running values stay.
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "keys added: {}; removed: {}; secret rotated: {}; changed: {}; token issuers added: {}; removed: {}; certificate {}",
            list(&self.added),
            list(&self.removed),
            list(&self.rotated),
            list(&self.changed),
            list(&self.issuers_added),
            list(&self.issuers_removed),
            if self.certificate_reloaded {
                "reloaded"
            } else {
                "unchanged"
            }
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; changed but needing a restart (running values kept): {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The sections of `new` that differ from `running` and cannot change at run time.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let (r, n) = (&running.server, &new.server);
    let mut out = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    check(r.bind != n.bind, "server.bind");
    check(r.workers != n.workers, "server.workers");
    check(
        r.shutdown_timeout_ms != n.shutdown_timeout_ms,
        "server.shutdown_timeout_ms",
    );
    check(
        r.tls.is_some() != n.tls.is_some(),
        "server.tls (turning TLS on or off)",
    );
    check(running.limits != new.limits, "limits");
    check(running.heartbeat != new.heartbeat, "heartbeat");
    check(running.publish != new.publish, "publish");
    check(running.channels != new.channels, "channels");
    check(running.resume != new.resume, "resume");
    check(running.engine != new.engine, "engine");
    check(running.ledger != new.ledger, "ledger");
    check(running.demo != new.demo, "demo");
    check(running.dashboard != new.dashboard, "dashboard");
    out
}

impl Broker {
    /// Counts and logs a reload whose file could not even be read or parsed.
    pub fn count_refused_reload(&self, e: &ConfigError) {
        let metrics = &self.state.core.metrics;
        metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
        log::error!("configuration reload refused, the running configuration stays: {e}");
    }

    /// Applies `new` (as read from the file, with the command line on top): validates it
    /// first, and refuses it whole, keeping the running configuration, if any field is
    /// invalid or the new certificate cannot be loaded. Then replaces the keys (a removed
    /// key's connections close with 4000; the others take their new roles and caps) and the
    /// certificate. Counted in `rustorium_config_reloads_total` or
    /// `rustorium_config_reload_failures_total`, and logged by key name.
    pub async fn reload(&self, new: Config) -> Result<ReloadReport, ConfigError> {
        let running = self.config();
        let refused = |e: ConfigError| {
            self.count_refused_reload(&e);
            e
        };
        let new = new.finish_reload(&running).map_err(refused)?;
        let mut report = ReloadReport {
            needs_restart: needs_restart(&running, &new),
            ..ReloadReport::default()
        };
        // Load the certificate before changing anything, so a bad one refuses it all.
        let cert = match (&self.certs, &new.server.tls) {
            (Some(_), Some(tls)) => {
                Some(crate::tls::load(tls).map_err(|e| refused(ConfigError::Tls(e)))?)
            }
            _ => None,
        };
        if let (Some(store), Some(cert)) = (&self.certs, cert) {
            store.replace(cert);
            report.certificate_reloaded = true;
        }
        let changes = self.state.keys.replace(&new.keys);
        let issuers = self.state.issuers.replace(&new.token_issuers);
        if !changes.removed.is_empty()
            || !changes.rotated.is_empty()
            || !changes.changed.is_empty()
            || !issuers.removed.is_empty()
        {
            let rekey = Rekey {
                keys: Arc::new(changes.table),
                issuers: Arc::new(issuers.ids),
            };
            let told = self
                .state
                .core
                .heartbeat
                .send(RekeyAll(rekey))
                .await
                .unwrap_or(0);
            log::debug!("reload: {told} connections given the new keys and issuers");
        }
        report.issuers_added = issuers.added;
        report.issuers_removed = issuers.removed;
        report.added = changes.added;
        report.removed = changes.removed;
        report.rotated = changes.rotated;
        report.changed = changes.changed;
        // What runs now: the new keys and certificate, every other section as it was.
        let mut effective = (*running).clone();
        effective.keys = new.keys;
        effective.token_issuers = new.token_issuers;
        effective.dev_key = new.dev_key;
        if let (Some(tls), true) = (new.server.tls, running.server.tls.is_some()) {
            effective.server.tls = Some(tls);
        }
        match self.running.write() {
            Ok(mut config) => *config = Arc::new(effective),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(effective),
        }
        self.state
            .core
            .metrics
            .reloads
            .fetch_add(1, Ordering::Relaxed);
        log::info!("configuration reloaded: {report}");
        if !report.needs_restart.is_empty() {
            log::warn!(
                "configuration reload: {} changed but take effect only after a restart",
                report.needs_restart.join(", ")
            );
        }
        Ok(report)
    }
}
