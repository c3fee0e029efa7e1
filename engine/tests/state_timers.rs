//! Session-scoped timers: they fire once through the timer listener, can be
//! cancelled and re-armed, die silently with their session, and are bounded
//! per session. Driven by a manual clock and `cleanup_expired` (the sweep).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_engine::limits::{TIMEOUT_MS_MAX, TIMERS_PER_SESSION_MAX};
use session_engine::{Config, Engine, Error, ManualClock, SessionId, Timeout};

type Fired = Arc<Mutex<Vec<(SessionId, u64)>>>;

fn engine() -> (Engine, ManualClock, Fired) {
    let clock = ManualClock::new(1_000_000);
    let fired: Fired = Arc::default();
    let sink = Arc::clone(&fired);
    let engine = Engine::open(
        Config::default()
            .shards(4)
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |id, token| sink.lock().unwrap().push((*id, token))),
    )
    .unwrap();
    (engine, clock, fired)
}

fn take(fired: &Fired) -> Vec<(SessionId, u64)> {
    let mut v = std::mem::take(&mut *fired.lock().unwrap());
    v.sort();
    v
}

const LONG: Timeout = Timeout::from_secs(3600);

/// Arms `n` timers (tokens 0..n) due `after`, 100 to a session.
fn arm_on_sessions_of_100(engine: &Engine, n: usize, after: Duration) {
    let ids: Vec<SessionId> = (0..n.div_ceil(100))
        .map(|_| engine.create(b"", LONG).unwrap())
        .collect();
    for k in 0..n {
        engine.arm_timer(&ids[k / 100], k as u64, after).unwrap();
    }
}

#[test]
fn timers_fire_once_at_their_deadline() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", LONG).unwrap();
    engine.arm_timer(&a, 1, Duration::from_millis(100)).unwrap();
    engine.arm_timer(&a, 2, Duration::from_millis(300)).unwrap();
    engine.arm_timer(&a, 3, Duration::ZERO).unwrap();
    assert_eq!(engine.state_counts(), (3, 1));
    engine.cleanup_expired();
    assert!(
        take(&fired).is_empty(),
        "a zero delay waits for the next millisecond"
    );
    clock.advance_ms(1);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 3)], "a zero delay fires at the next sweep");
    clock.advance_ms(98);
    engine.cleanup_expired();
    assert!(take(&fired).is_empty(), "fired early");
    clock.advance_ms(1);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 1)]);
    clock.advance_ms(1_000);
    engine.cleanup_expired();
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 2)], "each timer fires once");
    assert_eq!(engine.state_counts(), (0, 0), "fired timers leave no state");
    assert!(!engine.cancel_timer(&a, 1).unwrap(), "a fired timer is gone");
    engine.debug_check_invariants();
}

#[test]
fn cancel_and_rearm() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", LONG).unwrap();
    engine.arm_timer(&a, 7, Duration::from_millis(100)).unwrap();
    assert!(engine.cancel_timer(&a, 7).unwrap());
    assert!(!engine.cancel_timer(&a, 7).unwrap());
    assert!(!engine.cancel_timer(&a, 8).unwrap(), "never armed");
    // Re-arming a token replaces its deadline, later or earlier.
    engine.arm_timer(&a, 9, Duration::from_millis(100)).unwrap();
    engine.arm_timer(&a, 9, Duration::from_millis(500)).unwrap();
    engine.arm_timer(&a, 10, Duration::from_millis(5_000)).unwrap();
    engine.arm_timer(&a, 10, Duration::from_millis(50)).unwrap();
    assert_eq!(engine.state_counts().0, 2);
    clock.advance_ms(100);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 10)]);
    clock.advance_ms(400);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 9)], "re-armed once, fires once");
    clock.advance_ms(10_000);
    engine.cleanup_expired();
    assert!(take(&fired).is_empty());
    engine.debug_check_invariants();
}

#[test]
fn a_handle_cancels_its_timer_once_and_never_another() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", LONG).unwrap();
    // `b` in `a`'s shard, so that its timer takes the slot `a`'s freed.
    let b = loop {
        let b = engine.create(b"", LONG).unwrap();
        if engine.debug_shard_of(&b) == engine.debug_shard_of(&a) {
            break b;
        }
        engine.delete(&b).unwrap();
    };
    let first = engine.arm_timer(&a, 1, Duration::from_millis(100)).unwrap();
    assert_eq!(
        engine.arm_timer(&a, 1, Duration::from_millis(200)).unwrap(),
        first,
        "re-arming keeps the handle"
    );
    let other = engine.arm_timer(&a, 2, Duration::from_millis(100)).unwrap();
    assert!(engine.cancel_timer_handle(first));
    assert!(!engine.cancel_timer_handle(first), "cancelled already");
    assert!(!engine.cancel_timer(&a, 1).unwrap(), "gone for the token too");
    // The freed slot goes to the next timer; the old handle must not reach it.
    let reused = engine.arm_timer(&b, 1, Duration::from_millis(100)).unwrap();
    assert_ne!(reused, first, "the same slot, a new generation");
    assert!(
        !engine.cancel_timer_handle(first),
        "a stale handle cancels nothing"
    );
    clock.advance_ms(100);
    engine.cleanup_expired();
    assert_eq!(take(&fired), {
        let mut want = vec![(a, 2), (b, 1)];
        want.sort();
        want
    });
    assert!(!engine.cancel_timer_handle(other), "fired already");
    assert!(!engine.cancel_timer_handle(reused), "fired already");
    // A timer cancelled by its handle leaves no state behind.
    let c = engine.arm_timer(&a, 3, Duration::from_millis(100)).unwrap();
    assert_eq!(engine.state_counts(), (1, 1));
    assert!(engine.cancel_timer_handle(c));
    assert_eq!(engine.state_counts(), (0, 0));
    // Handles die with their session.
    let d = engine.arm_timer(&b, 4, Duration::from_millis(100)).unwrap();
    engine.delete(&b).unwrap();
    assert!(!engine.cancel_timer_handle(d), "deleted with its session");
    clock.advance_ms(1_000);
    engine.cleanup_expired();
    assert!(take(&fired).is_empty());
    engine.debug_check_invariants();
}

#[test]
fn another_engines_handle_cancels_nothing() {
    // One shard each: both first timers sit in shard 0, slot 0, generation
    // 0, so only the engine's mark in the handle tells them apart.
    let one = || Engine::open(Config::default().shards(1).without_sweeper()).unwrap();
    let (a, b) = (one(), one());
    let (x, y) = (a.create(b"", LONG).unwrap(), b.create(b"", LONG).unwrap());
    let from_a = a.arm_timer(&x, 1, Duration::from_secs(5)).unwrap();
    let from_b = b.arm_timer(&y, 1, Duration::from_secs(5)).unwrap();
    assert!(!a.cancel_timer_handle(from_b), "b's handle cancelled a's timer");
    assert!(!b.cancel_timer_handle(from_a), "a's handle cancelled b's timer");
    assert_eq!((a.state_counts().0, b.state_counts().0), (1, 1));
    assert!(a.cancel_timer_handle(from_a) && b.cancel_timer_handle(from_b));
}

#[test]
fn timers_die_with_their_session_without_a_callback() {
    let (engine, clock, fired) = engine();
    let deleted = engine.create(b"", LONG).unwrap();
    let rotated = engine.create(b"", LONG).unwrap();
    let expiring = engine.create(b"", Timeout::from_ms(50)).unwrap();
    let kept = engine.create(b"", LONG).unwrap();
    for id in [&deleted, &rotated, &expiring, &kept] {
        engine.arm_timer(id, 1, Duration::from_millis(100)).unwrap();
        engine.subscribe(id, "t").unwrap();
    }
    engine.delete(&deleted).unwrap();
    let new = engine.rotate(&rotated).unwrap();
    assert!(
        !engine.cancel_timer(&new, 1).unwrap(),
        "the rotated id has no timers"
    );
    clock.advance_ms(100);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(kept, 1)]);
    assert_eq!(
        engine.state_counts(),
        (0, 1),
        "only `kept` holds state (its topic)"
    );
    engine.debug_check_invariants();
}

#[test]
fn a_timer_due_with_an_expiry_dies_with_the_session() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", Timeout::from_ms(200)).unwrap();
    engine.arm_timer(&a, 1, Duration::from_millis(100)).unwrap();
    // One sweep after both the timer and the session are due: the session
    // goes first, and its timer with it.
    clock.advance_ms(250);
    engine.cleanup_expired();
    assert!(take(&fired).is_empty());
    assert_eq!(engine.state_counts(), (0, 0));
}

#[test]
fn timers_are_bounded_and_checked() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", LONG).unwrap();
    for token in 0..TIMERS_PER_SESSION_MAX as u64 {
        engine.arm_timer(&a, token, Duration::from_millis(10)).unwrap();
    }
    let r = engine.arm_timer(&a, u64::MAX, Duration::from_millis(10));
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    // Re-arming a held token at the limit is fine; after a cancel there is room.
    engine.arm_timer(&a, 0, Duration::from_millis(20)).unwrap();
    assert!(engine.cancel_timer(&a, 1).unwrap());
    engine.arm_timer(&a, u64::MAX, Duration::from_millis(10)).unwrap();
    let too_long = Duration::from_millis(TIMEOUT_MS_MAX + 1);
    // A delay past the limit is a bad argument, named as a timer's: the
    // timeout's error spoke of 1 ms and of `Timeout::Never`, which no
    // timer has.
    let err = engine.arm_timer(&a, 5, too_long).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(err.to_string().contains("timer's delay"), "{err}");
    engine
        .arm_timer(&a, 5, Duration::from_millis(TIMEOUT_MS_MAX))
        .unwrap();
    let missing = SessionId::random().unwrap();
    assert!(matches!(
        engine.arm_timer(&missing, 1, Duration::ZERO),
        Err(Error::NotFound)
    ));
    assert!(matches!(engine.cancel_timer(&missing, 1), Err(Error::NotFound)));
    clock.advance_ms(20);
    engine.cleanup_expired();
    assert_eq!(
        take(&fired).len(),
        TIMERS_PER_SESSION_MAX - 1,
        "all but the far one fired"
    );
    assert_eq!(engine.state_counts(), (1, 1));
    engine.debug_check_invariants();
}

#[test]
fn a_panicking_timer_listener_is_counted_and_the_rest_still_fire() {
    let clock = ManualClock::new(0);
    let count = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&count);
    let engine = Engine::open(
        Config::default()
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |_, token| {
                *seen.lock().unwrap() += 1;
                assert!(token != 1, "listener panics on token 1");
            }),
    )
    .unwrap();
    let a = engine.create(b"", LONG).unwrap();
    for token in 0..3 {
        engine.arm_timer(&a, token, Duration::from_millis(5)).unwrap();
    }
    clock.advance_ms(5);
    engine.cleanup_expired();
    assert_eq!(*count.lock().unwrap(), 3);
    assert_eq!(engine.stats().listener_panics, 1);
}

#[test]
fn many_sessions_timers_across_shards_fire_in_batches() {
    let (engine, clock, fired) = engine();
    let ids: Vec<SessionId> = (0..300).map(|_| engine.create(b"", LONG).unwrap()).collect();
    for (n, id) in ids.iter().enumerate() {
        for token in 0..10u64 {
            engine
                .arm_timer(id, token, Duration::from_millis(1 + (n as u64 * 7 + token) % 97))
                .unwrap();
        }
    }
    assert_eq!(engine.state_counts(), (3_000, 300));
    clock.advance_ms(100);
    engine.cleanup_expired();
    assert_eq!(take(&fired).len(), 3_000);
    assert_eq!(engine.state_counts(), (0, 0));
    engine.debug_check_invariants();
}

#[test]
fn more_due_timers_than_one_batch_all_fire_in_one_sweep() {
    let clock = ManualClock::new(0);
    let fired: Fired = Arc::default();
    let sink = Arc::clone(&fired);
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |id, token| sink.lock().unwrap().push((*id, token))),
    )
    .unwrap();
    let n = 3 * session_engine::limits::TIMER_BATCH_MAX + 7;
    arm_on_sessions_of_100(&engine, n, Duration::from_millis(50));
    clock.advance_ms(50);
    engine.cleanup_expired();
    let got = take(&fired);
    assert_eq!(got.len(), n, "one sweep fires every due timer, batch after batch");
    assert_eq!(engine.state_counts(), (0, 0));
}

/// A create on a full engine reclaims expired sessions on the caller's
/// thread, but fires no timer there: timers fire on the sweeper's thread or
/// in `cleanup_expired` (a listener taking a lock the caller holds would
/// deadlock).
#[test]
fn a_create_on_a_full_engine_fires_no_timer_on_the_callers_thread() {
    let clock = ManualClock::new(1_000_000);
    let fired: Fired = Arc::default();
    let sink = Arc::clone(&fired);
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .sessions_max(1)
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |id, token| sink.lock().unwrap().push((*id, token))),
    )
    .unwrap();
    let a = engine.create(b"", LONG).unwrap();
    engine.arm_timer(&a, 7, Duration::from_millis(5)).unwrap();
    clock.advance_ms(10);
    assert!(matches!(
        engine.create(b"", LONG),
        Err(Error::CapacityExceeded { .. })
    ));
    assert!(take(&fired).is_empty(), "a timer fired inside create");
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 7)]);
}

/// A delay that is not a whole number of milliseconds is rounded up, as
/// timeouts are: a timer never fires before the delay it was given (1.999
/// ms was truncated to 1 ms, and fired after 1).
#[test]
fn a_delay_between_milliseconds_is_rounded_up() {
    let (engine, clock, fired) = engine();
    let a = engine.create(b"", LONG).unwrap();
    engine.arm_timer(&a, 1, Duration::from_micros(1_999)).unwrap();
    clock.advance_ms(1);
    engine.cleanup_expired();
    assert!(take(&fired).is_empty(), "fired 1 ms into a 1.999 ms delay");
    clock.advance_ms(1);
    engine.cleanup_expired();
    assert_eq!(take(&fired), vec![(a, 1)]);
}

/// A sweep pass fires the timers due when it reached their shard, once
/// each: a listener slower than the delay it re-arms its timers with (a
/// heartbeat per session whose work takes longer, over more sessions than
/// one batch) does not keep the pass on that shard, where the other shards
/// would never be swept again. The re-armed timers fire in the next pass.
#[test]
fn timers_rearmed_by_a_slow_listener_fire_once_per_pass() {
    let clock = ManualClock::new(0);
    let handle: Arc<std::sync::OnceLock<Engine>> = Arc::default();
    let fires = Arc::new(Mutex::new(0usize));
    let n = session_engine::limits::TIMER_BATCH_MAX + 1;
    let (me, count, ticking) = (Arc::clone(&handle), Arc::clone(&fires), clock.clone());
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |id, token| {
                let mut fired = count.lock().unwrap();
                *fired += 1;
                // It re-arms, then its work takes 2 ms; it stops re-arming
                // after ten rounds (the old pass looped until then).
                if *fired < 10 * n {
                    me.get()
                        .unwrap()
                        .arm_timer(id, token, Duration::from_millis(1))
                        .unwrap();
                }
                ticking.advance_ms(2);
            }),
    )
    .unwrap();
    let _ = handle.set(engine.clone());
    arm_on_sessions_of_100(&engine, n, Duration::from_millis(1));
    clock.advance_ms(1);
    engine.cleanup_expired();
    assert_eq!(*fires.lock().unwrap(), n, "one pass fires each timer once");
    engine.cleanup_expired();
    assert_eq!(
        *fires.lock().unwrap(),
        2 * n,
        "the re-armed timers fire in the next pass"
    );
}

/// A timer taken for firing whose session ends before its turn in the
/// batch (deleted, or deleted and inserted again under its id) is not
/// delivered. The listener ran a batch's timers after the shard's check
/// of their sessions, so a callback that ended another session of the
/// batch had that session's timer delivered all the same: for a session
/// gone, or to a new session under the id, whose tokens mean something
/// else.
#[test]
fn a_timer_whose_session_ends_while_its_batch_fires_is_not_delivered() {
    for again in [false, true] {
        let clock = ManualClock::new(1_000_000);
        let handle: Arc<std::sync::OnceLock<Engine>> = Arc::default();
        let fired: Fired = Arc::default();
        let (me, sink) = (Arc::clone(&handle), Arc::clone(&fired));
        let (a, b) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
        let engine = Engine::open(
            Config::default()
                .shards(1)
                .clock(clock.clock())
                .without_sweeper()
                .timer_listener(move |id, token| {
                    let first = {
                        let mut fired = sink.lock().unwrap();
                        fired.push((*id, token));
                        fired.len() == 1
                    };
                    // The first callback ends the other session.
                    if first {
                        let engine = me.get().unwrap();
                        let other = if *id == a { b } else { a };
                        engine.delete(&other).unwrap();
                        if again {
                            engine.insert(other, b"another", LONG).unwrap();
                        }
                    }
                }),
        )
        .unwrap();
        let _ = handle.set(engine.clone());
        engine.insert(a, b"", LONG).unwrap();
        engine.insert(b, b"", LONG).unwrap();
        engine.arm_timer(&a, 1, Duration::from_millis(10)).unwrap();
        engine.arm_timer(&b, 2, Duration::from_millis(10)).unwrap();
        clock.advance_ms(10);
        engine.cleanup_expired();
        let fired = take(&fired);
        assert_eq!(fired.len(), 1, "inserted again: {again}; delivered {fired:?}");
        engine.debug_check_invariants();
    }
}
