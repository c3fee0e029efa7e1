//! A data directory written in log format 1 (by the engine before format 2,
//! committed as a fixture) opens with today's engine: every session comes
//! back as that engine recovered it, the directory is rewritten in the
//! current format (a new layout, switched by the MANIFEST), and later opens
//! read that.

use std::collections::BTreeMap;
use std::path::PathBuf;

use session_engine::{Engine, RecoveryMode, SessionId};

mod support;

/// The time the fixture's `expected.txt` was taken at.
const FIXTURE_NOW_MS: u64 = 1_700_034_620_000;

fn fixture() -> PathBuf {
    support::fixture("format_v1")
}

fn sessions(engine: &Engine) -> BTreeMap<SessionId, String> {
    engine
        .list_all()
        .into_iter()
        .map(|s| {
            let timeout = s.timeout().as_ms().map_or("never".to_string(), |t| t.to_string());
            let line = format!(
                "{} {} {} {} {:08x}",
                s.created_ms(),
                s.last_access_ms(),
                timeout,
                s.metadata().len(),
                crc32c::crc32c(s.metadata())
            );
            (s.id(), line)
        })
        .collect()
}

#[test]
fn a_format_1_directory_is_upgraded_with_every_session() {
    let expected = support::expected_sessions(&fixture());
    assert_eq!(expected.len(), 643, "the fixture");
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        let dir = tempfile::tempdir().unwrap();
        support::copy_dir(&fixture().join("data"), dir.path());
        assert_eq!(support::manifest_format(dir.path()), 1);
        let engine = support::open_fixture(dir.path(), mode, FIXTURE_NOW_MS);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.upgraded_from, Some(1), "{report:?}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
        assert_eq!(sessions(&engine), expected, "{mode:?}");
        // Writes go on in format 3 and survive the next open.
        let now = support::writes_go_on_after_the_upgrade(engine, dir.path(), FIXTURE_NOW_MS, sessions);
        assert_eq!(now, expected);
    }
}

#[test]
fn a_torn_tail_in_a_format_1_log_is_cleared_by_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixture().join("data"), dir.path());
    // Shard 1's current segment: cut its last record in half, as a crash would.
    let segment = dir.path().join("L00000001/S0001/0000000000000002.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 20..end].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let engine = support::open_fixture(dir.path(), RecoveryMode::Strict, FIXTURE_NOW_MS);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(
        (report.upgraded_from, report.torn_tails),
        (Some(1), 1),
        "{report:?}"
    );
    assert_eq!(sessions(&engine).len(), 643 - 1, "the torn create is gone");
}

/// A format-1 base with no sessions is a header alone (format 1 has no
/// seal): an empty base that stands for an empty shard, not a lost one.
/// Shard 1's first segment becomes one, before its second.
#[test]
fn an_empty_format_1_base_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixture().join("data"), dir.path());
    let segment = dir.path().join("L00000001/S0001/0000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Format 1's header: flags at 20 (bit 0: base), CRC-32C of 0..40 at 40.
    bytes[20..24].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    bytes[64..].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let engine = support::open_fixture(dir.path(), RecoveryMode::Strict, FIXTURE_NOW_MS);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(report.upgraded_from, Some(1), "{report:?}");
    assert!(report.damage.is_empty(), "{report:?}");
}
