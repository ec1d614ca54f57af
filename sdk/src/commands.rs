//! Commands and publishes: requests on one shared connection, matched to their replies by
//! request id, each waiting at most the request timeout.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::builder::Settings;
use crate::error::Error;
use crate::transport::{self, Socket};
use crate::wire::{self, Incoming};

/// A transfer to execute (`execute_transaction`). Amounts are decimal strings of whole
/// units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionRequest {
    /// Sender address (`0x…`).
    pub from: String,
    /// Recipient address (`0x…`).
    pub to: String,
    /// Amount, a decimal string such as `"1000"`.
    pub amount: String,
    /// The token (`0x…`).
    pub token_id: String,
}

/// The answer to `execute_transaction`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransactionResponse {
    /// The transaction's id; its `tx_confirmed` event carries it as `tx_hash`.
    pub transaction_id: String,
    /// `pending`: it is confirmed in a later block.
    pub status: String,
}

/// The answer to `get_token_info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    /// The token.
    pub token_id: String,
    /// Its name.
    pub name: String,
    /// Its symbol.
    pub symbol: String,
    /// Its total supply, a decimal string.
    pub total_supply: String,
}

/// The answer to `get_balance`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Balance {
    /// The address.
    pub address: String,
    /// The token.
    pub token_id: String,
    /// The balance, a decimal string.
    pub balance: String,
}

/// An event to publish (keys with the `publish` role).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishEvent {
    /// The channel.
    pub channel: String,
    /// The event type; `None` for the channel's default.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The event's data.
    pub data: Value,
}

impl PublishEvent {
    /// An event of the channel's default type.
    pub fn new(channel: impl Into<String>, data: Value) -> Self {
        Self {
            channel: channel.into(),
            kind: None,
            data,
        }
    }
}

/// One request for the command connection.
pub(crate) struct Call {
    pub(crate) kind: &'static str,
    pub(crate) data: Value,
    /// Whether the node API's 4003 means `command_failed` (commands) rather than a
    /// subscription error.
    pub(crate) command: bool,
    pub(crate) reply: oneshot::Sender<Result<Value, Error>>,
}

/// Starts the command connection's task; it ends when every sender is dropped.
pub(crate) fn start(settings: Arc<Settings>) -> mpsc::Sender<Call> {
    let (calls, rx) = mpsc::channel(settings.max_in_flight);
    tokio::spawn(run(settings, rx));
    calls
}

type Waiting = HashMap<String, (oneshot::Sender<Result<Value, Error>>, bool)>;

enum Step {
    Call(Option<Call>),
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Silent,
}

async fn run(settings: Arc<Settings>, mut calls: mpsc::Receiver<Call>) {
    let mut socket: Option<Socket> = None;
    let mut waiting: Waiting = HashMap::new();
    let mut requests: u64 = 0;
    let mut heard = Instant::now();
    loop {
        // Callers that gave up (timeout, dropped future) free their places.
        waiting.retain(|_, (reply, _)| !reply.is_closed());
        let step = match socket.as_mut() {
            None => Step::Call(calls.recv().await),
            Some(open) => tokio::select! {
                call = calls.recv(), if waiting.len() < settings.max_in_flight => Step::Call(call),
                frame = open.next() => Step::Frame(frame),
                _ = tokio::time::sleep_until(heard + settings.silence_limit()) => Step::Silent,
            },
        };
        match step {
            Step::Call(None) => {
                if let Some(mut open) = socket.take() {
                    let bye = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "client dropped".into(),
                    };
                    let _ = open.close(Some(bye)).await;
                }
                return;
            }
            Step::Call(Some(call)) => {
                let open = match socket.as_mut() {
                    Some(open) => open,
                    // A token connection is not refreshed here: when its token expires the
                    // broker closes it, and the next call opens one with a fresh token.
                    None => match transport::connect(&settings).await {
                        Ok(open) => {
                            heard = Instant::now();
                            socket.insert(open.socket)
                        }
                        Err(error) => {
                            let _ = call.reply.send(Err(error));
                            continue;
                        }
                    },
                };
                requests = requests.wrapping_add(1);
                let id = format!("c{requests}");
                let frame = wire::request(call.kind, &id, call.data);
                if let Err(e) = open.send(Message::text(frame)).await {
                    let _ = call.reply.send(Err(transport::dropped(&e)));
                    fail_all(&mut waiting, transport::dropped(e));
                    socket = None;
                    continue;
                }
                waiting.insert(id, (call.reply, call.command));
            }
            Step::Frame(Some(Ok(Message::Text(text)))) => {
                heard = Instant::now();
                match wire::parse(text.as_str()) {
                    Ok(Incoming::Reply {
                        id: Some(id),
                        outcome,
                    }) => {
                        if let Some((reply, command)) = waiting.remove(&id) {
                            let answer = outcome.map_err(|(code, message)| Error::Broker {
                                code: code.kind(command),
                                message,
                            });
                            let _ = reply.send(answer);
                        }
                    }
                    Ok(Incoming::Heartbeat(timestamp)) => {
                        let answer = Message::text(wire::heartbeat_response(timestamp));
                        if let Some(open) = socket.as_mut() {
                            if let Err(e) = open.send(answer).await {
                                fail_all(&mut waiting, transport::dropped(e));
                                socket = None;
                            }
                        }
                    }
                    // Admission errors come without id, then the close that says it all.
                    Ok(_) | Err(_) => {}
                }
            }
            Step::Frame(Some(Ok(Message::Close(frame)))) => {
                fail_all(&mut waiting, transport::closed(frame));
                socket = None;
            }
            Step::Frame(Some(Ok(_))) => heard = Instant::now(),
            Step::Frame(Some(Err(e))) => {
                fail_all(&mut waiting, transport::dropped(e));
                socket = None;
            }
            Step::Frame(None) => {
                fail_all(&mut waiting, transport::dropped("connection ended"));
                socket = None;
            }
            Step::Silent => {
                fail_all(
                    &mut waiting,
                    transport::dropped("nothing heard (heartbeat timeout)"),
                );
                socket = None;
            }
        }
    }
}

/// Every request still waiting learns that its connection ended; whether it was executed
/// is unknown, so none is sent again.
fn fail_all(waiting: &mut Waiting, why: Error) {
    for (_, (reply, _)) in waiting.drain() {
        let _ = reply.send(Err(why.clone()));
    }
}
