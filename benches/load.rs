//! The load generator: runs the scenarios of the load issue against rustorium-broker,
//! nats-server, or both (`--race`), and prints loss, order, throughput, latency, memory and
//! CPU, and the ratios of a race.
//!
//! `cargo bench --bench load -- [--scenario A|A100|A-open|A-batched|B|C|D|E|F|all] [--target T | --race]
//!  [--rounds R] [--toy] [--subscribers N] [--channels C] [--events M] [--in-flight K]
//!  [--rate R] [--open] [--batch B] [--write-events W] [--payload BYTES] [--via ws|http] [--hold SECS]
//!  [--heartbeat-ms MS] [--sources S] [--max-secs S] [--shard K]`
//!
//! Targets: `broker` (the release binary, started per run; default; the environment
//! variable `RUSTORIUM_LOAD_BROKER=PATH` runs another build instead), `inproc`,
//! `url=127.0.0.1:PORT[@PID]`, `nats` (nats-server, started per run),
//! `nats-url=127.0.0.1:PORT,127.0.0.1:WSPORT[@PID]`, `cluster=N` (Redis and N nodes, started
//! per run), `urls=127.0.0.1:PORT,...` (nodes already running). `--shard K` gives this
//! process channels and source addresses of its own, for several generator processes in
//! one run (`benches/cluster-e.sh`). Exits 1 when a run lost, repeated
//! or reordered an event, or failed.

mod loadgen;

use std::time::Duration;

use loadgen::publisher::{Pace, Via};
use loadgen::report::{ratios, Report};
use loadgen::scenario::{run, Scenario};
use loadgen::target::TargetSpec;

struct Args {
    scenarios: Vec<Scenario>,
    targets: Vec<TargetSpec>,
    rounds: usize,
}

fn parse() -> Result<Args, String> {
    let argv = loadgen::args::Argv::from_env();
    let value = |flag: &str| argv.value(flag);
    let number = |flag: &str| argv.number(flag);
    let names: Vec<&str> = match value("--scenario").unwrap_or("A") {
        "all" => vec!["A", "A100", "A-open", "A-batched", "B", "C", "D", "E", "F"],
        one => vec![one],
    };
    let toy = argv.has("--toy");
    let mut scenarios = Vec::new();
    for name in names {
        let mut s = Scenario::preset(name)?;
        if toy {
            s = s.toy();
        }
        if let Some(n) = number("--subscribers")? {
            s.subscribers = n as usize;
        }
        if let Some(n) = number("--channels")? {
            s.channels = (n as usize).max(1);
        }
        if s.wallets {
            // One wallet per subscriber.
            s.channels = s.subscribers.max(1);
        }
        if let Some(n) = number("--events")? {
            s.events = n as u64;
        }
        if let Some(n) = number("--in-flight")? {
            s.pace = Pace::Closed((n as usize).max(1));
        }
        if let Some(n) = number("--rate")? {
            s.pace = Pace::Rate(n.max(0.001));
        }
        if argv.has("--open") {
            s.pace = Pace::Open;
        }
        if let Some(n) = number("--batch")? {
            s.batch = (n as u64).clamp(1, 1000);
        }
        if let Some(n) = number("--write-events")? {
            s.write_events = (n as u64).clamp(1, 1000);
        }
        if let Some(n) = number("--payload")? {
            s.payload = n as usize;
        }
        if let Some(n) = number("--hold")? {
            s.hold = Duration::from_secs_f64(n.max(0.0));
        }
        if let Some(n) = number("--heartbeat-ms")? {
            s.heartbeat_ms = (n as u64).max(100);
        }
        if let Some(n) = number("--max-secs")? {
            s.max_duration = Duration::from_secs_f64(n.clamp(1.0, 3600.0));
        }
        s.sources = match number("--sources")? {
            Some(n) => n as usize,
            // About 28,000 ephemeral ports per source address; stay well below.
            None => s.subscribers / 20_000 + 1,
        };
        s.via = match value("--via") {
            None | Some("ws") => Via::WebSocket,
            Some("http") => Via::Http,
            Some(other) => return Err(format!("--via ws|http, not {other}")),
        };
        scenarios.push(s);
    }
    let targets = if argv.has("--race") {
        vec![TargetSpec::Broker, TargetSpec::Nats]
    } else {
        vec![TargetSpec::parse(value("--target").unwrap_or("broker"))?]
    };
    let rounds = number("--rounds")?.map_or(1, |r| (r as usize).clamp(1, 20));
    if let Some(k) = number("--shard")? {
        // Several generator processes in one run: channels and source addresses of its own.
        loadgen::client::set_shard((k as u8).clamp(0, 250));
    }
    Ok(Args {
        scenarios,
        targets,
        rounds,
    })
}

async fn main_async(args: Args) -> Result<bool, String> {
    let mut all_clean = true;
    for s in &args.scenarios {
        let mut results: Vec<Vec<Report>> = vec![Vec::new(); args.targets.len()];
        for round in 0..args.rounds {
            // Alternate which broker goes first, so neither always runs on a warmer machine.
            let mut order: Vec<usize> = (0..args.targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let report = run(&args.targets[i], s).await.map_err(|e| {
                    format!("scenario {} on {}: {e}", s.name, args.targets[i].name())
                })?;
                println!("{}", report.render());
                all_clean &= report.clean();
                results[i].push(report);
            }
            if results.len() == 2 {
                println!("{}", ratios(&results[0][round], &results[1][round]));
            }
        }
    }
    Ok(all_clean)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    match loadgen::block_on(main_async(args)) {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            eprintln!("load: a run lost, repeated or reordered events, or failed (see above)");
            std::process::exit(1);
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(1);
        }
    }
}
