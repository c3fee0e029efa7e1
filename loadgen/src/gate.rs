//! `loadgen gate`: the CI regression gates, their baselines and the policy
//! that keeps both honest.
//!
//! - **Instructions** (`loadgen gate --instructions`, deterministic): the
//!   engine's instructions per operation, counted by callgrind in a loop of
//!   each kind ([`crate::callgrind`]), against
//!   `results/baseline-instructions.json`. Exact for a binary and input up
//!   to the hash seed's instruction or two; a kind that costs more than the
//!   tolerance (default [`INSTRUCTIONS_TOLERANCE_DEFAULT`]) more fails. CI
//!   fails on it.
//! - **Wall clock** (`loadgen gate`): the engine's CPU time per operation
//!   over the reference peer's, measured in interleaved slices
//!   ([`crate::cost`]), median of `--repeat` runs against
//!   `results/baseline.json`. By default it reports the ratios and their
//!   changes and judges nothing ([`GateVerdict::Reported`]): on a shared
//!   machine an unchanged engine's ratios move by up to about 15% between
//!   sittings, so a verdict against a baseline from another sitting could
//!   flip on an unchanged commit. With `--verdict` (for a baseline written
//!   in the same sitting, as `scripts/measure-gates.sh` does) a ratio up by
//!   more than the tolerance (default [`WALL_TOLERANCE_DEFAULT`]) fails.
//!   CI reports it.
//!
//! **Policy.** A baseline is written at one commit by
//! `scripts/refresh-baseline.sh` (both gates) and committed. A change that
//! makes an operation slower on purpose refreshes the baselines in the same
//! commit and says why in its message; a change that makes one faster may
//! refresh them to tighten the gate. A gate compares only like with like:
//! it measures the plan its baseline records (sessions, operations), and
//! a baseline of another engine (its shard count, [`GATE_SHARDS`]) is
//! refused, not compared. An instruction baseline counted under another
//! valgrind than the running one, or from a build by another compiler, is
//! compared all the same, and said so; should the counts then move beyond
//! the tolerance, the gate cannot tell the code from the tools and is
//! inconclusive (exit 3), which
//! `scripts/gate.sh` fails the build on: refresh the baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::callgrind::{self, CountPlan, Counts};
use crate::cost::{self, CostPlan, CostRun};
use crate::error::Error;
use crate::limits::{
    GATE_SHARDS, INSTRUCTIONS_TOLERANCE_DEFAULT, PEER_DRIFT_MAX, WALL_ATTEMPTS_FACTOR, WALL_TOLERANCE_DEFAULT,
};
use crate::procfs::{GitInfo, Machine};
use crate::progress::Progress;
use crate::report::rfc3339;
use crate::table::render;

/// `schema` of the wall-clock gate's baseline.
pub const BASELINE_SCHEMA: &str = "session-engine/loadgen-baseline";
/// Its version (2: CPU ratios per operation in interleaved slices).
pub const BASELINE_SCHEMA_VERSION: u32 = 2;
/// `schema` of the instruction gate's baseline.
pub const INSTRUCTIONS_SCHEMA: &str = "session-engine/loadgen-instructions-baseline";
/// Its version.
pub const INSTRUCTIONS_SCHEMA_VERSION: u32 = 1;
/// `schema` of a gate's result document (`--out`).
pub const GATE_RESULT_SCHEMA: &str = "session-engine/loadgen-gate-result";

/// Where the wall-clock gate's baseline is committed.
pub const WALL_BASELINE_DEFAULT: &str = "results/baseline.json";
/// Where the instruction gate's baseline is committed.
pub const INSTRUCTIONS_BASELINE_DEFAULT: &str = "results/baseline-instructions.json";

/// What a baseline records of where it was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    /// When (RFC 3339).
    pub created_at: String,
    /// The command that made it.
    pub command: Vec<String>,
    /// Where.
    pub machine: Machine,
    /// From which code.
    pub git: GitInfo,
}

impl Provenance {
    fn now(command: &[String]) -> Self {
        Self {
            created_at: rfc3339(std::time::SystemTime::now()),
            command: command.to_vec(),
            machine: Machine::detect(),
            git: GitInfo::detect(),
        }
    }
}

/// The wall-clock gate's committed reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// [`BASELINE_SCHEMA`].
    pub schema: String,
    /// [`BASELINE_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where and from what it was made.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// What each run measured.
    pub plan: CostPlan,
    /// Engine / peer CPU per operation, per kind: the median over the runs.
    pub ratios: BTreeMap<String, f64>,
    /// The peer's level (see [`peer_level_ns`]) over the runs kept: the
    /// machine's state when the baseline was made.
    pub peer_level_ns: f64,
    /// The runs kept.
    pub runs: Vec<CostRun>,
    /// Runs set aside: the machine's state moved during them.
    pub set_aside: usize,
}

/// The instruction gate's committed reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstructionBaseline {
    /// [`INSTRUCTIONS_SCHEMA`].
    pub schema: String,
    /// [`INSTRUCTIONS_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where and from what it was made.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// `valgrind --version`.
    pub valgrind: Option<String>,
    /// `rustc -V` of the compiler that built the counting loadgen (absent
    /// in baselines before this field: unknown, as a compiler that does
    /// not say its version).
    #[serde(default)]
    pub rustc: Option<String>,
    /// What was counted.
    pub plan: CountPlan,
    /// Counted in a build with debug assertions (a loadgen run without
    /// `--release`): its counts are several times a release build's, and a
    /// gate comparing the two would pass anything (absent: a release
    /// build, as every baseline before this field was).
    #[serde(default)]
    pub debug_build: bool,
    /// Instructions per operation.
    pub counts: Counts,
}

/// Reads a JSON document of `schema` at `version`.
///
/// # Errors
/// [`Error::Usage`]: unreadable, not JSON, another schema or version.
pub fn read_versioned<T: for<'de> Deserialize<'de>>(
    path: &Path,
    schema: &str,
    version: u32,
) -> Result<T, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read baseline {}: {e}", path.display())))?;
    let head: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{} is not JSON: {e}", path.display())))?;
    if head["schema"] != schema || head["schema_version"] != version {
        return Err(Error::Usage(format!(
            "{}: schema {} v{} (this loadgen reads {schema} v{version}; refresh it with scripts/refresh-baseline.sh)",
            path.display(),
            head["schema"],
            head["schema_version"]
        )));
    }
    serde_json::from_value(head).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// Refuses a baseline whose plan cannot be measured (`check`: the plan's
/// own check), hand-edited or damaged.
///
/// # Errors
/// [`Error::Usage`] naming the file and the field.
pub fn check_plan(path: &Path, check: Result<(), String>) -> Result<(), Error> {
    check.map_err(|e| {
        Error::Usage(format!(
            "{}: {e}: not a plan this loadgen can measure (refresh the baseline with scripts/refresh-baseline.sh)",
            path.display()
        ))
    })
}

/// Refuses a baseline that measured another engine than this loadgen
/// does (see [`GATE_SHARDS`]).
///
/// # Errors
/// [`Error::Usage`] naming both shard counts.
pub fn check_shards(path: &Path, shards: usize) -> Result<(), Error> {
    if shards == GATE_SHARDS {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{}: measured an engine of {shards} shards; this loadgen measures one of {GATE_SHARDS}, which cannot be compared with it: \
         refresh the baseline with scripts/refresh-baseline.sh",
        path.display()
    )))
}

/// `Ok` if a baseline counted in a build with debug assertions or not
/// (`debug_build`) can be compared with this build's counts; a debug
/// build's are several times a release build's, which would pass any
/// regression (or fail every count) rather than guard anything.
///
/// # Errors
/// [`Error::Usage`] naming both builds.
pub fn check_build(path: &Path, debug_build: bool) -> Result<(), Error> {
    if debug_build == cfg!(debug_assertions) {
        return Ok(());
    }
    let kind = |debug: bool| if debug { "debug" } else { "release" };
    Err(Error::Usage(format!(
        "{}: counted in a {} build; this loadgen is a {} build, whose counts cannot be compared with it: \
         run the gate, and write baselines, with a release build (cargo run --release -p loadgen)",
        path.display(),
        kind(debug_build),
        kind(cfg!(debug_assertions))
    )))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::Failed(e.into()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Failed(e.into()))?;
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))
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

/// The gate's judgement of one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// Worse beyond the tolerance: fails the gate.
    Regression,
    /// Better beyond the tolerance (refresh the baseline to keep the gain).
    Improvement,
    /// Within the tolerance: noise.
    Within,
    /// In the baseline, absent from the candidate (or a baseline of zero or
    /// less, which nothing can be compared with): fails the gate.
    Missing,
    /// Measured, absent from the baseline (one from before the kind was
    /// measured, or a truncated one): fails the gate, which would
    /// otherwise leave the kind unguarded without a word.
    NotInBaseline,
}

/// One line of the side-by-side table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateRow {
    /// The kind (`get`, ...).
    pub metric: String,
    /// Baseline value.
    pub baseline: f64,
    /// The candidate's (the median of its runs).
    pub candidate: Option<f64>,
    /// Smallest run.
    pub min: Option<f64>,
    /// Largest run.
    pub max: Option<f64>,
    /// Signed relative change (+0.12 = 12% more).
    pub change: Option<f64>,
    /// The judgement.
    pub judgement: Judgement,
}

/// What a change may exceed its tolerance by and still be within it: the
/// rounding of a ratio computed in doubles, far below any count's step.
const TOLERANCE_ROUNDING: f64 = 1e-12;

/// Compares candidate runs with a baseline, lower is better. `tolerance` is
/// relative (0.10 = 10%). A kind the runs measured and the baseline lacks
/// gets a row too ([`Judgement::NotInBaseline`]).
#[must_use]
pub fn compare(
    baseline: &BTreeMap<String, f64>,
    runs: &[BTreeMap<String, f64>],
    tolerance: f64,
) -> Vec<GateRow> {
    let unbaselined: std::collections::BTreeSet<&String> = runs
        .iter()
        .flat_map(BTreeMap::keys)
        .filter(|metric| !baseline.contains_key(*metric))
        .collect();
    let unbaselined = unbaselined.into_iter().map(|metric| {
        let values: Vec<f64> = runs.iter().filter_map(|r| r.get(metric).copied()).collect();
        GateRow {
            metric: metric.clone(),
            baseline: f64::NAN,
            candidate: Some(median(&values)),
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            change: None,
            judgement: Judgement::NotInBaseline,
        }
    });
    let mut rows: Vec<GateRow> = baseline
        .iter()
        .map(|(metric, &base)| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.get(metric).copied()).collect();
            let row = |candidate, min, max, change, judgement| GateRow {
                metric: metric.clone(),
                baseline: base,
                candidate,
                min,
                max,
                change,
                judgement,
            };
            if values.is_empty() || base.is_nan() || base <= f64::EPSILON {
                return row(None, None, None, None, Judgement::Missing);
            }
            let candidate = median(&values);
            let change = candidate / base - 1.0;
            // A change of exactly the tolerance is within it: computed in
            // doubles, 102 against 100 is 2.0000000000000018%, which read
            // as a regression beyond 2%.
            let judgement = if change > tolerance + TOLERANCE_ROUNDING {
                Judgement::Regression
            } else if change < -tolerance - TOLERANCE_ROUNDING {
                Judgement::Improvement
            } else {
                Judgement::Within
            };
            row(
                Some(candidate),
                values.iter().copied().reduce(f64::min),
                values.iter().copied().reduce(f64::max),
                Some(change),
                judgement,
            )
        })
        .collect();
    rows.extend(unbaselined);
    rows
}

/// True if some row was judged and none is a regression, missing, or
/// absent from the baseline.
#[must_use]
pub fn passes(rows: &[GateRow]) -> bool {
    !rows.is_empty()
        && rows.iter().all(|r| {
            !matches!(
                r.judgement,
                Judgement::Regression | Judgement::Missing | Judgement::NotInBaseline
            )
        })
}

/// The side-by-side table; `format` renders a value. With no `tolerance`
/// (a report) it has no verdict column.
#[must_use]
pub fn table(rows: &[GateRow], tolerance: Option<f64>, format: &dyn Fn(f64) -> String) -> String {
    let missing = rows
        .iter()
        .any(|r| matches!(r.judgement, Judgement::Missing | Judgement::NotInBaseline));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), format);
            let range = match (r.min, r.max) {
                (Some(lo), Some(hi)) => format!("{} – {}", format(lo), format(hi)),
                _ => "-".into(),
            };
            let mut row = vec![
                r.metric.clone(),
                if r.baseline.is_nan() {
                    "-".into()
                } else {
                    format(r.baseline)
                },
                f(r.candidate),
                range,
                r.change
                    .map_or_else(|| "-".into(), |c| format!("{:+.1}%", c * 100.0)),
            ];
            if let Some(tolerance) = tolerance {
                row.push(match r.judgement {
                    Judgement::Regression => format!("REGRESSION (> {:.0}%)", tolerance * 100.0),
                    Judgement::Improvement => "improvement".into(),
                    Judgement::Within => "ok".into(),
                    Judgement::Missing => "MISSING".into(),
                    Judgement::NotInBaseline => "NOT IN BASELINE".into(),
                });
            } else if missing {
                row.push(
                    match r.judgement {
                        Judgement::Missing => "MISSING",
                        Judgement::NotInBaseline => "NOT IN BASELINE",
                        _ => "",
                    }
                    .into(),
                );
            }
            row
        })
        .collect();
    let mut head = vec!["op", "baseline", "now", "runs min – max", "change"];
    if tolerance.is_some() || missing {
        head.push(if tolerance.is_some() { "verdict" } else { "" });
    }
    render(&head, &body)
}

/// A percentage written with its sign (`10%`, `2.5%`) as a fraction.
/// A bare number is refused: `0.99` could be 0.99% or 99%, and `1` 1% or
/// 100%, and guessing either way turns a typo into a gate that never
/// fails (or always does).
///
/// # Errors
/// A message for text that is not a percentage in (0%, 100%], naming the
/// spelling meant for a bare number.
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let Some(number) = t.strip_suffix('%') else {
        return Err(match t.parse::<f64>() {
            Ok(v) if v > 0.0 && v < 1.0 => format!(
                "{text:?}: write it as a percentage with its sign: {t}% or {}% \
                 (a bare number could be a fraction or a percentage)",
                v * 100.0
            ),
            Ok(_) => format!(
                "{text:?}: write it as a percentage with its sign, e.g. {t}% \
                 (a bare number could be a fraction or a percentage)"
            ),
            Err(_) => format!("{text:?}: expected a percentage, e.g. 10%"),
        });
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a percentage, e.g. 10%"))?;
    let fraction = v / 100.0;
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        Err(format!("{text:?}: must be above 0% and at most 100%"))
    }
}

/// Which gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// CPU per operation over the peer's, interleaved.
    WallClock,
    /// Instructions per operation under callgrind.
    Instructions,
}

/// What `loadgen gate` was asked to do.
#[derive(Clone, Debug)]
pub struct GateRequest {
    /// Which gate.
    pub kind: GateKind,
    /// The baseline to compare with (`None`: the committed one).
    pub baseline: Option<PathBuf>,
    /// Runs to take the median of (wall clock).
    pub repeat: usize,
    /// Relative change that counts as a regression (`None`: the gate's default).
    pub tolerance: Option<f64>,
    /// Rounds per run (wall clock; `None`: the plan's).
    pub rounds: Option<usize>,
    /// How far a run's peer level may be from the baseline's (`None`:
    /// [`PEER_DRIFT_MAX`]).
    pub peer_drift: Option<f64>,
    /// A new baseline's sessions (`None`: the default plan's).
    pub sessions: Option<usize>,
    /// A new baseline's operations per slice or loop (`None`: the default).
    pub ops: Option<usize>,
    /// Write a new baseline here instead of comparing.
    pub write_baseline: Option<PathBuf>,
    /// Write the gate's result document here.
    pub out: Option<PathBuf>,
    /// Wall clock: judge (`true`) or only report (`false`).
    pub verdict: bool,
    /// No progress line.
    pub quiet: bool,
    /// The command line, for the record.
    pub command: Vec<String>,
}

/// A gate's result document (`--out`): what it compared and found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateResult {
    /// [`GATE_RESULT_SCHEMA`].
    pub schema: String,
    /// Which gate.
    pub kind: GateKind,
    /// Where and from what.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// The baseline compared with.
    pub baseline: PathBuf,
    /// The tolerance.
    pub tolerance: f64,
    /// The wall-clock gate's runs kept.
    pub runs: Vec<CostRun>,
    /// Its runs set aside (the machine moved).
    pub set_aside: usize,
    /// The instruction gate's counts.
    pub counts: Option<Counts>,
    /// One row per kind.
    pub rows: Vec<GateRow>,
    /// The verdict.
    pub verdict: GateVerdict,
    /// True if it passed (false when it only reported).
    pub passed: bool,
}

/// A gate's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// No regression.
    Pass,
    /// A regression beyond the tolerance.
    Fail,
    /// Too few runs were comparable with the baseline's (the machine was in
    /// another state): nothing judged.
    Inconclusive,
    /// The wall-clock gate without `--verdict`: figures shown, nothing
    /// judged.
    Reported,
}

impl GateVerdict {
    /// Pass or fail.
    #[must_use]
    pub fn of(passed: bool) -> Self {
        if passed {
            GateVerdict::Pass
        } else {
            GateVerdict::Fail
        }
    }
}

fn ratios(run: &CostRun) -> BTreeMap<String, f64> {
    run.ops.iter().map(|(k, v)| (k.clone(), v.ratio)).collect()
}

/// The peer's cost across kinds, ns: the geometric mean of its CPU per
/// operation. It stands for the state of the machine (a busier machine,
/// with other work thrashing the caches, raises it), which moves the
/// engine's ratio to the peer too, a little: ops with more cache misses
/// suffer more.
#[must_use]
pub fn peer_level_ns(run: &CostRun) -> f64 {
    let logs: Vec<f64> = run.ops.values().map(|c| c.peer_ns.max(1e-9).ln()).collect();
    (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp()
}

/// Runs kept and set aside by a wall-clock measurement.
struct WallRuns {
    kept: Vec<CostRun>,
    set_aside: usize,
}

fn one_run(plan: &CostPlan, label: &str, quiet: bool) -> Result<CostRun, Error> {
    let bar = Progress::new(quiet, label);
    let run = cost::measure(plan, bar.as_ref());
    if let Some(bar) = &bar {
        bar.finish();
    }
    run
}

/// The peer level a new baseline keeps its runs around: the runs' median,
/// the lower of the two middle ones for an even count. A run's own level,
/// so at least that run is kept (the mean of two middle levels more than
/// twice the drift apart kept none, and the baseline's median of nothing
/// panicked).
fn new_baseline_level(levels: &[f64]) -> f64 {
    let mut sorted = levels.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

fn comparable(run: &CostRun, reference_ns: f64, drift: f64) -> bool {
    (peer_level_ns(run) / reference_ns - 1.0).abs() <= drift
}

/// Takes runs until `want` are comparable with `reference_ns` (the
/// baseline's peer level; `None` for a new baseline: the median of the
/// runs), trying at most [`WALL_ATTEMPTS_FACTOR`] × `want` times.
fn wall_runs(
    plan: &CostPlan,
    want: usize,
    reference_ns: Option<f64>,
    drift: f64,
    quiet: bool,
) -> Result<WallRuns, Error> {
    let mut all = Vec::new();
    let mut kept = 0;
    for attempt in 1..=want * WALL_ATTEMPTS_FACTOR {
        let run = one_run(plan, &format!("gate run {attempt}"), quiet)?;
        let ok = reference_ns.is_none_or(|r| comparable(&run, r, drift));
        if !quiet {
            let line: Vec<String> = run
                .ops
                .iter()
                .map(|(k, v)| format!("{k} {:.3}x", v.ratio))
                .collect();
            eprintln!(
                "  run {attempt}: peer level {:.0} ns{}; engine / peer: {}",
                peer_level_ns(&run),
                if ok { "" } else { " (the machine moved: set aside)" },
                line.join(", ")
            );
        }
        kept += usize::from(ok);
        all.push(run);
        if kept == want {
            break;
        }
    }
    let reference_ns = reference_ns
        .unwrap_or_else(|| new_baseline_level(&all.iter().map(peer_level_ns).collect::<Vec<_>>()));
    let total = all.len();
    let kept: Vec<CostRun> = all
        .into_iter()
        .filter(|r| comparable(r, reference_ns, drift))
        .collect();
    Ok(WallRuns {
        set_aside: total - kept.len(),
        kept,
    })
}

fn medians_of(runs: &[CostRun]) -> BTreeMap<String, f64> {
    let per_run: Vec<BTreeMap<String, f64>> = runs.iter().map(ratios).collect();
    per_run
        .first()
        .map(|first| {
            first
                .keys()
                .map(|k| {
                    (
                        k.clone(),
                        median(&per_run.iter().map(|r| r[k]).collect::<Vec<_>>()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a baseline, or compares with one; returns the verdict.
///
/// # Errors
/// [`Error`]: an unreadable or foreign baseline, a measurement that failed.
pub fn execute(request: &GateRequest) -> Result<GateVerdict, Error> {
    match request.kind {
        GateKind::WallClock => wall_clock(request),
        GateKind::Instructions => instructions(request),
    }
}

fn wall_clock(request: &GateRequest) -> Result<GateVerdict, Error> {
    let tolerance = request.tolerance.unwrap_or(WALL_TOLERANCE_DEFAULT);
    let drift = request.peer_drift.unwrap_or(PEER_DRIFT_MAX);
    if let Some(path) = &request.write_baseline {
        let default = CostPlan::default();
        let plan = CostPlan {
            sessions: request.sessions.unwrap_or(default.sessions),
            ops_per_slice: request.ops.unwrap_or(default.ops_per_slice),
            rounds: request.rounds.unwrap_or(default.rounds),
            ..default
        };
        let runs = wall_runs(&plan, request.repeat, None, drift, request.quiet)?;
        let baseline = Baseline {
            schema: BASELINE_SCHEMA.into(),
            schema_version: BASELINE_SCHEMA_VERSION,
            provenance: Provenance::now(&request.command),
            plan,
            ratios: medians_of(&runs.kept),
            peer_level_ns: median(&runs.kept.iter().map(peer_level_ns).collect::<Vec<_>>()),
            set_aside: runs.set_aside,
            runs: runs.kept,
        };
        write_json(path, &baseline)?;
        println!(
            "baseline written: {} (medians of {} runs; {} set aside)",
            path.display(),
            baseline.runs.len(),
            baseline.set_aside
        );
        return Ok(GateVerdict::Pass);
    }
    let path = request
        .baseline
        .clone()
        .unwrap_or_else(|| PathBuf::from(WALL_BASELINE_DEFAULT));
    let baseline: Baseline = read_versioned(&path, BASELINE_SCHEMA, BASELINE_SCHEMA_VERSION)?;
    check_plan(&path, baseline.plan.check())?;
    check_shards(&path, baseline.plan.shards)?;
    let mut plan = baseline.plan;
    if let (true, Some(rounds)) = (request.verdict, request.rounds) {
        if rounds != plan.rounds {
            return Err(Error::Usage(format!(
                "--rounds {rounds} with --verdict: the baseline {} has runs of {} rounds, and a run's figure is the \
                 median of its rounds (of another count, another figure); drop --rounds, or write a baseline with it",
                path.display(),
                plan.rounds
            )));
        }
    }
    plan.rounds = request.rounds.unwrap_or(plan.rounds);
    // A verdict keeps only runs whose machine matches the baseline's (the
    // peer's level); a report takes `repeat` runs of this sitting, setting
    // aside only those far from its own median, and says how far the
    // sitting's level is from the baseline's (it kept no run at all on a
    // machine that had moved, and printed nothing but MISSING).
    let reference = request.verdict.then_some(baseline.peer_level_ns);
    let runs = wall_runs(&plan, request.repeat, reference, drift, request.quiet)?;
    let from = if request.verdict {
        format!("the baseline's {:.0} ns", baseline.peer_level_ns)
    } else {
        "this sitting's median".into()
    };
    println!(
        "gate (wall clock): engine / peer CPU per operation, median of {} run(s) of {} rounds ({} set aside: the peer's level \
         moved more than {:.0}% from {from}), vs {} ({}, {}), tolerance {:.0}%\n",
        runs.kept.len(),
        plan.rounds,
        runs.set_aside,
        drift * 100.0,
        path.display(),
        baseline.provenance.created_at,
        baseline.provenance.git.short(),
        tolerance * 100.0
    );
    if !request.verdict && !runs.kept.is_empty() {
        let level = median(&runs.kept.iter().map(peer_level_ns).collect::<Vec<_>>());
        println!(
            "peer level {level:.0} ns in this sitting, {:.0} ns in the baseline's ({:+.0}%): the ratios move with it\n",
            baseline.peer_level_ns,
            (level / baseline.peer_level_ns - 1.0) * 100.0
        );
    }
    let per_run: Vec<BTreeMap<String, f64>> = runs.kept.iter().map(ratios).collect();
    let rows = compare(&baseline.ratios, &per_run, tolerance);
    let shown = if request.verdict { Some(tolerance) } else { None };
    print!("{}", table(&rows, shown, &|v| format!("{v:.3}x")));
    let verdict = if !request.verdict {
        GateVerdict::Reported
    } else if runs.kept.len() * 2 < request.repeat {
        GateVerdict::Inconclusive
    } else {
        GateVerdict::of(passes(&rows))
    };
    finish(
        request,
        GateKind::WallClock,
        &path,
        tolerance,
        (runs.kept, runs.set_aside),
        None,
        rows,
        verdict,
    )
}

fn instructions(request: &GateRequest) -> Result<GateVerdict, Error> {
    let tolerance = request.tolerance.unwrap_or(INSTRUCTIONS_TOLERANCE_DEFAULT);
    if !request.quiet {
        eprintln!("gate (instructions): counting under callgrind (about a minute)");
    }
    if let Some(path) = &request.write_baseline {
        let default = CountPlan::default();
        let plan = CountPlan {
            sessions: request.sessions.unwrap_or(default.sessions),
            ops: request.ops.unwrap_or(default.ops),
            ..default
        };
        let baseline = InstructionBaseline {
            schema: INSTRUCTIONS_SCHEMA.into(),
            schema_version: INSTRUCTIONS_SCHEMA_VERSION,
            provenance: Provenance::now(&request.command),
            valgrind: callgrind::valgrind_version(),
            rustc: built_by(),
            plan,
            debug_build: cfg!(debug_assertions),
            counts: callgrind::measure(&plan)?,
        };
        write_json(path, &baseline)?;
        println!("baseline written: {}", path.display());
        return Ok(GateVerdict::Pass);
    }
    let path = request
        .baseline
        .clone()
        .unwrap_or_else(|| PathBuf::from(INSTRUCTIONS_BASELINE_DEFAULT));
    let baseline: InstructionBaseline =
        read_versioned(&path, INSTRUCTIONS_SCHEMA, INSTRUCTIONS_SCHEMA_VERSION)?;
    check_plan(&path, baseline.plan.check())?;
    check_shards(&path, baseline.plan.shards)?;
    check_build(&path, baseline.debug_build)?;
    let counts = callgrind::measure(&baseline.plan)?;
    let running = callgrind::valgrind_version();
    let compiler = built_by();
    let rows = compare(
        &baseline.counts.engine,
        std::slice::from_ref(&counts.engine),
        tolerance,
    );
    println!(
        "gate (instructions): the engine's instructions per operation under callgrind vs {} ({}, {}), tolerance {:.1}%\n",
        path.display(),
        baseline.provenance.created_at,
        baseline.provenance.git.short(),
        tolerance * 100.0
    );
    print!("{}", table(&rows, Some(tolerance), &|v| format!("{v:.1}")));
    let verdict = instructions_verdict(
        passes(&rows),
        [baseline.valgrind.as_deref(), baseline.rustc.as_deref()],
        [running.as_deref(), compiler.as_deref()],
    );
    if baseline.valgrind != running || running.is_none() || baseline.rustc != compiler || compiler.is_none() {
        println!(
            "\nnote: the baseline was counted under {} from a build by {}, this run under {} from a build by {}{}",
            baseline.valgrind.as_deref().unwrap_or("an unrecorded valgrind"),
            baseline.rustc.as_deref().unwrap_or("an unrecorded compiler"),
            running
                .as_deref()
                .unwrap_or("a valgrind that does not say its version"),
            compiler.as_deref().unwrap_or("an unknown compiler"),
            match verdict {
                GateVerdict::Inconclusive => {
                    "; the counts moved beyond the tolerance, and whether the code or the tools moved them cannot be \
                     told: refresh the baseline with these tools (scripts/refresh-baseline.sh)"
                }
                _ => "; the counts agree within the tolerance",
            }
        );
    }
    finish(
        request,
        GateKind::Instructions,
        &path,
        tolerance,
        (Vec::new(), 0),
        Some(counts),
        rows,
        verdict,
    )
}

/// The compiler that built this loadgen (`rustc -V`, recorded by the
/// build script), `None` if it did not say.
#[must_use]
pub fn built_by() -> Option<String> {
    option_env!("LOADGEN_RUSTC_VERSION")
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The instruction gate's verdict: a regression counted with other tools
/// than the baseline's, `[valgrind, rustc]` (or one of them unknown), is
/// inconclusive: valgrind's version can move the counts (the CPU it
/// reports picks the C library's routines), and so can the compiler's
/// code generation (inlining, layout) with no change to the code.
#[must_use]
pub fn instructions_verdict(
    passed: bool,
    baseline_tools: [Option<&str>; 2],
    running_tools: [Option<&str>; 2],
) -> GateVerdict {
    let same_tools = baseline_tools == running_tools && running_tools.iter().all(Option::is_some);
    match (passed, same_tools) {
        (true, _) => GateVerdict::Pass,
        (false, true) => GateVerdict::Fail,
        (false, false) => GateVerdict::Inconclusive,
    }
}

#[allow(clippy::too_many_arguments)] // the pieces of one result document
fn finish(
    request: &GateRequest,
    kind: GateKind,
    baseline: &Path,
    tolerance: f64,
    (runs, set_aside): (Vec<CostRun>, usize),
    counts: Option<Counts>,
    rows: Vec<GateRow>,
    verdict: GateVerdict,
) -> Result<GateVerdict, Error> {
    println!(
        "\ngate: {}",
        match verdict {
            GateVerdict::Pass => "PASS",
            GateVerdict::Fail => "FAIL (regression beyond tolerance)",
            GateVerdict::Reported => {
                "REPORTED (no verdict: against a baseline from another sitting, an unchanged engine's ratios move by up to \
                 about 15% on a shared machine; --verdict judges, for a baseline written in the same sitting)"
            }
            GateVerdict::Inconclusive => match kind {
                GateKind::WallClock =>
                    "INCONCLUSIVE (too few runs comparable with the baseline's: the machine is in another state)",
                GateKind::Instructions =>
                    "INCONCLUSIVE (counted with another valgrind or compiler than the baseline: refresh the baseline)",
            },
        }
    );
    if let Some(out) = &request.out {
        let result = GateResult {
            schema: GATE_RESULT_SCHEMA.into(),
            kind,
            provenance: Provenance::now(&request.command),
            baseline: baseline.to_owned(),
            tolerance,
            runs,
            set_aside,
            counts,
            rows,
            verdict,
            passed: verdict == GateVerdict::Pass,
        };
        write_json(out, &result)?;
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_baseline_keeps_at_least_one_run_whatever_the_levels() {
        for levels in [
            vec![100.0, 150.0],
            vec![100.0],
            vec![90.0, 100.0, 140.0, 150.0],
            vec![150.0, 100.0],
        ] {
            let level = new_baseline_level(&levels);
            assert!(
                levels.iter().any(|l| (l / level - 1.0).abs() <= 0.01),
                "{levels:?}: {level}"
            );
        }
        assert!(
            (new_baseline_level(&[150.0, 100.0]) - 100.0).abs() < 1e-9,
            "the lower middle"
        );
    }

    fn metrics(get: f64, update: f64) -> BTreeMap<String, f64> {
        [("get".to_owned(), get), ("update".to_owned(), update)]
            .into_iter()
            .collect()
    }

    fn judge(rows: &[GateRow], metric: &str) -> Judgement {
        rows.iter().find(|r| r.metric == metric).unwrap().judgement
    }

    #[test]
    fn a_median_beyond_the_tolerance_is_a_regression_and_one_bad_run_is_not() {
        let base = metrics(1.0, 1.0);
        let rows = compare(
            &base,
            &[metrics(1.12, 1.0), metrics(1.15, 1.02), metrics(1.0, 0.99)],
            0.08,
        );
        assert_eq!(
            judge(&rows, "get"),
            Judgement::Regression,
            "median 1.12 is 12% up"
        );
        assert_eq!(judge(&rows, "update"), Judgement::Within);
        assert!(!passes(&rows));
        let rows = compare(
            &base,
            &[metrics(1.01, 1.0), metrics(1.6, 1.0), metrics(0.99, 1.0)],
            0.08,
        );
        assert!(passes(&rows), "one run of three off does not fail the gate");
        let r = rows.iter().find(|r| r.metric == "get").unwrap();
        assert_eq!((r.min, r.max, r.candidate), (Some(0.99), Some(1.6), Some(1.01)));
    }

    #[test]
    fn improvements_pass_and_the_tolerance_is_a_boundary_not_a_cliff() {
        let base = metrics(1.0, 1.0);
        let rows = compare(&base, &[metrics(0.7, 1.0)], 0.08);
        assert_eq!(judge(&rows, "get"), Judgement::Improvement);
        assert!(passes(&rows));
        let rows = compare(&base, &[metrics(1.079, 1.0)], 0.08);
        assert_eq!(judge(&rows, "get"), Judgement::Within);
        let rows = compare(&base, &[metrics(1.081, 1.0)], 0.08);
        assert_eq!(judge(&rows, "get"), Judgement::Regression);
        // Exactly the tolerance, either way, as the doubles compute it.
        let two = parse_tolerance("2%").unwrap();
        let base = metrics(100.0, 100.0);
        let rows = compare(&base, &[metrics(102.0, 98.0)], two);
        assert_eq!(judge(&rows, "get"), Judgement::Within);
        assert_eq!(judge(&rows, "update"), Judgement::Within);
        let rows = compare(&base, &[metrics(102.001, 97.999)], two);
        assert_eq!(judge(&rows, "get"), Judgement::Regression);
        assert_eq!(judge(&rows, "update"), Judgement::Improvement);
    }

    /// A kind the run measures and the baseline lacks (a baseline from
    /// before the kind was counted, or a truncated one) fails: passing it
    /// would leave that kind ungated without a word; so does a comparison
    /// that judged nothing.
    #[test]
    fn a_kind_the_baseline_lacks_fails_and_so_does_judging_nothing() {
        let mut old = metrics(1.0, 1.0);
        old.remove("update");
        let rows = compare(&old, &[metrics(1.0, 1.0)], 0.08);
        assert_eq!(judge(&rows, "update"), Judgement::NotInBaseline);
        assert!(!passes(&rows));
        assert!(table(&rows, Some(0.08), &|v| format!("{v:.1}")).contains("NOT IN BASELINE"));
        let rows = compare(&BTreeMap::new(), &[metrics(1.0, 1.0)], 0.08);
        assert_eq!(rows.len(), 2);
        assert!(!passes(&rows));
        assert!(!passes(&[]), "nothing judged is no pass");
    }

    #[test]
    fn a_missing_kind_or_a_zero_baseline_fails() {
        let mut partial = metrics(1.0, 1.0);
        partial.remove("update");
        let rows = compare(&metrics(1.0, 1.0), &[partial], 0.08);
        assert_eq!(judge(&rows, "update"), Judgement::Missing);
        assert!(!passes(&rows));
        let rows = compare(&metrics(0.0, 1.0), &[metrics(5.0, 1.0)], 0.08);
        assert_eq!(judge(&rows, "get"), Judgement::Missing);
        let rows = compare(&metrics(-1.0, 1.0), &[metrics(5.0, 1.0)], 0.08);
        assert_eq!(
            judge(&rows, "get"),
            Judgement::Missing,
            "a negative baseline would make every count an improvement"
        );
        assert!(table(&rows, Some(0.08), &|v| format!("{v:.1}")).contains("MISSING"));
        assert!(
            table(&rows, None, &|v| format!("{v:.1}")).contains("MISSING"),
            "a report still names a kind it could not measure"
        );
    }

    #[test]
    fn a_regression_under_another_valgrind_or_compiler_is_inconclusive() {
        let v = Some("valgrind-3.19.0");
        let c = Some("rustc 1.95.0 (59807616e 2026-04-14)");
        assert_eq!(instructions_verdict(true, [v, c], [v, c]), GateVerdict::Pass);
        assert_eq!(instructions_verdict(false, [v, c], [v, c]), GateVerdict::Fail);
        assert_eq!(
            instructions_verdict(true, [Some("valgrind-3.22.0"), None], [v, c]),
            GateVerdict::Pass,
            "counts that agree agree, whatever counted them"
        );
        let other_v = Some("valgrind-3.22.0");
        let other_c = Some("rustc 1.96.0 (0000000 2026-06-01)");
        for (base, running) in [
            ([other_v, c], [v, c]),
            ([None, c], [v, c]),
            ([v, c], [None, c]),
            ([v, other_c], [v, c]),
            ([v, None], [v, c]),
            ([v, c], [v, None]),
        ] {
            assert_eq!(
                instructions_verdict(false, base, running),
                GateVerdict::Inconclusive,
                "{base:?} / {running:?}"
            );
        }
        assert!(
            built_by().is_some_and(|v| v.starts_with("rustc ")),
            "{:?}",
            built_by()
        );
    }

    /// The committed baselines were written before plans recorded the
    /// shard count: they read as measured with [`GATE_SHARDS`], which they
    /// were, and are compared.
    #[test]
    fn the_committed_baselines_measured_the_engine_the_gates_measure() {
        let wall: Baseline = serde_json::from_str(include_str!("../../results/baseline.json")).unwrap();
        let counted: InstructionBaseline =
            serde_json::from_str(include_str!("../../results/baseline-instructions.json")).unwrap();
        for shards in [wall.plan.shards, counted.plan.shards] {
            assert_eq!(shards, GATE_SHARDS);
            check_shards(Path::new("committed"), shards).unwrap();
        }
        let err = check_shards(Path::new("b.json"), 16).unwrap_err().to_string();
        assert!(
            err.contains("16 shards") && err.contains("refresh-baseline"),
            "{err}"
        );
        // Counted in a release build. A build of the other kind than this
        // one is refused, naming both; one of the same kind compares.
        assert!(!counted.debug_build);
        let other = !cfg!(debug_assertions);
        let err = check_build(Path::new("b.json"), other).unwrap_err().to_string();
        assert!(
            err.contains("debug build") && err.contains("release build") && err.contains("--release"),
            "{err}"
        );
        check_build(Path::new("b.json"), cfg!(debug_assertions)).unwrap();
    }

    #[test]
    fn medians_and_tolerances_parse() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!((parse_tolerance("10%").unwrap() - 0.1).abs() < 1e-12);
        assert!((parse_tolerance(" 2.5% ").unwrap() - 0.025).abs() < 1e-12);
        assert!((parse_tolerance("100%").unwrap() - 1.0).abs() < 1e-12);
        for bad in ["0%", "x", "%", "101%", "-5%", "NaN%", "inf%"] {
            assert!(parse_tolerance(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// A bare number could be a fraction or a percentage (was `0.99` 99%
    /// and `1` 1%?): it is refused, with the spelling that is meant.
    #[test]
    fn a_tolerance_without_a_percent_sign_is_refused() {
        for bare in ["0.99", "1", "15", "0.1"] {
            let err = parse_tolerance(bare).expect_err(bare);
            assert!(err.contains(&format!("{bare}%")), "{bare}: {err}");
        }
        // A fraction as the old spelling meant it is named too.
        let err = parse_tolerance("0.1").unwrap_err();
        assert!(err.contains("10%"), "{err}");
    }
}
