//! The examples of the two API documents, run for real against the broker: the code blocks
//! are read from `docs/seeds/` at test time and only their URL and key are replaced. Node
//! runs with the `ws` package (standing in for the browser's WebSocket in the node API
//! example), Python with `websockets`; `scripts/test` installs both into `tests/clients/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first fenced block of `lang` after `heading` in a seed document.
fn code_block(doc: &str, heading: &str, lang: &str) -> String {
    let text = std::fs::read_to_string(root().join("docs/seeds").join(doc)).expect("seed document");
    let after = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("{doc} has no {heading}"))
        .1;
    let fence = format!("```{lang}\n");
    let body = after.split_once(&fence).expect("code block").1;
    body.split_once("```").expect("closing fence").0.to_owned()
}

fn clients(sub: &str) -> PathBuf {
    let p = root().join("tests/clients").join(sub);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test, which installs the Node and Python packages",
        p.display()
    );
    p
}

struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Script {
    fn run(program: &str, args: &[&Path], env: &[(&str, &Path)]) -> Script {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Script {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for an output line containing every needle, calling `nudge` every
    /// 200 ms meanwhile (to publish an event the script can receive).
    async fn expect(
        &mut self,
        needles: &[&str],
        mut nudge: impl FnMut() -> Option<tokio::task::JoinHandle<()>>,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut next_nudge = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_nudge {
                if let Some(h) = nudge() {
                    let _ = h.await;
                }
                next_nudge = Instant::now() + Duration::from_millis(200);
            }
            // Node prints objects over several lines: a record is a line and the indented
            // (or closing-brace) lines after it.
            while let Ok(line) = self.lines.try_recv() {
                let continues = line.starts_with([' ', '}', ']']);
                match self.seen.last_mut() {
                    Some(record) if continues => {
                        record.push('\n');
                        record.push_str(&line);
                    }
                    _ => self.seen.push(line),
                }
                let record = self.seen.last().map(String::as_str).unwrap_or("");
                if needles.iter().all(|n| record.contains(n)) {
                    self.seen.clear();
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no line with {needles:?}; the script printed:\n{}",
            self.seen.join("\n")
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write script");
    p
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rustorium-seed-{}-{name}", std::process::id()))
}

/// Publishes the token update the v1 examples subscribe to (their filter is `0x...`).
fn token_update(addr: std::net::SocketAddr) -> Option<tokio::task::JoinHandle<()>> {
    Some(tokio::spawn(async move {
        let ev = json!({"channel": "token_updates", "data": {"token_id": "0x...", "price": "1.23",
            "volume": "1000000", "timestamp": "2024-01-01T12:00:00Z"}});
        publish_ok(addr, &ev).await;
    }))
}

#[tokio::test]
async fn the_v1_nodejs_example_receives_a_live_update() {
    let b = start(config());
    let code = code_block("v1-api.md", "### Node.js Example", "javascript").replace(
        "wss://ws.rustorium.com/v1?api_key=YOUR_API_KEY",
        &format!("ws://{}/v1?api_key={SUB_KEY}", b.addr),
    );
    let dir = temp_dir("node-v1");
    let script = write(&dir, "example.js", &code);
    let mut run = Script::run(
        "node",
        &[&script],
        &[("NODE_PATH", &clients("node_modules"))],
    );
    run.expect(&["Received:", "subscription_confirmation"], || None)
        .await;
    run.expect(
        &["Received:", "type: 'update'", "token_id: '0x...'"],
        || token_update(b.addr),
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_v1_python_example_receives_a_live_update() {
    let b = start(config());
    let code = code_block("v1-api.md", "### Python Example", "python").replace(
        "wss://ws.rustorium.com/v1?api_key=YOUR_API_KEY",
        &format!("ws://{}/v1?api_key={SUB_KEY}", b.addr),
    );
    let dir = temp_dir("python-v1");
    let script = write(&dir, "example.py", &code);
    let mut run = Script::run(
        "python3",
        &[Path::new("-u"), &script],
        &[("PYTHONPATH", &clients("python"))],
    );
    run.expect(&["Received:", "'subscription_confirmation'"], || None)
        .await;
    run.expect(
        &["Received:", "'type': 'update'", "'token_id': '0x...'"],
        || token_update(b.addr),
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_node_api_javascript_example_receives_live_blocks() {
    // Live blocks from the built-in ledger, one every 100 ms.
    let mut cfg = config();
    cfg.ledger.empty_blocks = true;
    let b = start(cfg);
    let code = code_block("node-api.md", "### JavaScript", "javascript").replace(
        "ws://localhost:9072/ws?token=API_KEY",
        &format!("ws://{}/ws?token={SUB_KEY}", b.addr),
    );
    let dir = temp_dir("node-ws");
    // The browser's WebSocket, played by the ws package; the example itself is unchanged.
    let prelude = write(
        &dir,
        "browser.js",
        "globalThis.WebSocket = require('ws');\n",
    );
    let script = write(&dir, "example.js", &code);
    let mut run = Script::run(
        "node",
        &[Path::new("-r"), &prelude, &script],
        &[("NODE_PATH", &clients("node_modules"))],
    );
    run.expect(&["Connected to Rustorium"], || None).await;
    run.expect(&["New block:", "number"], || None).await;
    let _ = std::fs::remove_dir_all(dir);
}
