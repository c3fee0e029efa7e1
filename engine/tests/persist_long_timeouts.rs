//! Timeouts up to the longest the engine accepts survive a restart: the
//! log's access time is kept within `touch_persist_fraction` of the real one
//! with arithmetic at full width, so no lag wraps (before, lags were compared
//! on the low 32 bits of the time, and a live session with a timeout of 45
//! days or more could be dropped at the next open).

use session_engine::limits::{TIMEOUT_MS_MAX, TIME_MS_MAX};
use session_engine::{Config, Durability, Engine, ManualClock, SessionId, Timeout};

fn config(dir: &std::path::Path, clock: &ManualClock) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Never)
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(1024)
        .without_sweeper()
        .clock(clock.clock())
}

/// Reads spaced so that the lag between the log and memory passes 2^32 ms
/// while the session stays live, then a restart at the last read's time.
fn survives_a_restart(start_ms: u64, timeout_ms: u64, fraction: f64) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_ms);
    let id = SessionId::from_bytes([7; 16]);
    {
        let engine = Engine::open(config(dir.path(), &clock).touch_persist_fraction(fraction)).unwrap();
        engine
            .insert(id, b"remember me", Timeout::from_ms(timeout_ms))
            .unwrap();
        // A read just inside the first period logs nothing...
        clock.advance_ms((timeout_ms as f64 * fraction * 0.9) as u64);
        engine.get(&id).unwrap();
        // ...and one almost a whole timeout later must log its time.
        clock.advance_ms(timeout_ms - 1);
        let session = engine.get(&id).unwrap();
        assert_eq!(session.last_access_ms(), clock.now_ms());
        engine.close().unwrap();
    }
    let engine = Engine::open(config(dir.path(), &clock)).unwrap();
    let session = engine
        .peek(&id)
        .unwrap_or_else(|e| panic!("start {start_ms} timeout {timeout_ms}: lost at restart: {e}"));
    let lag = clock.now_ms() - session.last_access_ms();
    assert!(
        lag as f64 <= timeout_ms as f64 * fraction,
        "the log's access time lags by {lag} ms"
    );
}

#[test]
fn the_longest_timeout_survives_a_restart() {
    survives_a_restart(1_700_000_000_000, TIMEOUT_MS_MAX, 0.1);
    // 45 days, the shortest timeout the 32-bit lag used to lose at 0.1.
    survives_a_restart(1_700_000_000_000, 45 * 24 * 3600 * 1000, 0.1);
    survives_a_restart(1_700_000_000_000, TIMEOUT_MS_MAX, 1.0);
    survives_a_restart(1_700_000_000_000, TIMEOUT_MS_MAX, 0.01);
}

#[test]
fn long_timeouts_survive_near_the_end_of_time() {
    let start = TIME_MS_MAX - 3 * TIMEOUT_MS_MAX;
    survives_a_restart(start, TIMEOUT_MS_MAX, 0.1);
    // A session whose deadline lies past the end of time never expires by it.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(TIME_MS_MAX - 10);
    let id = SessionId::from_bytes([9; 16]);
    let engine = Engine::open(config(dir.path(), &clock)).unwrap();
    engine.insert(id, b"x", Timeout::from_ms(TIMEOUT_MS_MAX)).unwrap();
    clock.advance_ms(1_000);
    assert_eq!(clock.now_ms(), TIME_MS_MAX);
    engine.get(&id).unwrap();
    engine.close().unwrap();
    let engine = Engine::open(config(dir.path(), &clock)).unwrap();
    // Kept, its access time within a touch period of the last read's.
    let last = engine.peek(&id).unwrap().last_access_ms();
    assert!(
        TIME_MS_MAX - last <= TIMEOUT_MS_MAX / 10,
        "lags by {}",
        TIME_MS_MAX - last
    );
}

/// A year-long "remember me" is accepted, expires exactly a year after the
/// last activity, and keeps that deadline across a restart; a timeout past
/// the exact range is kept in whole seconds, rounded up.
#[test]
fn a_year_long_timeout_expires_on_time_across_a_restart() {
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let year = SessionId::from_bytes([1; 16]);
    let odd = SessionId::from_bytes([2; 16]);
    {
        let engine = Engine::open(config(dir.path(), &clock)).unwrap();
        engine.insert(year, b"year", Timeout::from_ms(YEAR_MS)).unwrap();
        // 30 days and 1 ms: kept as 30 days and 1 s.
        engine
            .insert(odd, b"odd", Timeout::from_ms(30 * 24 * 3600 * 1000 + 1))
            .unwrap();
        assert_eq!(engine.peek(&year).unwrap().timeout(), Timeout::from_ms(YEAR_MS));
        assert_eq!(
            engine.peek(&odd).unwrap().timeout(),
            Timeout::from_ms(30 * 24 * 3600 * 1000 + 1000)
        );
        engine.close().unwrap();
    }
    clock.advance_ms(YEAR_MS - 1);
    let engine = Engine::open(config(dir.path(), &clock)).unwrap();
    let session = engine.peek(&year).expect("one ms before its deadline");
    assert_eq!(session.expires_at_ms(), Some(clock.now_ms() + 1));
    assert!(engine.peek(&odd).is_err(), "a 30-day session is long gone");
    clock.advance_ms(1);
    assert!(engine.peek(&year).is_err(), "expired at its deadline");
    assert_eq!(engine.cleanup_expired(), 1);
}
