//! A data directory written in log format 2 (by the engine before format 3,
//! committed as a fixture with the program that wrote it) opens with
//! today's engine: every session comes back as that engine recovered it,
//! topics and lifetimes included; the directory is rewritten in format 3 (a
//! new layout, switched by the MANIFEST), and later opens read format 3.
//! Format 2's payload check went on from the header's: one guessed 32-bit
//! value forged a whole record (see `persist_forged_records.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use session_engine::{Engine, RecoveryMode, SessionId, Timeout};

mod support;

/// The time the fixture's `expected.txt` was taken at.
const FIXTURE_NOW_MS: u64 = 1_700_034_620_000;

fn fixture() -> PathBuf {
    support::fixture("format_v2")
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

#[test]
fn a_format_2_directory_is_upgraded_with_every_session() {
    let expected = support::expected_sessions(&fixture());
    assert_eq!(expected.len(), 360, "the fixture");
    assert!(
        expected.values().any(|s| s.contains("news,room-")),
        "the fixture has topics"
    );
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        let dir = tempfile::tempdir().unwrap();
        support::copy_dir(&fixture().join("data"), dir.path());
        assert_eq!(support::manifest_format(dir.path()), 2);
        let engine = support::open_fixture(dir.path(), mode, FIXTURE_NOW_MS);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.upgraded_from, Some(2), "{report:?}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
        assert!(report.damage.is_empty(), "{report:?}");
        assert_eq!(sessions(&engine), expected, "{mode:?}");
        // Writes go on in format 3 and survive the next open.
        let now = support::writes_go_on_after_the_upgrade(engine, dir.path(), FIXTURE_NOW_MS, sessions);
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
    let engine = support::open_fixture(dir.path(), RecoveryMode::Strict, FIXTURE_NOW_MS);
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
    let engine = support::open_fixture(dir.path(), RecoveryMode::Strict, FIXTURE_NOW_MS);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(report.upgraded_from, Some(2), "{report:?}");
    assert_eq!(sessions(&engine), support::expected_sessions(&fixture()));
    engine.close().unwrap();
    assert_eq!(support::manifest_format(dir.path()), 3);
    assert!(!dir.path().join("L00000001").exists());
}
