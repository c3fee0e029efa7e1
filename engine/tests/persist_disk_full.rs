//! A full disk: when a new log segment cannot be allocated, the write that
//! needed it fails with a typed I/O error, memory does not show it, reads go
//! on, and everything acknowledged before is recovered. The child process
//! opens its engine, then lowers its file-size limit (RLIMIT_FSIZE) below
//! one segment with SIGXFSZ ignored, so the kernel fails the next segment's
//! allocation with EFBIG exactly as a full disk fails it with ENOSPC.

mod support;

use std::path::Path;
use std::process::Command;

use session_engine::{CompactionStep, Config, Durability, Engine, Error, SessionId, Timeout};

const CHILD_ENV: &str = "SESSION_DISK_FULL_CHILD";
const COMPACT_CHILD_ENV: &str = "SESSION_DISK_FULL_COMPACT_CHILD";
const ROOM_AGAIN_CHILD_ENV: &str = "SESSION_DISK_FULL_ROOM_AGAIN_CHILD";

fn config(dir: &Path) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Always)
        .segment_size_bytes(256 * 1024)
        .metadata_bytes_max(4096)
        .without_sweeper()
}

fn id(n: u32) -> SessionId {
    let mut bytes = [0xA5u8; 16];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    SessionId::from_bytes(bytes)
}

#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let engine = Engine::open(config(Path::new(&dir))).unwrap();
    // From here on no file may grow past 64 KiB: the open segment (256 KiB,
    // allocated already) takes writes until it is full, the next cannot exist.
    let limit = rustix::process::Rlimit {
        current: Some(64 * 1024),
        maximum: Some(64 * 1024),
    };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let (acked, err) = insert_until_refused(&engine, &[7u8; 1000], 10_000);
    assert!(matches!(err, Error::Io { .. }), "typed error: {err:?}");
    assert!(err.to_string().contains("creating segment"), "{err}");
    // Nothing half-applied: the failed session is not there.
    assert!(engine.peek(&id(acked)).unwrap_err().is_not_found());
    assert_eq!(engine.len(), acked as usize);
    // Reads go on; later writes that need space fail the same clean way.
    assert!(engine.get(&id(0)).is_ok());
    assert!(matches!(
        engine.create(&[1u8; 1000], Timeout::Never),
        Err(Error::Io { .. })
    ));
    assert_eq!(engine.len(), acked as usize);
    println!("ACKED {acked}");
}

/// Runs the test `child` of this binary in a child process with SIGXFSZ
/// ignored (inherited through exec: the syscall fails instead), `env` set
/// to `dir`; returns its stdout after checking it succeeded.
fn run_child(child: &str, env: &str, dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "trap '' XFSZ; exec '{}' --exact {child} --nocapture --test-threads=1",
        exe.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env(env, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn compaction_on_a_full_disk_child() {
    let Ok(dir) = std::env::var(COMPACT_CHILD_ENV) else {
        return;
    };
    let engine = Engine::open(config(Path::new(&dir))).unwrap();
    // 400 KB of live sessions over two 256 KiB segments.
    for n in 0..400 {
        engine.insert(id(n), &[3u8; 1000], Timeout::Never).unwrap();
    }
    // Room for the next segment (256 KiB) but not for a base of 400 KB.
    let limit = rustix::process::Rlimit {
        current: Some(300 * 1024),
        maximum: Some(300 * 1024),
    };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    let shard_dir = Path::new(&dir).join("L00000001/S0000");
    let files = |suffix: &str| -> Vec<String> {
        std::fs::read_dir(&shard_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(suffix))
            .collect()
    };
    let segments_before = files(".seg").len();
    // The compactor retries a failed compaction (with backoff): each try
    // used to seal the segment being written and roll into a new one before
    // finding no room for the base, leaving a full-size, nearly empty
    // segment behind per try, until the disk filled with them.
    for _ in 0..5 {
        let err = engine.debug_compact(0, CompactionStep::Done).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "typed error: {err:?}");
        assert!(err.to_string().contains("base"), "{err}");
    }
    let segments = files(".seg");
    assert!(
        segments.len() <= segments_before + 1,
        "5 failed compactions took {} segments' room: {segments:?} (before: {segments_before})",
        segments.len() - segments_before
    );
    let leftovers = files(".tmp");
    assert!(leftovers.is_empty(), "a failed compaction left {leftovers:?}");
    // Nothing lost: every session is still there, and writes go on.
    assert_eq!(engine.len(), 400);
    engine.insert(id(400), &[3u8; 10], Timeout::Never).unwrap();
    println!("COMPACT CHILD OK");
}

#[test]
fn a_failed_compaction_removes_its_partial_base_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_child("compaction_on_a_full_disk_child", COMPACT_CHILD_ENV, dir.path());
    assert!(stdout.contains("COMPACT CHILD OK"), "{stdout}");
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.len(), 401);
}

/// Runs `child` (see [`run_child`]) and reads the count of sessions it
/// had acknowledged (`ACKED n`).
fn acked_by_child(child: &str, env: &str, dir: &Path) -> u32 {
    run_child(child, env, dir)
        .lines()
        .find_map(|l| l.split("ACKED ").nth(1))
        .expect("the child reported")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let acked = acked_by_child("disk_full_child", CHILD_ENV, dir.path());
    assert!(acked > 100, "it wrote before the disk filled: {acked}");
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.len(), acked as usize);
    for n in 0..acked {
        let got = engine
            .peek(&id(n))
            .unwrap_or_else(|e| panic!("acknowledged session {n} lost: {e}"));
        assert_eq!(got.metadata(), [7u8; 1000], "session {n}'s metadata");
    }
    assert!(engine.peek(&id(acked)).unwrap_err().is_not_found());
}

#[test]
fn room_again_child() {
    let Ok(dir) = std::env::var(ROOM_AGAIN_CHILD_ENV) else {
        return;
    };
    let engine = Engine::open(config(Path::new(&dir))).unwrap();
    // Only the soft limit is lowered: raised again, it is the disk freed.
    let before = rustix::process::getrlimit(rustix::process::Resource::Fsize);
    let full = rustix::process::Rlimit {
        current: Some(64 * 1024),
        maximum: before.maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, full).unwrap();
    let (refused_at, err) = insert_until_refused(&engine, &[7u8; 1000], 10_000);
    assert!(matches!(err, Error::Io { .. }), "typed error: {err:?}");
    // A second refusal, so that the failed segment's sequence number is
    // not the only one skipped.
    assert!(engine
        .insert(id(refused_at), &[7u8; 1000], Timeout::Never)
        .is_err());
    rustix::process::setrlimit(rustix::process::Resource::Fsize, before).unwrap();
    // The refused session and more after it go through, into new segments.
    for n in refused_at..refused_at + 600 {
        engine
            .insert(id(n), &[8u8; 1000], Timeout::Never)
            .unwrap_or_else(|e| panic!("insert {n} after the disk had room again: {e}"));
    }
    println!("ACKED {}", refused_at + 600);
}

/// Once the disk has room again, writes go on where they stopped: the
/// segment whose creation failed is made again, nothing is wedged, and the
/// directory opens in `Strict` mode with every acknowledged session (the
/// skipped segment number is no damage).
#[test]
fn writes_resume_once_the_disk_has_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let acked = acked_by_child("room_again_child", ROOM_AGAIN_CHILD_ENV, dir.path());
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.len(), acked as usize);
    // The child wrote [7; 1000] until the disk refused, then [8; 1000]
    // for the refused id and 599 more: none of the refused bytes is back.
    let refused_at = acked - 600;
    for n in 0..acked {
        let got = engine
            .peek(&id(n))
            .unwrap_or_else(|e| panic!("acknowledged session {n} lost: {e}"));
        let expected = if n < refused_at { [7u8; 1000] } else { [8u8; 1000] };
        assert_eq!(got.metadata(), expected, "session {n}'s metadata");
    }
}

/// A table that cannot grow (no memory for the larger one): the insert
/// that needed it fails with a typed error before anything is logged, so
/// the session is neither in memory nor back after a reopen.
#[test]
fn an_insert_whose_table_cannot_grow_leaves_no_trace_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .shards(1)
            .data_dir(dir.path())
            .durability(Durability::Always)
            .without_sweeper()
    };
    let engine = Engine::open(config()).unwrap();
    engine.debug_fail_table_growth();
    let (stored, err) = insert_until_refused(&engine, b"x", 1_000_000);
    assert!(matches!(err, Error::Io { .. }), "typed error: {err:?}");
    assert!(err.to_string().contains("growing a shard's table"), "{err}");
    assert!(engine.peek(&id(stored)).unwrap_err().is_not_found());
    assert_eq!(engine.len(), stored as usize);
    drop(engine);
    // A sibling test spawning a child can hold the lock a moment.
    let engine = support::open_when_free(&config());
    assert!(
        engine.peek(&id(stored)).is_err(),
        "the failed insert came back from the log"
    );
    assert_eq!(engine.len(), stored as usize);
    assert!(engine.peek(&id(0)).is_ok());
}

/// Inserts sessions `id(0)`, `id(1)`... of `metadata` until one fails (at
/// most `limit`): how many were stored, and the error.
fn insert_until_refused(engine: &Engine, metadata: &[u8], limit: u32) -> (u32, Error) {
    for n in 0..limit {
        if let Err(e) = engine.insert(id(n), metadata, Timeout::Never) {
            return (n, e);
        }
    }
    panic!("{limit} inserts and none refused");
}

/// A data directory copied with holes (`cp --sparse`, `rsync -S`, `tar
/// --sparse` turn a segment's preallocated zeros into holes) gets its open
/// segment's blocks back at open: a store into a hole of the mapping on a
/// full disk is SIGBUS, the process killed instead of a typed error.
#[test]
fn a_reopened_segment_has_its_blocks_again() {
    use rustix::fs::{fallocate, seek, FallocateFlags, SeekFrom};
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        for n in 0..10 {
            engine.insert(id(n), b"kept", Timeout::Never).unwrap();
        }
    }
    let open = support::segment_files(&dir.path().join("L00000001/S0000"))[0].clone();
    let hole_at = |path: &Path| {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len();
        (seek(file.as_fd(), SeekFrom::Hole(0)).unwrap(), len)
    };
    {
        let file = std::fs::OpenOptions::new().write(true).open(&open).unwrap();
        let len = file.metadata().unwrap().len();
        // The records are in the first page or two; the rest is the tail.
        fallocate(
            file.as_fd(),
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            64 * 1024,
            len - 64 * 1024,
        )
        .unwrap();
    }
    let (hole, len) = hole_at(&open);
    assert!(hole < len, "the copy has a hole at {hole} of {len}");
    let engine = support::open_when_free(&config(dir.path()));
    assert_eq!(engine.len(), 10);
    let (hole, len) = hole_at(&open);
    assert_eq!(hole, len, "the open segment still has a hole at {hole}");
    engine.insert(id(10), b"after", Timeout::Never).unwrap();
}
