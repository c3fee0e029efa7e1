//! `loadgen gate`: compare runs with a committed baseline and fail only on a
//! regression beyond the tolerance.
//!
//! Each metric's candidate value is the **median** over repeated runs, so a
//! single disturbed run cannot fail the gate; the table also shows the
//! min–max spread so a reader sees how noisy the machine was. Latencies are
//! lower-is-better, throughput higher-is-better; a change within the
//! tolerance either way is noise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

use serde::{Deserialize, Serialize};

use crate::procfs::{GitInfo, Machine};
use crate::report::{rfc3339, Report};
use crate::scenario::Scenario;
use crate::table::render_table;
use crate::units::format_ns;

/// `schema` of a baseline document.
pub const BASELINE_SCHEMA: &str = "session-engine/loadgen-baseline";
/// Its version.
pub const BASELINE_SCHEMA_VERSION: u32 = 1;

/// Metric families the gate judges by default; others are shown as info.
///
/// `cpu` is the workers' CPU time per operation (closed-loop runs): unlike
/// wall-clock throughput it does not move when other work takes the cores,
/// so on a shared machine it is the steadiest measure of the engine's cost.
pub const GATED_DEFAULT: &str = "cpu,p50,p99";

/// Every metric family.
pub const FAMILIES: [&str; 5] = ["cpu", "throughput", "p50", "p99", "p999"];

/// The committed reference a gate compares with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// [`BASELINE_SCHEMA`].
    pub schema: String,
    /// [`BASELINE_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// The command that made it.
    pub command: Vec<String>,
    /// Where.
    pub machine: Machine,
    /// From which code.
    pub git: GitInfo,
    /// What ran (the gate reruns exactly this).
    pub scenario: Scenario,
    /// Runs the medians are taken over.
    pub repeat: usize,
    /// Median of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// Every run's metrics.
    pub runs: Vec<BTreeMap<String, f64>>,
}

impl Baseline {
    /// Reads and checks a baseline.
    ///
    /// # Errors
    /// If unreadable or of another schema.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read baseline {}: {e}", path.display()))?;
        let baseline: Baseline = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a loadgen baseline: {e}", path.display()))?;
        anyhow::ensure!(
            baseline.schema == BASELINE_SCHEMA && baseline.schema_version == BASELINE_SCHEMA_VERSION,
            "{}: schema {} v{} (this loadgen reads {BASELINE_SCHEMA} v{BASELINE_SCHEMA_VERSION})",
            path.display(),
            baseline.schema,
            baseline.schema_version
        );
        Ok(baseline)
    }
}

/// The metrics a run contributes: `throughput_ops_per_s`, `cpu_ns_per_op`
/// (closed loop), and for every operation kind with samples `<op>.p50_ns`,
/// `<op>.p99_ns`, `<op>.p999_ns`; and beside each the same figure divided
/// by the reference peer's from the same run (`<metric>/peer`), which is what
/// the gate judges by default.
#[must_use]
pub fn metrics_of(report: &Report) -> BTreeMap<String, f64> {
    let raw = raw_metrics(report);
    let peer = peer_metrics(report);
    let mut all = raw.clone();
    for (name, value) in &raw {
        if let Some(reference) = peer.get(name).filter(|v| **v > 0.0) {
            all.insert(format!("{name}{PEER_SUFFIX}"), value / reference);
        }
    }
    all
}

/// Suffix of a metric divided by the reference peer's.
pub const PEER_SUFFIX: &str = "/peer";

fn peer_metrics(report: &Report) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let Some(peer) = &report.peer else { return m };
    if let Some(cpu) = report.cpu.peer_worker_ns_per_op {
        m.insert("cpu_ns_per_op".to_owned(), cpu);
    }
    let ops = peer
        .ops
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(std::iter::once(("all", &peer.all_point_ops)));
    for (op, s) in ops.filter(|(_, s)| s.count > 0) {
        for (name, v) in [("p50", s.p50_ns), ("p99", s.p99_ns), ("p999", s.p999_ns)] {
            m.insert(format!("{op}.{name}_ns"), v as f64);
        }
    }
    m
}

fn raw_metrics(report: &Report) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("throughput_ops_per_s".to_owned(), report.throughput_ops_per_s);
    if let Some(cpu) = report.cpu.worker_ns_per_op {
        m.insert("cpu_ns_per_op".to_owned(), cpu);
    }
    let ops = report
        .ops
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(std::iter::once(("all", &report.all_point_ops)));
    for (op, s) in ops.filter(|(_, s)| s.count > 0) {
        for (name, v) in [("p50", s.p50_ns), ("p99", s.p99_ns), ("p999", s.p999_ns)] {
            m.insert(format!("{op}.{name}_ns"), v as f64);
        }
    }
    m
}

/// Median of `values` (mean of the middle two for an even count).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    }
}

/// Medians of each metric over runs (metrics missing from some runs use the others).
#[must_use]
pub fn medians(runs: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut all: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (k, v) in run {
            all.entry(k).or_default().push(*v);
        }
    }
    all.into_iter().map(|(k, v)| (k.to_owned(), median(&v))).collect()
}

/// The gate's judgement of one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// Worse beyond the tolerance: fails the gate.
    Regression,
    /// Better beyond the tolerance.
    Improvement,
    /// Within the tolerance: noise.
    Within,
    /// Not gated (shown for context).
    Info,
    /// In the baseline, absent from the candidate (or a baseline of zero,
    /// which nothing can be compared with): fails the gate.
    Missing,
}

/// One line of the side-by-side table.
#[derive(Clone, Debug, Serialize)]
pub struct GateRow {
    /// Metric name.
    pub metric: String,
    /// Baseline value.
    pub baseline: f64,
    /// Median of the candidate runs.
    pub median: Option<f64>,
    /// Smallest candidate value.
    pub min: Option<f64>,
    /// Largest candidate value.
    pub max: Option<f64>,
    /// Signed relative change of the median (+0.12 = 12% higher).
    pub change: Option<f64>,
    /// The judgement.
    pub judgement: Judgement,
}

fn higher_is_better(metric: &str) -> bool {
    metric.starts_with("throughput")
}

/// Whether `metric` is judged: by default the ratios to the peer are, and
/// the raw figures are context; with `raw`, the other way round.
fn is_gated(metric: &str, gated: &[String], raw: bool) -> bool {
    let (metric, is_ratio) = match metric.strip_suffix(PEER_SUFFIX) {
        Some(base) => (base, true),
        None => (metric, false),
    };
    if is_ratio == raw {
        return false;
    }
    gated.iter().any(|g| {
        if g == "throughput" || g == "cpu" {
            metric.starts_with(g.as_str())
        } else {
            metric.ends_with(&format!(".{g}_ns"))
        }
    })
}

/// Compares candidate runs with a baseline. `tolerance` is relative (0.10 = 10%).
#[must_use]
pub fn compare(
    baseline: &BTreeMap<String, f64>,
    candidates: &[BTreeMap<String, f64>],
    tolerance: f64,
    gated: &[String],
    raw: bool,
) -> Vec<GateRow> {
    baseline
        .iter()
        .map(|(metric, &base)| {
            let values: Vec<f64> = candidates.iter().filter_map(|c| c.get(metric).copied()).collect();
            if values.is_empty() {
                return GateRow {
                    metric: metric.clone(),
                    baseline: base,
                    median: None,
                    min: None,
                    max: None,
                    change: None,
                    judgement: if is_gated(metric, gated, raw) {
                        Judgement::Missing
                    } else {
                        Judgement::Info
                    },
                };
            }
            let med = median(&values);
            let comparable = base.abs() > f64::EPSILON;
            let change = if comparable { med / base - 1.0 } else { 0.0 };
            let worse = if higher_is_better(metric) { -change } else { change };
            let judgement = if !is_gated(metric, gated, raw) {
                Judgement::Info
            } else if !comparable {
                Judgement::Missing
            } else if worse > tolerance {
                Judgement::Regression
            } else if worse < -tolerance {
                Judgement::Improvement
            } else {
                Judgement::Within
            };
            GateRow {
                metric: metric.clone(),
                baseline: base,
                median: Some(med),
                min: values.iter().copied().reduce(f64::min),
                max: values.iter().copied().reduce(f64::max),
                change: Some(change),
                judgement,
            }
        })
        .collect()
}

/// True if no row is a regression or missing.
#[must_use]
pub fn passes(rows: &[GateRow]) -> bool {
    rows.iter()
        .all(|r| !matches!(r.judgement, Judgement::Regression | Judgement::Missing))
}

fn format_value(metric: &str, v: f64) -> String {
    if metric.ends_with(PEER_SUFFIX) {
        format!("{v:.3}x")
    } else if metric.ends_with("_ns") || metric.ends_with("_ns_per_op") {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        format_ns(v.max(0.0).round() as u64)
    } else {
        crate::report::thousands(v)
    }
}

/// The side-by-side table.
#[must_use]
pub fn table(rows: &[GateRow], tolerance: f64) -> String {
    let body: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format_value(&r.metric, v));
            let range = match (r.min, r.max) {
                (Some(lo), Some(hi)) => format!(
                    "{} – {}",
                    format_value(&r.metric, lo),
                    format_value(&r.metric, hi)
                ),
                _ => "-".into(),
            };
            let verdict = match r.judgement {
                Judgement::Regression => format!("REGRESSION (> {:.0}%)", tolerance * 100.0),
                Judgement::Improvement => "improvement".into(),
                Judgement::Within => "ok (noise)".into(),
                Judgement::Info => "info".into(),
                Judgement::Missing => "MISSING".into(),
            };
            [
                r.metric.clone(),
                format_value(&r.metric, r.baseline),
                f(r.median),
                range,
                r.change
                    .map_or_else(|| "-".into(), |c| format!("{:+.1}%", c * 100.0)),
                verdict,
            ]
        })
        .collect();
    render_table(
        &["metric", "baseline", "median", "min – max", "change", "verdict"],
        &body,
    )
}

/// `10%`, `0.1` or `10` (percent) as a fraction: a bare number below 1 is
/// a fraction, from 1 up a percentage (so `1` is 1%, not 100%).
///
/// # Errors
/// A message for values that are not a percentage in (0, 100].
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, percent) = match t.strip_suffix('%') {
        Some(n) => (n, true),
        None => (t, false),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("tolerance {text:?}: expected e.g. 10% or 0.1"))?;
    let fraction = if percent || v >= 1.0 { v / 100.0 } else { v };
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        Err(format!("tolerance {text:?}: must be between 0% and 100%"))
    }
}

/// What `loadgen gate` was asked to do.
#[derive(Clone, Debug)]
pub struct GateRequest {
    /// The committed baseline.
    pub baseline: PathBuf,
    /// Runs to take medians over.
    pub repeat: usize,
    /// Relative change that counts as a regression (0.10 = 10%).
    pub tolerance: f64,
    /// Metric families that gate.
    pub metrics: Vec<String>,
    /// Judge raw figures instead of ratios to the peer.
    pub raw: bool,
    /// Result files to compare instead of running.
    pub candidates: Vec<PathBuf>,
    /// Write a new baseline here instead of comparing.
    pub write_baseline: Option<PathBuf>,
    /// The scenario for a new baseline.
    pub scenario: Option<String>,
    /// No progress bar.
    pub quiet: bool,
    /// The command line, for the record.
    pub command: Vec<String>,
}

/// Writes a baseline, or compares with one; returns whether the gate passed.
///
/// # Errors
/// [`Error`]: an unreadable baseline or candidate, a run that could not complete.
pub fn execute(request: &GateRequest) -> Result<bool, Error> {
    let tolerance = request.tolerance;
    if let Some(path) = &request.write_baseline {
        let scenario = crate::cli::ScenarioArgs {
            scenario: request.scenario.clone().unwrap_or_else(|| "gate".into()),
            ..crate::cli::ScenarioArgs::default()
        }
        .resolve()?;
        let runs = repeated_runs(&scenario, request.repeat, request.quiet, &request.command)?;
        let baseline = Baseline {
            schema: BASELINE_SCHEMA.into(),
            schema_version: BASELINE_SCHEMA_VERSION,
            created_at: rfc3339(std::time::SystemTime::now()),
            command: request.command.clone(),
            machine: crate::procfs::Machine::detect(),
            git: crate::procfs::GitInfo::detect(),
            scenario,
            repeat: request.repeat,
            metrics: medians(&runs),
            runs,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::Failed(e.into()))?;
        }
        let text = serde_json::to_string_pretty(&baseline).map_err(|e| Error::Failed(e.into()))?;
        std::fs::write(path, format!("{text}\n")).map_err(|e| Error::Failed(e.into()))?;
        println!(
            "baseline written: {} (medians of {} runs)",
            path.display(),
            request.repeat
        );
        return Ok(true);
    }
    let baseline = Baseline::read(&request.baseline).map_err(|e| Error::Usage(format!("{e:#}")))?;
    let candidates = if request.candidates.is_empty() {
        repeated_runs(
            &baseline.scenario,
            request.repeat,
            request.quiet,
            &request.command,
        )?
    } else {
        request
            .candidates
            .iter()
            .map(|p| Report::read(p).map(|r| metrics_of(&r)))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| Error::Usage(format!("{e:#}")))?
    };
    let rows = compare(
        &baseline.metrics,
        &candidates,
        tolerance,
        &request.metrics,
        request.raw,
    );
    println!(
        "gate: {} candidate run(s) vs baseline {} ({} runs, {}), tolerance {:.0}%",
        candidates.len(),
        request.baseline.display(),
        baseline.repeat,
        baseline.created_at,
        tolerance * 100.0
    );
    println!();
    print!("{}", table(&rows, tolerance));
    let pass = passes(&rows);
    println!(
        "\ngate: {}",
        if pass {
            "PASS"
        } else {
            "FAIL (regression beyond tolerance)"
        }
    );
    Ok(pass)
}

fn repeated_runs(
    scenario: &Scenario,
    repeat: usize,
    quiet: bool,
    command: &[String],
) -> Result<Vec<std::collections::BTreeMap<String, f64>>, Error> {
    let mut runs = Vec::new();
    let mut disturbed = Vec::new();
    // A run whose workers did not get their cores is retried, up to `repeat`
    // extra runs; if the machine stays busy its runs are used after all.
    let mut attempt = 0;
    while runs.len() < repeat && attempt < 2 * repeat {
        attempt += 1;
        let request = crate::run::RunRequest {
            scenario: scenario.clone(),
            targets: Vec::new(),
            out_dir: None,
            progress: !quiet,
            stall: None,
            columns: Vec::new(),
            json: false,
            command: command.to_vec(),
        };
        let bar = crate::progress::Progress::new(quiet, &format!("gate run {attempt}"));
        let measured = crate::run::measure_request(&request, bar.as_ref())?;
        if let Some(bar) = bar {
            bar.finish();
        }
        let report = crate::run::build_report(&request, &measured);
        let ok = report.verdict != crate::targets::RunVerdict::Inconclusive;
        if !quiet {
            eprintln!(
                "  run {attempt}: {}{}",
                crate::run::headline(&report),
                if ok { "" } else { ": disturbed, retrying" }
            );
        }
        if ok {
            runs.push(metrics_of(&report));
        } else {
            disturbed.push(metrics_of(&report));
        }
        // Let the engine of the previous run finish tearing down.
        std::thread::sleep(Duration::from_millis(50));
    }
    let missing = repeat.saturating_sub(runs.len());
    if missing > 0 && !quiet {
        eprintln!("  the machine stayed busy: using {missing} disturbed run(s)");
    }
    runs.extend(disturbed.into_iter().take(missing));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64, p99: f64) -> BTreeMap<String, f64> {
        [
            ("throughput_ops_per_s".to_owned(), throughput),
            ("cpu_ns_per_op".to_owned(), 1e9 / throughput),
            ("get.p99_ns".to_owned(), p99),
            ("get.p999_ns".to_owned(), p99 * 10.0),
        ]
        .into_iter()
        .collect()
    }

    fn gated() -> Vec<String> {
        "throughput,cpu,p50,p99".split(',').map(str::to_owned).collect()
    }

    fn judge(rows: &[GateRow], metric: &str) -> Judgement {
        rows.iter().find(|r| r.metric == metric).unwrap().judgement
    }

    #[test]
    fn a_slower_median_beyond_tolerance_is_a_regression() {
        let base = run(1_000_000.0, 1_000.0);
        let rows = compare(
            &base,
            &[
                run(850_000.0, 1_000.0),
                run(860_000.0, 1_000.0),
                run(990_000.0, 1_000.0),
            ],
            0.10,
            &gated(),
            true,
        );
        assert_eq!(
            judge(&rows, "throughput_ops_per_s"),
            Judgement::Regression,
            "median 860K is 14% down"
        );
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Within);
        assert!(!passes(&rows));
        let rows = compare(&base, &[run(1_000_000.0, 1_200.0)], 0.10, &gated(), true);
        assert_eq!(
            judge(&rows, "get.p99_ns"),
            Judgement::Regression,
            "20% slower p99"
        );
    }

    #[test]
    fn improvements_and_noise_pass() {
        let base = run(1_000_000.0, 1_000.0);
        let rows = compare(&base, &[run(1_300_000.0, 700.0)], 0.10, &gated(), true);
        assert_eq!(judge(&rows, "throughput_ops_per_s"), Judgement::Improvement);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Improvement);
        assert!(passes(&rows));
        let rows = compare(
            &base,
            &[run(950_000.0, 1_090.0), run(1_040_000.0, 950.0)],
            0.10,
            &gated(),
            true,
        );
        assert_eq!(judge(&rows, "throughput_ops_per_s"), Judgement::Within);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Within);
        assert!(passes(&rows));
    }

    #[test]
    fn one_disturbed_run_of_three_does_not_fail_the_gate() {
        let base = run(1_000_000.0, 1_000.0);
        let noisy = [
            run(1_010_000.0, 980.0),
            run(400_000.0, 9_000.0),
            run(990_000.0, 1_020.0),
        ];
        let rows = compare(&base, &noisy, 0.10, &gated(), true);
        assert!(passes(&rows), "{}", table(&rows, 0.10));
        let r = rows.iter().find(|r| r.metric == "throughput_ops_per_s").unwrap();
        assert_eq!(r.min, Some(400_000.0));
        assert_eq!(r.median, Some(990_000.0));
    }

    #[test]
    fn by_default_wall_throughput_is_context_and_cpu_per_op_gates() {
        let default: Vec<String> = GATED_DEFAULT.split(',').map(str::to_owned).collect();
        let base = run(1_000_000.0, 1_000.0);
        // The machine got busy: half the throughput, same CPU per op.
        let mut busy = run(500_000.0, 1_000.0);
        busy.insert("cpu_ns_per_op".into(), 1_000.0);
        let rows = compare(&base, &[busy], 0.10, &default, true);
        assert_eq!(judge(&rows, "throughput_ops_per_s"), Judgement::Info);
        assert_eq!(judge(&rows, "cpu_ns_per_op"), Judgement::Within);
        assert!(passes(&rows));
    }

    #[test]
    fn ungated_metrics_are_info_and_missing_gated_ones_fail() {
        let base = run(1_000_000.0, 1_000.0);
        let rows = compare(&base, &[run(1_000_000.0, 1_000.0)], 0.10, &gated(), true);
        assert_eq!(judge(&rows, "get.p999_ns"), Judgement::Info);
        let mut partial = run(1_000_000.0, 1_000.0);
        partial.remove("get.p99_ns");
        let rows = compare(&base, &[partial], 0.10, &gated(), true);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Missing);
        assert!(!passes(&rows));
    }

    #[test]
    fn a_zero_baseline_cannot_pass_a_gated_metric() {
        // E.g. CPU per operation recorded where it could not be measured.
        let mut base = run(1_000_000.0, 1_000.0);
        base.insert("cpu_ns_per_op".into(), 0.0);
        let mut candidate = run(1_000_000.0, 1_000.0);
        candidate.insert("cpu_ns_per_op".into(), 5_000.0);
        let default: Vec<String> = GATED_DEFAULT.split(',').map(str::to_owned).collect();
        let rows = compare(&base, &[candidate], 0.10, &default, true);
        assert_eq!(judge(&rows, "cpu_ns_per_op"), Judgement::Missing);
        assert!(!passes(&rows));
    }

    #[test]
    fn the_tolerance_is_a_boundary_not_a_cliff() {
        let base = run(1_000.0, 1_000.0);
        let rows = compare(&base, &[run(1_000.0, 1_099.0)], 0.10, &gated(), true);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Within);
        let rows = compare(&base, &[run(1_000.0, 1_101.0)], 0.10, &gated(), true);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Regression);
    }

    #[test]
    fn by_default_the_ratios_to_the_peer_gate_and_raw_figures_are_context() {
        let mut base = run(1_000_000.0, 1_000.0);
        base.insert("get.p99_ns/peer".into(), 2.0);
        // A busy machine: everything 40% slower, the peer too, so the ratio holds.
        let mut busy = run(600_000.0, 1_400.0);
        busy.insert("get.p99_ns/peer".into(), 2.05);
        let rows = compare(&base, &[busy.clone()], 0.10, &gated(), false);
        assert_eq!(judge(&rows, "get.p99_ns"), Judgement::Info);
        assert_eq!(judge(&rows, "get.p99_ns/peer"), Judgement::Within);
        assert!(passes(&rows));
        // The engine alone got slower: the ratio moves.
        busy.insert("get.p99_ns/peer".into(), 2.6);
        let rows = compare(&base, &[busy], 0.10, &gated(), false);
        assert_eq!(judge(&rows, "get.p99_ns/peer"), Judgement::Regression);
        assert!(table(&rows, 0.10).contains("2.600x"));
    }

    #[test]
    fn medians_and_tolerances_parse() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!((parse_tolerance("10%").unwrap() - 0.1).abs() < 1e-12);
        assert!((parse_tolerance("0.25").unwrap() - 0.25).abs() < 1e-12);
        assert!((parse_tolerance("15").unwrap() - 0.15).abs() < 1e-12);
        assert!(
            (parse_tolerance("1").unwrap() - 0.01).abs() < 1e-12,
            "1 is 1%, not 100%"
        );
        assert!(parse_tolerance("0").is_err() && parse_tolerance("x").is_err());
    }
}
