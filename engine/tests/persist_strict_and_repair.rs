//! What `Strict` and `Repair` promise, on damage a crash cannot cause: Strict
//! refuses damage anywhere but the torn tail of a shard's last segment, naming
//! the file; Repair keeps every record that verifies, even in a segment whose
//! header is damaged, and repairs for good, so that the next (Strict) open
//! finds nothing wrong.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use session_engine::{CompactionStep, Config, Durability, Engine, Error, RecoveryMode, SessionId, Timeout};

fn config(dir: &Path, mode: RecoveryMode) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Never)
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(1024)
        .recovery_mode(mode)
        .without_sweeper()
}

type State = BTreeMap<SessionId, Vec<u8>>;

fn state(engine: &Engine) -> State {
    engine
        .list_all()
        .into_iter()
        .map(|s| (s.id(), s.metadata().to_vec()))
        .collect()
}

fn open(dir: &Path, mode: RecoveryMode) -> Result<State, Error> {
    Engine::open(config(dir, mode)).map(|e| state(&e))
}

/// A one-shard log over three segments or more; returns the directory, the
/// segment files in order and the sessions it holds.
fn build() -> (tempfile::TempDir, Vec<PathBuf>, State) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    for i in 0..600u32 {
        let mut id = [0xA5; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let meta: Vec<u8> = (0..200).map(|k| (i as u8).wrapping_add(k as u8) | 1).collect();
        engine
            .insert(SessionId::from_bytes(id), &meta, Timeout::Never)
            .unwrap();
    }
    let expected = state(&engine);
    engine.close().unwrap();
    let shard = dir.path().join("L00000001/S0000");
    let segments = support::segment_files(&shard);
    assert!(segments.len() >= 3, "{segments:?}");
    (dir, segments, expected)
}

fn damage(segment: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(segment).unwrap();
    change(&mut bytes);
    std::fs::write(segment, bytes).unwrap();
}

fn refused_naming(dir: &Path, file: &Path) -> Error {
    match open(dir, RecoveryMode::Strict) {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt { path, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path.file_name(), file.file_name(), "{e}");
            e
        }
        other => panic!(
            "strict open of damage in {} gave {:?}",
            file.display(),
            other.map(|sessions| format!("{} sessions", sessions.len()))
        ),
    }
}

/// A repair for good that lost some sessions and changed none it kept.
fn repaired_with_less(dir: &Path, expected: &State) {
    let repaired = repaired_for_good(dir);
    assert!(repaired.len() < expected.len());
    assert!(repaired.iter().all(|(id, meta)| expected.get(id) == Some(meta)));
}

/// After a repair, the next default open finds the same sessions and no damage.
fn repaired_for_good(dir: &Path) -> State {
    let repaired = open(dir, RecoveryMode::Repair).unwrap();
    let again = open(dir, RecoveryMode::Strict).expect("strict open after a repair");
    assert_eq!(again, repaired, "the repair was not durable");
    repaired
}

#[test]
fn a_zeroed_tail_of_an_earlier_segment_is_refused() {
    let (dir, segments, expected) = build();
    damage(&segments[0], |bytes| {
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        bytes[end - 300..end].fill(0);
    });
    refused_naming(dir.path(), &segments[0]);
    let repaired = repaired_for_good(dir.path());
    assert!(repaired.len() < expected.len() && repaired.len() >= expected.len() - 2);
    assert!(repaired.iter().all(|(id, meta)| expected.get(id) == Some(meta)));
}

#[test]
fn a_shortened_earlier_segment_is_refused() {
    let (dir, segments, expected) = build();
    damage(&segments[1], |bytes| bytes.truncate(bytes.len() / 2));
    refused_naming(dir.path(), &segments[1]);
    repaired_with_less(dir.path(), &expected);
}

#[test]
fn a_flipped_bit_in_a_segment_header_loses_no_record() {
    let (dir, segments, expected) = build();
    // The header's sequence field (bytes 24..32 in every format).
    damage(&segments[1], |bytes| bytes[26] ^= 0x04);
    let e = refused_naming(dir.path(), &segments[1]);
    assert!(matches!(e, Error::Corrupt { offset: 0, .. }), "{e}");
    assert_eq!(repaired_for_good(dir.path()), expected, "a record was dropped");
}

#[test]
fn a_flipped_bit_in_a_record_is_repaired_for_good() {
    let (dir, segments, expected) = build();
    damage(&segments[0], |bytes| bytes[5_000] ^= 0x10);
    refused_naming(dir.path(), &segments[0]);
    let repaired = repaired_for_good(dir.path());
    assert_eq!(repaired.len(), expected.len() - 1, "one record damaged");
}

/// A segment gone from the middle of a log (deleted by hand, lost by the
/// file system): later segments would replay without its records (a
/// session it deleted would come back, one it created would be lost, with
/// no word). The seal before it names it as the next segment: `Strict`
/// refuses, naming the missing file; `Repair` keeps every other record and
/// repairs for good.
#[test]
fn a_segment_missing_from_the_middle_is_refused() {
    let (dir, segments, expected) = build();
    std::fs::remove_file(&segments[1]).unwrap();
    let e = refused_naming(dir.path(), &segments[1]);
    assert!(e.to_string().contains("missing"), "{e}");
    repaired_with_less(dir.path(), &expected);
}

/// The same with the segment's file still there but its data gone (zeroed
/// after its headers, as pages the disk lost): it looked like an empty
/// segment prepared ahead of need, which is harmless, and was removed.
#[test]
fn a_middle_segment_whose_data_is_gone_is_refused() {
    let (dir, segments, expected) = build();
    // Records start after the two 64-byte header copies.
    damage(&segments[1], |bytes| bytes[128..].fill(0));
    refused_naming(dir.path(), &segments[1]);
    repaired_with_less(dir.path(), &expected);
}

/// The first segments of a log gone (no base before what is left): the
/// log's first segment holding data is neither its first nor a base, so
/// what came before it is missing.
#[test]
fn the_first_segment_missing_is_refused() {
    let (dir, segments, expected) = build();
    std::fs::remove_file(&segments[0]).unwrap();
    let e = refused_naming(dir.path(), &segments[1]);
    assert!(e.to_string().contains("missing"), "{e}");
    repaired_with_less(dir.path(), &expected);
}

/// A base whose data is gone (its header good) replaced every segment
/// before it, and read as an empty segment prepared ahead of need: the
/// shard opened empty, with no word.
#[test]
fn a_base_whose_data_is_gone_is_refused() {
    let (dir, segments, _expected) = build();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine.debug_compact(0, CompactionStep::Done).unwrap();
    engine.close().unwrap();
    let shard = segments[0].parent().unwrap();
    let after = support::segment_files(shard);
    let base = &after[0];
    damage(base, |bytes| bytes[128..].fill(0));
    let e = refused_naming(dir.path(), base);
    assert!(e.to_string().contains("base"), "{e}");
}

/// The segment a seal names gone while an empty segment after it is left
/// (in `Never` mode a machine crash can lose a new segment's name and keep
/// a later prepared one): nothing after the seal held data, so the open
/// goes on; appends must then go on in the segment the seal names, or the
/// next open finds data past a missing segment and refuses a log that
/// lost nothing more.
#[test]
fn appends_after_a_lost_named_segment_go_on_under_its_name() {
    let (dir, segments, _expected) = build();
    // Two seals in a row: the last segment with records names a segment
    // holding only a seal, which names an empty one.
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine.debug_compact(0, CompactionStep::Sealed).unwrap();
    engine.debug_compact(0, CompactionStep::Sealed).unwrap();
    engine.close().unwrap();
    let shard = segments[0].parent().unwrap();
    let after = support::segment_files(shard);
    assert_eq!(after.len(), segments.len() + 2, "{after:?}");
    let named = &after[segments.len()];
    std::fs::remove_file(named).unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    let id = engine.create(b"after", Timeout::Never).unwrap();
    let kept = state(&engine);
    engine.close().unwrap();
    let again = open(dir.path(), RecoveryMode::Strict).expect("a second open");
    assert_eq!(again, kept);
    assert!(again.contains_key(&id));
}

/// A MANIFEST naming a layout that is not there (renamed, lost): refused in
/// both modes, and the directory's other layouts are left alone. It opened
/// as an empty store, after deleting every other layout, possibly the only
/// copy of the data.
#[test]
fn a_missing_layout_is_refused_and_nothing_is_deleted() {
    let (dir, _segments, _state) = build();
    let named = dir.path().join("L00000001");
    let elsewhere = dir.path().join("L00000002");
    std::fs::rename(&named, &elsewhere).unwrap();
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        match open(dir.path(), mode) {
            Err(Error::Corrupt { path, reason, .. }) => {
                assert_eq!(path, named, "{reason}");
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        assert!(elsewhere.exists(), "{mode:?} deleted the other layout");
    }
}

/// A shard directory of the layout gone: refused, not opened without that
/// shard's sessions.
#[test]
fn a_missing_shard_directory_is_refused() {
    let (dir, _segments, _state) = build();
    let shard = dir.path().join("L00000001").join("S0000");
    std::fs::remove_dir_all(&shard).unwrap();
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        match open(dir.path(), mode) {
            Err(e @ Error::Corrupt { .. }) => {
                let Error::Corrupt { path, reason, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(path, &shard, "{reason}");
                // Repair cannot bring a directory back: the message must not
                // send the operator to it (it did, and Repair then failed
                // with the same words).
                let text = e.to_string();
                assert!(
                    !text.contains("open with RecoveryMode::Repair"),
                    "{mode:?}: {text}"
                );
                assert!(text.contains("Repair cannot"), "{mode:?}: {text}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

/// A segment file extended far past its header's length (sparse: 1 TiB of
/// zeros on disk costs nothing) is damage the open names at once, and Repair
/// keeps every record. Recovery read each segment whole into memory: the
/// open failed with an out-of-memory I/O error in both modes, and a smaller
/// extension (tens of GiB) would have been read into memory before the
/// damage was found.
#[test]
fn a_segment_extended_past_memory_is_named_and_repaired() {
    let (dir, segments, expected) = build();
    let extended = &segments[1];
    std::fs::OpenOptions::new()
        .write(true)
        .open(extended)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let e = refused_naming(dir.path(), extended);
    assert!(e.to_string().contains("extended"), "{e}");
    assert_eq!(repaired_for_good(dir.path()), expected, "a record was dropped");
}

/// The same for an empty segment (one prepared ahead of the writer, or
/// the one a seal rolled into): its length is checked like any other's
/// (FORMAT.md), not only when it holds data.
#[test]
fn an_extended_empty_segment_is_named_and_removed_by_repair() {
    let (dir, segments, expected) = build();
    // A compaction stopped after its seal leaves the log in a new, empty
    // segment.
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine.debug_compact(0, CompactionStep::Sealed).unwrap();
    engine.close().unwrap();
    let shard = segments[0].parent().unwrap();
    let after = support::segment_files(shard);
    let empty = after.last().unwrap().clone();
    assert!(
        !segments.contains(&empty),
        "no new segment after the seal: {after:?}"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&empty)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let e = refused_naming(dir.path(), &empty);
    assert!(e.to_string().contains("extended"), "{e}");
    assert_eq!(repaired_for_good(dir.path()), expected, "a record was dropped");
    assert!(
        std::fs::metadata(&empty).map_or(true, |m| m.len() < 1 << 30),
        "the repair left the extended segment"
    );
}

/// An open refused because the directory holds more live sessions than
/// `sessions_max` changes nothing on disk: the damage a Repair open would
/// drop is still there for the retried open to report (Strict still
/// refuses it). It used to be refused only after the layout was rewritten
/// without the damaged records, and the report that named them was lost.
#[test]
fn an_open_refused_for_sessions_max_changes_nothing_on_disk() {
    let (dir, segments, _expected) = build();
    damage(&segments[1], |b| b[5_000] ^= 0x10);
    let err = Engine::open(config(dir.path(), RecoveryMode::Repair).sessions_max(10)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref why) if why.contains("sessions_max")),
        "{err}"
    );
    refused_naming(dir.path(), &segments[1]);
    let engine = Engine::open(config(dir.path(), RecoveryMode::Repair)).unwrap();
    let report = engine.recovery_report().unwrap();
    assert!(report.rewritten && !report.damage.is_empty(), "{report:?}");
}

/// Where `id` is written in `bytes`, one byte inside each copy. A byte
/// next to a copy (a checksum, a length) can equal the id's own bytes, so
/// that one copy matches at two overlapping offsets: overlapping matches are
/// one copy, and the byte returned (the run's last match) lies inside the
/// id whichever of them it starts at.
fn id_runs(bytes: &[u8], id: [u8; 16]) -> Vec<usize> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for at in (0..bytes.len().saturating_sub(15)).filter(|&at| bytes[at..at + 16] == id) {
        match runs.last_mut() {
            Some((first, last)) if at < *first + 16 => *last = at,
            _ => runs.push((at, at)),
        }
    }
    runs.into_iter().map(|(_, last)| last).collect()
}

/// A session deleted and made again under its id in the same millisecond
/// (ids a caller chooses) is logged as a session of a later millisecond, as
/// one that expired is: should the `DELETE` between them be damaged, a
/// repair that skips it cannot take the new session's `PUT` for the old
/// session's (same id, same creation time), which would keep the deleted
/// session's topics on the new one. Likewise a rotation away.
#[test]
fn a_session_made_again_in_the_millisecond_of_its_delete_is_not_the_old_one() {
    for rotate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = session_engine::ManualClock::new(1_700_000_000_000);
        let engine = Engine::open(config(dir.path(), RecoveryMode::Strict).clock(clock.clock())).unwrap();
        let x = SessionId::from_bytes([0x3C; 16]);
        engine.insert(x, b"old", Timeout::Never).unwrap();
        assert!(engine.subscribe(&x, "a").unwrap());
        if rotate {
            engine.rotate(&x).unwrap();
        } else {
            engine.delete(&x).unwrap();
        }
        engine.insert(x, b"new", Timeout::Never).unwrap();
        assert!(engine.topics(&x).unwrap().is_empty());
        // Records after it, so that the damage is not the log's torn tail.
        for i in 0..20u32 {
            let mut id = [0x5A; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            engine
                .insert(SessionId::from_bytes(id), b"later", Timeout::Never)
                .unwrap();
        }
        engine.close().unwrap();
        let segments = support::segment_files(&dir.path().join("L00000001/S0000"));
        // PUT, SUBSCRIBE, DELETE (or ROTATE), PUT: damage the third.
        damage(&segments[0], |bytes| {
            let runs = id_runs(bytes, [0x3C; 16]);
            assert_eq!(runs.len(), 4, "rotate {rotate}: {runs:?}");
            bytes[runs[2]] ^= 0x01;
        });
        let engine = Engine::open(
            config(dir.path(), RecoveryMode::Repair)
                .clock(session_engine::ManualClock::new(1_700_000_000_001).clock()),
        )
        .unwrap();
        assert_eq!(engine.peek(&x).unwrap().metadata(), b"new", "rotate {rotate}");
        assert_eq!(
            engine.topics(&x).unwrap(),
            Vec::<String>::new(),
            "rotate {rotate}: the new session took the deleted one's topics"
        );
    }
}
