//! The loadgen's own bounds, with why.

/// Most worker threads. The machine this ships for has 2 cores; 256 leaves
/// room for big hosts while keeping per-worker histograms (7 kinds × ~200 KiB
/// each at 3 significant digits) under a few hundred MiB.
pub const WORKERS_MAX: usize = 256;

/// Most concurrent clients (async tasks over the workers, for remote
/// backends). Each keeps its own histogram sets (1.7 MB each, two or three
/// in use at a time: see `SPARE_SETS_PER_CLIENT`), so 1,024 clients hold
/// about 5 GB of histograms; more would exhaust the memory of the machines
/// this runs on and abort the run on an allocation instead of refusing it.
pub const CLIENTS_MAX: usize = 1_024;

/// Most histogram sets allocated before the load, whatever the client
/// count (about 1.7 GB): past it, sets are allocated as slices need them.
pub const PREALLOCATED_SETS_MAX: usize = 1_024;

/// Largest latency a histogram tracks, in nanoseconds (10 minutes); larger
/// values saturate at it (and the run is long broken by then).
pub const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// Significant decimal digits of every histogram (`HdrHistogram`'s usual 3:
/// values are exact to 0.1%).
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// Churn sessions a client remembers for `delete`. Older ones are forgotten
/// (they expire on their own); 64K ids are 1 MiB per client.
pub const CHURN_REMEMBERED_MAX: usize = 65_536;

/// A churn session's delete that finds it gone is counted as its expiry,
/// not an error, once this share of its timeout has passed since the create
/// was issued. The embedded engine reads time from a cache that a thread
/// refreshes every millisecond; while that thread waits for a CPU the
/// cache lags, and a session created then is stamped (and expires) up to
/// that lag early. Under a quarter of the timeout it would be an engine
/// that expires sessions early, which the run reports as errors.
pub const CHURN_EXPIRY_SLACK_SHARE: u64 = 4;

/// Histogram sets (7 × ~245 KB) kept for reuse per client, half of them
/// allocated before the load: a client holds one, one or two wait in the
/// collector until the other clients of their slice catch up, and the
/// peer's slices close late (its clients report a slice when they open
/// their next). Spare sets mean no allocation at a slice boundary.
pub const SPARE_SETS_PER_CLIENT: usize = 8;

/// How long past the scheduled end an open-loop client keeps working off a
/// backlog before it gives up on the rest (counted as `ops_unsent`).
pub const BACKLOG_GRACE_NS: u64 = 2_000_000_000;

/// An open-loop client sleeps (instead of spinning) only when the next
/// operation is at least this far away; it wakes this much early and spins
/// the rest, so that a sleep's overshoot never becomes measured latency.
pub const SLEEP_MARGIN_NS: u64 = 1_000_000;

/// Below this distance a waiting client spins without yielding the CPU
/// (a `sched_yield` costs about a microsecond, which would show as latency).
pub const SPIN_ONLY_NS: u64 = 20_000;

/// A waiting client that finds two consecutive clock readings this far
/// apart counts the gap as time the machine took (see [`crate::clock`]). A
/// reading costs ~30 ns and a `sched_yield` ~1 µs, so 10 µs is never the
/// loop itself; a VM takes many gaps of tens of µs a second from a
/// spinning thread (interrupts, exits to the hypervisor), and a few of
/// 1 ms or more (`results/loadgen/README.md` reports each run's).
pub const GAP_MIN_NS: u64 = 10_000;

/// Shortest slice (`slice` in a scenario, `--slice`): a slice must outlast
/// the machine's usual disturbances (milliseconds) and hold enough
/// operations for its own median.
pub const SLICE_MIN_NS: u64 = 10_000_000;

/// Longest slice: past 10 s the backend and the peer no longer see the same
/// machine, which is what alternating them is for.
pub const SLICE_MAX_NS: u64 = 10_000_000_000;

/// A slice in which the machine took one gap this long (or as much
/// run-queue wait) from a client is disturbed (see [`crate::slices`]): at
/// 200K ops/s a 1 ms gap delays 200 operations, a 1% tail of a 100 ms
/// slice (how many slices a run sets aside is in its report).
pub const DISTURBED_GAP_NS: u64 = 1_000_000;

/// A slice from which the machine took this share in all is disturbed too
/// (a quiet slice loses a few percent to short gaps; 10% is a busy machine).
pub const DISTURBED_SHARE: f64 = 0.10;

/// A disturbed backend slice is set aside only if its slowest point operation is
/// within this factor of the time the machine took (plus
/// [`EXPLAINED_SLACK_NS`]): a client off its core for `t` delays what was
/// due meanwhile by up to `t`, and working off that backlog adds at most as
/// much again at any load the backend keeps up with.
pub const EXPLAINED_FACTOR: u64 = 2;

/// Slack on what a disturbance explains: a backend's own hiccups below a
/// millisecond (a list page holding a shard lock) are not the machine's to
/// excuse, but neither do they fail a tail bound of milliseconds.
pub const EXPLAINED_SLACK_NS: u64 = 1_000_000;

/// The typical slice's median of one operation kind is taken over groups
/// of judged slices that ran at least this many of it together (a median
/// of fewer is one operation's luck); a slice that ran as many is a group
/// of its own.
pub const TYPICAL_SAMPLES_MIN: u64 = 20;

/// The same for the typical slice's p99 (two above the quantile: below
/// that a group's p99 is its slowest one or two).
pub const TYPICAL_P99_SAMPLES_MIN: u64 = 200;

/// A kind has a typical figure only over at least this many groups (the
/// median of three outvotes one held-up group); with fewer, its quantiles
/// are judged on the judged slices pooled.
pub const TYPICAL_GROUPS_MIN: usize = 3;

/// Below this share of its measured slices judged, a run is inconclusive:
/// the machine was too busy for the rest to stand for the run.
pub const JUDGED_SHARE_MIN: f64 = 0.25;

/// A quantile bound is judged only if the schedule offers at least this
/// many times the samples the quantile needs (100 for p99): a run judged on
/// [`JUDGED_SHARE_MIN`] of its slices then still holds enough of them, and
/// whether a bound applies stays a property of the scenario, not of how
/// busy the machine was.
pub const OFFERED_PER_NEEDED: u64 = 4;

/// A kind due at least this many times over the measured slices that got
/// no sample at all fails ("no samples": it never ran). Due fewer times,
/// none can be chance (the mix draws each operation's kind: none of `n`
/// due comes with a chance of about e^-n, 1.8% at 4, 10^-13 at 30), and
/// the bound is not judged.
pub const NO_SAMPLES_FAIL_OFFERED_MIN: u64 = 30;

const _: () = assert!(SPIN_ONLY_NS < SLEEP_MARGIN_NS);
const _: () = assert!(SLICE_MIN_NS >= 10 * DISTURBED_GAP_NS);
const _: () = assert!(WORKERS_MAX <= CLIENTS_MAX);

/// Time the worker threads get to start before the first operation is due.
/// Spawning a thread takes tens of microseconds; 20 ms leaves room for a
/// busy machine without measurably delaying the run.
pub const START_LEAD_NS: u64 = 20_000_000;

/// An open-loop run must deliver at least this share of the offered rate to
/// count as having held it. A backend that serves a fraction `f` of the
/// offered rate ends the run `(1 − f) × duration` behind; 5% is the slack
/// that separates "kept up" from "fell behind" without judging the last few
/// operations of a run that a preemption delayed.
pub const RATE_HELD_SHARE: f64 = 0.95;

/// How long each in-process calibration (the null backend's loop cost, the
/// reference peer) runs, ns: 200 ms is ~10^6 operations, enough for a
/// per-operation average to 0.1%, and short beside a 20 s run.
pub const CALIBRATION_NS: u64 = 200_000_000;

/// A run whose workers got less than this share of their cores was
/// disturbed: other work held a worker off its core for more than one part in
/// fifty, and a client that is not running queues every operation due
/// meanwhile (at 200K ops/s, a 4 ms preemption delays 800 of them).
pub const DISTURBED_BELOW: f64 = 0.98;

/// Narrowest histogram interval: below 10 ms an interval of a 2K ops/s run
/// holds a handful of samples, and the interval log grows by a histogram
/// per kind per interval.
pub const INTERVAL_MIN_NS: u64 = 10_000_000;

/// Slowest listing rate, pages per second (one page in 1,000 s): below it
/// the lister's schedule would not reach its first page in any sane run,
/// and `1 / rate` periods overflow nothing up to here.
pub const LIST_RATE_MIN_PER_S: f64 = 0.001;

/// Fastest listing rate, pages per second: one page a microsecond is past
/// anything a store serves and keeps the lister's period above 1 ns.
pub const LIST_RATE_MAX_PER_S: f64 = 1e6;

/// Most steps of a capacity sweep (`--steps`): each step runs seconds, and
/// a hundred already takes minutes.
pub const SWEEP_STEPS_MAX: usize = 100;

/// A sweep bisects between the highest rate that held and the lowest that
/// broke until they are this close ((broke − held) / held): a step of a
/// tenth of the peak leaves a factor of two at the first steps, and four
/// or five more probes of 4 s bring it to 5%.
pub const KNEE_PRECISION: f64 = 0.05;

/// Most extra attempts at a failed sweep step (`--retries`).
pub const SWEEP_RETRIES_MAX: usize = 10;

/// Attempts `loadgen run` makes by default (`--attempts`): an inconclusive
/// attempt (too few slices judged: the machine was too busy) is run again,
/// a pass or a fail is final. On a machine that leaves a run inconclusive
/// half the time, three attempts give a verdict seven times in eight.
pub const RUN_ATTEMPTS_DEFAULT: usize = 3;

/// Most attempts of `loadgen run` (`--attempts`): each is a whole run.
pub const RUN_ATTEMPTS_MAX: usize = 10;

/// Most columns of the percentile table (`--percentiles`): past a dozen
/// the table no longer fits a terminal.
pub const PERCENTILE_COLUMNS_MAX: usize = 12;

/// Most gate runs (`gate --repeat`): a median over more than 50 runs is no
/// steadier, and each run takes seconds.
pub const GATE_REPEAT_MAX: usize = 50;

/// Most sessions in a gate's stores, and most operations per slice or
/// loop (`gate --write-baseline --sessions/--ops`): 10M sessions of the
/// default 256 B hold ~5 GiB per store.
pub const GATE_SESSIONS_MAX: usize = 10_000_000;

/// Most rounds of a gate run (`gate --rounds`): a round takes ~0.2 s.
pub const GATE_ROUNDS_MAX: usize = 1_000;

/// The wall-clock gate's default tolerance: how much the engine's CPU per
/// operation over the peer's may grow before the gate fails, set between
/// how far one commit's runs move between sittings and how far a real
/// slowdown moves them (the figures, and where the two overlap, are in
/// `results/gate.md`; that overlap is why the gate only reports unless
/// asked for a verdict in one sitting).
pub const WALL_TOLERANCE_DEFAULT: f64 = 0.10;

/// A wall-clock gate run whose peer cost (the geometric mean of its CPU per
/// operation over the kinds) is more than this far from the baseline's was
/// measured on a machine in another state (other work thrashing the
/// caches raises it, and moves the engine's ratios: `results/gate.md`): it
/// is set aside, not judged.
pub const PEER_DRIFT_MAX: f64 = 0.15;

/// A wall-clock gate tries at most this many times as many runs as it
/// wants comparable ones; with fewer than half of those, it is inconclusive.
pub const WALL_ATTEMPTS_FACTOR: usize = 2;

/// The instruction gate's default tolerance: instruction counts move only
/// by the hash seed's probe lengths (a fraction of a percent, see
/// `results/gate.md`), so 2% is a real change.
pub const INSTRUCTIONS_TOLERANCE_DEFAULT: f64 = 0.02;

/// Shards of the engine the gates measure. Left to the engine, the count
/// is 4 per available core rounded up to a power of two, so it would follow
/// the machine, its cgroup and its CPU affinity, and a CI machine of
/// another size would measure another engine against the committed
/// baselines (an engine of fewer shards counts other instructions per
/// operation than one of 8). 8 is the
/// count the committed baselines were measured with (2 cores); a baseline
/// that records no count means 8.
pub const GATE_SHARDS: usize = 8;
