//! Operation routes: `/health` (alive), `/ready` (accepting and not shutting down),
//! `/metrics` (Prometheus text).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use rustorium_actors::metrics::Gauges;

use super::AppState;

/// `GET /health`: 200 while the process serves HTTP.
pub async fn health(req: HttpRequest) -> HttpResponse {
    crate::preauth::seen(&req);
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /ready`: 200 once connections are accepted and the engine can serve (the Redis
/// engine: its subscription to Redis is up and caught up); 503 before, while shutting
/// down, and while Redis is unreachable.
pub async fn ready(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    crate::preauth::seen(&req);
    if state.ready.load(Ordering::Acquire) && state.core.engine.ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "not_ready"}))
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    crate::preauth::seen(&req);
    let core = &state.core;
    let (history_events, history_bytes) = core.engine.history_size();
    let gauges = Gauges {
        subscriptions: core.hubs.subscription_counts(),
        parked: core.engine.parked(),
        history_events,
        history_bytes,
        publish_stalls: core.flow.stalls.load(Ordering::Relaxed),
        publish_stalled_us: core.flow.stalled_us.load(Ordering::Relaxed),
    };
    let body = core.metrics.render(&gauges);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
