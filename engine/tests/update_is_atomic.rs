//! `update` is an atomic read-modify-write: concurrent increments are never
//! lost, and a panicking closure leaves the session and shard as they were.

use std::sync::Arc;

use session_engine::{Config, Engine, SessionId, Timeout};

fn counter(meta: &[u8]) -> u64 {
    u64::from_le_bytes(meta.try_into().unwrap())
}

#[test]
fn concurrent_updates_are_never_lost() {
    let engine = Arc::new(Engine::open(Config::default().shards(2)).unwrap());
    let hot = engine.create(&0u64.to_le_bytes(), Timeout::Never).unwrap();
    let cold: Vec<_> = (0..64)
        .map(|_| engine.create(&0u64.to_le_bytes(), Timeout::Never).unwrap())
        .collect();
    let threads = 4;
    let per_thread = 5_000;
    std::thread::scope(|s| {
        for t in 0..threads {
            let engine = &engine;
            let cold = &cold;
            s.spawn(move || {
                for i in 0..per_thread {
                    engine
                        .update(&hot, |m| (counter(m) + 1).to_le_bytes().to_vec())
                        .unwrap();
                    let id = &cold[(i * 7 + t) % cold.len()];
                    engine
                        .update(id, |m| (counter(m) + 1).to_le_bytes().to_vec())
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        counter(engine.get(&hot).unwrap().metadata()),
        (threads * per_thread) as u64
    );
    let total: u64 = cold
        .iter()
        .map(|id| counter(engine.get(id).unwrap().metadata()))
        .sum();
    assert_eq!(total, (threads * per_thread) as u64);
}

#[test]
fn a_panicking_closure_changes_nothing() {
    let engine = Engine::open(Config::default().shards(1)).unwrap();
    let id = engine.create(b"before", Timeout::Never).unwrap();
    let before = engine.peek(&id).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.update(&id, |_| panic!("bug in caller")).unwrap();
    }));
    assert!(result.is_err());
    assert_eq!(engine.peek(&id).unwrap(), before);
    // The shard is usable: every operation still works on it.
    engine.update(&id, |m| [m, b"+after"].concat()).unwrap();
    assert_eq!(engine.get(&id).unwrap().metadata(), b"before+after");
    engine.create(b"other", Timeout::Never).unwrap();
    assert_eq!(engine.len(), 2);
}

/// `try_update`'s decisions are as atomic as `update`'s: a budget that
/// refuses at zero hands out exactly what it held, however many threads
/// race for it (the pattern of a per-session rate limit).
#[test]
fn a_budget_spent_by_racing_try_updates_is_never_overspent() {
    use session_engine::{Op, Updated};
    let engine = Engine::open(Config::default().shards(2)).unwrap();
    let budget = engine.create(&10_000u64.to_le_bytes(), Timeout::Never).unwrap();
    let spent = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5_000 {
                    let r = engine
                        .try_update(&budget, |m| match counter(m) {
                            0 => Err("empty"),
                            n => Ok(Op::Replace((n - 1).to_le_bytes().to_vec())),
                        })
                        .unwrap();
                    if let Ok(Updated::Replaced(_)) = r {
                        spent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(spent.into_inner(), 10_000);
    assert_eq!(counter(engine.get(&budget).unwrap().metadata()), 0);
}

/// `try_update` on a session holding `v1`, whose closure decides `Delete`
/// (or `Keep`) on `v1` after another writer has replaced it with `v2`, and
/// keeps `v2`: what the closure saw, in order, and the outcome.
fn decided_on_a_replaced_value(delete: bool) -> (Engine, SessionId, Vec<Vec<u8>>, session_engine::Updated) {
    use session_engine::Op;
    let engine = Engine::open(Config::default().shards(1)).unwrap();
    let id = engine.create(b"v1", Timeout::Never).unwrap();
    let mut seen = Vec::new();
    let outcome = std::thread::scope(|s| {
        engine
            .try_update(&id, |m| {
                seen.push(m.to_vec());
                if m == b"v1" {
                    // Another writer changes the session meanwhile.
                    s.spawn(|| engine.update(&id, |_| b"v2".to_vec()).unwrap())
                        .join()
                        .unwrap();
                    Ok::<_, ()>(if delete { Op::Delete } else { Op::Keep })
                } else {
                    Ok(Op::Keep)
                }
            })
            .unwrap()
            .unwrap()
    });
    (engine, id, seen, outcome)
}

/// A delete decided on a value that changed before it committed is not
/// applied: the closure runs again on the newer value (which it keeps).
#[test]
fn try_update_deletes_only_the_value_it_saw() {
    let (engine, id, seen, outcome) = decided_on_a_replaced_value(true);
    assert_eq!(seen, [b"v1".to_vec(), b"v2".to_vec()]);
    let session_engine::Updated::Kept(kept) = outcome else {
        panic!("expected Kept, got {outcome:?}")
    };
    assert_eq!(kept.metadata(), b"v2");
    assert_eq!(engine.get(&id).unwrap().metadata(), b"v2", "not deleted");
}

/// A keep decided on a value that changed before it committed is not
/// applied to the newer one: the closure runs again on it, and the session
/// returned is the one it kept (the keep slid whatever the id then held
/// and returned the bytes the closure had seen, gone by then).
#[test]
fn try_update_keeps_only_the_value_it_saw() {
    let (_engine, _id, seen, outcome) = decided_on_a_replaced_value(false);
    assert_eq!(seen, [b"v1".to_vec(), b"v2".to_vec()], "decided again on v2");
    let session_engine::Updated::Kept(kept) = outcome else {
        panic!("expected Kept, got {outcome:?}")
    };
    assert_eq!(kept.metadata(), b"v2", "the session kept is the one there");
}

/// A rotation racing updates of the same session loses none of them: each
/// update lands either before the move (and moves with it) or fails with
/// `NotFound` (the old id is gone), and the moved session holds every
/// update that succeeded.
#[test]
fn rotation_racing_updates_loses_no_acknowledged_update() {
    use std::sync::atomic::Ordering::Relaxed;
    let engine = Engine::open(Config::default().shards(2)).unwrap();
    let id = engine.create(&0u64.to_le_bytes(), Timeout::Never).unwrap();
    let applied = std::sync::atomic::AtomicU64::new(0);
    let new = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                match engine.update(&id, |m| (counter(m) + 1).to_le_bytes().to_vec()) {
                    Ok(_) => {
                        applied.fetch_add(1, Relaxed);
                    }
                    // The only way out: the id moved.
                    Err(e) => {
                        assert!(e.is_not_found(), "{e}");
                        return;
                    }
                }
            });
        }
        // The updates are under way before the move (a late thread would
        // leave nothing to race).
        while applied.load(Relaxed) < 1_000 {
            std::hint::spin_loop();
        }
        engine.rotate(&id).unwrap()
    });
    assert!(engine.get(&id).unwrap_err().is_not_found());
    let applied = applied.into_inner();
    assert!(applied >= 1_000);
    assert_eq!(counter(engine.get(&new).unwrap().metadata()), applied);
    engine.debug_check_invariants();
}

/// A keep decided on a value another writer replaced meanwhile does not
/// slide the newer value: the closure decides again, and when it then
/// fails, "nothing changes, nothing slides" holds. The keep slid whatever
/// the id held by then, and the failure left that slide behind.
#[test]
fn a_keep_decided_on_a_replaced_value_slides_nothing_when_the_retry_fails() {
    use session_engine::{ManualClock, Op};
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().shards(1).clock(clock.clock())).unwrap();
    let id = engine.create(b"v1", Timeout::from_secs(60)).unwrap();
    let outcome = std::thread::scope(|s| {
        engine
            .try_update(&id, |m| {
                if m == b"v1" {
                    // Another writer replaces it (its activity stamped now),
                    // then time moves on before the keep lands.
                    s.spawn(|| engine.update(&id, |_| b"v2".to_vec()).unwrap())
                        .join()
                        .unwrap();
                    clock.advance_ms(5_000);
                    Ok(Op::Keep)
                } else {
                    Err("refused on v2")
                }
            })
            .unwrap()
    });
    assert_eq!(outcome.unwrap_err(), "refused on v2");
    let session = engine.peek(&id).unwrap();
    assert_eq!(session.metadata(), b"v2");
    assert_eq!(
        session.last_access_ms(),
        1_000_000,
        "the failed try_update slid the session"
    );
}
