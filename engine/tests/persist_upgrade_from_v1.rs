//! A data directory written in log format 1 (by the engine before format 2,
//! committed as a fixture) opens with today's engine: every session comes
//! back as that engine recovered it, the directory is rewritten in the
//! current format (a new layout, switched by the MANIFEST), and later opens
//! read that.

use std::collections::BTreeMap;
use std::path::Path;

use session_engine::{Config, Engine, ManualClock, RecoveryMode, SessionId};

mod support;

/// The time the fixture's `expected.txt` was taken at.
const FIXTURE_NOW_MS: u64 = 1_700_034_620_000;

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format_v1"))
}

/// `id -> "created last timeout len crc"`, as `expected.txt` lists them.
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

fn manifest_format(dir: &Path) -> u32 {
    let bytes = std::fs::read(dir.join("MANIFEST")).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

#[test]
fn a_format_1_directory_is_upgraded_with_every_session() {
    let expected = expected();
    assert_eq!(expected.len(), 643, "the fixture");
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        let dir = tempfile::tempdir().unwrap();
        support::copy_dir(&fixture().join("data"), dir.path());
        assert_eq!(manifest_format(dir.path()), 1);
        let engine = open(dir.path(), mode);
        let report = engine.recovery_report().unwrap().clone();
        assert_eq!(report.upgraded_from, Some(1), "{report:?}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
        assert_eq!(sessions(&engine), expected, "{mode:?}");
        // Writes go on in the current format and survive the next open.
        let extra = engine
            .create(b"after the upgrade", session_engine::Timeout::Never)
            .unwrap();
        engine.close().unwrap();
        assert_eq!(manifest_format(dir.path()), 3);
        assert!(
            !dir.path().join("L00000001").exists(),
            "the format-1 layout was removed"
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
fn a_torn_tail_in_a_format_1_log_is_cleared_by_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixture().join("data"), dir.path());
    // Shard 1's current segment: cut its last record in half, as a crash would.
    let segment = dir.path().join("L00000001/S0001/0000000000000002.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 20..end].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let engine = open(dir.path(), RecoveryMode::Strict);
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
    let engine = open(dir.path(), RecoveryMode::Strict);
    let report = engine.recovery_report().unwrap().clone();
    assert_eq!(report.upgraded_from, Some(1), "{report:?}");
    assert!(report.damage.is_empty(), "{report:?}");
}
