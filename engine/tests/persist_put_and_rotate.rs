//! `put`, `rotate` and `try_update` are one log record each: what they did
//! survives a reopen in every durability mode, and a `ROTATE` cut short by
//! a crash leaves the session under its old id, never under both or
//! neither.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use session_engine::log_format::{decode, shard_salt, Decoded, Record, SEGMENT_HEADER_LEN};

mod support;
use session_engine::{
    Config, Durability, Engine, ManualClock, Op, RecoveryMode, SessionId, Timeout, Updated,
};

fn config(dir: &Path, clock: &ManualClock, durability: Durability) -> Config {
    Config::default()
        .shards(4)
        .data_dir(dir)
        .durability(durability)
        .segment_size_bytes(256 * 1024)
        .clock(clock.clock())
        .without_sweeper()
}

/// What a session must look like after the reopen.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    metadata: Vec<u8>,
    created_ms: u64,
    timeout: Timeout,
}

fn expected_of(engine: &Engine, id: &SessionId) -> Expected {
    let s = engine.peek(id).unwrap();
    Expected {
        metadata: s.metadata().to_vec(),
        created_ms: s.created_ms(),
        timeout: s.timeout(),
    }
}

#[test]
fn put_rotate_and_try_update_survive_reopen_in_every_mode() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let mut expected: HashMap<SessionId, Expected> = HashMap::new();
        let mut gone = Vec::new();
        {
            let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
            let ids: Vec<SessionId> = (0..200u32)
                .map(|i| engine.create(&i.to_le_bytes(), Timeout::from_secs(3600)).unwrap())
                .collect();
            clock.advance_ms(1_000);
            for (n, id) in ids.iter().enumerate() {
                match n % 5 {
                    0 => {
                        let meta = format!("put {n}").into_bytes();
                        engine
                            .put(*id, &meta, Timeout::from_secs(60 * 24 * 3600))
                            .unwrap();
                        expected.insert(*id, expected_of(&engine, id));
                    }
                    1 => {
                        let new = engine.rotate(id).unwrap();
                        gone.push(*id);
                        expected.insert(new, expected_of(&engine, &new));
                    }
                    2 => {
                        let r = engine.try_update(id, |_| Ok::<_, ()>(Op::Delete)).unwrap();
                        assert!(matches!(r, Ok(Updated::Deleted(_))));
                        gone.push(*id);
                    }
                    3 => {
                        let r = engine
                            .try_update(id, |m| Ok::<_, ()>(Op::Replace([m, b"+t"].concat())))
                            .unwrap();
                        assert!(matches!(r, Ok(Updated::Replaced(_))));
                        expected.insert(*id, expected_of(&engine, id));
                    }
                    _ => {
                        let r = engine.try_update(id, |_| Err::<Op, _>("refused")).unwrap();
                        assert_eq!(r, Err("refused"));
                        expected.insert(*id, expected_of(&engine, id));
                    }
                }
            }
            let fresh = SessionId::from_bytes([3; 16]);
            engine.put(fresh, b"new by put", Timeout::Never).unwrap();
            expected.insert(fresh, expected_of(&engine, &fresh));
            engine.close().unwrap();
        }
        let engine = Engine::open(config(dir.path(), &clock, durability)).unwrap();
        assert_eq!(engine.len(), expected.len(), "{durability:?}");
        for (id, want) in &expected {
            assert_eq!(&expected_of(&engine, id), want, "{durability:?}: {id}");
        }
        for id in &gone {
            assert!(engine.peek(id).is_err(), "{durability:?}: {id} came back");
        }
        engine.debug_check_invariants();
    }
}

/// The records of shard 0's first segment: (start, end, record type name).
fn records(dir: &Path) -> (std::path::PathBuf, Vec<(usize, usize, &'static str)>) {
    let manifest = std::fs::read(dir.join("MANIFEST")).unwrap();
    let salt = shard_salt(&manifest, 0).unwrap();
    let path = dir.join("L00000001/S0000/0000000000000001.seg");
    let bytes = std::fs::read(&path).unwrap();
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Decoded::Record(record, len) = decode(&bytes[at..], salt) {
        let kind = match record {
            Record::Rotate { .. } => "rotate",
            Record::Put { .. } => "put",
            Record::Delete { .. } => "delete",
            _ => "other",
        };
        out.push((at, at + len, kind));
        at += len;
    }
    (path, out)
}

#[test]
fn a_rotate_cut_short_leaves_the_old_id_and_never_both() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let one_shard = |d: &Path| {
        config(d, &clock, Durability::Always)
            .shards(1)
            .recovery_mode(RecoveryMode::Strict)
    };
    let old = SessionId::from_bytes([1; 16]);
    let new = {
        let engine = Engine::open(one_shard(dir.path())).unwrap();
        engine.insert(old, b"logged in", Timeout::from_secs(600)).unwrap();
        let new = engine.rotate(&old).unwrap();
        engine.close().unwrap();
        new
    };
    let (path, recs) = records(dir.path());
    let &(start, end, kind) = recs.last().unwrap();
    assert_eq!(kind, "rotate", "{recs:?}");
    let original = std::fs::read(&path).unwrap();
    let relative = path.strip_prefix(dir.path()).unwrap().to_path_buf();
    for cut in start..=end {
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        let mut bytes = original.clone();
        bytes[cut..end].fill(0);
        std::fs::write(copy.path().join(&relative), &bytes).unwrap();
        let engine = Engine::open(one_shard(copy.path()))
            .unwrap_or_else(|e| panic!("cut at {cut}: a torn tail must open: {e}"));
        let (has_old, has_new) = (engine.contains(&old), engine.contains(&new));
        // Zeroing bytes that were zero (the time's high bytes) cuts nothing.
        if original[cut..end].iter().all(|&b| b == 0) {
            assert!(!has_old && has_new, "cut at {cut}: the whole rotate is kept");
        } else {
            assert!(has_old && !has_new, "cut at {cut}: old {has_old}, new {has_new}");
        }
        assert_eq!(engine.len(), 1, "cut at {cut}");
    }
}

/// One shard, `Never` durability, the clock in the test's hands.
fn one_shard(dir: &Path, clock: &ManualClock) -> Config {
    config(dir, clock, Durability::Never).shards(1)
}

/// Runs `while_held` holding shard 0's writer mutex, with `blocked` (a
/// write) started on another thread first and given time to reach the
/// mutex: its record is encoded at the time before `while_held` runs.
fn with_a_write_blocked<T: Send + 'static>(
    engine: &Engine,
    blocked: impl FnOnce() -> T + Send + 'static,
    while_held: impl FnOnce(),
) -> T {
    let mut handle = None;
    engine.debug_hold_writer(0, || {
        handle = Some(std::thread::spawn(blocked));
        std::thread::sleep(Duration::from_millis(200));
        while_held();
    });
    handle.unwrap().join().unwrap()
}

/// An insert that replaces an expired session of its id in the millisecond
/// the expired one was created (its time read before the writer mutex,
/// the expiry judged under it) is a new session: its topics do not come
/// back at the next open. Its `PUT` carried the old creation time, and
/// replay took it for the same session and kept the topics.
#[test]
fn an_insert_over_an_expired_session_of_the_same_millisecond_starts_without_topics() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
    let id = SessionId::from_bytes([9; 16]);
    engine.insert(id, b"old", Timeout::from_ms(1)).unwrap();
    assert!(engine.subscribe(&id, "a").unwrap());
    let e = engine.clone();
    let inserted = with_a_write_blocked(
        &engine,
        move || e.insert(id, b"new", Timeout::from_secs(3600)),
        || clock.advance_ms(1),
    );
    inserted.expect("the old one expired");
    assert!(engine.topics(&id).unwrap().is_empty());
    engine.close().unwrap();
    let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
    assert_eq!(engine.peek(&id).unwrap().metadata(), b"new");
    assert!(
        engine.topics(&id).unwrap().is_empty(),
        "the expired session's topics came back"
    );
}

/// A `put` whose record was encoded before a read's logged touch but
/// appended after it (the touch queued while the writer mutex was held,
/// drained ahead of the put) keeps the touch at the next open: replay took
/// the put's older last access, and the session expired early.
#[test]
fn a_put_never_moves_last_access_back_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let cfg = || one_shard(dir.path(), &clock).touch_persist_fraction(0.5);
    let engine = Engine::open(cfg()).unwrap();
    let id = SessionId::from_bytes([8; 16]);
    engine.insert(id, b"v1", Timeout::from_secs(100)).unwrap();
    let e = engine.clone();
    let put = with_a_write_blocked(
        &engine,
        move || e.put(id, b"v2", Timeout::from_secs(100)),
        || {
            clock.advance_ms(60_000);
            engine.get(&id).expect("live: logs a touch");
        },
    );
    put.unwrap();
    let last = engine.peek(&id).unwrap().last_access_ms();
    assert_eq!(last, 1_700_000_060_000);
    engine.close().unwrap();
    clock.advance_ms(45_000);
    let engine = Engine::open(cfg()).unwrap();
    let s = engine.peek(&id).expect("live until the touch's deadline");
    assert_eq!(s.metadata(), b"v2");
    assert!(s.last_access_ms() >= 1_700_000_050_000, "{}", s.last_access_ms());
}

/// A write that waited for the shard's writer mutex (held by another write,
/// a compaction's seal, a sweep batch) is recovered as memory had it: the
/// access time its record logged is the one memory gives it. Its record's
/// time used to be read before the wait and memory's after it, so memory
/// kept the session alive for the wait longer than the log did, and a
/// reopen in between dropped a session that was live (by up to the whole
/// wait; here 60 s of a 100 s timeout).
#[test]
fn a_write_that_waited_for_the_writer_mutex_is_recovered_as_memory_had_it() {
    for op in ["update", "set_ttl", "put", "rotate"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        let id = SessionId::from_bytes([7; 16]);
        engine.insert(id, b"v1", Timeout::from_secs(100)).unwrap();
        let e = engine.clone();
        let live = with_a_write_blocked(
            &engine,
            move || match op {
                "update" => e.update(&id, |_| b"v2".to_vec()).map(|_| id),
                "set_ttl" => e.set_ttl(&id, Timeout::from_secs(100)).map(|()| id),
                "put" => e.put(id, b"v2", Timeout::from_secs(100)).map(|()| id),
                _ => e.rotate(&id),
            },
            || clock.advance_ms(60_000),
        )
        .unwrap();
        let last = engine.peek(&live).unwrap().last_access_ms();
        engine.close().unwrap();
        // Within the timeout of the access time memory had.
        clock.advance_ms(last + 90_000 - clock.now_ms());
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        let s = engine.peek(&live).unwrap_or_else(|e| {
            panic!(
                "{op}: live in memory until {}, gone at reopen: {e}",
                last + 100_000
            )
        });
        assert!(
            s.last_access_ms() >= last,
            "{op}: {} < {last}",
            s.last_access_ms()
        );
    }
}

/// An update that lost its optimistic races is decided under the writer
/// mutex, and its record encoded there: the access time that record logs
/// is the one memory takes, even when the clock ticks between the lock and
/// the encoding (here, inside the closure). A log later than memory would
/// bring the session back for that tick after a restart, past the moment
/// memory had it expire.
#[test]
fn a_contended_update_is_recovered_with_the_access_time_memory_gave_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
    let id = SessionId::from_bytes([9; 16]);
    engine.insert(id, b"v1", Timeout::from_secs(100)).unwrap();
    clock.advance_ms(1_000);
    let runs = std::cell::Cell::new(0);
    let updated = engine
        .update(&id, |current| {
            runs.set(runs.get() + 1);
            if runs.get() <= session_engine::limits::UPDATE_OPTIMISTIC_TRIES {
                // Lose this race: another write lands meanwhile (no lock
                // is held while an optimistic run decides).
                engine.update(&id, |old| old.to_vec()).unwrap();
            } else {
                // Under the writer mutex: the clock ticks before the
                // record's encoding reads it.
                clock.advance_ms(1);
            }
            [current, b"+"].concat()
        })
        .unwrap();
    assert_eq!(runs.get(), session_engine::limits::UPDATE_OPTIMISTIC_TRIES + 1);
    let memory = engine.peek(&id).unwrap().last_access_ms();
    assert_eq!(updated.last_access_ms(), memory);
    engine.close().unwrap();
    let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
    let recovered = engine.peek(&id).unwrap();
    assert_eq!(recovered.metadata(), b"v1+");
    assert_eq!(
        recovered.last_access_ms(),
        memory,
        "the log's access time is not the one memory had"
    );
}

/// A reader slides a session and queues its `TOUCH` late (preempted before
/// the push); meanwhile the session is deleted (or rotated away) and its id
/// inserted again by a thread that read the clock before the slide. The
/// late `TOUCH` lands in the log after the new session's `PUT`, and
/// recovery takes the later access time: the new session must not come
/// back later than memory had it expire. (Its creation time was the stale
/// clock read, so memory had it expire first: a restart brought it back.)
#[test]
fn a_late_touch_of_a_removed_session_does_not_extend_the_id_inserted_after_it() {
    for removal in ["delete", "rotate"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        let id = SessionId::from_bytes([7; 16]);
        engine.insert(id, b"old", Timeout::from_secs(100)).unwrap();
        clock.advance_ms(1_000);
        let slid_ms = clock.now_ms() + 5_000;
        engine
            .debug_insert_with(id, b"new", Timeout::from_secs(1), || {
                // The inserting thread read the clock, then lost its core.
                clock.advance_ms(5_000);
                // A reader slides the old session...
                assert_eq!(engine.get(&id).unwrap().last_access_ms(), slid_ms);
                // ... which goes before the insert takes the lock.
                match removal {
                    "delete" => drop(engine.delete(&id).unwrap()),
                    _ => drop(engine.rotate(&id).unwrap()),
                }
            })
            .unwrap();
        // The reader's push, late: after the new session's PUT.
        engine.debug_queue_touch(&id, slid_ms);
        let memory = engine.peek(&id).ok().map(|s| s.expires_at_ms());
        engine.close().unwrap();
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        let recovered = engine.peek(&id).ok().map(|s| s.expires_at_ms());
        assert_eq!(
            recovered, memory,
            "{removal}: the deadline recovered is not the one memory had"
        );
    }
}

/// Flips the last byte of shard 0's first record of `kind` in segment 1
/// (its payload: the header still verifies, so it is damage, not a torn
/// tail, with records after it).
fn damage_first(dir: &Path, kind: &str) {
    let (path, recs) = records(dir);
    let &(_, end, _) = recs
        .iter()
        .find(|r| r.2 == kind)
        .unwrap_or_else(|| panic!("no {kind}: {recs:?}"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[end - 1] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
}

/// A repair that skips a damaged `ROTATE` reports the session it was
/// about, as it does for every other record of a session: the old,
/// pre-login id is live again, and the report gave no id.
#[test]
fn a_damaged_rotate_is_reported_by_the_id_it_was_about() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let old = SessionId::from_bytes([3; 16]);
    {
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        engine.insert(old, b"logged in", Timeout::from_secs(600)).unwrap();
        engine.rotate(&old).unwrap();
        engine
            .insert(SessionId::from_bytes([4; 16]), b"after", Timeout::from_secs(600))
            .unwrap();
        engine.close().unwrap();
    }
    damage_first(dir.path(), "rotate");
    let engine = Engine::open(one_shard(dir.path(), &clock).recovery_mode(RecoveryMode::Repair)).unwrap();
    let report = engine.recovery_report().unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].id, Some(old), "{report:?}");
    assert!(engine.contains(&old), "the rotation was skipped");
}

/// The creation floor holds across a reopen: a session inserted in the
/// first millisecond after it, under the id of one deleted with topics in
/// that millisecond before it, is made a millisecond later, so that a
/// repair skipping the damaged `DELETE` between them cannot take its `PUT`
/// for the old session's (and keep the old one's topics). The floor began
/// at 0 at every open.
#[test]
fn a_session_made_again_after_a_reopen_never_inherits_the_topics_of_one_removed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let id = SessionId::from_bytes([5; 16]);
    {
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        let other = SessionId::from_bytes([6; 16]);
        engine.insert(other, b"other", Timeout::from_secs(600)).unwrap();
        engine.insert(id, b"old", Timeout::from_secs(600)).unwrap();
        assert!(engine.subscribe(&id, "x").unwrap());
        engine.delete(&id).unwrap();
        // A record after the `DELETE` (so that its damage is not a torn
        // tail) that logs no later time (an insert would be made a
        // millisecond later, past the floor the delete set).
        assert!(engine.subscribe(&other, "y").unwrap());
        engine.close().unwrap();
    }
    {
        let engine = Engine::open(one_shard(dir.path(), &clock)).unwrap();
        engine.insert(id, b"new", Timeout::from_secs(600)).unwrap();
        assert!(engine.topics(&id).unwrap().is_empty());
        engine.close().unwrap();
    }
    damage_first(dir.path(), "delete");
    let engine = Engine::open(one_shard(dir.path(), &clock).recovery_mode(RecoveryMode::Repair)).unwrap();
    assert_eq!(engine.recovery_report().unwrap().damage.len(), 1);
    assert_eq!(engine.peek(&id).unwrap().metadata(), b"new");
    assert!(
        engine.topics(&id).unwrap().is_empty(),
        "the removed session's topics came back"
    );
}
