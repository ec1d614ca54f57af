//! The operator dashboard: `GET /dashboard` serves one self-contained page (no CDN, no
//! request to anywhere but this broker); the page logs in by key and reads
//! `GET /dashboard/stream`, server-sent events of the [`sampler::Sampler`]'s samples, with
//! the key in the `Authorization` header (never in a URL). Only keys with the `admin`
//! role may read it.

pub mod sampler;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use rustorium_actors::metrics::Rejection;
use rustorium_actors::Role;
use tokio::sync::broadcast;

use crate::http::AppState;
use sampler::Sampler;

/// The page, inline styles and script included.
const PAGE: &str = include_str!("page.html");

/// `GET /dashboard`: the page. It holds no data; the stream needs an admin key.
pub async fn page(req: HttpRequest) -> HttpResponse {
    crate::preauth::seen(&req);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        ))
        .body(PAGE)
}

fn refuse(
    state: &AppState,
    status: actix_web::http::StatusCode,
    why: Rejection,
    msg: &str,
) -> HttpResponse {
    state.core.metrics.reject(why);
    HttpResponse::build(status).json(serde_json::json!({"error": why.label(), "message": msg}))
}

/// Counts an open page for as long as its stream lives.
struct Viewer(Arc<Sampler>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /dashboard/stream` with `Authorization: Bearer ADMIN_KEY`: 401 for a missing or
/// unknown key, 403 for a key without the `admin` role, 503 past `dashboard.max_viewers`
/// open pages; else `text/event-stream`: an `event: history` with the samples kept, then
/// an `event: sample` per sample. It ends when a reload takes the key's admin role away.
pub async fn stream_samples(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    use actix_web::http::StatusCode;
    crate::preauth::seen(&req);
    let Some(sampler) = state.dashboard.clone() else {
        return HttpResponse::NotFound().finish();
    };
    let Some(presented) = crate::auth::bearer(&req) else {
        let msg = "missing Authorization: Bearer ADMIN_KEY header";
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            Rejection::InvalidToken,
            msg,
        );
    };
    let Some(key) = state.keys.lookup(&presented) else {
        let msg = "invalid token: unknown API key";
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            Rejection::InvalidToken,
            msg,
        );
    };
    crate::preauth::authenticated(&req);
    if !key.has(Role::Admin) {
        let msg = "forbidden: this key lacks the admin role";
        return refuse(&state, StatusCode::FORBIDDEN, Rejection::Forbidden, msg);
    }
    let max = sampler.config().max_viewers;
    if sampler.viewers.fetch_add(1, Ordering::Relaxed) >= max {
        sampler.viewers.fetch_sub(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": "unavailable",
            "message": format!("the dashboard already has its maximum of {max} open pages"),
        }));
    }
    let viewer = Viewer(sampler.clone());
    let (kept, rx) = sampler.subscribe();
    let first = format!(
        "event: history\ndata: {{\"samples\":[{}]}}\n\n",
        kept.join(",")
    );
    let keys = state.keys.clone();
    struct Open {
        rx: broadcast::Receiver<Arc<str>>,
        first: Option<String>,
        presented: String,
        keys: Arc<crate::auth::KeyStore>,
        _viewer: Viewer,
    }
    let open = Open {
        rx,
        first: Some(first),
        presented,
        keys,
        _viewer: viewer,
    };
    let events = stream::unfold(open, |mut open| async move {
        if let Some(first) = open.first.take() {
            return Some((Ok::<_, actix_web::Error>(Bytes::from(first)), open));
        }
        loop {
            match open.rx.recv().await {
                Ok(sample) => {
                    let still_admin = open
                        .keys
                        .lookup(&open.presented)
                        .is_some_and(|k| k.has(Role::Admin));
                    if !still_admin {
                        return None;
                    }
                    let frame = format!("event: sample\ndata: {sample}\n\n");
                    return Some((Ok(Bytes::from(frame)), open));
                }
                // A page that fell behind skips to the newest samples.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(events)
}
