//! Touch coalescing: at most one store write per session per interval,
//! however many requests carry its id.
//!
//! Each session this process serves has one `AtomicU64` here: the time of
//! the last write that counted as activity (creation, a restore's `get`, a
//! touch), in milliseconds since this process's epoch. A request reads it;
//! only when `interval` has passed does one request (the one that wins a
//! compare-exchange) write a touch to the store. Requests in between cost a
//! map lookup (a shard read lock of a `DashMap`) and an atomic load: no
//! store write, no allocation.
//!
//! Times are tokio's (`tokio::time::Instant`), so that a test with paused
//! time drives them.
//!
//! What it guarantees: the store's deadline is never more than `interval`
//! behind the last request, so a client whose requests are less than
//! `timeout - interval` apart is never expired. For that, a write's time
//! is taken before the write is sent ([`Touches::stamp`]), never after its
//! reply; a session restored here counts as untouched (the restore's touch
//! was written by an earlier call), and a touch is due a couple of
//! milliseconds before the interval ends ([`CLOCK_SLACK_MS`]). What it does not: another
//! process serving the same session keeps its own times (each touches at
//! most once per interval; the store sees the union).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use dashmap::DashMap;
use session_engine::SessionId;

/// Whether a request should write a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Touched within the interval: nothing to write.
    NotDue,
    /// This request writes the touch; `previous` is what to put back if the
    /// write fails (so the next request tries again).
    Due { previous: Option<u64> },
}

/// Counters of the coalescing, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TouchStats {
    /// Touches written to the store.
    pub written: u64,
    /// Requests that found the session touched within the interval.
    pub coalesced: u64,
    /// Touches the store failed (other than "session gone"), or whose
    /// request was cancelled before the store answered; the request was
    /// served (or gone) and the next one tries again.
    pub failed: u64,
}

/// Where this process's clock starts (about 35 years of milliseconds).
const EPOCH_MS: u64 = 1 << 40;

/// How much sooner than the interval a touch is due: a store's time of a
/// write may be up to a millisecond behind the instant it was sent (the
/// engine's clock advances in 1 ms ticks, Redis's scripts count whole
/// milliseconds), and this process's own clock is read in whole
/// milliseconds too.
const CLOCK_SLACK_MS: u64 = 2;

#[derive(Debug)]
pub(crate) struct Touches {
    epoch: Instant,
    interval_ms: u64,
    last_ms: DashMap<SessionId, AtomicU64>,
    written: AtomicU64,
    coalesced: AtomicU64,
    failed: AtomicU64,
}

impl Touches {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last_ms: DashMap::new(),
            written: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the epoch, plus [`EPOCH_MS`]: a stored 0 is
    /// then always longer ago than any interval (a test relies on it).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(EPOCH_MS)
    }

    /// The time to record a write under: taken before the write is sent,
    /// so that what is recorded is never later than the store's own time
    /// of it (a time taken after the reply would run ahead of the store's
    /// deadline by the reply's delay).
    pub(crate) fn stamp(&self) -> u64 {
        self.now_ms()
    }

    /// A session this process now serves: created here by a write sent at
    /// `at` (a [`stamp`](Self::stamp)), or restored (`None`: its last write
    /// was another call's, a touch is due at its next request).
    pub(crate) fn track(&self, id: SessionId, at: Option<u64>) {
        // 0 is longer ago than any interval (`EPOCH_MS`).
        let at = at.unwrap_or(0);
        match self.last_ms.get(&id) {
            Some(last) => last.store(at, Ordering::Release),
            None => {
                self.last_ms.insert(id, AtomicU64::new(at));
            }
        }
    }

    /// A write that counted as activity, sent at `at` (a
    /// [`stamp`](Self::stamp)), succeeded (a data update): the next touch
    /// may wait. Sessions not served here stay untracked.
    pub(crate) fn mark(&self, id: SessionId, at: u64) {
        if let Some(last) = self.last_ms.get(&id) {
            last.fetch_max(at, Ordering::AcqRel);
        }
    }

    /// Whether this request should write a touch (see [`Claim`]).
    pub(crate) fn claim(&self, id: SessionId) -> Claim {
        self.claim_within(id, self.interval_ms)
    }

    /// [`Touches::claim`] with a touch due once `interval_ms` has passed
    /// (an open stream's task: at most the coalescing interval).
    pub(crate) fn claim_within(&self, id: SessionId, interval_ms: u64) -> Claim {
        let interval_ms = interval_ms.min(self.interval_ms).saturating_sub(CLOCK_SLACK_MS);
        let now = self.now_ms();
        if let Some(last) = self.last_ms.get(&id) {
            let previous = last.load(Ordering::Acquire);
            if now.saturating_sub(previous) < interval_ms {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return Claim::NotDue;
            }
            // One of the requests racing here writes; the others need not.
            if last
                .compare_exchange(previous, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return Claim::NotDue;
            }
            self.written.fetch_add(1, Ordering::Relaxed);
            return Claim::Due {
                previous: Some(previous),
            };
        }
        // Not (or no longer) served here, e.g. a stream's task racing the
        // close: touch, but do not start tracking it (that would leak).
        self.written.fetch_add(1, Ordering::Relaxed);
        Claim::Due { previous: None }
    }

    /// How long until a touch of `id` is due (zero if it is due now);
    /// `None` if this process does not serve it.
    pub(crate) fn due_in(&self, id: &SessionId) -> Option<Duration> {
        let last = self.last_ms.get(id)?.load(Ordering::Acquire);
        let due = last.saturating_add(self.interval_ms.saturating_sub(CLOCK_SLACK_MS));
        Some(Duration::from_millis(due.saturating_sub(self.now_ms())))
    }

    /// The claimed touch failed: let the next request try again.
    pub(crate) fn failed(&self, id: SessionId, previous: Option<u64>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        // `None`: not tracked here, nothing to put back.
        if let (Some(previous), Some(last)) = (previous, self.last_ms.get(&id)) {
            last.store(previous, Ordering::Release);
        }
    }

    /// The session left this process (closed, deleted, gone).
    pub(crate) fn forget(&self, id: &SessionId) {
        self.last_ms.remove(id);
    }

    /// Sessions tracked (those this process serves).
    pub(crate) fn tracked(&self) -> usize {
        self.last_ms.len()
    }

    pub(crate) fn stats(&self) -> TouchStats {
        TouchStats {
            written: self.written.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    #[test]
    fn within_the_interval_nothing_is_written() {
        let touches = Touches::new(Duration::from_secs(3600));
        touches.track(id(1), Some(touches.stamp()));
        for _ in 0..100 {
            assert_eq!(touches.claim(id(1)), Claim::NotDue);
        }
        assert_eq!(
            touches.stats(),
            TouchStats {
                written: 0,
                coalesced: 100,
                failed: 0
            }
        );
    }

    #[test]
    fn a_zero_interval_touches_on_every_request() {
        let touches = Touches::new(Duration::ZERO);
        touches.track(id(1), Some(touches.stamp()));
        for _ in 0..10 {
            assert!(matches!(touches.claim(id(1)), Claim::Due { previous: Some(_) }));
        }
        assert_eq!(touches.stats().written, 10);
    }

    #[test]
    fn a_session_not_served_here_is_touched_but_never_tracked() {
        let touches = Touches::new(Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(touches.claim(id(2)), Claim::Due { previous: None });
        }
        touches.mark(id(2), touches.stamp());
        assert_eq!(
            touches.tracked(),
            0,
            "claims and marks of an unknown id leak no entry"
        );
        touches.track(id(2), Some(touches.stamp()));
        assert_eq!(touches.claim(id(2)), Claim::NotDue);
        assert_eq!(touches.tracked(), 1);
        touches.forget(&id(2));
        assert_eq!(touches.tracked(), 0);
    }

    #[test]
    fn a_failed_touch_is_tried_again_by_the_next_request() {
        let touches = Touches::new(Duration::from_secs(3600));
        // Due: restored here, its last touch another call's.
        touches.track(id(3), None);
        let Claim::Due { previous } = touches.claim(id(3)) else {
            panic!("due");
        };
        assert_eq!(touches.claim(id(3)), Claim::NotDue, "claimed by the first");
        touches.failed(id(3), previous);
        assert!(matches!(touches.claim(id(3)), Claim::Due { previous: Some(0) }));
        assert_eq!(touches.stats().failed, 1);
    }

    #[test]
    fn racing_requests_write_one_touch() {
        let touches = Touches::new(Duration::from_secs(3600));
        touches.track(id(4), None);
        let touches = &touches;
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(move || usize::from(matches!(touches.claim(id(4)), Claim::Due { .. }))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1, "{:?}", touches.stats());
        assert_eq!(touches.stats().coalesced, 7);
    }

    /// A write counts from when it was sent, however long its reply took:
    /// a touch is due an interval after that (less the clock slack), and a
    /// later write's mark never moves the time back.
    #[tokio::test(start_paused = true)]
    async fn a_write_counts_from_when_it_was_sent() {
        let touches = Touches::new(Duration::from_secs(2));
        let sent = touches.stamp();
        // The store's reply comes 300 ms later.
        tokio::time::advance(Duration::from_millis(300)).await;
        touches.track(id(5), Some(sent));
        tokio::time::advance(Duration::from_millis(1_697)).await;
        assert_eq!(touches.claim(id(5)), Claim::NotDue, "1,997 ms after the insert");
        tokio::time::advance(Duration::from_millis(1)).await;
        let Claim::Due { previous } = touches.claim(id(5)) else {
            panic!("due 2 s less the slack after the insert was sent");
        };
        assert_eq!(previous, Some(sent));
        let touch_sent = touches.stamp();
        // An update sent before that touch, answered after it.
        touches.mark(id(5), sent + 100);
        assert_eq!(
            touches.last_ms.get(&id(5)).unwrap().load(Ordering::Acquire),
            touch_sent
        );
        assert_eq!(
            touches.due_in(&id(5)),
            Some(Duration::from_millis(2_000 - CLOCK_SLACK_MS))
        );
    }
}
