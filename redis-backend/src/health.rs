//! The stuck-client detector.
//!
//! The hazard: after a `kill -9` of a master, a cluster client can stay
//! wedged — the cluster reports `cluster_state:ok`, a brand-new client
//! works, yet every request on the old one times out. The store therefore
//! watches its own requests: once *nothing* has succeeded for `stuck_after`
//! (a server error reply counts as success: the server answered), it
//! connects a fresh client and, if that one finds the deployment serving
//! while the current one does not (a failover whose only traffic is on the
//! failed shard also fails every request for a while, but the current
//! client still answers), swaps it in. The next
//! rebuild needs another `stuck_after` of failures, and probes are spaced at
//! least [`PROBE_INTERVAL`] apart, so a deployment that is really down costs
//! one connection attempt per interval, not one per request.
//!
//! All times are milliseconds since the detector was created (monotonic),
//! stored +1 so that 0 can mean "not failing".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::limits::PROBE_INTERVAL;

/// Tracks whether the store's requests succeed.
#[derive(Debug)]
pub(crate) struct Health {
    origin: Instant,
    stuck_after_ms: u64,
    /// When the current run of failures began (+1), 0 while requests succeed.
    failing_since: AtomicU64,
    /// When the last probe started (+1), 0 if none yet.
    last_probe: AtomicU64,
    rebuilds: AtomicU64,
}

impl Health {
    pub(crate) fn new(stuck_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            stuck_after_ms: u64::try_from(stuck_after.as_millis()).unwrap_or(u64::MAX),
            failing_since: AtomicU64::new(0),
            last_probe: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A request succeeded (or the server answered with an error).
    #[inline]
    pub(crate) fn success(&self) {
        // Read first: the common case writes nothing (no cache-line traffic).
        if self.failing_since.load(Ordering::Relaxed) != 0 {
            self.failing_since.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed without an answer; true if a probe is due now.
    pub(crate) fn failure(&self) -> bool {
        self.failure_at(self.now())
    }

    fn failure_at(&self, now: u64) -> bool {
        let since = match self
            .failing_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => now,
            Err(since) => since,
        };
        let last_probe = self.last_probe.load(Ordering::Relaxed);
        now.saturating_sub(since) >= self.stuck_after_ms
            && (last_probe == 0 || now.saturating_sub(last_probe) >= duration_ms(PROBE_INTERVAL))
    }

    /// A probe starts: spaces the next one.
    pub(crate) fn probing(&self) {
        self.last_probe.store(self.now(), Ordering::Relaxed);
    }

    /// A fresh client was swapped in: the next rebuild needs another full
    /// `stuck_after` of failures.
    pub(crate) fn rebuilt(&self) {
        self.rebuilt_at(self.now());
    }

    fn rebuilt_at(&self, now: u64) {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        // Only if still failing: a success meanwhile already cleared it.
        let _ = self
            .failing_since
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                (since != 0).then_some(now)
            });
    }

    /// Clients rebuilt so far.
    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_due_only_after_stuck_after_of_unbroken_failure() {
        let h = Health::new(Duration::from_secs(1));
        assert!(!h.failure_at(10));
        assert!(!h.failure_at(900));
        assert!(h.failure_at(1_010), "1000 ms of failures");
        h.success();
        assert!(!h.failure_at(1_020), "a success restarts the count");
        assert!(!h.failure_at(2_000));
        assert!(h.failure_at(2_020));
    }

    #[test]
    fn a_rebuild_restarts_the_count_and_probes_are_spaced() {
        let h = Health::new(Duration::from_millis(100));
        assert!(!h.failure_at(1));
        assert!(h.failure_at(200));
        h.last_probe.store(200, Ordering::Relaxed);
        assert!(!h.failure_at(300), "probe interval not over");
        assert!(h.failure_at(200 + duration_ms(PROBE_INTERVAL)));
        h.rebuilt_at(500);
        assert_eq!(h.rebuilds(), 1);
        assert!(!h.failure_at(550));
        assert!(h.failure_at(600 + duration_ms(PROBE_INTERVAL)));
    }

    #[test]
    fn rebuilt_after_success_does_not_restart_failing() {
        let h = Health::new(Duration::from_millis(100));
        h.success();
        h.rebuilt_at(50);
        assert_eq!(h.failing_since.load(Ordering::Relaxed), 0);
    }
}
