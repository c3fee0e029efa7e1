//! Time as the engine sees it: `u64` milliseconds since the Unix epoch.
//!
//! The system clock anchors the wall time once, when it is created, and
//! advances it with the operating system's monotonic clock, which NTP keeps
//! at the real rate and never steps: engine time never steps when NTP
//! adjusts the wall clock, does not drift from it over a long run, and
//! stays comparable across restarts (the log stores these values). A wall
//! clock stepped after the clock was made is not followed, either way:
//! open the engine once the clock is set (systemd's `time-sync.target`).
//! [`Clock::precise`] advances the anchor with the TSC as `quanta`
//! calibrated it once: over a long run it can drift from the wall clock by
//! that calibration's error. Tests use a [`ManualClock`] and advance it
//! explicitly instead of sleeping.
//!
//! Every operation needs the time (to check a deadline, to slide one), and
//! its resolution is a millisecond, so the default clock keeps the hot path
//! off the hardware clock: a background thread (`session-clock`, one per
//! [`Clock::system`], stopped and joined when the last clone is dropped)
//! stores the time every [`CLOCK_TICK`], and a read is one load of a cache
//! line that changes once per tick. [`Clock::precise`] reads the TSC on
//! every call instead: a non-serialising `rdtsc` scaled to nanoseconds
//! (`quanta`), but a microcoded instruction that also holds back the
//! overlap of the cache misses around it. A `clock_gettime` through the
//! vDSO costs more on VMs whose vDSO orders the TSC read with `rdtscp` and
//! `lfence`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;

use crate::limits::TIME_MS_MAX;

/// The millisecond after `ms`, where time has one: at [`TIME_MS_MAX`] it is
/// that last millisecond again. A creation sent "after" a removed session's
/// lands there at the end of time (one past it would overlap the access
/// word's marks, and no log could hold it).
pub(crate) const fn ms_after(ms: u64) -> u64 {
    if ms < TIME_MS_MAX {
        ms + 1
    } else {
        TIME_MS_MAX
    }
}

/// How often the system clock's thread stores the time: engine time lags
/// the real time by at most about this much (more only while that thread
/// waits for a CPU).
pub const CLOCK_TICK: Duration = Duration::from_millis(1);

/// The shortest tick [`Clock::ticking`] uses.
pub const CLOCK_TICK_MIN: Duration = Duration::from_micros(100);

/// The longest tick [`Clock::ticking`] uses: engine time is never more than
/// about this far behind, so no deadline is held back longer.
pub const CLOCK_TICK_MAX: Duration = Duration::from_secs(1);

/// The engine's source of time. Cheap to clone; clones share one source.
#[derive(Clone, Debug)]
pub struct Clock(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Ticking {
        now: Arc<CachePadded<AtomicU64>>,
        /// The source the thread stores from (its raise is shared).
        precise: Precise,
        _ticker: Arc<Ticker>,
    },
    Precise(Precise),
    Manual(Arc<AtomicU64>),
}

/// What advances a clock's anchor.
#[derive(Clone, Debug)]
enum Elapsed {
    /// The TSC, scaled by `quanta` (calibrated once): [`Clock::precise`],
    /// read on every call.
    Tsc { tsc: quanta::Clock, anchor: u64 },
    /// The operating system's monotonic clock (NTP keeps its rate, never
    /// steps it): the ticking clock's thread, one read a tick.
    Monotonic(std::time::Instant),
}

/// Milliseconds since `start` on the monotonic clock. Out of line: only
/// the ticking clock's thread (and a raise) reads it, and inlined into
/// every operation's clock read it cost every create instructions.
#[inline(never)]
fn monotonic_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Wall time at creation, advanced by `elapsed`, plus `raised`.
#[derive(Clone, Debug)]
struct Precise {
    elapsed: Elapsed,
    anchor_ms: u64,
    /// Added by `Clock::raise_to` (shared by clones): time goes on from a
    /// raise at the source's pace.
    raised: Arc<AtomicU64>,
    /// The latest reading any clone gave: a reading behind it gives it
    /// instead. A TSC read below its anchor (reset by a resume from
    /// suspend, or a VM moved to a host whose TSC is behind) counts as no
    /// time elapsed, which would step engine time back to the anchor.
    latest: Arc<CachePadded<AtomicU64>>,
}

impl Precise {
    fn tsc() -> Self {
        let tsc = quanta::Clock::new();
        let anchor = tsc.raw();
        Self::anchored(Elapsed::Tsc { tsc, anchor })
    }

    fn monotonic() -> Self {
        Self::anchored(Elapsed::Monotonic(std::time::Instant::now()))
    }

    fn anchored(elapsed: Elapsed) -> Self {
        Self {
            elapsed,
            anchor_ms: system_time_to_ms(SystemTime::now()),
            raised: Arc::new(AtomicU64::new(0)),
            latest: Arc::new(CachePadded::new(AtomicU64::new(0))),
        }
    }

    #[inline]
    fn unraised_ms(&self) -> u64 {
        let elapsed_ms = match &self.elapsed {
            Elapsed::Tsc { tsc, anchor } => tsc.delta_as_nanos(*anchor, tsc.raw()) / 1_000_000,
            Elapsed::Monotonic(start) => monotonic_ms(*start),
        };
        self.anchor_ms.saturating_add(elapsed_ms)
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        let now = self
            .unraised_ms()
            .saturating_add(self.raised.load(Ordering::Relaxed))
            .min(TIME_MS_MAX);
        // Never a step back: a reading behind the latest gives the latest.
        // (Not a raise to it: with cores whose TSCs disagree, each reading
        // behind would add the gap again, and time would run ahead.)
        let latest = self.latest.load(Ordering::Relaxed);
        if now > latest {
            self.latest.fetch_max(now, Ordering::Relaxed);
            now
        } else {
            latest
        }
    }

    /// Adds what takes the reading to `floor_ms`, if it is behind (raises
    /// racing each other add it once).
    fn raise_to(&self, floor_ms: u64) {
        let _ = self
            .raised
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |raised| {
                let now = self.unraised_ms().saturating_add(raised);
                (now < floor_ms).then(|| raised + (floor_ms - now))
            });
    }
}

/// Owns the system clock's thread: dropping it (with the last clone of the
/// clock) stops the thread and joins it.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The loop cannot panic; a join error would only repeat one.
            let _ = thread.join();
        }
    }
}

impl Clock {
    /// The operating system's clock, read through a background thread that
    /// stores it every [`CLOCK_TICK`] (see the module docs). If that thread
    /// cannot be started, this is [`Clock::precise`]. A process forked
    /// after this call has no such thread: its clock stands still (make a
    /// new one in the child, or use [`Clock::precise`]).
    #[must_use]
    pub fn system() -> Self {
        Self::ticking(CLOCK_TICK)
    }

    /// [`Clock::system`] with its thread storing the time every `tick`
    /// instead of every [`CLOCK_TICK`]: fewer wake-ups (1,000 a second at
    /// the default), engine time up to `tick` behind real time. A zero
    /// `tick` is [`Clock::precise`]; other ticks are at least
    /// [`CLOCK_TICK_MIN`] (a shorter one would keep a core busy) and at most
    /// [`CLOCK_TICK_MAX`] (a longer one would hold every deadline back).
    #[must_use]
    pub fn ticking(tick: Duration) -> Self {
        if tick.is_zero() {
            return Self::precise();
        }
        let tick = tick.clamp(CLOCK_TICK_MIN, CLOCK_TICK_MAX);
        let precise = Precise::monotonic();
        let now = Arc::new(CachePadded::new(AtomicU64::new(precise.now_ms())));
        let stop = Arc::new(AtomicBool::new(false));
        let (now2, stop2, precise2) = (Arc::clone(&now), Arc::clone(&stop), precise.clone());
        let thread = std::thread::Builder::new()
            .name("session-clock".into())
            .spawn(move || {
                let precise = precise2;
                while !stop2.load(Ordering::Acquire) {
                    // `fetch_max`: never a step back, whatever the source.
                    now2.fetch_max(precise.now_ms(), Ordering::Relaxed);
                    std::thread::park_timeout(tick);
                }
            });
        match thread {
            Ok(thread) => Self(Kind::Ticking {
                now,
                precise,
                _ticker: Arc::new(Ticker {
                    stop,
                    thread: Some(thread),
                }),
            }),
            Err(_) => Self::precise(),
        }
    }

    /// The operating system's clock, read from the TSC on every call: exact
    /// to the millisecond, at the cost of a clock read (and some lost
    /// overlap) per operation.
    #[must_use]
    pub fn precise() -> Self {
        Self(Kind::Precise(Precise::tsc()))
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Kind::Ticking { now, .. } => now.load(Ordering::Relaxed),
            Kind::Precise(precise) => precise.now_ms(),
            Kind::Manual(now) => now.load(Ordering::Acquire),
        }
    }

    /// Moves the clock forward to `floor_ms` if it is behind it (never
    /// back; at most [`TIME_MS_MAX`]), and it goes on from there at the
    /// real pace: an engine opening a log whose times are ahead of the wall
    /// clock (it stepped back since, or was set late at boot) goes on from
    /// them, so the times it writes never step back behind the ones it
    /// recovered. Clones share the raise.
    pub(crate) fn raise_to(&self, floor_ms: u64) {
        let floor_ms = floor_ms.min(TIME_MS_MAX);
        match &self.0 {
            Kind::Ticking { now, precise, .. } => {
                precise.raise_to(floor_ms);
                now.fetch_max(floor_ms, Ordering::Relaxed);
            }
            Kind::Precise(precise) => precise.raise_to(floor_ms),
            Kind::Manual(now) => {
                now.fetch_max(floor_ms, Ordering::AcqRel);
            }
        }
    }

    /// True for a [`ManualClock`]'s clock.
    #[must_use]
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Kind::Manual(_))
    }

    /// The ticking clock's shared reading, to watch its thread's lifetime.
    #[cfg(test)]
    fn reading(&self) -> Option<std::sync::Weak<CachePadded<AtomicU64>>> {
        match &self.0 {
            Kind::Ticking { now, .. } => Some(Arc::downgrade(now)),
            _ => None,
        }
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
    /// A clock standing at `start_ms` milliseconds since the Unix epoch (at
    /// most [`TIME_MS_MAX`]).
    #[must_use]
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms.min(TIME_MS_MAX))))
    }

    /// Moves the clock forward by `by`, stopping at [`TIME_MS_MAX`].
    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.advance_ms(by_ms);
    }

    /// Moves the clock forward by `by_ms` milliseconds, stopping at
    /// [`TIME_MS_MAX`].
    pub fn advance_ms(&self, by_ms: u64) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            Some(now.saturating_add(by_ms).min(TIME_MS_MAX))
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

/// The `SystemTime` for `ms` milliseconds since the Unix epoch; a time the
/// platform's `SystemTime` cannot hold (a hostile or corrupt stored time,
/// on a platform narrower than Linux's) saturates to the end of year 9999,
/// or failing that to 2038, instead of panicking.
#[must_use]
pub fn ms_to_system_time(ms: u64) -> SystemTime {
    /// 9999-12-31T23:59:59Z.
    const YEAR_9999_END_S: u64 = 253_402_300_799;
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .or_else(|| UNIX_EPOCH.checked_add(Duration::from_secs(YEAR_9999_END_S.min(ms / 1000))))
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(u64::from(i32::MAX.unsigned_abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A precise clock whose source reads behind what it gave before (a
    /// TSC read below its anchor counts as no time elapsed: engine time
    /// would step back to the anchor) gives the latest reading instead,
    /// and adds nothing to it (a raise per reading behind would run ahead
    /// with cores whose TSCs disagree).
    #[test]
    fn the_precise_clock_never_steps_back() {
        let Kind::Precise(precise) = Clock::precise().0 else {
            panic!("the precise clock reads on every call");
        };
        let now = precise.now_ms();
        // As if it had read an hour further before the source fell back
        // to where it is.
        precise.latest.store(now + 3_600_000, Ordering::Relaxed);
        assert_eq!(precise.now_ms(), now + 3_600_000);
        let clone = precise.clone();
        assert_eq!(clone.now_ms(), now + 3_600_000, "clones share it");
        assert_eq!(precise.raised.load(Ordering::Relaxed), 0, "nothing added");
    }

    /// The ticking clock (the default) advances its anchor with the
    /// operating system's monotonic clock, which NTP keeps at the real
    /// rate: the TSC as calibrated once drifts from the wall clock over a
    /// long run, and a run's times behind it expired sessions early at the
    /// next open. `Clock::precise` reads the TSC.
    #[test]
    fn the_ticking_clock_follows_the_monotonic_clock() {
        let Kind::Ticking { precise, .. } = Clock::system().0 else {
            panic!("the system clock ticks");
        };
        assert!(matches!(precise.elapsed, Elapsed::Monotonic(_)));
        let Kind::Precise(precise) = Clock::precise().0 else {
            panic!("the precise clock reads on every call");
        };
        assert!(matches!(precise.elapsed, Elapsed::Tsc { .. }));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let manual = ManualClock::new(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        manual.advance_ms(u64::MAX);
        assert_eq!(clock.now_ms(), TIME_MS_MAX, "stops at the end of time");
        assert_eq!(ManualClock::new(u64::MAX).now_ms(), TIME_MS_MAX);
        assert!(clock.is_manual());
    }

    #[test]
    fn system_clocks_are_monotonic_and_near_wall_time() {
        for clock in [Clock::system(), Clock::precise()] {
            let a = clock.now_ms();
            let b = clock.now_ms();
            assert!(b >= a);
            let wall = system_time_to_ms(SystemTime::now());
            assert!(wall.abs_diff(a) < 5_000, "wall {wall} engine {a}");
        }
    }

    /// Waits (up to 10 s, for a starved test machine) until `clock` reads
    /// at least `ms`; true if it did.
    fn reaches(clock: &Clock, ms: u64) -> bool {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while clock.now_ms() < ms {
            if std::time::Instant::now() > give_up {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// A raise (the open of a log whose times are ahead of the wall clock)
    /// moves the clock forward, and it goes on ticking from there: a clock
    /// that stood at the raised time until the wall clock caught up froze
    /// every deadline, timer and token refill for as long.
    #[test]
    fn a_raised_clock_goes_on_from_the_raise() {
        for clock in [
            Clock::system(),
            Clock::ticking(Duration::from_millis(5)),
            Clock::precise(),
        ] {
            let floor = clock.now_ms() + 60_000;
            clock.raise_to(floor);
            assert!(clock.now_ms() >= floor, "raised at once");
            assert!(
                reaches(&clock, floor + 20),
                "{clock:?} stood still after the raise"
            );
            let clone = clock.clone();
            clone.raise_to(floor);
            let now = clone.now_ms();
            assert!(
                now >= floor + 20 && now < floor + 10_000,
                "a lower raise changes nothing: {now}"
            );
        }
    }

    #[test]
    fn a_coarser_tick_still_ticks_and_a_zero_tick_is_precise() {
        let clock = Clock::ticking(Duration::from_millis(5));
        assert!(clock.reading().is_some());
        let start = clock.now_ms();
        assert!(reaches(&clock, start + 20), "the clock stood still");
        assert!(Clock::ticking(Duration::ZERO).reading().is_none());
    }

    /// A tick longer than any timeout would hold every deadline back by it
    /// (an hour's tick: a 100 ms session lives an hour).
    #[test]
    fn a_tick_longer_than_the_maximum_ticks_at_the_maximum() {
        let clock = Clock::ticking(Duration::from_secs(3600));
        let start = clock.now_ms();
        // CLOCK_TICK_MAX (1 s) and a little more.
        assert!(reaches(&clock, start + 1_020), "the clock stood still");
    }

    #[test]
    fn the_system_clock_ticks_while_any_clone_lives() {
        let clock = Clock::system();
        let reading = clock.reading().expect("a ticking clock");
        let copy = clock.clone();
        drop(clock);
        let start = copy.now_ms();
        assert!(reaches(&copy, start + 20), "the clock stood still");
        drop(copy);
        assert!(
            reading.upgrade().is_none(),
            "dropping the last clone stops and joins the clock's thread"
        );
    }

    #[test]
    fn the_largest_stored_times_convert_without_panicking() {
        let far = ms_to_system_time(u64::MAX);
        assert!(far > ms_to_system_time(crate::limits::TIME_MS_MAX));
        assert!(far > UNIX_EPOCH + Duration::from_secs(253_402_300_799 - 1));
    }

    #[test]
    fn conversions_round_trip() {
        let t = ms_to_system_time(1_700_000_000_123);
        assert_eq!(system_time_to_ms(t), 1_700_000_000_123);
        assert_eq!(system_time_to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
