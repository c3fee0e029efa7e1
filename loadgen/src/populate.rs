//! Populating a store with the scenario's live sessions, in parallel over
//! its workers, and what that cost.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use session_engine::{SessionId, Timeout};

use crate::backend::Backend;
use crate::clock::block_on_ready;
use crate::hist::{new_hist, Hist};
use crate::procfs;
use crate::scenario::Scenario;

/// The live population and what creating it cost.
pub struct Populated {
    /// Ids of the live sessions.
    pub ids: Arc<[SessionId]>,
    /// Create latency while populating (closed loop, all workers).
    pub create_latency: Hist,
    /// Wall time of the populate phase.
    pub wall: Duration,
    /// RSS before the first create, bytes.
    pub rss_before_bytes: Option<u64>,
    /// RSS after the last create, bytes.
    pub rss_after_bytes: Option<u64>,
}

/// Runs `future` on the current thread: directly for ready-future backends,
/// on a current-thread tokio runtime otherwise.
pub(crate) fn run_here<B: Backend, F: Future>(future: F) -> F::Output {
    if B::READY_FUTURES {
        block_on_ready(future)
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("building a current-thread runtime")
            .block_on(future)
    }
}

/// Creates the scenario's live sessions, in parallel over its workers. On
/// a store that outlives the run, an interrupt from here on stops the
/// creates and deletes the sessions made (until the caller sets what an
/// interrupt does next, see [`depopulate_on_interrupt`]).
///
/// # Errors
/// The first create that failed (capacity, metadata size, backend); the
/// sessions created before it are deleted first from a store that outlives
/// the run (they stayed there for their timeout).
pub fn populate<B: Backend>(store: &Arc<B>, scenario: &Scenario) -> anyhow::Result<Populated> {
    let timeout = scenario.population_timeout()?;
    let workers = scenario.workers;
    let underway = B::OUTLIVES_RUN.then(|| Arc::new(Underway::with_capacity(scenario.sessions)));
    if let Some(underway) = &underway {
        let (store, underway) = (Arc::clone(store), Arc::clone(underway));
        crate::interrupt::on_interrupt(move || {
            report_left(depopulate(&store, &underway.stop(), workers));
        });
    }
    let metadata: Arc<[u8]> = (0..scenario.metadata_bytes)
        .map(|i| u8::try_from(i % 251).expect("below 251"))
        .collect();
    let rss_before_bytes = procfs::rss_bytes();
    let started = Instant::now();
    let results: Vec<Share> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let share = scenario.sessions / workers + usize::from(w < scenario.sessions % workers);
                let store = Arc::clone(store);
                let metadata = Arc::clone(&metadata);
                let underway = underway.as_deref();
                std::thread::Builder::new()
                    .name(format!("loadgen-populate-{w}"))
                    .spawn_scoped(scope, move || {
                        run_here::<B, _>(populate_share(&*store, share, &metadata, timeout, underway))
                    })
                    .expect("spawning a populate thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("populate thread panicked"))
            .collect()
    });
    let wall = started.elapsed();
    let mut ids = Vec::with_capacity(scenario.sessions);
    let mut create_latency = new_hist();
    let mut failed = None;
    let mut stopped = false;
    for share in results {
        ids.extend(share.ids);
        create_latency.add(&share.latency).expect("same bounds");
        failed = failed.or(share.failed);
        stopped |= share.stopped;
    }
    if stopped {
        // Stopped by the interrupt's cleanup, which deletes them and ends
        // the process.
        crate::interrupt::await_exit();
    }
    if let Some(e) = failed {
        report_left(depopulate(store, &ids, workers));
        if underway.is_some() {
            crate::interrupt::clear();
        }
        return Err(e);
    }
    Ok(Populated {
        ids: ids.into(),
        create_latency,
        wall,
        rss_before_bytes,
        rss_after_bytes: procfs::rss_bytes(),
    })
}

/// Deletes the live population from a store that outlives the run
/// ([`Backend::OUTLIVES_RUN`]: Redis), on `threads` threads: left there (for
/// its 30-minute timeout, say), it doubled the next run's population and
/// its list pages, and so could change that run's verdict. Best effort:
/// a session already gone is fine, a failed delete is counted. Returns
/// (deleted, failed).
pub fn depopulate<B: Backend>(store: &Arc<B>, ids: &[SessionId], threads: usize) -> (usize, usize) {
    if !B::OUTLIVES_RUN || ids.is_empty() {
        return (0, 0);
    }
    let per_thread = ids.len().div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .chunks(per_thread)
            .map(|chunk| {
                let store = Arc::clone(store);
                scope.spawn(move || {
                    run_here::<B, _>(async {
                        let (mut deleted, mut failed) = (0, 0);
                        for id in chunk {
                            match store.delete(id).await {
                                Ok(()) => deleted += 1,
                                Err(session_engine::Error::NotFound) => {}
                                Err(_) => failed += 1,
                            }
                        }
                        (deleted, failed)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("depopulate thread panicked"))
            .fold((0, 0), |(d, f), (dd, ff)| (d + dd, f + ff))
    })
}

/// Says on stderr how many sessions [`depopulate`] could not delete (they
/// stay on the server until their timeout); nothing when it deleted all.
fn report_left((_, failed): (usize, usize)) {
    if failed > 0 {
        eprintln!(
            "loadgen: {failed} sessions could not be deleted from the server: they stay until their timeout"
        );
    }
}

/// Sets [`depopulate`] of `ids` as what Ctrl-C does before the process
/// ends, for a store that outlives the run ([`crate::interrupt`]); the
/// run's normal end runs it with [`crate::interrupt::run_cleanup`].
///
/// Returns a guard that runs it when dropped, so that an error or a panic
/// between here and the run's normal end deletes the population too.
#[must_use = "the population is deleted when the guard drops"]
pub fn depopulate_on_interrupt<B: Backend + Send + Sync>(
    store: &Arc<B>,
    ids: &Arc<[SessionId]>,
    threads: usize,
) -> crate::interrupt::CleanupGuard {
    if B::OUTLIVES_RUN {
        let (store, ids) = (Arc::clone(store), Arc::clone(ids));
        crate::interrupt::on_interrupt(move || {
            report_left(depopulate(&store, &ids, threads));
        });
    }
    crate::interrupt::CleanupGuard
}

/// One populate thread's sessions, and the create that stopped it early.
struct Share {
    ids: Vec<SessionId>,
    latency: Hist,
    failed: Option<anyhow::Error>,
    /// An interrupt stopped it.
    stopped: bool,
}

/// The sessions a populate has made so far, for an interrupt to delete
/// (stores that outlive the run): the creates in flight are waited for,
/// and no create starts after the interrupt.
struct Underway {
    state: Mutex<UnderwayState>,
    idle: Condvar,
}

struct UnderwayState {
    stopped: bool,
    in_flight: usize,
    ids: Vec<SessionId>,
}

impl Underway {
    /// Room for `sessions` ids up front: no reallocation under the lock
    /// every create takes.
    fn with_capacity(sessions: usize) -> Self {
        Self {
            state: Mutex::new(UnderwayState {
                stopped: false,
                in_flight: 0,
                ids: Vec::with_capacity(sessions),
            }),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnderwayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// False once stopped: make no more.
    fn begin(&self) -> bool {
        let mut state = self.lock();
        state.in_flight += usize::from(!state.stopped);
        !state.stopped
    }

    /// A create begun has ended, with this session if it made one.
    fn end(&self, made: Option<SessionId>) {
        let mut state = self.lock();
        state.in_flight -= 1;
        state.ids.extend(made);
        if state.in_flight == 0 {
            self.idle.notify_all();
        }
    }

    /// Stops the creates and returns every session made.
    fn stop(&self) -> Vec<SessionId> {
        let mut state = self.lock();
        state.stopped = true;
        while state.in_flight > 0 {
            state = self.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        std::mem::take(&mut state.ids)
    }
}

async fn populate_share<B: Backend>(
    store: &B,
    count: usize,
    metadata: &[u8],
    timeout: Timeout,
    underway: Option<&Underway>,
) -> Share {
    let mut share = Share {
        ids: Vec::with_capacity(count),
        latency: new_hist(),
        failed: None,
        stopped: false,
    };
    for n in 0..count {
        if underway.is_some_and(|u| !u.begin()) {
            share.stopped = true;
            break;
        }
        let before = Instant::now();
        let made = store.create(metadata, timeout).await;
        let took = before.elapsed();
        if let Some(underway) = underway {
            underway.end(made.as_ref().ok().copied());
        }
        match made {
            Ok(id) => {
                #[allow(clippy::cast_possible_truncation)]
                share.latency.saturating_record(took.as_nanos() as u64);
                share.ids.push(id);
            }
            Err(e) => {
                share.failed =
                    Some(anyhow::Error::new(e).context(format!("creating live session {n} of {count}")));
                break;
            }
        }
    }
    share
}
