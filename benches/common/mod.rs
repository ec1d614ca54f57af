//! Helpers of the resume bench: start the release binary, read a process's RSS (the load
//! generator's reader), publish over HTTP. Loopback only; every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The bench key's secret.
pub const KEY: &str = "bench-key";

#[allow(unused_imports)] // the sdk bench does not read RSS
pub use crate::loadgen::report::rss_kib;
use crate::loadgen::target::{spawn_broker_with, Protocol, Running};

/// Starts the release binary with a bench key (`key_extra` inside its `[[keys]]` table,
/// `extra` appended to the file) on a free loopback port; dropping the result stops it.
pub fn spawn_broker(key_extra: &str, extra: &str) -> Result<(Running, SocketAddr), String> {
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[[keys]]\nname = \"bench\"\nsecret = \"{KEY}\"\nroles = [\"subscribe\", \"publish\"]\n{key_extra}\n[demo]\nenabled = false\n[ledger]\nenabled = false\n{extra}\n"
    );
    let running = spawn_broker_with(&config)?;
    match running.protocol {
        Protocol::Rustorium(nodes) => Ok((running, nodes.publisher())),
        Protocol::Nats { .. } => Err("not a rustorium-broker".into()),
    }
}

/// `POST /api/publish` with the bench key; Err with the response when not 200.
pub fn publish(addr: SocketAddr, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(resp)
    }
}

/// Runs a bench's body on a one-thread tokio runtime (the broker has the other core) after
/// raising the open-file limit; exits non-zero with the error when it fails.
pub fn run_bench<F: std::future::Future<Output = Result<(), String>>>(body: F) {
    rustorium_broker::server::raise_file_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("runtime: {e}"),
    };
    if let Err(e) = rt.block_on(body) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

/// The value of `--NAME N` on the bench's command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}
