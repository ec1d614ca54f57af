//! The publisher's appender runs on the arbiter of the publish that found it idle
//! (`actors/src/publisher.rs`). When that arbiter stops while the appender is in the
//! middle of a batch, the queue must not stay claimed by a task that no longer runs: the
//! publishes queued behind are appended by a new appender on the actors' arbiter, and
//! later publishes work. The appender is held mid-batch for real: the engine is Redis
//! behind a proxy whose connections are stalled, so the append waits for its answer.
//!
//! Skipped with a message when `redis-server` is not installed, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis_server::redis_server;
use common::WAIT;
use rustorium_actors::settings::EngineKind;
use rustorium_broker::{Broker, Config, NewEvent};
use serde_json::json;

fn price(i: u64) -> Vec<NewEvent> {
    vec![NewEvent::new(
        "market_data",
        json!({"symbol": "CLAIM-USD", "price": i.to_string(), "change_24h": "0",
               "volume_24h": "0", "timestamp": "2024-01-01T12:00:00Z"}),
    )]
}

#[test]
fn an_appender_whose_arbiter_stops_mid_batch_hands_the_queue_on() {
    let Some(redis) = redis_server() else {
        return;
    };
    actix_web::rt::System::new().block_on(async move {
        let proxy =
            Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().expect("addr")).await;
        let mut config = Config::default();
        config.demo.enabled = false;
        config.engine.kind = EngineKind::Redis;
        config.engine.redis_url = format!("redis://{}/", proxy.addr);
        config.engine.key_prefix = "test:appender:".into();
        config.engine.connect_timeout_ms = 1000;
        config.engine.response_timeout_ms = 1500;
        let broker = Broker::start(config).expect("the broker starts");
        let publisher = broker.publisher();
        // Live: a publish is acknowledged (bounded: the link may still be connecting).
        let deadline = Instant::now() + WAIT;
        while publisher.publish(price(0)).await.is_err() {
            assert!(Instant::now() < deadline, "no publish acknowledged");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        // Every open connection to Redis now forwards nothing: an append waits for an
        // answer until `response_timeout_ms`.
        proxy.stall_open_connections();
        // A publish from a second arbiter finds the appender idle, so the appender runs
        // there, and waits inside the append.
        let other = actix::Arbiter::new();
        let first = publisher.clone();
        let (tx, first_answer) = tokio::sync::oneshot::channel();
        assert!(other.spawn(async move {
            let _ = tx.send(first.publish(price(1)).await);
        }));
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        // Queued behind it (the appender is running, so no second one starts).
        let queued = publisher.submit(price(2)).expect("queued");
        // The arbiter stops with the appender in the middle of its batch.
        other.stop();
        assert!(other.join().is_ok(), "the arbiter's thread ended");
        // The first publish's answer went with the task: it is told nothing was
        // published, or its outcome; it is not left waiting.
        let first_result = actix_web::rt::time::timeout(WAIT, first_answer).await;
        assert!(first_result.is_ok(), "the first publish was left waiting");
        // The publish queued behind it is appended by a new appender (once the link
        // gives up on the stalled connection and reconnects) and answered.
        let answer = actix_web::rt::time::timeout(WAIT * 2, queued).await;
        assert!(
            answer.is_ok(),
            "the publish queued behind the stopped appender was never answered"
        );
        // And publishing goes on.
        let deadline = Instant::now() + WAIT;
        loop {
            match publisher.publish(price(3)).await {
                Ok(ids) => {
                    assert_eq!(ids.len(), 1);
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "no publish after the stop: {e}");
                    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(broker);
    });
}
