//! The table: rows, their ratios against the baseline of the same run,
//! memory readings, and the JSON copy under `target/bench/`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// Whether the row's ratio is synckit ÷ baseline of a throughput (higher is
/// better) or of a latency (lower is better).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// synckit's throughput at least this fraction of the baseline's.
    AtLeast(f64),
    /// synckit's latency at most this multiple of the baseline's.
    AtMost(f64),
    /// Reported, no target.
    Reported,
}

/// One line of the table.
#[derive(Debug, Serialize)]
pub struct Row {
    pub measurement: String,
    pub synckit: String,
    pub baseline: String,
    /// synckit ÷ baseline (a throughput or a latency, as `goal` says).
    pub ratio: f64,
    pub goal: Goal,
    /// The raw figures, for comparing runs.
    pub figures: Value,
}

impl Row {
    /// Whether the target is met (`None` for reported rows).
    pub fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::AtLeast(t) => Some(self.ratio >= t),
            Goal::AtMost(t) => Some(self.ratio <= t),
            Goal::Reported => None,
        }
    }

    fn target(&self) -> String {
        match self.goal {
            Goal::AtLeast(t) => format!("≥ {t}×"),
            Goal::AtMost(t) => format!("≤ {t}×"),
            Goal::Reported => "reported".to_owned(),
        }
    }
}

/// The rows of one run.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a row and prints it at once (a long run shows progress).
    pub fn push(&mut self, row: Row) {
        if self.rows.is_empty() {
            println!("| measurement | synckit | baseline, same run | ratio | target | met |");
            println!("|---|---|---|---|---|---|");
        }
        println!(
            "| {} | {} | {} | {:.2} | {} | {} |",
            row.measurement,
            row.synckit,
            row.baseline,
            row.ratio,
            row.target(),
            match row.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
        self.rows.push(row);
    }

    /// Writes the run as JSON to `target/bench/<unix time>.json` and
    /// `target/bench/latest.json`; returns the first path.
    pub fn write_json(&self, machine: Value) -> std::io::Result<PathBuf> {
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("serialisable");
                v["met"] = serde_json::json!(r.met());
                v
            })
            .collect();
        let doc = serde_json::json!({
            "unix_time": now,
            "peak_rss_bytes": peak_rss(),
            "commit": git_commit(),
            "machine": machine,
            "rows": rows,
        });
        let text = serde_json::to_string_pretty(&doc).expect("serialisable");
        let path = dir.join(format!("{now}.json"));
        std::fs::write(&path, &text)?;
        std::fs::write(dir.join("latest.json"), &text)?;
        Ok(path)
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The process's resident set size now, in bytes (Linux; 0 elsewhere).
pub fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// The process's peak resident set size, in bytes (Linux; 0 elsewhere).
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// A `/proc/self/status` figure in KiB.
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Bytes in MiB (KiB below one MiB), for the table.
pub fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// Milliseconds, for the table.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Events per second, for the table.
pub fn rate(events_per_second: f64) -> String {
    let n = events_per_second.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} ev/s")
}

/// What the machine is: cores, memory, kernel, and the server's version.
pub fn machine(server_version: &str) -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "cpus": cpus,
        "cpu_model": cpu_model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0).round(),
        "kernel": kernel,
        "server": server_version,
    })
}

/// The rates one side of a throughput row measured, round by round, each
/// with what else its round recorded (`T`: a p99 latency, or nothing). The
/// row shows the best round (interference from the rest of the machine
/// lowers a rate, never raises it); the JSON keeps every rate.
#[derive(Debug)]
pub struct Rates<T = ()>(Vec<(f64, T)>);

impl<T> Default for Rates<T> {
    fn default() -> Self {
        Rates(Vec::new())
    }
}

impl Rates {
    /// Records one round's rate, and returns it.
    pub fn push(&mut self, rate: f64) -> f64 {
        self.0.push((rate, ()));
        rate
    }
}

impl<T: Clone + Default> Rates<T> {
    /// Records one round's rate with what else the round recorded.
    pub fn push_with(&mut self, (rate, with): (f64, T)) {
        self.0.push((rate, with));
    }

    /// The best round's rate (0 before any).
    pub fn best(&self) -> f64 {
        self.best_round().0
    }

    /// The best round: its rate and what else it recorded.
    pub fn best_round(&self) -> (f64, T) {
        self.0
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .cloned()
            .unwrap_or_default()
    }

    /// Every round's rate, rounded to whole events per second, in the order
    /// run.
    pub fn all(&self) -> Vec<u64> {
        self.0.iter().map(|(r, _)| r.round() as u64).collect()
    }
}

/// Events per second of `load`, which loads `events` events and returns
/// the sum of their quantities.
pub async fn measure_load(events: u64, load: impl Future<Output = u64>) -> f64 {
    let started = Instant::now();
    let quantities = load.await;
    let elapsed = started.elapsed();
    assert!(quantities >= events, "every event loaded");
    events as f64 / elapsed.as_secs_f64()
}

/// The peak memory of one load, measured in a process of its own (this
/// program, run with `--probe <probe...>`): its peak resident set less its
/// resident set before the load. A fresh process starts with nothing held
/// back by the allocator, so the peak shows what the load needs; and the
/// rates, measured in this process, pay for no counting allocator.
pub fn probe_peak_rss(probe: &[&str]) -> u64 {
    let exe = std::env::current_exe().expect("the bench program");
    let out = std::process::Command::new(exe)
        .arg("--probe")
        .args(probe)
        .output()
        .expect("run the memory probe");
    assert!(
        out.status.success(),
        "memory probe {probe:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the probe prints bytes")
}
