//! The result document (versioned JSON), its markdown summary, and where
//! the files go.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hist::IntervalPoint;
use crate::procfs::{GitInfo, Machine};
use crate::scenario::Scenario;
use crate::targets::{OpStats, Verdict};
use crate::units::{format_ns, Rate};
use crate::workers::CpuUse;

/// `schema` of a run's result document.
pub const RESULT_SCHEMA: &str = "session-engine/loadgen-result";
/// Its version; bumped on any incompatible change.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// A run's result: everything measured and everything needed to repeat it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`RESULT_SCHEMA`].
    pub schema: String,
    /// [`RESULT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The loadgen's version.
    pub loadgen_version: String,
    /// Start of the load, UTC (RFC 3339).
    pub started_at: String,
    /// Start of the load, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The command line.
    pub command: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// The code.
    pub git: GitInfo,
    /// The resolved scenario (seed included: rerun it with `--scenario result.json`'s values).
    pub scenario: Scenario,
    /// `open-loop` or `closed-loop`.
    pub mode: String,
    /// Offered rate (open loop).
    pub rate_target_ops_per_s: Option<f64>,
    /// Point operations per second, measured.
    pub throughput_ops_per_s: f64,
    /// Open loop: the load kept its schedule (throughput ≥ 95% of the target
    /// and nothing left unsent).
    pub rate_held: Option<bool>,
    /// Seconds measured.
    pub measured_s: f64,
    /// Seconds of warm-up excluded.
    pub warmup_s: f64,
    /// Operations issued by all clients, warm-up included.
    pub ops_issued: u64,
    /// Open loop: scheduled operations never issued (the backlog outlived the grace).
    pub ops_unsent: u64,
    /// Deletes skipped (the client had no churn session left).
    pub deletes_skipped: u64,
    /// Figures per operation kind, after the warm-up.
    pub ops: BTreeMap<String, OpStats>,
    /// All point operations together.
    pub all_point_ops: OpStats,
    /// Median over the measured intervals of each interval's p99 (all point
    /// operations): the typical second, which a few disturbed seconds on a
    /// shared machine do not move (the whole-run p99 above is what verdicts use).
    pub interval_p99_median_ns: u64,
    /// Measured intervals whose p99 exceeded ten times that median.
    pub intervals_disturbed: usize,
    /// Measured intervals.
    pub intervals_measured: usize,
    /// The populate phase.
    pub populate: PopulateReport,
    /// Memory.
    pub memory: MemoryReport,
    /// Expiry (embedded engine only).
    pub expiry: Option<ExpiryReport>,
    /// Engine counters at the end (embedded engine only).
    pub engine: Option<EngineReport>,
    /// CPU use and the loadgen's own cost.
    pub cpu: CpuReport,
    /// The reference peer, measured in the same process before and after the load.
    pub peer: PeerReport,
    /// Per-interval points (warm-up included, flagged).
    pub timeline: Vec<IntervalPoint>,
    /// The tiers checked.
    pub targets: Vec<String>,
    /// One row per bound.
    pub verdicts: Vec<Verdict>,
    /// True if no bound failed.
    pub passed: bool,
    /// The workers got less than [`DISTURBED_BELOW`](crate::limits::DISTURBED_BELOW) of their cores: the
    /// figures (tails above all) say more about the machine than the backend.
    pub disturbed: bool,
    /// The files written beside this one.
    pub files: Files,
}

/// The populate phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PopulateReport {
    /// Sessions created.
    pub sessions: usize,
    /// Seconds it took.
    pub wall_s: f64,
    /// Creates per second (closed loop, all workers).
    pub creates_per_s: f64,
    /// Create latency while populating.
    pub create: OpStats,
}

/// Memory, from the process's resident set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    /// RSS before populating.
    pub rss_before_bytes: Option<u64>,
    /// RSS after populating.
    pub rss_after_populate_bytes: Option<u64>,
    /// RSS at the end of the load.
    pub rss_end_bytes: Option<u64>,
    /// (RSS after − before) / sessions.
    pub bytes_per_session: Option<f64>,
    /// How it was measured.
    pub method: String,
}

/// How long past their deadline expired sessions were reclaimed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExpiryReport {
    /// Sessions the listener heard expire.
    pub expired: u64,
    /// Median lag, ms (engine clock resolution: 1 ms).
    pub lag_ms_p50: u64,
    /// 99th percentile lag, ms.
    pub lag_ms_p99: u64,
    /// Largest lag, ms.
    pub lag_ms_max: u64,
    /// The engine's sweep interval, ms (the lag's expected ceiling).
    pub sweep_interval_ms: u64,
}

/// Engine counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineReport {
    /// Shards.
    pub shards: usize,
    /// Sessions held at the end.
    pub sessions_end: usize,
    /// Created since open.
    pub created_total: u64,
    /// Deleted since open.
    pub deleted_total: u64,
    /// Expired since open.
    pub expired_total: u64,
}

/// CPU: who used it, and what the loadgen itself costs per operation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// Threads' CPU seconds during the load.
    #[serde(flatten)]
    pub usage: CpuUse,
    /// Process CPU / wall: cores the run kept busy.
    pub cores_used: Option<f64>,
    /// Cost of one `Instant::now()`, ns (the loop reads it once per operation).
    pub timer_ns: f64,
    /// Worker CPU per operation of the loadgen alone (the same loop, mix and
    /// keys against the null backend, closed loop, one thread).
    pub loadgen_ns_per_op: f64,
    /// Closed loop only: worker CPU per operation in this run.
    pub worker_ns_per_op: Option<f64>,
    /// Closed loop only: `loadgen_ns_per_op / worker_ns_per_op`; the rest of
    /// the workers' CPU is the engine.
    pub loadgen_share: Option<f64>,
    /// CPU the worker threads got / what they asked for (wall × workers).
    /// Workers never block (they spin while waiting), so an undisturbed run
    /// is near 1.0; below [`DISTURBED_BELOW`](crate::limits::DISTURBED_BELOW) other work took their cores.
    pub workers_cpu_share: f64,
}

/// The reference peer: the same mix and keys, closed loop on one thread,
/// against a plain sharded map, in the same process as the load. Ratios to it
/// cancel most of what a busy or slow machine does to both.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerReport {
    /// What the peer is.
    pub store: String,
    /// Threads it ran on.
    pub threads: usize,
    /// Runs (before and after the load).
    pub runs: u32,
    /// Seconds per run.
    pub seconds_each: f64,
    /// CPU per operation, loop included, ns.
    pub cpu_ns_per_op: f64,
    /// Service times per kind.
    pub ops: BTreeMap<String, OpStats>,
    /// All point operations.
    pub all_point_ops: OpStats,
}

/// Paths of the files of one run, relative to the result directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Files {
    /// This document.
    pub json: String,
    /// The markdown summary.
    pub markdown: String,
    /// The latency-by-percentile plot.
    pub plot_svg: String,
    /// The `HdrHistogram` interval log.
    pub interval_log: String,
}

impl Files {
    /// The standard names.
    #[must_use]
    pub fn standard() -> Self {
        Self {
            json: "result.json".into(),
            markdown: "summary.md".into(),
            plot_svg: "latency.svg".into(),
            interval_log: "latency.hlog".into(),
        }
    }
}

impl Report {
    /// Reads a result document, checking its schema.
    ///
    /// # Errors
    /// If it cannot be read or is not a version this loadgen understands.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a loadgen result: {e}", path.display()))?;
        anyhow::ensure!(
            report.schema == RESULT_SCHEMA && report.schema_version == RESULT_SCHEMA_VERSION,
            "{}: schema {} v{} (this loadgen reads {RESULT_SCHEMA} v{RESULT_SCHEMA_VERSION})",
            path.display(),
            report.schema,
            report.schema_version
        );
        Ok(report)
    }

    /// The markdown summary.
    #[must_use]
    #[allow(clippy::too_many_lines)] // one document, top to bottom
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let s = &self.scenario;
        let _ = writeln!(md, "# Load run `{}`: {verdict}\n", s.name);
        let _ = writeln!(md, "- command: `{}`", self.command.join(" "));
        let _ = writeln!(md, "- date: {} (UTC)", self.started_at);
        let _ = writeln!(
            md,
            "- machine: {} cores, {}, {} GiB, {}",
            self.machine.cores,
            self.machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.machine.memory_bytes.map_or(0, |b| b >> 30),
            self.machine.os
        );
        let _ = writeln!(
            md,
            "- code: {}{}",
            self.git
                .commit
                .as_deref()
                .map_or("unknown commit", |c| &c[..c.len().min(12)]),
            if self.git.dirty == Some(true) {
                " (with uncommitted changes)"
            } else {
                ""
            }
        );
        let load = match s.rate {
            Rate::Max => "closed loop (peak throughput; latencies are service times)".to_owned(),
            Rate::PerSec(r) => format!(
                "open loop at {} ops/s (latency from each operation's intended start)",
                thousands(r)
            ),
        };
        let _ = writeln!(
            md,
            "- scenario: {} live sessions, {load}, {} workers / {} clients, keys {}, {} B metadata, population timeout {}, churn timeout {}, {} list pages/s of {}, seed {}",
            thousands_u(s.sessions as u64),
            s.workers,
            s.clients,
            s.keys,
            s.metadata_bytes,
            s.timeout,
            s.churn_timeout,
            s.list.rate_per_s,
            thousands_u(s.list.page as u64),
            s.seed
        );
        let _ = writeln!(
            md,
            "- backend: {}{}",
            s.backend,
            s.engine.data_dir.as_ref().map_or(String::new(), |d| format!(
                ", data dir {}, durability {}",
                d.display(),
                s.engine.durability
            ))
        );
        if self.disturbed {
            let _ = writeln!(
                md,
                "\n**Disturbed run**: the workers got {:.0}% of their cores (other work on the machine took the rest, or the backend blocked them, as fsync-per-write durability does); the tail latencies reflect that.",
                self.cpu.workers_cpu_share * 100.0
            );
        }
        let _ = writeln!(md, "\n## Figures\n");
        let held = match self.rate_held {
            Some(true) => " (rate held)".to_owned(),
            Some(false) => " (**rate not held**: the backend or the loadgen fell behind)".to_owned(),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "- throughput: **{} ops/s**{held} over {:.1} s measured after {:.1} s warm-up; {} ops issued, {} unsent",
            thousands(self.throughput_ops_per_s),
            self.measured_s,
            self.warmup_s,
            thousands_u(self.ops_issued),
            thousands_u(self.ops_unsent)
        );
        let _ = writeln!(
            md,
            "- typical second: median of the per-second p99 {} ({} of {} measured seconds had a p99 above ten times that)",
            format_ns(self.interval_p99_median_ns),
            self.intervals_disturbed,
            self.intervals_measured
        );
        if let Some(bytes) = self.memory.bytes_per_session {
            let _ = writeln!(
                md,
                "- memory: **{bytes:.0} bytes per session** ({})",
                self.memory.method
            );
        }
        let _ = writeln!(
            md,
            "- populate: {} sessions in {:.2} s ({} creates/s, create p99 {})",
            thousands_u(self.populate.sessions as u64),
            self.populate.wall_s,
            thousands(self.populate.creates_per_s),
            format_ns(self.populate.create.p99_ns)
        );
        if let Some(e) = &self.expiry {
            let _ = writeln!(
                md,
                "- expiry: {} sessions expired under load; lag past deadline p50 {} ms, **p99 {} ms**, max {} ms (sweep interval {} ms)",
                thousands_u(e.expired),
                e.lag_ms_p50,
                e.lag_ms_p99,
                e.lag_ms_max,
                e.sweep_interval_ms
            );
        }
        let c = &self.cpu;
        let _ = writeln!(
            md,
            "- CPU: workers {:.2} s ({:.0}% of their cores{}), lister {:.2} s, sweeper {}, process {} over {:.1} s wall ({} cores busy)",
            c.usage.workers_s,
            c.workers_cpu_share * 100.0,
            if c.workers_cpu_share < crate::limits::DISTURBED_BELOW { ": **disturbed run**" } else { "" },
            c.usage.lister_s,
            c.usage.sweeper_s.map_or("n/a".into(), |v| format!("{v:.2} s")),
            c.usage.process_s.map_or("n/a".into(), |v| format!("{v:.2} s")),
            c.usage.wall_s,
            c.cores_used.map_or("n/a".into(), |v| format!("{v:.2}"))
        );
        let share = match (c.worker_ns_per_op, c.loadgen_share) {
            (Some(per_op), Some(share)) => format!(
                "; workers spent {per_op:.0} ns of CPU per operation, so the loadgen is {:.0}% of the workers' CPU and the engine the rest",
                share * 100.0
            ),
            _ => "; open-loop workers spin between scheduled operations, so their CPU is not a cost figure (run `--rate max` for the engine's share)".into(),
        };
        let _ = writeln!(
            md,
            "- loadgen cost: {:.0} ns per operation (null backend), clock read {:.0} ns{share}",
            c.loadgen_ns_per_op, c.timer_ns
        );
        let p = &self.peer;
        let engine_vs_peer = match c.worker_ns_per_op {
            Some(per_op) => format!(
                "; the engine's workers here: {per_op:.0} ns per operation, **{:.2}x the peer**",
                per_op / p.cpu_ns_per_op.max(1e-9)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "- reference peer ({}; same mix and keys, closed loop, {} thread, {} x {:.1} s around the load): {:.0} ns CPU per operation, p50 {}, p99 {}{engine_vs_peer}",
            p.store,
            p.threads,
            p.runs,
            p.seconds_each,
            p.cpu_ns_per_op,
            format_ns(p.all_point_ops.p50_ns),
            format_ns(p.all_point_ops.p99_ns)
        );
        let _ = writeln!(md, "\n## Latency by operation\n");
        let _ = writeln!(
            md,
            "| op | count | ops/s | p50 | p90 | p99 | p99.9 | p99.99 | max | errors |"
        );
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let rows = self
            .ops
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(std::iter::once(("all point ops", &self.all_point_ops)));
        for (name, o) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands_u(o.count),
                thousands(o.throughput_ops_per_s),
                format_ns(o.p50_ns),
                format_ns(o.p90_ns),
                format_ns(o.p99_ns),
                format_ns(o.p999_ns),
                format_ns(o.p9999_ns),
                format_ns(o.max_ns),
                o.errors
            );
        }
        let _ = writeln!(md, "\n## Verdict ({})\n", self.targets.join(", "));
        let _ = writeln!(md, "| tier | op | bound | limit | measured | margin | verdict |");
        let _ = writeln!(md, "| --- | --- | --- | ---: | ---: | ---: | --- |");
        for v in &self.verdicts {
            let status = match v.status {
                crate::targets::Status::Pass => "pass".to_owned(),
                crate::targets::Status::Fail => format!("**FAIL** {}", v.note),
                crate::targets::Status::NotRun => format!("n/a ({})", v.note),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {status} |",
                v.tier,
                v.subject,
                v.bound,
                v.limit,
                v.measured,
                v.margin.map_or("-".into(), |m| format!("{m:.1}x"))
            );
        }
        let _ = writeln!(
            md,
            "\nFiles: [{}]({}), [{}]({}) (latency by percentile), [{}]({}) (HdrHistogram interval log, ns; tags per op).",
            self.files.json,
            self.files.json,
            self.files.plot_svg,
            self.files.plot_svg,
            self.files.interval_log,
            self.files.interval_log
        );
        md
    }
}

/// `1234567.8` as `1,234,568`.
#[must_use]
pub fn thousands(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return format!("{value}");
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    thousands_u(value.round() as u64)
}

/// `1234567` as `1,234,567`.
#[must_use]
pub fn thousands_u(value: u64) -> String {
    let digits = value.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

/// RFC 3339 UTC text for a time (second precision).
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("day of month");
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("month");
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fresh directory name under `root` for a run of `scenario` started at `t`.
#[must_use]
pub fn default_out_dir(root: &Path, scenario: &str, t: SystemTime) -> PathBuf {
    let stamp: String = rfc3339(t).chars().filter(char::is_ascii_alphanumeric).collect();
    root.join(format!("{scenario}-{stamp}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_and_thousands_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(thousands_u(1_234_567), "1,234,567");
        assert_eq!(thousands_u(999), "999");
        assert_eq!(thousands(200_000.4), "200,000");
    }
}
