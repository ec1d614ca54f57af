//! The per-connection actor of an admitted client: its lifecycle (register, park or
//! forget its subscriptions at the end), the frames it reads (text, binary, fragments,
//! pings, close), the events it writes from its outbox, and the heartbeat ticks.
//!
//! What it reads first goes through [`frames::FrameInput`] (control budget, fragments,
//! UTF-8; `control.rs` counts the pings). What it answers lives beside it: `requests.rs`
//! (every request, one `Result` each, rendered at one exit), `resume.rs`
//! (`reconnect`) and `refresh.rs` (a signed token's expiry timer and `refresh`). A refused client never gets a `Connection`: [`refused::Refused`]
//! answers it.

mod control;
pub mod frames;
mod publishing;
mod refresh;
mod refusals;
pub mod refused;
mod requests;
mod resume;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Handler, SpawnHandle, StreamHandler};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;

use crate::core::Core;
use crate::disconnect::Disconnect;
use crate::engine::ParkedSub;
use crate::fanout::outbox::{self, Mode, Outbox, OutboxLimits};
use crate::fanout::progress::Wake;
use crate::keys::ApiKey;
use crate::messages::{
    ConnId, ConnectionClosed, Moved, Register, Rekey, Shutdown, Tick, Unregister,
};
use crate::metrics::Rejection;
use crate::protocol::{Dialect, ErrorKind};
use crate::rate_limiter::Admission;
use crate::read_gate::ReadGate;
use crate::sessions::LiveSub;
use crate::token::TokenVerifier;
use frames::Inbound;

/// An admitted connection's key and quotas.
pub struct Admitted {
    /// The key, for roles.
    pub key: Arc<ApiKey>,
    /// Quotas and the slot ticket.
    pub admission: Admission,
    /// For a connection made with a signed token: what checks the token of a `refresh`.
    /// `None` for a configured key.
    pub verifier: Option<Arc<dyn TokenVerifier>>,
}

/// Capacity of the connection actor's mailbox, which carries only control messages
/// (wake-ups, heartbeat ticks, moves, shutdown); events travel in the outbox.
const CONTROL_MAILBOX: usize = 64;

/// The connection actor. One per admitted WebSocket.
pub struct Connection {
    core: Arc<Core>,
    dialect: Dialect,
    key: Arc<ApiKey>,
    /// The key's configured name, as sessions and parked subscriptions record it.
    key_name: Arc<str>,
    admission: Admission,
    /// This connection's subscriptions; bounded by the subscription cap.
    subs: HashMap<Arc<str>, LiveSub>,
    /// Where hubs put this connection's events.
    outbox: Outbox,
    /// When the client last sent any frame.
    last_seen: Instant,
    /// The client closed with 1000: its subscriptions go with it.
    clean_close: bool,
    /// Messages refused in the current cap period (the flood rule).
    refused: refusals::Refusals,
    /// Control frames, fragments and UTF-8, before requests ([`frames::FrameInput`]).
    input: frames::FrameInput,
    closing: bool,
    /// A close decided while publishes were in flight: sent once they are answered (or
    /// `limits.close_wait_ms` runs out). Nothing read meanwhile is taken.
    ending: Option<Disconnect>,
    /// Publish frames read and not yet answered.
    in_flight: publishing::InFlight,
    /// Checks the token of a `refresh`; `None` for a connection made with a configured key.
    verifier: Option<Arc<dyn TokenVerifier>>,
    /// The timer that closes the connection 4000 at its token's `exp` plus the leeway.
    expiry: Option<SpawnHandle>,
}

impl Connection {
    /// An admitted connection on `dialect`; `max_message` is the frame limit the upgrade
    /// was given.
    pub fn new(
        core: Arc<Core>,
        dialect: Dialect,
        admitted: Admitted,
        max_message: usize,
    ) -> Connection {
        let now = Instant::now();
        let limits = &core.settings.limits;
        let outbox = outbox::new_outbox(
            dialect,
            OutboxLimits {
                queue_frames: limits.connection_queue_frames,
                queue_bytes: limits.connection_queue_bytes,
                stuck_after: Duration::from_millis(core.settings.publish.stuck_reader_ms),
            },
            core.flow.clone(),
            core.progress.clone(),
        );
        let input = frames::FrameInput::new(
            max_message,
            limits.max_fragments_per_message,
            limits.max_control_frames_per_second,
            now,
        );
        let in_flight = publishing::InFlight::new(
            core.settings.publish.connection_in_flight_bytes,
            core.metrics.clone(),
        );
        Connection {
            key_name: Arc::from(admitted.key.name.as_str()),
            key: admitted.key,
            admission: admitted.admission,
            core,
            dialect,
            subs: HashMap::new(),
            outbox,
            last_seen: now,
            clean_close: false,
            refused: refusals::Refusals::new(now),
            input,
            closing: false,
            ending: None,
            in_flight,
            verifier: admitted.verifier,
            expiry: None,
        }
    }

    /// The gate this connection's input must wait on before it reads another frame
    /// (closed while its publishes in flight are at their bound).
    pub fn read_gate(&self) -> Arc<ReadGate> {
        self.in_flight.gate()
    }

    fn conn(&self) -> ConnId {
        self.admission.conn
    }

    /// Writes one frame the actor rendered itself (a reply, an error, a heartbeat).
    fn write(&self, ctx: &mut ws::WebsocketContext<Self>, frame: ByteString) {
        if self.closing {
            return;
        }
        self.core
            .metrics
            .messages_out
            .fetch_add(1, Ordering::Relaxed);
        ctx.text(frame);
    }

    /// Closes with `why`'s code and reason, counting it. With publishes in flight the
    /// close waits for their answers, which go out first (bounded by
    /// `limits.close_wait_ms`), and nothing read meanwhile is taken.
    fn disconnect(&mut self, ctx: &mut ws::WebsocketContext<Self>, why: Disconnect) {
        if self.closing || self.ending.is_some() {
            return;
        }
        if let Some(r) = why.rejection() {
            self.core.metrics.reject(r);
        }
        if self.in_flight.is_empty() {
            close(ctx, &why, &self.core);
            self.closing = true;
            return;
        }
        self.ending = Some(why);
        let m = &self.core.metrics;
        m.close_waits.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_millis(self.core.settings.limits.close_wait_ms);
        ctx.run_later(wait, |this, ctx| {
            if let Some(why) = this.ending.take() {
                let m = &this.core.metrics;
                m.close_wait_expired.fetch_add(1, Ordering::Relaxed);
                close(ctx, &why, &this.core);
                this.closing = true;
            }
        });
    }

    /// Sends the close decided while publishes were in flight, once none is left.
    fn end_if_answered(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.in_flight.is_empty() {
            return;
        }
        if let Some(why) = self.ending.take() {
            close(ctx, &why, &self.core);
            self.closing = true;
        }
    }

    /// Marks the outbox fed by several hubs when this connection's subscriptions span
    /// more than one channel (plus `also`, about to be added).
    fn order_outbox(&self, also: Option<&str>) {
        let mut channels: Vec<&str> = self.subs.values().map(|s| &*s.hub.name).collect();
        channels.extend(also);
        channels.sort_unstable();
        channels.dedup();
        if channels.len() > 1 {
            outbox::lock(&self.outbox).set_ordered();
        }
    }

    /// Writes what the outbox lets go now, or closes 4005 when the connection fell
    /// behind past the queue bound.
    fn flush(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.closing {
            return;
        }
        let mut state = outbox::lock(&self.outbox);
        if state.mode == Mode::Slow {
            drop(state);
            return self.disconnect(ctx, Disconnect::SlowConsumer);
        }
        let frames = state.drain();
        drop(state);
        // One count for the whole drain: the counter is shared by every connection.
        self.core
            .metrics
            .messages_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for frame in frames {
            ctx.text(frame);
        }
    }

    /// Parks the subscriptions this connection still holds (any ending but a client close
    /// 1000), or forgets them.
    fn park_or_forget(&self) {
        let ids: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        let (engine, key, keep) = (&self.core.engine, &self.key_name, !self.clean_close);
        self.core.sessions.end_conn(self.conn(), &ids, |subs| {
            if !keep {
                for s in &subs {
                    engine.gone(&s.id);
                }
                return;
            }
            if subs.is_empty() {
                return;
            }
            let parked = subs
                .into_iter()
                .map(|s| ParkedSub {
                    id: s.id,
                    key: key.clone(),
                    channel: s.hub.name.clone(),
                    filter: s.filter,
                    created: s.created,
                })
                .collect();
            // Parked as of this call; the future only reports how many were kept.
            let kept = engine.park(parked, Instant::now());
            actix::spawn(async move {
                kept.await;
            });
        });
    }
}

/// Sends the close frame for `why` and stops the actor after the closing grace.
fn close<A>(ctx: &mut ws::WebsocketContext<A>, why: &Disconnect, core: &Core)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    ctx.close(Some(CloseReason {
        code: CloseCode::from(why.code()),
        description: Some(why.reason()),
    }));
    // Closing handshake: wait for the client's close frame (see the stream handlers),
    // but not longer than the grace period.
    let grace = Duration::from_millis(core.settings.limits.close_grace_ms);
    ctx.run_later(grace, |_, ctx| ctx.stop());
}

impl Actor for Connection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(CONTROL_MAILBOX);
        outbox::lock(&self.outbox).set_wake(ctx.address().recipient());
        let metrics = &self.core.metrics;
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        self.arm_expiry(ctx);
        self.core.heartbeat.do_send(Register {
            conn: self.conn(),
            tick: ctx.address().recipient(),
            shutdown: ctx.address().recipient(),
            rekey: ctx.address().recipient(),
        });
        log::debug!(
            "connection {} opened for key {}",
            self.conn(),
            self.key.name
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let conn = self.conn();
        self.core
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        self.core.heartbeat.do_send(Unregister { conn });
        outbox::lock(&self.outbox).close();
        // Only a client close 1000 drops the subscriptions; any other ending parks them
        // for the resume window (those moved to another connection are not ours).
        self.park_or_forget();
        let mut hubs: Vec<_> = self.subs.values().map(|s| s.hub.clone()).collect();
        hubs.sort_by(|a, b| a.name.cmp(&b.name));
        hubs.dedup_by(|a, b| a.name == b.name);
        for hub in hubs {
            hub.addr.do_send(ConnectionClosed { conn });
        }
        log::debug!("connection {conn} closed");
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing || self.ending.is_some() {
            // Waiting for the client's half of the closing handshake, or for the answers
            // that go out before our close: nothing more is taken.
            if matches!(msg, Ok(ws::Message::Close(_)) | Err(_)) {
                ctx.stop();
            }
            return;
        }
        // A frame over the limit is refused by the input at its header; the empty pong it
        // hands on in its place stands for that refusal (other frames skip the check).
        let msg = match msg {
            Ok(ws::Message::Pong(p)) if p.is_empty() && self.in_flight.take_oversized() => {
                Err(ProtocolError::Overflow)
            }
            other => other,
        };
        let now = Instant::now();
        let inbound = self.input.take(msg, now);
        if !matches!(inbound, Inbound::End(_) | Inbound::Gone) {
            self.last_seen = now;
            self.core
                .metrics
                .messages_in
                .fetch_add(1, Ordering::Relaxed);
        }
        match inbound {
            Inbound::End(why) => self.disconnect(ctx, why),
            Inbound::Gone => ctx.stop(),
            Inbound::Text(text) => self.handle_message(ctx, &text),
            Inbound::Binary => self.handle_binary(ctx),
            Inbound::Pong(payload) => ctx.pong(&payload),
            Inbound::Nothing => {}
            Inbound::Orphan => {
                let msg = "Invalid message format: continuation frame without a first frame";
                self.send_error(ctx, None, ErrorKind::InvalidRequest, msg);
            }
            Inbound::Close(reason) => {
                self.clean_close = reason.as_ref().is_some_and(|r| r.code == CloseCode::Normal);
                self.closing = true;
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Wake> for Connection {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.flush(ctx);
    }
}

impl Handler<Moved> for Connection {
    type Result = ();

    fn handle(&mut self, moved: Moved, _: &mut Self::Context) {
        for id in moved.0 {
            if self.subs.remove(&id).is_some() {
                self.admission.quota.remove_subscription();
            }
        }
    }
}

impl Handler<Tick> for Connection {
    type Result = ();

    fn handle(&mut self, tick: Tick, ctx: &mut Self::Context) {
        let timeout = self.core.settings.heartbeat.timeout();
        if tick.at.saturating_duration_since(self.last_seen) > timeout {
            let ms = timeout.as_millis();
            return self.disconnect(ctx, Disconnect::HeartbeatTimeout { ms });
        }
        // A safety net: anything queued whose wake-up was lost goes out now.
        self.flush(ctx);
        if self.closing {
            return;
        }
        self.write(ctx, tick.frames[self.dialect.index()].clone());
        ctx.ping(b"");
    }
}

impl Handler<Shutdown> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) {
        self.disconnect(ctx, msg.0);
    }
}

impl Handler<Rekey> for Connection {
    type Result = ();

    /// A reload kept this connection's key: later requests see its new roles. A reload
    /// that removed it (or changed its secret) ends the connection with 4000; so does one
    /// that removed the issuer of the connection's token (or changed its key).
    fn handle(&mut self, msg: Rekey, ctx: &mut Self::Context) {
        if let Some(token) = &self.key.token {
            if !msg.issuers.contains(&token.issuer_id) {
                log::info!(
                    "connection {} of sub {} closed: its issuer {} was removed",
                    self.conn(),
                    token.sub,
                    token.issuer
                );
                self.core
                    .metrics
                    .key_revocations
                    .fetch_add(1, Ordering::Relaxed);
                self.disconnect(ctx, Disconnect::IssuerRemoved);
            }
            return;
        }
        match msg.keys.get(&*self.key_name) {
            Some(key) if key.secret_id == self.key.secret_id => self.key = key.clone(),
            _ => {
                self.core
                    .metrics
                    .key_revocations
                    .fetch_add(1, Ordering::Relaxed);
                self.disconnect(ctx, Disconnect::KeyRevoked);
            }
        }
    }
}

/// Counts a refused request under its kind.
fn rejection_of(kind: ErrorKind) -> Option<Rejection> {
    match kind {
        ErrorKind::InvalidRequest => Some(Rejection::InvalidRequest),
        ErrorKind::SubscriptionError => Some(Rejection::SubscriptionError),
        ErrorKind::Forbidden => Some(Rejection::Forbidden),
        ErrorKind::RateLimited => Some(Rejection::RateLimited),
        ErrorKind::CommandFailed => Some(Rejection::CommandFailed),
        ErrorKind::InvalidToken | ErrorKind::Unavailable => None,
    }
}
