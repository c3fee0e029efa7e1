//! Helpers shared by the engine's integration tests.

#![allow(dead_code)] // each test file uses its own part

use session_engine::{Config, Durability, Engine, Error};

/// An `Always` engine on `dir` with `shards` shards and small segments.
pub fn always_config(dir: &std::path::Path, shards: usize) -> Config {
    Config::default()
        .shards(shards)
        .data_dir(dir)
        .durability(Durability::Always)
        .segment_size_bytes(256 * 1024)
}

/// Ends the test process if the test has not finished within a minute: a
/// writer stuck in the group commit must fail CI, not hang it.
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    pub fn start() -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            for _ in 0..600 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if seen.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
            eprintln!("the test did not finish within 60 s: a writer is stuck");
            std::process::exit(101);
        });
        Self(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A format-1 record (no salt), as the engine before format 2 wrote them.
pub fn v1_record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..4]), &out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Metadata an attacker would store: `marker`, then records that delete
/// `victim` and create `forged` as an admin, in every framing they could
/// guess (format 1, and formats 2 and 3 under guessed salts), repeated until the
/// metadata is `len` bytes long.
pub fn hostile_metadata(
    marker: &[u8],
    victim: session_engine::SessionId,
    forged: session_engine::SessionId,
    len: usize,
) -> Vec<u8> {
    use session_engine::log_format::{LogSalt, Record};
    let mut records = v1_record(5, &victim.to_bytes());
    let mut put = forged.to_bytes().to_vec();
    put.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    put.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    put.extend_from_slice(&u32::MAX.to_le_bytes());
    put.extend_from_slice(b"user_id=admin");
    records.extend(v1_record(1, &put));
    let guesses = [0, 1, u64::MAX, 0x5EED_5EED_5EED_5EED];
    let salts = guesses
        .iter()
        .flat_map(|&g| [LogSalt::format_2(g), LogSalt::new(g, g), LogSalt::new(g, !g)]);
    for salt in salts {
        Record::Delete { id: victim }.encode(salt, &mut records);
        Record::Put {
            id: forged,
            created_ms: 1_700_000_000_000,
            last_access_ms: 1_700_000_000_000,
            timeout_ms: u64::MAX,
            lifetime_ms: u64::MAX,
            metadata: b"user_id=admin",
        }
        .encode(salt, &mut records);
    }
    let mut meta = marker.to_vec();
    meta.extend_from_slice(&[0x5A; 100]);
    while meta.len() < len {
        meta.extend_from_slice(&records);
    }
    meta.truncate(len.max(marker.len() + 100 + records.len()));
    meta
}

/// Copies a data directory (without its `LOCK`): with the engine still
/// running, the copy is what a crash at that moment leaves (the files as the
/// page cache holds them).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, at any depth (directories left out).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The log segments (`*.seg`) under `dir`, at any depth.
pub fn segments_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

/// The segment files (`*.seg`) of a shard's directory, in sequence order
/// (their names are zero-padded sequence numbers).
pub fn segment_files(shard_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// A data directory committed under `tests/fixtures/<name>`, written by an
/// engine of an older log format (its `README.md` says which).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `id -> the rest of its line`, as a fixture's `expected.txt` lists what
/// the engine that wrote it recovered.
pub fn expected_sessions(
    fixture: &std::path::Path,
) -> std::collections::BTreeMap<session_engine::SessionId, String> {
    std::fs::read_to_string(fixture.join("expected.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let (id, rest) = line.split_once(' ').unwrap();
            (id.parse().unwrap(), rest.to_string())
        })
        .collect()
}

/// Opens a copy of a fixture's data as the fixtures were written: 2
/// shards, 64 KiB segments, 4096-byte metadata, the clock at `now_ms`.
pub fn open_fixture(
    dir: &std::path::Path,
    mode: session_engine::RecoveryMode,
    now_ms: u64,
) -> session_engine::Engine {
    session_engine::Engine::open(
        Config::default()
            .shards(2)
            .data_dir(dir)
            .segment_size_bytes(64 * 1024)
            .metadata_bytes_max(4096)
            .recovery_mode(mode)
            .without_sweeper()
            .clock(session_engine::ManualClock::new(now_ms).clock()),
    )
    .unwrap()
}

/// The log format a data directory's MANIFEST names.
pub fn manifest_format(dir: &std::path::Path) -> u32 {
    let bytes = std::fs::read(dir.join("MANIFEST")).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

/// After a fixture's upgrade by `engine`: a session created now survives a
/// close and a `Strict` reopen, which upgrades nothing; the MANIFEST names
/// format 3 and the old layout is gone. Returns what `sessions` reads from
/// the reopened engine, the new session left out.
pub fn writes_go_on_after_the_upgrade(
    engine: session_engine::Engine,
    dir: &std::path::Path,
    now_ms: u64,
    sessions: impl Fn(&session_engine::Engine) -> std::collections::BTreeMap<session_engine::SessionId, String>,
) -> std::collections::BTreeMap<session_engine::SessionId, String> {
    let extra = engine
        .create(b"after the upgrade", session_engine::Timeout::Never)
        .unwrap();
    engine.close().unwrap();
    assert_eq!(manifest_format(dir), 3);
    assert!(!dir.join("L00000001").exists(), "the old layout was removed");
    let engine = open_fixture(dir, session_engine::RecoveryMode::Strict, now_ms);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(report.upgraded_from, None);
    let mut now = sessions(&engine);
    assert!(now.remove(&extra).is_some());
    now
}

/// Opens `config`'s directory, waiting (up to 10 s) while it is locked: for
/// a reopen in a test binary that also spawns processes. This binary runs
/// its tests on several threads, and a sibling test that spawns a child
/// holds a copy of every open file, the lock file of an engine just closed
/// included, from its fork until its exec (close-on-exec acts only then):
/// on two busy cores, long enough to be seen (once in about 30 runs of the
/// crash test).
pub fn open_when_free(config: &Config) -> Engine {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Engine::open(config.clone()) {
            Err(Error::DirectoryLocked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened => return opened.unwrap(),
        }
    }
}
