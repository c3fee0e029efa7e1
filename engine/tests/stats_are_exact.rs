//! The statistics are exact after a scripted sequence on a manual clock:
//! counts, the sweeps and what each expired, the mean age and the metadata
//! bytes, through create, a growing update, delete, `put` (new and
//! overwrite), rotate and expiry; and after a restart the recovered
//! sessions' figures are the same (the counters of events start again).

use std::path::Path;

use session_engine::{Config, Durability, Engine, ManualClock, SessionId, Stats, Timeout};

const T0: u64 = 1_700_000_000_000;
/// The block header (`Stats::memory_bytes`).
const HEADER_BYTES: u64 = 48;
/// A table slot and a wheel link.
const SLOT_BYTES: u64 = 16;

fn config(clock: &ManualClock) -> Config {
    Config::default().shards(4).clock(clock.clock()).without_sweeper()
}

/// Checks the figures a script's state determines, beside the memory
/// estimate's shape (its table part depends on the tables' sizes).
fn check(stats: &Stats, sessions: usize, metadata_bytes: u64, average_age_ms: u64) {
    assert_eq!(stats.sessions, sessions, "{stats:?}");
    assert_eq!(stats.sessions_per_shard.iter().sum::<usize>(), sessions);
    assert_eq!(stats.metadata_bytes, metadata_bytes, "{stats:?}");
    assert_eq!(stats.average_age_ms, average_age_ms, "{stats:?}");
    let tables = stats.memory_bytes - sessions as u64 * HEADER_BYTES - metadata_bytes;
    assert!(
        tables.is_multiple_of(SLOT_BYTES) && tables >= 4 * 8 * SLOT_BYTES,
        "memory_bytes {}: {tables} bytes of tables is not whole slots of 4 shards",
        stats.memory_bytes
    );
}

/// The script; returns the ids left (`d`, a never-expiring put).
fn script(engine: &Engine, clock: &ManualClock) -> SessionId {
    let a = engine.create(&[1; 10], Timeout::from_ms(1_000)).unwrap();
    let b = engine.create(&[2; 20], Timeout::Never).unwrap();
    check(&engine.stats(), 2, 30, 0);
    clock.advance_ms(100);
    check(&engine.stats(), 2, 30, 100);
    let c = engine.create(&[3; 5], Timeout::from_ms(500)).unwrap();
    // Ages 100, 100, 0: 200 / 3, rounded down.
    check(&engine.stats(), 3, 35, 66);
    engine.update(&a, |_| vec![1; 30]).unwrap();
    check(&engine.stats(), 3, 55, 66);
    clock.advance_ms(100);
    engine.delete(&b).unwrap();
    // a (created T0) and c (T0 + 100), at T0 + 200.
    check(&engine.stats(), 2, 35, 150);
    let d = SessionId::from_bytes([7; 16]);
    engine.put(d, &[4; 7], Timeout::Never).unwrap();
    // An overwrite keeps the creation time; only the bytes move.
    engine.put(c, &[3; 9], Timeout::from_ms(500)).unwrap();
    let a = engine.rotate(&a).unwrap();
    // a' (T0), c (T0 + 100), d (T0 + 200): ages 200, 100, 0.
    check(&engine.stats(), 3, 46, 100);
    // Reads change nothing.
    for id in [a, c, d] {
        engine.get(&id).unwrap();
        engine.peek(&id).unwrap();
        engine.touch(&id).unwrap();
        assert!(engine.contains(&id));
    }
    check(&engine.stats(), 3, 46, 100);
    let s = engine.stats();
    assert_eq!(
        (s.created_total, s.deleted_total, s.expired_total, s.sweeps_total),
        (4, 1, 0, 0)
    );
    // a' and c were last active at T0 + 200: due by T0 + 1_200 and T0 + 700.
    clock.advance_ms(1_100);
    assert_eq!(engine.cleanup_expired(), 2);
    let s = engine.stats();
    check(&s, 1, 7, 1_100);
    assert_eq!((s.expired_total, s.sweeps_total, s.expired_last_sweep), (2, 1, 2));
    assert_eq!(engine.cleanup_expired(), 0);
    let s = engine.stats();
    assert_eq!((s.expired_total, s.sweeps_total, s.expired_last_sweep), (2, 2, 0));
    engine.debug_check_invariants();
    d
}

#[test]
fn figures_follow_a_scripted_sequence_in_memory() {
    let clock = ManualClock::new(T0);
    let engine = Engine::open(config(&clock)).unwrap();
    let d = script(&engine, &clock);
    engine.delete(&d).unwrap();
    let s = engine.stats();
    check(&s, 0, 0, 0);
    assert_eq!(s.memory_bytes % SLOT_BYTES, 0, "only the tables are left");
}

#[test]
fn an_expired_session_replaced_by_a_create_leaves_its_figures() {
    let clock = ManualClock::new(T0);
    let engine = Engine::open(config(&clock)).unwrap();
    let id = SessionId::from_bytes([9; 16]);
    engine.insert(id, &[0; 50], Timeout::from_ms(10)).unwrap();
    clock.advance_ms(20);
    // Not swept: the insert finds it expired and takes its place.
    engine.insert(id, &[0; 5], Timeout::Never).unwrap();
    let s = engine.stats();
    check(&s, 1, 5, 0);
    assert_eq!((s.expired_total, s.sweeps_total), (1, 0));
    engine.debug_check_invariants();
}

fn persistent(dir: &Path, clock: &ManualClock) -> Engine {
    Engine::open(config(clock).data_dir(dir).durability(Durability::Always)).unwrap()
}

#[test]
fn recovered_sessions_have_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = persistent(dir.path(), &clock);
    let d = script(&engine, &clock);
    // A second session survives beside d: one created later, never expiring.
    clock.advance_ms(300);
    let e = engine.create(&[5; 100], Timeout::Never).unwrap();
    // d is 1_400 ms old, e 0.
    let before = engine.stats();
    check(&before, 2, 107, 700);
    engine.close().unwrap();

    clock.advance_ms(1_000);
    let engine = persistent(dir.path(), &clock);
    let after = engine.stats();
    check(&after, 2, 107, 1_700);
    assert_eq!(
        (
            after.created_total,
            after.expired_total,
            after.sweeps_total,
            after.expired_last_sweep
        ),
        (0, 0, 0, 0),
        "counters of events count from this open"
    );
    assert_eq!(engine.peek(&d).unwrap().created_ms(), T0 + 200);
    assert_eq!(engine.peek(&e).unwrap().created_ms(), T0 + 1_600);
    engine.debug_check_invariants();
}
