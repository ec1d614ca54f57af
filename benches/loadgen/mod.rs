//! The load generator behind `cargo bench --bench load` (and, at toy scale, the
//! `load_scenarios` test): subscribers over WebSocket, one publisher, rustorium-broker or
//! nats-server as the target, and a report of loss, order, throughput, latency, memory
//! and CPU. Loopback only; every run stops by itself.
#![allow(dead_code)]

pub mod args;
pub mod client;
pub mod payload;
pub mod publisher;
pub mod rawws;
pub mod report;
pub mod scenario;
pub mod tally;
pub mod target;
pub mod topic;

/// Runs `f` on a one-thread runtime (the generator's tasks share one thread and its
/// state without locks; the broker has the other core).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, f))
}
