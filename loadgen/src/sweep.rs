//! `loadgen sweep`: step the offered rate up until a bound breaks, then
//! bisect between the last step that held and the first that broke until
//! they are within [`KNEE_PRECISION`]; the knee is the highest rate that
//! held, reported with the bound that broke first.
//!
//! The population is created once; a short closed-loop phase finds the peak
//! (unless `--to` is given), then open-loop steps run at `to × i / steps`
//! for `i = 1, 2, ...` until one fails (a bound of the targets, or the rate
//! not held) on every attempt (a failed step is retried, `--retries`). Each step reports its latencies; the plot puts p50 / p99 /
//! p99.9 against the achieved throughput.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backend::{with_backend, Backend, BackendJob, EngineProbe};
use crate::error::Error;
use crate::limits::KNEE_PRECISION;
use crate::mix::Op;
use crate::peer::PeerStore;
use crate::populate;
use crate::procfs::{GitInfo, Machine};
use crate::progress::Progress;
use crate::report::{rfc3339, thousands};
use crate::scenario::Scenario;
use crate::targets::{self, OpStats, RunVerdict, Status, Targets};
use crate::units::{format_ns, Rate};
use crate::workers::{self, Outcome, Phase, Populations};

/// `schema` of a sweep document.
pub const SWEEP_SCHEMA: &str = "session-engine/loadgen-sweep";

/// What `loadgen sweep` was asked to do.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// The scenario (its rate is replaced by each step's).
    pub scenario: Scenario,
    /// Tiers a step must hold.
    pub targets: Vec<Targets>,
    /// Number of steps up to `to`.
    pub steps: usize,
    /// Highest rate (`None`: the closed-loop peak).
    pub to: Option<f64>,
    /// Measured time per step.
    pub step_duration: Duration,
    /// Warm-up per step.
    pub step_warmup: Duration,
    /// Extra attempts at a rate whose first attempt failed.
    pub retries: usize,
    /// Where to write (`None`: nothing).
    pub out_dir: Option<PathBuf>,
    /// Progress bar.
    pub progress: bool,
    /// The command line.
    pub command: Vec<String>,
}

/// One step.
#[derive(Clone, Debug, Serialize)]
pub struct SweepStep {
    /// Offered rate.
    pub rate_target_ops_per_s: f64,
    /// 0 for the first attempt at this rate, then 1, 2, ...
    pub attempt: usize,
    /// Achieved.
    pub throughput_ops_per_s: f64,
    /// All bounds held and the rate was kept.
    pub passed: bool,
    /// The machine was too busy to judge this attempt.
    #[serde(default)]
    pub inconclusive: bool,
    /// The bounds that failed, as `tier/op/bound`.
    pub failed: Vec<String>,
    /// All point operations.
    pub all_point_ops: OpStats,
    /// Per kind.
    pub ops: BTreeMap<String, OpStats>,
}

/// The sweep's document.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// [`SWEEP_SCHEMA`].
    pub schema: String,
    /// 1.
    pub schema_version: u32,
    /// Start, UTC.
    pub started_at: String,
    /// The command line.
    pub command: Vec<String>,
    /// Where.
    pub machine: Machine,
    /// Which code.
    pub git: GitInfo,
    /// The scenario.
    pub scenario: Scenario,
    /// The closed-loop peak that set the steps, if measured.
    pub peak_closed_loop_ops_per_s: Option<f64>,
    /// Every step run, in order.
    pub steps: Vec<SweepStep>,
    /// Highest offered rate that held everything.
    pub knee_ops_per_s: Option<f64>,
    /// Lowest offered rate that broke a bound (the knee is within
    /// `knee_precision` below it).
    pub broke_at_ops_per_s: Option<f64>,
    /// The bounds that broke there, most broken first (`tier/op/bound`).
    pub broke_first: Vec<String>,
    /// The rate the machine was too busy to judge on any attempt, where the
    /// search stopped (the knee is then only known to be at least
    /// `knee_ops_per_s`).
    pub inconclusive_at_ops_per_s: Option<f64>,
    /// How close the bisection brings the knee to the lowest rate that
    /// broke: (broke − knee) / knee at most this.
    pub knee_precision: f64,
    /// Tiers held.
    pub targets: Vec<String>,
}

/// What one probed rate did.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Every bound held (on some attempt).
    Held,
    /// A bound broke on every attempt: these, most broken first.
    Broke(Vec<String>),
    /// No attempt held, and none could be judged: the machine was too busy
    /// (neither held nor broke).
    Inconclusive,
}

/// Where the knee is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Knee {
    /// The highest rate that held.
    pub held: Option<f64>,
    /// The lowest rate that broke.
    pub broke_at: Option<f64>,
    /// What broke there.
    pub broke_first: Vec<String>,
    /// The rate the machine kept from judging, where the search stopped.
    pub inconclusive_at: Option<f64>,
}

/// Steps up through `rates` until one breaks, then bisects between the last
/// that held and the first that broke until they are within `precision` of
/// each other ((broke − held) / held ≤ precision). A sweep whose first step
/// breaks has no knee; one that never breaks has its highest step as the
/// knee. `probe` labels each rate `step i/n` or `bisect`.
pub fn find_knee(rates: &[f64], precision: f64, probe: &mut dyn FnMut(f64, String) -> Probe) -> Knee {
    let mut knee = Knee::default();
    for (i, &rate) in rates.iter().enumerate() {
        match probe(rate, format!("step {}/{}", i + 1, rates.len())) {
            Probe::Held => knee.held = Some(rate),
            Probe::Broke(bounds) => {
                knee.broke_at = Some(rate);
                knee.broke_first = bounds;
                break;
            }
            Probe::Inconclusive => {
                knee.inconclusive_at = Some(rate);
                return knee;
            }
        }
    }
    let (Some(mut held), Some(mut broke)) = (knee.held, knee.broke_at) else {
        return knee;
    };
    // Each probe halves the gap: from one step of `to / steps` to 5% takes
    // a handful.
    while (broke - held) / held > precision {
        let mid = f64::midpoint(held, broke);
        match probe(mid, "bisect".into()) {
            Probe::Held => held = mid,
            Probe::Broke(bounds) => {
                broke = mid;
                knee.broke_first = bounds;
            }
            Probe::Inconclusive => {
                knee.inconclusive_at = Some(mid);
                break;
            }
        }
    }
    knee.held = Some(held);
    knee.broke_at = Some(broke);
    knee
}

struct SweepJob<'a> {
    request: &'a SweepRequest,
    progress: Option<&'a Progress>,
}

impl BackendJob for SweepJob<'_> {
    type Output = SweepReport;

    fn run<B: Backend>(self, store: &Arc<B>, _probe: Option<&EngineProbe>) -> Result<SweepReport, Error> {
        sweep_with(store, self.request, self.progress)
    }
}

/// Runs a sweep.
///
/// # Errors
/// [`Error`].
pub fn execute(request: &SweepRequest) -> Result<SweepReport, Error> {
    let progress = Progress::new(!request.progress, "sweep");
    let job = SweepJob {
        request,
        progress: progress.as_ref(),
    };
    let report = with_backend(&request.scenario, None, job);
    if let Some(bar) = &progress {
        bar.finish();
    }
    report
}

/// The sweep's closed-loop peak (ops/s), then a wait for the churn
/// sessions it created to expire.
fn measure_peak<B: Backend>(
    store: &Arc<B>,
    peer: Option<&Arc<PeerStore>>,
    base: &Scenario,
    populations: &Populations,
    phase: Phase,
    progress: Option<&Progress>,
) -> f64 {
    if let Some(bar) = progress {
        bar.set_prefix("sweep: peak (closed loop)".into());
    }
    let peak = workers::run(store, peer, base, populations, phase, progress)
        .backend
        .throughput_ops_per_s;
    // The peak phase created churn sessions at millions per second; let
    // them expire before the first step, or their mass expiry (the
    // sweeper taking shard locks batch after batch) lands in its tail.
    settle(base, "the peak's", progress);
    peak
}

/// How long [`settle`] waits.
pub(crate) fn settle_time(base: &Scenario) -> Duration {
    base.churn_timeout.0 + 3 * base.engine.sweep_interval.0 + Duration::from_millis(500)
}

/// Most bisections after the steps: each halves the gap between the rate
/// that held and the one that broke, which starts at one step (at most the
/// rate that held) and ends within `KNEE_PRECISION` of it.
pub(crate) const KNEE_BISECTIONS_MAX: u32 = 5;
const _: () = assert!(1.0 / (1u32 << KNEE_BISECTIONS_MAX) as f64 <= KNEE_PRECISION);

/// Waits until the churn sessions of the phase before have expired and been
/// swept (`churn_timeout` plus three sweep intervals and half a second):
/// their expiry would otherwise land in the next phase's measured window
/// (the warm-up is shorter than the churn timeout), so a probe at one rate
/// judged differently after a faster one than after a slower one.
fn settle(base: &Scenario, whose: &str, progress: Option<&Progress>) {
    let settle = settle_time(base);
    if let Some(bar) = progress {
        bar.set_prefix(format!(
            "sweep: waiting {} for {whose} churn sessions to expire (churn_timeout)",
            crate::units::Dur(settle)
        ));
    }
    std::thread::sleep(settle);
}

fn sweep_with<B: Backend>(
    store: &Arc<B>,
    request: &SweepRequest,
    progress: Option<&Progress>,
) -> Result<SweepReport, Error> {
    let started = SystemTime::now();
    let base = &request.scenario;
    let populated = populate::populate(store, base)?;
    let _cleanup = populate::depopulate_on_interrupt(store, &populated.ids, base.workers);
    let peer = base.peer.then(|| Arc::new(PeerStore::default()));
    let populations = Populations {
        backend: Arc::clone(&populated.ids),
        peer: match &peer {
            Some(peer) => Some(populate::populate(peer, base)?.ids),
            None => None,
        },
    };
    let phase = |rate| Phase {
        rate,
        warmup: request.step_warmup,
        duration: request.step_duration,
        ops_max: 0,
    };
    let (to, peak) = if let Some(to) = request.to {
        (to, None)
    } else {
        let peak = measure_peak(
            store,
            peer.as_ref(),
            base,
            &populations,
            phase(Rate::Max),
            progress,
        );
        (peak, Some(peak))
    };
    steps_floor(to, request.steps, peak.is_some())?;
    let mut steps = Vec::new();
    // Every probe starts from a settled store, whatever ran before it (the
    // first one after the peak, which settled already, or after nothing).
    let mut settled = true;
    let mut probe = |rate: f64, label: String| {
        let scenario = Scenario {
            rate: Rate::PerSec(rate),
            ..base.clone()
        };
        // A failed step is run again (up to `retries` times): on a shared
        // machine one burst of other work can break a bound that the backend
        // holds. The step counts as held if any attempt held; every attempt
        // is recorded.
        let mut broke: Option<Vec<String>> = None;
        for attempt in 0..=request.retries {
            if !settled {
                settle(base, "the last probe's", progress);
            }
            settled = false;
            if let Some(bar) = progress {
                bar.set_prefix(format!(
                    "sweep: {label} at {} ops/s (attempt {})",
                    thousands(rate),
                    attempt + 1
                ));
            }
            let outcome = workers::run(
                store,
                peer.as_ref(),
                &scenario,
                &populations,
                phase(scenario.rate),
                progress,
            );
            let step = step_of(&scenario, &outcome, &request.targets);
            let held = step.passed;
            if !held && !step.inconclusive {
                broke = Some(step.failed.clone());
            }
            steps.push(SweepStep { attempt, ..step });
            if held {
                return Probe::Held;
            }
        }
        // Broken if any attempt was judged and broke; the machine's doing
        // if it kept every attempt from being judged.
        broke.map_or(Probe::Inconclusive, Probe::Broke)
    };
    let rates: Vec<f64> = (1..=request.steps)
        .map(|i| to * i as f64 / request.steps as f64)
        .collect();
    let knee = find_knee(&rates, KNEE_PRECISION, &mut probe);
    crate::interrupt::run_cleanup();
    Ok(SweepReport {
        schema: SWEEP_SCHEMA.into(),
        schema_version: 1,
        started_at: rfc3339(started),
        command: request.command.clone(),
        machine: Machine::detect(),
        git: GitInfo::detect(),
        scenario: Scenario {
            backend: session_engine::redact_url(&base.backend),
            ..base.clone()
        },
        peak_closed_loop_ops_per_s: peak,
        steps,
        knee_ops_per_s: knee.held,
        broke_at_ops_per_s: knee.broke_at,
        inconclusive_at_ops_per_s: knee.inconclusive_at,
        broke_first: knee.broke_first,
        knee_precision: KNEE_PRECISION,
        targets: request.targets.iter().map(|t| t.name.clone()).collect(),
    })
}

/// Refuses steps that would offer under 1 op/s each, as `--rate` does
/// (slower schedules push a client's next start past any run): `to` over
/// `steps`, where `to` is the measured peak if `measured`.
pub(crate) fn steps_floor(to: f64, steps: usize, measured: bool) -> Result<(), Error> {
    #[allow(clippy::cast_precision_loss)]
    let lowest = to / steps as f64;
    if lowest >= 1.0 {
        return Ok(());
    }
    Err(if measured {
        Error::Failed(anyhow::anyhow!(
            "the closed-loop peak was {to:.1} ops/s, under 1 op/s for each of {steps} steps: the backend \
             served almost nothing (is it answering?)"
        ))
    } else {
        Error::Usage(format!(
            "--to {to} over {steps} steps offers under 1 op/s a step: raise --to or lower --steps"
        ))
    })
}

/// One step's figures and verdict; an inconclusive step does not hold.
fn step_of(scenario: &Scenario, outcome: &Outcome, tiers: &[Targets]) -> SweepStep {
    let judged = targets::judge(scenario, outcome, tiers);
    let mut broken: Vec<&crate::targets::Verdict> = judged
        .verdicts
        .iter()
        .filter(|v| v.status == Status::Fail)
        .collect();
    // Most broken first: the smallest margin (limit / measured).
    broken.sort_by(|a, b| a.margin.unwrap_or(0.0).total_cmp(&b.margin.unwrap_or(0.0)));
    let mut failed: Vec<String> = broken
        .iter()
        .map(|v| format!("{}/{}/{}", v.tier, v.subject, v.bound))
        .collect();
    if judged.verdict == RunVerdict::Inconclusive {
        failed.push("inconclusive (the machine was too busy)".into());
    }
    let Rate::PerSec(rate) = scenario.rate else {
        unreachable!("sweep steps are open loop")
    };
    let all = &outcome.backend.tally.all;
    let seconds = outcome.backend.active_s;
    SweepStep {
        rate_target_ops_per_s: rate,
        attempt: 0,
        throughput_ops_per_s: outcome.backend.throughput_ops_per_s,
        passed: judged.verdict == RunVerdict::Pass,
        inconclusive: judged.verdict == RunVerdict::Inconclusive,
        failed,
        all_point_ops: {
            let points = all.point_ops();
            OpStats::of(&points, 0, all.completed_point_ops(), seconds)
        },
        ops: Op::ALL
            .iter()
            .filter(|op| !all.get(**op).is_empty())
            .map(|op| {
                let h = all.get(*op);
                (
                    op.name().to_owned(),
                    OpStats::of(h, all.errors[op.index()], all.completed(*op), seconds),
                )
            })
            .collect(),
    }
}

impl SweepReport {
    /// The steps as a text table.
    #[must_use]
    pub fn table(&self) -> String {
        let body: Vec<[String; 7]> = self
            .steps
            .iter()
            .map(|s| {
                [
                    if s.attempt == 0 {
                        thousands(s.rate_target_ops_per_s)
                    } else {
                        format!("{} (again)", thousands(s.rate_target_ops_per_s))
                    },
                    thousands(s.throughput_ops_per_s),
                    format_ns(s.all_point_ops.p50_ns),
                    format_ns(s.all_point_ops.p99_ns),
                    format_ns(s.all_point_ops.p999_ns),
                    format_ns(s.all_point_ops.max_ns),
                    if s.passed {
                        "pass".into()
                    } else {
                        format!("FAIL ({})", s.failed.join(", "))
                    },
                ]
            })
            .collect();
        crate::table::render_table(
            &[
                "offered ops/s",
                "achieved ops/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "verdict",
            ],
            &body,
        )
    }

    /// The markdown summary.
    #[must_use]
    pub fn markdown(&self) -> String {
        let knee = match (
            self.knee_ops_per_s,
            self.broke_at_ops_per_s,
            self.inconclusive_at_ops_per_s,
        ) {
            // The search stopped at a rate the machine was too busy to judge.
            (knee, _, Some(i)) => {
                format!(
                "{} (the machine was too busy to judge {} ops/s on any attempt; the search stopped there)",
                knee.map_or_else(|| "none judged".into(), |k| format!("at least **{} ops/s**", thousands(k))),
                thousands(i)
            )
            }
            (Some(k), Some(b), None) => format!(
                "**{} ops/s**, within {:.0}% of what broke ({} ops/s broke {})",
                thousands(k),
                self.knee_precision * 100.0,
                thousands(b),
                self.broke_first.join(", ")
            ),
            (Some(k), None, None) => format!("**{} ops/s** (the highest step; nothing broke)", thousands(k)),
            (None, Some(b), None) => format!(
                "none ({} ops/s broke {})",
                thousands(b),
                self.broke_first.join(", ")
            ),
            (None, None, None) => "none judged".into(),
        };
        let peak = self.peak_closed_loop_ops_per_s.map_or_else(String::new, |p| {
            format!("- closed-loop peak: {} ops/s\n", thousands(p))
        });
        format!(
            "# Capacity sweep `{}`\n\n- command: `{}`\n- date: {} (UTC)\n- machine: {} cores, {}\n- targets: {}\n{peak}- knee (highest offered rate that held every bound): {knee}\n\n```text\n{}```\n\nPlot: [sweep.svg](sweep.svg) (latency of all point operations against achieved throughput).\n",
            self.scenario.name,
            self.command.join(" "),
            self.started_at,
            self.machine.cores,
            self.machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.targets.join(", "),
            self.table()
        )
    }

    /// Writes `sweep.json`, `sweep.md` and `sweep.svg` into `dir`.
    ///
    /// # Errors
    /// I/O.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(
            dir.join("sweep.json"),
            format!("{}\n", serde_json::to_string_pretty(self)?),
        )?;
        std::fs::write(dir.join("sweep.md"), self.markdown())?;
        let points: Vec<crate::plot::SweepPoint> = self
            .steps
            .iter()
            .map(|s| crate::plot::SweepPoint {
                throughput_ops_per_s: s.throughput_ops_per_s,
                p50_ns: s.all_point_ops.p50_ns,
                p99_ns: s.all_point_ops.p99_ns,
                p999_ns: s.all_point_ops.p999_ns,
            })
            .collect();
        crate::plot::sweep(
            &dir.join("sweep.svg"),
            &format!("{}: latency vs throughput (open loop)", self.scenario.name),
            &points,
            self.knee_ops_per_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peak of nothing (a backend that stopped answering: every
    /// operation outlived its slice) made every step's rate 0 ops/s, whose
    /// schedule never ends; a `--to` over so many steps that each offers
    /// under 1 op/s likewise. Both are refused, saying why.
    #[test]
    fn steps_under_one_op_per_second_are_refused() {
        let err = steps_floor(0.0, 10, true).unwrap_err().to_string();
        assert!(err.contains("peak") && err.contains("answering"), "{err}");
        let err = steps_floor(5.0, 10, false).unwrap_err().to_string();
        assert!(err.contains("--to") && err.contains("--steps"), "{err}");
        assert!(steps_floor(f64::NAN, 10, true).is_err());
        assert!(steps_floor(10.0, 10, false).is_ok());
        assert!(steps_floor(1e6, 10, true).is_ok());
    }

    /// A backend that holds up to `capacity`; past it the p99 bound breaks,
    /// and past 1.5 × `capacity` the rate too.
    fn backend(capacity: f64, probed: &mut Vec<f64>) -> impl FnMut(f64, String) -> Probe + '_ {
        move |rate, _| {
            probed.push(rate);
            if rate <= capacity {
                Probe::Held
            } else if rate <= 1.5 * capacity {
                Probe::Broke(vec!["embedded/get/p99 added".into()])
            } else {
                Probe::Broke(vec!["run/all/rate".into(), "embedded/get/p99 added".into()])
            }
        }
    }

    #[test]
    fn bisection_brings_the_knee_within_five_percent_of_what_broke() {
        let rates: Vec<f64> = (1..=10).map(|i| 71_100.0 * f64::from(i)).collect();
        let mut probed = Vec::new();
        let knee = find_knee(&rates, 0.05, &mut backend(450_000.0, &mut probed));
        let (held, broke) = (knee.held.unwrap(), knee.broke_at.unwrap());
        assert!(held <= 450_000.0 && broke > 450_000.0, "{knee:?}");
        assert!((broke - held) / held <= 0.05, "{knee:?}");
        assert!(held >= 450_000.0 / 1.05, "{knee:?}");
        assert_eq!(knee.broke_first, vec!["embedded/get/p99 added".to_owned()]);
        assert_eq!(probed[..7], rates[..7], "stepped up first");
        assert!(probed.len() <= 7 + 4, "a handful of bisections: {probed:?}");
    }

    /// A rate the machine kept from judging (every attempt inconclusive)
    /// neither holds nor breaks: the search stops there and says so. It
    /// counted as broken, so a busy moment lowered the knee (or, on the
    /// first step, reported "no knee" as a failure).
    #[test]
    fn an_inconclusive_rate_stops_the_search_without_moving_the_knee() {
        let rates = [1_000.0, 2_000.0, 3_000.0, 4_000.0];
        let mut probed = Vec::new();
        let knee = find_knee(&rates, 0.05, &mut |rate, _| {
            probed.push(rate);
            if rate < 2_500.0 {
                Probe::Held
            } else {
                Probe::Inconclusive
            }
        });
        assert_eq!(knee.held, Some(2_000.0));
        assert_eq!(knee.broke_at, None);
        assert_eq!(knee.inconclusive_at, Some(3_000.0));
        assert_eq!(probed, vec![1_000.0, 2_000.0, 3_000.0]);
        // While bisecting: the knee and the rate that broke stay as found.
        let knee = find_knee(&rates, 0.05, &mut |rate, label| {
            if label == "bisect" {
                Probe::Inconclusive
            } else if rate <= 2_000.0 {
                Probe::Held
            } else {
                Probe::Broke(vec!["t/get/p99".into()])
            }
        });
        assert_eq!((knee.held, knee.broke_at), (Some(2_000.0), Some(3_000.0)));
        assert_eq!(knee.inconclusive_at, Some(2_500.0));
    }

    #[test]
    fn no_knee_when_the_first_step_breaks_and_the_top_step_when_none_does() {
        let rates = [1_000.0, 2_000.0];
        let mut probed = Vec::new();
        let knee = find_knee(&rates, 0.05, &mut backend(500.0, &mut probed));
        assert_eq!(knee.held, None);
        assert_eq!(knee.broke_at, Some(1_000.0));
        assert_eq!(probed, vec![1_000.0], "nothing to bisect below the first step");
        let mut probed = Vec::new();
        let knee = find_knee(&rates, 0.05, &mut backend(1e9, &mut probed));
        assert_eq!((knee.held, knee.broke_at), (Some(2_000.0), None));
    }
}
