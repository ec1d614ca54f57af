//! The client: its streams and its commands.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::builder::{ClientBuilder, Settings};
use crate::commands::{
    self, Balance, Call, PublishEvent, TokenInfo, TransactionRequest, TransactionResponse,
};
use crate::driver::{Driver, Started};
use crate::error::{Error, Result};
use crate::stream::{EventStream, UpdateStream};
use crate::subscription::Subscription;

/// A client of the broker. Cheap to clone (clones share the command connection).
///
/// Each stream ([`subscribe_events`](Self::subscribe_events),
/// [`subscribe`](Self::subscribe)) has a connection of its own, because the broker sends
/// an event once per connection whatever the number of subscriptions it matches; commands
/// and publishes share one more, opened on first use. All of them count against the key's
/// connection cap (10 by default).
#[derive(Debug, Clone)]
pub struct WebSocketClient {
    settings: Arc<Settings>,
    commands: Arc<OnceCell<mpsc::Sender<Call>>>,
}

impl WebSocketClient {
    /// Starts building a client: `WebSocketClient::new().with_endpoint(..).with_api_key(..).build()?`,
    /// as the node API document shows.
    #[allow(clippy::new_ret_no_self)] // the node API document's example calls it so
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_settings(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            commands: Arc::new(OnceCell::new()),
        }
    }

    /// Subscribes to node API channels (`blocks`, `transactions`, `state`) and returns their
    /// events as one stream of [`Event`](crate::Event), in the broker's order, each once,
    /// across reconnects (see the crate documentation). Returns once every subscription is
    /// in place; an error if the first connection or a subscription fails.
    pub async fn subscribe_events(&self, channels: &[&str]) -> Result<EventStream> {
        if let Some(other) = channels
            .iter()
            .find(|c| !matches!(**c, "blocks" | "transactions" | "state"))
        {
            return Err(Error::Config(format!(
                "subscribe_events takes blocks, transactions and state; use subscribe for {other:?}"
            )));
        }
        let started = self
            .start(channels.iter().map(|c| Subscription::channel(*c)).collect())
            .await?;
        Ok(EventStream::new(started.items, started.counters))
    }

    /// Subscribes to any channels with their filters ([`Subscription`]) and returns one
    /// stream of typed [`Update`](crate::Update)s, in the broker's order, each once, across
    /// reconnects. Returns once every subscription is in place.
    pub async fn subscribe(
        &self,
        subscriptions: impl IntoIterator<Item = Subscription>,
    ) -> Result<UpdateStream> {
        let started = self.start(subscriptions.into_iter().collect()).await?;
        Ok(UpdateStream::new(started.items, started.counters))
    }

    async fn start(&self, subs: Vec<Subscription>) -> Result<Started> {
        if subs.is_empty() {
            return Err(Error::Config("nothing to subscribe to".into()));
        }
        let mut started = Driver::start(self.settings.clone(), subs);
        match (&mut started.ready).await {
            Ok(Ok(())) => Ok(started),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// Executes a transfer (`execute_transaction`, the `command` role). Not retried: when
    /// the connection ends before the reply, the error says so and the transfer may or may
    /// not have been made.
    pub async fn execute_transaction(
        &self,
        request: &TransactionRequest,
    ) -> Result<TransactionResponse> {
        let data = serde_json::to_value(request).map_err(|e| Error::Decode(e.to_string()))?;
        self.call("execute_transaction", data, true).await
    }

    /// A token's name, symbol and supply (`get_token_info`, the `command` role).
    pub async fn get_token_info(&self, token_id: &str) -> Result<TokenInfo> {
        self.call("get_token_info", json!({"token_id": token_id}), true)
            .await
    }

    /// An address's balance of a token (`get_balance`, the `command` role).
    pub async fn get_balance(&self, address: &str, token_id: &str) -> Result<Balance> {
        self.call(
            "get_balance",
            json!({"address": address, "token_id": token_id}),
            true,
        )
        .await
    }

    /// Publishes one event (the `publish` role); returns its id.
    pub async fn publish(&self, event: PublishEvent) -> Result<String> {
        let mut ids = self.publish_batch(vec![event]).await?;
        ids.pop()
            .ok_or_else(|| Error::Decode("publish reply without an id".into()))
    }

    /// Publishes up to 1000 events at once, all or none (the `publish` role); returns their
    /// ids in order.
    pub async fn publish_batch(&self, events: Vec<PublishEvent>) -> Result<Vec<String>> {
        let data = json!({"events": events});
        #[derive(serde::Deserialize)]
        struct Ids {
            ids: Vec<String>,
        }
        let reply: Ids = self.call("publish", data, false).await?;
        Ok(reply.ids)
    }

    /// Sends a request on the command connection and waits for its reply, at most the
    /// request timeout.
    async fn call<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        data: Value,
        command: bool,
    ) -> Result<T> {
        let calls = self
            .commands
            .get_or_init(|| async { commands::start(self.settings.clone()) })
            .await;
        let (reply, answer) = oneshot::channel();
        let call = Call {
            kind,
            data,
            command,
            reply,
        };
        let asked = async {
            calls.send(call).await.map_err(|_| Error::Stopped)?;
            answer.await.map_err(|_| Error::Stopped)?
        };
        let value = tokio::time::timeout(self.settings.request_timeout, asked)
            .await
            .map_err(|_| Error::Timeout)??;
        serde_json::from_value(value).map_err(|e| Error::Decode(format!("{kind} reply: {e}")))
    }
}
