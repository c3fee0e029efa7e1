//! Time as the engine sees it: `u64` milliseconds since the Unix epoch.
//!
//! The system clock anchors the wall time once, when it is created, and
//! advances it with the monotonic clock, so engine time never steps backwards
//! when NTP adjusts the wall clock, yet stays comparable across restarts (the
//! log stores these values). Tests use a [`ManualClock`] and advance it
//! explicitly instead of sleeping.
//!
//! One read is one non-serialising `rdtsc` scaled to nanoseconds (`quanta`),
//! a few nanoseconds; a `clock_gettime` through the vDSO cost about 130 ns per
//! operation here, because this VM's vDSO orders the TSC read with `rdtscp`
//! and `lfence`. Each operation reads the clock once, before it takes a shard
//! lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The engine's source of time. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock(Kind);

#[derive(Clone, Debug)]
enum Kind {
    System {
        tsc: quanta::Clock,
        anchor: u64,
        anchor_ms: u64,
    },
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The operating system's clock (see the module docs).
    #[must_use]
    pub fn system() -> Self {
        let tsc = quanta::Clock::new();
        let anchor = tsc.raw();
        let anchor_ms = system_time_to_ms(SystemTime::now());
        Self(Kind::System {
            tsc,
            anchor,
            anchor_ms,
        })
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Kind::System {
                tsc,
                anchor,
                anchor_ms,
            } => {
                let elapsed_ns = tsc.delta_as_nanos(*anchor, tsc.raw());
                anchor_ms.saturating_add(elapsed_ns / 1_000_000)
            }
            Kind::Manual(now) => now.load(Ordering::Acquire),
        }
    }

    /// True for a [`ManualClock`]'s clock.
    #[must_use]
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Kind::Manual(_))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// A clock that moves only when told to; for tests and simulations.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the Unix epoch.
    #[must_use]
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Moves the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.advance_ms(by_ms);
    }

    /// Moves the clock forward by `by_ms` milliseconds.
    pub fn advance_ms(&self, by_ms: u64) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            Some(now.saturating_add(by_ms))
        });
    }

    /// The current reading, in milliseconds since the Unix epoch.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// The engine-side view of this clock.
    #[must_use]
    pub fn clock(&self) -> Clock {
        Clock(Kind::Manual(Arc::clone(&self.0)))
    }
}

impl From<&ManualClock> for Clock {
    fn from(manual: &ManualClock) -> Self {
        manual.clock()
    }
}

/// Milliseconds since the Unix epoch for `t` (0 for times before it).
#[must_use]
pub fn system_time_to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `SystemTime` for `ms` milliseconds since the Unix epoch.
#[must_use]
pub fn ms_to_system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let manual = ManualClock::new(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        manual.advance_ms(u64::MAX);
        assert_eq!(clock.now_ms(), u64::MAX);
        assert!(clock.is_manual());
    }

    #[test]
    fn system_clock_is_monotonic_and_near_wall_time() {
        let clock = Clock::system();
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(b >= a);
        let wall = system_time_to_ms(SystemTime::now());
        assert!(wall.abs_diff(a) < 5_000, "wall {wall} engine {a}");
    }

    #[test]
    fn conversions_round_trip() {
        let t = ms_to_system_time(1_700_000_000_123);
        assert_eq!(system_time_to_ms(t), 1_700_000_000_123);
        assert_eq!(system_time_to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
