//! The load generator at toy scale, so it cannot rot: every scenario of the load issues
//! (A, A-open, B, C, D, E, F) runs against the real broker binary, and against nats-server
//! when it is installed (`scripts/test` installs it where it can), asserting that every
//! promised delivery arrived exactly once and in order. Never a speed.

#[path = "../benches/loadgen/mod.rs"]
mod loadgen;

use loadgen::client::NatsStream;
use loadgen::payload::{payload, scan};
use loadgen::publisher::Via;
use loadgen::scenario::{run, Scenario};
use loadgen::target::{nats_available, TargetSpec};

fn toy(name: &str, spec: TargetSpec, via: Via) {
    toy_with(name, spec, via, 1);
}

/// [`toy`] with the publisher writing up to `write_events` events per write.
fn toy_with(name: &str, spec: TargetSpec, via: Via, write_events: u64) {
    let mut s = Scenario::preset(name).expect("a preset").toy();
    s.via = via;
    s.write_events = write_events;
    let report = loadgen::block_on(run(&spec, &s))
        .expect("runtime")
        .unwrap_or_else(|e| panic!("scenario {name} on {}: {e}", spec.name()));
    println!("{}", report.render());
    assert!(
        report.received.expected > 0 || s.events == 0,
        "{name}: nothing expected"
    );
    assert_eq!(
        report.published.events, s.events,
        "{name}: events published"
    );
    assert!(
        report.clean(),
        "{name} on {}:\n{}",
        spec.name(),
        report.render()
    );
}

fn toy_nats(name: &str) {
    if !nats_available() {
        assert!(
            std::env::var_os("RUSTORIUM_REQUIRE_NATS").is_none(),
            "RUSTORIUM_REQUIRE_NATS is set but nats-server cannot be started"
        );
        eprintln!("nats-server is not installed: the NATS side of scenario {name} is skipped");
        return;
    }
    toy(name, TargetSpec::Nats, Via::WebSocket);
}

#[test]
fn scenario_a_closed_loop() {
    toy("A", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_a_closed_loop_over_http_batches() {
    toy("A", TargetSpec::Broker, Via::Http);
}

#[test]
fn scenario_a_batched_publishing() {
    toy("A-batched", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_a_open_loop() {
    toy("A-open", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_b_fixed_rate() {
    toy("B", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_c_many_channels() {
    toy("C", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_c_several_frames_per_write() {
    toy_with("C", TargetSpec::Broker, Via::WebSocket, 100);
    toy_with("A-open", TargetSpec::Broker, Via::WebSocket, 100);
    toy_with("A-batched", TargetSpec::Broker, Via::WebSocket, 100);
    if nats_available() {
        toy_with("C", TargetSpec::Nats, Via::WebSocket, 100);
    }
}

#[test]
fn scenario_d_idle_connections() {
    toy("D", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_e_many_connections() {
    toy("E", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_f_wallets_each_filtered_on_its_address() {
    toy("F", TargetSpec::Broker, Via::WebSocket);
}

#[test]
fn scenario_a_in_process() {
    toy("A", TargetSpec::InProc, Via::WebSocket);
}

#[test]
fn nats_scenarios() {
    for name in ["A", "A100", "A-open", "B", "C", "D", "E", "F"] {
        toy_nats(name);
    }
}

#[test]
fn a_payload_has_its_size_and_scans_back() {
    let p = payload(42, 1_234_567, 200);
    assert_eq!(p.len(), 200);
    let frame = format!("{{\"type\":\"update\",\"id\":\"9\",\"data\":{p},\"error\":null}}");
    assert_eq!(scan(frame.as_bytes()), Some((42, 1_234_567)));
    assert_eq!(
        scan(b"{\"type\":\"heartbeat\",\"data\":{\"timestamp\":1}}"),
        None
    );
}

#[test]
fn nats_messages_are_reassembled_across_frames() {
    let mut s = NatsStream::default();
    let mut seen = Vec::new();
    s.push(b"INFO {}\r\nMSG a 1 5\r\nhel");
    s.drain(|op| seen.push(format!("{op:?}")));
    s.push(b"lo\r\nPING\r\n");
    s.drain(|op| seen.push(format!("{op:?}")));
    assert_eq!(seen, ["Other", "Msg([104, 101, 108, 108, 111])", "Ping"]);
}
