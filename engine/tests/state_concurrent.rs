//! Per-session state under concurrent removal: threads subscribe, charge
//! buckets and arm timers on sessions that other threads delete, rotate,
//! `put` over and let expire meanwhile. Afterwards no state outlives its
//! session: the index holds exactly the live sessions' topics (the
//! engine's invariant check compares both sides), and the timers left are
//! the live sessions' own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_engine::{Bucket, Config, Engine, Error, ManualClock, SessionId, Timeout, TopicCursor};

#[test]
fn state_never_outlives_its_session_under_concurrent_removal() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().shards(2).clock(clock.clock()).without_sweeper()).unwrap();
    let pool: Arc<Mutex<Vec<SessionId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let bucket = Bucket {
        capacity: 5,
        refill_per_sec: 5,
    };
    std::thread::scope(|s| {
        // Creators and state writers.
        for t in 0..2u64 {
            let (engine, pool, stop) = (&engine, Arc::clone(&pool), Arc::clone(&stop));
            s.spawn(move || {
                for n in 0..4_000u64 {
                    let timeout = if n % 7 == 0 {
                        Timeout::from_ms(5)
                    } else {
                        Timeout::from_secs(60)
                    };
                    let id = engine.create(b"", timeout).unwrap();
                    pool.lock().unwrap().push(id);
                    let picks: Vec<SessionId> = {
                        let p = pool.lock().unwrap();
                        p.iter().rev().take(4).copied().collect()
                    };
                    for id in picks {
                        let topic = ["x", "y", "z"][((n + t) % 3) as usize];
                        for r in [
                            engine.subscribe(&id, topic).map(|_| ()),
                            engine.rate_limit(&id, bucket, 1).map(|_| ()),
                            engine
                                .arm_timer(&id, n % 5, Duration::from_secs(30))
                                .map(|handle| {
                                    // Half cancelled by handle, racing the removers.
                                    if n % 2 == 0 {
                                        let _ = engine.cancel_timer_handle(handle);
                                    }
                                }),
                        ] {
                            assert!(matches!(r, Ok(()) | Err(Error::NotFound)), "{r:?}");
                        }
                    }
                }
                stop.store(true, Ordering::Relaxed);
            });
        }
        // Removers: delete, rotate, put over, and the clock that expires the
        // short-lived ones, with sweeps.
        let (engine, pool, stop, clock) = (&engine, Arc::clone(&pool), Arc::clone(&stop), &clock);
        s.spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = {
                    let mut p = pool.lock().unwrap();
                    if p.is_empty() {
                        continue;
                    }
                    let at = (n as usize * 7919) % p.len();
                    p.swap_remove(at)
                };
                match n % 4 {
                    0 => drop(engine.delete(&id)),
                    1 => {
                        if let Ok(new) = engine.rotate(&id) {
                            pool.lock().unwrap().push(new);
                        }
                    }
                    2 => {
                        drop(engine.put(id, b"over", Timeout::from_secs(60)));
                        pool.lock().unwrap().push(id);
                    }
                    _ => {
                        clock.advance_ms(1);
                        engine.cleanup_expired();
                        pool.lock().unwrap().push(id);
                    }
                }
            }
        });
    });
    clock.advance_ms(10);
    engine.cleanup_expired();
    engine.debug_check_invariants();
    // Every listed subscriber is live and lists the topic, and every live
    // session holding a topic is listed.
    for topic in ["x", "y", "z"] {
        let page = engine.subscribers(topic, TopicCursor::START, 10_000).unwrap();
        assert!(page.next.is_none());
        for id in &page.ids {
            assert!(engine.topics(id).unwrap().iter().any(|t| t == topic));
        }
        let holders = engine
            .list_all()
            .iter()
            .filter(|s| engine.topics(&s.id()).unwrap().iter().any(|t| t == topic))
            .count();
        assert_eq!(holders, page.ids.len(), "{topic}");
    }
}
