//! The command line: `loadgen run | sweep | gate | compare | list`, and
//! exit codes (0 pass, 1 a bound or the gate failed, 2 usage or
//! configuration error, 3 inconclusive: the machine was too busy to judge).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backend::{backend_of, BackendSpec};
use crate::error::Error;
use crate::gate;
use crate::limits::{
    GATE_REPEAT_MAX, GATE_ROUNDS_MAX, GATE_SESSIONS_MAX, RUN_ATTEMPTS_DEFAULT, RUN_ATTEMPTS_MAX,
    SWEEP_RETRIES_MAX, SWEEP_STEPS_MAX,
};
use crate::mix::{KeyDist, Mix};
use crate::output::Column;
use crate::run::{self, RunRequest};
use crate::scenario::{self, Scenario};
use crate::stall::Stall;
use crate::sweep::{self, SweepRequest};
use crate::targets::{self, RunVerdict, Targets};
use crate::units::{Dur, Rate};

/// Exit code: every target held (or the gate passed).
pub const EXIT_PASS: i32 = 0;
/// Exit code: a target failed, or the gate found a regression.
pub const EXIT_FAIL: i32 = 1;
/// Exit code: bad usage, scenario, targets or configuration; or the run could not complete.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: too few slices could be judged to pass or fail the run.
pub const EXIT_INCONCLUSIVE: i32 = 3;

/// Load generator for the session engine.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario, print the verdict table, write the results.
    Run(RunArgs),
    /// Step the offered rate up until a bound breaks, bisect to the knee
    /// within 5%; report it and the bound that broke first.
    Sweep(SweepArgs),
    /// The CI gates: the engine's CPU per operation over the peer's
    /// (wall clock), or its instructions per operation (--instructions),
    /// against a committed baseline; fail only on a regression.
    Gate(GateArgs),
    /// Two runs' result documents side by side, per operation.
    Compare(CompareArgs),
    /// List the shipped scenarios and target tiers.
    List,
    /// The instruction gate's counted loops (run under callgrind by
    /// `gate --instructions`).
    #[command(hide = true)]
    OpLoops(OpLoopsArgs),
}

/// Scenario selection and overrides, shared by every subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct ScenarioArgs {
    /// A shipped scenario (default, peak, tiny) or a TOML file.
    #[arg(long, short = 's', default_value = "default")]
    pub scenario: String,
    /// Live sessions kept during the load.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Concurrent clients (more than workers: async tasks, for remote backends).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Point operations per second in total (e.g. 200k), or "max" for closed loop.
    #[arg(long)]
    pub rate: Option<Rate>,
    /// Measured duration (e.g. 20s).
    #[arg(long)]
    pub duration: Option<Dur>,
    /// Stop after this many measured point operations (the warm-up's are
    /// not counted), or at the end of --duration if that comes first.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Warm-up excluded from the figures.
    #[arg(long)]
    pub warmup: Option<Dur>,
    /// Histogram interval of the interval log and the timeline.
    #[arg(long)]
    pub interval: Option<Dur>,
    /// Slice length: the load alternates slices between the backend and the
    /// reference peer (e.g. 100ms).
    #[arg(long)]
    pub slice: Option<Dur>,
    /// No reference peer: every slice is the backend's, and tails are
    /// judged as measured, not as what the backend adds.
    #[arg(long)]
    pub no_peer: bool,
    /// Metadata bytes per session.
    #[arg(long)]
    pub metadata_bytes: Option<usize>,
    /// Key distribution: uniform or zipf:EXPONENT.
    #[arg(long)]
    pub keys: Option<KeyDist>,
    /// Timeout of the live population ("never" or a duration).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Short timeout of sessions created under load (expiry churn).
    #[arg(long)]
    pub churn_timeout: Option<Dur>,
    /// Operation mix, e.g. get=60,update=20,create=10,delete=10.
    #[arg(long)]
    pub mix: Option<Mix>,
    /// List pages per second (0: none).
    #[arg(long)]
    pub list_rate: Option<f64>,
    /// Sessions per list page.
    #[arg(long)]
    pub list_page: Option<usize>,
    /// Engine shards (power of two; 0: engine default).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Engine capacity (`Config::sessions_max`).
    #[arg(long)]
    pub sessions_max: Option<usize>,
    /// Sessions the engine's tables have room for up front (`Config::initial_capacity`; 0: grow as needed).
    #[arg(long)]
    pub initial_capacity: Option<usize>,
    /// Engine metadata limit in bytes (`Config::metadata_bytes_max`).
    #[arg(long)]
    pub metadata_bytes_max: Option<usize>,
    /// Engine sweep interval (`Config::sweep_interval`).
    #[arg(long)]
    pub sweep_interval: Option<Dur>,
    /// Persist to this directory (`Config::data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// always, interval:MS or never (`Config::durability`; with --data-dir).
    #[arg(long)]
    pub durability: Option<String>,
    /// logs or filesystem (`Config::sync_scope`: one syncfs a round for every
    /// log, for a data dir on an ext4 file system of its own; with --data-dir).
    #[arg(long)]
    pub sync_scope: Option<String>,
    /// embedded, null (the loadgen's own cost), peer (a plain sharded map) or redis://HOST:PORT.
    #[arg(long)]
    pub backend: Option<String>,
    /// Generator seed (0: fresh, printed in the results).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl ScenarioArgs {
    /// Refuses the embedded engine's flags with another backend, which
    /// would ignore them.
    fn engine_flags_fit(&self, backend: &str) -> Result<(), Error> {
        let other = match backend.parse::<crate::backend::BackendSpec>() {
            Ok(crate::backend::BackendSpec::Embedded) | Err(_) => return Ok(()),
            Ok(_) => backend,
        };
        let given: Vec<&str> = [
            ("--shards", self.shards.is_some()),
            ("--sessions-max", self.sessions_max.is_some()),
            ("--initial-capacity", self.initial_capacity.is_some()),
            ("--metadata-bytes-max", self.metadata_bytes_max.is_some()),
            ("--sweep-interval", self.sweep_interval.is_some()),
            ("--data-dir", self.data_dir.is_some()),
            ("--durability", self.durability.is_some()),
            ("--sync-scope", self.sync_scope.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if given.is_empty() {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "{} configure the embedded engine; backend {other} would ignore them",
            given.join(", ")
        )))
    }

    /// The scenario with the overrides applied, resolved.
    ///
    /// # Errors
    /// A usage message.
    pub fn resolve(&self) -> Result<Scenario, Error> {
        let mut s = Scenario::load(&self.scenario).map_err(|e| Error::Usage(e.to_string()))?;
        macro_rules! set {
            ($($field:ident => $($target:ident).+),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { s.$($target).+ = v; })*
            };
        }
        set!(
            sessions => sessions, workers => workers, clients => clients, rate => rate,
            duration => duration, ops => ops_max, warmup => warmup, interval => interval, slice => slice,
            metadata_bytes => metadata_bytes, keys => keys, timeout => timeout,
            churn_timeout => churn_timeout, mix => mix, list_rate => list.rate_per_s,
            list_page => list.page, shards => engine.shards, sessions_max => engine.sessions_max,
            initial_capacity => engine.initial_capacity,
            metadata_bytes_max => engine.metadata_bytes_max, sweep_interval => engine.sweep_interval,
            durability => engine.durability, sync_scope => engine.sync_scope, backend => backend, seed => seed,
        );
        if let Some(dir) = &self.data_dir {
            s.engine.data_dir = Some(dir.clone());
        }
        self.engine_flags_fit(&s.backend)?;
        if self.no_peer {
            s.peer = false;
        }
        s.resolve().map_err(|e| Error::Usage(e.to_string()))
    }
}

/// Output options.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Directory for this run's files (default: a new one under --results-dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where default result directories go.
    #[arg(long, default_value = "results/tmp")]
    pub results_dir: PathBuf,
    /// Write no files.
    #[arg(long)]
    pub no_output: bool,
    /// No progress bar and no summary on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl OutputArgs {
    fn dir(&self, scenario: &str) -> Option<PathBuf> {
        if self.no_output {
            return None;
        }
        Some(
            self.out
                .clone()
                .unwrap_or_else(|| crate::output::default_dir(&self.results_dir, scenario)),
        )
    }
}

/// `loadgen run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Target tiers: shipped names (seed, embedded) or TOML files, comma-separated.
    #[arg(long, short = 't', default_value = "seed,embedded", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Outputs.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Freeze the backend once, for LENGTH from its first slice at or after
    /// AT past the warm-up (AT:LENGTH, e.g. 2s:100ms), to see a stall fail
    /// the verdict.
    #[arg(long)]
    pub inject_stall: Option<Stall>,
    /// Columns of the per-operation percentile table, e.g. 50,99,99.9,max.
    #[arg(long, value_delimiter = ',', default_value = "50,90,99,99.9,99.99,max")]
    pub percentiles: Vec<Column>,
    /// Print the result document (JSON) on stdout, and the tables on stderr.
    #[arg(long)]
    pub json: bool,
    /// Runs of the load at most: an inconclusive one (too few slices
    /// judged: the machine was too busy) is run again with a fresh backend
    /// and population; a pass or a fail is final. Default 3 on the
    /// in-memory engine; 1 (never run again) with a data directory or on
    /// Redis, which keep the first attempt's sessions.
    #[arg(long)]
    pub attempts: Option<usize>,
}

/// `loadgen sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The scenario (its rate is replaced by each step's; the sweep runs
    /// without the reference peer and judges tails as measured).
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Target tiers a step must hold.
    #[arg(long, short = 't', default_value = "embedded", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Steps from to/steps up to `to`.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Highest offered rate (default: the closed-loop peak, measured first).
    #[arg(long)]
    pub to: Option<Rate>,
    /// Measured time per step.
    #[arg(long, default_value = "3s")]
    pub step_duration: Dur,
    /// Warm-up per step.
    #[arg(long, default_value = "1s")]
    pub step_warmup: Dur,
    /// Extra attempts at a rate that failed (a burst of other work on a
    /// shared machine can break a bound the backend holds).
    #[arg(long, default_value_t = 2)]
    pub retries: usize,
    /// Outputs.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `loadgen gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The instruction-count gate (callgrind; deterministic) instead of the
    /// wall-clock one.
    #[arg(long)]
    pub instructions: bool,
    /// The baseline (default: results/baseline.json, or
    /// results/baseline-instructions.json with --instructions).
    #[arg(long, conflicts_with = "write_baseline")]
    pub baseline: Option<PathBuf>,
    /// Wall clock: runs (fresh engine and peer each: new hash seeds, new
    /// memory layout) to take the median of.
    #[arg(long, default_value_t = 20, conflicts_with = "instructions")]
    pub repeat: usize,
    /// Wall clock: rounds per run (default: the baseline's plan).
    #[arg(long, conflicts_with = "instructions")]
    pub rounds: Option<usize>,
    /// Allowed change before a kind counts as a regression, e.g. 10%
    /// (default: 10% wall clock, 2% instructions).
    #[arg(long, conflicts_with = "write_baseline")]
    pub tolerance: Option<String>,
    /// Make a new baseline at this path instead of comparing
    /// (scripts/refresh-baseline.sh writes both).
    #[arg(long)]
    pub write_baseline: Option<PathBuf>,
    /// Wall clock: how far the peer's cost may be from the baseline's for a
    /// run to count (default 15%: further, the machine is in another state,
    /// which moves the ratios too).
    #[arg(long, conflicts_with = "instructions")]
    pub peer_drift: Option<String>,
    /// With --write-baseline: live sessions in each store (default 100K).
    #[arg(long, requires = "write_baseline")]
    pub sessions: Option<usize>,
    /// With --write-baseline: operations per slice (wall clock, default
    /// 10K) or per loop (instructions, default 20K).
    #[arg(long, requires = "write_baseline")]
    pub ops: Option<usize>,
    /// Write the gate's result (runs, rows, verdict) as JSON here.
    #[arg(long, conflicts_with = "write_baseline")]
    pub out: Option<PathBuf>,
    /// Wall clock: judge the change (PASS, or FAIL with exit 1 beyond the
    /// tolerance) instead of only reporting it. Meant for a baseline written
    /// in the same sitting (as scripts/measure-gates.sh does): against one
    /// from another sitting an unchanged engine's ratios move by up to about
    /// 15% on a shared machine, so the verdict could flip.
    #[arg(long, conflicts_with_all = ["instructions", "write_baseline"])]
    pub verdict: bool,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `loadgen compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The earlier run's result.json.
    pub a: PathBuf,
    /// The later run's result.json.
    pub b: PathBuf,
}

/// `loadgen op-loops` (hidden).
#[derive(Debug, Args)]
pub struct OpLoopsArgs {
    /// Live sessions in each store.
    #[arg(long)]
    pub sessions: usize,
    /// Metadata bytes of each.
    #[arg(long)]
    pub metadata_bytes: usize,
    /// Operations per loop.
    #[arg(long)]
    pub ops: usize,
    /// Draws the ids and keys.
    #[arg(long)]
    pub seed: u64,
    /// The engine's shards.
    #[arg(long, default_value_t = crate::limits::GATE_SHARDS)]
    pub shards: usize,
}

/// The exit code of a verdict.
#[must_use]
pub fn exit_code(verdict: RunVerdict) -> i32 {
    match verdict {
        RunVerdict::Pass => EXIT_PASS,
        RunVerdict::Fail => EXIT_FAIL,
        RunVerdict::Inconclusive => EXIT_INCONCLUSIVE,
    }
}

/// Runs a parsed command line; returns the exit code.
#[must_use]
pub fn main_with(cli: Cli, command_line: Vec<String>) -> i32 {
    let result = match cli.command {
        Command::Run(args) => cmd_run(&args, command_line),
        Command::Sweep(args) => cmd_sweep(&args, command_line),
        Command::Gate(args) => cmd_gate(&args, command_line),
        Command::Compare(args) => crate::compare::execute(&args.a, &args.b).map(|()| EXIT_PASS),
        Command::OpLoops(args) => crate::callgrind::run_loops(&crate::callgrind::CountPlan {
            sessions: args.sessions,
            metadata_bytes: args.metadata_bytes,
            ops: args.ops,
            seed: args.seed,
            shards: args.shards,
        })
        .map(|()| EXIT_PASS),
        Command::List => {
            println!("scenarios (--scenario NAME, or a TOML file):");
            for (name, text) in scenario::BUILTIN {
                let s = Scenario::parse(name, text)
                    .map(|s| s.description)
                    .unwrap_or_default();
                println!("  {name:10} {s}");
            }
            println!("targets (--targets NAME[,NAME], or TOML files):");
            for (name, text) in targets::BUILTIN {
                let t = Targets::parse(name, text)
                    .map(|t| t.description)
                    .unwrap_or_default();
                println!("  {name:10} {t}");
            }
            Ok(EXIT_PASS)
        }
    };
    match result {
        Ok(code) => code,
        Err(Error::Usage(message)) => {
            eprintln!("loadgen: error: {message}");
            EXIT_USAGE
        }
        Err(Error::Failed(e)) => {
            eprintln!("loadgen: error: {e:#}");
            EXIT_USAGE
        }
    }
}

fn load_targets(names: &[String]) -> Result<Vec<Targets>, Error> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty() && n.as_str() != "none")
        .map(|n| Targets::load(n.trim()).map_err(|e| Error::Usage(e.to_string())))
        .collect()
}

fn cmd_run(args: &RunArgs, command: Vec<String>) -> Result<i32, Error> {
    let scenario = args.scenario.resolve()?;
    let attempts = run_attempts(args.attempts, &scenario)?;
    let targets = load_targets(&args.targets)?;
    if args.percentiles.len() > crate::limits::PERCENTILE_COLUMNS_MAX {
        return Err(Error::Usage(format!(
            "--percentiles: at most {} columns",
            crate::limits::PERCENTILE_COLUMNS_MAX
        )));
    }
    if let Some(stall) = &args.inject_stall {
        // A stall past the measured time never happens: the run would pass
        // without showing it. It starts with the backend's first slice at
        // or after AT: up to three slices later (the next slice boundary,
        // then a pair whose backend slice comes second).
        let latest_start = stall.at + 3 * scenario.slice.0;
        // With `--ops` the clients stop once they have issued their
        // operations: before the stall ends, it delays nothing.
        if scenario.ops_max > 0 {
            let issued_by = issued_by(scenario.ops_max, scenario.rate);
            if issued_by.is_none_or(|t| t < latest_start + stall.length) {
                return Err(Error::Usage(format!(
                    "--inject-stall {stall} with --ops {}: the clients may have issued their operations and \
                     stopped before the stall ends ({}), and a stall that delays nothing passes unseen (raise \
                     --ops past what the rate issues by then, or drop it)",
                    scenario.ops_max,
                    issued_by.map_or_else(
                        || "in closed loop they issue them as fast as the backend answers".to_owned(),
                        |t| format!("at the offered rate they are issued in {}", Dur(t))
                    )
                )));
            }
        }
        if latest_start + stall.length > scenario.duration.0 {
            return Err(Error::Usage(format!(
                "--inject-stall {stall}: it could end past the measured {} (it starts with the backend's first \
                 slice at or after AT, up to three slices of {} later: AT + 3 slices + LENGTH must fit in --duration)",
                scenario.duration, scenario.slice
            )));
        }
    }
    let out_dir = args.output.dir(&scenario.name);
    let request = RunRequest {
        scenario,
        targets,
        out_dir,
        progress: !args.output.quiet,
        stall: args.inject_stall,
        columns: args.percentiles.clone(),
        json: args.json,
        command,
        attempts,
    };
    let report = run::execute(&request, args.output.quiet)?;
    Ok(exit_code(report.verdict))
}

/// How many attempts a run makes: `--attempts`, or the default. An attempt
/// after the first starts from a fresh backend, which only the in-memory
/// ones are: a data directory holds the first attempt's log (and a run
/// refuses a directory that is not empty), a Redis server its sessions.
fn run_attempts(asked: Option<usize>, scenario: &Scenario) -> Result<usize, Error> {
    let kept_by = match (backend_of(scenario)?, &scenario.engine.data_dir) {
        (BackendSpec::Redis(_), _) => Some("the Redis server keeps the first attempt's sessions"),
        (BackendSpec::Embedded, Some(_)) => Some("the data directory keeps the first attempt's log"),
        _ => None,
    };
    match (asked, kept_by) {
        (Some(n), _) if n == 0 || n > RUN_ATTEMPTS_MAX => Err(Error::Usage(format!(
            "--attempts must be between 1 and {RUN_ATTEMPTS_MAX} (runs of the load at most; an inconclusive one is run again)"
        ))),
        (Some(n), Some(why)) if n > 1 => Err(Error::Usage(format!(
            "--attempts {n}: an attempt after the first needs a fresh backend, and {why} (rerun by hand with a fresh one)"
        ))),
        (Some(n), _) => Ok(n),
        (None, Some(_)) => Ok(1),
        (None, None) => Ok(RUN_ATTEMPTS_DEFAULT),
    }
}

/// The live population must outlive the sweep, as it must a run (see
/// `Scenario::check_timeouts`): sessions the load does not reach in time
/// would expire mid-sweep, and their reads' errors break steps the backend
/// holds. The length counted here is the most a sweep takes when no step is
/// retried: the peak (without `--to`), every step and every bisection, each
/// a warm-up, a duration and the churn's settle.
/// When clients at `rate` have issued `ops_max` operations: `None` in
/// closed loop (as fast as the backend answers), the longest duration when
/// that is past any (an `--ops` near `u64::MAX` at a low rate).
fn issued_by(ops_max: u64, rate: Rate) -> Option<Duration> {
    match rate {
        Rate::PerSec(rate) => {
            Some(Duration::try_from_secs_f64(ops_max as f64 / rate).unwrap_or(Duration::MAX))
        }
        Rate::Max => None,
    }
}

fn check_sweep_timeout(scenario: &Scenario, args: &SweepArgs, measures_peak: bool) -> Result<(), Error> {
    let Ok(session_engine::Timeout::After(timeout)) = scenario.population_timeout() else {
        return Ok(());
    };
    let phases = u32::try_from(args.steps)
        .unwrap_or(u32::MAX)
        .saturating_add(sweep::KNEE_BISECTIONS_MAX + u32::from(measures_peak));
    let phase = args.step_warmup.0 + args.step_duration.0 + sweep::settle_time(scenario);
    let planned = phase.saturating_mul(phases);
    if timeout < planned {
        return Err(Error::Usage(format!(
            "timeout = {}: shorter than the sweep can take without retries ({}: {}{} steps and up to {} \
             bisections of --step-warmup + --step-duration + the churn's settle, {} each): sessions of the \
             live population the load does not reach in time would expire mid-sweep and fail its reads \
             (raise --timeout, or use fewer or shorter steps)",
            Dur(timeout),
            Dur(planned),
            if measures_peak { "the peak, " } else { "" },
            args.steps,
            sweep::KNEE_BISECTIONS_MAX,
            Dur(phase)
        )));
    }
    Ok(())
}

fn cmd_sweep(args: &SweepArgs, command: Vec<String>) -> Result<i32, Error> {
    // Every phase of a sweep runs `--step-warmup` + `--step-duration`: a
    // run's times, taken and ignored, would leave the caller believing
    // the steps ran them.
    for (flag, given) in [
        ("--duration", args.scenario.duration.is_some()),
        ("--warmup", args.scenario.warmup.is_some()),
    ] {
        if given {
            return Err(Error::Usage(format!(
                "{flag} does not apply to a sweep: each step runs --step-warmup + --step-duration"
            )));
        }
    }
    let mut scenario = args.scenario.resolve()?;
    // Each step runs its warm-up and duration; a limit on operations
    // would stop no step but would still be read as each kind's share
    // when judging, leaving most bounds unjudged.
    if scenario.ops_max > 0 {
        return Err(Error::Usage(format!(
            "--ops {} (ops_max) does not apply to a sweep: each step runs --step-warmup + --step-duration \
             at its rate (drop --ops, or shorten --step-duration)",
            scenario.ops_max
        )));
    }
    // Capacity is judged on the backend's latency as measured. Past the
    // rate a reference peer itself can serve, both sides queue and a tail
    // "added over the peer" stays small however long it is: with a peer
    // the knee climbs to the highest step.
    scenario.peer = false;
    // Each step is a run of these times: refused as a run refuses them,
    // not rounded up to whole slices and intervals.
    let step = crate::scenario::Scenario {
        duration: args.step_duration,
        warmup: args.step_warmup,
        ..scenario.clone()
    };
    step.check_times().map_err(|e| {
        Error::Usage(format!(
            "--step-duration {} / --step-warmup {}: {e}",
            args.step_duration, args.step_warmup
        ))
    })?;
    if args.steps == 0 || args.steps > SWEEP_STEPS_MAX {
        return Err(Error::Usage(format!(
            "--steps must be between 1 and {SWEEP_STEPS_MAX}"
        )));
    }
    if args.retries > SWEEP_RETRIES_MAX {
        return Err(Error::Usage(format!(
            "--retries must be at most {SWEEP_RETRIES_MAX} (extra attempts at a rate that failed)"
        )));
    }
    let to = match args.to {
        None => None,
        Some(Rate::PerSec(r)) => Some(r),
        Some(Rate::Max) => return Err(Error::Usage("--to takes a rate (omit it to use the peak)".into())),
    };
    if let Some(to) = to {
        // Before populating: the same check the sweep makes of a peak.
        sweep::steps_floor(to, args.steps, false)?;
    }
    check_sweep_timeout(&scenario, args, to.is_none())?;
    let out_dir = args.output.dir(&format!("sweep-{}", scenario.name));
    if let Some(dir) = &out_dir {
        crate::output::prepare(dir).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let request = SweepRequest {
        scenario,
        targets: load_targets(&args.targets)?,
        steps: args.steps,
        to,
        step_duration: args.step_duration.0,
        step_warmup: args.step_warmup.0,
        retries: args.retries,
        out_dir: out_dir.clone(),
        progress: !args.output.quiet,
        command,
    };
    let report = sweep::execute(&request)?;
    print!("{}", report.table());
    match (report.knee_ops_per_s, report.broke_at_ops_per_s) {
        (Some(k), _) if report.inconclusive_at_ops_per_s.is_some() => {
            println!("\nknee: {k:.0} ops/s at least (the highest rate that held before the search stopped)");
        }
        (Some(k), Some(b)) => println!(
            "\nknee: {k:.0} ops/s (highest offered rate that held every bound; {b:.0} ops/s broke {})",
            report.broke_first.join(", ")
        ),
        (Some(k), None) => println!("\nknee: {k:.0} ops/s (the highest step; nothing broke)"),
        (None, Some(_)) => println!(
            "\nknee: none (the first step already broke {})",
            report.broke_first.join(", ")
        ),
        (None, None) => println!("\nknee: none judged"),
    }
    if let Some(rate) = report.inconclusive_at_ops_per_s {
        println!(
            "inconclusive: the machine was too busy to judge {rate:.0} ops/s on any attempt; the search \
             stopped there (the knee is at least what held)"
        );
    }
    if let Some(dir) = out_dir {
        report.write(&dir)?;
        println!("results: {}", dir.display());
    }
    Ok(if report.inconclusive_at_ops_per_s.is_some() {
        EXIT_INCONCLUSIVE
    } else if report.knee_ops_per_s.is_some() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    })
}

fn cmd_gate(args: &GateArgs, command: Vec<String>) -> Result<i32, Error> {
    let tolerance = args
        .tolerance
        .as_deref()
        .map(gate::parse_tolerance)
        .transpose()
        .map_err(|e| Error::Usage(format!("--tolerance {e}")))?;
    if args.repeat == 0 || args.repeat > GATE_REPEAT_MAX {
        return Err(Error::Usage(format!(
            "--repeat must be between 1 and {GATE_REPEAT_MAX}"
        )));
    }
    if args.sessions.is_some_and(|s| s == 0 || s > GATE_SESSIONS_MAX)
        || args.ops.is_some_and(|o| o == 0 || o > GATE_SESSIONS_MAX)
    {
        return Err(Error::Usage(format!(
            "--sessions and --ops must be between 1 and {GATE_SESSIONS_MAX}"
        )));
    }
    if args.rounds.is_some_and(|r| r == 0 || r > GATE_ROUNDS_MAX) {
        return Err(Error::Usage(format!(
            "--rounds must be between 1 and {GATE_ROUNDS_MAX}"
        )));
    }
    let request = gate::GateRequest {
        kind: if args.instructions {
            gate::GateKind::Instructions
        } else {
            gate::GateKind::WallClock
        },
        baseline: args.baseline.clone(),
        repeat: args.repeat,
        tolerance,
        rounds: args.rounds,
        peer_drift: args
            .peer_drift
            .as_deref()
            .map(gate::parse_tolerance)
            .transpose()
            .map_err(|e| Error::Usage(format!("--peer-drift {e}")))?,
        sessions: args.sessions,
        ops: args.ops,
        write_baseline: args.write_baseline.clone(),
        out: args.out.clone(),
        verdict: args.verdict,
        quiet: args.quiet,
        command,
    };
    Ok(match gate::execute(&request)? {
        gate::GateVerdict::Pass | gate::GateVerdict::Reported => EXIT_PASS,
        gate::GateVerdict::Fail => EXIT_FAIL,
        gate::GateVerdict::Inconclusive => EXIT_INCONCLUSIVE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--ops` near `u64::MAX` at a low rate is issued after any stall:
    /// the check panicked making a `Duration` past `Duration::MAX`.
    #[test]
    fn huge_ops_are_issued_after_any_stall() {
        assert_eq!(issued_by(u64::MAX, Rate::PerSec(1.0)), Some(Duration::MAX));
        assert_eq!(
            issued_by(1_000, Rate::PerSec(100.0)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(issued_by(1_000, Rate::Max), None);
    }

    fn attempts_for(asked: Option<usize>, scenario: &[&str]) -> Result<usize, String> {
        let Command::Run(args) = Cli::try_parse_from(["loadgen", "run"].iter().chain(scenario))
            .unwrap()
            .command
        else {
            unreachable!()
        };
        run_attempts(asked, &args.scenario.resolve().unwrap()).map_err(|e| e.to_string())
    }

    /// An inconclusive run is run again by default only where an attempt
    /// can start from a fresh backend; asking for more attempts where it
    /// cannot is refused with the reason, not ignored.
    #[test]
    fn attempts_default_to_rerunning_only_a_fresh_backend() {
        assert_eq!(attempts_for(None, &[]), Ok(RUN_ATTEMPTS_DEFAULT));
        assert_eq!(attempts_for(Some(5), &[]), Ok(5));
        assert_eq!(
            attempts_for(None, &["--backend", "peer"]),
            Ok(RUN_ATTEMPTS_DEFAULT)
        );
        let data_dir = ["--data-dir", "/nonexistent/x", "--durability", "never"];
        assert_eq!(attempts_for(None, &data_dir), Ok(1));
        assert_eq!(attempts_for(Some(1), &data_dir), Ok(1));
        let refused = attempts_for(Some(2), &data_dir).unwrap_err();
        assert!(refused.contains("data directory keeps"), "{refused}");
        let redis = ["--backend", "redis://127.0.0.1:1"];
        assert_eq!(attempts_for(None, &redis), Ok(1));
        let refused = attempts_for(Some(3), &redis).unwrap_err();
        assert!(refused.contains("Redis server keeps"), "{refused}");
        for wrong in [0, RUN_ATTEMPTS_MAX + 1] {
            let refused = attempts_for(Some(wrong), &[]).unwrap_err();
            assert!(refused.contains("--attempts must be between 1"), "{refused}");
        }
    }

    fn gate(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["loadgen", "gate"].iter().chain(args))
    }

    /// An engine flag with a backend that is not the embedded engine is
    /// refused, naming it: it was ignored, and the report still printed
    /// the data dir and durability as if the run had used them.
    #[test]
    fn engine_flags_with_another_backend_are_refused() {
        let resolve = |args: &[&str]| {
            let Command::Run(run) = Cli::try_parse_from(["loadgen", "run"].iter().chain(args))
                .unwrap()
                .command
            else {
                unreachable!()
            };
            run.scenario.resolve().map(drop).map_err(|e| e.to_string())
        };
        for (args, flag) in [
            (&["--backend", "peer", "--shards", "4"][..], "--shards"),
            (
                &["--backend", "null", "--sessions-max", "200000"],
                "--sessions-max",
            ),
            (
                &["--backend", "redis://127.0.0.1:1", "--data-dir", "/tmp/x"],
                "--data-dir",
            ),
            (
                &["--backend", "peer", "--sweep-interval", "5ms"],
                "--sweep-interval",
            ),
        ] {
            let err = resolve(args).expect_err(&format!("{args:?} was accepted"));
            assert!(err.contains(flag) && err.contains("embedded"), "{args:?}: {err}");
        }
        // A scenario's own [engine] section is not a flag: kept, unused.
        assert!(resolve(&["--scenario", "tiny", "--backend", "peer"]).is_ok());
        assert!(resolve(&["--backend", "embedded", "--shards", "4"]).is_ok());
    }

    /// A gate flag that the chosen gate would not use is refused, not
    /// silently ignored.
    #[test]
    fn gate_flags_the_gate_would_ignore_are_refused() {
        for args in [
            &["--instructions", "--rounds", "3"][..],
            &["--instructions", "--repeat", "5"],
            &["--instructions", "--peer-drift", "20%"],
            &["--write-baseline", "b.json", "--tolerance", "5%"],
            &["--write-baseline", "b.json", "--baseline", "a.json"],
            &["--write-baseline", "b.json", "--out", "r.json"],
            &[
                "--instructions",
                "--write-baseline",
                "b.json",
                "--tolerance",
                "1%",
            ],
        ] {
            let err = gate(args).expect_err(&format!("{args:?} was accepted"));
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}: {err}"
            );
        }
        for args in [
            &["--instructions", "--tolerance", "1%", "--out", "r.json"][..],
            &[
                "--repeat",
                "5",
                "--rounds",
                "3",
                "--peer-drift",
                "20%",
                "--tolerance",
                "12%",
            ],
            &[
                "--write-baseline",
                "b.json",
                "--repeat",
                "5",
                "--rounds",
                "3",
                "--sessions",
                "1000",
            ],
            &["--instructions", "--write-baseline", "b.json", "--ops", "1000"],
        ] {
            gate(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
