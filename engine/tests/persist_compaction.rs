//! Compaction rewrites a shard's live sessions into a base segment and drops
//! the superseded ones; a crash at any step of it loses nothing, and the
//! background compactor shrinks a log full of dead records by itself.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use session_engine::{CompactionStep, Config, Durability, Engine, SessionId, Timeout};

fn config(dir: &Path) -> Config {
    Config::default()
        .shards(2)
        .data_dir(dir)
        .durability(Durability::Interval(Duration::from_millis(10)))
        .segment_size_bytes(128 * 1024)
        .metadata_bytes_max(4096)
        .without_sweeper()
}

/// Sessions rewritten many times: most of the log is dead.
fn churn(engine: &Engine, expected: &mut HashMap<SessionId, Vec<u8>>) {
    for _ in 0..300 {
        let id = engine.create(b"v0", Timeout::from_secs(3600)).unwrap();
        expected.insert(id, b"v0".to_vec());
    }
    let ids: Vec<SessionId> = expected.keys().copied().collect();
    for round in 0..20u32 {
        for (n, id) in ids.iter().enumerate() {
            let value = format!("{round}-{n}-{}", "p".repeat(200)).into_bytes();
            engine.update(id, |_| value.clone()).unwrap();
            expected.insert(*id, value);
        }
    }
    for id in ids.iter().take(50) {
        engine.delete(id).unwrap();
        expected.remove(id);
    }
}

fn check(dir: &Path, expected: &HashMap<SessionId, Vec<u8>>) -> Engine {
    let engine = Engine::open(config(dir)).unwrap();
    assert_eq!(engine.len(), expected.len(), "{:?}", engine.recovery_report());
    for (id, value) in expected {
        assert_eq!(engine.peek(id).unwrap().metadata(), &value[..]);
    }
    engine
}

#[test]
fn a_crash_at_any_compaction_step_loses_nothing() {
    for step in [
        CompactionStep::Sealed,
        CompactionStep::TmpWritten,
        CompactionStep::Renamed,
        CompactionStep::Done,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = HashMap::new();
        let engine = Engine::open(config(dir.path())).unwrap();
        churn(&engine, &mut expected);
        let before = engine.stats().log_bytes;
        engine.debug_compact(0, step).unwrap();
        // Writes after the interrupted compaction must survive it too.
        let late = engine.create(b"after", Timeout::Never).unwrap();
        expected.insert(late, b"after".to_vec());
        if step == CompactionStep::Done {
            assert!(engine.stats().log_bytes < before, "{step:?}: the log shrank");
        }
        // The engine stops here, as if the process died after `step`.
        drop(engine);
        let engine = check(dir.path(), &expected);
        // And a later full compaction of both shards still loses nothing.
        engine.debug_compact(0, CompactionStep::Done).unwrap();
        engine.debug_compact(1, CompactionStep::Done).unwrap();
        drop(engine);
        check(dir.path(), &expected);
    }
}

#[test]
fn the_background_compactor_shrinks_dead_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = HashMap::new();
    let engine = Engine::open(config(dir.path()).compaction_threshold(0.5)).unwrap();
    churn(&engine, &mut expected);
    let stats = engine.stats();
    assert!(
        stats.log_bytes > 4 * stats.log_live_bytes,
        "mostly dead: {stats:?}"
    );
    // Behaviour, not timing: the compactor checks every 500 ms; allow it long.
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().log_bytes > 2 * engine.stats().log_live_bytes + 4 * 128 * 1024 {
        assert!(Instant::now() < deadline, "no compaction: {:?}", engine.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(engine.stats().compaction_errors, 0);
    drop(engine);
    check(dir.path(), &expected);
}

#[test]
fn compactions_started_together_run_one_after_the_other() {
    // `debug_compact` from two threads (as the compactor thread and a caller
    // could): each must see the log the other left, so the log's accounting
    // stays sane and nothing is lost.
    let dir = tempfile::tempdir().unwrap();
    let mut expected = HashMap::new();
    let engine = Engine::open(config(dir.path())).unwrap();
    churn(&engine, &mut expected);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10 {
                    engine.debug_compact(0, CompactionStep::Done).unwrap();
                }
            });
        }
    });
    let stats = engine.stats();
    assert!(
        stats.log_bytes >= stats.log_live_bytes && stats.log_bytes < 1 << 30,
        "log accounting: {} bytes, {} live",
        stats.log_bytes,
        stats.log_live_bytes
    );
    assert_eq!(stats.compaction_errors, 0);
    engine.close().unwrap();
    check(dir.path(), &expected);
}

/// A write logs its record, then changes the sessions in memory, holding
/// its shard's lock throughout. A compaction that seals the log between
/// the two must not list the shard before the write has finished: the
/// record is in the sealed segment, which the base replaces, so the base
/// must show the change, or the change is lost at the next open (a deleted
/// session back, a created one gone). The hook holds a write in that
/// window while a compaction runs to the end.
#[test]
fn a_write_logged_before_the_seal_is_in_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path()).shards(1);
    let engine = Engine::open(config.clone()).unwrap();
    let doomed = engine.create(b"doomed", Timeout::from_secs(3600)).unwrap();
    let kept = engine.create(b"kept", Timeout::from_secs(3600)).unwrap();
    in_compaction_window(&engine, || {
        engine.delete(&doomed).unwrap();
    });
    drop(engine);
    let engine = Engine::open(config.clone()).unwrap();
    assert!(
        engine.peek(&doomed).unwrap_err().is_not_found(),
        "a deleted session came back"
    );

    let fresh = SessionId::from_bytes([0x42; 16]);
    in_compaction_window(&engine, || {
        engine.insert(fresh, b"fresh", Timeout::from_secs(3600)).unwrap();
    });
    drop(engine);
    let engine = Engine::open(config).unwrap();
    assert_eq!(
        engine
            .peek(&fresh)
            .expect("a created session was lost")
            .metadata(),
        b"fresh"
    );
    assert_eq!(engine.peek(&kept).unwrap().metadata(), b"kept");
    assert_eq!(engine.len(), 2);
}

/// Runs `write` (one write to shard 0) with a whole compaction of shard 0
/// started between its append and its change in memory.
fn in_compaction_window(engine: &Engine, write: impl FnOnce()) {
    let (appended, wait) = std::sync::mpsc::channel();
    engine.debug_after_next_append(0, move || {
        appended.send(()).unwrap();
        // Long enough for the compaction to seal and list here.
        std::thread::sleep(Duration::from_millis(300));
    });
    std::thread::scope(|s| {
        let compactor = s.spawn(move || {
            wait.recv().unwrap();
            engine.debug_compact(0, CompactionStep::Done).unwrap();
        });
        write();
        compactor.join().unwrap();
    });
}

/// A `rotate` moves a session to a slot of its own choosing: while a
/// compaction lists the shard slot by slot, it can move a session from a
/// slot not yet listed to one already passed. The base must still hold it
/// (its `ROTATE` record replays over the base and needs the session there),
/// or the session is gone at the next open under both ids. Rotations run
/// throughout a compaction of a shard of 20,000 sessions.
#[test]
fn a_session_rotated_while_compaction_lists_its_shard_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path()).shards(1);
    let engine = Engine::open(config.clone()).unwrap();
    let mut ids: Vec<SessionId> = (0..20_000)
        .map(|i| {
            engine
                .create(format!("s{i}").as_bytes(), Timeout::from_secs(3600))
                .unwrap()
        })
        .collect();
    // Some old ids come back as new sessions (a stale cookie saved again):
    // the rotated session must keep its own data, not the newcomer's.
    let mut reborn = Vec::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rotations = std::thread::scope(|s| {
        let rotator = s.spawn(|| {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n * 7_919 % ids.len();
                let old = ids[i];
                ids[i] = engine.rotate(&old).unwrap();
                if n.is_multiple_of(3) {
                    engine.insert(old, b"reborn", Timeout::from_secs(3600)).unwrap();
                    reborn.push(old);
                }
                n += 1;
            }
            n
        });
        for _ in 0..3 {
            engine.debug_compact(0, CompactionStep::Done).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        rotator.join().unwrap()
    });
    assert!(rotations > 0);
    drop(engine);

    let engine = Engine::open(config).unwrap();
    let lost: Vec<usize> = (0..ids.len())
        .filter(|&i| engine.peek(&ids[i]).is_err())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} sessions lost ({rotations} rotations), e.g. {:?}",
        lost.len(),
        ids.len(),
        &lost[..lost.len().min(5)]
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(engine.peek(id).unwrap().metadata(), format!("s{i}").as_bytes());
    }
    // A reborn id is never rotated again (the rotator moves the current
    // ids only): every one was acknowledged and must be there.
    for id in &reborn {
        let s = engine.peek(id);
        assert_eq!(
            s.as_ref().map(session_engine::Session::metadata).ok(),
            Some(&b"reborn"[..]),
            "{s:?}"
        );
    }
    assert_eq!(engine.len(), ids.len() + reborn.len());
}

/// The segments a compaction replaced leave the process at once: their
/// files are gone, and the next sync round wrote back the pages of those
/// unlinked files (the durable base already holds what they held).
#[test]
fn replaced_segments_are_not_kept_for_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    // Flushes hourly: an engine's first round runs at its first tick, the
    // next an hour later. A round holds the ranges it took until its sync
    // ends, so the check starts once the first round is over: a session
    // written first, the round is over once it was synced. (Written after
    // the first round, on a slow start, it waits an hour: the check then
    // waits out a round that holds a mapping while it looks.)
    let hourly = config(dir.path()).durability(Durability::Interval(Duration::from_secs(3600)));
    let engine = Engine::open(hourly).unwrap();
    let mut expected = HashMap::new();
    let first = engine.create(b"first", Timeout::Never).unwrap();
    expected.insert(first, b"first".to_vec());
    // Both logs' first syncs (what the open left unsynced in each, and the
    // session in one of them).
    let until = Instant::now() + Duration::from_secs(5);
    while engine.stats().log_syncs < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_round_over = engine.stats().log_syncs >= 2;
    churn(&engine, &mut expected);
    for shard in 0..2 {
        engine.debug_compact(shard, CompactionStep::Done).unwrap();
    }
    let ours = dir.path().to_str().unwrap().to_owned();
    let stale = || -> Vec<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|l| l.contains(&ours) && l.ends_with("(deleted)"))
            .map(str::to_owned)
            .collect()
    };
    if !first_round_over {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stale().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        stale().is_empty(),
        "still mapped after the compaction: {:#?}",
        stale()
    );
    engine.close().unwrap();
    check(dir.path(), &expected);
}

/// What a machine crash leaves of shard 0 when nothing appended after a
/// compaction's base was synced: every segment after the base holds only
/// its header (synced when the segment was made).
fn lose_what_follows_the_base(dir: &Path) {
    let segments = support::segment_files(&dir.join("L00000001/S0000"));
    for path in &segments[1..] {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[session_engine::log_format::SEGMENT_HEADER_LEN..].fill(0);
        std::fs::write(path, &bytes).unwrap();
    }
}

/// Sessions rotated while a compaction lists their shard are in the base
/// under both ids when the listing had passed the old one and not yet the
/// new one; the `ROTATE` records after the base remove the old ids on
/// replay. A machine crash that lost those records while the base was
/// already durable opened with both ids of each such rotation live, a
/// state that never was. Whatever a crash leaves must be one that was: so
/// the records the base was listed under are durable before the base
/// replaces the log (here: the compaction stops right after its rename,
/// and nothing after the base is kept unless a sync came by then).
#[test]
fn a_machine_crash_after_a_compaction_never_leaves_both_ids_of_a_rotation() {
    const SESSIONS: usize = 3 * session_engine::limits::LIST_LOCK_BATCH;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path())
        .shards(1)
        .segment_size_bytes(1 << 20)
        .durability(Durability::Interval(Duration::from_secs(3600)))
        .compaction_threshold(0.99);
    let engine = Engine::open(config.clone()).unwrap();
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|i| {
            engine
                .create(format!("s{i}").as_bytes(), Timeout::from_secs(3600))
                .unwrap()
        })
        .collect();
    // The interval's first round (at the sweeper's first tick) is behind,
    // having synced the creates (or, on a slow start, nothing: then it
    // may come during the compaction, which the check of a sync below
    // sees); the next is an hour on.
    let until = Instant::now() + Duration::from_secs(2);
    while engine.stats().log_syncs == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let syncs_before = engine.stats().log_syncs;
    let mut pairs = Vec::new();
    // Stopped right after the rename (a crash there): what was synced by
    // then is all a crash may keep.
    engine
        .debug_compact_listing(0, CompactionStep::Renamed, |listed| {
            if listed == 1 {
                for id in &ids {
                    pairs.push((*id, engine.rotate(id).unwrap()));
                }
            }
        })
        .unwrap();
    assert_eq!(pairs.len(), SESSIONS, "the hook ran after the first batch");
    let synced_by_the_rename = engine.stats().log_syncs != syncs_before;
    drop(engine); // the files keep what the page cache held
    if !synced_by_the_rename {
        lose_what_follows_the_base(dir.path());
    }
    let engine = Engine::open(config).unwrap();
    let both: Vec<_> = pairs
        .iter()
        .filter(|(old, new)| engine.contains(old) && engine.contains(new))
        .collect();
    assert!(
        both.is_empty(),
        "{} of {} rotations live under both ids after the crash, e.g. {:?}",
        both.len(),
        pairs.len(),
        both.first()
    );
    assert_eq!(engine.len(), SESSIONS);
}

/// A panic in a pass of the compactor thread (a bug) is counted and the
/// compactor goes on: a log full of dead records is still compacted.
#[test]
fn the_compactor_survives_a_panic_in_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = HashMap::new();
    let engine = Engine::open(config(dir.path()).compaction_threshold(0.5)).unwrap();
    engine.debug_panic_in_next_pass(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().background_panics == 0 {
        assert!(Instant::now() < deadline, "the panic was not counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    churn(&engine, &mut expected);
    while engine.stats().log_bytes > 2 * engine.stats().log_live_bytes + 4 * 128 * 1024 {
        assert!(
            Instant::now() < deadline,
            "no compaction after the panic: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(engine.stats().background_panics, 1);
    drop(engine);
    check(dir.path(), &expected);
}

/// The `.tmp` files of a shard directory.
fn tmp_files(shard_dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect()
}

/// A compaction that fails after it wrote its base (the rename refused)
/// or panics while it lists the sessions leaves no `.tmp` behind
/// (`FORMAT.md`): the compactor retries after its backoff and each try
/// wrote another full-size base, which piled up until the next open.
#[test]
fn a_failed_or_panicking_compaction_leaves_no_tmp_base() {
    let dir = tempfile::tempdir().unwrap();
    // Segments far larger than the log: the background compactor (which
    // waits for a log of two segments) never runs beside these.
    let engine = Engine::open(config(dir.path()).shards(1).segment_size_bytes(16 << 20)).unwrap();
    let mut expected = HashMap::new();
    churn(&engine, &mut expected);
    let shard_dir = dir.path().join("L00000001/S0000");

    // A panic in the listing (a bug there), after its first batch went
    // into the base file.
    for i in 0..2 * session_engine::limits::LIST_LOCK_BATCH {
        let id = engine
            .create(format!("b{i}").as_bytes(), Timeout::from_secs(3600))
            .unwrap();
        expected.insert(id, format!("b{i}").into_bytes());
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.debug_compact_listing(0, CompactionStep::Done, |listed| {
            assert!(listed < 1, "a bug in the listing");
        })
    }));
    // (The compaction catches it: a failed compaction.)
    assert!(
        !matches!(panicked, Ok(Ok(()))),
        "the compaction went through a panic"
    );
    assert_eq!(
        tmp_files(&shard_dir),
        Vec::<std::path::PathBuf>::new(),
        "after a panic"
    );

    // The rename of the base over the sealed segment refused: a non-empty
    // directory stands in the sealed segment's place.
    let r = engine.debug_compact_listing(0, CompactionStep::Done, |listed| {
        if listed == 0 {
            let segments = support::segment_files(&shard_dir);
            let sealed = &segments[segments.len() - 2];
            std::fs::remove_file(sealed).unwrap();
            std::fs::create_dir(sealed).unwrap();
            std::fs::write(sealed.join("x"), b"x").unwrap();
        }
    });
    assert!(r.is_err(), "the rename cannot replace a directory: {r:?}");
    assert_eq!(
        tmp_files(&shard_dir),
        Vec::<std::path::PathBuf>::new(),
        "after a refused rename"
    );
}

/// Each growth of a shard's table restarts a compaction's listing at slot
/// 0 (its position names a table of another size), and the whole shard goes
/// into the base again: a load that grows the table between every two
/// batches kept the listing from ever ending while the base file grew. It
/// gives up after `COMPACTION_LIST_RESTARTS_MAX` restarts (a failed
/// compaction, retried after the compactor's backoff), leaving no `.tmp`,
/// losing nothing. A rebuild at the same size (churn at a steady count)
/// resumes the listing where it stood: such a load, which used to make
/// every compaction give up, lets it end.
#[test]
fn a_listing_restarted_by_table_growth_gives_up_and_churn_does_not_restart_it() {
    use session_engine::limits::{COMPACTION_LIST_RESTARTS_MAX, LIST_LOCK_BATCH};
    let dir = tempfile::tempdir().unwrap();
    let config = || config(dir.path()).shards(1).segment_size_bytes(16 << 20);
    let engine = Engine::open(config()).unwrap();
    let mut expected = HashMap::new();
    for i in 0..4 * LIST_LOCK_BATCH {
        let id = engine
            .create(format!("s{i}").as_bytes(), Timeout::from_secs(3600))
            .unwrap();
        expected.insert(id, format!("s{i}").into_bytes());
    }
    let shard_dir = dir.path().join("L00000001/S0000");
    // Creates (and deletes, if `steady`) until the shard's table rebuilds.
    let rebuild = |steady: bool, kept: &mut HashMap<SessionId, Vec<u8>>| {
        let before = engine.stats().rehashes_total;
        for _ in 0..1_000_000 {
            let id = engine.create(b"churn", Timeout::from_secs(3600)).unwrap();
            if steady {
                engine.delete(&id).unwrap();
            } else {
                kept.insert(id, b"churn".to_vec());
            }
            if engine.stats().rehashes_total > before {
                return;
            }
        }
        panic!("no table rebuild after a million creates");
    };

    // Churn at a steady count: every rebuild is at the same size.
    let mut batches = 0;
    let r = engine.debug_compact_listing(0, CompactionStep::Done, |listed| {
        if listed > 0 {
            batches += 1;
            rebuild(true, &mut HashMap::new());
        }
    });
    assert!(r.is_ok(), "a compaction through rebuilds at the same size: {r:?}");
    assert!(batches >= 3, "{batches} batches");

    // Growth: without a bound the listing ends only once the growth stops,
    // after this many batches of it.
    const GROWN_BATCHES: usize = 8;
    let mut batches = 0;
    let mut grown = HashMap::new();
    let r = engine.debug_compact_listing(0, CompactionStep::Done, |listed| {
        if listed == 0 {
            return;
        }
        batches += 1;
        if batches <= GROWN_BATCHES {
            rebuild(false, &mut grown);
        }
    });
    assert!(r.is_err(), "a listing restarted by every batch went on");
    assert!(
        batches <= COMPACTION_LIST_RESTARTS_MAX + 1,
        "{batches} batches listed before giving up"
    );
    expected.extend(grown);
    // Checked once closed: the background compactor, which the churn may
    // have set off, has finished by then.
    engine.close().unwrap();
    assert_eq!(tmp_files(&shard_dir), Vec::<std::path::PathBuf>::new());
    let engine = Engine::open(config()).unwrap();
    for (id, metadata) in &expected {
        assert_eq!(engine.peek(id).unwrap().metadata(), &metadata[..], "{id}");
    }
    assert_eq!(engine.len(), expected.len());
}

/// A `.tmp` a compaction left (a crash at the step, a removal that failed)
/// does not fail the next compaction of that shard: its name is the one the
/// next try reserves while nothing rolls the log on, and the try failed on
/// it (`File exists`) until a write did.
#[test]
fn a_tmp_left_by_a_compaction_does_not_fail_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = HashMap::new();
    let engine = Engine::open(config(dir.path())).unwrap();
    churn(&engine, &mut expected);
    // A compaction first: its seal leaves the shard writing a segment
    // nearly empty, with no next one prepared ahead (which the log makes
    // once its segment is half full), so the newest file is the one
    // being written.
    engine.debug_compact(0, CompactionStep::Done).unwrap();
    // A leftover under the name of the segment being written, which is the
    // name the next compaction reserves its base's room under.
    let shard_dir = dir.path().join("L00000001/S0000");
    let current = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    std::fs::write(current.with_extension("tmp"), b"left by a failed compaction").unwrap();
    engine.debug_compact(0, CompactionStep::Done).unwrap();
    assert_eq!(tmp_files(&shard_dir), Vec::<std::path::PathBuf>::new());
    drop(engine);
    check(dir.path(), &expected);
}
