//! The engine's threads. They only schedule: each calls one chore of the
//! core on its interval and sleeps. The sweeper expires sessions and keeps
//! the logs up (`Core::maintain_logs`: prefault, segment preparation, queued
//! touches, the `Interval` flush); with persistence the compactor rewrites
//! logs dominated by dead records; in `Always` mode the flusher runs the
//! syncs that async writers wait for (they cannot run one themselves). None
//! runs for an in-memory engine opened `without_sweeper` (the default clock
//! has a thread of its own: see `Clock::system`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Durability;
use crate::core::Core;
use crate::limits::{COMPACTION_CHECK_INTERVAL_MS, LOG_CHECK_INTERVAL_MS, SWEEP_BATCH_MAX};
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
}

pub(crate) struct Background {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
    /// The flusher thread's requests (`Always` mode).
    flusher: Option<Arc<FlushRequests>>,
}

impl Background {
    pub(crate) fn start(core: &Arc<Core>) -> Self {
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut threads = Vec::new();
        let persistent = !core.logs.is_empty();
        if core.config.sweep_interval.is_some() || persistent {
            let (core, stop) = (Arc::clone(core), Arc::clone(&stop));
            threads.push(spawn("session-sweeper", move || sweeper(&core, &stop)));
        }
        if persistent {
            let (core, stop) = (Arc::clone(core), Arc::clone(&stop));
            threads.push(spawn("session-compactor", move || compactor(&core, &stop)));
        }
        let flusher = (persistent && core.config.durability == Durability::Always).then(|| {
            let requests = Arc::new(FlushRequests::default());
            for commit in &core.commits {
                commit.set_flusher(Arc::clone(&requests));
            }
            let (core, requests2) = (Arc::clone(core), Arc::clone(&requests));
            threads.push(spawn("session-flusher", move || flusher(&core, &requests2)));
            requests
        });
        Self {
            stop,
            threads,
            flusher,
        }
    }

    pub(crate) fn stop(self) {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
        if let Some(flusher) = &self.flusher {
            flusher.stop();
        }
        let current = std::thread::current().id();
        for thread in self.threads {
            // Dropped from one of its own threads (a listener that held the
            // last handle): that thread sees the stop flag and ends once the
            // listener returns; joining itself would fail.
            if thread.thread().id() == current {
                continue;
            }
            // A panic there was already reported by the thread itself.
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"))
}

/// Runs the syncs that async writers wait for in `Always` mode: whenever
/// asked, syncs every log that has them, unless a writer's thread is already
/// leading a sync there (that leader covers them, hands over to another
/// thread, or asks again).
fn flusher(core: &Core, requests: &FlushRequests) {
    while requests.next() {
        // A failure reaches the waiters through their commit.
        let _ = persist::flush_all(
            core.commits
                .iter()
                .filter(|c| c.has_async_waiters())
                .map(|c| &**c),
        );
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
    let mut next_sweep = Instant::now();
    let mut next_flush = next_sweep;
    while !stop.wait(tick) {
        let now = Instant::now();
        if let Some(every) = sweep_every {
            if now >= next_sweep {
                core.sweep_all(&mut batch);
                next_sweep = now + every;
            }
        }
        let flush = flush_every.is_some_and(|_| now >= next_flush);
        // Failures resurface on the write path, which returns them.
        let _ = core.maintain_logs(flush);
        if let (true, Some(every)) = (flush, flush_every) {
            next_flush = now + every;
        }
    }
}

fn compactor(core: &Core, stop: &Stop) {
    let threshold = core.config.compaction_threshold;
    let segment_len = core.config.segment_size_bytes;
    while !stop.wait(Duration::from_millis(COMPACTION_CHECK_INTERVAL_MS)) {
        for (shard, log) in core.logs.iter().enumerate() {
            if !persist::wants_compaction(log, threshold, segment_len) {
                continue;
            }
            if let Err(e) = core.compact(shard, CompactionStep::Done) {
                core.compaction_errors.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    shard,
                    error = %e,
                    "session-engine: compaction failed; retried at the next check"
                );
                #[cfg(not(feature = "tracing"))]
                let _ = e;
            }
        }
    }
}
