//! Everything written survives a clean close and reopen, in every durability
//! mode: creates, updates, timeouts, deletes and activity.

use std::collections::HashMap;
use std::time::Duration;

use session_engine::{Config, Durability, Engine, ManualClock, SessionId, Timeout};

mod support;

fn config(dir: &std::path::Path, clock: &ManualClock, durability: Durability) -> Config {
    Config::default()
        .shards(4)
        .data_dir(dir)
        .durability(durability)
        .segment_size_bytes(256 * 1024)
        .clock(clock.clock())
        .without_sweeper()
}

#[test]
fn state_survives_reopen_in_every_mode() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let mut expected: HashMap<SessionId, (Vec<u8>, Timeout)> = HashMap::new();
        let mut read_at: HashMap<SessionId, u64> = HashMap::new();
        {
            let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
            assert_eq!(engine.recovery_report().unwrap().sessions, 0);
            // Enough sessions to roll over several 256 KiB segments per shard
            // (fewer in Always mode: every write waits for a sync).
            let n = if durability == Durability::Always {
                400
            } else {
                3_000u32
            };
            for i in 0..n {
                let meta = vec![(i % 251) as u8; 100 + (i as usize % 300)];
                let timeout = if i % 5 == 0 {
                    Timeout::Never
                } else {
                    Timeout::from_secs(3600)
                };
                let id = engine.create(&meta, timeout).unwrap();
                expected.insert(id, (meta, timeout));
            }
            // The reads' activity comes well after the creates: further
            // than the coalescing bound (10% of the hour).
            clock.advance(Duration::from_secs(1_000));
            let ids: Vec<SessionId> = expected.keys().copied().collect();
            for (n, id) in ids.iter().enumerate() {
                match n % 4 {
                    0 => {
                        engine.delete(id).unwrap();
                        expected.remove(id);
                    }
                    1 => {
                        let s = engine.update(id, |m| [m, b"+u"].concat()).unwrap();
                        expected.get_mut(id).unwrap().0 = s.metadata().to_vec();
                    }
                    2 => {
                        engine.set_ttl(id, Timeout::from_secs(7200)).unwrap();
                        expected.get_mut(id).unwrap().1 = Timeout::from_secs(7200);
                    }
                    _ => {
                        let s = engine.get(id).unwrap();
                        if s.timeout() != Timeout::Never {
                            read_at.insert(*id, s.last_access_ms());
                        }
                    }
                }
            }
            let inserted = SessionId::from_bytes([9; 16]);
            engine.insert(inserted, b"caller's id", Timeout::Never).unwrap();
            expected.insert(inserted, (b"caller's id".to_vec(), Timeout::Never));
            engine.close().unwrap();
        }
        let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.sessions, expected.len(), "{durability:?}: {report:?}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
        if durability != Durability::Always {
            assert!(report.segments > 4, "segments rolled over: {report:?}");
        }
        assert_eq!(engine.len(), expected.len());
        for (id, (meta, timeout)) in &expected {
            let s = engine
                .peek(id)
                .unwrap_or_else(|e| panic!("{durability:?}: {id} lost: {e}"));
            assert_eq!(s.metadata(), &meta[..]);
            assert_eq!(s.timeout(), *timeout);
            if let Some(&at) = read_at.get(id) {
                // A read's activity survives, up to the coalescing bound.
                assert!(
                    at - s.last_access_ms() <= 360_000,
                    "{durability:?}: {id} read at {at}, recovered {}",
                    s.last_access_ms()
                );
            }
        }
        assert!(!read_at.is_empty());
        // And it keeps working: a write after recovery survives the next reopen.
        let late = engine.create(b"late", Timeout::Never).unwrap();
        drop(engine);
        let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
        assert_eq!(engine.peek(&late).unwrap().metadata(), b"late");
        assert_eq!(engine.len(), expected.len() + 1);
    }
}

#[test]
fn expired_sessions_are_dropped_at_recovery_and_activity_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let (short, long, active) = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        let short = engine.create(b"s", Timeout::from_secs(10)).unwrap();
        let long = engine.create(b"l", Timeout::from_secs(1000)).unwrap();
        let active = engine.create(b"a", Timeout::from_secs(100)).unwrap();
        // Reads past the touch threshold (10% of 100 s) are logged.
        for _ in 0..9 {
            clock.advance(Duration::from_secs(20));
            engine.get(&active).unwrap();
        }
        (short, long, active)
    };
    clock.advance(Duration::from_secs(50));
    let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
    assert!(
        engine.peek(&short).unwrap_err().is_not_found(),
        "expired while closed"
    );
    assert!(engine.peek(&long).is_ok());
    let recovered = engine.peek(&active).unwrap();
    let real_last_access = 1_700_000_000_000 + 9 * 20_000;
    // The coalescing bound: at most 10% of the timeout behind.
    assert!(
        real_last_access - recovered.last_access_ms() <= 10_000,
        "{recovered:?}"
    );
    assert_eq!(engine.recovery_report().unwrap().expired_dropped, 1);
}

#[test]
fn reads_do_not_write_a_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(config(dir.path(), &clock, Durability::Never)).unwrap();
    let id = engine.create(b"hot", Timeout::from_secs(600)).unwrap();
    let before = engine.stats().log_bytes;
    for _ in 0..10_000 {
        clock.advance_ms(1);
        engine.get(&id).unwrap();
    }
    // 10 s of reads inside one 60 s touch period (10% of the timeout; the
    // start is 20 s into its period): no record at all.
    assert_eq!(engine.stats().log_bytes, before);
    clock.advance(Duration::from_secs(61));
    engine.get(&id).unwrap();
    // A read in the next period queues a TOUCH, which the engine's thread
    // appends within a tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stats().log_bytes == before {
        assert!(
            std::time::Instant::now() < deadline,
            "a read in a new touch period is logged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The wall clock stepped back between two runs (a VM restored, an NTP step
/// at boot): what the last run had already seen expire stays expired. The
/// newest time in the log is a time that run reached, so recovery judges
/// expiry at no earlier time than that.
#[test]
fn a_clock_stepped_back_between_runs_brings_no_expired_session_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_700_000_000_000;
    let clock = ManualClock::new(start);
    let (expired, later, long) = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        let expired = engine.create(b"gone", Timeout::from_secs(10)).unwrap();
        let long = engine.create(b"long", Timeout::from_secs(1000)).unwrap();
        clock.advance(Duration::from_secs(60));
        assert!(engine.peek(&expired).is_err(), "expired in the first run");
        // Logged at start + 60 s: the run reached that time.
        let later = engine.create(b"later", Timeout::from_secs(10)).unwrap();
        (expired, later, long)
    };
    // The next run's clock is a minute behind the last one's.
    let behind = ManualClock::new(start);
    let engine = Engine::open(config(dir.path(), &behind, Durability::Always)).unwrap();
    assert!(
        engine.peek(&expired).unwrap_err().is_not_found(),
        "a session the last run saw expire came back"
    );
    assert!(engine.peek(&later).is_ok(), "live at the newest logged time");
    assert!(engine.peek(&long).is_ok());
    assert_eq!(engine.recovery_report().unwrap().expired_dropped, 1);
}

/// As above, with nothing logged after the expiry: the last run only saw
/// time pass (a session that expires by the clock writes nothing), so no
/// record holds the time it reached. The data directory keeps that time
/// apart from the logs: at a clean close, and about once a second while the
/// engine runs (the crash image is a copy of the directory taken while the
/// engine still runs, waited for up to 10 s).
#[test]
fn a_clock_stepped_back_after_a_quiet_expiry_brings_no_expired_session_back() {
    let start = 1_700_000_000_000;
    for (durability, crashed) in [
        (Durability::Always, false),
        (Durability::Interval(Duration::from_millis(5)), false),
        (Durability::Never, false),
        (Durability::Always, true),
        (Durability::Never, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(start);
        let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
        let expired = engine.create(b"gone", Timeout::from_secs(10)).unwrap();
        let long = engine.create(b"long", Timeout::from_secs(1000)).unwrap();
        clock.advance(Duration::from_secs(60));
        assert!(engine.peek(&expired).is_err(), "expired in the first run");
        // The next run's clock is where the first one started.
        let reopen = |path: &std::path::Path| {
            let behind = ManualClock::new(start);
            let engine = Engine::open(config(path, &behind, durability)).unwrap();
            let gone = engine.peek(&expired).is_err();
            assert!(engine.peek(&long).is_ok(), "{durability:?}");
            gone
        };
        if crashed {
            let images = tempfile::tempdir().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut n = 0;
            loop {
                n += 1;
                let image = images.path().join(format!("image-{n}"));
                support::copy_dir(dir.path(), &image);
                let gone = reopen(&image);
                std::fs::remove_dir_all(&image).unwrap();
                if gone {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{durability:?}: 10 s after the expiry, a crash image still brings the expired session back"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(engine);
        } else {
            engine.close().unwrap();
            assert!(
                reopen(dir.path()),
                "{durability:?}: a session the last run saw expire came back after a clean close"
            );
        }
    }
}

/// A run that drops a session as expired at its open marks the time it
/// judged by at once: a crash right after that open (before its first
/// periodic mark), then a run with the clock stepped back, brought the
/// session back, its records still in the log.
#[test]
fn an_open_that_drops_expired_sessions_marks_the_time_it_judged_by() {
    let start = 1_700_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (gone, long) = {
        let clock = ManualClock::new(start);
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        let gone = engine.create(b"gone", Timeout::from_secs(10)).unwrap();
        let long = engine.create(b"long", Timeout::from_secs(1000)).unwrap();
        engine.close().unwrap();
        (gone, long)
    };
    let later = ManualClock::new(start + 60_000);
    let engine = Engine::open(config(dir.path(), &later, Durability::Always)).unwrap();
    assert_eq!(engine.recovery_report().unwrap().expired_dropped, 1);
    // The crash image: the directory as this open left it.
    let image = tempfile::tempdir().unwrap();
    support::copy_dir(dir.path(), image.path());
    drop(engine);
    let behind = ManualClock::new(start);
    let engine = Engine::open(config(image.path(), &behind, Durability::Always)).unwrap();
    assert!(
        engine.peek(&gone).unwrap_err().is_not_found(),
        "a session the last open dropped as expired came back"
    );
    assert!(engine.peek(&long).is_ok());
}

/// A `CLOCK` file whose slot verifies but holds a time past the engine's
/// range (written by a tool, or hostile) is a mark that does not verify:
/// it raises nothing. (It raised the clock to the end of time: every
/// session expired at the open, and the clock stood still after.)
#[test]
fn a_time_mark_past_the_engines_range_raises_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let id = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        engine.create(b"kept", Timeout::from_secs(3600)).unwrap()
    };
    // `(1 << 62) - 1` is the engine's last millisecond: a mark there is no
    // time a run reached either (it was taken, and pinned the clock there).
    for time in [u64::MAX, 1 << 62, (1 << 62) - 1] {
        let mut slot = b"SECK".to_vec();
        slot.extend_from_slice(&time.to_le_bytes());
        let crc = crc32c::crc32c(&slot);
        slot.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join("CLOCK"), [slot.clone(), slot].concat()).unwrap();
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        assert_eq!(engine.peek(&id).unwrap().metadata(), b"kept", "time {time:#x}");
        assert_eq!(engine.recovery_report().unwrap().expired_dropped, 0);
        assert_eq!(engine.clock().now_ms(), 1_700_000_000_000, "the clock was raised");
    }
}

/// A segment header whose creation time is past the engine's range (its
/// check is a plain CRC, which a damaged or hand-edited file can carry) is
/// no time a run reached: it raises nothing. It was clamped to the last
/// millisecond and taken, which expired every session at open and left the
/// clock there for good.
#[test]
fn a_segment_header_time_past_the_engines_range_raises_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let id = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        engine.create(b"kept", Timeout::from_secs(3600)).unwrap()
    };
    for time in [u64::MAX, (1 << 62) - 1] {
        for path in support::segments_under(dir.path()) {
            let mut bytes = std::fs::read(&path).unwrap();
            for copy in [0, 64] {
                let header = &mut bytes[copy..copy + 64];
                header[32..40].copy_from_slice(&time.to_le_bytes());
                let crc = crc32c::crc32c(&header[..56]);
                header[56..60].copy_from_slice(&crc.to_le_bytes());
            }
            std::fs::write(&path, bytes).unwrap();
        }
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        assert_eq!(engine.peek(&id).unwrap().metadata(), b"kept", "time {time:#x}");
        assert_eq!(engine.recovery_report().unwrap().expired_dropped, 0);
        assert_eq!(engine.clock().now_ms(), 1_700_000_000_000, "the clock was raised");
    }
}

/// A run whose clock was a day fast (set wrong at boot), then runs with
/// the right one: engine time goes on from the log's newest time instead
/// of stepping back, so a session a later run created, and saw live, is
/// not judged expired at the next open by the fast run's times.
#[test]
fn a_run_with_a_fast_clock_does_not_expire_the_next_runs_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000;
    let right = 1_700_000_000_000;
    let fast = ManualClock::new(right + day);
    let forever = {
        let engine = Engine::open(config(dir.path(), &fast, Durability::Always)).unwrap();
        engine.create(b"forever", Timeout::Never).unwrap()
    };
    let clock = ManualClock::new(right);
    let hour_long = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
        assert!(
            clock.now_ms() >= right + day,
            "engine time went on from the log's times"
        );
        engine.create(b"an hour", Timeout::from_secs(3_600)).unwrap()
    };
    clock.advance(Duration::from_secs(600));
    let engine = Engine::open(config(dir.path(), &clock, Durability::Always)).unwrap();
    assert!(engine.peek(&forever).is_ok());
    assert!(
        engine.peek(&hour_long).is_ok(),
        "live ten minutes after its creation"
    );
    assert_eq!(engine.recovery_report().unwrap().expired_dropped, 0);
}

/// What recovery read may be in the page cache only (a process that died
/// in `Interval` or `Never` mode keeps its writes there): the open syncs
/// every segment it kept before any write lands after them, or a write
/// acknowledged once synced could depend on records a power loss takes
/// (its session's create, say). Nothing was synced at open. `Never`
/// promises nothing against a machine crash and syncs nothing.
#[test]
fn an_open_makes_what_it_recovered_durable_before_writing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let small = |durability| {
        config(dir.path(), &clock, durability)
            .metadata_bytes_max(1024)
            .segment_size_bytes(64 * 1024)
    };
    {
        let engine = Engine::open(small(Durability::Never)).unwrap();
        for i in 0..2_000u32 {
            engine
                .create(&i.to_le_bytes().repeat(50), Timeout::Never)
                .unwrap();
        }
        engine.close().unwrap();
    }
    let with_data = support::segments_under(dir.path())
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap()[128..].iter().any(|&b| b != 0))
        .count();
    assert!(with_data > 4, "{with_data} segments hold records");
    for durability in [
        Durability::Interval(Duration::from_millis(5)),
        Durability::Always,
        Durability::Never,
    ] {
        let engine = Engine::open(small(durability)).unwrap();
        let report = engine.recovery_report().unwrap().clone();
        if durability == Durability::Never {
            assert_eq!(report.synced_segments, 0, "{report:?}");
        } else {
            // Every segment holding records, and the empty ones kept.
            assert!(
                (with_data..=report.segments).contains(&report.synced_segments),
                "{durability:?}: {with_data} segments hold records: {report:?}"
            );
        }
        assert_eq!(engine.len(), 2_000);
        engine.close().unwrap();
    }
}

/// At the boundary: with `metadata_bytes_max` the largest a 64 KiB segment
/// accepts, records of exactly that size each fill a segment to its seal,
/// the log rolls for every one, and a `Strict` open brings them all back
/// (one byte more is refused at open, with the reason).
#[test]
fn records_of_the_largest_size_fill_their_segments_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = |max: usize| {
        Config::default()
            .shards(1)
            .without_sweeper()
            .data_dir(dir.path())
            .durability(Durability::Always)
            .segment_size_bytes(64 * 1024)
            .metadata_bytes_max(max)
    };
    let max = (60 * 1024..=64 * 1024)
        .rev()
        .find(|&max| match Engine::open(config(max)) {
            Ok(_) => true,
            Err(e) => {
                assert!(e.to_string().contains("largest record"), "{e}");
                false
            }
        })
        .expect("some metadata size fits a 64 KiB segment");
    let mut kept = std::collections::HashMap::new();
    {
        let engine = Engine::open(config(max)).unwrap();
        for n in 0..4u8 {
            let meta = vec![n; max];
            let id = engine.create(&meta, Timeout::from_secs(3600)).unwrap();
            kept.insert(id, meta);
        }
        let (&first, _) = kept.iter().next().unwrap();
        let updated = vec![0xEE; max];
        engine.update(&first, |_| updated.clone()).unwrap();
        kept.insert(first, updated);
        let rotated = engine.rotate(&first).unwrap();
        let meta = kept.remove(&first).unwrap();
        kept.insert(rotated, meta);
        assert!(matches!(
            engine.create(&vec![0; max + 1], Timeout::from_secs(3600)),
            Err(session_engine::Error::ValueTooLarge { .. })
        ));
    }
    let engine = Engine::open(config(max)).unwrap();
    assert_eq!(engine.len(), kept.len());
    for (id, meta) in &kept {
        assert_eq!(engine.peek(id).unwrap().metadata(), &meta[..], "{id}");
    }
}

/// Recovery reads the shards' logs on several threads; a process out of
/// threads (a process or cgroup limit) recovers them on the opening
/// thread instead, where the open panicked.
#[test]
fn recovery_without_threads_recovers_on_the_opening_thread() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let ids: Vec<SessionId> = {
        let engine = Engine::open(config(dir.path(), &clock, Durability::Never)).unwrap();
        let ids = (0..64u8)
            .map(|i| engine.create(&[i; 10], Timeout::Never).unwrap())
            .collect();
        engine.close().unwrap();
        ids
    };
    let engine =
        Engine::open(config(dir.path(), &clock, Durability::Never).debug_fail_recovery_threads()).unwrap();
    assert_eq!(engine.len(), ids.len());
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(engine.peek(id).unwrap().metadata(), [i as u8; 10]);
    }
}
