//! The per-connection actor: parses the client's frames, answers requests, writes the
//! frames hubs and the heartbeat send it, and enforces the per-connection limits.
//!
//! It renders only replies and errors; event frames arrive already rendered for its
//! dialect by the channel hub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, ContextFutureSpawner, Handler,
    StreamHandler, WrapFuture,
};
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use serde_json::{Map, Value};

use crate::core::Core;
use crate::filter::Filter;
use crate::hubs::HubRef;
use crate::keys::{ApiKey, Role};
use crate::messages::{
    ConnectionClosed, Deliver, Register, Shutdown, Subscribe, Tick, Unregister, Unsubscribe,
};
use crate::metrics::Rejection;
use crate::protocol::render::{self, Reply};
use crate::protocol::request::{self, Command, RequestBody};
use crate::protocol::{close_code, Dialect, ErrorKind};
use crate::rate_limiter::Admission;

/// Why a connection is refused at admission (PROTOCOL.md section 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Missing, empty or unknown key: error 4000, close 4000.
    InvalidToken,
    /// The key has its maximum connections: error 4001, close 4001.
    TooManyConnections {
        /// The key's cap.
        max: u32,
    },
}

/// An admitted connection's key and quotas.
pub struct Admitted {
    /// The key, for roles.
    pub key: Arc<ApiKey>,
    /// Quotas and the slot ticket.
    pub admission: Admission,
}

/// A fragmented message being reassembled, bounded by the frame limit.
struct Fragments {
    text: bool,
    buf: Vec<u8>,
}

/// The connection actor. One per WebSocket.
pub struct Connection {
    core: Arc<Core>,
    dialect: Dialect,
    admitted: Result<Admitted, Refusal>,
    /// Largest message accepted, in bytes (frames are capped by the codec too).
    max_message: usize,
    /// This connection's subscriptions and their hubs; bounded by the subscription cap.
    subs: HashMap<Arc<str>, HubRef>,
    /// When the client last sent any frame.
    last_seen: Instant,
    /// Set by a hub when this connection's mailbox overflowed.
    slow: Arc<AtomicBool>,
    /// Messages refused in the current cap period, and when that period began.
    rejected: u32,
    window_start: Instant,
    fragments: Option<Fragments>,
    closing: bool,
}

impl Connection {
    /// A connection on `dialect`, admitted or refused; `max_message` is the frame limit
    /// the upgrade was given.
    pub fn new(
        core: Arc<Core>,
        dialect: Dialect,
        admitted: Result<Admitted, Refusal>,
        max_message: usize,
    ) -> Connection {
        let now = Instant::now();
        Connection {
            core,
            dialect,
            admitted,
            max_message,
            subs: HashMap::new(),
            last_seen: now,
            slow: Arc::new(AtomicBool::new(false)),
            rejected: 0,
            window_start: now,
            fragments: None,
            closing: false,
        }
    }

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

    fn send_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&Value>,
        kind: ErrorKind,
        message: &str,
    ) {
        let why = match kind {
            ErrorKind::InvalidRequest => Some(Rejection::InvalidRequest),
            ErrorKind::SubscriptionError => Some(Rejection::SubscriptionError),
            ErrorKind::Forbidden => Some(Rejection::Forbidden),
            ErrorKind::RateLimited => Some(Rejection::RateLimited),
            ErrorKind::CommandFailed => Some(Rejection::CommandFailed),
            _ => None,
        };
        if let Some(why) = why {
            self.core.metrics.reject(why);
        }
        self.write(ctx, render::error(self.dialect, id, kind, message));
    }

    fn close_with(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        ctx.close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        }));
        // Closing handshake: wait for the client's close frame (see the stream handler),
        // but not longer than the grace period.
        let grace = Duration::from_millis(self.core.settings.limits.close_grace_ms);
        ctx.run_later(grace, |_, ctx| ctx.stop());
    }

    /// Takes one message from the quota. Over the cap the message gets a rate-limited
    /// error; past the cap's worth of refusals in one period, the connection closes 4001.
    fn take_quota(&mut self, ctx: &mut ws::WebsocketContext<Self>, id: Option<&Value>) -> bool {
        let Ok(admitted) = &self.admitted else {
            return false;
        };
        let quota = &admitted.admission.quota;
        if quota.check_message() {
            return true;
        }
        let (cap, period) = (quota.cap, quota.period);
        let now = Instant::now();
        if now.duration_since(self.window_start) >= period {
            self.window_start = now;
            self.rejected = 0;
        }
        self.rejected += 1;
        let unit = if period.as_secs() >= 60 {
            "minute"
        } else {
            "second"
        };
        self.send_error(
            ctx,
            id,
            ErrorKind::RateLimited,
            &format!("rate limit exceeded: at most {cap} messages per {unit}; this message was not processed"),
        );
        if self.rejected > cap {
            self.core.metrics.reject(Rejection::Flooding);
            self.close_with(
                ctx,
                close_code::RATE_LIMITED,
                "rate limited: too many messages over the cap",
            );
        }
        false
    }

    fn handle_message(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let (id, body) = match request::parse(text) {
            Ok(r) => (r.id, Ok(r.body)),
            Err(e) => (e.id.clone(), Err(e)),
        };
        let limited = body.as_ref().map_or(true, RequestBody::is_rate_limited);
        if limited && !self.take_quota(ctx, id.as_ref()) {
            return;
        }
        match body {
            Err(e) => self.send_error(ctx, e.id.as_ref(), e.kind, &e.message),
            Ok(RequestBody::Subscribe { channel, data }) => {
                self.subscribe(ctx, id, &channel, &data)
            }
            Ok(RequestBody::Unsubscribe { subscription_id }) => {
                self.unsubscribe(ctx, id, subscription_id)
            }
            Ok(RequestBody::HeartbeatResponse) => {}
            Ok(RequestBody::Command(command)) => self.command(ctx, id, command),
        }
    }

    /// Hands a command to the backend; the reply is written when it answers, without
    /// holding up event delivery meanwhile.
    fn command(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        command: Command,
    ) {
        let Ok(admitted) = &self.admitted else {
            return;
        };
        if !admitted.key.has(Role::Command) {
            let msg = "forbidden: this key lacks the command role";
            return self.send_error(ctx, id.as_ref(), ErrorKind::Forbidden, msg);
        }
        let backend = self.core.backend.clone();
        let answer = async move {
            match command {
                Command::ExecuteTransaction(t) => {
                    backend.execute_transaction(t).await.map(Reply::Transaction)
                }
                Command::GetTokenInfo { token_id } => {
                    backend.get_token_info(token_id).await.map(Reply::Token)
                }
                Command::GetBalance { address, token_id } => backend
                    .get_balance(address, token_id)
                    .await
                    .map(Reply::Balance),
            }
        };
        answer
            .into_actor(self)
            .map(move |res, this, ctx| match res {
                Ok(reply) => this.write(ctx, render::reply(this.dialect, id.as_ref(), &reply)),
                Err(e) => {
                    let msg = e.to_string();
                    this.send_error(ctx, id.as_ref(), ErrorKind::CommandFailed, &msg);
                }
            })
            .spawn(ctx);
    }

    fn subscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        channel: &str,
        data: &Map<String, Value>,
    ) {
        let Ok(admitted) = &self.admitted else {
            return;
        };
        if !admitted.key.has(Role::Subscribe) {
            let msg = "forbidden: this key lacks the subscribe role";
            return self.send_error(ctx, id.as_ref(), ErrorKind::Forbidden, msg);
        }
        let hub = match self.core.hubs.get(channel) {
            Ok(hub) => hub,
            Err(e) => {
                let msg = e.to_string();
                return self.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, &msg);
            }
        };
        let max_value = self.core.settings.limits.max_filter_value_bytes;
        let filter = match Filter::parse(hub.kind, channel, data, max_value) {
            Ok(f) => f,
            Err(msg) => {
                return self.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, &msg)
            }
        };
        let quota = admitted.admission.quota.clone();
        if !quota.try_add_subscription() {
            let msg = format!(
                "subscription limit reached: at most {} subscriptions per connection",
                quota.max_subscriptions
            );
            return self.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, &msg);
        }
        let subscription_id: Arc<str> = Arc::from(new_subscription_id());
        let msg = Subscribe {
            conn: admitted.admission.conn,
            subscription_id: subscription_id.clone(),
            filter,
            dialect: self.dialect,
            deliver: ctx.address().recipient(),
            slow: self.slow.clone(),
        };
        // `wait`: later frames of this client are handled after the reply, in order.
        hub.addr
            .send(msg)
            .into_actor(self)
            .map(move |res, this, ctx| match res {
                Ok(()) => {
                    let reply = Reply::Subscribed {
                        subscription_id: subscription_id.to_string(),
                        channel: hub.name.to_string(),
                    };
                    this.subs.insert(subscription_id, hub);
                    this.write(ctx, render::reply(this.dialect, id.as_ref(), &reply));
                }
                Err(_) => {
                    quota.remove_subscription();
                    let msg = "channel unavailable: the broker is shutting down";
                    this.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, msg);
                }
            })
            .wait(ctx);
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        subscription_id: String,
    ) {
        let (Some((sid, hub)), Ok(admitted)) = (
            self.subs.get_key_value(subscription_id.as_str()),
            &self.admitted,
        ) else {
            let shown: String = subscription_id.chars().take(64).collect();
            let msg = format!("unknown subscription_id \"{shown}\" on this connection");
            return self.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, &msg);
        };
        let msg = Unsubscribe {
            conn: admitted.admission.conn,
            subscription_id: sid.clone(),
        };
        hub.addr
            .send(msg)
            .into_actor(self)
            .map(move |res, this, ctx| {
                if let (Ok(_), Some(_)) = (res, this.subs.remove(subscription_id.as_str())) {
                    if let Ok(a) = &this.admitted {
                        a.admission.quota.remove_subscription();
                    }
                    let reply = Reply::Unsubscribed { subscription_id };
                    this.write(ctx, render::reply(this.dialect, id.as_ref(), &reply));
                } else {
                    let msg = "unsubscribe failed: the broker is shutting down";
                    this.send_error(ctx, id.as_ref(), ErrorKind::SubscriptionError, msg);
                }
            })
            .wait(ctx);
    }

    fn handle_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.take_quota(ctx, None) {
            let msg =
                "Invalid message format: binary frames are not accepted; send JSON text frames";
            self.send_error(ctx, None, ErrorKind::InvalidRequest, msg);
        }
    }

    fn handle_fragment(&mut self, ctx: &mut ws::WebsocketContext<Self>, item: Item) {
        let (text, chunk, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(text) = text {
            self.fragments = Some(Fragments {
                text,
                buf: Vec::new(),
            });
        }
        let Some(frag) = self.fragments.as_mut() else {
            let msg = "Invalid message format: continuation frame without a first frame";
            return self.send_error(ctx, None, ErrorKind::InvalidRequest, msg);
        };
        if frag.buf.len() + chunk.len() > self.max_message {
            self.core.metrics.reject(Rejection::FrameTooLarge);
            let reason = format!("message larger than {} bytes", self.max_message);
            return self.close_with(ctx, close_code::TOO_BIG, &reason);
        }
        frag.buf.extend_from_slice(&chunk);
        if !last {
            return;
        }
        let Some(frag) = self.fragments.take() else {
            return;
        };
        match (frag.text, String::from_utf8(frag.buf)) {
            (true, Ok(text)) => self.handle_message(ctx, &text),
            (true, Err(_)) => {
                let msg = "Invalid message format: text message is not UTF-8";
                self.send_error(ctx, None, ErrorKind::InvalidRequest, msg)
            }
            (false, _) => self.handle_binary(ctx),
        }
    }
}

/// A subscription id: 128 random bits from the thread's CSPRNG, hex-encoded.
fn new_subscription_id() -> String {
    format!("sub_{:032x}", rand::random::<u128>())
}

impl Actor for Connection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let admitted = match &self.admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let (kind, code, msg) = match refusal {
                    Refusal::InvalidToken => (
                        ErrorKind::InvalidToken,
                        close_code::INVALID_TOKEN,
                        "Invalid token: missing or unknown API key".to_owned(),
                    ),
                    Refusal::TooManyConnections { max } => (
                        ErrorKind::RateLimited,
                        close_code::RATE_LIMITED,
                        format!(
                            "Rate limited: this key already has its maximum of {max} connections"
                        ),
                    ),
                };
                self.write(ctx, render::error(self.dialect, None, kind, &msg));
                return self.close_with(ctx, code, &msg);
            }
        };
        ctx.set_mailbox_capacity(self.core.settings.limits.connection_queue_frames);
        let metrics = &self.core.metrics;
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        self.core.heartbeat.do_send(Register {
            conn: admitted.admission.conn,
            tick: ctx.address().recipient(),
            shutdown: ctx.address().recipient(),
        });
        log::debug!(
            "connection {} opened for key {}",
            admitted.admission.conn,
            admitted.key.name
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let Ok(admitted) = &self.admitted else {
            return;
        };
        let conn = admitted.admission.conn;
        self.core
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        self.core.heartbeat.do_send(Unregister { conn });
        let mut told: Vec<&Arc<str>> = Vec::new();
        for hub in self.subs.values() {
            if !told.contains(&&hub.name) {
                told.push(&hub.name);
                hub.addr.do_send(ConnectionClosed { conn });
            }
        }
        log::debug!("connection {conn} closed");
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            // Waiting for the client's half of the closing handshake.
            if matches!(msg, Ok(ws::Message::Close(_)) | Err(_)) {
                ctx.stop();
            }
            return;
        }
        let msg = match msg {
            Ok(msg) => msg,
            Err(ProtocolError::Overflow) => {
                self.core.metrics.reject(Rejection::FrameTooLarge);
                let reason = format!("frame larger than {} bytes", self.max_message);
                return self.close_with(ctx, close_code::TOO_BIG, &reason);
            }
            Err(e) => {
                log::debug!("protocol error: {e}");
                return self.close_with(ctx, 1002, "WebSocket protocol error");
            }
        };
        self.last_seen = Instant::now();
        self.core
            .metrics
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        match msg {
            ws::Message::Text(text) => self.handle_message(ctx, &text),
            ws::Message::Binary(_) => self.handle_binary(ctx),
            ws::Message::Continuation(item) => self.handle_fragment(ctx, item),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
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

impl Handler<Deliver> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if self.slow.load(Ordering::Acquire) {
            self.core.metrics.reject(Rejection::SlowConsumer);
            return self.close_with(
                ctx,
                close_code::SLOW_CONSUMER,
                "slow consumer: events arrived faster than this client read them",
            );
        }
        self.write(ctx, msg.frame);
    }
}

impl Handler<Tick> for Connection {
    type Result = ();

    fn handle(&mut self, tick: Tick, ctx: &mut Self::Context) {
        let timeout = self.core.settings.heartbeat.timeout();
        if tick.at.saturating_duration_since(self.last_seen) > timeout {
            self.core.metrics.reject(Rejection::HeartbeatTimeout);
            let reason = format!(
                "heartbeat timeout: no frame from the client for {} ms",
                timeout.as_millis()
            );
            return self.close_with(ctx, close_code::HEARTBEAT_TIMEOUT, &reason);
        }
        self.write(ctx, tick.frames[self.dialect.index()].clone());
        ctx.ping(b"");
    }
}

impl Handler<Shutdown> for Connection {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close_with(ctx, close_code::GOING_AWAY, "server shutting down");
    }
}
