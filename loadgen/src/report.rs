//! The result document (versioned JSON) and its markdown summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::collect::IntervalPoint;
use crate::procfs::{GitInfo, Machine};
use crate::scenario::Scenario;
use crate::slices::SliceStats;
use crate::targets::{OpStats, RunVerdict, Status, Verdict};
use crate::units::{format_ns, Rate};
use crate::workers::CpuUse;

/// `schema` of a run's result document.
pub const RESULT_SCHEMA: &str = "session-engine/loadgen-result";
/// Its version; bumped on any incompatible change (2: slices with the
/// reference peer, verdicts on judged slices).
pub const RESULT_SCHEMA_VERSION: u32 = 2;

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
    /// The resolved scenario (seed included).
    pub scenario: Scenario,
    /// `open-loop` or `closed-loop`.
    pub mode: String,
    /// Offered rate (open loop), each side during its slices.
    pub rate_target_ops_per_s: Option<f64>,
    /// The backend's point operations per second over its measured slices.
    pub throughput_ops_per_s: f64,
    /// Seconds of the backend's measured slices that `throughput_ops_per_s`
    /// is over: those up to its point clients' end (with `--ops`, they can
    /// end before the measured time does).
    #[serde(default)]
    pub throughput_over_s: f64,
    /// Open loop: the backend kept its schedule in its undisturbed slices
    /// (95% of the point operations due in them completed within their
    /// slice, and nothing left unsent).
    pub rate_held: Option<bool>,
    /// Seconds of the measured window (both sides; each had half).
    pub measured_s: f64,
    /// Seconds of warm-up excluded.
    pub warmup_s: f64,
    /// Operations the backend's clients issued, warm-up included.
    pub ops_issued: u64,
    /// Open loop: the backend's scheduled operations never issued.
    pub ops_unsent: u64,
    /// Deletes skipped (the client had no churn session left).
    pub deletes_skipped: u64,
    /// The backend's figures per operation kind, every measured slice: what
    /// the run measured, disturbances included.
    pub ops: BTreeMap<String, OpStats>,
    /// The backend's point operations together, every measured slice.
    pub all_point_ops: OpStats,
    /// The reference peer, driven in the other slices.
    pub peer: Option<PeerReport>,
    /// What the verdict judged.
    pub judged: JudgedReport,
    /// The slices: how many, which the machine disturbed.
    pub slices: SlicesReport,
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
    /// The backend's per-interval points (warm-up included, flagged).
    pub timeline: Vec<IntervalPoint>,
    /// The tiers checked.
    pub targets: Vec<String>,
    /// One row per bound.
    pub verdicts: Vec<Verdict>,
    /// The verdict.
    pub verdict: RunVerdict,
    /// True if the verdict is a pass.
    pub passed: bool,
    /// The attempts before this one, all inconclusive (`--attempts`): the
    /// figures above are this attempt's alone.
    #[serde(default)]
    pub earlier_attempts: Vec<EarlierAttempt>,
    /// The files written beside this one.
    pub files: Files,
}

/// An attempt of `loadgen run` that was inconclusive and run again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlierAttempt {
    /// Start of its load, UTC (RFC 3339).
    pub started_at: String,
    /// Share of its measured slices judged (the lower side's; as
    /// [`SlicesReport::judged_share`]).
    pub judged_share: f64,
    /// Why it was inconclusive.
    pub reason: String,
}

impl EarlierAttempt {
    /// What is kept of an inconclusive attempt.
    #[must_use]
    pub fn of(report: &Report) -> Self {
        Self {
            started_at: report.started_at.clone(),
            judged_share: report.slices.judged_share,
            reason: crate::targets::inconclusive_reason(&report.verdicts, report.slices.judged_share),
        }
    }

    /// One line per earlier attempt, for the summaries; empty if none.
    #[must_use]
    pub fn lines(attempts: &[Self]) -> String {
        let total = attempts.len() + 1;
        attempts
            .iter()
            .enumerate()
            .fold(String::new(), |mut out, (i, a)| {
                let _ = writeln!(
                    out,
                    "attempt {} of {total} (load started {}) was inconclusive: {}; run again",
                    i + 1,
                    a.started_at,
                    a.reason
                );
                out
            })
    }
}

/// The reference peer's figures over its measured slices.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerReport {
    /// What the peer is.
    pub store: String,
    /// Point operations per second over its measured slices.
    pub throughput_ops_per_s: f64,
    /// Per kind, every measured slice.
    pub ops: BTreeMap<String, OpStats>,
    /// Its point operations together.
    pub all_point_ops: OpStats,
}

/// The figures the verdict judged: each side over its judged slices.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JudgedReport {
    /// The backend, per kind.
    pub backend: BTreeMap<String, OpStats>,
    /// The peer, per kind.
    pub peer: BTreeMap<String, OpStats>,
    /// The typical slice's median per kind (the median of the backend's
    /// judged slices' medians), ns.
    pub typical_p50_ns: BTreeMap<String, u64>,
    /// The backend's point operations per second over its undisturbed
    /// slices (reported; the rate verdict judges the operations due in
    /// them, not this).
    pub throughput_ops_per_s: Option<f64>,
}

/// One side's slices.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SideSlices {
    /// Measured (after the warm-up).
    pub measured: u64,
    /// Judged.
    pub judged: u64,
    /// Disturbed by the machine (judged or set aside).
    pub disturbed: u64,
    /// Set aside: disturbed, and the disturbance explains them.
    pub set_aside: u64,
    /// Time the machine took from its clients over the measured slices, ms.
    pub taken_ms: f64,
    /// The longest single gap, ms.
    pub gap_max_ms: f64,
    /// Of the measured, those after its point clients ended (with
    /// `--ops`): idle, so judged whatever the machine did, and left out of
    /// the judged share.
    #[serde(default)]
    pub idle_after: u64,
}

/// The slices of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SlicesReport {
    /// Slice length, ms.
    pub slice_ms: f64,
    /// The backend's.
    pub backend: SideSlices,
    /// The peer's.
    pub peer: Option<SideSlices>,
    /// Judged / measured, the lower of the two sides, the slices after the
    /// point clients ended (`idle_after`) left out of both.
    pub judged_share: f64,
    /// Steal time the hypervisor reported over the load, all CPUs, ms.
    pub steal_ms: Option<f64>,
    /// Every slice, warm-up included.
    pub list: Vec<SliceStats>,
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
    /// RSS before populating the backend.
    pub rss_before_bytes: Option<u64>,
    /// RSS after populating it.
    pub rss_after_populate_bytes: Option<u64>,
    /// RSS at the end of the load.
    pub rss_end_bytes: Option<u64>,
    /// (RSS after − before) / sessions, for a backend in this process only
    /// (the engine, the peer): `None` against Redis or the null backend.
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
    /// Closed loop only: the backend's workers' CPU per operation.
    pub worker_ns_per_op: Option<f64>,
    /// Closed loop only: the peer's workers' CPU per operation.
    pub peer_worker_ns_per_op: Option<f64>,
    /// Closed loop only: `loadgen_ns_per_op / worker_ns_per_op`; the rest of
    /// the workers' CPU is the backend.
    pub loadgen_share: Option<f64>,
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
    /// Throughput, p50 and p99 per second, disturbed seconds marked.
    pub timeline_svg: String,
    /// The `HdrHistogram` interval log.
    pub interval_log: String,
    /// One `HdrHistogram` percentile distribution per operation kind.
    pub hgrm: Vec<String>,
}

impl Files {
    /// The standard names, with one `.hgrm` per kind in `kinds`.
    #[must_use]
    pub fn standard<'a>(kinds: impl Iterator<Item = &'a str>) -> Self {
        Self {
            json: "result.json".into(),
            markdown: "summary.md".into(),
            plot_svg: "latency.svg".into(),
            timeline_svg: "timeline.svg".into(),
            interval_log: "latency.hlog".into(),
            hgrm: kinds.map(|k| format!("{k}.hgrm")).collect(),
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
        let head: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
        anyhow::ensure!(
            head["schema"] == RESULT_SCHEMA && head["schema_version"] == RESULT_SCHEMA_VERSION,
            "{}: schema {} v{} (this loadgen reads {RESULT_SCHEMA} v{RESULT_SCHEMA_VERSION})",
            path.display(),
            head["schema"],
            head["schema_version"]
        );
        serde_json::from_value(head)
            .map_err(|e| anyhow::anyhow!("{} is not a loadgen result: {e}", path.display()))
    }

    /// The markdown summary.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.md_header(&mut md);
        self.md_figures(&mut md);
        self.md_slices(&mut md);
        self.md_cpu(&mut md);
        self.md_latency(&mut md);
        self.md_verdicts(&mut md);
        let _ = writeln!(
            md,
            "\nFiles: [{}]({}), [{}]({}) (latency by percentile), [{}]({}) (per second, disturbed seconds marked), \
             [{}]({}) (HdrHistogram interval log, ns; tags per op), {} (percentile distributions per op).",
            self.files.json,
            self.files.json,
            self.files.plot_svg,
            self.files.plot_svg,
            self.files.timeline_svg,
            self.files.timeline_svg,
            self.files.interval_log,
            self.files.interval_log,
            self.files
                .hgrm
                .iter()
                .map(|f| format!("[{f}]({f})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        md
    }

    fn md_header(&self, md: &mut String) {
        let s = &self.scenario;
        let _ = writeln!(md, "# Load run `{}`: {}\n", s.name, self.verdict.shout());
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
            "- scenario: {} live sessions, {load}, {} workers / {} clients per side, keys {}, {} B metadata, population timeout {}, churn timeout {}, {} list pages/s of {}, seed {}",
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
            "- backend: {}{}; {}",
            s.backend,
            s.engine.data_dir.as_ref().map_or(String::new(), |d| format!(
                ", data dir {}, durability {}",
                d.display(),
                s.engine.durability
            )),
            self.peer.as_ref().map_or_else(
                || "no reference peer".to_owned(),
                |p| format!(
                    "reference peer: {}, in alternating slices of {}",
                    p.store,
                    format_ns_f(self.slices.slice_ms * 1e6)
                )
            )
        );
    }

    fn md_figures(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Figures\n");
        let held = match self.rate_held {
            Some(true) => " (rate held)".to_owned(),
            Some(false) => " (**rate not held**: the backend or the loadgen fell behind)".to_owned(),
            None => String::new(),
        };
        // The backend's share of the measured time (the peer has the rest).
        let backend_s = self.measured_s * self.slices.backend.measured as f64
            / (self.slices.backend.measured + self.slices.peer.map_or(0, |p| p.measured)).max(1) as f64;
        let over = if self.throughput_over_s + 1e-9 < backend_s {
            format!(
                "the first {:.1} s of the backend's {backend_s:.1} s of slices (its clients had issued their --ops by then)",
                self.throughput_over_s
            )
        } else {
            format!("the backend's {backend_s:.1} s of slices")
        };
        let _ = writeln!(
            md,
            "- throughput: **{} ops/s**{held} over {over} (of {:.1} s measured after {:.1} s warm-up); {} ops issued, {} unsent",
            thousands(self.throughput_ops_per_s),
            self.measured_s,
            self.warmup_s,
            thousands_u(self.ops_issued),
            thousands_u(self.ops_unsent)
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
    }

    fn md_slices(&self, md: &mut String) {
        let sl = &self.slices;
        let side = |name: &str, s: &SideSlices| {
            format!(
                "{name}: {} of {} slices judged{}, {} disturbed ({} set aside), the machine took {:.1} ms in all (longest gap {:.2} ms)",
                s.judged,
                s.measured,
                idle_after(s),
                s.disturbed,
                s.set_aside,
                s.taken_ms,
                s.gap_max_ms
            )
        };
        let _ = writeln!(
            md,
            "- slices of {}: {}{}{}",
            format_ns_f(sl.slice_ms * 1e6),
            side("backend", &sl.backend),
            sl.peer
                .as_ref()
                .map_or(String::new(), |p| format!("; {}", side("peer", p))),
            sl.steal_ms.map_or(String::new(), |s| format!(
                "; hypervisor steal {s:.0} ms over the load (all CPUs)"
            ))
        );
        if self.verdict == RunVerdict::Inconclusive {
            let _ = writeln!(
                md,
                "\n**Inconclusive**: {} (rerun on a quieter machine).",
                crate::targets::inconclusive_reason(&self.verdicts, sl.judged_share)
            );
        }
        if !self.earlier_attempts.is_empty() {
            let _ = writeln!(
                md,
                "\nThis is attempt {} of the run: the figures are its own.",
                self.earlier_attempts.len() + 1
            );
            for line in EarlierAttempt::lines(&self.earlier_attempts).lines() {
                let _ = writeln!(md, "- {line}");
            }
        }
    }

    fn md_cpu(&self, md: &mut String) {
        let c = &self.cpu;
        let _ = writeln!(
            md,
            "- CPU: backend workers {:.2} s, peer workers {:.2} s, listers {:.2} s, sweeper {}, process {} over {:.1} s wall ({} cores busy)",
            c.usage.workers_s,
            c.usage.peer_workers_s,
            c.usage.lister_s,
            c.usage.sweeper_s.map_or("n/a".into(), |v| format!("{v:.2} s")),
            c.usage.process_s.map_or("n/a".into(), |v| format!("{v:.2} s")),
            c.usage.wall_s,
            c.cores_used.map_or("n/a".into(), |v| format!("{v:.2}"))
        );
        let share = match (c.worker_ns_per_op, c.loadgen_share) {
            (Some(per_op), Some(share)) => format!(
                "; the backend's workers spent {per_op:.0} ns of CPU per operation{}, so the loadgen is {:.0}% of their CPU and the backend the rest",
                c.peer_worker_ns_per_op.map_or(String::new(), |p| format!(" (the peer's {p:.0} ns)")),
                share * 100.0
            ),
            _ => "; open-loop workers spin between scheduled operations, so their CPU is not a cost figure (run `--rate max` for the backend's share)".into(),
        };
        let _ = writeln!(
            md,
            "- loadgen cost: {:.0} ns per operation (null backend), clock read {:.0} ns{share}",
            c.loadgen_ns_per_op, c.timer_ns
        );
    }

    fn md_latency(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Latency by operation (every measured slice)\n");
        let _ = writeln!(
            md,
            "| op | side | count | ops/s | p50 | p90 | p99 | p99.9 | p99.99 | max | errors |"
        );
        let _ = writeln!(
            md,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let no_peer = BTreeMap::new();
        let peer_ops = self.peer.as_ref().map_or(&no_peer, |p| &p.ops);
        let mut rows: Vec<(String, &str, &OpStats)> = Vec::new();
        for (name, o) in &self.ops {
            rows.push((name.clone(), "backend", o));
            if let Some(p) = peer_ops.get(name) {
                rows.push((name.clone(), "peer", p));
            }
        }
        rows.push(("all point ops".into(), "backend", &self.all_point_ops));
        if let Some(p) = &self.peer {
            rows.push(("all point ops".into(), "peer", &p.all_point_ops));
        }
        for (name, side, o) in rows {
            let _ = writeln!(
                md,
                "| {name} | {side} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
    }

    fn md_verdicts(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Verdict ({}): {}\n",
            self.targets.join(", "),
            self.verdict.shout()
        );
        let tails = if self.peer.is_some() {
            "tails are what the backend adds over the peer, over the judged slices: a p99 in each side's typical slice, a p99.9 or max pooled"
        } else {
            "tails are the backend's over the judged slices (no peer): a p99 in the typical slice, a p99.9 or max pooled"
        };
        let _ = writeln!(md, "Medians are the typical slice's; {tails}.\n");
        let _ = writeln!(
            md,
            "| tier | op | bound | limit | backend | peer | measured | margin | verdict |"
        );
        let _ = writeln!(md, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
        for v in &self.verdicts {
            let status = match v.status {
                Status::Pass => "pass".to_owned(),
                Status::Fail => format!("**FAIL** {}", v.note),
                Status::NotRun | Status::Disturbed => format!("n/a ({})", v.note),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {status} |",
                v.tier,
                v.subject,
                v.bound,
                v.limit,
                v.backend.as_deref().unwrap_or("-"),
                v.peer.as_deref().unwrap_or("-"),
                v.measured,
                v.margin.map_or("-".into(), crate::targets::format_margin)
            );
        }
    }
}

fn format_ns_f(ns: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    format_ns(ns.max(0.0).round() as u64)
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

/// ` (N of them idle after the point clients ended, left out of the judged
/// share)`, or nothing.
#[must_use]
pub fn idle_after(s: &SideSlices) -> String {
    if s.idle_after == 0 {
        String::new()
    } else {
        format!(
            " ({} of them idle after the point clients ended, left out of the judged share)",
            s.idle_after
        )
    }
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
