//! An open that fails after recovery (here the table cannot be allocated;
//! a full disk at the time mark, a thread that cannot start) leaves the
//! directory as it found it: the damage a `Repair` open would drop is
//! still there for the retried open to report (`Strict` still refuses it).
//! The rewritten layout used to be switched in before the shards were
//! built, and the retried open found a clean log: the report that named
//! the dropped records was lost.
//!
//! A binary of its own: the test forks a child, which holds a copy of every
//! descriptor of this process until it execs, the lock of a data directory
//! another test just closed included (`flock` goes with the open file), so
//! that test's next open could find its directory locked.

use std::path::Path;

use session_engine::{Config, Durability, Engine, Error, RecoveryMode, SessionId, Timeout};

const CHILD_ENV: &str = "SESSION_OPEN_FAILS_AFTER_REWRITE_CHILD";

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

/// The child: its address space is capped at 4 GiB, then it opens `Repair`
/// asking for a table of a billion sessions, which recovery cannot know is
/// out of reach: the open fails only once the shards are built, after it
/// recovered (and rewrote) the log.
#[test]
fn an_open_failing_late_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let limit = rustix::process::Rlimit {
        current: Some(4 << 30),
        maximum: Some(4 << 30),
    };
    rustix::process::setrlimit(rustix::process::Resource::As, limit).unwrap();
    let config = config(Path::new(&dir), RecoveryMode::Repair)
        .sessions_max(1 << 30)
        .initial_capacity(1 << 30);
    let err = Engine::open(config).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref why) if why.contains("could not allocate")),
        "{err}"
    );
    println!("OPEN FAILED LATE");
}

#[test]
fn an_open_failing_after_recovery_leaves_the_damage_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    for i in 0..600u32 {
        let mut id = [0xA5; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        engine
            .insert(SessionId::from_bytes(id), &[7u8; 200], Timeout::Never)
            .unwrap();
    }
    engine.close().unwrap();
    // A flipped bit in a record of the second segment.
    let shard = dir.path().join("L00000001/S0000");
    let mut segments: Vec<_> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let mut bytes = std::fs::read(&segments[1]).unwrap();
    bytes[5_000] ^= 0x10;
    std::fs::write(&segments[1], bytes).unwrap();

    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "an_open_failing_late_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OPEN FAILED LATE"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let strict = Engine::open(config(dir.path(), RecoveryMode::Strict)).map(|_| ());
    assert!(
        matches!(&strict, Err(Error::Corrupt { path, .. }) if path.file_name() == segments[1].file_name()),
        "a strict open after the failed one: {strict:?}"
    );
    let engine = Engine::open(config(dir.path(), RecoveryMode::Repair)).unwrap();
    let report = engine.recovery_report().unwrap();
    assert!(report.rewritten && !report.damage.is_empty(), "{report:?}");
}
