//! The task behind one stream: connect, subscribe, hand events to the stream in order, and
//! after any drop reconnect with backoff and resume from the last id received, so that the
//! application sees every event once, in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::builder::{Credentials, Settings};
use crate::error::{Error, ErrorCode, Gap};
use crate::subscription::Subscription;
use crate::token::{self, Fetch};
use crate::transport::{self, Socket};
use crate::wire::{self, Incoming, RawEvent};

/// How many times a request refused with `rate_limited` is sent again (a second apart)
/// before the connection is given up and resumed with backoff.
const RATE_LIMITED_TRIES: u32 = 10;
/// The wait before a request refused with `rate_limited` is sent again.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(1);
/// The wait before the token provider is asked again after it failed, or after the broker
/// refused the token it gave.
const TOKEN_RETRY_WAIT: Duration = Duration::from_secs(1);

/// What woke a connection's loop.
enum Wake {
    /// A frame, or the end of the socket.
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    /// The earliest deadline passed.
    Timer,
    /// The token provider answered.
    Token(Result<String, String>),
}

/// The token being fetched, if any (pending forever when none, for `select!`).
async fn fetched(fetching: &mut Option<Fetch>) -> Result<String, String> {
    match fetching {
        Some(fetch) => fetch.await,
        None => std::future::pending().await,
    }
}

/// What the task hands to the stream.
#[derive(Debug)]
pub(crate) enum Out {
    /// An event, in sequence order, never twice.
    Event(RawEvent),
    /// Events were lost across a reconnect.
    Gap(Gap),
    /// Something to report; after a fatal one (4000) the stream ends.
    Error(Error),
}

/// What a stream's task counted; read with `stats()` on the stream.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) refreshes: AtomicU64,
}

/// One subscription of the stream and its id at the broker, once it has one.
struct Sub {
    spec: Subscription,
    sid: Option<String>,
}

/// The request a session waits for.
#[derive(Clone, Copy)]
enum Asked {
    Resume,
    Subscribe(usize),
}

struct Pending {
    id: String,
    asked: Asked,
    sent: Instant,
    tries: u32,
}

/// How a session ended.
struct Ended {
    /// The subscriptions were all in place (or resumed) before it ended.
    established: bool,
    /// How long the connection was open.
    lasted: Duration,
    /// Why it ended.
    why: Error,
}

/// What to do after a session ended.
enum Next {
    /// The stream was dropped: close and end.
    Finish,
    /// Report the error and end (a refused key: retrying cannot help).
    Stop,
    /// Reconnect at once when the connection had been up a while (the broker means the
    /// client to resume: 4004, 4005, 1001, 1013, a drop without close frame, silence).
    Resume,
    /// Reconnect after the backoff wait.
    Backoff,
}

fn next_step(why: &Error) -> Next {
    match why {
        Error::Stopped => Next::Finish,
        // The token ran out before a fresh one was in place: a new one, and resume.
        Error::Closed { code: 4000, reason } if reason == "token expired" => Next::Resume,
        Error::Closed { code: 4000, .. } => Next::Stop,
        Error::Broker {
            code: ErrorCode::InvalidToken | ErrorCode::Forbidden,
            ..
        } => Next::Stop,
        Error::Closed {
            code: 4004 | 4005 | 1001 | 1013 | 1005 | 1006,
            ..
        } => Next::Resume,
        _ => Next::Backoff,
    }
}

/// The task of one stream.
pub(crate) struct Driver {
    settings: Arc<Settings>,
    subs: Vec<Sub>,
    /// The position and id of the last event handed to the stream.
    last: Option<((u64, u64), String)>,
    out: mpsc::Sender<Out>,
    counters: Arc<Counters>,
    requests: u64,
}

/// A started stream task: its items, its counters, and the outcome of its first connection.
pub(crate) struct Started {
    pub(crate) items: mpsc::Receiver<Out>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ready: oneshot::Receiver<Result<(), Error>>,
}

impl Driver {
    /// Spawns the task of a stream of these subscriptions on the current tokio runtime.
    pub(crate) fn start(settings: Arc<Settings>, subs: Vec<Subscription>) -> Started {
        let (out, items) = mpsc::channel(settings.buffer);
        let (ready_tx, ready) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let driver = Driver {
            settings,
            subs: subs
                .into_iter()
                .map(|spec| Sub { spec, sid: None })
                .collect(),
            last: None,
            out,
            counters: counters.clone(),
            requests: 0,
        };
        tokio::spawn(driver.run(ready_tx));
        Started {
            items,
            counters,
            ready,
        }
    }

    async fn run(mut self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut failures: u32 = 0;
        loop {
            let ended = self.session(&mut ready).await;
            if let Some(ready) = ready.take() {
                // The first connection never came up: whoever subscribed learns why.
                let _ = ready.send(Err(ended.why));
                return;
            }
            let settled = ended.established && ended.lasted >= self.settings.backoff.initial;
            if settled {
                failures = 0;
            }
            let delay = match next_step(&ended.why) {
                Next::Finish => return,
                Next::Stop => {
                    let _ = self.out.send(Out::Error(ended.why)).await;
                    return;
                }
                Next::Resume if settled => Duration::ZERO,
                Next::Resume | Next::Backoff => {
                    let delay = self.settings.backoff.next_delay(failures);
                    failures = failures.saturating_add(1);
                    delay
                }
            };
            log::info!(
                "rustorium-sdk: connection ended ({}); reconnecting in {} ms",
                ended.why,
                delay.as_millis()
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.out.closed() => return,
            }
        }
    }

    /// One connection: open, resume or subscribe, then forward events until it ends.
    async fn session(&mut self, ready: &mut Option<oneshot::Sender<Result<(), Error>>>) -> Ended {
        let (mut socket, token_exp_ms) = match transport::connect(&self.settings).await {
            Ok(opened) => (opened.socket, opened.token_exp_ms),
            Err(why) => {
                return Ended {
                    established: false,
                    lasted: Duration::ZERO,
                    why,
                }
            }
        };
        let ended = self.converse(&mut socket, ready, token_exp_ms).await;
        if matches!(ended.why, Error::Stopped) {
            // The application dropped the stream: a close with 1000 ends the subscriptions
            // at the broker at once instead of keeping them for the resume window.
            let bye = CloseFrame {
                code: CloseCode::Normal,
                reason: "stream dropped".into(),
            };
            let _ = socket.close(Some(bye)).await;
        }
        ended
    }

    /// When to refresh a token that expires at `exp_ms` (none for a fixed key).
    fn refresh_deadline(&self, exp_ms: Option<u64>) -> Option<Instant> {
        match (&self.settings.credentials, exp_ms) {
            // A far-future `exp` (past what a clock can add) is never refreshed.
            (Credentials::Tokens { refresh_before, .. }, Some(exp)) => {
                Instant::now().checked_add(token::refresh_in(exp, *refresh_before))
            }
            _ => None,
        }
    }

    /// The life of one open connection: resume or subscribe, then forward events until it
    /// ends; with a token provider, refresh the token in place before it expires.
    async fn converse(
        &mut self,
        socket: &mut Socket,
        ready: &mut Option<oneshot::Sender<Result<(), Error>>>,
        token_exp_ms: Option<u64>,
    ) -> Ended {
        let opened = Instant::now();
        let ended = |established: bool, why: Error| Ended {
            established,
            lasted: opened.elapsed(),
            why,
        };
        let silence = self.settings.silence_limit();
        let mut heard = Instant::now();
        let mut resumed = !self.subs.iter().any(|s| s.sid.is_some());
        let mut pending: Option<Pending> = None;
        let mut retry_at: Option<Instant> = None;
        let mut established = false;
        // The token's refresh: when to ask the provider, the answer awaited, and the
        // `refresh` request sent (its id and the new token's exp).
        let mut refresh_at = self.refresh_deadline(token_exp_ms);
        let mut fetching: Option<Fetch> = None;
        let mut refreshing: Option<(String, Option<u64>)> = None;
        loop {
            if !established && pending.is_none() && retry_at.is_none() {
                let asked = if !resumed {
                    resumed = true;
                    Some(Asked::Resume)
                } else {
                    self.subs
                        .iter()
                        .position(|s| s.sid.is_none())
                        .map(Asked::Subscribe)
                };
                match asked {
                    Some(asked) => {
                        if let Err(why) = self.ask(socket, asked, &mut pending, 0).await {
                            return ended(false, why);
                        }
                    }
                    None => {
                        established = true;
                        self.counters.connections.fetch_add(1, Ordering::Relaxed);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                }
            }
            let mut deadline = heard + silence;
            if let Some(p) = &pending {
                deadline = deadline.min(p.sent + self.settings.request_timeout);
            }
            if let Some(at) = retry_at {
                deadline = deadline.min(at);
            }
            if let (Some(at), None, None) = (refresh_at, &fetching, &refreshing) {
                deadline = deadline.min(at);
            }
            let step = tokio::select! {
                frame = socket.next() => Wake::Frame(frame),
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
                token = fetched(&mut fetching), if fetching.is_some() => Wake::Token(token),
                _ = self.out.closed() => return ended(established, Error::Stopped),
            };
            let frame = match step {
                Wake::Frame(frame) => frame,
                Wake::Token(answer) => {
                    fetching = None;
                    match answer {
                        Ok(token) if !token.is_empty() => {
                            self.requests = self.requests.wrapping_add(1);
                            let id = format!("t{}", self.requests);
                            let frame = wire::request("refresh", &id, json!({"token": token}));
                            if let Err(e) = socket.send(Message::text(frame)).await {
                                return ended(established, transport::dropped(e));
                            }
                            refreshing = Some((id, token::expiry_ms(&token)));
                        }
                        Ok(_) | Err(_) => {
                            log::warn!(
                                "rustorium-sdk: the token provider gave no token; asking again in {} ms",
                                TOKEN_RETRY_WAIT.as_millis()
                            );
                            refresh_at = Some(Instant::now() + TOKEN_RETRY_WAIT);
                        }
                    }
                    continue;
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if fetching.is_none()
                        && refreshing.is_none()
                        && refresh_at.is_some_and(|at| at <= now)
                    {
                        refresh_at = None;
                        if let Credentials::Tokens { provider, .. } = &self.settings.credentials {
                            fetching = Some(provider.fetch());
                        }
                    }
                    if retry_at.is_some_and(|at| at <= now) {
                        retry_at = None;
                        if let Some(p) = pending.take() {
                            if let Err(why) = self.ask(socket, p.asked, &mut pending, p.tries).await
                            {
                                return ended(established, why);
                            }
                        }
                        continue;
                    }
                    if pending.as_ref().is_some_and(|p| {
                        retry_at.is_none() && p.sent + self.settings.request_timeout <= now
                    }) {
                        return ended(established, Error::Timeout);
                    }
                    if heard + silence <= now {
                        return ended(
                            established,
                            transport::dropped(format!(
                                "nothing heard for {} ms (heartbeat timeout)",
                                silence.as_millis()
                            )),
                        );
                    }
                    continue;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return ended(established, transport::closed(frame))
                }
                Some(Ok(_)) => {
                    // Pings (answered by the WebSocket layer), pongs, binary: alive.
                    heard = Instant::now();
                    continue;
                }
                Some(Err(e)) => return ended(established, transport::dropped(e)),
                None => return ended(established, transport::dropped("connection ended")),
            };
            heard = Instant::now();
            match wire::parse(text.as_str()) {
                Err(why) => {
                    if !self.emit(Out::Error(why)).await {
                        return ended(established, Error::Stopped);
                    }
                }
                Ok(Incoming::Event(event)) => {
                    if !self.forward(event).await {
                        return ended(established, Error::Stopped);
                    }
                    // Time the application took to take the event is not the broker's silence.
                    heard = Instant::now();
                }
                Ok(Incoming::Heartbeat(timestamp)) => {
                    let answer = Message::text(wire::heartbeat_response(timestamp));
                    if let Err(e) = socket.send(answer).await {
                        return ended(established, transport::dropped(e));
                    }
                }
                Ok(Incoming::Reply { id, outcome }) => {
                    if let Some((_, exp)) =
                        refreshing.take_if(|(rid, _)| id.as_deref() == Some(rid.as_str()))
                    {
                        match outcome {
                            Ok(_) => {
                                self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                                refresh_at = self.refresh_deadline(exp);
                            }
                            Err((code, message)) => {
                                // The old token stays in force; try again shortly.
                                let error = Error::Broker {
                                    code: code.kind(false),
                                    message,
                                };
                                log::warn!("rustorium-sdk: token refresh refused: {error}");
                                refresh_at = Some(Instant::now() + TOKEN_RETRY_WAIT);
                                if !self.emit(Out::Error(error)).await {
                                    return ended(established, Error::Stopped);
                                }
                            }
                        }
                        continue;
                    }
                    let Some(p) = pending.take_if(|p| id.as_deref() == Some(p.id.as_str())) else {
                        continue;
                    };
                    match outcome {
                        Ok(data) => {
                            if let Err(why) = self.answered(p.asked, data).await {
                                return ended(established, why);
                            }
                        }
                        Err((code, message)) => {
                            let code = code.kind(false);
                            if code == ErrorCode::RateLimited && p.tries < RATE_LIMITED_TRIES {
                                retry_at = Some(Instant::now() + RATE_LIMITED_WAIT);
                                pending = Some(Pending {
                                    tries: p.tries + 1,
                                    ..p
                                });
                                continue;
                            }
                            let error = Error::Broker { code, message };
                            if let Err(why) = self.refused(p.asked, error, ready.is_some()).await {
                                return ended(established, why);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sends the request for `asked` and records it as pending.
    async fn ask(
        &mut self,
        socket: &mut Socket,
        asked: Asked,
        pending: &mut Option<Pending>,
        tries: u32,
    ) -> Result<(), Error> {
        self.requests = self.requests.wrapping_add(1);
        let id = format!("s{}", self.requests);
        let frame = match asked {
            Asked::Resume => {
                let sids: Vec<&str> = self.subs.iter().filter_map(|s| s.sid.as_deref()).collect();
                let last = self.last.as_ref().map(|(_, id)| id.as_str());
                wire::request(
                    "reconnect",
                    &id,
                    json!({"last_message_id": last, "subscriptions": sids}),
                )
            }
            Asked::Subscribe(index) => {
                let data = self
                    .subs
                    .get(index)
                    .map(|s| s.spec.request_data())
                    .unwrap_or(Value::Null);
                wire::request("subscribe", &id, data)
            }
        };
        socket
            .send(Message::text(frame))
            .await
            .map_err(transport::dropped)?;
        *pending = Some(Pending {
            id,
            asked,
            sent: Instant::now(),
            tries,
        });
        Ok(())
    }

    /// A successful reply to `asked`.
    async fn answered(&mut self, asked: Asked, data: Value) -> Result<(), Error> {
        match asked {
            Asked::Subscribe(index) => {
                let sid = data
                    .get("subscription_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::Decode(format!("subscribe reply without subscription_id: {data}"))
                    })?;
                if let Some(sub) = self.subs.get_mut(index) {
                    sub.sid = Some(sid.to_owned());
                }
                Ok(())
            }
            Asked::Resume => {
                self.counters.resumes.fetch_add(1, Ordering::Relaxed);
                let restored: Vec<&str> = data
                    .get("subscriptions")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let recovered = data.get("recovered").and_then(Value::as_bool) == Some(true);
                let mut resubscribed = Vec::new();
                for sub in &mut self.subs {
                    if sub
                        .sid
                        .as_deref()
                        .is_some_and(|sid| !restored.contains(&sid))
                    {
                        sub.sid = None;
                        resubscribed.push(sub.spec.channel_name().to_owned());
                    }
                }
                if !recovered || !resubscribed.is_empty() {
                    self.gap(resubscribed).await?;
                }
                Ok(())
            }
        }
    }

    /// An error reply to `asked`; `first` when this is the stream's first connection, whose
    /// refusals go to the caller of subscribe.
    async fn refused(&mut self, asked: Asked, error: Error, first: bool) -> Result<(), Error> {
        if matches!(
            error.code(),
            Some(ErrorCode::Unavailable | ErrorCode::RateLimited)
        ) || first
        {
            return Err(error);
        }
        match asked {
            Asked::Resume => {
                // The broker could not take the resume at all: subscribe everything again.
                let mut resubscribed = Vec::new();
                for sub in &mut self.subs {
                    sub.sid = None;
                    resubscribed.push(sub.spec.channel_name().to_owned());
                }
                self.gap(resubscribed).await
            }
            Asked::Subscribe(index) => {
                // A subscription the broker now refuses (a filter it no longer takes, a
                // role the key lost): reported once, and not asked for again.
                if index < self.subs.len() {
                    self.subs.remove(index);
                }
                if !self.emit(Out::Error(error)).await || self.subs.is_empty() {
                    // Nothing left to stream: the stream ends after the error.
                    return Err(Error::Stopped);
                }
                Ok(())
            }
        }
    }

    async fn gap(&mut self, resubscribed: Vec<String>) -> Result<(), Error> {
        self.counters.gaps.fetch_add(1, Ordering::Relaxed);
        let gap = Gap {
            last_message_id: self.last.as_ref().map(|(_, id)| id.clone()),
            resubscribed,
        };
        if self.emit(Out::Gap(gap)).await {
            Ok(())
        } else {
            Err(Error::Stopped)
        }
    }

    /// Hands an event on unless it is at or before the last one handed on.
    async fn forward(&mut self, event: RawEvent) -> bool {
        let position = wire::position(&event.id);
        if let (Some(p), Some((last, _))) = (position, &self.last) {
            if p <= *last {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let id = event.id.clone();
        if !self.emit(Out::Event(event)).await {
            return false;
        }
        if let Some(p) = position {
            self.last = Some((p, id));
        }
        true
    }

    /// Puts an item in the stream's bounded channel, waiting while it is full; false when
    /// the stream was dropped.
    async fn emit(&self, item: Out) -> bool {
        self.out.send(item).await.is_ok()
    }
}
