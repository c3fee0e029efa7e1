//! Latency and throughput targets (TOML), and the verdict of a run against
//! them.
//!
//! **The verdict model.** A run alternates slices between the backend and
//! the reference peer ([`crate::schedule`]); slices the machine disturbed
//! are reported and set aside ([`crate::slices`]). On the rest, a `p50`
//! bound holds the typical slice's median (the median of the slices'
//! medians), absolutely; a `p99`, `p999` or `max` bound holds what the
//! backend adds over the peer: the machine's hiccups, which both sides
//! see, cancel, and a backend stall or slowdown does not. A `p99` compares
//! the two sides' typical slices (the median of each side's judged slices'
//! p99s, over groups of slices for a kind too rare in one; pooled for a
//! kind too rare in the run), since a run's few slices
//! in which a worker was held up for milliseconds, unseen by the slices'
//! meters, decide a pooled p99 on whichever side they land; a `p999` or
//! `max` compares the two sides' judged slices pooled, where a stall shows.
//! Without a peer (`--no-peer`, a sweep's steps) the tails are judged
//! absolutely: a `p99` on the typical slice (pooled for a rare kind), a
//! `p999` or `max` on the judged slices pooled.
//! A run with too few judged slices is inconclusive, not failed.
//!
//! ```toml
//! name = "seed"
//! throughput_min_ops_per_s = 1000   # optional floor, point operations
//! error_ratio_max = 0.01            # optional: failed / issued, all kinds
//!                                   # (absent: any failed operation fails)
//! [ops.get]
//! p50 = "2us"    # any of p50, p99, p999, max
//! p99 = "100us"
//! [ops.list]
//! p99 = "100ms"
//! page_min = 10_000   # held only when the scenario lists pages this large
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::limits::{JUDGED_SHARE_MIN, NO_SAMPLES_FAIL_OFFERED_MIN, OFFERED_PER_NEEDED, RATE_HELD_SHARE};
use crate::mix::Op;
use crate::scenario::Scenario;
use crate::table::render_table;
use crate::units::Rate;
use crate::units::{format_ns, Dur};
use crate::workers::Outcome;

/// The targets files shipped in `loadgen/targets/`, by name.
pub const BUILTIN: [(&str, &str); 2] = [
    ("seed", include_str!("../targets/seed.toml")),
    ("embedded", include_str!("../targets/embedded.toml")),
];

/// One targets file: a tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// The tier's name, shown in the verdict table.
    pub name: String,
    /// What it stands for.
    #[serde(default)]
    pub description: String,
    /// Floor on point operations per second.
    #[serde(default)]
    pub throughput_min_ops_per_s: Option<f64>,
    /// Ceiling on failed / issued operations (`None`: no operation may
    /// fail).
    #[serde(default)]
    pub error_ratio_max: Option<f64>,
    /// Bounds per operation kind.
    #[serde(default)]
    pub ops: BTreeMap<Op, OpTarget>,
}

/// Bounds on one operation kind's latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpTarget {
    /// Median.
    pub p50: Option<Dur>,
    /// 99th percentile.
    pub p99: Option<Dur>,
    /// 99.9th percentile.
    pub p999: Option<Dur>,
    /// Slowest.
    pub max: Option<Dur>,
    /// For `list`: the page size the bound is meant for.
    pub page_min: Option<usize>,
}

/// Why targets could not be loaded (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// The file could not be read.
    #[error("cannot read targets {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Bad TOML or values.
    #[error("targets {name}: {reason}")]
    Invalid {
        /// File or built-in name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Targets {
    /// A shipped tier by name, or a file by path.
    ///
    /// # Errors
    /// [`TargetsError`].
    pub fn load(name_or_path: &str) -> Result<Self, TargetsError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(name_or_path, text);
        }
        let text = std::fs::read_to_string(Path::new(name_or_path)).map_err(|source| TargetsError::Read {
            path: name_or_path.to_owned(),
            source,
        })?;
        Self::parse(name_or_path, &text)
    }

    /// Parses and checks TOML text.
    ///
    /// # Errors
    /// [`TargetsError::Invalid`].
    pub fn parse(name: &str, text: &str) -> Result<Self, TargetsError> {
        let invalid = |reason: String| TargetsError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let targets: Targets = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (op, bounds) in &targets.ops {
            if bounds.p50.is_none() && bounds.p99.is_none() && bounds.p999.is_none() && bounds.max.is_none() {
                return Err(invalid(format!("ops.{op} sets no bound (p50, p99, p999 or max)")));
            }
            if bounds.page_min.is_some() && *op != Op::List {
                return Err(invalid(format!("ops.{op}: page_min applies to list only")));
            }
        }
        if let Some(min) = targets.throughput_min_ops_per_s {
            if !(min.is_finite() && min > 0.0) {
                return Err(invalid(format!(
                    "throughput_min_ops_per_s = {min}: must be a number above 0"
                )));
            }
        }
        if let Some(r) = targets.error_ratio_max {
            if !(0.0..=1.0).contains(&r) {
                return Err(invalid(format!("error_ratio_max = {r}: must be between 0 and 1")));
            }
        }
        Ok(targets)
    }
}

/// One operation kind's measured figures, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// Operations measured.
    pub count: u64,
    /// Of which returned an error.
    pub errors: u64,
    /// Operations per second.
    pub throughput_ops_per_s: f64,
    /// Mean latency.
    pub mean_ns: f64,
    /// Fastest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Slowest.
    pub max_ns: u64,
}

impl OpStats {
    /// Figures of a histogram measured over `seconds`, in which `completed`
    /// operations count towards the rate (open loop: those that completed
    /// within the schedule; the histogram also holds the late ones).
    #[must_use]
    pub fn of(hist: &crate::hist::Hist, errors: u64, completed: u64, seconds: f64) -> Self {
        if hist.is_empty() {
            return Self {
                errors,
                ..Self::default()
            };
        }

        let throughput_ops_per_s = completed as f64 / seconds.max(1e-9);
        Self {
            count: hist.len(),
            errors,
            throughput_ops_per_s,
            mean_ns: hist.mean(),
            min_ns: hist.min(),
            p50_ns: hist.value_at_quantile(0.5),
            p90_ns: hist.value_at_quantile(0.9),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            p9999_ns: hist.value_at_quantile(0.9999),
            max_ns: hist.max(),
        }
    }
}

/// What the verdict knows of one operation kind: figures pooled over the
/// judged slices of each side, and the typical slice's median.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpFacts {
    /// The backend over its judged slices.
    pub backend: OpStats,
    /// The peer over its judged slices (`None`: no peer in the run).
    pub peer: Option<OpStats>,
    /// The median of the backend's judged slices' medians.
    pub typical_p50_ns: Option<u64>,
    /// The median of the backend's judged slices' p99s (of groups of
    /// slices with enough of the kind for one; `None`: too rare in the
    /// run).
    pub typical_p99_ns: Option<u64>,
    /// The same of the peer's judged slices.
    pub peer_typical_p99_ns: Option<u64>,
    /// The backend's operations of this kind in every measured slice,
    /// judged or not.
    pub count_all: u64,
    /// The operations of this kind the schedule offers the backend in its
    /// measured slices (open loop, and the lister at any rate); in closed
    /// loop, where the backend's speed sets the count, `count_all`.
    /// Whether a quantile can be judged at all is decided on this, so that
    /// the machine's disturbances cannot turn a judged bound into "too few
    /// samples" from one run to the next.
    pub offered: u64,
}

/// What the verdict needs to know about a run.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    /// Figures per kind that ran.
    pub ops: BTreeMap<Op, OpFacts>,
    /// Kinds the scenario issues (a kind absent here is "not run", not failed).
    pub issued: Vec<Op>,
    /// The lister's page size.
    pub list_page: usize,
    /// The backend's point operations per second over its undisturbed
    /// slices (`None`: the machine disturbed every slice).
    pub throughput_ops_per_s: Option<f64>,
    /// The run had a reference peer: tails are judged on what the backend
    /// adds over it.
    pub peer: bool,
    /// The backend's operations over every measured slice, judged or set
    /// aside (what the error ratio is taken over: a failure counts wherever
    /// it fell).
    pub ops_all: u64,
    /// Of which failed.
    pub errors_all: u64,
}

/// Pass, fail, or not applicable to this scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The bound held.
    Pass,
    /// The bound did not hold.
    Fail,
    /// The scenario does not exercise what the bound is about.
    NotRun,
    /// Every sample the bound could be judged on fell in a slice the
    /// machine disturbed: not judged, and it counts towards an
    /// inconclusive run.
    Disturbed,
}

/// The run's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    /// Every bound held on the judged slices.
    Pass,
    /// A bound failed on the judged slices.
    Fail,
    /// The machine disturbed so many slices that the rest cannot stand for
    /// the run (fewer than [`JUDGED_SHARE_MIN`] of either side's judged),
    /// or every slice a bound's samples fell in, and nothing failed.
    Inconclusive,
}

impl RunVerdict {
    /// `PASS`, `FAIL`, `INCONCLUSIVE`.
    #[must_use]
    pub const fn shout(self) -> &'static str {
        match self {
            RunVerdict::Pass => "PASS",
            RunVerdict::Fail => "FAIL",
            RunVerdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// One row of the verdict table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Tier (targets file name), or `run` for the load's own checks.
    pub tier: String,
    /// Operation kind, or `all` for run-wide bounds.
    pub subject: String,
    /// Which figure: `p50 typical`, `p99 added`, `p999 added`, `max added`
    /// (`p99`, ... without a peer), `throughput`, `errors`, `rate`.
    pub bound: String,
    /// The limit, as written.
    pub limit: String,
    /// The backend's figure behind the measurement, if it has one.
    pub backend: Option<String>,
    /// The peer's figure the backend's is compared with, if any.
    pub peer: Option<String>,
    /// The measurement the limit applies to.
    pub measured: String,
    /// Limit / measured for upper bounds (measured / limit for floors): how
    /// many times over the bound holds (< 1: it does not).
    pub margin: Option<f64>,
    /// The outcome.
    pub status: Status,
    /// Why it is not run, or a remark.
    pub note: String,
}

impl Verdict {
    /// A row with no backend or peer figure behind it.
    #[must_use]
    pub fn plain(tier: &str, subject: &str, bound: &str, limit: String, measured: String) -> Self {
        Self {
            tier: tier.to_owned(),
            subject: subject.to_owned(),
            bound: bound.to_owned(),
            limit,
            backend: None,
            peer: None,
            measured,
            margin: None,
            status: Status::Pass,
            note: String::new(),
        }
    }
}

/// Which percentile a bound is on.
#[derive(Clone, Copy)]
enum Quantile {
    P50,
    P99,
    P999,
    Max,
}

impl Quantile {
    fn of(self, s: &OpStats) -> u64 {
        match self {
            Quantile::P50 => s.p50_ns,
            Quantile::P99 => s.p99_ns,
            Quantile::P999 => s.p999_ns,
            Quantile::Max => s.max_ns,
        }
    }

    /// Samples each side needs for the quantile to be more than its
    /// slowest sample.
    fn samples_min(self) -> u64 {
        match self {
            Quantile::P50 | Quantile::Max => 1,
            Quantile::P99 => 100,
            Quantile::P999 => 1_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P99 => "p99",
            Quantile::P999 => "p999",
            Quantile::Max => "max",
        }
    }

    /// The bound's name in the table: what the figure is.
    fn label(self, peer: bool) -> String {
        match (self, peer) {
            (Quantile::P50, _) => "p50 typical".into(),
            (q, true) => format!("{} added", q.name()),
            (q, false) => q.name().into(),
        }
    }
}

/// Why a bound cannot be judged, if it cannot, and what that makes it.
///
/// A quantile needs at least one sample above it on each side (100 for
/// p99, 1,000 for p999); below that the "p99" is the slowest of a handful
/// (a list page a second gives a 20 s run about ten per side), and one
/// preempted sample decides the run. Whether enough samples can come is
/// the schedule's doing, so it is decided on what the schedule offers: at
/// least [`OFFERED_PER_NEEDED`] times what the quantile needs, or the bound
/// is not applicable to this scenario, on every run of it. A bound the
/// schedule could have judged but whose judged slices kept too few samples
/// is the machine's doing: the bound is unjudged and the run inconclusive.
fn unjudgeable(q: Quantile, f: &OpFacts) -> Option<(Status, String)> {
    let needed = q.samples_min();
    let offered_min = needed * OFFERED_PER_NEEDED;
    if f.offered < offered_min {
        return Some((
            Status::NotRun,
            format!(
                "{} offered: {} needs {offered_min} (a longer run, or a higher rate of this kind)",
                f.offered,
                q.name()
            ),
        ));
    }
    let fewest = f.peer.map_or(f.backend.count, |p| p.count.min(f.backend.count));
    (fewest < needed).then(|| {
        (
            Status::Disturbed,
            format!(
                "{fewest} samples in judged slices of {} offered: {} needs {needed}",
                f.offered,
                q.name()
            ),
        )
    })
}

/// Judges one bound of one kind. A median is judged on the typical slice,
/// absolutely: a slower engine moves it, the machine's hiccups do not. A
/// tail is judged on what the backend adds over the peer in the judged
/// slices: the hiccups the two share cancel, a backend stall does not.
fn judge_bound(tier: &str, op: Op, q: Quantile, limit: Dur, facts: &OpFacts) -> Verdict {
    let limit_ns = limit.as_ns();
    let bound = q.label(facts.peer.is_some());
    let (backend, peer, measured_ns, measured) = match (q, facts.peer) {
        (Quantile::P50, _) => {
            let typical = facts.typical_p50_ns.unwrap_or(facts.backend.p50_ns);
            (format_ns(typical), None, typical, format_ns(typical))
        }
        // A p99 is what the backend adds in the typical slice: a few
        // slices' stalls that no meter sees (a worker held up inside
        // operations) decide a p99 pooled over a run, whichever side they
        // land on; they leave each side's median slice alone.
        (Quantile::P99, Some(_)) if facts.typical_p99_ns.is_some() && facts.peer_typical_p99_ns.is_some() => {
            let (b, p) = (
                facts.typical_p99_ns.unwrap_or(0),
                facts.peer_typical_p99_ns.unwrap_or(0),
            );
            let added = b.saturating_sub(p);
            (
                format_ns(b),
                Some(format_ns(p)),
                added,
                format!("+{}", format_ns(added)),
            )
        }
        // Without a peer (a sweep's steps) a p99 is the backend's typical
        // slice's, absolutely, for the same reason.
        (Quantile::P99, None) if facts.typical_p99_ns.is_some() => {
            let b = facts.typical_p99_ns.unwrap_or(0);
            (format_ns(b), None, b, format_ns(b))
        }
        (_, Some(peer)) => {
            let (b, p) = (q.of(&facts.backend), q.of(&peer));
            let added = b.saturating_sub(p);
            (
                format_ns(b),
                Some(format_ns(p)),
                added,
                format!("+{}", format_ns(added)),
            )
        }
        (_, None) => {
            let b = q.of(&facts.backend);
            (format_ns(b), None, b, format_ns(b))
        }
    };
    Verdict {
        backend: Some(backend),
        peer,
        margin: Some(limit_ns as f64 / measured_ns.max(1) as f64),
        status: if measured_ns <= limit_ns {
            Status::Pass
        } else {
            Status::Fail
        },
        ..Verdict::plain(tier, op.name(), &bound, limit.to_string(), measured)
    }
}

/// Checks `facts` against one tier.
#[must_use]
pub fn evaluate(targets: &Targets, facts: &RunFacts) -> Vec<Verdict> {
    let tier = targets.name.as_str();
    let mut rows = Vec::new();
    for (op, bounds) in &targets.ops {
        let checks = [
            (Quantile::P50, bounds.p50),
            (Quantile::P99, bounds.p99),
            (Quantile::P999, bounds.p999),
            (Quantile::Max, bounds.max),
        ];
        let not_run = if facts.issued.contains(op) {
            bounds
                .page_min
                .filter(|min| facts.list_page < *min)
                .map(|page_min| format!("pages of {} < page_min {page_min}", facts.list_page))
        } else {
            Some("not in this scenario".to_owned())
        };
        for (q, limit) in checks {
            let Some(limit) = limit else { continue };
            let sampled = facts.ops.get(op).filter(|f| f.backend.count > 0);
            let label = q.label(facts.peer);
            rows.push(match (&not_run, sampled) {
                (Some(reason), _) => Verdict {
                    status: Status::NotRun,
                    note: reason.clone(),
                    ..Verdict::plain(tier, op.name(), &label, limit.to_string(), "-".into())
                },
                // A kind too rare to land in a judged slice (a list page a
                // second on a busy machine) is reported, not failed, and
                // leaves the run inconclusive; one that never ran at all
                // fails. Too few samples to judge the quantile even had
                // they all been judged is not the machine's doing.
                (None, None) => {
                    let f = facts.ops.get(op).copied().unwrap_or_default();
                    let (status, note) = match unjudgeable(q, &f) {
                        // Too few offered to judge: whatever landed on this
                        // side (the lister's pages go to either side).
                        Some((Status::NotRun, note)) if f.offered > 0 => (Status::NotRun, note),
                        // None drawn where chance could do it (a few due,
                        // the mix's draws all went to other kinds) is not
                        // the backend's doing.
                        // (In closed loop the count stands in for what was
                        // due: none at all is a kind that never answered.)
                        _ if f.count_all == 0 && (1..NO_SAMPLES_FAIL_OFFERED_MIN).contains(&f.offered) => (
                            Status::NotRun,
                            format!(
                                "no samples of {} due (few enough for chance to draw none)",
                                f.offered
                            ),
                        ),
                        _ if f.count_all == 0 => (Status::Fail, "no samples".to_owned()),
                        Some((Status::NotRun, note)) => (Status::NotRun, note),
                        _ => (
                            Status::Disturbed,
                            format!("all {} samples in disturbed slices", f.count_all),
                        ),
                    };
                    Verdict {
                        status,
                        note,
                        ..Verdict::plain(tier, op.name(), &label, limit.to_string(), "-".into())
                    }
                }
                (None, Some(f)) => match unjudgeable(q, f) {
                    Some((status, note)) => Verdict {
                        status,
                        note,
                        ..Verdict::plain(tier, op.name(), &label, limit.to_string(), "-".into())
                    },
                    None => judge_bound(tier, *op, q, limit, f),
                },
            });
        }
    }
    rows.extend(run_wide(targets, facts));
    rows
}

/// The tier's throughput floor and error ceiling.
fn run_wide(targets: &Targets, facts: &RunFacts) -> Vec<Verdict> {
    let tier = targets.name.as_str();
    let mut rows = Vec::new();
    if let Some(min) = targets.throughput_min_ops_per_s {
        let limit = format!("{min:.0} ops/s");
        rows.push(match facts.throughput_ops_per_s {
            // Not the backend's doing: nothing to judge the floor on.
            None => Verdict {
                status: Status::Disturbed,
                note: "no undisturbed slice".into(),
                ..Verdict::plain(tier, "all", "throughput", limit, "-".into())
            },
            Some(measured) => Verdict {
                margin: Some(measured / min),
                status: if measured >= min {
                    Status::Pass
                } else {
                    Status::Fail
                },
                note: "floor".into(),
                ..Verdict::plain(tier, "all", "throughput", limit, format!("{measured:.0} ops/s"))
            },
        });
    }
    // Every measured slice's: failures come with a busy machine, whose
    // slices are the ones set aside.
    let (issued, failed) = (facts.ops_all, facts.errors_all);
    let ratio = failed as f64 / issued.max(1) as f64;
    if let Some(max) = targets.error_ratio_max {
        rows.push(Verdict {
            status: if ratio <= max { Status::Pass } else { Status::Fail },
            note: format!("{failed} of {issued} failed"),
            ..Verdict::plain(tier, "all", "errors", format!("{max}"), format!("{ratio:.6}"))
        });
    } else if failed > 0 {
        // No ceiling set is none allowed: a backend that fails fast
        // would otherwise pass every latency bound and the floor.
        rows.push(Verdict {
            status: Status::Fail,
            note: format!("{failed} of {issued} failed; no error_ratio_max set, so none may"),
            ..Verdict::plain(tier, "all", "errors", "0".into(), format!("{ratio:.6}"))
        });
    }
    rows
}

/// True if no row failed.
#[must_use]
pub fn all_pass(rows: &[Verdict]) -> bool {
    rows.iter().all(|r| r.status != Status::Fail)
}

/// The run's verdict: fail if the failed operations broke their bound
/// (counted over every measured slice, judged or set aside, so no busy
/// machine excuses them); else inconclusive when fewer than
/// [`JUDGED_SHARE_MIN`] of either side's measured slices were judged,
/// whatever the rows say (also with no bound to judge: the figures are
/// what is in doubt); otherwise fail
/// if any row failed; otherwise inconclusive if a bound went unjudged
/// because the machine disturbed every slice its samples fell in
/// ([`Status::Disturbed`]): a pass says every bound held.
#[must_use]
pub fn run_verdict(rows: &[Verdict], judged_share: f64) -> RunVerdict {
    if rows
        .iter()
        .any(|r| r.status == Status::Fail && r.bound == "errors")
    {
        RunVerdict::Fail
    } else if judged_share < JUDGED_SHARE_MIN {
        RunVerdict::Inconclusive
    } else if !all_pass(rows) {
        RunVerdict::Fail
    } else if any_disturbed(rows) {
        RunVerdict::Inconclusive
    } else {
        RunVerdict::Pass
    }
}

/// Why a run is inconclusive, for people: too few slices judged, or the
/// bounds the machine kept from judging.
#[must_use]
pub fn inconclusive_reason(rows: &[Verdict], judged_share: f64) -> String {
    if judged_share < JUDGED_SHARE_MIN {
        return format!(
            "only {:.0}% of the slices could be judged (at least {:.0}% needed); the machine was too busy",
            judged_share * 100.0,
            JUDGED_SHARE_MIN * 100.0
        );
    }
    let unjudged: Vec<String> = rows
        .iter()
        .filter(|r| r.status == Status::Disturbed)
        .map(|r| format!("{} {} {}", r.tier, r.subject, r.bound))
        .collect();
    format!(
        "nothing failed, but the machine disturbed every slice the samples of {} fell in, so it was not judged",
        unjudged.join(", ")
    )
}

/// True if a bound went unjudged because of the machine.
#[must_use]
pub fn any_disturbed(rows: &[Verdict]) -> bool {
    rows.iter().any(|r| r.status == Status::Disturbed)
}

/// A run judged: the rows, the verdict, and what they were drawn from.
pub struct Judged {
    /// One row per bound.
    pub verdicts: Vec<Verdict>,
    /// The verdict.
    pub verdict: RunVerdict,
    /// The figures judged.
    pub facts: RunFacts,
    /// Open loop: the backend kept its schedule in its judged slices.
    pub rate_held: Option<bool>,
    /// Judged / measured slices, the lower of the two sides.
    pub judged_share: f64,
}

/// Judges a load against `tiers`, plus the load's own checks (the rate
/// held, something measured).
#[must_use]
pub fn judge(scenario: &Scenario, outcome: &Outcome, tiers: &[Targets]) -> Judged {
    let facts = facts_of(scenario, outcome);
    let rate = rate_verdict(scenario, outcome);
    let rate_held = rate.as_ref().and_then(|v| match v.status {
        Status::Pass => Some(true),
        Status::Fail => Some(false),
        Status::NotRun | Status::Disturbed => None,
    });
    let mut verdicts: Vec<Verdict> = rate.into_iter().collect();
    verdicts.extend(nothing_measured_verdict(outcome));
    for tier in tiers {
        verdicts.extend(evaluate(tier, &facts));
    }
    let judged_share = outcome.peer.as_ref().map_or(outcome.backend.judged_share, |p| {
        outcome.backend.judged_share.min(p.judged_share)
    });
    // A run that measured nothing fails; it is not for the machine to excuse.
    let verdict = if outcome.backend.tally.all.point_ops().is_empty() {
        RunVerdict::Fail
    } else {
        run_verdict(&verdicts, judged_share)
    };
    Judged {
        verdicts,
        verdict,
        facts,
        rate_held,
        judged_share,
    }
}

/// The per-kind figures of the judged slices.
#[must_use]
pub fn facts_of(scenario: &Scenario, outcome: &Outcome) -> RunFacts {
    let backend = &outcome.backend;
    // Point operations over the judged slices their clients ran in, list
    // pages over all judged slices (the lister runs to the end: `--ops`).
    let stats = |side: &crate::workers::SideOutcome, op: Op| {
        let t = &side.tally;
        let h = t.judged.get(op);
        let seconds = if op == Op::List {
            side.judged_s
        } else {
            side.judged_active_s
        };
        OpStats::of(
            h,
            t.judged.errors[op.index()],
            t.judged.completed(op),
            seconds.max(1e-9),
        )
    };
    let mut facts = RunFacts {
        list_page: scenario.list.page,
        throughput_ops_per_s: backend.quiet_throughput_ops_per_s,
        peer: outcome.peer.is_some(),
        ops_all: backend.tally.all.total(),
        errors_all: backend.tally.all.errors.iter().sum(),
        ..RunFacts::default()
    };
    for op in Op::ALL {
        let issued = if op == Op::List {
            scenario.list.rate_per_s > 0.0
        } else {
            scenario.mix.includes(op)
        };
        if issued {
            facts.issued.push(op);
        }
        if issued || !backend.tally.judged.get(op).is_empty() {
            facts.ops.insert(
                op,
                OpFacts {
                    backend: stats(backend, op),
                    peer: outcome.peer.as_ref().map(|p| stats(p, op)),
                    typical_p50_ns: backend.tally.typical_p50_ns(op),
                    typical_p99_ns: backend.tally.typical_p99_ns(op),
                    peer_typical_p99_ns: outcome.peer.as_ref().and_then(|p| p.tally.typical_p99_ns(op)),
                    count_all: backend.tally.all.get(op).len(),
                    offered: offered(scenario, outcome, op),
                },
            );
        }
    }
    facts
}

/// The operations of kind `op` the schedule offers the backend over its
/// measured slices: the lister's rate and, in open loop, the point
/// operations' rate times the kind's share of the mix, over the slices up
/// to the point clients' end (with `--ops` they can stop before the lister
/// does), and no more than the kind's share of the `--ops` limit (the
/// clients stop inside a slice, which counts whole). In closed loop the
/// speed sets how many come: the kind's share of the point operations
/// measured (its own count would make a kind the mix's draws missed one
/// that never answered), on the faster side when there is a peer.
fn offered(scenario: &Scenario, outcome: &Outcome, op: Op) -> u64 {
    let measured_s = outcome.backend.tally.measured as f64 * outcome.slice_ns as f64 / 1e9;
    let share = scenario.mix.share(op);
    match (op, scenario.rate) {
        (Op::List, _) => scheduled(scenario.list.rate_per_s, measured_s),
        (_, Rate::PerSec(rate)) => {
            let due = scheduled(rate * share, outcome.backend.active_s);
            match point_ops_max(scenario) {
                Some(limit) => due.min(scheduled(limit as f64 * share, 1.0)),
                None => due,
            }
        }
        (_, Rate::Max) => {
            let point_ops = |all: &crate::hist::OpHists| -> u64 {
                Op::ALL
                    .into_iter()
                    .filter(|&o| o != Op::List)
                    .map(|o| all.get(o).len())
                    .sum()
            };
            // With a peer, the faster side's count (both had the same
            // slices): on its own, a backend slower in one sitting would
            // offer fewer and take its own tail bounds out of the run.
            let measured = point_ops(&outcome.backend.tally.all)
                .max(outcome.peer.as_ref().map_or(0, |peer| point_ops(&peer.tally.all)));
            scheduled(measured as f64 * share, 1.0)
        }
    }
}

/// The point operations the clients issue at most in the measured time
/// (`--ops`, split evenly between them and rounded up), `None` without a
/// limit.
fn point_ops_max(scenario: &Scenario) -> Option<u64> {
    let clients = scenario.clients.max(1) as u64;
    (scenario.ops_max > 0).then(|| scenario.ops_max.div_ceil(clients).saturating_mul(clients))
}

/// Operations a schedule of `per_s` a second offers over `measured_s`
/// seconds: any share above none counts at least one, so a kind the
/// schedule offers too rarely to judge is not judged, whether or not one
/// of its few draws came (rounded, a kind expected 0.03 times failed with
/// "no samples" when its draw did not come and was not judged when it
/// did: a verdict that flipped on an unchanged commit).
fn scheduled(per_s: f64, measured_s: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let offered = (per_s * measured_s).ceil() as u64;
    offered
}

/// The load's own check (open loop): did the backend keep its schedule in
/// its undisturbed slices? At least [`RATE_HELD_SHARE`] of the operations
/// due in them must complete within the slice they were due in, and
/// nothing may go unsent.
#[must_use]
pub fn rate_verdict(scenario: &Scenario, outcome: &Outcome) -> Option<Verdict> {
    let Rate::PerSec(target) = scenario.rate else {
        return None;
    };
    let tally = &outcome.backend.tally;
    // Empty slices are undisturbed by construction (nothing was there to
    // be held up): at a low rate, quiet slices may all be empty while
    // every slice with operations due was disturbed.
    if tally.quiet_slices == 0 || (tally.offered_quiet == 0 && tally.offered_all > 0) {
        let floor = target * RATE_HELD_SHARE;
        return Some(Verdict {
            status: Status::Disturbed,
            note: "no undisturbed slice had operations due".into(),
            ..Verdict::plain("run", "all", "rate", format!("{floor:.0} ops/s"), "-".into())
        });
    }
    Some(rate_row(
        target,
        tally.in_time_quiet,
        tally.offered_quiet,
        tally.quiet_slices,
        outcome.slice_ns as f64 / 1e9,
        outcome.backend.summary.unsent,
    ))
}

/// The rate row: of the `offered` operations due in `quiet_slices`
/// undisturbed slices of `slice_s` seconds, `in_time` completed within
/// their slice. Judged against what was due in those slices, not against
/// `target` times their length: which side a slice goes to is a coin, so
/// at a low rate the operations due in a side's slices vary with the seed
/// (the floor failed runs that kept every operation on time), and with
/// `--ops` the point clients stop before the scheduled end while the lister
/// goes on (their slices after that offered nothing). Shown as rates.
fn rate_row(
    target: f64,
    in_time: u64,
    offered: u64,
    quiet_slices: u64,
    slice_s: f64,
    unsent: u64,
) -> Verdict {
    let quiet_s = (quiet_slices as f64 * slice_s).max(1e-9);
    if offered == 0 {
        return Verdict {
            status: Status::NotRun,
            note: "nothing was due in the undisturbed slices".into(),
            ..Verdict::plain(
                "run",
                "all",
                "rate",
                format!("{:.0} ops/s", target * RATE_HELD_SHARE),
                "-".into(),
            )
        };
    }
    let floor = offered as f64 * RATE_HELD_SHARE / quiet_s;
    let achieved = in_time as f64 / quiet_s;
    let held = in_time as f64 >= offered as f64 * RATE_HELD_SHARE && unsent == 0;
    Verdict {
        margin: Some(achieved / floor),
        status: if held { Status::Pass } else { Status::Fail },
        note: if unsent > 0 {
            format!("{unsent} operations never sent")
        } else {
            format!(
                "{:.0}% of the {offered} operations due must complete in their slice",
                RATE_HELD_SHARE * 100.0
            )
        },
        ..Verdict::plain(
            "run",
            "all",
            "rate",
            format!("{floor:.0} ops/s"),
            format!("{achieved:.0} ops/s"),
        )
    }
}

/// A run that measured no point operation cannot pass, whatever its
/// targets say (a rate too low for any operation to be due in the
/// measured time, say).
fn nothing_measured_verdict(outcome: &Outcome) -> Option<Verdict> {
    let measured = outcome.backend.tally.all.point_ops().len();
    (measured == 0).then(|| Verdict {
        status: Status::Fail,
        note: "no operation was measured after the warm-up".into(),
        ..Verdict::plain("run", "all", "ops", "at least 1".into(), "0".into())
    })
}

/// The verdict table as text, for stdout.
#[must_use]
pub fn table(rows: &[Verdict]) -> String {
    let header = [
        "tier", "op", "bound", "limit", "backend", "peer", "measured", "margin", "verdict",
    ];
    let body: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let verdict = match (r.status, r.note.is_empty()) {
                (Status::Pass, _) => "pass".to_owned(),
                (Status::Fail, true) => "FAIL".to_owned(),
                (Status::Fail, false) => format!("FAIL ({})", r.note),
                (Status::NotRun | Status::Disturbed, _) => format!("n/a ({})", r.note),
            };
            [
                r.tier.clone(),
                r.subject.clone(),
                r.bound.clone(),
                r.limit.clone(),
                r.backend.clone().unwrap_or_else(|| "-".into()),
                r.peer.clone().unwrap_or_else(|| "-".into()),
                r.measured.clone(),
                r.margin.map_or_else(|| "-".into(), format_margin),
                verdict,
            ]
        })
        .collect();
    render_table(&header, &body)
}

/// A margin as the tables show it: two decimals near the edge (0.96x is
/// not "1.0x", a fail that read as a pass), whole numbers from 10x, and a
/// measured +0 (limit over 1 ns) as over 1000x, not its arithmetic.
#[must_use]
pub fn format_margin(margin: f64) -> String {
    if margin > 1_000.0 {
        ">1000x".into()
    } else if margin >= 10.0 {
        format!("{margin:.0}x")
    } else {
        format!("{margin:.2}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's facts with gets alone (a peer in the run if `facts` has one).
    fn gets(facts: OpFacts) -> RunFacts {
        RunFacts {
            ops: [(Op::Get, facts)].into_iter().collect(),
            issued: vec![Op::Get],
            peer: facts.peer.is_some(),
            ..RunFacts::default()
        }
    }

    /// An open-loop outcome of 20 measured slices of 100 ms, the point
    /// clients running through `active_s` of them.
    fn open_loop_outcome(active_s: f64) -> Outcome {
        let mut tally = crate::slices::SideTally::default();
        tally.measured = 20;
        let side = crate::workers::SideOutcome {
            tally,
            summary: crate::collect::ClientSummary::default(),
            active_s,
            throughput_ops_per_s: 0.0,
            quiet_throughput_ops_per_s: None,
            judged_share: 1.0,
            idle_after: 0,
            measured_s: 2.0,
            judged_active_s: active_s,
            judged_s: 2.0,
        };
        Outcome {
            backend: side,
            peer: None,
            slices: Vec::new(),
            slice_ns: 100_000_000,
            timeline: Vec::new(),
            interval_log: Vec::new(),
            measured_s: 2.0,
            cpu: crate::workers::CpuUse::default(),
            workers_cpu_known: true,
            steal_ms: None,
            started_at: std::time::SystemTime::UNIX_EPOCH,
            warmup: std::time::Duration::ZERO,
        }
    }

    /// With `--ops` the point clients stop before the lister: a point
    /// kind is offered over their time only (counted over the lister's,
    /// a kind that got no sample would fail with "no samples" for
    /// operations never due), the lister's over the whole measured time.
    #[test]
    fn point_kinds_are_offered_only_while_the_point_clients_ran() {
        let scenario = Scenario {
            rate: Rate::PerSec(1_000.0),
            mix: "get=90,touch=10".parse().expect("mix"),
            list: crate::scenario::ListLoad {
                rate_per_s: 10.0,
                ..Scenario::default().list
            },
            ..Scenario::default()
        };
        let ran_through = open_loop_outcome(0.5);
        assert_eq!(offered(&scenario, &ran_through, Op::Get), 450);
        assert_eq!(offered(&scenario, &ran_through, Op::Touch), 50);
        assert_eq!(offered(&scenario, &ran_through, Op::List), 20);
        let to_the_end = open_loop_outcome(2.0);
        assert_eq!(offered(&scenario, &to_the_end, Op::Get), 1_800);
    }

    /// With `--ops` in open loop the point clients stop after the limit,
    /// inside a slice: a kind is offered no more than its share of the
    /// limit. Counted over that whole last slice, `--ops 1000` at 200K/s
    /// offered 12,000 gets where about 600 ran, and left every quantile
    /// bound unjudged, blamed on the machine (or failed a kind with no
    /// samples for draws never due, as the seed decided).
    #[test]
    fn an_ops_limit_caps_what_a_kind_is_offered() {
        let scenario = Scenario {
            rate: Rate::PerSec(200_000.0),
            mix: "get=60,touch=40".parse().expect("mix"),
            clients: 4,
            ops_max: 1_000,
            ..Scenario::default()
        };
        let outcome = open_loop_outcome(0.1);
        assert_eq!(offered(&scenario, &outcome, Op::Get), 600);
        assert_eq!(offered(&scenario, &outcome, Op::Touch), 400);
        // A limit the schedule does not reach leaves the schedule's count.
        let far = Scenario {
            ops_max: 1_000_000,
            ..scenario.clone()
        };
        assert_eq!(offered(&far, &outcome, Op::Get), 12_000);
        // A limit near u64::MAX, rounded up to whole clients, stays a
        // limit (it wrapped to 0, and nothing was judged).
        let huge = Scenario {
            ops_max: u64::MAX,
            clients: 2,
            ..scenario
        };
        assert_eq!(offered(&huge, &outcome, Op::Get), 12_000);
    }

    /// In closed loop a kind is offered its share of the point operations
    /// measured, as in open loop its share of the schedule: a rare kind
    /// that the mix's draws missed is not judged (with its own count
    /// standing in, none failed with "no samples" while one to three were
    /// not judged: a verdict the draws decided), and a kind that got none
    /// of the many due fails.
    #[test]
    fn closed_loop_offers_a_kind_its_share_of_the_measured_operations() {
        let scenario = Scenario {
            rate: Rate::Max,
            mix: "get=95,peek=5".parse().expect("mix"),
            ..Scenario::default()
        };
        let with_gets = |n: u64| {
            let mut outcome = open_loop_outcome(2.0);
            for _ in 0..n {
                outcome.backend.tally.all.record(Op::Get, 1_000, true);
            }
            outcome
        };
        assert_eq!(offered(&scenario, &with_gets(40), Op::Peek), 2);
        assert_eq!(offered(&scenario, &with_gets(40), Op::Get), 38);
        assert_eq!(offered(&scenario, &with_gets(1_000), Op::Peek), 50);
        let t = Targets::parse("t", "name = \"t\"\n[ops.peek]\np50 = \"1s\"").unwrap();
        let judged = |outcome: &Outcome| {
            let mut f = facts(1);
            f.issued.push(Op::Peek);
            f.ops.insert(
                Op::Peek,
                OpFacts {
                    offered: offered(&scenario, outcome, Op::Peek),
                    ..OpFacts::default()
                },
            );
            evaluate(&t, &f)[0].status
        };
        assert_eq!(judged(&with_gets(40)), Status::NotRun);
        assert_eq!(judged(&with_gets(1_000)), Status::Fail);
    }

    /// With a peer, closed loop offers a kind its share of the larger of
    /// the two sides' point operations: a backend slower in one sitting
    /// (a regression, a busier machine) measures fewer and, on its own
    /// count, would take its tail bounds out of the run ("n/a": PASS)
    /// where a faster one is judged on the same latencies.
    #[test]
    fn closed_loop_with_a_peer_offers_what_the_faster_side_measured() {
        let scenario = Scenario {
            rate: Rate::Max,
            mix: "get=100".parse().expect("mix"),
            ..Scenario::default()
        };
        let mut outcome = open_loop_outcome(2.0);
        for _ in 0..100 {
            outcome.backend.tally.all.record(Op::Get, 1_000, true);
        }
        let mut peer = open_loop_outcome(2.0).backend;
        for _ in 0..1_000 {
            peer.tally.all.record(Op::Get, 1_000, true);
        }
        outcome.peer = Some(peer);
        assert_eq!(offered(&scenario, &outcome, Op::Get), 1_000);
    }

    fn facts(get_p99_ns: u64) -> RunFacts {
        let stats = OpStats {
            count: 1000,
            p50_ns: 300,
            p99_ns: get_p99_ns,
            p999_ns: get_p99_ns * 2,
            max_ns: get_p99_ns * 10,
            ..OpStats::default()
        };
        let f = OpFacts {
            backend: stats,
            peer: None,
            typical_p50_ns: Some(300),
            typical_p99_ns: None,
            peer_typical_p99_ns: None,
            count_all: 1000,
            offered: 1000,
        };
        RunFacts {
            ops: [(Op::Get, f), (Op::Create, f)].into_iter().collect(),
            issued: vec![Op::Get, Op::Create, Op::List],
            list_page: 100,
            throughput_ops_per_s: Some(5_000.0),
            peer: false,
            ops_all: 2000,
            errors_all: 0,
        }
    }

    /// A failed operation counts wherever it fell: in a slice set aside (the
    /// machine disturbed it) as much as in a judged one. Failures come with
    /// busy machines, which are the slices set aside, so counting judged
    /// slices only made the verdict follow the machine.
    #[test]
    fn a_failure_in_a_slice_set_aside_still_fails_the_run() {
        let no_ceiling = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"1ms\"").unwrap();
        let ceiling = Targets::parse(
            "t",
            "name = \"t\"\nerror_ratio_max = 0.0001\n[ops.get]\np99 = \"1ms\"",
        )
        .unwrap();
        let mut f = facts(5_000);
        f.errors_all = 1;
        let errors = |rows: Vec<Verdict>| {
            rows.into_iter()
                .find(|r| r.subject == "all" && r.bound == "errors")
        };
        let row = errors(evaluate(&no_ceiling, &f)).expect("an errors row");
        assert_eq!(row.status, Status::Fail, "{row:?}");
        assert!(row.note.contains("1 of 2000"), "{row:?}");
        let row = errors(evaluate(&ceiling, &f)).expect("an errors row");
        assert_eq!(row.status, Status::Fail, "1 in 2000 is over 1 in 10,000: {row:?}");
    }

    #[test]
    fn shipped_tiers_parse() {
        for (name, _) in BUILTIN {
            let t = Targets::load(name).unwrap();
            assert_eq!(t.name, name);
            assert!(t.ops.contains_key(&Op::Get));
        }
        let seed = Targets::load("seed").unwrap();
        assert_eq!(seed.ops[&Op::Create].p99.unwrap().as_ns(), 10_000_000);
        assert_eq!(seed.ops[&Op::Get].p99.unwrap().as_ns(), 100_000);
        assert_eq!(seed.ops[&Op::List].page_min, Some(10_000));
    }

    #[test]
    fn retrieve_is_an_alias_and_bad_files_say_why() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.retrieve]\np99 = \"1ms\"").unwrap();
        assert!(t.ops.contains_key(&Op::Get));
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\np98 = \"1ms\"").unwrap_err();
        assert!(err.to_string().contains("p98"), "{err}");
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\n").unwrap_err();
        assert!(err.to_string().contains("no bound"), "{err}");
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"fast\"").unwrap_err();
        assert!(err.to_string().contains("fast"), "{err}");
        assert!(Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"1ms\"\npage_min = 5").is_err());
    }

    #[test]
    fn verdicts_pass_fail_and_not_run() {
        let t = Targets::parse(
            "t",
            r#"
            name = "t"
            throughput_min_ops_per_s = 1000
            [ops.get]
            p50 = "1us"
            p99 = "10us"
            [ops.delete]
            p99 = "1ms"
            [ops.list]
            p99 = "100ms"
            page_min = 10000
            "#,
        )
        .unwrap();
        let rows = evaluate(&t, &facts(5_000));
        let find = |op: &str, bound: &str| rows.iter().find(|r| r.subject == op && r.bound == bound).unwrap();
        assert_eq!(find("get", "p50 typical").status, Status::Pass);
        assert_eq!(find("get", "p99").status, Status::Pass);
        assert!((find("get", "p99").margin.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(find("delete", "p99").status, Status::NotRun);
        assert_eq!(find("list", "p99").status, Status::NotRun);
        assert!(find("list", "p99").note.contains("page_min"));
        assert_eq!(find("all", "throughput").status, Status::Pass);
        assert!(all_pass(&rows));

        let rows = evaluate(&t, &facts(50_000));
        assert_eq!(
            rows.iter()
                .find(|r| r.bound == "p99" && r.subject == "get")
                .unwrap()
                .status,
            Status::Fail
        );
        assert!(!all_pass(&rows));
        let text = table(&rows);
        assert!(
            text.contains("FAIL") && text.contains("n/a (not in this scenario)"),
            "{text}"
        );
    }

    #[test]
    fn margins_read_right_at_the_edge_and_far_from_it() {
        assert_eq!(format_margin(0.96), "0.96x");
        assert_eq!(format_margin(1.05), "1.05x");
        assert_eq!(format_margin(36.4), "36x");
        assert_eq!(format_margin(20_000_000.0), ">1000x");
    }

    /// A kind offered a few times (judgeable for its p50 or max) whose
    /// draws all went to other kinds: at 4 expected, no draw at all comes
    /// in about 1.6% of seeds. That is chance, not a backend that never
    /// ran it: not judged. Offered often enough for none to be impossible
    /// by chance, none still fails.
    #[test]
    fn a_kind_without_samples_fails_only_when_chance_cannot_explain_it() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.peek]\np50 = \"1ms\"").unwrap();
        let mut f = facts(1);
        f.issued.push(Op::Peek);
        for (offered, status) in [(4, Status::NotRun), (29, Status::NotRun), (30, Status::Fail)] {
            f.ops.insert(
                Op::Peek,
                OpFacts {
                    offered,
                    ..OpFacts::default()
                },
            );
            let rows = evaluate(&t, &f);
            let row = rows.iter().find(|r| r.subject == "peek").expect("a peek row");
            assert_eq!(row.status, status, "offered {offered}: {row:?}");
        }
    }

    /// The rate row compares what completed in time with what the schedule
    /// offered in the same undisturbed slices, not with the target rate
    /// times their length: at a low rate the operations due in a run's
    /// undisturbed slices vary from seed to seed (which side gets a slice
    /// is a coin), and with `--ops` the point clients stop while the
    /// lister goes on to the scheduled end, leaving slices with nothing
    /// offered.
    #[test]
    fn the_rate_row_judges_what_was_offered_in_the_slices_it_counts() {
        let row = |in_time, offered, quiet_slices, unsent| {
            rate_row(8.0, in_time, offered, quiet_slices, 0.1, unsent)
        };
        // 100 quiet slices at 8/s would be 80 operations; the coin gave 75,
        // all in time.
        assert_eq!(row(75, 75, 100, 0).status, Status::Pass);
        // `--ops 1000` at 4,750/s: 1,000 in 22 slices, 78 empty ones after.
        assert_eq!(rate_row(5_000.0, 1_000, 1_000, 100, 0.1, 0).status, Status::Pass);
        // A backend that fell behind: 70 of 75 in time is under 95%.
        assert_eq!(row(70, 75, 100, 0).status, Status::Fail);
        // Nothing may go unsent.
        assert_eq!(row(75, 75, 100, 3).status, Status::Fail);
        // Nothing offered in the undisturbed slices: nothing to judge.
        assert_eq!(row(0, 0, 100, 0).status, Status::NotRun);
    }

    /// A run whose slices with operations due were all disturbed, at a
    /// low rate where other slices were empty (and so undisturbed), did
    /// not judge its rate: inconclusive, not a rate row "not run" that
    /// lets the run pass.
    #[test]
    fn only_empty_slices_undisturbed_is_a_disturbed_rate() {
        let scenario = Scenario {
            rate: Rate::PerSec(5.0),
            ..Scenario::default()
        };
        let mut outcome = open_loop_outcome(2.0);
        let tally = &mut outcome.backend.tally;
        (tally.quiet_slices, tally.offered_quiet, tally.in_time_quiet) = (4, 0, 0);
        (tally.offered_all, tally.in_time_all, tally.disturbed) = (10, 0, 1);
        let row = rate_verdict(&scenario, &outcome).expect("open loop");
        assert_eq!(row.status, Status::Disturbed, "{row:?}");
        // Nothing due at all (an `--ops` run's clients done): not run.
        outcome.backend.tally.offered_all = 0;
        let row = rate_verdict(&scenario, &outcome).expect("open loop");
        assert_eq!(row.status, Status::NotRun, "{row:?}");
    }

    #[test]
    fn an_issued_kind_without_samples_fails() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.list]\np99 = \"1s\"").unwrap();
        let mut f = facts(1);
        // Offered enough to judge, and not one answered: it fails.
        f.ops.insert(
            Op::List,
            OpFacts {
                offered: 1_000,
                ..OpFacts::default()
            },
        );
        let rows = evaluate(&t, &f);
        assert_eq!(rows[0].status, Status::Fail);
        assert_eq!(rows[0].note, "no samples");
        // Offered too few to judge (two pages at 0.2 a second, say, and the
        // schedule's coin gave the other side both): not judged, whatever
        // the count; it failed in 1 run of 16 and passed in the others.
        for offered in [1, 2, 399] {
            f.ops.insert(
                Op::List,
                OpFacts {
                    offered,
                    ..OpFacts::default()
                },
            );
            let rows = evaluate(&t, &f);
            assert_eq!(rows[0].status, Status::NotRun, "offered {offered}: {:?}", rows[0]);
        }
        // A schedule that offers a kind less than once over the run
        // (a weight of 1 in 100,000 at a low rate) offers it once: not
        // judged, whether or not its draw came.
        assert_eq!(scheduled(0.0025, 10.0), 1);
        assert_eq!(scheduled(2.0, 10.0), 20);
        assert_eq!(scheduled(0.0, 10.0), 0);
        // None offered at all (a closed loop whose kind never answered, the
        // count standing in for the offer): it fails.
        f.ops.remove(&Op::List);
        assert_eq!(evaluate(&t, &f)[0].status, Status::Fail, "none offered");
    }

    /// A floor that is not a number above 0 is refused (NaN failed every
    /// run, a negative one passed every run); a run with no undisturbed
    /// slice leaves the floor unjudged (inconclusive), not failed at 0.
    #[test]
    fn the_throughput_floor_is_a_number_and_judged_only_on_undisturbed_slices() {
        for bad in ["nan", "-5.0", "0.0", "inf"] {
            let text = format!("name = \"t\"\nthroughput_min_ops_per_s = {bad}");
            let err = Targets::parse("t", &text).unwrap_err().to_string();
            assert!(err.contains("throughput_min_ops_per_s"), "{bad}: {err}");
        }
        let t = Targets::parse("t", "name = \"t\"\nthroughput_min_ops_per_s = 1000").unwrap();
        let mut f = facts(1);
        f.throughput_ops_per_s = None;
        let rows = evaluate(&t, &f);
        let row = rows.iter().find(|r| r.bound == "throughput").unwrap();
        assert_eq!(row.status, Status::Disturbed, "{row:?}");
        f.throughput_ops_per_s = Some(500.0);
        let rows = evaluate(&t, &f);
        assert_eq!(
            rows.iter().find(|r| r.bound == "throughput").unwrap().status,
            Status::Fail
        );
    }

    #[test]
    fn error_ratio_is_checked() {
        let t = Targets::parse("t", "name = \"t\"\nerror_ratio_max = 0.01").unwrap();
        let mut f = facts(1);
        f.errors_all = 100;
        let rows = evaluate(&t, &f);
        assert_eq!(rows[0].status, Status::Fail, "100 of 2000 failed: {rows:?}");
        f.errors_all = 10;
        assert_eq!(evaluate(&t, &f)[0].status, Status::Pass, "10 of 2000 failed");
    }

    /// A targets file without `error_ratio_max` allows no failure: a
    /// backend that fails every operation fast must not pass on latency.
    #[test]
    fn without_a_ceiling_no_operation_may_fail() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"1ms\"").unwrap();
        let mut f = facts(1);
        let errors = |rows: &[Verdict]| rows.iter().filter(|r| r.bound == "errors").count();
        assert_eq!(errors(&evaluate(&t, &f)), 0, "no failures, no row");
        f.errors_all = 1;
        let rows = evaluate(&t, &f);
        let row = rows.iter().find(|r| r.bound == "errors").expect("an errors row");
        assert_eq!(row.status, Status::Fail, "{row:?}");
        assert!(!all_pass(&rows));
    }

    #[test]
    fn tails_are_judged_on_what_the_backend_adds_over_the_peer() {
        let t = Targets::parse(
            "t",
            "name = \"t\"\n[ops.get]\np50 = \"2us\"\np99 = \"50us\"\np999 = \"5ms\"",
        )
        .unwrap();
        let stats = |p50, p99, p999| OpStats {
            count: 100_000,
            p50_ns: p50,
            p99_ns: p99,
            p999_ns: p999,
            ..OpStats::default()
        };
        let with = |backend: OpStats, peer: OpStats, typical| {
            gets(OpFacts {
                backend,
                peer: Some(peer),
                typical_p50_ns: Some(typical),
                typical_p99_ns: None,
                peer_typical_p99_ns: None,
                count_all: 100_000,
                offered: 100_000,
            })
        };
        let outcome = |rows: &[Verdict], bound: &str| rows.iter().find(|r| r.bound == bound).unwrap().status;
        // A busy machine: both sides' tails in the tens of microseconds and
        // milliseconds, close together: passes, though 74 us > 50 us.
        let rows = evaluate(
            &t,
            &with(stats(400, 74_000, 6_000_000), stats(350, 70_000, 5_800_000), 400),
        );
        assert_eq!(outcome(&rows, "p99 added"), Status::Pass, "{}", table(&rows));
        assert_eq!(outcome(&rows, "p999 added"), Status::Pass);
        assert!(table(&rows).contains("+4us"), "{}", table(&rows));
        // A 100 ms stall in the backend's slices: its p99.9 runs 90 ms ahead.
        let rows = evaluate(
            &t,
            &with(stats(400, 9_000, 90_000_000), stats(350, 8_000, 900_000), 400),
        );
        assert_eq!(outcome(&rows, "p999 added"), Status::Fail);
        // A slower engine: the typical slice's median is past 2 us, however
        // the peer did.
        let rows = evaluate(
            &t,
            &with(stats(5_400, 20_000, 900_000), stats(350, 8_000, 900_000), 5_400),
        );
        assert_eq!(outcome(&rows, "p50 typical"), Status::Fail);
    }

    /// With each side's typical slice known, a p99 is judged on what the
    /// backend adds there: a few slices on one side that a stall no meter
    /// saw held up (pooled p99s of 553 us against 49 us, an unchanged
    /// engine's false fail) do not fail it; a backend slower in every slice
    /// does, however its pool compares.
    #[test]
    fn a_p99_is_judged_on_the_typical_slice_when_both_sides_have_one() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"50us\"").unwrap();
        let stats = |p99| OpStats {
            count: 100_000,
            p99_ns: p99,
            ..OpStats::default()
        };
        let with = |backend: u64, peer: u64, typical: Option<(u64, u64)>| {
            gets(OpFacts {
                backend: stats(backend),
                peer: Some(stats(peer)),
                typical_p50_ns: Some(400),
                typical_p99_ns: typical.map(|t| t.0),
                peer_typical_p99_ns: typical.map(|t| t.1),
                count_all: 100_000,
                offered: 100_000,
            })
        };
        let row = |f: &RunFacts| {
            evaluate(&t, f)
                .into_iter()
                .find(|r| r.bound == "p99 added")
                .unwrap()
        };
        let stalls_on_one_side = row(&with(553_000, 49_000, Some((36_000, 44_000))));
        assert_eq!(stalls_on_one_side.status, Status::Pass, "{stalls_on_one_side:?}");
        assert_eq!(stalls_on_one_side.measured, "+0ns");
        let slower_everywhere = row(&with(120_000, 130_000, Some((110_000, 30_000))));
        assert_eq!(slower_everywhere.status, Status::Fail, "{slower_everywhere:?}");
        assert_eq!(slower_everywhere.measured, "+80us");
        // Without a typical slice on both sides (a kind too rare in a
        // slice), the pools decide, as before.
        assert_eq!(row(&with(553_000, 49_000, None)).status, Status::Fail);
    }

    /// Without a peer (`--no-peer`, every sweep step) a p99 is judged
    /// absolutely, on the typical slice too: the few slices a stall no meter
    /// saw held up (a pooled p99 of 553 us) do not decide it, so a sweep's
    /// step does not hold or break by where they land; a backend slow in
    /// every slice still fails. A kind too rare for a p99 of its own in a
    /// slice is judged on the pool.
    #[test]
    fn without_a_peer_a_p99_is_judged_on_the_typical_slice() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"50us\"").unwrap();
        let with = |pooled: u64, typical: Option<u64>| {
            gets(OpFacts {
                backend: OpStats {
                    count: 100_000,
                    p99_ns: pooled,
                    ..OpStats::default()
                },
                peer: None,
                typical_p50_ns: Some(400),
                typical_p99_ns: typical,
                peer_typical_p99_ns: None,
                count_all: 100_000,
                offered: 100_000,
            })
        };
        let row = |f: &RunFacts| evaluate(&t, f).into_iter().find(|r| r.bound == "p99").unwrap();
        let stalls_in_a_few_slices = row(&with(553_000, Some(36_000)));
        assert_eq!(
            stalls_in_a_few_slices.status,
            Status::Pass,
            "{stalls_in_a_few_slices:?}"
        );
        assert_eq!(stalls_in_a_few_slices.measured, "36us");
        let slower_everywhere = row(&with(130_000, Some(110_000)));
        assert_eq!(slower_everywhere.status, Status::Fail, "{slower_everywhere:?}");
        assert_eq!(slower_everywhere.measured, "110us");
        assert_eq!(row(&with(553_000, None)).status, Status::Fail);
        assert_eq!(row(&with(36_000, None)).status, Status::Pass);
    }

    #[test]
    fn too_few_judged_slices_make_a_run_inconclusive_not_failed() {
        let pass = [Verdict::plain("t", "get", "p99", "1ms".into(), "1us".into())];
        let fail = [Verdict {
            status: Status::Fail,
            ..pass[0].clone()
        }];
        assert_eq!(run_verdict(&pass, 1.0), RunVerdict::Pass);
        assert_eq!(run_verdict(&fail, 1.0), RunVerdict::Fail);
        assert_eq!(
            run_verdict(&fail, JUDGED_SHARE_MIN / 2.0),
            RunVerdict::Inconclusive
        );
        assert_eq!(
            run_verdict(&pass, JUDGED_SHARE_MIN / 2.0),
            RunVerdict::Inconclusive
        );
        // Failed operations count in every slice: no busy machine makes
        // their bound's failure inconclusive.
        let errors = [Verdict {
            status: Status::Fail,
            ..Verdict::plain("t", "all", "errors", "0".into(), "0.01".into())
        }];
        assert_eq!(run_verdict(&errors, JUDGED_SHARE_MIN / 2.0), RunVerdict::Fail);
        // A run with no bound to judge (`--targets none`, closed loop: no
        // rate row) is no pass when the machine let it judge next to
        // nothing: its figures are what is in doubt. It said PASS with no
        // slice of the peer judged.
        let not_run = [Verdict {
            status: Status::NotRun,
            ..pass[0].clone()
        }];
        for rows in [&[][..], &not_run[..]] {
            assert_eq!(run_verdict(rows, 0.0), RunVerdict::Inconclusive);
            assert_eq!(run_verdict(rows, 1.0), RunVerdict::Pass);
        }
    }

    /// A tail of a handful of samples is their slowest one: it is reported,
    /// not judged; with enough samples the same tail fails.
    #[test]
    fn a_tail_of_too_few_samples_is_not_judged() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.list]\np99 = \"10ms\"").unwrap();
        let slow = |count| OpStats {
            count,
            p50_ns: 1_000_000,
            p99_ns: 40_000_000,
            max_ns: 40_000_000,
            ..OpStats::default()
        };
        let mut f = facts(1);
        f.peer = true;
        for (count, offered, status) in [(9, 9, Status::NotRun), (100, 1_000, Status::Fail)] {
            f.ops.insert(
                Op::List,
                OpFacts {
                    backend: slow(count),
                    peer: Some(OpStats {
                        count: 1_000,
                        p99_ns: 2_000_000,
                        ..OpStats::default()
                    }),
                    typical_p50_ns: None,
                    typical_p99_ns: None,
                    peer_typical_p99_ns: None,
                    count_all: count,
                    offered,
                },
            );
            let rows = evaluate(&t, &f);
            let row = rows.iter().find(|r| r.subject == "list").unwrap();
            assert_eq!(row.status, status, "{count} samples: {row:?}");
            if status == Status::NotRun {
                assert!(row.note.starts_with("9 offered: p99 needs 400"), "{}", row.note);
            }
        }
    }

    /// Whether a tail can be judged follows from what the schedule offers,
    /// not from how many samples the machine left in judged slices: on one
    /// commit and one scenario, a bound is either always "n/a (too few)" or
    /// judged (inconclusive when the machine took too many of its slices),
    /// never one or the other by the luck of the run.
    #[test]
    fn whether_a_tail_is_judged_follows_the_schedule_not_the_machine() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.list]\np99 = \"10ms\"").unwrap();
        let slow = |count| OpStats {
            count,
            p99_ns: 40_000_000,
            ..OpStats::default()
        };
        let status = |offered: u64, judged: u64| {
            let mut f = facts(1);
            f.ops.insert(
                Op::List,
                OpFacts {
                    backend: slow(judged),
                    peer: None,
                    typical_p50_ns: None,
                    typical_p99_ns: None,
                    peer_typical_p99_ns: None,
                    count_all: offered,
                    offered,
                },
            );
            let rows = evaluate(&t, &f);
            rows.iter().find(|r| r.subject == "list").unwrap().clone()
        };
        // 120 offered: a quiet run judges 101 of them, a busy one 99; both
        // are "too few" for a p99, whichever the machine gave.
        for judged in [99, 101, 120] {
            let row = status(120, judged);
            assert_eq!(row.status, Status::NotRun, "{judged} judged: {row:?}");
            assert!(row.note.contains("120 offered"), "{}", row.note);
        }
        // 1,000 offered: enough to judge; a run that kept only 99 of them
        // is the machine's doing (inconclusive), 101 are judged.
        assert_eq!(status(1_000, 99).status, Status::Disturbed);
        assert!(status(1_000, 99).note.contains("99 samples in judged slices"));
        assert_eq!(status(1_000, 101).status, Status::Fail);
    }

    /// A bound the machine kept from judging (every sample in a disturbed
    /// slice) is not failed, but neither can the run pass on it: the run
    /// is inconclusive, unless a judged bound failed.
    #[test]
    fn a_bound_whose_samples_all_fell_in_disturbed_slices_makes_the_run_inconclusive() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.list]\nmax = \"10ms\"\np99 = \"10ms\"").unwrap();
        let mut f = facts(1);
        f.ops.insert(
            Op::List,
            OpFacts {
                count_all: 9,
                offered: 9,
                ..OpFacts::default()
            },
        );
        let rows = evaluate(&t, &f);
        let row = |bound: &str| rows.iter().find(|r| r.bound == bound).unwrap().clone();
        assert_eq!(row("max").status, Status::Disturbed);
        assert_eq!(row("max").note, "all 9 samples in disturbed slices");
        // Nine samples could not have judged a p99 however quiet the
        // machine: that bound is not the machine's doing.
        assert_eq!(row("p99").status, Status::NotRun, "{:?}", row("p99"));
        assert!(
            row("p99").note.contains("9 offered") && row("p99").note.contains("p99 needs 400"),
            "{}",
            row("p99").note
        );
        assert_eq!(
            run_verdict(&rows, 1.0),
            RunVerdict::Inconclusive,
            "a run cannot pass on a bound it did not judge"
        );
        assert_eq!(run_verdict(&rows, 0.0), RunVerdict::Inconclusive);
        let failed = Verdict {
            status: Status::Fail,
            ..row("max")
        };
        let why = inconclusive_reason(&rows, 1.0);
        assert!(why.contains("t list max") && !why.contains("p99"), "{why}");
        assert!(inconclusive_reason(&rows, 0.1).starts_with("only 10% of the slices"));
        let with_a_failure = [rows.clone(), vec![failed]].concat();
        assert_eq!(
            run_verdict(&with_a_failure, 1.0),
            RunVerdict::Fail,
            "a bound judged and failed fails the run, whatever else went unjudged"
        );
        let only_p99 = [row("p99")];
        assert_eq!(run_verdict(&only_p99, 1.0), RunVerdict::Pass);
    }
}
