//! A connection's signed token over its life (PROTOCOL.md section 12): the timer that
//! closes it 4000 (`token expired`) at `exp` plus the leeway, and `refresh`, which puts a
//! new token of the same `sub` in place of the old one and moves the timer. Subscriptions,
//! their position and the connection are untouched; a refused refresh leaves the old token
//! in force.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::AsyncContext;
use actix_web_actors::ws;
use serde_json::Value;

use super::requests::Failure;
use super::Connection;
use crate::disconnect::Disconnect;
use crate::keys::ApiKey;
use crate::protocol::render::Reply;
use crate::protocol::ErrorKind;
use crate::token::TokenRefusal;

/// Milliseconds since the UNIX epoch now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Connection {
    /// (Re)starts the expiry timer of a connection made with a signed token: at the
    /// token's `exp` plus the leeway, it closes 4000 with the reason `token expired`, and
    /// its subscriptions are parked for the resume window like after any other drop.
    pub(super) fn arm_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(old) = self.expiry.take() {
            ctx.cancel_future(old);
        }
        let Some(token) = &self.key.token else {
            return;
        };
        let wait = Duration::from_millis(token.close_at_ms.saturating_sub(now_ms()));
        self.expiry = Some(ctx.run_later(wait, |this, ctx| {
            this.expiry = None;
            if let Some(token) = &this.key.token {
                log::info!(
                    "connection {} of sub {} closed: token expired",
                    this.conn(),
                    token.sub
                );
            }
            this.core
                .metrics
                .tokens_expired
                .fetch_add(1, Ordering::Relaxed);
            this.disconnect(ctx, Disconnect::TokenExpired);
        }));
    }

    /// The key a `refresh` puts in place, or why not: an invalid token is
    /// `invalid_request`, a valid one of another `sub` (or any token on a connection made
    /// with a configured key) is `forbidden`.
    fn check_refresh(&self, token: &str) -> Result<Arc<ApiKey>, Failure> {
        let (Some(current), Some(verifier)) = (&self.key.token, &self.verifier) else {
            return Err(Failure::new(
                ErrorKind::Forbidden,
                "forbidden: this connection was made with an API key; refresh replaces a signed token",
            ));
        };
        let key = verifier
            .verify(token)
            .map_err(|why| Failure::new(ErrorKind::InvalidRequest, why.message()))?;
        match &key.token {
            Some(new) if new.sub == current.sub => Ok(key),
            _ => {
                let why = TokenRefusal::OtherSub;
                self.core.metrics.refuse_token(why);
                log::info!(
                    "connection {}: refresh refused, the new token names another sub than {}",
                    self.conn(),
                    current.sub
                );
                Err(Failure::new(ErrorKind::Forbidden, why.message()))
            }
        }
    }

    /// `refresh`: a valid token of the same `sub` replaces the connection's token (its
    /// roles and grant apply to later requests) and moves the expiry; the reply carries the
    /// new `exp`.
    pub(super) fn refresh(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        token: &str,
    ) {
        let result = self.check_refresh(token).map(|key| {
            let exp_ms = key.token.as_ref().map_or(0, |t| t.expires_at_ms);
            self.key = key;
            self.arm_expiry(ctx);
            self.core
                .metrics
                .token_refreshes
                .fetch_add(1, Ordering::Relaxed);
            Reply::Refreshed {
                expires_at: crate::heartbeat::rfc3339(exp_ms / 1000),
            }
        });
        self.respond(ctx, id.as_ref(), result);
    }
}
