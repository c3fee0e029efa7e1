//! Shared pieces of the benchmarks: the contenders behind one trait, the
//! workload generator, and the measuring loops.
//!
//! Contenders: the engine, and three peers holding the same data
//! (`SessionId` -> 200-byte metadata in an `Arc<[u8]>`):
//! - `mutex-map`: a plain sharded `parking_lot::Mutex<HashMap>` (same shard
//!   count and hasher as the engine), no expiry;
//! - `dashmap`: the most used concurrent map, no expiry: the raw ceiling;
//! - `moka`: `moka::sync::Cache` with `time_to_idle`, the Rust cache users pick
//!   for idle-expiring entries;
//! - `scc`: `scc::HashMap` (3.x), the fastest concurrent map of the field,
//!   with an atomic deadline beside each value that reads slide, as an
//!   idle-expiring store built on it would (no expiry runs).
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::RandomState;
use dashmap::DashMap;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use session_engine::{Clock, Config, Engine, ManualClock, SessionId, Timeout};

/// Live sessions in every benchmark, as the issue sets it.
pub const SESSIONS: usize = 100_000;
/// Metadata bytes per session.
pub const METADATA_BYTES: usize = 200;
/// Inactivity timeout of the benchmark sessions (none expires during a run).
pub const TIMEOUT: Timeout = Timeout::from_secs(30 * 60);

/// What every contender offers.
pub trait Contender: Send + Sync {
    /// Stores a new session under a fresh random id.
    fn create(&self, metadata: &[u8]) -> SessionId;
    /// Reads a session as activity; true if found.
    fn get(&self, id: &SessionId) -> bool;
    /// Reads a session without activity; true if found.
    fn peek(&self, id: &SessionId) -> bool;
    /// Read-modify-write of the metadata (flip the first byte).
    fn update(&self, id: &SessionId) -> bool;
    /// Activity without reading.
    fn touch(&self, id: &SessionId) -> bool;
    /// Removes a session.
    fn delete(&self, id: &SessionId) -> bool;
    /// Sessions held.
    fn len(&self) -> usize;
    /// True if no sessions are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn flipped(current: &[u8]) -> Vec<u8> {
    let mut v = current.to_vec();
    if let Some(b) = v.first_mut() {
        *b ^= 1;
    }
    v
}

impl Contender for Engine {
    fn create(&self, metadata: &[u8]) -> SessionId {
        Engine::create(self, metadata, TIMEOUT).expect("create")
    }
    fn get(&self, id: &SessionId) -> bool {
        Engine::get(self, id).is_ok()
    }
    fn peek(&self, id: &SessionId) -> bool {
        Engine::peek(self, id).is_ok()
    }
    fn update(&self, id: &SessionId) -> bool {
        Engine::update(self, id, flipped).is_ok()
    }
    fn touch(&self, id: &SessionId) -> bool {
        Engine::touch(self, id).is_ok()
    }
    fn delete(&self, id: &SessionId) -> bool {
        Engine::delete(self, id).is_ok()
    }
    fn len(&self) -> usize {
        Engine::len(self)
    }
}

/// A plain sharded `Mutex<HashMap>`: the baseline any sharded store is
/// compared with.
type MapShard = Mutex<HashMap<SessionId, Arc<[u8]>, RandomState>>;

pub struct MutexMap {
    shards: Box<[MapShard]>,
    hasher: RandomState,
}

impl MutexMap {
    /// A map with `shards` shards (a power of two).
    #[must_use]
    pub fn new(shards: usize) -> Self {
        let hasher = RandomState::new();
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }

    fn shard(&self, id: &SessionId) -> &MapShard {
        let hash = self.hasher.hash_one(id.to_u128());
        #[allow(clippy::cast_possible_truncation)]
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }
}

impl Contender for MutexMap {
    fn create(&self, metadata: &[u8]) -> SessionId {
        let id = SessionId::random().expect("entropy");
        let value: Arc<[u8]> = Arc::from(metadata);
        self.shard(&id).lock().insert(id, value);
        id
    }
    fn get(&self, id: &SessionId) -> bool {
        self.shard(id).lock().get(id).cloned().is_some()
    }
    fn peek(&self, id: &SessionId) -> bool {
        self.get(id)
    }
    fn update(&self, id: &SessionId) -> bool {
        let shard = self.shard(id);
        let Some(current) = shard.lock().get(id).cloned() else {
            return false;
        };
        let new: Arc<[u8]> = Arc::from(flipped(&current));
        shard.lock().insert(*id, new).is_some()
    }
    fn touch(&self, id: &SessionId) -> bool {
        self.shard(id).lock().contains_key(id)
    }
    fn delete(&self, id: &SessionId) -> bool {
        let removed = self.shard(id).lock().remove(id);
        removed.is_some()
    }
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// dashmap with the same hasher family.
pub struct Dash(pub DashMap<SessionId, Arc<[u8]>, RandomState>);

impl Dash {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self(DashMap::with_hasher(RandomState::new()))
    }
}

impl Default for Dash {
    fn default() -> Self {
        Self::new()
    }
}

impl Contender for Dash {
    fn create(&self, metadata: &[u8]) -> SessionId {
        let id = SessionId::random().expect("entropy");
        self.0.insert(id, Arc::from(metadata));
        id
    }
    fn get(&self, id: &SessionId) -> bool {
        self.0.get(id).map(|v| Arc::clone(&v)).is_some()
    }
    fn peek(&self, id: &SessionId) -> bool {
        self.get(id)
    }
    fn update(&self, id: &SessionId) -> bool {
        let Some(current) = self.0.get(id).map(|v| Arc::clone(&v)) else {
            return false;
        };
        let new: Arc<[u8]> = Arc::from(flipped(&current));
        self.0.insert(*id, new).is_some()
    }
    fn touch(&self, id: &SessionId) -> bool {
        self.0.contains_key(id)
    }
    fn delete(&self, id: &SessionId) -> bool {
        self.0.remove(id).is_some()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// moka's synchronous cache with idle expiry.
pub struct Moka(pub moka::sync::Cache<SessionId, Arc<[u8]>, RandomState>);

impl Moka {
    /// A cache of up to `capacity` entries expiring after [`TIMEOUT`] idle.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        let tti = match TIMEOUT {
            Timeout::After(d) => d,
            Timeout::Never => Duration::MAX,
        };
        Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(tti)
                .build_with_hasher(RandomState::new()),
        )
    }
}

impl Contender for Moka {
    fn create(&self, metadata: &[u8]) -> SessionId {
        let id = SessionId::random().expect("entropy");
        self.0.insert(id, Arc::from(metadata));
        id
    }
    fn get(&self, id: &SessionId) -> bool {
        self.0.get(id).is_some()
    }
    fn peek(&self, id: &SessionId) -> bool {
        // moka has no read that skips the idle timer.
        self.0.get(id).is_some()
    }
    fn update(&self, id: &SessionId) -> bool {
        use moka::ops::compute::Op;
        let result = self.0.entry(*id).and_compute_with(|entry| match entry {
            Some(e) => Op::Put(Arc::from(flipped(e.value()))),
            None => Op::Nop,
        });
        matches!(result, moka::ops::compute::CompResult::ReplacedWith(_))
    }
    fn touch(&self, id: &SessionId) -> bool {
        self.0.get(id).is_some()
    }
    fn delete(&self, id: &SessionId) -> bool {
        self.0.remove(id).is_some()
    }
    fn len(&self) -> usize {
        self.0.run_pending_tasks();
        usize::try_from(self.0.entry_count()).unwrap_or(usize::MAX)
    }
}

/// A value in the `scc` contender: the bytes and a deadline slid on reads.
pub struct SccEntry {
    value: Arc<[u8]>,
    deadline_ms: AtomicU64,
}

/// `scc::HashMap` with a deadline beside each value, slid on reads.
pub struct Scc {
    map: scc::HashMap<SessionId, SccEntry, RandomState>,
    clock: Clock,
    timeout_ms: u64,
}

impl Scc {
    /// An empty map; reads slide deadlines by the engine's default clock.
    #[must_use]
    pub fn new() -> Self {
        Self {
            map: scc::HashMap::with_hasher(RandomState::new()),
            clock: Clock::system(),
            timeout_ms: TIMEOUT.as_ms().unwrap_or(u64::MAX),
        }
    }

    fn slide(&self, entry: &SccEntry) {
        // As the engine does: write only when the millisecond moved.
        let deadline = self.clock.now_ms().saturating_add(self.timeout_ms);
        if entry.deadline_ms.load(Ordering::Relaxed) < deadline {
            entry.deadline_ms.store(deadline, Ordering::Relaxed);
        }
    }
}

impl Default for Scc {
    fn default() -> Self {
        Self::new()
    }
}

impl Contender for Scc {
    fn create(&self, metadata: &[u8]) -> SessionId {
        let id = SessionId::random().expect("entropy");
        let entry = SccEntry {
            value: Arc::from(metadata),
            deadline_ms: AtomicU64::new(self.clock.now_ms().saturating_add(self.timeout_ms)),
        };
        assert!(self.map.insert_sync(id, entry).is_ok(), "fresh id");
        id
    }
    fn get(&self, id: &SessionId) -> bool {
        self.map
            .read_sync(id, |_, e| {
                self.slide(e);
                Arc::clone(&e.value)
            })
            .is_some()
    }
    fn peek(&self, id: &SessionId) -> bool {
        self.map.read_sync(id, |_, e| Arc::clone(&e.value)).is_some()
    }
    fn update(&self, id: &SessionId) -> bool {
        let Some(current) = self.map.read_sync(id, |_, e| Arc::clone(&e.value)) else {
            return false;
        };
        let new: Arc<[u8]> = Arc::from(flipped(&current));
        let deadline = self.clock.now_ms().saturating_add(self.timeout_ms);
        self.map
            .update_sync(id, |_, e| {
                e.value = new;
                e.deadline_ms.store(deadline, Ordering::Relaxed);
            })
            .is_some()
    }
    fn touch(&self, id: &SessionId) -> bool {
        self.map.read_sync(id, |_, e| self.slide(e)).is_some()
    }
    fn delete(&self, id: &SessionId) -> bool {
        self.map.remove_sync(id).is_some()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The engine with a data directory (removed when it drops).
pub struct PersistentEngine {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl PersistentEngine {
    /// An engine persisting to a fresh directory under `target/` with
    /// `durability`.
    #[must_use]
    pub fn new(durability: session_engine::Durability) -> Self {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
        std::fs::create_dir_all(&base).expect("bench data directory");
        let dir = tempfile::tempdir_in(base).expect("bench data directory");
        let engine = engine_with(Config::default().data_dir(dir.path()).durability(durability));
        Self { engine, _dir: dir }
    }
}

impl Contender for PersistentEngine {
    fn create(&self, metadata: &[u8]) -> SessionId {
        Contender::create(&self.engine, metadata)
    }
    fn get(&self, id: &SessionId) -> bool {
        Contender::get(&self.engine, id)
    }
    fn peek(&self, id: &SessionId) -> bool {
        Contender::peek(&self.engine, id)
    }
    fn update(&self, id: &SessionId) -> bool {
        Contender::update(&self.engine, id)
    }
    fn touch(&self, id: &SessionId) -> bool {
        Contender::touch(&self.engine, id)
    }
    fn delete(&self, id: &SessionId) -> bool {
        Contender::delete(&self.engine, id)
    }
    fn len(&self) -> usize {
        Contender::len(&self.engine)
    }
}

/// The engine as benchmarked: default shard count for the machine, no
/// sweeper work due (nothing expires during a run) but the thread running.
#[must_use]
pub fn engine() -> Engine {
    engine_with(Config::default())
}

/// The engine as benchmarked, from `config` (its capacity set here).
fn engine_with(config: Config) -> Engine {
    Engine::open(config.sessions_max(4 * SESSIONS)).expect("open engine")
}

/// The shard count the engine picks on this machine, for the mutex map.
#[must_use]
pub fn default_shards() -> usize {
    engine().shard_count()
}

/// This machine as a report states it: its cores and CPU model (read at
/// run time: a report written on another machine than the last says so).
#[must_use]
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    format!("{cores} cores ({cpu})")
}

/// Every contender by name.
pub const NAMES: [&str; 5] = ["engine", "scc", "dashmap", "mutex-map", "moka"];

/// Builds the contender called `name`: one of [`NAMES`], or the engine
/// with another clock for profiling: `engine-precise-clock` reads the TSC
/// on every operation instead of the default clock's ticking cache line,
/// `engine-manual-clock` runs on a clock that never moves (no clock thread,
/// no activity to record, and under valgrind no `clock_gettime` fallback).
#[must_use]
pub fn contender(name: &str) -> Box<dyn Contender> {
    match name {
        "engine" => Box::new(engine()),
        "engine-precise-clock" => engine_on(Clock::precise()),
        "engine-manual-clock" => engine_on(ManualClock::new(1_700_000_000_000).clock()),
        "engine-interval" => Box::new(PersistentEngine::new(session_engine::Durability::Interval(
            Duration::from_secs(1),
        ))),
        "mutex-map" => Box::new(MutexMap::new(default_shards())),
        "dashmap" => Box::new(Dash::new()),
        "scc" => Box::new(Scc::new()),
        "moka" => Box::new(Moka::new(4 * SESSIONS as u64)),
        other => panic!("unknown contender {other}"),
    }
}

/// The engine contender on `clock` (defaults otherwise).
#[must_use]
pub fn engine_on(clock: Clock) -> Box<dyn Contender> {
    Box::new(engine_with(Config::default().clock(clock)))
}

/// Fills a contender with [`SESSIONS`] sessions; returns their ids.
pub fn populate(c: &dyn Contender, n: usize) -> Vec<SessionId> {
    let metadata = [0xAB_u8; METADATA_BYTES];
    (0..n).map(|_| c.create(&metadata)).collect()
}

/// Key choice over the live set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keys {
    /// Every session equally likely.
    Uniform,
    /// Zipf-distributed ranks with this exponent (1.0: a few very hot sessions).
    Zipf(f64),
}

/// One step of the mixed workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixOp {
    /// Read a session (80%).
    Get(u32),
    /// Update a session (15%).
    Update(u32),
    /// Replace a session: delete it and create a new one in its slot (5%).
    Replace(u32),
}

/// One thread's share of the mixed workload: its slice of the population
/// and the ops it runs on it.
pub struct MixedPart {
    /// The sessions this thread owns (replaced in place by `Replace` ops).
    pub ids: Vec<SessionId>,
    /// Its op sequence over `ids`.
    pub ops: Vec<MixOp>,
}

/// Splits the population between `threads` (equal, disjoint parts) and
/// draws each part's ops, thread `t` with seed `seed + t`: the compare
/// bench's multi-threaded mix, shared with the profiling example.
#[must_use]
pub fn mixed_parts(
    ids: &[SessionId],
    threads: usize,
    keys: Keys,
    ops_per_thread: usize,
    seed: u64,
) -> Vec<MixedPart> {
    let per_thread = ids.len() / threads;
    ids.chunks(per_thread)
        .take(threads)
        .zip(0u64..)
        .map(|(part, t)| MixedPart {
            ids: part.to_vec(),
            ops: mixed_ops(per_thread, ops_per_thread, keys, seed + t),
        })
        .collect()
}

/// A pre-generated op sequence over `n` key slots (generation stays out of
/// the measured loop).
#[must_use]
pub fn mixed_ops(n: usize, len: usize, keys: Keys, seed: u64) -> Vec<MixOp> {
    let mut rng = SmallRng::seed_from_u64(seed);
    #[allow(clippy::cast_precision_loss)]
    let zipf = match keys {
        Keys::Zipf(s) => Some(Zipf::new(n as f64, s).expect("zipf parameters")),
        Keys::Uniform => None,
    };
    (0..len)
        .map(|_| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let key = match &zipf {
                Some(z) => (z.sample(&mut rng) as u32).saturating_sub(1),
                None => rng.random_range(0..n as u32),
            };
            match rng.random_range(0..100u32) {
                0..80 => MixOp::Get(key),
                80..95 => MixOp::Update(key),
                _ => MixOp::Replace(key),
            }
        })
        .collect()
}

/// Runs `ops` against `c` over the key slots `ids`; records the latency of
/// one op in `sample_every` into `hist` (ns). Returns the elapsed time.
pub fn run_mixed(
    c: &dyn Contender,
    ids: &mut [SessionId],
    ops: &[MixOp],
    sample_every: usize,
    get_hist: &mut Histogram<u64>,
) -> Duration {
    let metadata = [0xCD_u8; METADATA_BYTES];
    let started = Instant::now();
    for (n, op) in ops.iter().enumerate() {
        let sampled = n % sample_every == 0;
        match *op {
            MixOp::Get(k) => {
                let id = &ids[k as usize];
                if sampled {
                    let t = Instant::now();
                    let found = c.get(id);
                    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    get_hist.saturating_record(ns);
                    debug_assert!(found);
                } else {
                    let found = c.get(id);
                    debug_assert!(found);
                }
            }
            MixOp::Update(k) => {
                c.update(&ids[k as usize]);
            }
            MixOp::Replace(k) => {
                c.delete(&ids[k as usize]);
                ids[k as usize] = c.create(&metadata);
            }
        }
    }
    started.elapsed()
}

/// CPU time (user + system) this process has used so far.
#[must_use]
pub fn process_cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// CPU time (user + system) the calling thread has used so far.
#[must_use]
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Asks mimalloc (the benches' global allocator) to return the memory it
/// holds but no longer uses, so that an RSS reading counts live data only.
pub fn allocator_collect() {
    // SAFETY: `mi_collect` takes no pointers and has no preconditions; it
    // only walks mimalloc's own heaps (every bench binary installs mimalloc
    // as its global allocator, and the call is harmless if it is not).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Resident set size of this process, in bytes.
#[must_use]
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The short hash of the commit checked out, for the reports' headers.
#[must_use]
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
