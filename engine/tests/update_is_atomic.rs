//! `update` is an atomic read-modify-write: concurrent increments are never
//! lost, and a panicking closure leaves the session and shard as they were.

use std::sync::Arc;

use session_engine::{Config, Engine, Timeout};

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
