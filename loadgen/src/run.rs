//! `loadgen run`: open the backend, populate, calibrate, load, judge, write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use session_engine::{Clock, Engine, RemovalCause, SessionId};

use crate::backend::{Backend, BackendSpec, NullStore, PeerStore, Stalling};
use crate::client::{drive, ClientPlan, ClientState, Work};
use crate::clock::{block_on_ready, SpinTime};
use crate::error::Error;
use crate::hist::{new_hist, Hist, Msg, OpHists, Recorder};
use crate::limits::{CALIBRATION_NS, RATE_HELD_SHARE};
use crate::mix::{KeySampler, Op};
use crate::populate::{self, Populated};
use crate::procfs::{self, GitInfo, Machine};
use crate::report::{
    rfc3339, CpuReport, EngineReport, ExpiryReport, Files, MemoryReport, PeerReport, PopulateReport, Report,
    RESULT_SCHEMA, RESULT_SCHEMA_VERSION,
};
use crate::scenario::Scenario;
use crate::schedule::Pace;
use crate::targets::{self, OpStats, RunFacts, Status, Targets, Verdict};
use crate::units::{Dur, Rate};
use crate::workers::{self, Outcome, Phase};

/// What `loadgen run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The resolved scenario.
    pub scenario: Scenario,
    /// Tiers to judge against.
    pub targets: Vec<Targets>,
    /// Where to write the files (`None`: write nothing).
    pub out_dir: Option<PathBuf>,
    /// Show a progress bar (stderr, terminals only).
    pub progress: bool,
    /// Freeze the backend once: (at, length) after the load starts.
    pub stall: Option<(Duration, Duration)>,
    /// The command line, for the record.
    pub command: Vec<String>,
}

/// The engine-side observers of a run.
pub struct EngineProbe {
    lag_ms: Arc<Mutex<Hist>>,
    sweep_interval_ms: u64,
}

/// Opens the embedded engine the scenario describes, with a listener that
/// records how late each expiry came.
///
/// # Errors
/// [`Error::Usage`] for a configuration the engine refuses.
pub fn open_engine(scenario: &Scenario) -> Result<(Engine, EngineProbe), Error> {
    if let Some(dir) = &scenario.engine.data_dir {
        // A non-empty directory would be recovered: the run would start with
        // someone else's sessions and measure recovery, not the scenario.
        let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            return Err(Error::Usage(format!(
                "data dir {} is not empty: a load run starts from an empty engine (remove it or pick another)",
                dir.display()
            )));
        }
    }
    let lag_ms = Arc::new(Mutex::new(new_hist()));
    let clock = Clock::system();
    let listener_clock = clock.clone();
    let listener_lag = Arc::clone(&lag_ms);
    let config = scenario
        .engine_config()
        .map_err(|e| Error::Usage(e.to_string()))?
        .clock(clock)
        .listener(move |session, cause| {
            if cause == RemovalCause::Expired {
                if let Some(deadline_ms) = session.expires_at_ms() {
                    let lag = listener_clock.now_ms().saturating_sub(deadline_ms);
                    listener_lag.lock().saturating_record(lag);
                }
            }
        });
    let engine = Engine::open(config).map_err(|e| Error::Usage(format!("engine configuration: {e}")))?;
    let sweep_interval_ms = u64::try_from(scenario.engine.sweep_interval.0.as_millis()).unwrap_or(u64::MAX);
    Ok((
        engine,
        EngineProbe {
            lag_ms,
            sweep_interval_ms,
        },
    ))
}

/// The backend a scenario names, or a usage error.
///
/// # Errors
/// Unknown backends.
pub fn backend_of(scenario: &Scenario) -> Result<BackendSpec, Error> {
    scenario
        .backend
        .parse()
        .map_err(|e: crate::units::ParseError| Error::Usage(e.to_string()))
}

/// Connects to Redis on a runtime of its own, which must outlive the store:
/// the client's connections are driven there, whichever runtime the clients
/// use.
///
/// # Errors
/// [`Error::Usage`] for a bad URL or a server that does not answer.
pub fn connect_redis(url: &str) -> Result<(tokio::runtime::Runtime, session_redis::RedisStore), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen-redis-home")
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(e.into()))?;
    let config =
        session_redis::RedisConfig::from_url(url).map_err(|e| Error::Usage(format!("backend {url}: {e}")))?;
    let store = runtime
        .block_on(session_redis::RedisStore::connect(config))
        .map_err(|e| Error::Usage(format!("backend {url}: {e}")))?;
    Ok((runtime, store))
}

/// Everything one run measured, before it becomes a report.
pub struct Measured {
    /// The populate phase.
    pub populated: Populated,
    /// The load.
    pub outcome: Outcome,
    /// The peer, measured before and after the load.
    pub reference: Reference,
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

/// Runs the scenario's whole sequence against `store`.
///
/// # Errors
/// A failed populate.
pub fn measure<B: Backend>(
    store: &Arc<B>,
    probe: Option<&EngineProbe>,
    scenario: &Scenario,
    progress: Option<&ProgressBar>,
) -> Result<Measured, Error> {
    if let Some(bar) = progress {
        bar.set_message(format!("populating {} sessions", scenario.sessions));
    }
    let populated = populate::populate(store, scenario)?;
    let loadgen_ns_per_op = loadgen_cost_ns(scenario, &populated.ids);
    let timer_ns = timer_cost_ns();
    // The peer brackets the load (before and after) so that a machine that
    // changes speed during the run moves the reference with it.
    let peer = PeerStore::default();
    let mut reference = reference_run(&peer, scenario)?;
    let outcome = workers::run(store, scenario, &populated.ids, Phase::of(scenario), progress);
    reference.absorb(&reference_run(&peer, scenario)?);
    Ok(Measured {
        populated,
        outcome,
        reference,
        loadgen_ns_per_op,
        timer_ns,
        rss_end_bytes: procfs::rss_bytes(),
        stats: store.stats(),
        expiry: probe.map(|p| (p.lag_ms.lock().clone(), p.sweep_interval_ms)),
    })
}

/// Worker CPU per operation of the loop itself: the scenario's mix and keys
/// against the null backend, closed loop, on this thread for 200 ms.
#[must_use]
pub fn loadgen_cost_ns(scenario: &Scenario, population: &Arc<[SessionId]>) -> f64 {
    closed_loop_here(&NullStore, scenario, population, CALIBRATION_NS).0
}

/// Runs the scenario's point-operation mix closed loop on this thread
/// against `store` for `duration_ns`; returns CPU ns per operation and the
/// histograms.
pub fn closed_loop_here<S: session_engine::SessionStore>(
    store: &S,
    scenario: &Scenario,
    population: &Arc<[SessionId]>,
    duration_ns: u64,
) -> (f64, OpHists) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (_stx, srx) = crossbeam_channel::bounded(1);
    let mut recorder = Recorder::new(0, 0, u64::MAX / 4, tx, srx);
    let plan = ClientPlan {
        start_ns: 0,
        end_ns: duration_ns,
        ops_max: u64::MAX,
        pace: Pace::Closed,
        work: Work::Point {
            mix: scenario.mix.table(),
            keys: KeySampler::new(scenario.keys, population.len()),
        },
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
    let summary = block_on_ready(drive(store, &time, &plan, &mut state, &mut recorder));
    #[allow(clippy::cast_possible_truncation)]
    let wall_ns = started.elapsed().as_nanos() as u64;
    let used_ns = procfs::thread_cpu_ns()
        .zip(cpu_before)
        .map_or(wall_ns, |(after, before)| after.saturating_sub(before));
    recorder.finish(summary);
    let mut hists = OpHists::default();
    for msg in rx.try_iter() {
        if let Msg::Interval { hists: h, .. } = msg {
            hists.add(&h);
        }
    }
    (used_ns as f64 / summary.ops.max(1) as f64, hists)
}

/// The reference peer's figures: the same mix and keys, closed loop on one
/// thread, against [`PeerStore`] populated like the scenario.
pub struct Reference {
    /// CPU ns per operation (loop included), averaged over the runs.
    pub cpu_ns_per_op: f64,
    /// Latency (service time) histograms, all runs.
    pub hists: OpHists,
    runs: u32,
}

impl Reference {
    fn absorb(&mut self, other: &Reference) {
        let total = f64::from(self.runs + other.runs);
        self.cpu_ns_per_op =
            (self.cpu_ns_per_op * f64::from(self.runs) + other.cpu_ns_per_op * f64::from(other.runs)) / total;
        self.hists.add(&other.hists);
        self.runs += other.runs;
    }
}

/// One reference run against `peer` (populated on first use).
///
/// # Errors
/// If populating the peer fails (it cannot, short of the OS random source).
pub fn reference_run(peer: &PeerStore, scenario: &Scenario) -> Result<Reference, Error> {
    let population = peer_population(peer, scenario)?;
    let (cpu_ns_per_op, hists) = closed_loop_here(peer, scenario, &population, CALIBRATION_NS);
    Ok(Reference {
        cpu_ns_per_op,
        hists,
        runs: 1,
    })
}

fn peer_population(peer: &PeerStore, scenario: &Scenario) -> Result<Arc<[SessionId]>, Error> {
    use session_engine::SessionStore as _;
    let have = block_on_ready(peer.len()).unwrap_or(0);
    let mut ids = Vec::with_capacity(scenario.sessions);
    if have == 0 {
        let metadata = vec![0; scenario.metadata_bytes];
        for _ in 0..scenario.sessions {
            let id = block_on_ready(peer.create(&metadata, session_engine::Timeout::Never))
                .map_err(|e| Error::Failed(e.into()))?;
            ids.push(id);
        }
    } else {
        let mut cursor = session_engine::Cursor::START;
        loop {
            let page = block_on_ready(peer.list(cursor, session_engine::limits::LIST_PAGE_MAX))
                .map_err(|e| Error::Failed(e.into()))?;
            ids.extend(page.sessions.iter().map(session_engine::Session::id));
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    Ok(ids.into())
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

/// Runs the request against the backend it names.
///
/// # Errors
/// [`Error`].
pub fn measure_request(request: &RunRequest, progress: Option<&ProgressBar>) -> Result<Measured, Error> {
    let scenario = &request.scenario;
    match backend_of(scenario)? {
        BackendSpec::Embedded => {
            let (engine, probe) = open_engine(scenario)?;
            measure_maybe_stalled(Arc::new(engine), Some(&probe), request, progress)
        }
        BackendSpec::Null => measure_maybe_stalled(Arc::new(NullStore), None, request, progress),
        BackendSpec::Peer => measure_maybe_stalled(Arc::new(PeerStore::default()), None, request, progress),
        BackendSpec::Redis(url) => {
            let (runtime, store) = connect_redis(&url)?;
            let measured = measure_maybe_stalled(Arc::new(store), None, request, progress);
            // The store (and its connections) are gone; now its runtime may go.
            drop(runtime);
            measured
        }
    }
}

fn measure_maybe_stalled<B: Backend>(
    store: Arc<B>,
    probe: Option<&EngineProbe>,
    request: &RunRequest,
    progress: Option<&ProgressBar>,
) -> Result<Measured, Error> {
    match request.stall {
        Some((at, length)) => {
            let stalling = Arc::new(Stalling::new(store, at, length));
            measure(&stalling, probe, &request.scenario, progress)
        }
        None => measure(&store, probe, &request.scenario, progress),
    }
}

/// The per-kind figures and the verdict inputs of an outcome.
#[must_use]
pub fn facts_of(scenario: &Scenario, outcome: &Outcome) -> RunFacts {
    let mut facts = RunFacts {
        list_page: scenario.list.page,
        throughput_ops_per_s: outcome.throughput_ops_per_s,
        ..RunFacts::default()
    };
    for op in Op::ALL {
        let hist = outcome.totals.get(op);
        let issued = if op == Op::List {
            scenario.list.rate_per_s > 0.0
        } else {
            scenario.mix.includes(op)
        };
        if issued {
            facts.issued.push(op);
        }
        if issued || !hist.is_empty() {
            facts.ops.insert(
                op,
                OpStats::of(
                    hist,
                    outcome.totals.errors[op.index()],
                    outcome.window_ops[op.index()],
                    outcome.measured_s,
                ),
            );
        }
    }
    facts
}

/// The load's own check (open loop): did it keep the schedule?
#[must_use]
pub fn rate_verdict(scenario: &Scenario, outcome: &Outcome) -> Option<Verdict> {
    let Rate::PerSec(target) = scenario.rate else {
        return None;
    };
    let achieved = outcome.throughput_ops_per_s;
    let held = achieved >= target * RATE_HELD_SHARE && outcome.summary.unsent == 0;
    Some(Verdict {
        tier: "run".into(),
        subject: "all".into(),
        bound: "rate".into(),
        limit: format!("{:.0} ops/s", target * RATE_HELD_SHARE),
        measured: format!("{achieved:.0} ops/s"),
        margin: Some(achieved / (target * RATE_HELD_SHARE)),
        status: if held { Status::Pass } else { Status::Fail },
        note: if outcome.summary.unsent > 0 {
            format!("{} operations never sent", outcome.summary.unsent)
        } else {
            format!(
                "{:.0}% of the offered rate must complete",
                RATE_HELD_SHARE * 100.0
            )
        },
    })
}

/// A run that measured no point operation cannot pass, whatever its
/// targets say (`--ops` can end a run inside its warm-up).
fn nothing_measured_verdict(outcome: &Outcome) -> Option<Verdict> {
    let measured = outcome.totals.point_ops().len();
    (measured == 0).then(|| Verdict {
        tier: "run".into(),
        subject: "all".into(),
        bound: "ops".into(),
        limit: "at least 1".into(),
        measured: "0".into(),
        margin: None,
        status: Status::Fail,
        note: "no operation was measured after the warm-up (an --ops limit reached inside it?)".into(),
    })
}

/// Assembles the report of a measured run.
#[must_use]
#[allow(clippy::too_many_lines)] // one struct literal, field by field
pub fn build_report(request: &RunRequest, m: &Measured) -> Report {
    let scenario = &request.scenario;
    let outcome = &m.outcome;
    let facts = facts_of(scenario, outcome);
    let mut verdicts: Vec<Verdict> = rate_verdict(scenario, outcome).into_iter().collect();
    verdicts.extend(nothing_measured_verdict(outcome));
    for tier in &request.targets {
        verdicts.extend(targets::evaluate(tier, &facts));
    }
    let passed = targets::all_pass(&verdicts);
    let all = outcome.totals.point_ops();
    let point_errors: u64 = Op::ALL
        .iter()
        .filter(|op| **op != Op::List)
        .map(|op| outcome.totals.errors[op.index()])
        .sum();
    let populate_s = m.populated.wall.as_secs_f64();

    let bytes_per_session = m
        .populated
        .rss_before_bytes
        .zip(m.populated.rss_after_bytes)
        .map(|(before, after)| after.saturating_sub(before) as f64 / scenario.sessions as f64);
    let closed = scenario.rate == Rate::Max;

    // Unknown where per-thread CPU time cannot be read: a 0 here would make
    // the gate's CPU comparison pass whatever happened.
    let worker_ns_per_op = (closed && outcome.summary.ops > 0 && outcome.workers_cpu_known)
        .then(|| outcome.cpu.workers_s * 1e9 / outcome.summary.ops as f64);
    let mut measured_p99s: Vec<u64> = outcome
        .timeline
        .iter()
        .filter(|p| !p.warmup && p.ops > 0)
        .map(|p| p.p99_ns)
        .collect();
    measured_p99s.sort_unstable();
    let interval_p99_median = measured_p99s.get(measured_p99s.len() / 2).copied().unwrap_or(0);
    let started_unix_ms = outcome
        .started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    Report {
        schema: RESULT_SCHEMA.into(),
        schema_version: RESULT_SCHEMA_VERSION,
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(outcome.started_at),
        started_unix_ms,
        command: request.command.clone(),
        machine: Machine::detect(),
        git: GitInfo::detect(),
        scenario: scenario.clone(),
        mode: if closed { "closed-loop" } else { "open-loop" }.into(),
        rate_target_ops_per_s: match scenario.rate {
            Rate::Max => None,
            Rate::PerSec(r) => Some(r),
        },
        throughput_ops_per_s: outcome.throughput_ops_per_s,
        rate_held: rate_verdict(scenario, outcome).map(|v| v.status == Status::Pass),
        measured_s: outcome.measured_s,
        warmup_s: outcome.warmup.as_secs_f64(),
        ops_issued: outcome.summary.ops,
        ops_unsent: outcome.summary.unsent,
        deletes_skipped: outcome.summary.skipped,
        ops: facts
            .ops
            .iter()
            .map(|(op, s)| (op.name().to_owned(), *s))
            .collect(),
        all_point_ops: OpStats::of(&all, point_errors, outcome.window_point_ops(), outcome.measured_s),
        interval_p99_median_ns: interval_p99_median,
        intervals_disturbed: measured_p99s
            .iter()
            .filter(|p| **p > interval_p99_median.saturating_mul(10))
            .count(),
        intervals_measured: measured_p99s.len(),
        populate: PopulateReport {
            sessions: scenario.sessions,
            wall_s: populate_s,

            creates_per_s: scenario.sessions as f64 / populate_s.max(1e-9),
            create: OpStats::of(
                &m.populated.create_latency,
                0,
                m.populated.create_latency.len(),
                populate_s,
            ),
        },
        memory: MemoryReport {
            rss_before_bytes: m.populated.rss_before_bytes,
            rss_after_populate_bytes: m.populated.rss_after_bytes,
            rss_end_bytes: m.rss_end_bytes,
            bytes_per_session,
            method: "raw RSS delta across populating (VmRSS, mimalloc, no mi_collect: \
                     unsafe FFI is forbidden in the loadgen); ±15% run to run"
                .into(),
        },
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
        cpu: CpuReport {
            usage: outcome.cpu,
            cores_used: outcome.cpu.process_s.map(|p| p / outcome.cpu.wall_s.max(1e-9)),
            timer_ns: m.timer_ns,
            loadgen_ns_per_op: m.loadgen_ns_per_op,
            worker_ns_per_op,
            loadgen_share: worker_ns_per_op.map(|w| (m.loadgen_ns_per_op / w).min(1.0)),
            workers_cpu_share: outcome.cpu.workers_s
                / (outcome.cpu.wall_s * scenario.workers as f64).max(1e-9),
        },
        peer: peer_report(&m.reference),
        timeline: outcome.timeline.clone(),
        targets: request.targets.iter().map(|t| t.name.clone()).collect(),
        verdicts,
        passed,
        disturbed: outcome.workers_cpu_known
            && outcome.cpu.workers_s
                < crate::limits::DISTURBED_BELOW * outcome.cpu.wall_s * scenario.workers as f64,
        files: Files::standard(),
    }
}

fn peer_report(reference: &Reference) -> PeerReport {
    let seconds = f64::from(reference.runs) * Duration::from_nanos(CALIBRATION_NS).as_secs_f64();
    let ops = Op::ALL
        .iter()
        .filter(|op| !reference.hists.get(**op).is_empty())
        .map(|op| {
            let hist = reference.hists.get(*op);
            let stats = OpStats::of(hist, reference.hists.errors[op.index()], hist.len(), seconds);
            (op.name().to_owned(), stats)
        })
        .collect();
    PeerReport {
        store: format!(
            "plain sharded parking_lot Mutex<HashMap> ({} shards, ahash), no expiry",
            crate::backend::PEER_SHARDS
        ),
        threads: 1,
        runs: reference.runs,
        seconds_each: Duration::from_nanos(CALIBRATION_NS).as_secs_f64(),
        cpu_ns_per_op: reference.cpu_ns_per_op,
        ops,
        all_point_ops: {
            let all = reference.hists.point_ops();
            OpStats::of(&all, 0, all.len(), seconds)
        },
    }
}

/// Writes the JSON, markdown, SVG and interval log into `dir`.
///
/// # Errors
/// I/O.
pub fn write_outputs(dir: &Path, report: &Report, outcome: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let files = &report.files;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join(name).display()))
    };
    write(
        &files.json,
        format!("{}\n", serde_json::to_string_pretty(report)?).as_bytes(),
    )?;
    write(&files.markdown, report.markdown().as_bytes())?;
    write(&files.interval_log, &outcome.interval_log)?;
    let series: Vec<(&str, &Hist)> = Op::ALL
        .iter()
        .map(|op| (op.name(), outcome.totals.get(*op)))
        .filter(|(_, h)| !h.is_empty())
        .collect();
    let title = format!(
        "{}: latency by percentile ({}, {} live sessions)",
        report.scenario.name, report.mode, report.scenario.sessions
    );
    crate::plot::percentiles(&dir.join(&files.plot_svg), &title, &series)?;
    Ok(())
}

/// A progress bar on stderr, or `None` when stderr is not a terminal, in CI,
/// or when asked to be quiet.
#[must_use]
pub fn progress_bar(quiet: bool, label: &str) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if quiet || std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ms {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    Some(bar)
}

/// `AT:LENGTH` (for example `500ms:200ms`).
///
/// # Errors
/// A usage message.
pub fn parse_stall(text: &str) -> Result<(Duration, Duration), Error> {
    let (at, length) = text.split_once(':').ok_or_else(|| {
        Error::Usage(format!(
            "--inject-stall {text:?}: expected AT:LENGTH, e.g. 500ms:200ms"
        ))
    })?;
    let parse = |s: &str| {
        s.parse::<Dur>()
            .map(|d| d.0)
            .map_err(|e| Error::Usage(format!("--inject-stall: {e}")))
    };
    Ok((parse(at)?, parse(length)?))
}

/// The default results directory for a run started now.
#[must_use]
pub fn default_dir(root: &Path, scenario: &str) -> PathBuf {
    crate::report::default_out_dir(root, scenario, SystemTime::now())
}

/// Runs, prints the summary and the verdict table, writes the files.
///
/// # Errors
/// [`Error`].
pub fn execute(request: &RunRequest, quiet: bool) -> Result<Report, Error> {
    let s = &request.scenario;
    if !quiet {
        eprintln!(
            "loadgen: scenario {} ({} sessions, rate {}, {} + {} warm-up, {} workers, seed {})",
            s.name, s.sessions, s.rate, s.duration, s.warmup, s.workers, s.seed
        );
    }
    let bar = progress_bar(!request.progress, &s.name);
    let measured = measure_request(request, bar.as_ref())?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = build_report(request, &measured);
    println!("{}", headline(&report));
    println!();
    print!("{}", targets::table(&report.verdicts));
    if let Some(dir) = &request.out_dir {
        write_outputs(dir, &report, &measured.outcome)?;
        println!("\nresults: {}", dir.display());
    }
    if report.disturbed {
        println!(
            "warning: disturbed run: the workers got {:.0}% of their cores (other work on the machine, or a backend that blocks them); the tail shows it",
            report.cpu.workers_cpu_share * 100.0
        );
    }
    println!("verdict: {}", if report.passed { "PASS" } else { "FAIL" });
    Ok(report)
}

/// The one-line summary printed above the verdict table.
#[must_use]
pub fn headline(r: &Report) -> String {
    use crate::units::format_ns;
    use std::fmt::Write as _;
    let a = &r.all_point_ops;
    let mut line = format!(
        "{} {}: {:.0} ops/s over {:.1} s, all point ops p50 {} p99 {} p99.9 {} max {}",
        r.scenario.name,
        r.mode,
        r.throughput_ops_per_s,
        r.measured_s,
        format_ns(a.p50_ns),
        format_ns(a.p99_ns),
        format_ns(a.p999_ns),
        format_ns(a.max_ns)
    );
    if let Some(b) = r.memory.bytes_per_session {
        let _ = write!(line, ", {b:.0} B/session");
    }
    if let Some(e) = &r.expiry {
        let _ = write!(line, ", expiry lag p99 {} ms", e.lag_ms_p99);
    }
    line
}
