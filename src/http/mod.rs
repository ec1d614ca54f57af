//! The HTTP routes of the broker, all on one listener: `/ws`, `/v1`,
//! `POST /api/publish`, `/health`, `/ready`, `/metrics`, and `/dashboard` (its own
//! module, `crate::dashboard`).

pub(crate) mod input;
mod ops;
mod publish;
mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::web;
use rustorium_actors::Core;

use crate::auth::KeyStore;

/// What every route needs.
#[derive(Clone)]
pub struct AppState {
    /// The actor system.
    pub core: Arc<Core>,
    /// The configured keys.
    pub keys: Arc<KeyStore>,
    /// The configured signed-token issuers.
    pub issuers: Arc<crate::tokens::Issuers>,
    /// Whether `/ready` answers 200.
    pub ready: Arc<AtomicBool>,
    /// The dashboard's samples; `None` when `dashboard.enabled` is false.
    pub dashboard: Option<Arc<crate::dashboard::sampler::Sampler>>,
    /// Connections without a valid key yet, per address ([`crate::preauth`]).
    pub unauthenticated: Arc<crate::preauth::Unauthenticated>,
}

/// Registers every route of the broker on `cfg`.
pub fn mount(state: AppState, cfg: &mut web::ServiceConfig) {
    let state_has_dashboard = state.dashboard.is_some();
    cfg.app_data(web::Data::new(state))
        .route("/ws", web::get().to(ws::ws_dialect))
        .route("/v1", web::get().to(ws::v1_dialect))
        .route("/api/publish", web::post().to(publish::publish))
        .route("/health", web::get().to(ops::health))
        .route("/ready", web::get().to(ops::ready))
        .route("/metrics", web::get().to(ops::metrics));
    if state_has_dashboard {
        cfg.route("/dashboard", web::get().to(crate::dashboard::page))
            .route(
                "/dashboard/stream",
                web::get().to(crate::dashboard::stream_samples),
            );
    }
}
