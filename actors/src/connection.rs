//! The per-connection actor: parses the client's frames, answers requests, writes the
//! events hubs queue in its outbox and the heartbeats, enforces the per-connection limits,
//! and handles `reconnect` (resume).
//!
//! Event frames are rendered once per event and dialect (cached on the event); the actor
//! renders only replies and errors itself.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, ContextFutureSpawner, Handler,
    StreamHandler, WrapFuture,
};
use actix_http::ws::Item as Fragment;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use serde_json::{Map, Value};

use crate::core::Core;
use crate::filter::Filter;
use crate::hubs::HubRef;
use crate::keys::ApiKey;
use crate::messages::{
    ConnectionClosed, Evict, Reattach, Register, Shutdown, Subscribe, Tick, Unregister, Unsubscribe,
};
use crate::metrics::Rejection;
use crate::outbox::{self, Item, Mode, Outbox, OutboxLimits, Wake};
use crate::protocol::render::{self, Reply};
use crate::protocol::request::{self, Command, RequestBody};
use crate::protocol::{close_code, Dialect, ErrorKind};
use crate::rate_limiter::Admission;
use crate::sessions::SessionSub;

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

/// Capacity of the connection actor's mailbox, which carries only control messages
/// (wake-ups, heartbeat ticks, eviction, shutdown); events travel in the outbox.
const CONTROL_MAILBOX: usize = 64;

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
    /// Where hubs put this connection's events (None for a refused connection).
    outbox: Option<Outbox>,
    /// The client closed with 1000: its subscriptions go with it.
    clean_close: bool,
    /// A reconnect elsewhere claimed this connection's subscriptions.
    evicted: bool,
    /// A ping sent to acknowledge the sent log is not yet answered.
    ping_outstanding: bool,
    /// When the last acknowledgement ping was sent.
    last_ack_ping: Instant,
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
            outbox: None,
            clean_close: false,
            evicted: false,
            ping_outstanding: false,
            last_ack_ping: Instant::now(),
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

    /// Writes the reply, or the error as `kind` with the error's text.
    fn respond<E: std::fmt::Display>(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&Value>,
        result: Result<Reply, E>,
        kind: ErrorKind,
    ) {
        match result {
            Ok(reply) => self.write(ctx, render::reply(self.dialect, id, &reply)),
            Err(e) => self.send_error(ctx, id, kind, &e.to_string()),
        }
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
        if let (Ok(body), Ok(admitted)) = (&body, &self.admitted) {
            if let Some(role) = body.role().filter(|r| !admitted.key.has(*r)) {
                let msg = format!("forbidden: this key lacks the {} role", role.as_str());
                return self.send_error(ctx, id.as_ref(), ErrorKind::Forbidden, &msg);
            }
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
            Ok(RequestBody::Publish { events }) => self.publish(ctx, id, events),
            Ok(RequestBody::Reconnect {
                last_message_id,
                subscriptions,
            }) => self.reconnect(ctx, id, last_message_id, subscriptions),
        }
    }

    /// Publishes from a connection whose key has the publish role (PROTOCOL.md 8, 10.19):
    /// validated whole like an HTTP batch, within the connection's own events-per-second
    /// cap, in the order the frames came (later frames wait for this one).
    fn publish(&mut self, ctx: &mut ws::WebsocketContext<Self>, id: Option<Value>, events: Value) {
        let Ok(admitted) = &self.admitted else {
            return;
        };
        let publisher = self.core.publisher.clone();
        let events = match publisher.parse_json(events) {
            Ok(events) => events,
            Err(e) => {
                let msg = e.to_string();
                return self.send_error(ctx, id.as_ref(), ErrorKind::InvalidRequest, &msg);
            }
        };
        if let Err(cap) = admitted.admission.quota.check_publish(events.len()) {
            let msg = format!(
                "rate limit exceeded: at most {cap} published events per second; these {} were not published",
                events.len()
            );
            return self.send_error(ctx, id.as_ref(), ErrorKind::RateLimited, &msg);
        }
        async move { publisher.publish(events).await }
            .into_actor(self)
            .map(move |res, this, ctx| {
                let res = res.map(|ids| Reply::Published { ids });
                this.respond(ctx, id.as_ref(), res, ErrorKind::InvalidRequest);
            })
            .wait(ctx);
    }

    /// Resumes subscriptions of an ended (or still live) connection of the same key:
    /// moves them here inside each hub, then replays what the old connection sent after
    /// `last` and what was queued for it since, before any live event (PROTOCOL.md
    /// section 7).
    fn reconnect(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        last: Option<String>,
        names: Vec<String>,
    ) {
        let (Ok(admitted), Some(outbox)) = (&self.admitted, self.outbox.clone()) else {
            return;
        };
        let metrics = &self.core.metrics;
        metrics.resumes.fetch_add(1, Ordering::Relaxed);
        let conn = admitted.admission.conn;
        let key = admitted.key.name.clone();
        let quota = admitted.admission.quota.clone();
        let claim = self.core.sessions.claim(&key, &names, Instant::now());
        let mut failed = claim.failed;
        let mut sessions = claim.sessions;
        let mut moves = Vec::new();
        for old in &mut sessions {
            old.subs.retain(|s| {
                let room = quota.try_add_subscription();
                if !room {
                    failed.push(s.id.to_string());
                }
                room
            });
            for hub in &old.hubs {
                let ids: Vec<Arc<str>> = old
                    .subs
                    .iter()
                    .filter(|s| s.hub.name == hub.name)
                    .map(|s| s.id.clone())
                    .collect();
                if !ids.is_empty() {
                    moves.push(hub.addr.send(Reattach {
                        from: old.conn,
                        to: conn,
                        subscription_ids: ids,
                        outbox: outbox.clone(),
                    }));
                }
                // Queued after the Reattach on the same hub: drops the unclaimed rest.
                hub.addr.do_send(ConnectionClosed { conn: old.conn });
            }
        }
        async move {
            for m in moves {
                let _ = m.await;
            }
        }
        .into_actor(self)
        .map(move |(), this, ctx| {
            let mut recovered = failed.is_empty();
            let mut replay: Vec<Item> = Vec::new();
            let mut restored = Vec::new();
            for old in sessions {
                let (items, complete) = resume_items(&old.outbox, last.as_deref());
                recovered &= complete;
                replay.extend(items.into_iter().filter(|item| {
                    old.subs.iter().any(|s| {
                        *s.hub.name == *item.event.channel && s.filter.matches(&item.event.data)
                    })
                }));
                for sub in old.subs {
                    restored.push(sub.id.to_string());
                    this.subs.insert(sub.id.clone(), sub.hub.clone());
                    let evict = ctx.address().recipient();
                    this.core.sessions.add_sub(conn, &key, &outbox, evict, sub);
                }
            }
            let metrics = &this.core.metrics;
            if recovered {
                metrics.resumes_recovered.fetch_add(1, Ordering::Relaxed);
            }
            metrics
                .replayed
                .fetch_add(replay.len() as u64, Ordering::Relaxed);
            let reply = Reply::Reconnected {
                recovered,
                subscriptions: restored,
                failed,
                replayed: replay.len(),
            };
            this.write(ctx, render::reply(this.dialect, id.as_ref(), &reply));
            for item in &replay {
                this.write(ctx, item.frame(this.dialect));
            }
            outbox::lock(&outbox).record_sent(&replay);
        })
        .wait(ctx);
    }

    /// Hands a command to the backend; the reply is written when it answers, without
    /// holding up event delivery meanwhile.
    fn command(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        command: Command,
    ) {
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
            .map(move |res, this, ctx| {
                this.respond(ctx, id.as_ref(), res, ErrorKind::CommandFailed);
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
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let subscription_id: Arc<str> = Arc::from(new_subscription_id());
        let conn = admitted.admission.conn;
        let msg = Subscribe {
            conn,
            subscription_id: subscription_id.clone(),
            filter: filter.clone(),
            outbox: outbox.clone(),
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
                    if let Ok(a) = &this.admitted {
                        let sub = SessionSub {
                            id: subscription_id.clone(),
                            hub: hub.clone(),
                            filter,
                        };
                        let evict = ctx.address().recipient();
                        this.core
                            .sessions
                            .add_sub(conn, &a.key.name, &outbox, evict, sub);
                    }
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
                        this.core
                            .sessions
                            .remove_sub(a.admission.conn, &subscription_id);
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

    /// Writes everything queued in the outbox, or closes 4005 when the connection fell
    /// behind past the queue bound.
    fn flush(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(ob) = self.outbox.clone() else {
            return;
        };
        if self.closing {
            return;
        }
        let mut state = outbox::lock(&ob);
        if state.mode == Mode::Slow {
            drop(state);
            self.core.metrics.reject(Rejection::SlowConsumer);
            return self.close_with(
                ctx,
                close_code::SLOW_CONSUMER,
                "slow consumer: events arrived faster than this client read them; reconnect and resume",
            );
        }
        let frames = state.drain();
        // Ask for an acknowledgement early when the sent log grows.
        let ack_interval = Duration::from_millis(self.core.settings.resume.ack_interval_ms);
        let want_ack = !self.ping_outstanding
            && (state.wants_ack()
                || (!frames.is_empty() && self.last_ack_ping.elapsed() >= ack_interval));
        let position = state.position();
        drop(state);
        // One count for the whole drain: the counter is shared by every connection.
        self.core
            .metrics
            .messages_out
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for frame in frames {
            ctx.text(frame);
        }
        if want_ack {
            self.ping_outstanding = true;
            self.last_ack_ping = Instant::now();
            ctx.ping(&position.to_be_bytes());
        }
    }

    /// A pong: our pings carry the sent log's position, so everything before it arrived.
    fn acknowledge(&mut self, payload: &[u8]) {
        let (Some(ob), Ok(bytes)) = (&self.outbox, <[u8; 8]>::try_from(payload)) else {
            return;
        };
        self.ping_outstanding = false;
        outbox::lock(ob).ack(u64::from_be_bytes(bytes));
    }

    fn handle_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.take_quota(ctx, None) {
            let msg =
                "Invalid message format: binary frames are not accepted; send JSON text frames";
            self.send_error(ctx, None, ErrorKind::InvalidRequest, msg);
        }
    }

    fn handle_fragment(&mut self, ctx: &mut ws::WebsocketContext<Self>, item: Fragment) {
        let (text, chunk, last) = match item {
            Fragment::FirstText(b) => (Some(true), b, false),
            Fragment::FirstBinary(b) => (Some(false), b, false),
            Fragment::Continue(b) => (None, b, false),
            Fragment::Last(b) => (None, b, true),
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

/// What an old outbox holds after `last` (the last event id the client received), and
/// whether that is everything: the items written after it and those queued since, or
/// nothing when `last` is unknown or something after it was lost. Closes the old outbox.
fn resume_items(old: &Outbox, last: Option<&str>) -> (Vec<Item>, bool) {
    let mut ob = outbox::lock(old);
    let found = last.and_then(|l| ob.sent.iter().rposition(|i| *i.event.id == *l));
    let from = match found {
        Some(i) => Some(i + 1),
        // Everything before the sent log was acknowledged, and `last` is the last of it.
        None if last == ob.last_acked.as_deref() && !ob.evicted => Some(0),
        None => None,
    };
    let result = match from {
        Some(i) if !ob.dropped => {
            let items = ob
                .sent
                .iter()
                .skip(i)
                .chain(ob.queue.iter())
                .cloned()
                .collect();
            (items, true)
        }
        _ => (Vec::new(), false),
    };
    ob.close();
    result
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
        ctx.set_mailbox_capacity(CONTROL_MAILBOX);
        let (limits, resume) = (&self.core.settings.limits, &self.core.settings.resume);
        self.outbox = Some(outbox::new_outbox(
            admitted.admission.conn,
            self.dialect,
            ctx.address().recipient(),
            OutboxLimits {
                queue_frames: limits.connection_queue_frames,
                queue_bytes: limits.connection_queue_bytes,
                keep_frames: resume.keep_frames,
                keep_bytes: resume.keep_bytes,
                stuck_after: Duration::from_millis(self.core.settings.publish.stuck_reader_ms),
            },
            self.core.metrics.flow.clone(),
        ));
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
        // Only a client close 1000 drops the subscriptions at once; any other ending keeps
        // them for resume. An evicted connection's subscriptions already moved.
        let hubs = if self.evicted {
            Vec::new()
        } else if self.clean_close {
            self.core.sessions.forget(conn)
        } else {
            self.core.sessions.park(conn, Instant::now())
        };
        for hub in hubs {
            hub.addr.do_send(ConnectionClosed { conn });
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
            ws::Message::Pong(payload) => self.acknowledge(&payload),
            ws::Message::Nop => {}
            ws::Message::Close(reason) => {
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

impl Handler<Evict> for Connection {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) {
        self.evicted = true;
        self.close_with(
            ctx,
            1000,
            "the subscriptions of this connection were resumed on another connection",
        );
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
        // A safety net: anything queued whose wake-up was lost goes out now.
        self.flush(ctx);
        if self.closing {
            return;
        }
        self.write(ctx, tick.frames[self.dialect.index()].clone());
        let position = self
            .outbox
            .as_ref()
            .map_or(0, |ob| outbox::lock(ob).position());
        ctx.ping(&position.to_be_bytes());
    }
}

impl Handler<Shutdown> for Connection {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close_with(ctx, close_code::GOING_AWAY, "server shutting down");
    }
}
