//! A first open that stopped part-way (a crash or a full disk before the
//! MANIFEST was written) is retried cleanly; a directory whose MANIFEST went
//! missing while its logs hold data is refused, not overwritten.

mod support;

use session_engine::{Config, Durability, Engine, Error, Timeout};

fn config(dir: &std::path::Path) -> Config {
    Config::default()
        .shards(2)
        .data_dir(dir)
        .durability(Durability::Never)
        .segment_size_bytes(1 << 20)
        .without_sweeper()
}

#[test]
fn a_first_open_cut_short_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    // What a first open leaves when it dies before its MANIFEST: the
    // shards' empty segments.
    Engine::open(config(dir.path())).unwrap().close().unwrap();
    std::fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let engine = Engine::open(config(dir.path())).expect("the unfinished creation is redone");
    let id = engine.create(b"kept", Timeout::Never).unwrap();
    engine.close().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.get(&id).unwrap().metadata(), b"kept");
}

#[test]
fn logs_with_data_but_no_manifest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    for _ in 0..10 {
        engine.create(b"precious", Timeout::Never).unwrap();
    }
    engine.close().unwrap();
    std::fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let err = Engine::open(config(dir.path())).expect_err("refused");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("MANIFEST"), "{err}");
    // Nothing was removed: the segments are still there.
    let segments = support::segments_under(dir.path()).len();
    assert_eq!(segments, 2, "one segment per shard survives");
}

#[test]
fn a_resharded_directory_without_its_manifest_is_refused_too() {
    // Resharding moves the data to layout 2 and deletes layout 1: a missing
    // MANIFEST must be noticed there as well, or the next open would start
    // empty in layout 1 and the one after would delete layout 2.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    for _ in 0..10 {
        engine.create(b"precious", Timeout::Never).unwrap();
    }
    engine.close().unwrap();
    Engine::open(config(dir.path()).shards(4))
        .unwrap()
        .close()
        .unwrap();
    assert!(dir.path().join("L00000002").is_dir() && !dir.path().join("L00000001").exists());
    std::fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let err = Engine::open(config(dir.path()).shards(4)).expect_err("refused");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("L00000002"), "{err}");
}

/// Entries in the data directory that merely look like layouts (`L1`,
/// `L+2`: not names the engine gives, `L00000001`) are the user's: neither
/// a first open (which clears what an unfinished one left) nor a reshard
/// (which removes the old layout) touches them. A first open removed `L1`
/// whole, its files short enough to read as empty segments.
#[test]
fn a_users_entries_that_look_like_layouts_are_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["L1", "L+2", "L2"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("notes.txt"), b"ten bytes!").unwrap();
    }
    let engine = Engine::open(config(dir.path())).expect("first open");
    let id = engine.create(b"kept", Timeout::Never).unwrap();
    engine.close().unwrap();
    // A reshard moves the data to a new layout and removes the old one.
    let engine = Engine::open(config(dir.path()).shards(4)).expect("resharded");
    assert_eq!(engine.get(&id).unwrap().metadata(), b"kept");
    engine.close().unwrap();
    for name in ["L1", "L+2", "L2"] {
        assert_eq!(
            std::fs::read(dir.path().join(name).join("notes.txt")).expect(name),
            b"ten bytes!"
        );
    }
}
