//! A data directory written in log format 2 (by the engine before format 3,
//! committed as a fixture with the program that wrote it) opens with
//! today's engine: every session comes back as that engine recovered it,
//! topics and lifetimes included; the directory is rewritten in format 3 (a
//! new layout, switched by the MANIFEST), and later opens read format 3.
//! Format 2's payload check went on from the header's: one guessed 32-bit
//! value forged a whole record (see `persist_forged_records.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use session_engine::{Config, Engine, ManualClock, RecoveryMode, SessionId, Timeout};

mod support;

/// The time the fixture's `expected.txt` was taken at.
const FIXTURE_NOW_MS: u64 = 1_700_034_620_000;

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format_v2"))
}

/// `id -> "created last timeout lifetime len crc topics"`, as
/// `expected.txt` lists them.
fn expected() -> BTreeMap<SessionId, String> {
    std::fs::read_to_string(fixture().join("expected.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let (id, rest) = line.split_once(' ').unwrap();
            (id.parse().unwrap(), rest.to_string())
        })
        .collect()
}

fn open(dir: &Path, mode: RecoveryMode) -> Engine {
    Engine::open(
        Config::default()
            .shards(2)
            .data_dir(dir)
            .segment_size_bytes(64 * 1024)
            .metadata_bytes_max(4096)
            .recovery_mode(mode)
            .without_sweeper()
            .clock(ManualClock::new(FIXTURE_NOW_MS).clock()),
    )
    .unwrap()
}

fn sessions(engine: &Engine) -> BTreeMap<SessionId, String> {
    let ms = |t: Timeout| t.as_ms().map_or("never".to_string(), |t| t.to_string());
    engine
        .list_all()
        .into_iter()
        .map(|s| {
            let mut topics = engine.topics(&s.id()).unwrap();
            topics.sort();
            let line = format!(
                "{} {} {} {} {} {:08x} {}",
                s.created_ms(),
                s.last_access_ms(),
                ms(s.timeout()),
                ms(s.lifetime()),
                s.metadata().len(),
                crc32c::crc32c(s.metadata()),
                if topics.is_empty() {
                    "-".to_string()
                } else {
                    topics.join(",")
                }
            );
            (s.id(), line)
        })
        .collect()
}

fn manifest_format(dir: &Path) -> u32 {
    let bytes = std::fs::read(dir.join("MANIFEST")).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

#[test]
fn a_format_2_directory_is_upgraded_with_every_session() {
    let expected = expected();
    assert_eq!(expected.len(), 360, "the fixture");
    assert!(
        expected.values().any(|s| s.contains("news,room-")),
        "the fixture has topics"
    );
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        let dir = tempfile::tempdir().unwrap();
        support::copy_dir(&fixture().join("data"), dir.path());
        assert_eq!(manifest_format(dir.path()), 2);
        let engine = open(dir.path(), mode);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.upgraded_from, Some(2), "{report:?}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
        assert!(report.damage.is_empty(), "{report:?}");
        assert_eq!(sessions(&engine), expected, "{mode:?}");
        // Writes go on in format 3 and survive the next open.
        let extra = engine.create(b"after the upgrade", Timeout::Never).unwrap();
        engine.close().unwrap();
        assert_eq!(manifest_format(dir.path()), 3);
        assert!(
            !dir.path().join("L00000001").exists(),
            "the format-2 layout was removed"
        );
        let engine = open(dir.path(), RecoveryMode::Strict);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.upgraded_from, None);
        let mut now = sessions(&engine);
        assert!(now.remove(&extra).is_some());
        assert_eq!(now, expected);
    }
}

#[test]
fn a_torn_tail_in_a_format_2_log_is_cleared_by_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixture().join("data"), dir.path());
    // Shard 1's last segment holding data: cut its last record in half, as
    // a crash would.
    let shard = dir.path().join("L00000001/S0001");
    let mut segments: Vec<_> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let (segment, mut bytes, end) = segments
        .into_iter()
        .rev()
        .find_map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
            (end > 128).then_some((path, bytes, end))
        })
        .unwrap();
    bytes[end - 10..end].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let engine = open(dir.path(), RecoveryMode::Strict);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(
        (report.upgraded_from, report.torn_tails),
        (Some(2), 1),
        "{report:?}"
    );
    assert!(sessions(&engine).len() <= 360);
}

/// An upgrade interrupted before its MANIFEST switch (a process killed
/// while writing the new layout) leaves the format-2 layout in force: the
/// next open removes the half-written layout and redoes the upgrade.
#[test]
fn an_interrupted_upgrade_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixture().join("data"), dir.path());
    let half = dir.path().join("L00000002/S0000");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("0000000000000001.seg"), [0xA5; 4096]).unwrap();
    let engine = open(dir.path(), RecoveryMode::Strict);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(report.upgraded_from, Some(2), "{report:?}");
    assert_eq!(sessions(&engine), expected());
    engine.close().unwrap();
    assert_eq!(manifest_format(dir.path()), 3);
    assert!(!dir.path().join("L00000001").exists());
}
