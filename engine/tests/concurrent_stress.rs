//! Many threads creating, reading, updating, deleting and expiring at once,
//! with the real sweeper running: `len` matches the contents afterwards and
//! no session is ever returned after its deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use session_engine::{Config, Engine, RemovalCause, SessionId, Timeout};

#[test]
fn len_matches_contents_and_deadlines_hold_under_contention() {
    let expired = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicU64::new(0));
    let (e, d) = (Arc::clone(&expired), Arc::clone(&deleted));
    let engine = Engine::open(
        Config::default()
            .shards(4)
            .sweep_interval(std::time::Duration::from_millis(2))
            .listener(move |_, cause| {
                let counter = if cause == RemovalCause::Expired { &e } else { &d };
                counter.fetch_add(1, Ordering::Relaxed);
            }),
    )
    .unwrap();
    let created = AtomicU64::new(0);
    let deletes_ok = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, created, deletes_ok) = (&engine, &created, &deletes_ok);
            s.spawn(move || {
                let mut mine: Vec<SessionId> = Vec::new();
                for i in 0..20_000u64 {
                    match (i + t) % 10 {
                        0..=2 => {
                            // Short timeouts so that expiry races the readers.
                            let timeout = if i % 2 == 0 {
                                Timeout::from_ms(1 + i % 5)
                            } else {
                                Timeout::Never
                            };
                            mine.push(engine.create(&i.to_le_bytes(), timeout).unwrap());
                            created.fetch_add(1, Ordering::Relaxed);
                        }
                        3 => {
                            if let Some(id) = mine.pop() {
                                if engine.delete(&id).is_ok() {
                                    deletes_ok.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        4 => {
                            if let Some(id) = mine.last() {
                                let _ = engine.update(id, |m| m.to_vec());
                            }
                        }
                        _ => {
                            let Some(id) = mine.get((i as usize * 31) % mine.len().max(1)) else {
                                continue;
                            };
                            let before = engine.clock().now_ms();
                            // `peek` leaves the deadline where it was: a
                            // session it returns must have been alive at the
                            // time the read judged it, which is `before` or
                            // later (a `get` would slide the deadline first,
                            // and no check on its result could fail).
                            if let Ok(s) = engine.peek(id) {
                                if let Some(deadline) = s.expires_at_ms() {
                                    assert!(deadline > before, "returned after its deadline: {s:?}");
                                }
                            }
                            let _ = engine.get(id);
                        }
                    }
                }
            });
        }
    });
    // Let every short timeout (at most 5 ms) pass on the engine's clock (it
    // ticks in a thread of its own, which a busy machine may delay), so that
    // the contents are stable while they are counted.
    let end_ms = engine.clock().now_ms() + 6;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.clock().now_ms() < end_ms {
        assert!(
            std::time::Instant::now() < give_up,
            "the engine's clock stood still"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The sweeper (every 2 ms) may be between removing a batch and telling
    // the listener or the session count: check once it has settled, giving
    // up (and then failing on what differs) after 10 s.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        engine.cleanup_expired();
        let all = engine.list_all();
        let distinct: std::collections::HashSet<_> = all.iter().map(|s| s.id()).collect();
        assert_eq!(distinct.len(), all.len(), "listing repeats sessions");
        let live = all.len();
        let stats = engine.stats();
        let (len, expired_seen) = (engine.len(), expired.load(Ordering::Relaxed));
        let removed = expired_seen + deleted.load(Ordering::Relaxed);
        let settled = len == stats.sessions
            && len == live
            && created.load(Ordering::Relaxed) == live as u64 + removed
            && stats.expired_total == expired_seen;
        if settled || std::time::Instant::now() > give_up {
            assert_eq!(len, stats.sessions);
            assert_eq!(
                len, live,
                "len agrees with a full listing once expired ones are reclaimed"
            );
            assert_eq!(created.load(Ordering::Relaxed), live as u64 + removed);
            assert_eq!(stats.expired_total, expired_seen);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        deleted.load(Ordering::Relaxed),
        deletes_ok.load(Ordering::Relaxed)
    );
}

/// Readers never miss a live session while others come and go around it:
/// a writer creates and deletes sessions in the same small table (its
/// removals empty tombstones again where the next slot is empty, and its
/// table rebuilds), and readers look up a fixed set of live sessions the
/// whole time. A tombstone emptied on a live session's probe path would
/// hide that session from a reader (and from the writer, which could then
/// store its id twice).
#[test]
fn readers_never_miss_a_live_session_while_others_come_and_go() {
    let engine = Engine::open(Config::default().shards(1).without_sweeper()).unwrap();
    let live: Vec<SessionId> = (0..300)
        .map(|_| engine.create(b"kept", Timeout::Never).unwrap())
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let missed = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        let (engine, live, stop, missed, reads) = (&engine, &live, &stop, &missed, &reads);
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for id in live {
                    if engine.peek(id).is_err() {
                        missed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reads.fetch_add(live.len() as u64, Ordering::Relaxed);
            }
        });
        s.spawn(move || {
            // The readers stop when this thread ends, a panic included.
            struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(stop);
            let mut churn = std::collections::VecDeque::new();
            for i in 0..200_000u32 {
                churn.push_back(engine.create(&i.to_le_bytes(), Timeout::Never).unwrap());
                // Between 1 and 200 other sessions at a time.
                while churn.len() > 1 + (i as usize * 7) % 200 {
                    engine.delete(&churn.pop_front().unwrap()).unwrap();
                }
            }
        });
    });
    assert_eq!(missed.load(Ordering::Relaxed), 0, "live sessions missed");
    assert!(reads.load(Ordering::Relaxed) > 0);
    for id in &live {
        assert!(engine.contains(id), "{id} lost");
    }
    engine.debug_check_invariants();
    assert!(engine.stats().rehashes_total > 0, "the table rebuilt meanwhile");
}
