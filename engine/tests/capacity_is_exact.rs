//! `sessions_max` is exact: a full engine holds exactly `sessions_max`
//! sessions whatever the shard count, frees room on delete and expiry, and
//! never goes over when many threads create and delete at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use session_engine::{Config, Engine, Error, ManualClock, Timeout};

fn fill(engine: &Engine) -> Vec<session_engine::SessionId> {
    let mut ids = Vec::new();
    loop {
        match engine.create(b"x", Timeout::Never) {
            Ok(id) => ids.push(id),
            Err(Error::CapacityExceeded { .. }) => return ids,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

#[test]
fn every_slot_is_usable_whatever_the_shard_count() {
    // Budgets below, at and far beyond the shard count.
    for (shards, max) in [(1, 1), (8, 7), (8, 150), (8, 512), (64, 1_000), (16, 5_000)] {
        let engine = Engine::open(
            Config::default()
                .shards(shards)
                .sessions_max(max)
                .without_sweeper(),
        )
        .unwrap();
        let ids = fill(&engine);
        assert_eq!(ids.len(), max, "{shards} shards, sessions_max {max}");
        assert_eq!(engine.len(), max);
        // Room freed anywhere is usable by a create landing anywhere.
        let freed = (max / 3).max(1);
        for id in &ids[..freed] {
            engine.delete(id).unwrap();
        }
        assert_eq!(fill(&engine).len(), freed, "{shards} shards, sessions_max {max}");
        assert_eq!(engine.len(), max);
        assert!(matches!(
            engine.create(b"x", Timeout::Never),
            Err(Error::CapacityExceeded { sessions_max }) if sessions_max == max
        ));
    }
}

#[test]
fn expiry_frees_room_for_creates() {
    let clock = ManualClock::new(1_000);
    let engine = Engine::open(
        Config::default()
            .shards(8)
            .sessions_max(300)
            .without_sweeper()
            .clock(clock.clock()),
    )
    .unwrap();
    for _ in 0..200 {
        engine.create(b"x", Timeout::from_ms(10)).unwrap();
    }
    assert_eq!(fill(&engine).len(), 100);
    clock.advance_ms(10);
    // Expired sessions make room when the engine is full, or after a sweep.
    assert_eq!(fill(&engine).len(), 200);
    assert_eq!(engine.len(), 300);
}

#[test]
fn concurrent_creates_never_exceed_the_budget() {
    let max = 3_000;
    let engine = Engine::open(Config::default().shards(8).sessions_max(max).without_sweeper()).unwrap();
    let created = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                // Create until full, deleting now and then so that room
                // frees up in one shard while others create elsewhere.
                let mut mine = Vec::new();
                let (mut successes, mut refusals) = (0u32, 0);
                while refusals < 3 {
                    match engine.create(b"x", Timeout::Never) {
                        Ok(id) => {
                            created.fetch_add(1, Ordering::Relaxed);
                            mine.push(id);
                            successes += 1;
                            if successes.is_multiple_of(7) {
                                engine.delete(&mine.swap_remove(0)).unwrap();
                                created.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        Err(Error::CapacityExceeded { .. }) => refusals += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    // The capacity counter, which bounds what the shards
                    // hold, passes the budget only by the refused creates
                    // under way (one a thread). Not `stats().sessions`: it
                    // sums the shards one after another, so a delete in one
                    // and a create in another between two reads of the sum
                    // can make it exceed what was ever held at once.
                    assert!(engine.len() <= max + 4, "over the budget");
                }
            });
        }
    });
    assert_eq!(engine.stats().sessions, created.load(Ordering::Relaxed));
    assert_eq!(engine.len(), created.load(Ordering::Relaxed));
    assert_eq!(engine.len() + fill(&engine).len(), max);
}

/// A session whose deadline is already behind the engine's clock when it
/// is scheduled (a lifetime cap set into the past) is reclaimed at once:
/// it was filed a tick later, so in the same millisecond `cleanup_expired`
/// found nothing and a full engine refused a create with
/// `CapacityExceeded` while holding a session every read reports gone.
#[test]
fn a_deadline_already_passed_is_reclaimed_in_the_same_millisecond() {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .sessions_max(1)
            .clock(clock.clock())
            .without_sweeper(),
    )
    .unwrap();
    let a = engine.create(b"a", Timeout::Never).unwrap();
    clock.advance_ms(100);
    assert_eq!(engine.cleanup_expired(), 0);
    engine
        .set_lifetime(&a, Timeout::from_ms(50))
        .expect("a cap in the past ends the session");
    assert!(engine.get(&a).is_err(), "reads find it gone");
    assert_eq!(engine.cleanup_expired(), 1, "reclaimed in the same millisecond");
    engine
        .create(b"b", Timeout::Never)
        .expect("room for a new session");
}

/// Puts of one new id racing at one session below `sessions_max`: one
/// inserts it, the others find it and replace it. A put whose reservation
/// met another put's in-flight one was refused with `CapacityExceeded`,
/// though the id existed by the time it returned (the refusal is for new
/// ids only).
#[test]
fn puts_of_one_new_id_racing_at_the_limit_all_succeed() {
    for round in 0..200u32 {
        let engine = Engine::open(Config::default().shards(2).sessions_max(2).without_sweeper()).unwrap();
        engine.create(b"x", Timeout::Never).unwrap();
        let id = session_engine::SessionId::from_bytes([round as u8 | 1; 16]);
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let (engine, barrier) = (&engine, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    engine
                        .put(id, &[t], Timeout::Never)
                        .unwrap_or_else(|e| panic!("round {round}, put {t}: {e}"));
                });
            }
        });
        assert_eq!(engine.len(), 2);
    }
}
