//! Time for the client loop: a source of "now" in nanoseconds since the
//! run's origin and a way to wait until an intended start, for a thread that
//! runs one client ([`SpinTime`]), for clients sharing a thread as tokio tasks
//! ([`TokioTime`]), and [`block_on_ready`] for stores whose futures are
//! (almost) always ready.
//!
//! **What the machine took.** While a [`SpinTime`] client waits for its next
//! operation it reads the clock every few tens of nanoseconds; two readings
//! [`GAP_MIN_NS`] or more apart mean the thread was not running in between
//! (preempted by other work, its virtual CPU stolen by the hypervisor, a long
//! interrupt). It adds those gaps up, and [`Time::take_lost`] hands them to
//! the recorder at the end of each slice, which is how the verdict knows a
//! slice the machine disturbed from one the backend made slow: a backend
//! that stalls does so inside an operation, where the meter does not look.

use std::future::{ready, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::limits::{GAP_MIN_NS, SLEEP_MARGIN_NS, SPIN_ONLY_NS};

/// A source of time for the client loop, in nanoseconds since the run's origin.
pub trait Time: Send + Sync {
    /// True where several clients share one thread as tasks: each then
    /// yields after every operation, or a client whose store answers at
    /// once (the embedded engine) would never let its neighbours run.
    const SHARED: bool = false;
    /// Now.
    fn now_ns(&self) -> u64;
    /// Resolves at or after `t_ns`.
    fn wait_until(&self, t_ns: u64) -> impl Future<Output = ()> + Send;
    /// Lets the other clients on this thread run (where `SHARED`).
    fn share(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// What the machine took from this client while it waited since the
    /// last call (nothing, for clocks that cannot tell).
    fn take_lost(&self) -> Lost {
        Lost::default()
    }
}

/// Time the machine took from a client: the gaps of at least
/// [`GAP_MIN_NS`] between two consecutive clock readings of its wait loop,
/// lateness on waking from a sleep, and its thread's run-queue wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// All gaps together, ns.
    pub gaps_ns: u64,
    /// The longest single gap, ns.
    pub gap_max_ns: u64,
    /// Time its thread was runnable but held off a CPU (`schedstat`), ns.
    pub runqueue_wait_ns: u64,
}

impl Lost {
    /// Both together: the gaps and waits summed, the longest gap of either.
    #[must_use]
    pub fn merge(self, other: Lost) -> Lost {
        Lost {
            gaps_ns: self.gaps_ns.saturating_add(other.gaps_ns),
            gap_max_ns: self.gap_max_ns.max(other.gap_max_ns),
            runqueue_wait_ns: self.runqueue_wait_ns.saturating_add(other.runqueue_wait_ns),
        }
    }

    /// The larger of each figure: for clients that share one thread, which
    /// each see the same gaps.
    #[must_use]
    pub fn max(self, other: Lost) -> Lost {
        Lost {
            gaps_ns: self.gaps_ns.max(other.gaps_ns),
            gap_max_ns: self.gap_max_ns.max(other.gap_max_ns),
            runqueue_wait_ns: self.runqueue_wait_ns.max(other.runqueue_wait_ns),
        }
    }
}

/// The calling thread's run-queue wait since the reading in `last`
/// (`u64::MAX`: none yet, so the first call only takes a reading).
fn runqueue_wait_since(last: &AtomicU64) -> u64 {
    let Some(now) = crate::procfs::thread_runqueue_wait_ns() else {
        return 0;
    };
    let then = last.swap(now, Ordering::Relaxed);
    if then == u64::MAX {
        0
    } else {
        now.saturating_sub(then)
    }
}

/// Real time for a thread that runs one client: sleeps while the next
/// operation is far away and spins the last stretch, so that oversleeping
/// never turns into measured latency; meters the gaps in its spinning (see
/// the module doc).
#[derive(Debug)]
pub struct SpinTime {
    origin: Instant,
    gaps_ns: AtomicU64,
    gap_max_ns: AtomicU64,
    wait_read_ns: AtomicU64,
}

impl SpinTime {
    /// A clock whose zero is `origin`.
    #[must_use]
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            gaps_ns: AtomicU64::new(0),
            gap_max_ns: AtomicU64::new(0),
            wait_read_ns: AtomicU64::new(u64::MAX),
        }
    }

    // One thread owns a `SpinTime`: relaxed atomics are plain loads and
    // stores here, and keep the type `Sync` as `Time` requires.
    fn note_gap(&self, gap_ns: u64) {
        self.gaps_ns.fetch_add(gap_ns, Ordering::Relaxed);
        self.gap_max_ns.fetch_max(gap_ns, Ordering::Relaxed);
    }
}

impl Time for SpinTime {
    #[inline]
    fn now_ns(&self) -> u64 {
        // u64 nanoseconds cover 584 years.
        #[allow(clippy::cast_possible_truncation)]
        let ns = self.origin.elapsed().as_nanos() as u64;
        ns
    }

    fn wait_until(&self, t_ns: u64) -> impl Future<Output = ()> + Send {
        let mut last = self.now_ns();
        while last < t_ns {
            let left = t_ns - last;
            if left > 2 * SLEEP_MARGIN_NS {
                std::thread::sleep(Duration::from_nanos(left - SLEEP_MARGIN_NS));
                let now = self.now_ns();
                // Oversleeping into the margin costs nothing; waking past
                // the intended start makes the operation late.
                if now > t_ns {
                    self.note_gap(now - t_ns);
                }
                last = now;
                continue;
            }
            if left > SPIN_ONLY_NS {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            let now = self.now_ns();
            if now - last >= GAP_MIN_NS {
                self.note_gap(now - last);
            }
            last = now;
        }
        ready(())
    }

    fn take_lost(&self) -> Lost {
        Lost {
            gaps_ns: self.gaps_ns.swap(0, Ordering::Relaxed),
            gap_max_ns: self.gap_max_ns.swap(0, Ordering::Relaxed),
            runqueue_wait_ns: runqueue_wait_since(&self.wait_read_ns),
        }
    }
}

/// Real time for clients that share a thread as tokio tasks: timer sleeps
/// (1 ms granularity) for the bulk, then yields to the other tasks until due.
#[derive(Debug)]
pub struct TokioTime {
    origin: Instant,
    wait_read_ns: AtomicU64,
}

impl TokioTime {
    /// A clock whose zero is `origin`.
    #[must_use]
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            wait_read_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Time for TokioTime {
    const SHARED: bool = true;

    fn share(&self) -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
    }

    // The yields between tasks are not the machine's: only the thread's
    // run-queue wait is.
    fn take_lost(&self) -> Lost {
        Lost {
            runqueue_wait_ns: runqueue_wait_since(&self.wait_read_ns),
            ..Lost::default()
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        #[allow(clippy::cast_possible_truncation)]
        let ns = self.origin.elapsed().as_nanos() as u64;
        ns
    }

    fn wait_until(&self, t_ns: u64) -> impl Future<Output = ()> + Send {
        let origin = self.origin;
        let now_ns = self.now_ns();
        async move {
            if t_ns > now_ns + 2 * SLEEP_MARGIN_NS {
                let wake = origin + Duration::from_nanos(t_ns - SLEEP_MARGIN_NS);
                tokio::time::sleep_until(wake.into()).await;
            }
            while origin.elapsed() < Duration::from_nanos(t_ns) {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Runs a future whose awaits are (almost) all ready, the embedded engine's
/// `SessionStore` futures and [`SpinTime`] waits, on the calling thread.
/// The exception is a write to an engine in `Durability::Always`, whose
/// future completes when its group commit has synced it: the thread then
/// parks until the engine wakes the task. The park is bounded (1 ms), so a
/// future that returns `Pending` without arranging a wake-up is still polled
/// again.
pub fn block_on_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// Wakes a thread parked in [`block_on_ready`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}
