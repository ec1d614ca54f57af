//! A node's half of the Redis engine's fan-out: it subscribes to the announcements of the
//! channels its connections subscribe to (interest: a node with no subscriber on a channel
//! does not receive it), turns each announcement back into an event, and hands them to
//! the node's [`Sink`] in the order Redis sent them, which is sequence order: the append
//! script publishes as it sequences, and one connection receives in publish order.
//!
//! Status (issue 11, in progress): events are built and delivered, and interest is
//! added and removed; head raises for nodes that see no `blocks` event, backfill after a
//! reconnect and the 1013 close on a gap are not built yet, and nothing selects this
//! engine yet.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use redis::RedisResult;
use serde_json::Value;

use super::redis_log::{parse_announcement, Keys};
use super::redis_record::{decode, unix_ms_now};
use super::Sink;
use crate::event::{Draft, Event};

/// The channels this node receives, changed as its subscriptions come and go.
#[derive(Clone)]
pub struct Interest {
    sink: PubSubSink,
    keys: Keys,
}

impl Interest {
    /// Interest through `sink`, the command half of the node's pub/sub connection.
    pub fn new(sink: PubSubSink, keys: Keys) -> Interest {
        Interest { sink, keys }
    }

    /// From now on this node receives `channel`'s events.
    pub async fn add(&mut self, channel: &str) -> RedisResult<()> {
        self.sink.subscribe(self.keys.events(channel)).await
    }

    /// This node no longer receives `channel`'s events.
    pub async fn remove(&mut self, channel: &str) -> RedisResult<()> {
        self.sink.unsubscribe(self.keys.events(channel)).await
    }
}

/// The event an announcement on `pubsub_channel` carries; `None` when the name is not an
/// events channel of `keys` or the announcement does not decode (another node's garbage
/// is skipped, never trusted).
pub fn event_of(
    keys: &Keys,
    pubsub_channel: &str,
    payload: &str,
    now: Instant,
    unix_now_ms: u64,
) -> Option<Arc<Event>> {
    let channel: Arc<str> = Arc::from(keys.channel_of(pubsub_channel)?);
    let a = parse_announcement(payload)?;
    let stored = decode(a.seq, channel.clone(), a.raised, a.record, now, unix_now_ms)?;
    let data: Value = serde_json::from_str(stored.data.get()).ok()?;
    let draft = Draft {
        is_block: &*channel == "blocks",
        channel,
        kind: stored.kind.to_string(),
        data,
        block: stored.block,
    };
    Some(Arc::new(Event::from_stored(draft, Arc::new(stored))))
}

/// Most announcements handed to the sink as one batch.
const MAX_BATCH: usize = 1024;

/// Delivers every announcement `stream` receives to `sink`, batching those already
/// received, until the stream ends (the connection closed). Returns how many events it
/// delivered.
pub async fn deliver_all(mut stream: PubSubStream, keys: Keys, sink: Arc<dyn Sink>) -> u64 {
    let mut delivered = 0u64;
    while let Some(first) = stream.next().await {
        let mut batch = Vec::new();
        let (now, unix_now) = (Instant::now(), unix_ms_now());
        let mut take = |msg: redis::Msg| {
            let payload: Option<String> = msg.get_payload().ok();
            if let Some(e) =
                payload.and_then(|p| event_of(&keys, msg.get_channel_name(), &p, now, unix_now))
            {
                batch.push(e);
            }
        };
        take(first);
        let mut taken = 1;
        while taken < MAX_BATCH {
            match stream.next().now_or_never() {
                Some(Some(msg)) => take(msg),
                _ => break,
            }
            taken += 1;
        }
        if !batch.is_empty() {
            delivered = delivered.saturating_add(batch.len() as u64);
            // The node's fan-out reports when the batch is queued; nobody waits here.
            drop(sink.deliver(&batch));
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::redis_record::encode;
    use serde_json::value::RawValue;

    #[test]
    fn an_announcement_becomes_the_event_it_carries() {
        let keys = Keys::new("p:");
        let data = RawValue::from_string(r#"{"number":12,"hash":"0x1"}"#.into()).unwrap();
        let record = encode("new_block", Some(12), &data, 1_000);
        let now = Instant::now();
        let e = event_of(&keys, "p:e:blocks", &format!("77 12 {record}"), now, 1_000).unwrap();
        assert_eq!(e.seq, 77);
        assert_eq!(&*e.channel, "blocks");
        assert_eq!(e.kind, "new_block");
        assert_eq!(e.data["number"], 12);
        assert_eq!(e.raises_head, Some(12));
        assert_eq!(e.id, "77");
        // Not ours, or not an announcement: skipped.
        assert!(event_of(&keys, "q:e:blocks", &format!("77 12 {record}"), now, 0).is_none());
        assert!(event_of(&keys, "p:heads", "77 12", now, 0).is_none());
        assert!(event_of(&keys, "p:e:blocks", "77 - {not json", now, 0).is_none());
    }
}
