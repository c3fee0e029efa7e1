//! Bytes a user puts in a session never become records: a session whose
//! metadata holds byte-exact encoded records (a `DELETE` of another session,
//! a `PUT` of an `admin` session), in the old format and in the current one
//! under guessed salts, is damaged in every way a crash or a disk can damage
//! it, and recovery never applies what it holds. Before format 2, recovery
//! resynchronised inside the damaged record's payload and applied them
//! (`Repair`), or refused to open after a crash (`Strict`).

use std::path::{Path, PathBuf};

mod support;

use session_engine::{Config, Durability, Engine, RecoveryMode, SessionId, Timeout};

const VICTIM: SessionId = SessionId::from_bytes([0x11; 16]);
const FORGED: SessionId = SessionId::from_bytes([0x22; 16]);
const ATTACKER: SessionId = SessionId::from_bytes([0x33; 16]);
const AFTER: SessionId = SessionId::from_bytes([0x44; 16]);
const MARKER: &[u8] = b"FORGED-SESSION>";
/// Bytes of a `PUT` record before its metadata: header (13) and id, created,
/// last access, timeout (40).
const PUT_PREFIX: usize = 53;
const PUT_HEADER: usize = 13;

fn config(dir: &Path, mode: RecoveryMode) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Never)
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(16 * 1024)
        .recovery_mode(mode)
        .without_sweeper()
}

/// Metadata an attacker would write (see `support::hostile_metadata`).
fn hostile_metadata() -> Vec<u8> {
    let mut meta = support::hostile_metadata(MARKER, VICTIM, FORGED, 0);
    meta.extend_from_slice(&[0xA5; 300]);
    meta
}

/// A log holding the victim, the attacker's session, and (if `mid_log`) a
/// session after it. Returns the directory, the segment, and where the
/// attacker's record starts and ends.
fn build(mid_log: bool) -> (tempfile::TempDir, PathBuf, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine.insert(VICTIM, b"user_id=alice", Timeout::Never).unwrap();
    let meta = hostile_metadata();
    engine.insert(ATTACKER, &meta, Timeout::Never).unwrap();
    if mid_log {
        engine.insert(AFTER, b"user_id=bob", Timeout::Never).unwrap();
    }
    engine.close().unwrap();
    let segment = dir.path().join("L00000001/S0000/0000000000000001.seg");
    let bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(MARKER.len()).position(|w| w == MARKER).unwrap();
    (dir, segment, at - PUT_PREFIX, at + meta.len())
}

fn check_open(dir: &Path, mode: RecoveryMode, label: &str) -> Option<Engine> {
    let engine = Engine::open(config(dir, mode)).ok()?;
    assert!(
        engine.contains(&VICTIM),
        "{label} ({mode:?}): the forged DELETE was applied"
    );
    assert!(
        !engine.contains(&FORGED),
        "{label} ({mode:?}): the forged PUT was applied"
    );
    assert!(
        !engine.contains(&ATTACKER),
        "{label} ({mode:?}): the damaged record was replayed"
    );
    Some(engine)
}

#[test]
fn records_inside_a_damaged_record_are_never_replayed() {
    type Damage = fn(&mut [u8], usize, usize);
    let damages: [(&str, Damage); 4] = [
        // What a crash mid-copy leaves when the header is written last.
        ("header zeroed", |b, start, _| {
            b[start..start + PUT_HEADER].fill(0)
        }),
        ("header flipped", |b, start, _| b[start + 5] ^= 0x01),
        // What a crash leaves when the header went first.
        ("second half of the payload zeroed", |b, start, end| {
            b[(start + end) / 2..end].fill(0);
        }),
        ("a byte of the payload flipped", |b, _, end| b[end - 10] ^= 0x80),
    ];
    for mid_log in [false, true] {
        for (label, damage) in damages {
            let label = format!("{label}, {}", if mid_log { "mid-log" } else { "at the tail" });
            let (dir, segment, start, end) = build(mid_log);
            let mut bytes = std::fs::read(&segment).unwrap();
            damage(&mut bytes, start, end);
            std::fs::write(&segment, &bytes).unwrap();
            // At the tail the damage reads as a torn tail: Strict opens,
            // dropping only the damaged record. Mid-log, Strict refuses and
            // Repair skips exactly that record.
            let strict = check_open(dir.path(), RecoveryMode::Strict, &label);
            assert_eq!(strict.is_some(), !mid_log, "{label}: strict open");
            drop(strict);
            let repaired = check_open(dir.path(), RecoveryMode::Repair, &label).unwrap();
            assert_eq!(repaired.contains(&AFTER), mid_log, "{label}");
            assert_eq!(repaired.len(), 1 + usize::from(mid_log), "{label}");
        }
    }
}

#[test]
fn an_intact_hostile_session_round_trips_as_plain_bytes() {
    let (dir, _, _, _) = build(true);
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    assert_eq!(engine.peek(&ATTACKER).unwrap().metadata(), hostile_metadata());
    assert!(engine.contains(&VICTIM) && engine.contains(&AFTER));
    assert!(!engine.contains(&FORGED));
}

/// A record framed as an attacker who guessed this log's 32-bit header
/// check for it (`header_check`, 2^-32 per try) would frame it, computing
/// the rest from what they know: the payload check from the header's (as
/// format 2 derived it), or `crc` as given.
fn framed_from_a_guessed_header(
    manifest: &[u8],
    kind: u8,
    payload: &[u8],
    len: u32,
    crc: Option<u32>,
) -> Vec<u8> {
    use session_engine::log_format::header_check;
    let hcrc = header_check(manifest, 0, len, kind).unwrap();
    let crc = crc.unwrap_or_else(|| crc32c::crc32c_append(hcrc, payload));
    let mut record = hcrc.to_le_bytes().to_vec();
    record.extend_from_slice(&len.to_le_bytes());
    record.push(kind);
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// A log holding the victim, the attacker's session (whose metadata is
/// `MARKER`, filler and what `forge` makes of the MANIFEST) and a session
/// after it; the attacker's record header zeroed, as a crash that wrote it
/// last leaves it. Strict refuses it (damage mid-log); Repair must keep
/// exactly the victim and the session after.
fn check_forgery(label: &str, forge: impl Fn(&[u8]) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine.insert(VICTIM, b"user_id=alice", Timeout::Never).unwrap();
    let mut meta = MARKER.to_vec();
    meta.extend_from_slice(&[0x5A; 100]);
    meta.extend(forge(&std::fs::read(dir.path().join("MANIFEST")).unwrap()));
    engine.insert(ATTACKER, &meta, Timeout::Never).unwrap();
    engine.insert(AFTER, b"user_id=bob", Timeout::Never).unwrap();
    engine.close().unwrap();
    let segment = dir.path().join("L00000001/S0000/0000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let start = bytes.windows(MARKER.len()).position(|w| w == MARKER).unwrap() - PUT_PREFIX;
    bytes[start..start + PUT_HEADER].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    assert!(
        check_open(dir.path(), RecoveryMode::Strict, label).is_none(),
        "{label}"
    );
    let repaired = check_open(dir.path(), RecoveryMode::Repair, label).unwrap();
    assert!(repaired.contains(&AFTER), "{label}: the session after was lost");
    assert_eq!(repaired.len(), 2, "{label}");
}

/// Guessing the 32-bit header check is not enough to forge a record: the
/// payload check has a secret of its own. In format 2 it went on from the
/// header's, so one lucky guess per offset of a user's bytes forged a whole
/// record, which Repair then applied.
#[test]
fn a_guessed_header_check_does_not_forge_a_record() {
    let mut put = FORGED.to_bytes().to_vec();
    for v in [1_700_000_000_000u64, 1_700_000_000_000, u64::MAX, u64::MAX] {
        put.extend_from_slice(&v.to_le_bytes());
    }
    put.extend_from_slice(b"user_id=admin");
    let len = u32::try_from(put.len()).unwrap();
    check_forgery("a forged PUT", |manifest| {
        let mut forged = framed_from_a_guessed_header(manifest, 1, &put, len, None);
        forged.extend_from_slice(&[0xA5; 300]);
        forged
    });
}

/// Nor does a header that verifies alone steer recovery past records that
/// do: after a damaged stretch, recovery resumes at the next record that
/// verifies whole. Format 2 resumed at a header that verified alone and
/// skipped its extent, here the whole record after the attacker's, which
/// then read as a torn tail and was cleared.
#[test]
fn a_guessed_header_check_hides_no_record_after_it() {
    check_forgery("a forged header spanning the next record", |manifest| {
        framed_from_a_guessed_header(manifest, 1, &[], 200, Some(0))
    });
}
