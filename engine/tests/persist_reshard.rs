//! Changing the shard count between runs recovers every session, and the
//! data directory is private and single-owner.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use session_engine::{Config, Durability, Engine, Error, SessionId, Timeout};

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
}
