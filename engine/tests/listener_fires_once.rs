//! The removal listener hears every removal exactly once, with its cause,
//! and runs outside the shard lock (it may call back into the engine).

use std::sync::{Arc, Mutex, OnceLock};

use session_engine::{Config, Engine, ManualClock, RemovalCause, SessionId, Timeout};

#[test]
fn each_removal_is_reported_once_with_its_cause() {
    let clock = ManualClock::new(0);
    let events: Arc<Mutex<Vec<(SessionId, RemovalCause)>>> = Arc::default();
    let sink = Arc::clone(&events);
    let engine = Engine::open(
        Config::default()
            .without_sweeper()
            .clock(clock.clock())
            .listener(move |s, cause| sink.lock().unwrap().push((s.id(), cause))),
    )
    .unwrap();
    let deleted = engine.create(b"d", Timeout::from_ms(10)).unwrap();
    let expired: Vec<SessionId> = (0..3000)
        .map(|_| engine.create(b"e", Timeout::from_ms(10)).unwrap())
        .collect();
    let kept = engine.create(b"k", Timeout::Never).unwrap();

    engine.delete(&deleted).unwrap();
    assert!(
        engine.delete(&deleted).is_err(),
        "second delete is NotFound and silent"
    );
    clock.advance_ms(10);
    assert_eq!(engine.cleanup_expired(), 3000);
    assert_eq!(engine.cleanup_expired(), 0, "nothing is reported twice");

    let events = events.lock().unwrap();
    assert_eq!(events.len(), 3001);
    assert_eq!(events[0], (deleted, RemovalCause::Deleted));
    let mut got: Vec<SessionId> = events[1..]
        .iter()
        .map(|&(id, cause)| {
            assert_eq!(cause, RemovalCause::Expired);
            id
        })
        .collect();
    got.sort();
    let mut want = expired;
    want.sort();
    assert_eq!(got, want);
    assert!(!events.iter().any(|e| e.0 == kept));
}

#[test]
fn listener_may_call_the_engine_and_panics_are_contained() {
    let clock = ManualClock::new(0);
    let engine_slot: Arc<OnceLock<session_engine::WeakEngine>> = Arc::default();
    let seen = Arc::clone(&engine_slot);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock()).listener(
        move |s, _| {
            // Re-entering the engine would deadlock if the shard lock were held.
            let engine = seen.get().unwrap().upgrade().unwrap();
            assert!(!engine.contains(&s.id()));
            engine.create(b"replacement", Timeout::Never).unwrap();
            panic!("listener bug");
        },
    ))
    .unwrap();
    engine_slot.set(engine.downgrade()).ok().unwrap();
    let id = engine.create(b"x", Timeout::from_ms(1)).unwrap();
    clock.advance_ms(1);
    assert_eq!(engine.cleanup_expired(), 1);
    assert_eq!(engine.len(), 1, "the replacement the listener created");
    assert_eq!(engine.stats().listener_panics, 1);
    assert!(engine.get(&id).is_err());
}

/// A listener that calls back into the engine holds a `WeakEngine`
/// (`Engine::downgrade`): when the caller's last handle drops, the engine
/// shuts down (threads stopped, logs flushed, the directory's lock let
/// go) and the listener's upgrade finds nothing. A captured `Engine`
/// kept the engine alive for good: the directory stayed locked.
#[test]
fn a_listener_holding_a_weak_handle_lets_the_engine_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let slot: Arc<OnceLock<session_engine::WeakEngine>> = Arc::default();
    let seen = Arc::clone(&slot);
    let called_back = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&called_back);
    let config = Config::default()
        .without_sweeper()
        .clock(clock.clock())
        .data_dir(dir.path())
        .listener(move |s, _| {
            if let Some(engine) = seen.get().and_then(session_engine::WeakEngine::upgrade) {
                assert!(!engine.contains(&s.id()));
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    let engine = Engine::open(config.clone()).unwrap();
    slot.set(engine.downgrade()).ok().unwrap();
    engine.create(b"x", Timeout::from_ms(1)).unwrap();
    clock.advance_ms(1);
    assert_eq!(engine.cleanup_expired(), 1);
    assert_eq!(
        called_back.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the listener reached the engine"
    );
    drop(engine);
    assert!(
        slot.get().unwrap().upgrade().is_none(),
        "the engine outlived its last handle"
    );
    Engine::open(config).expect("the directory's lock was let go");
}
