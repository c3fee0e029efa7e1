//! The engine's threads. They only schedule: each calls one chore of the
//! core on its interval and sleeps. The sweeper expires sessions and keeps
//! the logs up (`Core::maintain_logs`: prefault, segment preparation, queued
//! touches, the `Interval` flush) and, with persistence, writes the time
//! mark (`persist/time_mark.rs`); with persistence the compactor rewrites
//! logs dominated by dead records; in `Always` mode the flusher runs the
//! syncs that async writers wait for (they cannot run one themselves). None
//! runs for an in-memory engine opened `without_sweeper` (the default clock
//! has a thread of its own: see `Clock::system`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::{Durability, SyncScope};
use crate::core::{Core, LogFlush};
use crate::error::{Error, Result};
use crate::limits::{
    CHORE_PANIC_PAUSE, COMPACTION_BACKOFF_CHECKS_MAX, COMPACTION_BACKOFF_CHECKS_MIN,
    COMPACTION_CHECK_INTERVAL_MS, LOG_CHECK_INTERVAL_MS, SWEEP_BATCH_MAX, TIME_MARK_INTERVAL_MS,
};
use crate::persist::{self, CompactionStep, FlushRequests};

/// Stop flag shared with the background threads.
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps up to `timeout`; true once stop was requested.
    fn wait(&self, timeout: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, timeout);
        }
        *stopped
    }

    /// True once stop was requested.
    fn requested(&self) -> bool {
        *self.stopped.lock()
    }
}

pub(crate) struct Background {
    stop: Arc<Stop>,
    /// The flusher threads' rounds (`Always` mode): stopping them ends the
    /// helpers even if the main flusher thread never started.
    rounds: Option<Arc<Rounds>>,
    /// The sweeper and the compactor.
    chores: Vec<JoinHandle<()>>,
    /// The flusher threads (`Always` mode): they outlive `Engine::close`,
    /// since the other handles' async writers still need them.
    flushers: Vec<JoinHandle<()>>,
    /// The flusher threads' requests (`Always` mode).
    flusher: Option<Arc<FlushRequests>>,
}

impl Background {
    /// Starts the engine's threads; if one cannot be started (the process
    /// is out of threads), stops those that did and says so.
    pub(crate) fn start(core: &Arc<Core>) -> Result<Self> {
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut started = Self {
            stop,
            rounds: None,
            chores: Vec::new(),
            flushers: Vec::new(),
            flusher: None,
        };
        match started.spawn_all(core) {
            Ok(()) => Ok(started),
            Err(e) => {
                started.stop();
                Err(Error::Io {
                    context: "starting the engine's background threads".into(),
                    source: e,
                })
            }
        }
    }

    fn spawn_all(&mut self, core: &Arc<Core>) -> std::io::Result<()> {
        let mut spawned = 0;
        let fail_at = core.config.fail_thread_spawn;
        let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            let n = spawned;
            spawned += 1;
            if fail_at == Some(n) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("spawning the {name} thread: injected failure (debug_fail_thread_spawn)"),
                ));
            }
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        let persistent = !core.logs.is_empty();
        if core.config.sweep_interval.is_some() || persistent {
            let (core, stop) = (Arc::clone(core), Arc::clone(&self.stop));
            self.chores
                .push(spawn("session-sweeper", Box::new(move || sweeper(&core, &stop)))?);
        }
        if persistent {
            let (core, stop) = (Arc::clone(core), Arc::clone(&self.stop));
            self.chores.push(spawn(
                "session-compactor",
                Box::new(move || compactor(&core, &stop)),
            )?);
        }
        if persistent && core.config.durability == Durability::Always {
            let requests = Arc::new(FlushRequests::default());
            for commit in &core.commits {
                commit.set_flusher(Arc::clone(&requests));
            }
            self.flusher = Some(Arc::clone(&requests));
            // One round of syncs at a time, shared by every log: thread `t`
            // syncs the logs t, t + n, ..., all at the same time; or one
            // thread makes one `syncfs` for all of them (`flush_all`).
            let n = match core.config.sync_scope {
                SyncScope::FileSystem => 1,
                _ => core.commits.len().clamp(1, crate::limits::FLUSHER_THREADS_MAX),
            };
            let rounds = Arc::new(Rounds::new(n));
            self.rounds = Some(Arc::clone(&rounds));
            for t in 1..n {
                let (core, rounds) = (Arc::clone(core), Arc::clone(&rounds));
                self.flushers.push(spawn(
                    "session-flusher",
                    Box::new(move || {
                        /// Reports the round done however the share's
                        /// syncs end (a panic included): the first thread
                        /// waits for every helper it gave work.
                        struct Done<'a>(&'a Rounds);
                        impl Drop for Done<'_> {
                            fn drop(&mut self) {
                                self.0.done();
                            }
                        }
                        let mut seen = 0;
                        while rounds.next_round(t, &mut seen) {
                            let _done = Done(&rounds);
                            flush_share(&core, t, n);
                        }
                    }),
                )?);
            }
            let core = Arc::clone(core);
            self.flushers.push(spawn(
                "session-flusher",
                Box::new(move || flusher(&core, &requests, &rounds)),
            )?);
        }
        Ok(())
    }

    /// Stops the sweeper and the compactor and waits for them
    /// (`Engine::close`); the flusher threads go on.
    pub(crate) fn stop_chores(&mut self) {
        // The calling thread's own (a listener's drop of the last handle)
        // ends by itself once the listener returns.
        drop(self.take_chores().join());
    }

    /// Tells the sweeper and the compactor to stop and hands over their
    /// threads, for the caller to join once it holds no lock a listener
    /// on one of them could be waiting for.
    pub(crate) fn take_chores(&mut self) -> Chores {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
        Chores(std::mem::take(&mut self.chores))
    }

    /// Stops every thread and waits for them (the last handle's drop).
    pub(crate) fn stop(mut self) {
        self.stop_chores();
        if let Some(flusher) = &self.flusher {
            flusher.stop();
        }
        if let Some(rounds) = &self.rounds {
            rounds.stop();
        }
        drop(join(std::mem::take(&mut self.flushers)));
    }
}

/// The sweeper's and the compactor's threads, told to stop.
pub(crate) struct Chores(Vec<JoinHandle<()>>);

impl Chores {
    /// Waits for them (not for the calling thread, if it is one of them:
    /// returned, for a later join from another thread).
    pub(crate) fn join(self) -> Vec<JoinHandle<()>> {
        join(self.0)
    }
}

/// Joins `threads` but the calling one, which is returned.
pub(crate) fn join(threads: Vec<JoinHandle<()>>) -> Vec<JoinHandle<()>> {
    let current = std::thread::current().id();
    let mut own = Vec::new();
    for thread in threads {
        // Dropped from one of its own threads (a listener that held the
        // last handle): that thread sees the stop flag and ends once the
        // listener returns; joining itself would fail.
        if thread.thread().id() == current {
            own.push(thread);
            continue;
        }
        // A panic there was already reported by the thread itself.
        let _ = thread.join();
    }
    own
}

/// Runs the syncs that async writers wait for in `Always` mode, in
/// rounds shared by every log: whenever asked, it starts a round in which
/// each flusher thread whose share of the logs has such writers syncs
/// those logs (unless a writer's thread is already leading a sync there:
/// that leader covers them, hands over to another thread, or asks again),
/// all at the same time, and waits for the round to end before the next.
/// Writes that arrive meanwhile, on any log, wait for the next round
/// together: one round of flushes serves them all, instead of each log
/// syncing for the few writers it has whenever they come (many small syncs,
/// a context switch each), or one thread syncing the logs one after another
/// (a device flush each, in a row). When one log has waiters, this thread
/// syncs it itself: no hand-over to a helper, no added latency.
fn flusher(core: &Core, requests: &FlushRequests, rounds: &Rounds) {
    /// Ends the helpers when this thread ends, however it does.
    struct StopHelpers<'a>(&'a Rounds);
    impl Drop for StopHelpers<'_> {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let _stop = StopHelpers(rounds);
    let n = rounds.threads;
    let gather_max = Duration::from_micros(crate::limits::FLUSH_GATHER_MAX_US);
    // How long the last round took: the longest the next is held back.
    let mut last_round = Duration::ZERO;
    while requests.next() {
        requests.gather(last_round.min(gather_max));
        let started = Instant::now();
        // Which helpers have work: bit t for the share of thread t.
        let (mut busy_logs, mut helpers, mut own) = (0, 0u64, false);
        for (i, commit) in core.commits.iter().enumerate() {
            if commit.has_async_waiters() {
                busy_logs += 1;
                match i % n {
                    0 => own = true,
                    t => helpers |= 1 << t,
                }
            }
        }
        // Stopping (the last handle dropped after this round's check):
        // the helpers may have ended, and this thread syncs it all.
        if busy_logs <= 1 || !rounds.start(helpers) {
            flush_share(core, 0, 1);
        } else {
            if own {
                flush_share(core, 0, n);
            }
            rounds.wait_done();
        }
        last_round = started.elapsed();
    }
}

/// Syncs the logs `first`, `first + step`, ... that async writers wait on.
fn flush_share(core: &Core, first: usize, step: usize) {
    // A failure reaches the waiters through their commit.
    let _ = persist::flush_all(
        core.commits
            .iter()
            .skip(first)
            .step_by(step)
            .filter(|c| c.has_async_waiters())
            .map(|c| &**c),
    );
}

/// The flusher threads' rounds: the first thread starts one for the
/// helpers (threads 1 to `threads - 1`) whose shares have work; each of
/// those syncs its share and reports done.
struct Rounds {
    threads: usize,
    state: Mutex<RoundState>,
    /// One per thread (index 0, the first thread's, is unused): a round
    /// wakes only the helpers it gives work.
    start: Box<[Condvar]>,
    done: Condvar,
}

struct RoundState {
    /// Rounds started so far.
    round: u64,
    /// The helpers this round gives work (bit t for thread t).
    assigned: u64,
    /// Helpers still syncing in this round.
    pending: u32,
    stopped: bool,
}

impl Rounds {
    fn new(threads: usize) -> Self {
        debug_assert!(threads <= 64, "one bit per flusher thread");
        Self {
            threads,
            state: Mutex::new(RoundState {
                round: 0,
                assigned: 0,
                pending: 0,
                stopped: false,
            }),
            start: (0..threads).map(|_| Condvar::new()).collect(),
            done: Condvar::new(),
        }
    }

    /// Starts a round for the helpers in `helpers` (bit t for thread t);
    /// false, starting none, once they have been told to stop (they may
    /// have ended: the caller syncs their shares itself).
    #[must_use]
    fn start(&self, helpers: u64) -> bool {
        let mut state = self.state.lock();
        if state.stopped {
            return false;
        }
        state.round += 1;
        state.assigned = helpers;
        state.pending = helpers.count_ones();
        for (t, start) in self.start.iter().enumerate() {
            if helpers & (1 << t) != 0 {
                start.notify_one();
            }
        }
        true
    }

    fn wait_done(&self) {
        let mut state = self.state.lock();
        while state.pending > 0 {
            self.done.wait(&mut state);
        }
    }

    /// Helper `t`'s wait for a round after `seen` (the last it ran) that
    /// gives it work; false: stop. A round it was given before the stop is
    /// run first: the first thread waits for it to be done.
    fn next_round(&self, t: usize, seen: &mut u64) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.round != *seen && state.assigned & (1 << t) != 0 {
                *seen = state.round;
                return true;
            }
            if state.stopped {
                return false;
            }
            self.start[t].wait(&mut state);
        }
    }

    fn done(&self) {
        let mut state = self.state.lock();
        state.pending -= 1;
        if state.pending == 0 {
            self.done.notify_one();
        }
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        for start in &*self.start {
            start.notify_one();
        }
    }
}

fn sweeper(core: &Core, stop: &Stop) {
    let sweep_every = core.config.sweep_interval;
    let flush_every = match core.config.durability {
        Durability::Interval(every) if !core.logs.is_empty() => Some(every),
        _ => None,
    };
    let mut tick = Duration::from_millis(LOG_CHECK_INTERVAL_MS);
    for every in [sweep_every, flush_every].into_iter().flatten() {
        tick = tick.min(every);
    }
    let mut batch = Vec::with_capacity(SWEEP_BATCH_MAX);
    let (mut next_sweep, mut next_flush, mut next_mark) = (Instant::now(), Instant::now(), Instant::now());
    // Synced each time unless `Never`: no more often than the logs are in
    // `Interval` mode.
    let mark_every = Duration::from_millis(TIME_MARK_INTERVAL_MS).max(flush_every.unwrap_or_default());
    // Each of the three in a `chore` of its own: a bug that panics in one
    // (counted, logged) stops neither of the others, nor the thread.
    // The `Interval` flush, when due: between the loop's chores, and
    // between a sweep pass's batches (listeners can make a pass long, and
    // what a machine crash loses is bounded by the interval).
    let flush_if_due = |next_flush: &mut Instant| {
        let Some(every) = flush_every else { return };
        let now = Instant::now();
        if now >= *next_flush {
            *next_flush = now + every;
            // Failures resurface on the write path, which returns them.
            let _ = core.maintain_logs(LogFlush::UnlessRunning);
        }
    };
    while !stop.wait(tick) {
        let now = Instant::now();
        if let Some(every) = sweep_every {
            if now >= next_sweep {
                // Due again after the interval, or after a pause if this
                // one panics: a sweep that panics every time is not
                // retried every tick.
                next_sweep = now + CHORE_PANIC_PAUSE.max(every);
                if chore(core, "sweeper (sweep)", || {
                    injected_panic(core, PANIC_SWEEPER);
                    // A close ends the pass after the batch it is in.
                    core.sweep_all(&mut batch, true, &mut || {
                        flush_if_due(&mut next_flush);
                        !stop.requested()
                    });
                }) {
                    next_sweep = now + every;
                }
            }
        }
        let now = Instant::now();
        let flush = flush_every.is_some_and(|_| now >= next_flush);
        chore(core, "sweeper (log maintenance)", || {
            // Failures resurface on the write path, which returns them.
            let _ = core.maintain_logs(if flush {
                LogFlush::UnlessRunning
            } else {
                LogFlush::No
            });
        });
        if let (true, Some(every)) = (flush, flush_every) {
            next_flush = now + every;
        }
        if now >= next_mark {
            // A failed mark loses a floor, not a session: the next one
            // tries again.
            chore(core, "sweeper (time mark)", || {
                // Under `Always` the logs are synced up to what they hold
                // first (reads' touches: `sync_appended`).
                if core.config.durability == Durability::Always {
                    sync_appended(core);
                }
                let _ = core.mark_time();
            });
            next_mark = now + mark_every;
        }
    }
}

/// Appends the queued touches and syncs what each log holds beyond its
/// durable position (writeback started on all of them first, so the
/// syncs overlap), waiting for a sync under way; a log with nothing
/// behind is left alone. Under `Always`, before a time mark: a shard
/// nobody writes still appends the `TOUCH` records of its reads, which
/// no writer's sync covers, and a mark durable ahead of them would have
/// recovery judge the sessions kept alive by reads by their old access
/// times. A log whose sync fails refuses writes from then on (its
/// writers are told); it does not hold back the others' mark.
fn sync_appended(core: &Core) {
    let now_ms = core.clock.now_ms();
    let behind: Vec<&crate::persist::GroupCommit> = core
        .commits
        .iter()
        .filter(|commit| {
            commit.log().drain_touches(now_ms);
            commit.durable() < commit.log().appended()
        })
        .map(|commit| &**commit)
        .collect();
    for commit in &behind {
        commit.log().hint_writeback();
    }
    for commit in behind {
        let _ = commit.flush_waiting();
    }
}

/// Runs one chore of a background thread; a panic in it (a bug) is caught
/// and counted ([`caught`]). True if it ran to its end.
fn chore(core: &Core, what: &str, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(panic) => {
            caught(core, what, panic.as_ref());
            false
        }
    }
}

/// Counts a panic caught in a background pass, and logs it (with the
/// `tracing` feature).
fn caught(core: &Core, thread: &str, panic: &(dyn std::any::Any + Send)) {
    core.background_panics.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    tracing::error!(
        thread,
        panic = persist::panic_message(panic),
        "session-engine: a pass of a background thread panicked (a bug); counted in Stats::background_panics, the thread goes on"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (thread, persist::panic_message(panic));
}

/// `Core::panic_next_pass`'s bit for the sweeper's next pass.
pub(crate) const PANIC_SWEEPER: u8 = 1;
/// `Core::panic_next_pass`'s bit for the compactor's next pass.
pub(crate) const PANIC_COMPACTOR: u8 = 2;

/// Panics if a test asked for it (`Engine::debug_panic_in_next_pass`).
fn injected_panic(core: &Core, bit: u8) {
    if core.panic_next_pass.load(Ordering::Relaxed) & bit != 0
        && core.panic_next_pass.fetch_and(!bit, Ordering::Relaxed) & bit != 0
    {
        panic!("injected panic in a background pass (debug_panic_in_next_pass)");
    }
}

/// Checks to skip after `failures` failed compactions of a shard in a row
/// (0 after a success): doubling from [`COMPACTION_BACKOFF_CHECKS_MIN`] up to
/// [`COMPACTION_BACKOFF_CHECKS_MAX`].
fn compaction_backoff(failures: u32) -> u32 {
    match failures {
        0 => 0,
        n => COMPACTION_BACKOFF_CHECKS_MIN
            .saturating_mul(1 << (n - 1).min(16))
            .min(COMPACTION_BACKOFF_CHECKS_MAX),
    }
}

fn compactor(core: &Core, stop: &Stop) {
    let threshold = core.config.compaction_threshold;
    let segment_len = core.config.segment_size_bytes;
    // Per shard: failures in a row, and checks left to skip.
    let mut backoff = vec![(0u32, 0u32); core.logs.len()];
    while !stop.wait(Duration::from_millis(COMPACTION_CHECK_INTERVAL_MS)) {
        for (shard, log) in core.logs.iter().enumerate() {
            let (failures, skip) = &mut backoff[shard];
            if *skip > 0 {
                *skip -= 1;
                continue;
            }
            let compacted = catch_unwind(AssertUnwindSafe(|| {
                injected_panic(core, PANIC_COMPACTOR);
                if !persist::wants_compaction(log, threshold, segment_len) {
                    return None;
                }
                Some(core.compact(shard, CompactionStep::Done))
            }));
            let compacted = match compacted {
                Ok(None) => continue,
                Ok(Some(compacted)) => compacted,
                Err(panic) => {
                    caught(core, "compactor", panic.as_ref());
                    Err(crate::error::Error::Io {
                        context: "compaction".into(),
                        source: std::io::Error::other("the compaction panicked (a bug)"),
                    })
                }
            };
            if let Err(e) = compacted {
                *failures = failures.saturating_add(1);
                *skip = compaction_backoff(*failures);
                core.compaction_errors.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    shard,
                    error = %e,
                    "session-engine: compaction failed; retried after a backoff that doubles per failure in a row (up to about a minute)"
                );
                #[cfg(not(feature = "tracing"))]
                let _ = e;
            } else {
                *failures = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failed compactions of a shard back off, doubling to about a minute,
    /// and a success starts over: each try preallocates a segment, so a
    /// disk too full for the base lost a segment's space every 500 ms.
    #[test]
    fn failed_compactions_back_off() {
        let waits: Vec<u32> = (0..10).map(compaction_backoff).collect();
        assert_eq!(waits, [0, 2, 4, 8, 16, 32, 64, 128, 128, 128]);
        assert_eq!(compaction_backoff(u32::MAX), COMPACTION_BACKOFF_CHECKS_MAX);
    }

    /// A helper given a round before the stop runs it and reports done:
    /// it used to see the stop first and end without reporting, and the
    /// first flusher thread then waited for it forever (the last handle's
    /// drop, joining it, with it).
    #[test]
    fn a_round_started_before_the_stop_is_finished_by_its_helper() {
        let rounds = Rounds::new(2);
        assert!(rounds.start(0b10));
        rounds.stop();
        let mut seen = 0;
        assert!(rounds.next_round(1, &mut seen), "the assigned round runs");
        rounds.done();
        rounds.wait_done();
        assert!(!rounds.next_round(1, &mut seen), "then the helper stops");
    }

    /// A round the first flusher thread starts after the stop (it had
    /// passed its own stop check, and the helpers had seen the stop and
    /// ended) is not waited for: it waited forever, and the last handle's
    /// drop, joining that thread, with it.
    #[test]
    fn a_round_started_after_the_stop_is_not_waited_for() {
        let rounds = Rounds::new(2);
        rounds.stop();
        let mut seen = 0;
        assert!(!rounds.next_round(1, &mut seen), "the helper ends");
        assert!(!rounds.start(0b10), "no round once stopped");
        let rounds = std::sync::Arc::new(rounds);
        let (done, waited) = std::sync::mpsc::channel();
        std::thread::spawn({
            let rounds = std::sync::Arc::clone(&rounds);
            move || {
                rounds.wait_done();
                let _ = done.send(());
            }
        });
        // Immediate when right; a hang guard, not a timing.
        assert!(
            waited.recv_timeout(std::time::Duration::from_secs(60)).is_ok(),
            "waits for a helper that has ended"
        );
    }
}
