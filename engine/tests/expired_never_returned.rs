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

/// Many readers on two cores, sessions expiring among them: once an
/// operation has answered `NotFound` for a session, no operation that
/// starts later finds it live. (A reader that read the time just before the
/// deadline, was descheduled, and slid the deadline after another reader had
/// been told the session expired used to bring it back; `shard.rs` has the
/// deterministic test of that interleaving, this one runs the real thing.)
#[test]
fn no_session_comes_back_after_a_reader_was_told_it_expired() {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    const SESSIONS: usize = 4_000;
    const THREADS: usize = 16;
    let engine = Engine::open(Config::default().shards(2).without_sweeper()).unwrap();
    // Timeouts from 1 to 40 ms, so deadlines keep passing while readers run.
    let ids: Vec<_> = (0..SESSIONS)
        .map(|i| {
            engine
                .create(b"x", Timeout::from_ms(1 + (i % 40) as u64))
                .unwrap()
        })
        .collect();
    // The sequence number at which an operation that answered NotFound ended.
    let gone: Vec<AtomicU64> = (0..SESSIONS).map(|_| AtomicU64::new(u64::MAX)).collect();
    let sequence = AtomicU64::new(0);
    let revived = AtomicUsize::new(0);
    let seen_gone = AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_millis(1_500);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, ids, gone, sequence, revived, seen_gone) =
                (&engine, &ids, &gone, &sequence, &revived, &seen_gone);
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64) << 32;
                while Instant::now() < until {
                    for _ in 0..256 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % SESSIONS as u64) as usize;
                        let start = sequence.fetch_add(1, SeqCst);
                        let live = match (x >> 40) % 4 {
                            0 => engine.touch(&ids[i]).is_ok(),
                            1 => engine.peek(&ids[i]).is_ok(),
                            2 => engine.contains(&ids[i]),
                            _ => engine.get(&ids[i]).is_ok(),
                        };
                        let end = sequence.fetch_add(1, SeqCst);
                        if !live {
                            if gone[i].fetch_min(end, SeqCst) == u64::MAX {
                                seen_gone.fetch_add(1, SeqCst);
                            }
                        } else if start > gone[i].load(SeqCst) {
                            revived.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
    });
    let seen_gone = seen_gone.load(SeqCst);
    println!(
        "{seen_gone} sessions seen expired, {} operations",
        sequence.load(SeqCst) / 2
    );
    assert!(seen_gone > 0, "no session expired while the readers ran");
    assert_eq!(
        revived.load(SeqCst),
        0,
        "sessions came back after a reader was told they expired"
    );
}
