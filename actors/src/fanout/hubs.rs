//! The hub registry: finds (or, for allowed plain channels, creates) the `ChannelHub` of a
//! channel name. The six documented channels get their hub at start; the hub actors run
//! on one arbiter thread of their own, apart from the connection workers (their fan-out
//! runs on the appending thread, see [`super::channel_hub`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Actor, Addr, ArbiterHandle};

use crate::channels::{is_plain_name, ChannelKind};
use crate::fanout::channel_hub::{ChannelHub, HubSetup, SharedHub};
use crate::fanout::progress::Progress;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// A channel's hub, as handed to connections and publishers: one pointer, so handing it
/// out per event costs one reference count, not one per field.
#[derive(Clone)]
pub struct HubRef(Arc<Hub>);

/// What a [`HubRef`] points to.
pub struct Hub {
    /// What kind of channel it is.
    pub kind: ChannelKind,
    /// The channel's name.
    pub name: Arc<str>,
    /// The hub actor: subscribe, unsubscribe and a connection's end go to it.
    pub addr: Addr<ChannelHub>,
    /// Its subscriptions, as the fan-out reaches them.
    pub core: SharedHub,
    gauge: Arc<AtomicI64>,
}

impl std::ops::Deref for HubRef {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.0
    }
}

/// Why a channel name has no hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// Not one of the six, and plain channels are off or the name is not acceptable.
    Unknown(String),
    /// The configured maximum of plain channels exists already.
    TooMany(usize),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Unknown(name) => {
                let shown: String = name.chars().take(64).collect();
                write!(
                    f,
                    "unknown channel \"{shown}\"; expected one of blocks, transactions, state, token_updates, transaction_updates, market_data"
                )
            }
            ChannelError::TooMany(max) => {
                write!(
                    f,
                    "the broker already has its maximum of {max} plain channels"
                )
            }
        }
    }
}

/// Every hub of the broker.
pub struct Hubs {
    known: Vec<HubRef>,
    /// Plain channels, bounded by `channels.max_plain`.
    plain: Mutex<HashMap<Arc<str>, HubRef>>,
    arbiter: ArbiterHandle,
    settings: Settings,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl Hubs {
    /// Starts the six documented hubs on `arbiter`.
    pub fn start(
        arbiter: ArbiterHandle,
        settings: Settings,
        metrics: Arc<Metrics>,
        progress: Arc<Progress>,
    ) -> Hubs {
        let mut hubs = Hubs {
            known: Vec::new(),
            plain: Mutex::new(HashMap::new()),
            arbiter,
            settings,
            metrics,
            progress,
        };
        hubs.known = ChannelKind::KNOWN
            .into_iter()
            .map(|k| hubs.spawn(k, Arc::from(k.name())))
            .collect();
        hubs
    }

    fn spawn(&self, kind: ChannelKind, name: Arc<str>) -> HubRef {
        let gauge = Arc::new(AtomicI64::new(0));
        let setup = HubSetup {
            name: name.clone(),
            kind,
            metrics: self.metrics.clone(),
            gauge: gauge.clone(),
            progress: self.progress.clone(),
            max_held: self.settings.limits.max_pending_confirmations,
        };
        let core = SharedHub::new(setup);
        let owned = core.clone();
        let addr = ChannelHub::start_in_arbiter(&self.arbiter, move |_| ChannelHub::new(owned));
        HubRef(Arc::new(Hub {
            kind,
            name,
            addr,
            core,
            gauge,
        }))
    }

    /// The hub for `name`.
    pub fn get(&self, name: &str) -> Result<HubRef, ChannelError> {
        if let Some(hub) = self.known.iter().find(|h| &*h.name == name) {
            return Ok(hub.clone());
        }
        if !self.settings.channels.allow_plain {
            return Err(ChannelError::Unknown(name.to_owned()));
        }
        let mut plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        // A name in the map was checked when its hub was made.
        if let Some(hub) = plain.get(name) {
            return Ok(hub.clone());
        }
        if !is_plain_name(name) {
            return Err(ChannelError::Unknown(name.to_owned()));
        }
        if plain.len() >= self.settings.channels.max_plain {
            return Err(ChannelError::TooMany(self.settings.channels.max_plain));
        }
        let hub = self.spawn(ChannelKind::Plain, Arc::from(name));
        plain.insert(hub.name.clone(), hub.clone());
        Ok(hub)
    }

    /// Hubs whose events name blocks; they are told when the head advances.
    pub fn block_hubs(&self) -> impl Iterator<Item = &HubRef> {
        self.known.iter().filter(|h| h.kind.has_blocks())
    }

    /// Live subscriptions per channel, for `/metrics`.
    pub fn subscription_counts(&self) -> Vec<(Arc<str>, i64)> {
        let plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        self.known
            .iter()
            .chain(plain.values())
            .map(|h| (h.name.clone(), h.gauge.load(Ordering::Relaxed)))
            .collect()
    }
}
