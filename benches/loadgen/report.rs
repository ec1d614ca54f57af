//! A run's figures, how they are printed, and the ratios of a race; plus the process
//! readings they need (RSS, peak RSS, CPU time, the open-file limit).

use std::time::Duration;

use super::publisher::Published;
use super::tally::Received;

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which broker.
    pub target: String,
    /// Which scenario.
    pub scenario: String,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Channels.
    pub channels: usize,
    /// Time to connect and subscribe every subscriber.
    pub connect_time: Duration,
    /// From the first publish to the last delivery.
    pub delivery_time: Duration,
    /// What the publisher did.
    pub published: Published,
    /// What the subscribers got.
    pub received: Received,
    /// Broker RSS (KiB) before any connection.
    pub rss_before: Option<u64>,
    /// Broker RSS once every subscriber is connected and subscribed.
    pub rss_idle: Option<u64>,
    /// Broker RSS after the idle hold (scenario D: heartbeats have run).
    pub rss_held: Option<u64>,
    /// Broker RSS after the last delivery.
    pub rss_after: Option<u64>,
    /// Broker peak RSS over its life (VmHWM).
    pub rss_peak: Option<u64>,
    /// Broker CPU seconds while publishing and delivering (a cluster: all nodes).
    pub cpu_broker: Option<f64>,
    /// A cluster's `redis-server` CPU seconds over the same span.
    pub cpu_redis: Option<f64>,
    /// Generator CPU seconds over the same span.
    pub cpu_generator: f64,
}

impl Report {
    /// Delivered events per second, from the first publish to the last delivery.
    pub fn delivered_per_sec(&self) -> f64 {
        let t = self.delivery_time.as_secs_f64();
        if t > 0.0 {
            self.received.received as f64 / t
        } else {
            0.0
        }
    }

    /// Broker memory per idle connection, KiB (after the idle hold).
    pub fn kib_per_connection(&self) -> Option<f64> {
        let (b, h) = (self.rss_before?, self.rss_held?);
        Some(h.saturating_sub(b) as f64 / self.subscribers.max(1) as f64)
    }

    /// Broker CPU microseconds per delivery received, over the publish and delivery span.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.cpu_broker?;
        (self.received.received > 0).then(|| cpu * 1e6 / self.received.received as f64)
    }

    /// Broker CPU microseconds per event published, over the publish and delivery span.
    pub fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.cpu_broker?;
        (self.published.events > 0).then(|| cpu * 1e6 / self.published.events as f64)
    }

    /// Published events per second, from the first publish to the last acknowledgement.
    pub fn published_per_sec(&self) -> f64 {
        let t = self.published.elapsed.as_secs_f64();
        if t > 0.0 {
            self.published.events as f64 / t
        } else {
            0.0
        }
    }

    /// Deliveries expected and not received.
    pub fn loss(&self) -> u64 {
        self.received
            .expected
            .saturating_sub(self.received.received)
    }

    /// Deliveries received beyond those expected: events that reached a subscriber they
    /// were not for (scenario F: another wallet).
    pub fn extra(&self) -> u64 {
        self.received
            .received
            .saturating_sub(self.received.expected)
    }

    /// Whether every promised delivery arrived once and in order, with no error, and
    /// nothing else arrived.
    pub fn clean(&self) -> bool {
        self.loss() == 0
            && self.extra() == 0
            && self.received.duplicates == 0
            && self.received.disorder == 0
            && self.received.strays == 0
            && self.received.errors == 0
            && self.published.error.is_none()
    }

    /// The report as aligned lines.
    pub fn render(&self) -> String {
        let r = &self.received;
        let kib = |v: Option<u64>| v.map_or("n/a".into(), |v| format!("{v} KiB"));
        let mut out = format!("== scenario {} on {} ==\n", self.scenario, self.target);
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<26}{v}\n"));
        line(
            "connections",
            format!(
                "{} over {} channel(s), connected in {:.2} s",
                self.subscribers,
                self.channels,
                self.connect_time.as_secs_f64()
            ),
        );
        line(
            "events published",
            format!(
                "{} in {:.2} s ({:.0}/s)",
                self.published.events,
                self.published.elapsed.as_secs_f64(),
                self.published_per_sec()
            ),
        );
        line(
            "deliveries",
            format!(
                "{} of {} expected (loss {}, extra {})",
                r.received,
                r.expected,
                self.loss(),
                self.extra()
            ),
        );
        line(
            "duplicates / disorder",
            format!("{} / {} (strays {})", r.duplicates, r.disorder, r.strays),
        );
        line("delivered/s", format!("{:.0}", self.delivered_per_sec()));
        line(
            "latency p50/p99/p99.9/max",
            format!(
                "{:.0} / {:.0} / {:.0} / {:.0} µs",
                r.latency_us[0], r.latency_us[1], r.latency_us[2], r.latency_us[3]
            ),
        );
        line("broker RSS before", kib(self.rss_before));
        line("broker RSS connected", kib(self.rss_idle));
        line("broker RSS after hold", kib(self.rss_held));
        line("broker RSS after run", kib(self.rss_after));
        line("broker peak RSS", kib(self.rss_peak));
        line(
            "idle memory/connection",
            self.kib_per_connection()
                .map_or("n/a".into(), |k| format!("{k:.1} KiB")),
        );
        line(
            "CPU broker / generator",
            format!(
                "{} / {:.2} s",
                self.cpu_broker.map_or("n/a".into(), |c| format!("{c:.2}")),
                self.cpu_generator
            ),
        );
        line(
            "broker CPU/delivery",
            self.cpu_us_per_delivery()
                .map_or("n/a".into(), |c| format!("{c:.2} µs")),
        );
        line(
            "broker CPU/event",
            self.cpu_us_per_event()
                .map_or("n/a".into(), |c| format!("{c:.2} µs")),
        );
        if let Some(c) = self.cpu_redis {
            let per_event = (self.published.events > 0)
                .then(|| c * 1e6 / self.published.events as f64)
                .map_or("n/a".into(), |u| format!("{u:.2} µs"));
            line("redis CPU / per event", format!("{c:.2} s / {per_event}"));
        }
        if let Some(e) = &self.published.error {
            line("publisher error", e.clone());
        }
        if r.errors > 0 {
            line(
                "subscriber errors",
                format!(
                    "{} (first: {})",
                    r.errors,
                    r.first_error.clone().unwrap_or_default()
                ),
            );
        }
        line("clean", self.clean().to_string());
        out
    }
}

/// The ratios of a race, ours over theirs, for the figures the targets are stated in.
pub fn ratios(ours: &Report, theirs: &Report) -> String {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "n/a".into()
        }
    };
    let mut out = format!(
        "== race {}: {} / {} ==\n",
        ours.scenario, ours.target, theirs.target
    );
    out.push_str(&format!(
        "delivered/s               {:.0} / {:.0} = {}\n",
        ours.delivered_per_sec(),
        theirs.delivered_per_sec(),
        ratio(ours.delivered_per_sec(), theirs.delivered_per_sec())
    ));
    out.push_str(&format!(
        "latency p99               {:.0} / {:.0} µs = {}\n",
        ours.received.latency_us[1],
        theirs.received.latency_us[1],
        ratio(ours.received.latency_us[1], theirs.received.latency_us[1])
    ));
    if let (Some(a), Some(b)) = (ours.kib_per_connection(), theirs.kib_per_connection()) {
        out.push_str(&format!(
            "memory/connection         {a:.1} / {b:.1} KiB = {}\n",
            ratio(a, b)
        ));
    }
    if let (Some(a), Some(b)) = (ours.rss_peak, theirs.rss_peak) {
        out.push_str(&format!(
            "peak RSS                  {a} / {b} KiB = {}\n",
            ratio(a as f64, b as f64)
        ));
    }
    if let (Some(a), Some(b)) = (ours.cpu_broker, theirs.cpu_broker) {
        out.push_str(&format!(
            "broker CPU                {a:.2} / {b:.2} s = {}\n",
            ratio(a, b)
        ));
    }
    if let (Some(a), Some(b)) = (ours.cpu_us_per_delivery(), theirs.cpu_us_per_delivery()) {
        out.push_str(&format!(
            "broker CPU/delivery       {a:.2} / {b:.2} µs = {}\n",
            ratio(a, b)
        ));
    }
    if let (Some(a), Some(b)) = (ours.cpu_us_per_event(), theirs.cpu_us_per_event()) {
        out.push_str(&format!(
            "broker CPU/published      {a:.2} / {b:.2} µs = {}\n",
            ratio(a, b)
        ));
    }
    out.push_str(&format!(
        "loss                      {} / {}\n",
        ours.loss(),
        theirs.loss()
    ));
    out
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The resident set of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The peak resident set of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// User plus system CPU time of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// This process's open-file limit after raising it as far as allowed.
pub fn file_limit() -> u64 {
    rustorium_broker::server::raise_file_limit()
}
