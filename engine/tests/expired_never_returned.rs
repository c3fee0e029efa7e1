//! An expired session is never returned, updated or touched, even before any
//! sweep reclaims it.

use session_engine::{Config, Engine, ManualClock, Timeout};

#[test]
fn expired_session_is_invisible_before_the_sweep() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let id = engine.create(b"secret", Timeout::from_ms(100)).unwrap();

    clock.advance_ms(99);
    assert!(engine.peek(&id).is_ok(), "alive 1 ms before its deadline");
    clock.advance_ms(1);

    assert!(engine.get(&id).unwrap_err().is_not_found());
    assert!(engine.peek(&id).unwrap_err().is_not_found());
    assert!(engine.touch(&id).unwrap_err().is_not_found());
    assert!(engine
        .update(&id, |_| b"revived".to_vec())
        .unwrap_err()
        .is_not_found());
    assert!(engine.set_ttl(&id, Timeout::Never).unwrap_err().is_not_found());
    assert!(engine.delete(&id).unwrap_err().is_not_found());
    assert!(!engine.contains(&id));
    assert!(engine.list_all().is_empty());
    // Still held until reclaimed, then gone.
    assert_eq!(engine.len(), 1);
    assert_eq!(engine.cleanup_expired(), 1);
    assert_eq!(engine.len(), 0);
}

#[test]
fn activity_slides_the_deadline_but_peek_does_not() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let slid = engine.create(b"a", Timeout::from_ms(100)).unwrap();
    let peeked = engine.create(b"b", Timeout::from_ms(100)).unwrap();
    for _ in 0..10 {
        clock.advance_ms(60);
        engine.get(&slid).unwrap();
        let _ = engine.peek(&peeked);
    }
    assert!(engine.get(&slid).is_ok());
    assert!(engine.get(&peeked).is_err());
    assert_eq!(engine.cleanup_expired(), 1);
    assert_eq!(
        engine.peek(&slid).unwrap().expires_at_ms(),
        Some(1_000_000 + 600 + 100)
    );
}

#[test]
fn never_expiring_sessions_survive_any_time() {
    let clock = ManualClock::new(0);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let id = engine.create(b"", Timeout::Never).unwrap();
    let short = engine.create(b"", Timeout::from_ms(10)).unwrap();
    engine.set_ttl(&short, Timeout::Never).unwrap();
    clock.advance_ms(10 * 365 * 24 * 3600 * 1000);
    assert_eq!(engine.cleanup_expired(), 0);
    assert!(engine.get(&id).is_ok());
    assert!(engine.get(&short).is_ok());
    assert_eq!(engine.stats().wheel_entries, 0);
}

#[test]
fn shortening_a_timeout_expires_on_the_new_deadline() {
    let clock = ManualClock::new(0);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let id = engine.create(b"", Timeout::from_secs(3600)).unwrap();
    engine.set_ttl(&id, Timeout::from_ms(50)).unwrap();
    clock.advance_ms(49);
    assert_eq!(engine.cleanup_expired(), 0);
    clock.advance_ms(1);
    assert_eq!(engine.cleanup_expired(), 1);
}
