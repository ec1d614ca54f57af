//! The node API document's Rust example (`sdk/examples/node_api.rs`, copied as printed
//! plus two lines), built by the test run and run against the standalone broker with its
//! demo feed: it prints blocks and confirmed transactions.
//!
//! The example connects to `ws://localhost:9072/ws`, as printed, so this test runs the
//! broker on that port and fails with a clear message when the port is taken.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker_process::BrokerProcess;

const KEY: &str = "example-secret-0001";

/// The example's binary: `cargo test` and `cargo nextest` build the workspace's examples
/// next to the test binaries (`target/<profile>/examples/`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join("node_api");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test` or `cargo nextest run` (which build \
         the examples), or `cargo build -p rustorium-sdk --example node_api` first",
        bin.display()
    );
    bin
}

#[test]
fn the_documents_rust_example_prints_blocks_and_confirmations() {
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:9072") {
        panic!(
            "port 9072 is taken ({e}); the document's example connects there, stop what uses it"
        );
    }
    let config =
        std::env::temp_dir().join(format!("rustorium-sdk-example-{}.toml", std::process::id()));
    std::fs::write(&config, "[ledger]\nblock_interval_ms = 200\n").expect("write config");
    let _broker = BrokerProcess::spawn(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--bind",
        "127.0.0.1:9072",
        "--key",
        &format!("example:{KEY}:subscribe"),
    ]);
    let mut example = Command::new(example_binary())
        .env("RUSTORIUM_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the example");
    let stdout = example.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut blocks, mut confirmed) = (Vec::new(), Vec::new());
    while blocks.len() < 5 || confirmed.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("after {blocks:?} and {confirmed:?}, the example printed nothing more in time");
        };
        if let Some(n) = line.strip_prefix("New block: ") {
            blocks.push(n.parse::<u64>().expect("a block number"));
        } else if let Some(hash) = line.strip_prefix("Transaction confirmed: ") {
            assert!(hash.starts_with("0x") && hash.len() > 2, "{line}");
            confirmed.push(hash.to_owned());
        } else {
            panic!("unexpected line from the example: {line}");
        }
    }
    let _ = example.kill();
    let _ = example.wait();
    let _ = std::fs::remove_file(&config);
    assert!(
        blocks.windows(2).all(|w| w[1] == w[0] + 1),
        "blocks in order: {blocks:?}"
    );
}
