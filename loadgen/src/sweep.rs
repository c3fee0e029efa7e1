//! `loadgen sweep`: step the offered rate up until a target breaks; the knee
//! is the highest rate that held.
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
    /// Tiers held.
    pub targets: Vec<String>,
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

fn sweep_with<B: Backend>(
    store: &Arc<B>,
    request: &SweepRequest,
    progress: Option<&Progress>,
) -> Result<SweepReport, Error> {
    let started = SystemTime::now();
    let base = &request.scenario;
    let populated = populate::populate(store, base)?;
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
        if let Some(bar) = progress {
            bar.set_prefix("sweep: peak (closed loop)".into());
        }
        let peak = workers::run(
            store,
            peer.as_ref(),
            base,
            &populations,
            phase(Rate::Max),
            progress,
        )
        .backend
        .throughput_ops_per_s;
        // The peak phase created churn sessions at millions per second; let
        // them expire before the first step, or their mass expiry (the
        // sweeper taking shard locks batch after batch) lands in its tail.
        let settle = base.churn_timeout.0 + 3 * base.engine.sweep_interval.0 + Duration::from_millis(500);
        std::thread::sleep(settle);
        (peak, Some(peak))
    };
    let mut steps = Vec::new();
    for i in 1..=request.steps {
        let rate = to * i as f64 / request.steps as f64;
        let scenario = Scenario {
            rate: Rate::PerSec(rate),
            ..base.clone()
        };
        // A failed step is run again (up to `retries` times): on a shared
        // machine one burst of other work can break a bound that the backend
        // holds. The step counts as held if any attempt held; every attempt
        // is recorded.
        let mut held = false;
        for attempt in 0..=request.retries {
            if let Some(bar) = progress {
                bar.set_prefix(format!(
                    "sweep: step {i}/{} at {} ops/s (attempt {})",
                    request.steps,
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
            held = step.passed;
            steps.push(SweepStep { attempt, ..step });
            if held {
                break;
            }
        }
        if !held {
            break;
        }
    }
    let knee_ops_per_s = steps
        .iter()
        .filter(|s| s.passed)
        .map(|s| s.rate_target_ops_per_s)
        .reduce(f64::max);
    Ok(SweepReport {
        schema: SWEEP_SCHEMA.into(),
        schema_version: 1,
        started_at: rfc3339(started),
        command: request.command.clone(),
        machine: Machine::detect(),
        git: GitInfo::detect(),
        scenario: base.clone(),
        peak_closed_loop_ops_per_s: peak,
        steps,
        knee_ops_per_s,
        targets: request.targets.iter().map(|t| t.name.clone()).collect(),
    })
}

/// One step's figures and verdict; an inconclusive step does not hold.
fn step_of(scenario: &Scenario, outcome: &Outcome, tiers: &[Targets]) -> SweepStep {
    let judged = targets::judge(scenario, outcome, tiers);
    let mut failed: Vec<String> = judged
        .verdicts
        .iter()
        .filter(|v| v.status == Status::Fail)
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
        failed,
        all_point_ops: {
            let points = all.point_ops();
            OpStats::of(&points, 0, points.len(), seconds)
        },
        ops: Op::ALL
            .iter()
            .filter(|op| !all.get(**op).is_empty())
            .map(|op| {
                let h = all.get(*op);
                (
                    op.name().to_owned(),
                    OpStats::of(h, all.errors[op.index()], h.len(), seconds),
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
        let knee = self.knee_ops_per_s.map_or_else(
            || "none (the first step failed)".into(),
            |k| format!("**{} ops/s**", thousands(k)),
        );
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
