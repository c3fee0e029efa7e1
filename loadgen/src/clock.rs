//! Time for the client loop: a source of "now" in nanoseconds since the
//! run's origin and a way to wait until an intended start, for a thread that
//! runs one client ([`SpinTime`]), for clients sharing a thread as tokio tasks
//! ([`TokioTime`]), and [`block_on_ready`] for stores whose futures are
//! (almost) always ready.

use std::future::{ready, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::limits::{SLEEP_MARGIN_NS, SPIN_ONLY_NS};

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
}

/// Real time for a thread that runs one client: sleeps while the next
/// operation is far away and spins the last stretch, so that oversleeping
/// never turns into measured latency.
#[derive(Clone, Copy, Debug)]
pub struct SpinTime {
    origin: Instant,
}

impl SpinTime {
    /// A clock whose zero is `origin`.
    #[must_use]
    pub fn new(origin: Instant) -> Self {
        Self { origin }
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
        loop {
            let now = self.now_ns();
            if now >= t_ns {
                break;
            }
            let left = t_ns - now;
            if left > 2 * SLEEP_MARGIN_NS {
                std::thread::sleep(Duration::from_nanos(left - SLEEP_MARGIN_NS));
            } else if left > SPIN_ONLY_NS {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        ready(())
    }
}

/// Real time for clients that share a thread as tokio tasks: timer sleeps
/// (1 ms granularity) for the bulk, then yields to the other tasks until due.
#[derive(Clone, Copy, Debug)]
pub struct TokioTime {
    origin: Instant,
}

impl TokioTime {
    /// A clock whose zero is `origin`.
    #[must_use]
    pub fn new(origin: Instant) -> Self {
        Self { origin }
    }
}

impl Time for TokioTime {
    const SHARED: bool = true;

    fn share(&self) -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
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
