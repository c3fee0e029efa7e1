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

/// A create that waits for its shard longer than its timeout (behind a
/// writer rebuilding a large table) is made at the time it is stored, not
/// the time it read before waiting: it used to be stored already past its
/// deadline, `Ok` to its caller and `NotFound` to the next read, and the
/// listener heard `Expired` for a session its caller was told exists.
#[test]
fn a_create_that_waited_longer_than_its_timeout_is_made_when_stored() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let id = session_engine::SessionId::random().unwrap();
    engine
        .debug_insert_with(id, b"late", Timeout::from_ms(10), || clock.advance_ms(20))
        .unwrap();
    let session = engine.get(&id).expect("the session its caller was told exists");
    assert_eq!(session.created_ms(), 1_000_020);
    clock.advance_ms(9);
    assert!(engine.peek(&id).is_ok(), "alive until 10 ms after it was stored");
    assert_eq!(engine.cleanup_expired(), 0);
}

/// The same for a change logged (with a data directory) at a time read
/// before it waited for the shard: a `set_ttl` of 10 ms that waited 20 ms
/// used to install the session already past its new deadline, `Ok` to its
/// caller and `NotFound` to the next read. It is logged again, later.
#[test]
fn a_change_that_waited_longer_than_its_new_timeout_is_made_when_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .without_sweeper()
            .clock(clock.clock())
            .data_dir(dir.path())
            .durability(session_engine::Durability::Never),
    )
    .unwrap();
    let id = engine.create(b"v1", Timeout::from_ms(100)).unwrap();
    let mut changer = None;
    engine.debug_hold_writer(0, || {
        // The change reads the clock (at 1,000), then waits for the writer
        // this test holds while the clock moves 20 ms.
        let e = engine.clone();
        changer = Some(std::thread::spawn(move || e.set_ttl(&id, Timeout::from_ms(10))));
        std::thread::sleep(std::time::Duration::from_millis(200));
        clock.advance_ms(20);
    });
    changer.unwrap().join().unwrap().expect("set_ttl");
    let session = engine
        .get(&id)
        .expect("the session the change was acknowledged on");
    assert_eq!(session.timeout(), Timeout::from_ms(10));
    assert_eq!(session.last_access_ms(), 1_020);
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
    assert!(engine.get(&peeked).unwrap_err().is_not_found());
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

/// A writer changes a session in two steps (it marks the old block, logs
/// the change, then publishes the new block); the tests below read the
/// session from another thread between those steps, at a time the clock
/// reaches meanwhile. Timeout 100 ms, last access at 1,000; the update
/// runs at 1,050, so the new block's deadline is 1,150.
mod during_a_write {
    use std::sync::mpsc;
    use std::thread;

    use session_engine::{Config, Durability, Engine, ManualClock, SessionId, Timeout};

    fn engine(dir: &std::path::Path, clock: &ManualClock) -> Engine {
        Engine::open(
            Config::default()
                .shards(1)
                .without_sweeper()
                .clock(clock.clock())
                .data_dir(dir)
                .durability(Durability::Never),
        )
        .unwrap()
    }

    /// Updates the session at 1,050 while another thread, with the clock
    /// moved to `at`, runs `during` on it between the update's two steps.
    /// Returns what `during` returned.
    fn read_during_update<T: Send + 'static>(
        at: u64,
        during: impl FnOnce(&Engine, &SessionId) -> T + Send + 'static,
    ) -> (Engine, ManualClock, SessionId, T, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let engine = engine(dir.path(), &clock);
        let id = engine.create(b"v1", Timeout::from_ms(100)).unwrap();
        clock.advance_ms(50);
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let (e, c) = (engine.clone(), clock.clone());
        engine.debug_after_next_append(0, move || {
            // Not joined here: the read may wait for this write to finish.
            thread::spawn(move || {
                c.advance_ms(at - 1_050);
                started_tx.send(()).unwrap();
                tx.send(during(&e, &id)).unwrap();
            });
            // The read begins inside the window (this hook holds the write
            // there until it has), then has the chance to run in it.
            started_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the read never began inside the update's window");
            thread::sleep(std::time::Duration::from_millis(50));
        });
        engine.update(&id, |_| b"v2".to_vec()).unwrap();
        let out = rx.recv().unwrap();
        (engine, clock, id, out, dir)
    }

    #[test]
    fn a_read_past_both_deadlines_finds_nothing() {
        let (engine, _clock, id, got, _dir) = read_during_update(1_200, |e, id| e.get(id));
        assert!(got.unwrap_err().is_not_found(), "an expired session was returned");
        assert!(engine.get(&id).unwrap_err().is_not_found());
    }

    #[test]
    fn a_read_past_the_old_deadline_only_finds_the_new_session() {
        let (engine, _clock, id, got, _dir) = read_during_update(1_120, |e, id| e.get(id));
        let got = got.expect("live under the update's deadline (1,150)");
        assert_eq!(got.last_access_ms(), 1_120);
        assert!(engine.peek(&id).is_ok());
    }

    /// A listing that meets the session while its deadline passes inside
    /// the write lists it as the write leaves it (it left it out, and a
    /// compaction's listing then lost it from the log).
    #[test]
    fn a_listing_past_the_old_deadline_lists_the_new_session() {
        let (_engine, _clock, id, listed, _dir) = read_during_update(1_120, |e, _| e.list_all());
        assert_eq!(listed.len(), 1, "the live session was left out");
        assert_eq!(listed[0].id(), id);
        assert_eq!(listed[0].metadata(), b"v2");
    }

    /// A writer that panics between its two steps leaves the old block
    /// marked; a read that must wait for it finds no write under way and
    /// takes the block as it stands (it waited and looked again forever).
    #[test]
    fn a_writer_that_panics_inside_the_window_leaves_the_session_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let engine = engine(dir.path(), &clock);
        let id = engine.create(b"v1", Timeout::from_ms(100)).unwrap();
        engine.debug_after_next_append(0, || panic!("a bug between the write's two steps"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = engine.update(&id, |_| b"v2".to_vec());
        }));
        assert!(panicked.is_err());
        assert_eq!(engine.peek(&id).unwrap().metadata(), b"v1");
        clock.advance_ms(150);
        // Past the old deadline: decided, not waited for again and again.
        let (tx, rx) = mpsc::channel();
        let e = engine.clone();
        thread::spawn(move || tx.send(e.get(&id).map(|_| ())).unwrap());
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the read never ended");
        assert!(got.unwrap_err().is_not_found());
    }

    /// After a writer panicked between its two steps, the writers' own
    /// checks take the session as it stands too: an insert under its id
    /// is refused (it took the mark for an expiry and replaced the live
    /// session), a write goes through, and the sweeper expires it on time
    /// (it re-armed it 2^62 ms away: never swept, its room never freed).
    #[test]
    fn after_a_writer_panicked_the_writers_take_the_session_as_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let engine = engine(dir.path(), &clock);
        let id = SessionId::from_bytes([7; 16]);
        engine.insert(id, b"v1", Timeout::from_ms(100)).unwrap();
        engine.debug_after_next_append(0, || panic!("a bug between the write's two steps"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = engine.update(&id, |_| b"v2".to_vec());
        }));
        assert!(panicked.is_err());
        let again = engine.insert(id, b"other", Timeout::from_ms(100));
        assert!(
            matches!(again, Err(session_engine::Error::AlreadyExists)),
            "{again:?}"
        );
        engine
            .set_ttl(&id, Timeout::from_ms(100))
            .expect("a write goes through");
        clock.advance_ms(150);
        assert_eq!(engine.cleanup_expired(), 1, "swept on time");
        assert!(engine.is_empty());
    }

    /// A writer whose read went stale meets the newer block a writer that
    /// panicked between its two steps had retired: the panicked writer's
    /// guard gave the block back unmarked, so the stale writer (which now
    /// marks a due block it meets, and asserts in debug builds that no
    /// block under the writer mutex is retired) decides again on the block
    /// as it stands.
    #[test]
    fn a_stale_writer_meets_a_block_a_panicked_writer_left() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let engine = engine(dir.path(), &clock);
        let id = SessionId::from_bytes([8; 16]);
        engine.insert(id, b"v1", Timeout::from_ms(100)).unwrap();
        let mut first = true;
        let updated = engine.update(&id, |current| {
            if std::mem::take(&mut first) {
                // Between this update's read and its commit: another write
                // goes through, and a third panics between its two steps.
                engine.update(&id, |_| b"v2".to_vec()).unwrap();
                engine.debug_after_next_append(0, || panic!("a bug between the write's two steps"));
                let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = engine.update(&id, |_| b"v3".to_vec());
                }));
                assert!(panicked.is_err());
            }
            [current, b"+"].concat()
        });
        assert_eq!(updated.expect("the update goes through").metadata(), b"v2+");
        assert_eq!(engine.peek(&id).unwrap().metadata(), b"v2+");
    }

    /// An insert that panics after its record is logged gives back the
    /// room it claimed: the engine's count stays the sessions it holds, and
    /// an engine at its limit takes the next create (the claim stayed
    /// counted, and a full engine refused creates for good).
    #[test]
    fn an_insert_that_panics_after_its_append_gives_its_room_back() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let engine = Engine::open(
            Config::default()
                .shards(1)
                .sessions_max(1)
                .initial_capacity(1)
                .without_sweeper()
                .clock(clock.clock())
                .data_dir(dir.path())
                .durability(Durability::Never),
        )
        .unwrap();
        engine.debug_after_next_append(0, || panic!("a bug between the write's two steps"));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = engine.insert(SessionId::from_bytes([9; 16]), b"a", Timeout::from_ms(100));
        }));
        assert!(panicked.is_err());
        assert_eq!(
            engine.len(),
            engine.stats().sessions,
            "the count and the table agree"
        );
        engine
            .create(b"b", Timeout::from_ms(100))
            .expect("the engine holds no session: it has room for one");
    }

    #[test]
    fn a_touch_inside_the_window_is_kept() {
        let (engine, clock, id, touched, _dir) = read_during_update(1_090, |e, id| e.touch(id));
        touched.unwrap();
        clock.advance_ms(60); // to 1,150
        let s = engine
            .peek(&id)
            .expect("the touch at 1,090 moved the deadline to 1,190");
        assert_eq!(s.last_access_ms(), 1_090);
        assert_eq!(s.metadata(), b"v2");
    }
}
