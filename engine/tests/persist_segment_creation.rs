//! A segment whose creation a crash cut short. A segment file is created
//! under a `.new` name and renamed once its header is written, so a crash
//! mid-creation leaves a `.new` file, never a headerless segment. The log
//! can roll past a segment the background thread is still preparing (the
//! writer makes the next one itself when none is ready), so such a file
//! can sit between sealed segments; a `Strict` open must remove it and
//! find nothing wrong. (Before, the headerless `.seg` it left right after
//! a sealed segment read as damage, and `Strict` refused to open: the
//! SIGKILL suite `persist_crash_kill` hit it about once in 50 runs.)

use std::path::Path;

use session_engine::{Config, Durability, Engine, RecoveryMode, SessionId, Timeout};

fn config(dir: &Path) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Interval(std::time::Duration::from_secs(1)))
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(1024)
        .recovery_mode(RecoveryMode::Strict)
        .without_sweeper()
}

fn id(i: u32) -> SessionId {
    let mut id = [0x5A; 16];
    id[..4].copy_from_slice(&i.to_le_bytes());
    SessionId::from_bytes(id)
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for layout in std::fs::read_dir(dir).unwrap().flatten() {
        if !layout.path().is_dir() {
            continue;
        }
        for shard in std::fs::read_dir(layout.path()).unwrap().flatten() {
            for file in std::fs::read_dir(shard.path()).unwrap().flatten() {
                if file.path().to_string_lossy().ends_with(suffix) {
                    found.push(file.path());
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_segment_cut_short_between_sealed_ones_is_removed_and_strict_opens() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    for i in 0..1_000 {
        engine
            .insert(id(i), &[(i % 251) as u8 | 1; 200], Timeout::Never)
            .unwrap();
    }
    drop(engine);
    let segments = files(dir.path(), ".seg");
    assert!(segments.len() >= 3, "the log rolled: {segments:?}");
    assert!(files(dir.path(), ".new").is_empty(), "no creation left half done");

    // What a crash leaves when it cuts the preparation of the segment
    // after the first one short while the writer had rolled on past it: a
    // file of zeros, the segment's length, under the `.new` name.
    let first = &segments[0];
    let stem = first
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse::<u64>()
        .unwrap();
    let cut_short = first.with_file_name(format!("{:016}.new", stem + 1));
    std::fs::write(&cut_short, vec![0u8; 64 * 1024]).unwrap();

    let engine = Engine::open(config(dir.path())).expect("Strict opens");
    assert_eq!(engine.len(), 1_000);
    for i in [0, 499, 999] {
        assert_eq!(
            engine.peek(&id(i)).unwrap().metadata(),
            &[(i % 251) as u8 | 1; 200]
        );
    }
    assert!(!cut_short.exists(), "the cut-short creation was removed");
    engine.insert(id(1_000), b"after", Timeout::Never).unwrap();
    drop(engine);
    assert!(Engine::open(config(dir.path())).unwrap().contains(&id(1_000)));
}

/// A segment's name must never reach the disk before its header does: after
/// a machine crash, a named segment of zeros right after a sealed one reads
/// as damage (the writer had rolled into it, so it was whole), and `Strict`
/// would refuse to open. So a new segment's header is synced before the
/// file is renamed to its `.seg` name. Shown with syncs that fail: a segment
/// whose header cannot be made durable is never named; the write that
/// needed it fails with a typed error, and everything acknowledged stays.
/// In every durability: `Never` syncs no record, but a segment named
/// without its header (it created them so) made `Strict` refuse to open
/// after a power loss that kept the name and lost the header page.
#[test]
fn a_segment_whose_header_cannot_be_synced_is_never_named() {
    // A flush interval longer than the test: no log sync but the header's.
    for durability in [
        Durability::Interval(std::time::Duration::from_secs(3_600)),
        Durability::Never,
    ] {
        header_sync_fails(durability);
    }
}

fn header_sync_fails(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path()).durability(durability);
    let engine = Engine::open(config.clone()).unwrap();
    engine.debug_fail_syncs();
    let mut written = 0;
    let mut failure = None;
    for i in 0..1_000 {
        match engine.insert(id(i), &[(i % 251) as u8 | 1; 200], Timeout::Never) {
            Ok(()) => written += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure =
        failure.unwrap_or_else(|| panic!("{durability:?}: the write that needed a second segment failed"));
    assert!(failure.to_string().contains("injected sync failure"), "{failure}");
    assert!(written > 0, "the first segment took writes");
    assert_eq!(engine.len(), written, "the failed write left nothing");
    assert_eq!(
        files(dir.path(), ".seg").len(),
        1,
        "{:?}",
        files(dir.path(), ".seg")
    );
    assert!(
        files(dir.path(), ".new").is_empty(),
        "{:?}",
        files(dir.path(), ".new")
    );
    drop(engine);
    let engine = Engine::open(config).expect("Strict opens");
    assert_eq!(engine.len(), written);
}
