//! `loadgen run`, the run orchestration: open the backend, populate it and
//! the reference peer, calibrate, load both in alternating slices, judge,
//! print, write.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use session_engine::SessionId;

use crate::backend::{with_backend, Backend, BackendJob, EngineProbe, NullStore};
use crate::client::{drive, ClientPlan, ClientState, Work};
use crate::clock::{block_on_ready, SpinTime};
use crate::collect::Recorder;
use crate::error::Error;
use crate::hist::{Hist, OpHists};
use crate::limits::CALIBRATION_NS;
use crate::mix::{KeySampler, Op};
use crate::output::{self, Column};
use crate::peer::{PeerStore, PEER_STORE};
use crate::populate::{self, Populated};
use crate::procfs::{self, GitInfo, Machine};
use crate::progress::Progress;
use crate::report::{
    rfc3339, CpuReport, EarlierAttempt, EngineReport, ExpiryReport, Files, JudgedReport, MemoryReport,
    PeerReport, PopulateReport, Report, SideSlices, SlicesReport, RESULT_SCHEMA, RESULT_SCHEMA_VERSION,
};
use crate::scenario::Scenario;
use crate::schedule::{Pace, Side, Slices};
use crate::stall::Stall;
use crate::targets::{self, Judged, OpStats, RunVerdict, Targets};
use crate::units::{format_ns, Rate};
use crate::workers::{self, Outcome, Phase, Populations, SideOutcome};

/// What `loadgen run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The resolved scenario.
    pub scenario: Scenario,
    /// Tiers to judge against.
    pub targets: Vec<Targets>,
    /// Where to write the files (`None`: write nothing).
    pub out_dir: Option<PathBuf>,
    /// Show a progress line (stderr, terminals only).
    pub progress: bool,
    /// Freeze the backend once (`--inject-stall`).
    pub stall: Option<Stall>,
    /// Columns of the percentile table.
    pub columns: Vec<Column>,
    /// The result document on stdout, everything else on stderr.
    pub json: bool,
    /// The command line, for the record.
    pub command: Vec<String>,
    /// Runs of the load at most: an inconclusive one is run again.
    pub attempts: usize,
}

/// Everything one run measured, before it becomes a report.
pub struct Measured {
    /// The backend's populate phase.
    pub populated: Populated,
    /// The load.
    pub outcome: Outcome,
    /// Loadgen cost per operation (null backend), ns.
    pub loadgen_ns_per_op: f64,
    /// One clock read, ns.
    pub timer_ns: f64,
    /// RSS at the end, bytes.
    pub rss_end_bytes: Option<u64>,
    /// Engine counters at the end.
    pub stats: Option<session_engine::Stats>,
    /// Expiry lag, ms, and the sweep interval.
    pub expiry: Option<(Hist, u64)>,
}

/// Populates `store` (and a fresh peer, if the scenario has one), then runs
/// the scenario's load on both.
///
/// # Errors
/// A failed populate.
pub fn measure<B: Backend>(
    store: &Arc<B>,
    probe: Option<&EngineProbe>,
    scenario: &Scenario,
    progress: Option<&Progress>,
) -> Result<Measured, Error> {
    if let Some(bar) = progress {
        bar.set_message(format!("populating {} sessions", scenario.sessions));
    }
    let populated = populate::populate(store, scenario)?;
    let _cleanup = populate::depopulate_on_interrupt(store, &populated.ids, scenario.workers);
    let peer = scenario.peer.then(|| Arc::new(PeerStore::default()));
    let peer_ids = match &peer {
        Some(peer) => Some(populate::populate(peer, scenario)?.ids),
        None => None,
    };
    if let Some(bar) = progress {
        bar.set_message("calibrating".into());
    }
    let loadgen_ns_per_op = loadgen_cost_ns(scenario, &populated.ids);
    let timer_ns = timer_cost_ns();
    let populations = Populations {
        backend: Arc::clone(&populated.ids),
        peer: peer_ids,
    };
    let outcome = workers::run(
        store,
        peer.as_ref(),
        scenario,
        &populations,
        Phase::of(scenario),
        progress,
    );
    let rss_end_bytes = procfs::rss_bytes();
    let stats = store.stats();
    crate::interrupt::run_cleanup();
    Ok(Measured {
        populated,
        outcome,
        loadgen_ns_per_op,
        timer_ns,
        rss_end_bytes,
        stats,
        expiry: probe.map(EngineProbe::expiry),
    })
}

/// Worker CPU per operation of the loop itself: the scenario's mix and keys
/// against the null backend, closed loop, on this thread for
/// [`CALIBRATION_NS`].
#[must_use]
pub fn loadgen_cost_ns(scenario: &Scenario, population: &Arc<[SessionId]>) -> f64 {
    // Nothing reads what the recorder sends: only the CPU time counts.
    let (tx, _rx) = crossbeam_channel::unbounded();
    let (_stx, srx) = crossbeam_channel::bounded(1);
    let mut recorder = Recorder::new(0, tx, srx);
    let plan = ClientPlan {
        start_ns: 0,
        end_ns: CALIBRATION_NS,
        ops_max: u64::MAX,
        measured_from_ns: 0,
        pace: Pace::Closed,
        work: Work::Point {
            mix: scenario.mix.table(),
            keys: KeySampler::new(scenario.keys, population.len()),
        },
        side: Side::Backend,
        slices: Slices::backend_only(0, CALIBRATION_NS),
    };
    let mut state = ClientState::new(
        scenario.seed ^ 0x5EED,
        Arc::clone(population),
        scenario.metadata_bytes,
        session_engine::Timeout::After(scenario.churn_timeout.0),
    );
    let time = SpinTime::new(Instant::now());
    let cpu_before = procfs::thread_cpu_ns();
    let started = Instant::now();
    let summary = block_on_ready(drive(&NullStore, &time, &plan, &mut state, &mut recorder));
    let wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let used_ns = procfs::thread_cpu_ns()
        .zip(cpu_before)
        .map_or(wall_ns, |(after, before)| after.saturating_sub(before));
    recorder.finish(summary, crate::clock::Lost::default());
    used_ns as f64 / summary.ops.max(1) as f64
}

/// Nanoseconds one `Instant::now()` takes here.
#[must_use]
pub fn timer_cost_ns() -> f64 {
    const READS: u32 = 200_000;
    let started = Instant::now();
    let mut last = started;
    for _ in 0..READS {
        last = std::hint::black_box(Instant::now());
    }
    (last - started).as_secs_f64() * 1e9 / f64::from(READS)
}

struct MeasureJob<'a> {
    scenario: &'a Scenario,
    progress: Option<&'a Progress>,
}

impl BackendJob for MeasureJob<'_> {
    type Output = Measured;

    fn run<B: Backend>(self, store: &Arc<B>, probe: Option<&EngineProbe>) -> Result<Measured, Error> {
        measure(store, probe, self.scenario, self.progress)
    }
}

/// Runs the request against the backend it names.
///
/// # Errors
/// [`Error`].
pub fn measure_request(request: &RunRequest, progress: Option<&Progress>) -> Result<Measured, Error> {
    let job = MeasureJob {
        scenario: &request.scenario,
        progress,
    };
    with_backend(&request.scenario, request.stall, job)
}

/// Runs, prints the headline, the percentile table and the verdict table,
/// writes the files.
///
/// # Errors
/// [`Error`].
pub fn execute(request: &RunRequest, quiet: bool) -> Result<Report, Error> {
    let s = &request.scenario;
    if !quiet {
        eprintln!(
            "loadgen: scenario {} ({} sessions, rate {}, {} + {} warm-up, {} workers, slices of {}{}, seed {})",
            s.name,
            s.sessions,
            s.rate,
            s.duration,
            s.warmup,
            s.workers,
            s.slice,
            if s.peer { " alternating with the reference peer" } else { "" },
            s.seed
        );
    }
    if let Some(dir) = &request.out_dir {
        output::prepare(dir).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let attempts = request.attempts.max(1);
    let ((mut report, measured), earlier) = until_conclusive(
        attempts,
        |_| {
            let bar = Progress::new(!request.progress, &s.name);
            let measured = measure_request(request, bar.as_ref())?;
            if let Some(bar) = &bar {
                bar.finish();
            }
            Ok((build_report(request, &measured), measured))
        },
        |(report, _)| runs_again(report.verdict, &report.verdicts),
        |(report, _), next| {
            let kept = EarlierAttempt::of(report);
            if !quiet {
                eprintln!(
                    "loadgen: attempt {} of {attempts} was inconclusive: {}; attempt {next} runs the load again (a fresh backend and population)",
                    next - 1,
                    kept.reason
                );
            }
            kept
        },
    )?;
    report.earlier_attempts = earlier;
    let mut human = String::new();
    human.push_str(&headline(&report));
    human.push_str("\n\n");
    human.push_str(&output::percentile_table(&measured.outcome, &request.columns));
    human.push('\n');
    human.push_str(&targets::table(&report.verdicts));
    if let Some(dir) = &request.out_dir {
        output::write(dir, &report, &measured.outcome)?;
        let _ = writeln!(human, "\nresults: {}", dir.display());
    }
    if !report.earlier_attempts.is_empty() {
        human.push_str(&EarlierAttempt::lines(&report.earlier_attempts));
        let _ = writeln!(
            human,
            "the figures above and the verdict are attempt {}'s",
            report.earlier_attempts.len() + 1
        );
    }
    human.push_str(&slices_line(&report));
    let _ = writeln!(human, "verdict: {}", report.verdict.shout());
    if request.json {
        eprint!("{human}");
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Failed(e.into()))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}").map_err(|e| Error::Failed(e.into()))?;
    } else {
        print!("{human}");
    }
    Ok(report)
}

/// Whether an attempt with this verdict and these rows runs again: only
/// the machine's "too busy to judge" with nothing failed. An attempt whose
/// judged slices broke a bound is inconclusive when too few slices were
/// judged to call it a failure, but it is not run again either: a later
/// attempt's pass would hide the failure it saw (`--attempts` could turn
/// a regression that shows in some runs into a pass).
fn runs_again(verdict: RunVerdict, rows: &[targets::Verdict]) -> bool {
    verdict == RunVerdict::Inconclusive && !rows.iter().any(|r| r.status == targets::Status::Fail)
}

/// Runs `attempt(n)` for n = 1, 2, ... until one is not to run `again`
/// (a pass, a fail, an inconclusive attempt that saw a bound fail: see
/// [`runs_again`]) or `max` have run: returns the last, and what
/// `keep(attempt, next)` kept of each one before it. A pass or a fail is
/// never run again: only the machine's "too busy to judge" is.
///
/// # Errors
/// The error of the attempt that failed to run (the first such: no
/// attempt follows it).
fn until_conclusive<T, K>(
    max: usize,
    mut attempt: impl FnMut(usize) -> Result<T, Error>,
    again: impl Fn(&T) -> bool,
    mut keep: impl FnMut(&T, usize) -> K,
) -> Result<(T, Vec<K>), Error> {
    let mut earlier = Vec::new();
    let mut n = 1;
    loop {
        let got = attempt(n)?;
        if !again(&got) || n >= max {
            return Ok((got, earlier));
        }
        n += 1;
        earlier.push(keep(&got, n));
    }
}

/// What the machine did to the slices, in a line above the verdict.
fn slices_line(r: &Report) -> String {
    let sl = &r.slices;
    let peer = sl.peer.map_or(String::new(), |p| {
        format!(
            ", peer {} of {}{} ({} disturbed)",
            p.judged,
            p.measured,
            crate::report::idle_after(&p),
            p.disturbed
        )
    });
    let mut line = format!(
        "slices judged: backend {} of {}{} ({} disturbed, {} set aside){peer}; the machine took {:.1} ms from the backend's clients (longest gap {:.2} ms)\n",
        sl.backend.judged,
        sl.backend.measured,
        crate::report::idle_after(&sl.backend),
        sl.backend.disturbed,
        sl.backend.set_aside,
        sl.backend.taken_ms,
        sl.backend.gap_max_ms
    );
    if r.verdict == RunVerdict::Inconclusive {
        let _ = writeln!(
            line,
            "inconclusive: {}",
            targets::inconclusive_reason(&r.verdicts, sl.judged_share)
        );
    }
    line
}

/// The one-line summary printed above the tables.
#[must_use]
pub fn headline(r: &Report) -> String {
    let a = &r.all_point_ops;
    let mut line = format!(
        "{} {}: {:.0} ops/s in the backend's slices, all point ops p50 {} p99 {} p99.9 {} max {}",
        r.scenario.name,
        r.mode,
        r.throughput_ops_per_s,
        format_ns(a.p50_ns),
        format_ns(a.p99_ns),
        format_ns(a.p999_ns),
        format_ns(a.max_ns)
    );
    if let Some(p) = &r.peer {
        let _ = write!(line, " (peer p99 {})", format_ns(p.all_point_ops.p99_ns));
    }
    if let Some(b) = r.memory.bytes_per_session {
        let _ = write!(line, ", {b:.0} B/session");
    }
    if let Some(e) = &r.expiry {
        let _ = write!(line, ", expiry lag p99 {} ms", e.lag_ms_p99);
    }
    line
}

/// Per-kind figures of `hists` over `seconds` of slices.
/// Per kind: a point operation's rate over `point_s` (the slices its
/// clients ran in), the lister's over `list_s` (it runs to the end: with
/// `--ops`, past the point clients' end, which `point_s` leaves out).
fn op_stats(hists: &OpHists, point_s: f64, list_s: f64) -> std::collections::BTreeMap<String, OpStats> {
    Op::ALL
        .iter()
        .filter(|op| !hists.get(**op).is_empty())
        .map(|op| {
            let h = hists.get(*op);
            let seconds = if *op == Op::List { list_s } else { point_s };
            (
                op.name().to_owned(),
                OpStats::of(h, hists.errors[op.index()], hists.completed(*op), seconds),
            )
        })
        .collect()
}

fn point_stats(hists: &OpHists, seconds: f64) -> OpStats {
    let all = hists.point_ops();
    let errors = Op::ALL
        .iter()
        .filter(|op| **op != Op::List)
        .map(|op| hists.errors[op.index()])
        .sum();
    OpStats::of(&all, errors, hists.completed_point_ops(), seconds)
}

fn side_slices(side: &SideOutcome) -> SideSlices {
    let t = &side.tally;
    SideSlices {
        measured: t.measured,
        judged: t.judged_slices,
        disturbed: t.disturbed,
        set_aside: t.set_aside(),
        taken_ms: t.taken_ns as f64 / 1e6,
        gap_max_ms: t.gap_max_ns as f64 / 1e6,
        idle_after: side.idle_after,
    }
}

fn slices_report(outcome: &Outcome, judged: &Judged) -> SlicesReport {
    SlicesReport {
        slice_ms: outcome.slice_ns as f64 / 1e6,
        backend: side_slices(&outcome.backend),
        peer: outcome.peer.as_ref().map(side_slices),
        judged_share: judged.judged_share,
        steal_ms: outcome.steal_ms,
        list: outcome.slices.clone(),
    }
}

fn judged_report(outcome: &Outcome, judged: &Judged) -> JudgedReport {
    let b = &outcome.backend.tally;
    JudgedReport {
        backend: op_stats(
            &b.judged,
            outcome.backend.judged_active_s,
            outcome.backend.judged_s,
        ),
        peer: outcome.peer.as_ref().map_or_else(Default::default, |p| {
            op_stats(&p.tally.judged, p.judged_active_s, p.judged_s)
        }),
        typical_p50_ns: judged
            .facts
            .ops
            .iter()
            .filter_map(|(op, f)| f.typical_p50_ns.map(|v| (op.name().to_owned(), v)))
            .collect(),
        throughput_ops_per_s: outcome.backend.quiet_throughput_ops_per_s,
    }
}

fn cpu_report(scenario: &Scenario, m: &Measured) -> CpuReport {
    let outcome = &m.outcome;
    let closed = scenario.rate == Rate::Max;
    // Unknown where per-thread CPU time cannot be read: a 0 here would make
    // a CPU comparison pass whatever happened.
    let per_op = |cpu_s: f64, ops: u64| {
        (closed && ops > 0 && outcome.workers_cpu_known).then(|| cpu_s * 1e9 / ops as f64)
    };
    let worker_ns_per_op = per_op(outcome.cpu.workers_s, outcome.backend.summary.ops);
    CpuReport {
        usage: outcome.cpu,
        cores_used: outcome.cpu.process_s.map(|p| p / outcome.cpu.wall_s.max(1e-9)),
        timer_ns: m.timer_ns,
        loadgen_ns_per_op: m.loadgen_ns_per_op,
        worker_ns_per_op,
        peer_worker_ns_per_op: outcome
            .peer
            .as_ref()
            .and_then(|p| per_op(outcome.cpu.peer_workers_s, p.summary.ops)),
        loadgen_share: worker_ns_per_op.map(|w| (m.loadgen_ns_per_op / w).min(1.0)),
    }
}

/// The RSS populating grew by, per session; only where the sessions live
/// in this process (`in_process`): against Redis, or the null backend, the
/// growth is the loadgen's own arrays, and a figure of tens of bytes a
/// session would pass for the backend's.
fn bytes_per_session(in_process: bool, rss: Option<(u64, u64)>, sessions: usize) -> Option<f64> {
    let (before, after) = rss.filter(|_| in_process && sessions > 0)?;
    Some(after.saturating_sub(before) as f64 / sessions as f64)
}

fn memory_report(scenario: &Scenario, m: &Measured) -> MemoryReport {
    MemoryReport {
        rss_before_bytes: m.populated.rss_before_bytes,
        rss_after_populate_bytes: m.populated.rss_after_bytes,
        rss_end_bytes: m.rss_end_bytes,
        bytes_per_session: bytes_per_session(
            scenario.holds_sessions_in_process(),
            m.populated.rss_before_bytes.zip(m.populated.rss_after_bytes),
            scenario.sessions,
        ),
        method: "raw RSS delta across populating the backend (VmRSS, mimalloc, no mi_collect: \
                 unsafe FFI is forbidden in the loadgen); ±15% run to run"
            .into(),
    }
}

fn populate_report(scenario: &Scenario, m: &Measured) -> PopulateReport {
    let wall_s = m.populated.wall.as_secs_f64();
    let create = &m.populated.create_latency;
    PopulateReport {
        sessions: scenario.sessions,
        wall_s,
        creates_per_s: scenario.sessions as f64 / wall_s.max(1e-9),
        create: OpStats::of(create, 0, create.len(), wall_s),
    }
}

/// Assembles the report of a measured run.
#[must_use]
pub fn build_report(request: &RunRequest, m: &Measured) -> Report {
    let scenario = &request.scenario;
    let outcome = &m.outcome;
    let judged = targets::judge(scenario, outcome, &request.targets);
    let backend_s = outcome.backend.active_s;
    Report {
        schema: RESULT_SCHEMA.into(),
        schema_version: RESULT_SCHEMA_VERSION,
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(outcome.started_at),
        started_unix_ms: outcome
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        command: request.command.clone(),
        machine: Machine::detect(),
        git: GitInfo::detect(),
        scenario: Scenario {
            backend: session_engine::redact_url(&scenario.backend),
            ..scenario.clone()
        },
        mode: if scenario.rate == Rate::Max {
            "closed-loop"
        } else {
            "open-loop"
        }
        .into(),
        rate_target_ops_per_s: match scenario.rate {
            Rate::Max => None,
            Rate::PerSec(r) => Some(r),
        },
        throughput_ops_per_s: outcome.backend.throughput_ops_per_s,
        throughput_over_s: outcome.backend.active_s,
        rate_held: judged.rate_held,
        measured_s: outcome.measured_s,
        warmup_s: outcome.warmup.as_secs_f64(),
        ops_issued: outcome.backend.summary.ops,
        ops_unsent: outcome.backend.summary.unsent,
        deletes_skipped: outcome.backend.summary.skipped,
        ops: op_stats(&outcome.backend.tally.all, backend_s, outcome.backend.measured_s),
        all_point_ops: point_stats(&outcome.backend.tally.all, backend_s),
        peer: outcome.peer.as_ref().map(|p| PeerReport {
            store: PEER_STORE.into(),
            throughput_ops_per_s: p.throughput_ops_per_s,
            ops: op_stats(&p.tally.all, p.active_s, p.measured_s),
            all_point_ops: point_stats(&p.tally.all, p.active_s),
        }),
        judged: judged_report(outcome, &judged),
        slices: slices_report(outcome, &judged),
        populate: populate_report(scenario, m),
        memory: memory_report(scenario, m),
        expiry: m.expiry.as_ref().map(|(lag, sweep_interval_ms)| ExpiryReport {
            expired: lag.len(),
            lag_ms_p50: lag.value_at_quantile(0.5),
            lag_ms_p99: lag.value_at_quantile(0.99),
            lag_ms_max: lag.max(),
            sweep_interval_ms: *sweep_interval_ms,
        }),
        engine: m.stats.as_ref().map(|s| EngineReport {
            shards: s.sessions_per_shard.len(),
            sessions_end: s.sessions,
            created_total: s.created_total,
            deleted_total: s.deleted_total,
            expired_total: s.expired_total,
        }),
        cpu: cpu_report(scenario, m),
        timeline: outcome.timeline.clone(),
        targets: request.targets.iter().map(|t| t.name.clone()).collect(),
        passed: judged.verdict == RunVerdict::Pass,
        verdict: judged.verdict,
        verdicts: judged.verdicts,
        earlier_attempts: Vec::new(),
        files: Files::standard(
            Op::ALL
                .iter()
                .filter(|op| !outcome.backend.tally.all.get(**op).is_empty())
                .map(|op| op.name()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts whose verdicts are `verdicts` in turn: how many ran, the
    /// verdict returned, and the attempt numbers kept as earlier ones.
    fn attempts_of(max: usize, verdicts: &[RunVerdict]) -> (usize, RunVerdict, Vec<(usize, usize)>) {
        let mut ran = 0;
        let (last, kept) = until_conclusive(
            max,
            |n| {
                ran += 1;
                assert_eq!(n, ran, "attempts are numbered from 1");
                Ok((n, verdicts[n - 1]))
            },
            |&(_, v)| v == RunVerdict::Inconclusive,
            |&(n, _), next| (n, next),
        )
        .unwrap();
        (ran, last.1, kept)
    }

    /// The RSS growth per session is reported for a backend in this
    /// process only: against Redis it was the loadgen's own arrays, shown
    /// in the headline as the backend's bytes per session.
    #[test]
    fn bytes_per_session_only_where_the_sessions_are() {
        let rss = Some((1_000_000, 5_000_000));
        assert_eq!(bytes_per_session(true, rss, 10_000), Some(400.0));
        assert_eq!(bytes_per_session(false, rss, 10_000), None, "Redis: not ours");
        assert_eq!(bytes_per_session(true, None, 10_000), None);
        let redis = Scenario::parse("t", "backend = \"redis://127.0.0.1:6379\"\n").unwrap();
        assert!(!redis.holds_sessions_in_process());
        let null = Scenario::parse("t", "backend = \"null\"\n").unwrap();
        assert!(!null.holds_sessions_in_process());
        assert!(Scenario::parse("t", "").unwrap().holds_sessions_in_process());
    }

    /// Only an inconclusive attempt runs again: a failure is never
    /// retried into a pass, and a pass ends the run.
    #[test]
    fn only_an_inconclusive_attempt_runs_again() {
        use RunVerdict::{Fail, Inconclusive, Pass};
        assert_eq!(attempts_of(3, &[Pass]), (1, Pass, vec![]));
        assert_eq!(attempts_of(3, &[Fail, Pass, Pass]), (1, Fail, vec![]));
        assert_eq!(
            attempts_of(3, &[Inconclusive, Fail, Pass]),
            (2, Fail, vec![(1, 2)])
        );
        assert_eq!(
            attempts_of(3, &[Inconclusive, Inconclusive, Pass]),
            (3, Pass, vec![(1, 2), (2, 3)])
        );
    }

    /// An inconclusive attempt whose judged slices broke a bound (too few
    /// slices judged to call it a failure) is not run again: a later
    /// attempt's pass would hide what it saw. One in which nothing failed
    /// is.
    #[test]
    fn an_inconclusive_attempt_that_saw_a_failure_is_not_run_again() {
        use crate::targets::{Status, Verdict};
        let held = Verdict::plain("t", "get", "p99 added", "50us".into(), "+0ns".into());
        let broke = Verdict {
            status: Status::Fail,
            ..held.clone()
        };
        assert!(runs_again(RunVerdict::Inconclusive, std::slice::from_ref(&held)));
        assert!(!runs_again(RunVerdict::Inconclusive, &[held.clone(), broke]));
        assert!(!runs_again(RunVerdict::Pass, std::slice::from_ref(&held)));
        // Through the loop: the failure's attempt is the last.
        let rows = |failed: bool| {
            let mut rows = vec![held.clone()];
            if failed {
                rows.push(Verdict {
                    status: Status::Fail,
                    ..held.clone()
                });
            }
            rows
        };
        let attempts = [
            (RunVerdict::Inconclusive, rows(true)),
            (RunVerdict::Pass, rows(false)),
        ];
        let (last, kept) = until_conclusive(
            3,
            |n| Ok(attempts[n - 1].clone()),
            |(v, rows)| runs_again(*v, rows),
            |_, next| next,
        )
        .unwrap();
        assert_eq!(last.0, RunVerdict::Inconclusive);
        assert!(kept.is_empty());
    }

    /// The cap holds: the last attempt's inconclusive verdict is the run's.
    #[test]
    fn attempts_stop_at_the_cap() {
        use RunVerdict::{Inconclusive, Pass};
        assert_eq!(
            attempts_of(2, &[Inconclusive, Inconclusive, Pass]),
            (2, Inconclusive, vec![(1, 2)])
        );
        assert_eq!(attempts_of(1, &[Inconclusive, Pass]), (1, Inconclusive, vec![]));
    }

    /// An attempt's error ends the run with it.
    #[test]
    fn an_attempts_error_ends_the_run() {
        let mut ran = 0;
        let got = until_conclusive(
            3,
            |n| {
                ran += 1;
                if n == 2 {
                    Err(Error::Usage("gone".into()))
                } else {
                    Ok(RunVerdict::Inconclusive)
                }
            },
            |v| *v == RunVerdict::Inconclusive,
            |_, _| (),
        );
        assert!(got.is_err());
        assert_eq!(ran, 2);
    }

    /// Open loop, an overloaded backend completes late some of what a
    /// slice offered: their latencies count, but the per-kind and the
    /// point-operation rates count only what completed in time, as the
    /// run-wide rate does (they overstated it).
    #[test]
    fn late_completions_count_in_latency_not_in_rate() {
        let mut hists = OpHists::default();
        for _ in 0..100 {
            hists.record(Op::Get, 1_000, true);
        }
        for _ in 0..30 {
            hists.record(Op::Get, 5_000_000, true);
            hists.mark_late(Op::Get);
        }
        let by_kind = op_stats(&hists, 10.0, 10.0);
        let get = &by_kind["get"];
        assert_eq!(get.count, 130, "every latency is in the histogram");
        assert!(
            (get.throughput_ops_per_s - 10.0).abs() < 1e-9,
            "{}",
            get.throughput_ops_per_s
        );
        let points = point_stats(&hists, 10.0);
        assert!(
            (points.throughput_ops_per_s - 10.0).abs() < 1e-9,
            "{}",
            points.throughput_ops_per_s
        );
    }
}
