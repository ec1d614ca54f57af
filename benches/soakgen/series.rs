//! The soak's samples of the broker (resident memory, open descriptors, connections,
//! parked subscriptions, history), whether each stayed flat after warm-up, and the CSV and
//! SVG plot written at the end.

use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{http, metric, Ctx};

/// One sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Resident set, MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: f64,
    /// Open WebSocket connections.
    pub connections: f64,
    /// Parked subscriptions.
    pub parked: f64,
    /// Events in the history.
    pub history_events: f64,
    /// Bytes of history, MiB.
    pub history_mib: f64,
    /// Connections without a valid key yet.
    pub unauthenticated: f64,
}

/// Reads one series off a sample.
type Column = fn(&Sample) -> f64;

/// The columns of the CSV: name, value.
const COLUMNS: [(&str, Column); 7] = [
    ("rss_mib", |s| s.rss_mib),
    ("fds", |s| s.fds),
    ("connections", |s| s.connections),
    ("parked", |s| s.parked),
    ("history_events", |s| s.history_events),
    ("history_mib", |s| s.history_mib),
    ("unauthenticated", |s| s.unauthenticated),
];

fn fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0.0, |d| d.count() as f64)
}

fn rss_mib(pid: u32) -> f64 {
    crate::loadgen::report::rss_kib(pid) as f64 / 1024.0
}

/// Takes one sample of the broker `pid` at `ctx.addr`.
pub async fn sample(ctx: &Ctx, pid: u32, start: Instant) -> Sample {
    let text = http(
        ctx.addr,
        "GET",
        "/metrics",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .await
    .map(|(_, b)| b)
    .unwrap_or_default();
    let m = |name: &str| metric(&text, name).unwrap_or(f64::NAN);
    Sample {
        t: start.elapsed().as_secs_f64(),
        rss_mib: rss_mib(pid),
        fds: fds(pid),
        connections: m("rustorium_connections"),
        parked: m("rustorium_parked_subscriptions"),
        history_events: m("rustorium_history_events"),
        history_mib: m("rustorium_history_bytes") / (1024.0 * 1024.0),
        unauthenticated: m("rustorium_unauthenticated_connections"),
    }
}

/// Samples every `every` until the load ends (and once more after).
pub async fn sampler(ctx: Rc<Ctx>, pid: u32, every: Duration, start: Instant) -> Vec<Sample> {
    let mut out = Vec::new();
    loop {
        let s = sample(&ctx, pid, start).await;
        println!(
            "soak: t={:>6.0}s rss={:>7.1} MiB fds={:>5} conns={:>5} parked={:>5} history={:>8} ({:.1} MiB) unauth={}",
            s.t, s.rss_mib, s.fds, s.connections, s.parked, s.history_events, s.history_mib, s.unauthenticated
        );
        out.push(s);
        if ctx.over() {
            return out;
        }
        tokio::time::sleep(every).await;
    }
}

/// The verdict on one series after warm-up: the first and second half of the samples
/// after `warmup` seconds, their peaks, and whether the second stayed within the first's
/// peak plus `slack` (a fraction of it, plus `floor` units).
pub struct Flat {
    /// The series.
    pub name: &'static str,
    /// Peak of the first half after warm-up.
    pub first_peak: f64,
    /// Peak of the second half.
    pub second_peak: f64,
    /// Least-squares slope over the whole time after warm-up, per 10 minutes.
    pub slope_per_10min: f64,
    /// Whether it stayed flat; `None` when too few samples came after warm-up to say.
    pub flat: Option<bool>,
}

/// Samples after warm-up needed for a verdict (two in each half).
const MIN_JUDGED: usize = 4;

/// Judges the series that must stay flat: RSS, descriptors, parked, history.
pub fn judge(samples: &[Sample], warmup: f64) -> Vec<Flat> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    let half = after.len() / 2;
    let rules: [(&'static str, Column, f64, f64); 4] = [
        ("rss_mib", |s| s.rss_mib, 0.10, 16.0),
        ("fds", |s| s.fds, 0.10, 64.0),
        ("parked", |s| s.parked, 0.25, 64.0),
        ("history_mib", |s| s.history_mib, 0.10, 8.0),
    ];
    rules
        .iter()
        .map(|&(name, f, frac, floor)| {
            let peak = |xs: &[&Sample]| xs.iter().map(|s| f(s)).fold(0.0, f64::max);
            let (a, b) = after.split_at(half);
            let (first_peak, second_peak) = (peak(a), peak(b));
            Flat {
                name,
                first_peak,
                second_peak,
                slope_per_10min: slope(&after, f) * 600.0,
                flat: (after.len() >= MIN_JUDGED)
                    .then_some(second_peak <= first_peak * (1.0 + frac) + floor),
            }
        })
        .collect()
}

fn slope(xs: &[&Sample], f: Column) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mt = xs.iter().map(|s| s.t).sum::<f64>() / n;
    let my = xs.iter().map(|s| f(s)).sum::<f64>() / n;
    let cov: f64 = xs.iter().map(|s| (s.t - mt) * (f(s) - my)).sum();
    let var: f64 = xs.iter().map(|s| (s.t - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var
    }
}

/// Writes `soak.csv` and `soak.svg` into `dir`.
pub fn write(dir: &Path, samples: &[Sample], warmup: f64, title: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut csv = String::from("t_s");
    for (name, _) in COLUMNS {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push('\n');
    for s in samples {
        let _ = write!(csv, "{:.1}", s.t);
        for (_, f) in COLUMNS {
            let _ = write!(csv, ",{:.2}", f(s));
        }
        csv.push('\n');
    }
    let csv_path = dir.join("soak.csv");
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let svg_path = dir.join("soak.svg");
    std::fs::write(&svg_path, svg(samples, warmup, title))
        .map_err(|e| format!("{}: {e}", svg_path.display()))
}

/// Two panels over time: RSS (MiB) and open descriptors; the warm-up is shaded.
fn svg(samples: &[Sample], warmup: f64, title: &str) -> String {
    let (w, h, left, right, top, panel, gap) = (900.0, 560.0, 70.0, 20.0, 40.0, 220.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    let panels: [(&str, Column, &str); 2] = [
        ("resident memory (MiB)", |s| s.rss_mib, "#1f77b4"),
        ("open file descriptors", |s| s.fds, "#d62728"),
    ];
    for (i, (label, f, colour)) in panels.iter().enumerate() {
        let y0 = top + (panel + gap) * i as f64;
        let v_max = samples.iter().map(f).fold(1.0, f64::max) * 1.15;
        let y = |v: f64| y0 + panel - panel * v / v_max;
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{y0}\" width=\"{:.1}\" height=\"{panel}\" fill=\"#fafafa\" stroke=\"#999\"/>",
            w - left - right
        );
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{y0}\" width=\"{:.1}\" height=\"{panel}\" fill=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\">warm-up</text>",
            x(warmup.min(t_max)) - left,
            left + 4.0,
            y0 + 14.0
        );
        for k in 0..=4 {
            let v = v_max * k as f64 / 4.0;
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
                w - right,
                y(v),
                y(v),
                left - 6.0,
                y(v) + 4.0
            );
        }
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s))))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\" points=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\" font-size=\"13\">{label}</text>",
            points.join(" "),
            left + 70.0,
            y0 + 14.0
        );
    }
    let axis_y = top + (panel + gap) * 2.0 - gap + 18.0;
    for k in 0..=6 {
        let t = t_max * k as f64 / 6.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\">{:.0} min</text>",
            x(t),
            t / 60.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
