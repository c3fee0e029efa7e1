//! Changing the shard count between runs recovers every session, and the
//! data directory is private and single-owner.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use session_engine::{Config, Durability, Engine, Error, RecoveryMode, SessionId, Timeout};

fn open(dir: &std::path::Path, shards: usize) -> Engine {
    Engine::open(
        Config::default()
            .shards(shards)
            .data_dir(dir)
            .durability(Durability::Never)
            .segment_size_bytes(128 * 1024)
            .without_sweeper(),
    )
    .unwrap()
}

#[test]
fn every_session_survives_a_change_of_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: HashMap<SessionId, Vec<u8>> = HashMap::new();
    {
        let engine = open(dir.path(), 4);
        for i in 0..2_000u32 {
            let meta = i.to_le_bytes().repeat(10);
            expected.insert(engine.create(&meta, Timeout::from_secs(3600)).unwrap(), meta);
        }
    }
    for shards in [16, 1, 8] {
        let engine = open(dir.path(), shards);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.sessions, expected.len(), "to {shards} shards: {report:?}");
        assert!(report.reshard.is_some());
        for (id, meta) in &expected {
            assert_eq!(
                engine.peek(id).unwrap().metadata(),
                &meta[..],
                "to {shards} shards"
            );
        }
        // Writes in the new layout land where the next open finds them.
        let id = engine.create(b"after reshard", Timeout::Never).unwrap();
        expected.insert(id, b"after reshard".to_vec());
        engine.debug_check_invariants();
    }
    // Only one layout directory is left.
    let layouts = std::fs::read_dir(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().starts_with('L'))
        .count();
    assert_eq!(layouts, 1);
    let engine = open(dir.path(), 8);
    assert_eq!(engine.recovery_report().unwrap().reshard, None);
    assert_eq!(engine.len(), expected.len());
}

#[test]
fn a_second_open_of_the_same_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 2);
    let err = Engine::open(Config::default().shards(2).data_dir(dir.path()))
        .err()
        .unwrap();
    assert!(matches!(err, Error::DirectoryLocked { .. }), "{err}");
    assert!(err.to_string().contains("already open"));
    drop(first);
    // Released with the engine.
    open(dir.path(), 2);
}

#[test]
fn files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let engine = open(&data, 2);
    engine.create(b"x", Timeout::Never).unwrap();
    drop(engine);
    let mut stack = vec![data];
    let mut files = 0;
    while let Some(path) = stack.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 4, "lock, manifest and two segments");
}

#[test]
fn a_damaged_manifest_is_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 2));
    let manifest = dir.path().join("MANIFEST");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[20] ^= 0xFF;
    std::fs::write(&manifest, bytes).unwrap();
    let err = Engine::open(Config::default().shards(2).data_dir(dir.path()))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("MANIFEST"), "{err}");
    // Repair skips damaged records; it cannot rebuild the MANIFEST (the
    // log key and the layout are in it), and the message says so.
    let repair = Engine::open(
        Config::default()
            .shards(2)
            .data_dir(dir.path())
            .recovery_mode(RecoveryMode::Repair),
    )
    .err()
    .unwrap();
    for err in [err, repair] {
        let text = err.to_string();
        assert!(!text.contains("open with RecoveryMode::Repair"), "{text}");
        assert!(text.contains("Repair cannot"), "{text}");
    }
}

/// Rewrites the MANIFEST's hash key (and its checksum) as a directory whose
/// logs were routed by another hash looks to this build: the ids sit in the
/// logs another routing put them in.
fn route_differently(dir: &std::path::Path) {
    let path = dir.join("MANIFEST");
    let mut m = std::fs::read(&path).unwrap();
    assert_eq!(m.len(), 80);
    for b in &mut m[24..56] {
        *b ^= 0x5a;
    }
    let crc = crc32c::crc32c(&m[..72]);
    m[72..76].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &m).unwrap();
}

/// A directory whose logs were routed to shards by another hash than the
/// one this build computes (another build of the hash function: ahash
/// changes its output with the CPU features it is compiled for, the
/// toolchain and its version) is re-routed at the open, every session
/// recovered and reachable; the next open keeps the new layout. (The
/// layout was kept: each log's sessions went to its shard, while every
/// later operation routed by the new hash and missed most of them; `len`
/// still counted them.)
#[test]
fn logs_routed_by_another_hash_are_rerouted() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: HashMap<SessionId, Vec<u8>> = HashMap::new();
    {
        let engine = open(dir.path(), 4);
        for i in 0..400u32 {
            let meta = i.to_le_bytes().to_vec();
            expected.insert(engine.create(&meta, Timeout::from_secs(3600)).unwrap(), meta);
        }
    }
    route_differently(dir.path());
    {
        let engine = open(dir.path(), 4);
        for (id, meta) in &expected {
            assert_eq!(engine.peek(id).expect("reachable").metadata(), &meta[..]);
        }
        let report = engine.recovery_report().unwrap().clone();
        assert!(report.rerouted, "{report:?}");
        assert_eq!(report.sessions, expected.len());
        engine.debug_check_invariants();
        let id = engine.create(b"after", Timeout::Never).unwrap();
        expected.insert(id, b"after".to_vec());
    }
    let engine = open(dir.path(), 4);
    assert!(!engine.recovery_report().unwrap().rerouted, "recorded");
    assert_eq!(engine.len(), expected.len());
    for (id, meta) in &expected {
        assert_eq!(engine.peek(id).unwrap().metadata(), &meta[..]);
    }
}
