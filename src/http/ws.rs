//! The WebSocket upgrade: resolve the key (or signed token), ask the rate limiter to admit the connection,
//! and start a connection actor. Refused connections still complete the upgrade, get one
//! error frame and a close code, because browsers cannot read a refused upgrade's status.

use std::sync::Arc;

use actix_web::{web, Error, HttpRequest, HttpResponse};
use actix_web_actors::ws::WsResponseBuilder;
use rustorium_actors::connection::refused::Refused;
use rustorium_actors::connection::{Admitted, Connection};
use rustorium_actors::disconnect::Disconnect;
use rustorium_actors::messages::Admit;
use rustorium_actors::metrics::Rejection;
use rustorium_actors::protocol::Dialect;
use rustorium_actors::rate_limiter::AdmitError;
use rustorium_actors::token::TokenVerifier;
use rustorium_actors::Role;

use super::input::OneFrameAtATime;
use super::AppState;

/// `GET /ws`: the node API dialect.
pub async fn ws_dialect(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
    upgrade(req, stream, state, Dialect::Ws).await
}

/// `GET /v1`: the v1 API dialect.
pub async fn v1_dialect(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
    upgrade(req, stream, state, Dialect::V1).await
}

async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    dialect: Dialect,
) -> Result<HttpResponse, Error> {
    crate::preauth::seen(&req);
    let core = state.core.clone();
    let key = match crate::auth::presented_key(&req, dialect) {
        Some(presented) => crate::auth::resolve(&state.keys, &state.issuers, &presented),
        None => Err(None),
    };
    let limits = &core.settings.limits;
    let mut max_frame = limits.max_frame_bytes;
    let admitted = match key {
        Err(why) => {
            core.metrics.reject(Rejection::InvalidToken);
            Err(why.map_or(Disconnect::InvalidToken, Disconnect::TokenRefused))
        }
        Ok(key) => {
            if key.has(Role::Publish) {
                max_frame = max_frame.max(core.settings.publish.max_body_bytes);
            }
            let asked = Admit {
                key: key.clone(),
                dialect,
            };
            match core.limiter.send(asked).await {
                Ok(Ok(admission)) => {
                    // The key's connections on every node that shares the engine.
                    let cap = key
                        .max_connections
                        .unwrap_or(limits.max_connections_per_key);
                    match core.engine.hold_slot(&key.name, admission.conn, cap).await {
                        Ok(true) => {
                            let verifier = key
                                .token
                                .is_some()
                                .then(|| state.issuers.clone() as Arc<dyn TokenVerifier>);
                            Ok(Admitted {
                                key,
                                admission,
                                verifier,
                            })
                        }
                        Ok(false) => {
                            core.metrics.reject(Rejection::ConnectionLimit);
                            Err(Disconnect::TooManyConnections { max: cap })
                        }
                        Err(e) => {
                            log::warn!("connection refused 1013: {e}");
                            Err(Disconnect::TryAgainLater)
                        }
                    }
                }
                Ok(Err(AdmitError::TooManyConnections { max })) => {
                    Err(Disconnect::TooManyConnections { max })
                }
                Err(_) => return Ok(HttpResponse::ServiceUnavailable().finish()),
            }
        }
    };
    match admitted {
        Ok(admitted) => {
            crate::preauth::authenticated(&req);
            log::debug!("admitting connection for key {}", admitted.key.name);
            let connection = Connection::new(core, dialect, admitted, max_frame);
            let input = OneFrameAtATime::new(stream, max_frame, connection.read_gate());
            WsResponseBuilder::new(connection, &req, input)
                .frame_size(max_frame)
                .start()
        }
        Err(why) => WsResponseBuilder::new(Refused::new(core, dialect, why), &req, stream)
            .frame_size(max_frame)
            .start(),
    }
}
