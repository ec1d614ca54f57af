//! The soak run: a release broker for a set time under a steady publisher, steady,
//! churning and slow subscribers, and every abusive client of docs/security.md at once.
//! Prints the broker's memory, descriptors, parked subscriptions and history as it goes,
//! then a summary: loss and duplicates of every well-behaved subscriber (must be zero),
//! the abusers' answers, and whether each series stayed flat after warm-up. Writes
//! `soak.csv` and `soak.svg` (memory and descriptors over time) to `--out`.
//!
//! `cargo bench --bench soak -- [--minutes M] [--rate R] [--channels C] [--steady N]
//!  [--churners N] [--slow N] [--no-abuse] [--sample-secs S] [--out DIR]`
//!
//! `cargo bench --bench soak -- --each-abuse SECS` runs each abuse alone instead, for SECS
//! seconds against a fresh broker beside a publisher and two subscribers, and prints a
//! table: the answers, the metric that counted them, the broker's RSS before, after and
//! at peak, and what the two subscribers lost.
//!
//! Defaults: 3 minutes, 200 events/s over 4 channels, 20 steady, 20 churning and 2 slow
//! subscribers, abuse on, a sample every 5 s, `target/soak/`. Exits 1 when a
//! well-behaved subscriber lost or repeated an event, an abuse got another answer than
//! documented, or a series grew after warm-up.

mod loadgen;
mod soakgen;

use std::time::{Duration, Instant};

use soakgen::clients::{self, Kind};
use soakgen::{abusers, series, Ctx, Plan};

/// Connections one address may hold unauthenticated in the soak's broker (the upgrade
/// flood goes past it from an address of its own).
const PER_ADDRESS: u32 = 100;

fn parse() -> Result<Plan, String> {
    let argv = loadgen::args::Argv::from_env();
    let number = |flag: &str, default: f64| -> Result<f64, String> {
        Ok(argv.number(flag)?.unwrap_or(default))
    };
    Ok(Plan {
        duration: Duration::from_secs_f64(number("--minutes", 3.0)?.clamp(0.5, 24.0 * 60.0) * 60.0),
        rate: number("--rate", 200.0)?.clamp(1.0, 100_000.0),
        channels: number("--channels", 4.0)?.clamp(1.0, 1000.0) as usize,
        steady: number("--steady", 20.0)?.clamp(0.0, 5000.0) as usize,
        churners: number("--churners", 20.0)?.clamp(0.0, 5000.0) as usize,
        slow: number("--slow", 2.0)?.clamp(0.0, 100.0) as usize,
        abuse: !argv.has("--no-abuse"),
        sample_every: Duration::from_secs_f64(number("--sample-secs", 5.0)?.clamp(0.5, 600.0)),
        out_dir: argv.value("--out").unwrap_or("target/soak").into(),
        each_abuse: argv
            .number("--each-abuse")?
            .map(|s| Duration::from_secs_f64(s.clamp(1.0, 3600.0))),
    })
}

/// Starts the release broker with the soak's configuration: the process, its pid and
/// address.
fn start_broker() -> Result<(loadgen::target::Running, u32, std::net::SocketAddr), String> {
    let broker = loadgen::target::spawn_broker_with(&soakgen::broker_config(PER_ADDRESS))?;
    let pid = *broker.pids.first().ok_or("the broker's pid is unknown")?;
    let addr = match &broker.protocol {
        loadgen::target::Protocol::Rustorium(nodes) => nodes.publisher(),
        loadgen::target::Protocol::Nats { .. } => return Err("not a rustorium broker".into()),
    };
    Ok((broker, pid, addr))
}

async fn soak(plan: Plan) -> Result<bool, String> {
    let (broker, pid, addr) = start_broker()?;
    let start = Instant::now();
    let ctx = Ctx::new(addr, start + plan.duration);
    // Warm-up: twice the resume window (history and parked subscriptions reach their
    // steady state), or a fifth of the run when that is longer.
    let warmup = (plan.duration.as_secs_f64() / 5.0).max(60.0);
    println!(
        "soak: broker pid {pid} on {addr}; {:.0} s, {} events/s over {} channels, {} steady, {} churning, {} slow subscribers, abuse {}",
        plan.duration.as_secs_f64(),
        plan.rate,
        plan.channels,
        plan.steady,
        plan.churners,
        plan.slow,
        if plan.abuse { "on" } else { "off" }
    );
    let sampler =
        tokio::task::spawn_local(series::sampler(ctx.clone(), pid, plan.sample_every, start));
    let mut subs = Vec::new();
    let kinds = [
        (Kind::Steady, plan.steady),
        (Kind::Churn, plan.churners),
        (Kind::Slow, plan.slow),
    ];
    let mut i = 0;
    for (kind, n) in kinds {
        for _ in 0..n {
            let task = clients::subscriber(ctx.clone(), i, kind, plan.channels);
            subs.push((kind, tokio::task::spawn_local(task)));
            i += 1;
        }
    }
    // Subscribers first, so the steady ones see every event from the first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publisher = tokio::task::spawn_local(clients::publisher(
        ctx.clone(),
        plan.channels,
        plan.rate,
        200,
    ));
    let mut abuse = Vec::new();
    if plan.abuse {
        for name in abusers::NAMES {
            abuse.push(tokio::task::spawn_local(abusers::run(
                ctx.clone(),
                name,
                [127, 0, 0, 9],
                PER_ADDRESS,
            )));
        }
    }
    let samples = sampler.await.map_err(|e| e.to_string())?;
    publisher.await.map_err(|e| e.to_string())?;
    for a in abuse {
        let _ = a.await;
    }
    let mut clean = true;
    println!(
        "\nsoak summary ({:.1} min under load)",
        plan.duration.as_secs_f64() / 60.0
    );
    for (kind, n) in kinds {
        let mut total = soakgen::check::Seq::default();
        for (k, task) in subs.iter_mut().filter(|(k, _)| *k == kind) {
            let _ = k;
            let seq = task.await.map_err(|e| e.to_string())?;
            total.seen += seq.seen;
            total.dups += seq.dups;
            total.lost += seq.lost;
        }
        if n == 0 {
            continue;
        }
        println!(
            "  {:<7} subscribers: {n:>4}, events received {:>9}, lost {}, duplicated {}",
            kind.name(),
            total.seen,
            total.lost,
            total.dups
        );
        clean &= total.lost == 0 && total.dups == 0;
    }
    let after = series::sample(&ctx, pid, start).await;
    println!("  counters:");
    for (name, n) in ctx.counts.borrow().iter() {
        println!("    {name:<40} {n}");
        if name.ends_with(".unexpected") || name.starts_with("publisher.refused") {
            clean = false;
        }
    }
    let mut flat = true;
    println!("  after warm-up ({warmup:.0} s), peak of the first half -> peak of the second half:");
    for f in series::judge(&samples, warmup) {
        println!(
            "    {:<12} {:>10.1} -> {:>10.1}  (slope {:+.1} per 10 min)  {}",
            f.name,
            f.first_peak,
            f.second_peak,
            f.slope_per_10min,
            match f.flat {
                Some(true) => "flat",
                Some(false) => "GREW",
                None => "not judged: too few samples after warm-up (run longer)",
            }
        );
        flat &= f.flat != Some(false);
    }
    println!(
        "  at the end: rss {:.1} MiB, fds {}, connections {}, parked {}, history {} events",
        after.rss_mib, after.fds, after.connections, after.parked, after.history_events
    );
    let title = format!(
        "rustorium-broker soak: {:.0} min, {} ev/s, {}+{}+{} subscribers{}",
        plan.duration.as_secs_f64() / 60.0,
        plan.rate,
        plan.steady,
        plan.churners,
        plan.slow,
        if plan.abuse { ", all abuses" } else { "" }
    );
    series::write(&plan.out_dir, &samples, warmup, &title)?;
    println!(
        "  wrote {0}/soak.csv and {0}/soak.svg",
        plan.out_dir.display()
    );
    drop(broker);
    Ok(clean && flat)
}

/// The metric that counts each abuse's answer.
fn metric_of(abuse: &str) -> &'static str {
    match abuse {
        "upgrade_flood" => "rustorium_rejections_total{reason=\"address_limit\"}",
        "ping_flood" => "rustorium_rejections_total{reason=\"control_flood\"}",
        "fragment_flood" => "rustorium_rejections_total{reason=\"fragment_flood\"}",
        "invalid_utf8" => "rustorium_rejections_total{reason=\"protocol_error\"}",
        "deep_json" => "rustorium_rejections_total{reason=\"invalid_request\"}",
        "sub_unsub_loop" => "rustorium_rejections_total{reason=\"flooding\"}",
        "bulk_publisher" => "rustorium_events_published_total",
        "garbage" => "rustorium_rejections_total{reason=\"invalid_token\"}",
        _ => "rustorium_closed_without_request_total",
    }
}

async fn scrape(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = soakgen::http(addr, "GET", "/metrics", &[], b"", Duration::from_secs(10))
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    soakgen::metric(&text, name).unwrap_or(0.0)
}

/// Each abuse alone against a fresh broker (see the module documentation).
async fn each_abuse(secs: Duration) -> Result<bool, String> {
    println!("| abuse | answered | other answer | metric (delta) | RSS before | after | peak | bystanders lost/dup |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut clean = true;
    for name in abusers::NAMES {
        let (broker, pid, addr) = start_broker()?;
        let start = Instant::now();
        let ctx = Ctx::new(addr, start + secs + Duration::from_secs(2));
        let subs: Vec<_> = (0..2)
            .map(|i| tokio::task::spawn_local(clients::subscriber(ctx.clone(), i, Kind::Steady, 1)))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let publisher = tokio::task::spawn_local(clients::publisher(ctx.clone(), 1, 50.0, 200));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = series::sample(&ctx, pid, start).await;
        let metric_before = scrape(addr, metric_of(name)).await;
        let abuse =
            tokio::task::spawn_local(abusers::run(ctx.clone(), name, [127, 0, 0, 9], PER_ADDRESS));
        let _ = abuse.await;
        publisher.await.map_err(|e| e.to_string())?;
        let (mut lost, mut dups) = (0, 0);
        for s in subs {
            let seq = s.await.map_err(|e| e.to_string())?;
            lost += seq.lost;
            dups += seq.dups;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = series::sample(&ctx, pid, start).await;
        let metric_after = scrape(addr, metric_of(name)).await;
        let peak = loadgen::report::peak_rss_kib(pid) as f64 / 1024.0;
        let answered = ctx.get(&format!("abuse.{name}.answered"));
        let other = ctx.get(&format!("abuse.{name}.unexpected"));
        println!(
            "| {name} | {answered} | {other} | `{}` +{:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {lost}/{dups} |",
            metric_of(name),
            metric_after - metric_before,
            before.rss_mib,
            after.rss_mib,
            peak
        );
        clean &= other == 0 && lost == 0 && dups == 0 && answered > 0;
        drop(broker);
    }
    Ok(clean)
}

fn main() {
    let plan = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let _ = loadgen::report::file_limit();
    let run = async move {
        match plan.each_abuse {
            Some(secs) => each_abuse(secs).await,
            None => soak(plan).await,
        }
    };
    match loadgen::block_on(run) {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            eprintln!("soak: FAILED (see the summary)");
            std::process::exit(1);
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}
