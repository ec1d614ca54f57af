//! A connection's requests: the per-message quota, the role check, and one handler per
//! request type. Every handler ends in a `Result<Reply, Failure>` that [`Connection::respond`]
//! renders in the connection's dialect: the one exit for replies and errors.

use std::sync::Arc;
use std::time::Instant;

use actix::{ActorFutureExt, AsyncContext, ContextFutureSpawner, WrapFuture};
use actix_web_actors::ws;
use serde_json::{Map, Value};

use super::{rejection_of, Connection};
use crate::disconnect::Disconnect;
use crate::engine::ParkedSub;
use crate::filter::Filter;
use crate::messages::{Attach, AttachSub, Unsubscribe};
use crate::protocol::render::{self, Reply};
use crate::protocol::request::{self, Command, RequestBody};
use crate::protocol::ErrorKind;
use crate::publisher::PublishError;
use crate::sessions::LiveSub;

/// Why a request was not done: the error kind and the words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind (and so the code) of the error.
    pub kind: ErrorKind,
    /// What was wrong.
    pub message: String,
}

impl Failure {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        let kind = match e {
            PublishError::Unavailable(_) | PublishError::Busy { .. } => ErrorKind::Unavailable,
            PublishError::Invalid { .. } | PublishError::BatchSize { .. } => {
                ErrorKind::InvalidRequest
            }
        };
        Failure::new(kind, e.to_string())
    }
}

/// A subscription id: 128 random bits from the thread's CSPRNG, hex-encoded.
fn new_subscription_id() -> String {
    format!("sub_{:032x}", rand::random::<u128>())
}

impl Connection {
    /// Writes an error frame answering request `id`, counting it.
    pub(super) fn send_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&Value>,
        kind: ErrorKind,
        message: &str,
    ) {
        if let Some(why) = rejection_of(kind) {
            self.core.metrics.reject(why);
        }
        self.write(ctx, render::error(self.dialect, id, kind, message));
    }

    /// The one exit: the reply, or the failure as an error frame.
    pub(super) fn respond(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&Value>,
        result: Result<Reply, Failure>,
    ) {
        match result {
            Ok(reply) => self.write(ctx, render::reply(self.dialect, id, &reply)),
            Err(f) => self.send_error(ctx, id, f.kind, &f.message),
        }
    }

    /// Takes one message from the quota. Over the cap the message gets a rate-limited
    /// error; past the cap's worth of refusals in one period, the connection closes 4001.
    fn take_quota(&mut self, ctx: &mut ws::WebsocketContext<Self>, id: Option<&Value>) -> bool {
        let quota = self.admission.quota.clone();
        if quota.check_message() {
            return true;
        }
        let (cap, period) = (quota.cap, quota.period);
        let flooding = self.refused.refuse(cap, period, Instant::now());
        let unit = if period.as_secs() >= 60 {
            "minute"
        } else {
            "second"
        };
        let msg = format!(
            "rate limit exceeded: at most {cap} messages per {unit}; this message was not processed"
        );
        self.send_error(ctx, id, ErrorKind::RateLimited, &msg);
        if flooding {
            self.disconnect(ctx, Disconnect::Flooding);
        }
        false
    }

    /// A binary frame: refused, within the quota.
    pub(super) fn handle_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.take_quota(ctx, None) {
            let msg =
                "Invalid message format: binary frames are not accepted; send JSON text frames";
            self.send_error(ctx, None, ErrorKind::InvalidRequest, msg);
        }
    }

    /// A text message: parse, quota, role, then the request's handler.
    pub(super) fn handle_message(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let (id, body) = match request::parse(text) {
            Ok(r) => (r.id, Ok(r.body)),
            Err(e) => (e.id.clone(), Err(e)),
        };
        let limited = body.as_ref().map_or(true, RequestBody::is_rate_limited);
        if limited && !self.take_quota(ctx, id.as_ref()) {
            return;
        }
        let body = match body {
            Ok(body) => body,
            Err(e) => return self.send_error(ctx, e.id.as_ref(), e.kind, &e.message),
        };
        if let Some(role) = body.role().filter(|r| !self.key.has(*r)) {
            let msg = format!("forbidden: this key lacks the {} role", role.as_str());
            return self.send_error(ctx, id.as_ref(), ErrorKind::Forbidden, &msg);
        }
        match body {
            RequestBody::Subscribe { channel, data } => self.subscribe(ctx, id, &channel, &data),
            RequestBody::Unsubscribe { subscription_id } => {
                self.unsubscribe(ctx, id, subscription_id)
            }
            RequestBody::HeartbeatResponse => {}
            RequestBody::Command(command) => self.command(ctx, id, command),
            RequestBody::Publish { events } => self.publish(ctx, id, events, text.len()),
            RequestBody::Reconnect {
                last_message_id,
                subscriptions,
            } => self.reconnect(ctx, id, last_message_id, subscriptions),
            RequestBody::Refresh { token } => self.refresh(ctx, id, &token),
        }
    }

    /// Publishes from a connection whose key has the publish role (PROTOCOL.md 8, 10.19):
    /// validated whole like an HTTP batch, within the connection's own events-per-second
    /// cap, appended in the order the frames came and answered in that order
    /// (`publishing.rs`). `bytes` is the frame's size, for the in-flight bound.
    fn publish(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        events: Value,
        bytes: usize,
    ) {
        let publisher = self.core.publisher.clone();
        let checked = publisher
            .parse_json(events)
            .map_err(Failure::from)
            .and_then(|events| {
                self.admission
                    .quota
                    .check_publish(events.len())
                    .map(|()| events)
                    .map_err(|cap| {
                        Failure::new(
                            ErrorKind::RateLimited,
                            format!(
                                "rate limit exceeded: at most {cap} published events per second; these were not published"
                            ),
                        )
                    })
            });
        match checked.and_then(|events| publisher.submit(events).map_err(Failure::from)) {
            Ok(submitted) => self.publish_submitted(ctx, id, bytes, submitted),
            Err(f) => self.publish_refused(ctx, id, bytes, f),
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
                let res = res.map_err(|e| Failure::new(ErrorKind::CommandFailed, e.to_string()));
                this.respond(ctx, id.as_ref(), res);
            })
            .spawn(ctx);
    }

    /// Checks a `subscribe` (channel, filter, the token's grant) and takes a slot of the
    /// subscription cap.
    fn check_subscribe(
        &self,
        channel: &str,
        data: &Map<String, Value>,
    ) -> Result<(crate::fanout::hubs::HubRef, Filter), Failure> {
        let fail = |m: String| Failure::new(ErrorKind::SubscriptionError, m);
        let hub = self
            .core
            .hubs
            .get(channel)
            .map_err(|e| fail(e.to_string()))?;
        let max_value = self.core.settings.limits.max_filter_value_bytes;
        let filter = Filter::parse(hub.kind, channel, data, max_value).map_err(fail)?;
        if let Some(grant) = self.key.token.as_ref().and_then(|t| t.grant.as_ref()) {
            grant
                .allows(&hub.name, &filter)
                .map_err(|m| Failure::new(ErrorKind::Forbidden, m))?;
        }
        let quota = &self.admission.quota;
        if !quota.try_add_subscription() {
            return Err(fail(format!(
                "subscription limit reached: at most {} subscriptions per connection",
                quota.max_subscriptions
            )));
        }
        Ok((hub, filter))
    }

    fn subscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        channel: &str,
        data: &Map<String, Value>,
    ) {
        let (hub, filter) = match self.check_subscribe(channel, data) {
            Ok(checked) => checked,
            Err(f) => return self.respond(ctx, id.as_ref(), Err(f)),
        };
        let subscription_id: Arc<str> = Arc::from(new_subscription_id());
        self.order_outbox(Some(&hub.name));
        let msg = Attach {
            conn: self.conn(),
            outbox: self.outbox.clone(),
            subs: vec![AttachSub {
                id: subscription_id.clone(),
                filter: filter.clone(),
                created: None,
            }],
        };
        // The engine first feeds this node the channel (at once unless it is a cluster's
        // engine that did not yet), then the hub attaches.
        let (engine, addr, channel) =
            (self.core.engine.clone(), hub.addr.clone(), hub.name.clone());
        let parked = ParkedSub {
            id: subscription_id.clone(),
            key: self.key_name.clone(),
            channel: hub.name.clone(),
            filter: filter.clone(),
            created: 0,
        };
        let attach = async move {
            engine.want(&channel).await.map_err(|e| e.to_string())?;
            let attached = addr
                .send(msg)
                .await
                .map_err(|_| "channel unavailable: the broker is shutting down".to_string())?;
            // Kept resumable from any node before the client hears of it.
            let created = attached.created.first().copied().unwrap_or_default();
            engine.live(ParkedSub { created, ..parked }).await;
            Ok::<_, String>(attached)
        };
        // `wait`: later frames of this client are handled after the reply, in order.
        attach
            .into_actor(self)
            .map(move |res, this, ctx| {
                let res = match res {
                    Ok(attached) => {
                        let sub = LiveSub {
                            id: subscription_id.clone(),
                            hub: hub.clone(),
                            filter,
                            created: attached.created.first().copied().unwrap_or_default(),
                        };
                        let moved = ctx.address().recipient();
                        let (conn, key) = (this.conn(), this.key_name.clone());
                        this.core.sessions.add(conn, &key, moved, sub.clone());
                        this.subs.insert(subscription_id.clone(), sub);
                        Ok(Reply::Subscribed {
                            subscription_id: subscription_id.to_string(),
                            channel: hub.name.to_string(),
                        })
                    }
                    Err(why) => {
                        this.admission.quota.remove_subscription();
                        Err(Failure::new(ErrorKind::Unavailable, why))
                    }
                };
                this.respond(ctx, id.as_ref(), res);
            })
            .wait(ctx);
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        subscription_id: String,
    ) {
        let Some(sub) = self.subs.get(subscription_id.as_str()) else {
            let shown: String = subscription_id.chars().take(64).collect();
            let msg = format!("unknown subscription_id \"{shown}\" on this connection");
            let f = Failure::new(ErrorKind::SubscriptionError, msg);
            return self.respond(ctx, id.as_ref(), Err(f));
        };
        let msg = Unsubscribe {
            conn: self.conn(),
            subscription_id: sub.id.clone(),
        };
        sub.hub
            .addr
            .send(msg)
            .into_actor(self)
            .map(move |res, this, ctx| {
                let res = match (res, this.subs.remove(subscription_id.as_str())) {
                    (Ok(_), Some(_)) => {
                        this.admission.quota.remove_subscription();
                        this.core.sessions.remove(this.conn(), &subscription_id);
                        this.core.engine.gone(&Arc::from(subscription_id.as_str()));
                        Ok(Reply::Unsubscribed { subscription_id })
                    }
                    (Ok(_), None) => {
                        let msg = format!(
                            "unknown subscription_id \"{subscription_id}\" on this connection (it moved to another connection)"
                        );
                        Err(Failure::new(ErrorKind::SubscriptionError, msg))
                    }
                    (Err(_), _) => Err(Failure::new(
                        ErrorKind::Unavailable,
                        "unsubscribe failed: the broker is shutting down",
                    )),
                };
                this.respond(ctx, id.as_ref(), res);
            })
            .wait(ctx);
    }
}
