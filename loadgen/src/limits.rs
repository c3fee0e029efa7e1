//! The loadgen's own bounds, with why.

/// Most worker threads. The machine this ships for has 2 cores; 256 leaves
/// room for big hosts while keeping per-worker histograms (7 kinds × ~200 KiB
/// each at 3 significant digits) under a few hundred MiB.
pub const WORKERS_MAX: usize = 256;

/// Most concurrent clients (async tasks over the workers, for remote backends).
pub const CLIENTS_MAX: usize = 65_536;

/// Largest latency a histogram tracks, in nanoseconds (10 minutes); larger
/// values saturate at it (and the run is long broken by then).
pub const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// Significant decimal digits of every histogram (`HdrHistogram`'s usual 3:
/// values are exact to 0.1%).
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// Churn sessions a client remembers for `delete`. Older ones are forgotten
/// (they expire on their own); 64K ids are 1 MiB per client.
pub const CHURN_REMEMBERED_MAX: usize = 65_536;

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

const _: () = assert!(SPIN_ONLY_NS < SLEEP_MARGIN_NS);
const _: () = assert!(WORKERS_MAX <= CLIENTS_MAX);
