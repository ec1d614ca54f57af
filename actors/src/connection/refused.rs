//! A client refused at admission (PROTOCOL.md section 1): the upgrade completes, it gets
//! one error frame and the close code, because browsers cannot read a refused upgrade's
//! HTTP status. It never becomes a [`super::Connection`].

use std::sync::Arc;

use actix::{Actor, ActorContext, StreamHandler};
use actix_web_actors::ws::{self, ProtocolError};

use crate::core::Core;
use crate::disconnect::Disconnect;
use crate::protocol::{render, Dialect, ErrorKind};

/// The refused client's actor: writes, closes, waits for the close handshake (bounded by
/// `limits.close_grace_ms`), and stops.
pub struct Refused {
    core: Arc<Core>,
    dialect: Dialect,
    why: Disconnect,
}

impl Refused {
    /// Refuses a client of `dialect` for `why` ([`Disconnect::InvalidToken`],
    /// [`Disconnect::TokenRefused`] or [`Disconnect::TooManyConnections`]; the refusal was counted when it was decided).
    pub fn new(core: Arc<Core>, dialect: Dialect, why: Disconnect) -> Refused {
        Refused { core, dialect, why }
    }
}

impl Actor for Refused {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let kind = match self.why {
            Disconnect::InvalidToken | Disconnect::TokenRefused(_) => ErrorKind::InvalidToken,
            _ => ErrorKind::RateLimited,
        };
        ctx.text(render::error(self.dialect, None, kind, &self.why.reason()));
        super::close(ctx, &self.why, &self.core);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Refused {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        // Only the client's half of the closing handshake matters now.
        if matches!(msg, Ok(ws::Message::Close(_)) | Err(_)) {
            ctx.stop();
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
