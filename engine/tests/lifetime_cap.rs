//! A lifetime cap ends a session at creation + cap however active it is
//! (`Config::max_lifetime` for every new session, `set_lifetime` per
//! session), through every write that rebuilds it, and across restarts and
//! compactions.

use std::sync::{Arc, Mutex};

use session_engine::{
    CompactionStep, Config, Durability, Engine, ManualClock, RemovalCause, SessionId, Timeout,
};

const T0: u64 = 1_700_000_000_000;

fn memory(clock: &ManualClock) -> Config {
    Config::default().shards(2).without_sweeper().clock(clock.clock())
}

#[test]
fn activity_never_carries_a_session_past_its_cap() {
    let clock = ManualClock::new(T0);
    let removed = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&removed);
    let engine = Engine::open(
        memory(&clock)
            .max_lifetime(Timeout::from_ms(1_000))
            .listener(move |s: &session_engine::Session, cause| heard.lock().unwrap().push((s.id(), cause))),
    )
    .unwrap();
    let id = engine.create(b"capped", Timeout::from_ms(600)).unwrap();
    let s = engine.peek(&id).unwrap();
    assert_eq!(s.lifetime(), Timeout::from_ms(1_000));
    assert_eq!(s.expires_at_ms(), Some(T0 + 600));
    for _ in 0..2 {
        clock.advance_ms(400);
        engine.get(&id).expect("alive: active and within its cap");
    }
    // Last activity at T0 + 800: idle until 1,400, capped at 1,000.
    assert_eq!(engine.peek(&id).unwrap().expires_at_ms(), Some(T0 + 1_000));
    clock.advance_ms(199);
    engine.update(&id, |_| b"still".to_vec()).unwrap();
    assert_eq!(
        engine.peek(&id).unwrap().lifetime(),
        Timeout::from_ms(1_000),
        "update keeps the cap"
    );
    clock.advance_ms(1);
    assert!(engine.get(&id).unwrap_err().is_not_found(), "the cap ends it");
    assert!(engine.touch(&id).unwrap_err().is_not_found());
    assert_eq!(engine.cleanup_expired(), 1);
    assert_eq!(*removed.lock().unwrap(), [(id, RemovalCause::Expired)]);
    engine.debug_check_invariants();
}

#[test]
fn set_lifetime_caps_lifts_and_survives_every_rebuild() {
    let clock = ManualClock::new(T0);
    let engine = Engine::open(memory(&clock)).unwrap();
    let id = engine.create(b"x", Timeout::Never).unwrap();
    assert_eq!(engine.peek(&id).unwrap().expires_at_ms(), None);
    engine.set_lifetime(&id, Timeout::from_ms(5_000)).unwrap();
    assert_eq!(engine.peek(&id).unwrap().expires_at_ms(), Some(T0 + 5_000));
    // put (replace), set_ttl, rotate and try_update keep it.
    engine.put(id, b"y", Timeout::from_secs(3_600)).unwrap();
    engine.set_ttl(&id, Timeout::from_secs(7_200)).unwrap();
    let id = engine.rotate(&id).unwrap();
    engine
        .try_update(&id, |_| Ok::<_, ()>(session_engine::Op::Replace(b"z".to_vec())))
        .unwrap()
        .unwrap();
    let s = engine.peek(&id).unwrap();
    assert_eq!(
        (s.lifetime(), s.expires_at_ms()),
        (Timeout::from_ms(5_000), Some(T0 + 5_000))
    );
    // A cap already past ends the session; lifting it keeps one alive.
    let other = engine.create(b"o", Timeout::Never).unwrap();
    clock.advance_ms(3_000);
    engine.set_lifetime(&other, Timeout::from_ms(2_000)).unwrap();
    assert!(engine.get(&other).is_err(), "past its new cap: ended at once");
    engine.set_lifetime(&id, Timeout::Never).unwrap();
    clock.advance_ms(10_000);
    assert!(engine.get(&id).is_ok(), "uncapped");
    assert!(
        engine.set_lifetime(&id, Timeout::from_ms(0)).is_err(),
        "zero is invalid"
    );
    let bad = Engine::open(memory(&clock).max_lifetime(Timeout::from_ms(0))).expect_err("refused");
    assert!(bad.to_string().contains("max_lifetime"), "{bad}");
    engine.debug_check_invariants();
}

#[test]
fn the_cap_is_recovered_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = || {
        Config::default()
            .shards(1)
            .data_dir(dir.path())
            .durability(Durability::Never)
            .without_sweeper()
            .clock(clock.clock())
    };
    let (capped, later, uncapped) = {
        let engine = Engine::open(config().max_lifetime(Timeout::from_secs(60))).unwrap();
        let capped = engine.create(b"capped", Timeout::from_secs(3_600)).unwrap();
        let later = engine.create(b"set later", Timeout::from_secs(3_600)).unwrap();
        engine.set_lifetime(&later, Timeout::from_secs(30)).unwrap();
        let uncapped = SessionId::from_bytes([4; 16]);
        engine
            .insert(uncapped, b"lifted", Timeout::from_secs(3_600))
            .unwrap();
        engine.set_lifetime(&uncapped, Timeout::Never).unwrap();
        engine.debug_compact(0, CompactionStep::Done).unwrap();
        engine.close().unwrap();
        (capped, later, uncapped)
    };
    let engine = Engine::open(config()).unwrap();
    assert_eq!(engine.peek(&capped).unwrap().lifetime(), Timeout::from_secs(60));
    assert_eq!(engine.peek(&later).unwrap().lifetime(), Timeout::from_secs(30));
    assert_eq!(engine.peek(&uncapped).unwrap().lifetime(), Timeout::Never);
    engine.close().unwrap();
    clock.advance_ms(45_000);
    let engine = Engine::open(config()).unwrap();
    assert!(engine.peek(&later).is_err(), "past its 30 s cap while closed");
    assert!(engine.peek(&capped).is_ok());
    drop(engine);
    clock.advance_ms(20_000);
    let engine = Engine::open(config()).unwrap();
    assert!(engine.peek(&capped).is_err(), "past its 60 s cap");
    assert!(engine.peek(&uncapped).is_ok());
}
