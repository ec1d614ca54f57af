//! `POST /api/publish` (PROTOCOL.md section 8 and 10.12): one event or a batch, with a
//! publisher key; replies and errors in the `{"success", "data", "error"}` envelope.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rustorium_actors::metrics::Rejection;
use rustorium_actors::protocol::ErrorKind;
use rustorium_actors::{PublishError, Role};
use serde_json::{json, Value};

use super::AppState;

fn failure(state: &AppState, status: StatusCode, code: &str, message: &str) -> HttpResponse {
    state.core.metrics.reject(Rejection::PublishRejected);
    HttpResponse::build(status).json(json!({
        "success": false,
        "data": null,
        "error": {"code": code, "message": message},
    }))
}

/// Why a body could not be read.
enum BodyError {
    /// Over the limit (413).
    TooLarge,
    /// The connection failed mid-body (400).
    Unreadable,
}

/// Reads the body, refusing it as soon as it passes `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The publish route.
pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    crate::preauth::seen(&req);
    let invalid_token = ErrorKind::InvalidToken.v1_code();
    let Some(presented) = crate::auth::bearer(&req) else {
        let msg = "missing Authorization: Bearer PUBLISHER_KEY header";
        return failure(&state, StatusCode::UNAUTHORIZED, invalid_token, msg);
    };
    let key = match crate::auth::resolve(&state.keys, &state.issuers, &presented) {
        Ok(key) => key,
        Err(why) => {
            let msg = why.map_or("invalid token: unknown API key", |w| w.message());
            return failure(&state, StatusCode::UNAUTHORIZED, invalid_token, msg);
        }
    };
    crate::preauth::authenticated(&req);
    if !key.has(Role::Publish) {
        let msg = "forbidden: this key (or token) lacks the publish role";
        let code = ErrorKind::Forbidden.v1_code();
        return failure(&state, StatusCode::FORBIDDEN, code, msg);
    }
    let limit = state.core.settings.publish.max_body_bytes;
    let too_large = format!("body larger than {limit} bytes");
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return failure(
            &state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &too_large,
        );
    }
    let body = match read_body(payload, limit).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return failure(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &too_large,
            )
        }
        Err(BodyError::Unreadable) => {
            let msg = "the request body could not be read";
            return failure(&state, StatusCode::BAD_REQUEST, "invalid_request", msg);
        }
    };
    let bad = |message: &str| failure(&state, StatusCode::BAD_REQUEST, "invalid_request", message);
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("body is not JSON: {e}")),
    };
    let publisher = &state.core.publisher;
    let result = match publisher.parse_json(value) {
        Ok(events) => publisher.publish(events).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(ids) => {
            HttpResponse::Ok().json(json!({"success": true, "data": {"ids": ids}, "error": null}))
        }
        Err(e @ (PublishError::Unavailable(_) | PublishError::Busy { .. })) => failure(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
        Err(e) => bad(&e.to_string()),
    }
}
