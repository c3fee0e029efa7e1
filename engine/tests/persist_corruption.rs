//! Damaged logs: a log cut at every offset recovers its intact prefix (a torn
//! tail is normal, never an error; a file made shorter is damage); bytes
//! flipped in the middle make `Strict` recovery fail naming file and offset,
//! while `Repair` recovers every untouched record and rewrites the log, so
//! that the next `Strict` open finds nothing wrong. Nothing panics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use session_engine::log_format::{decode, shard_salt, Decoded, SEGMENT_HEADER_LEN as HEADER};
use session_engine::{Config, Durability, Engine, Error, RecoveryMode, SessionId, Timeout};

mod support;

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

/// A one-shard log of `n` PUT records for distinct sessions; returns the
/// directory, the segment's path, and each record's (id, start, end).
fn build(n: u8) -> (tempfile::TempDir, PathBuf, Vec<(SessionId, usize, usize)>) {
    build_with(n, |_| {})
}

fn build_with(
    n: u8,
    more: impl FnOnce(&Engine),
) -> (tempfile::TempDir, PathBuf, Vec<(SessionId, usize, usize)>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    for i in 0..n {
        // No zero bytes at the ends of records, so a cut always damages one.
        engine
            .insert(SessionId::from_bytes([i + 1; 16]), &[i + 1; 20], Timeout::Never)
            .unwrap();
    }
    more(&engine);
    engine.close().unwrap();
    let segment = dir.path().join("L00000001/S0000/0000000000000001.seg");
    let bytes = std::fs::read(&segment).unwrap();
    let salt = shard_salt(&std::fs::read(dir.path().join("MANIFEST")).unwrap(), 0).unwrap();
    let mut records = Vec::new();
    let mut pos = HEADER;
    while let Decoded::Record(record, len) = decode(&bytes[pos..], salt) {
        records.push((record.id().unwrap(), pos, pos + len));
        pos += len;
    }
    assert!(records.len() >= n as usize);
    (dir, segment, records)
}

fn recovered(
    dir: &Path,
    mode: RecoveryMode,
) -> Result<(BTreeSet<SessionId>, session_engine::RecoveryReport), Error> {
    let engine = Engine::open(config(dir, mode))?;
    let ids = engine.list_all().iter().map(|s| s.id()).collect();
    Ok((ids, engine.recovery_report().unwrap().clone()))
}

#[test]
fn a_log_cut_at_any_offset_recovers_its_intact_prefix() {
    let (dir, segment, records) = build(6);
    let original = std::fs::read(&segment).unwrap();
    let data_end = records.last().unwrap().2;
    let relative = segment.strip_prefix(dir.path()).unwrap().to_path_buf();
    for cut in HEADER..=data_end {
        // What a crash leaves in a preallocated file: the rest zeroed.
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        let mut bytes = original.clone();
        bytes[cut..].fill(0);
        std::fs::write(copy.path().join(&relative), &bytes).unwrap();
        let (ids, report) =
            recovered(copy.path(), RecoveryMode::Strict).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let intact: BTreeSet<SessionId> = records.iter().filter(|r| r.2 <= cut).map(|r| r.0).collect();
        assert_eq!(ids, intact, "cut at {cut}");
        // A record cut inside is a torn tail unless every byte of it that
        // survived is zero (its first bytes are salted checksum bits, so 1
        // in 256 logs has a zero there): then the log just ends before it.
        let torn = records
            .iter()
            .find(|r| r.1 < cut && cut < r.2 && original[r.1..cut].iter().any(|&b| b != 0));
        assert_eq!(
            report.torn_tails,
            usize::from(torn.is_some()),
            "cut at {cut}: {report:?}"
        );
        if let Some(&(_, start, _)) = torn {
            // Every truncation is reported, with where it was (up to the
            // last byte that was not zero).
            let t = &report.truncations[0];
            assert!(t.path.ends_with(&relative), "{t:?}");
            assert_eq!(t.offset as usize, start, "cut at {cut}");
            let dirty = original[start..cut]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i + 1);
            assert_eq!(t.bytes as usize, dirty, "cut at {cut}");
        }
        // Recovery cleared the torn bytes: the next open is clean.
        let (again, report) = recovered(copy.path(), RecoveryMode::Strict).unwrap();
        assert_eq!(again, intact);
        assert_eq!(report.torn_tails, 0, "cut at {cut}: torn tail not cleared");
    }
}

#[test]
fn a_segment_file_made_shorter_is_damage_not_a_torn_tail() {
    // Segments are preallocated, so a crash never shortens one: a file
    // shorter than its header says was cut by something else.
    let (dir, segment, records) = build(6);
    let original = std::fs::read(&segment).unwrap();
    let relative = segment.strip_prefix(dir.path()).unwrap().to_path_buf();
    for cut in [records[2].2, records[4].1 + 3, records[5].2 + 10] {
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        std::fs::write(copy.path().join(&relative), &original[..cut]).unwrap();
        match recovered(copy.path(), RecoveryMode::Strict) {
            Err(Error::Corrupt { path, offset, reason }) => {
                assert!(path.ends_with(&relative));
                assert_eq!(offset as usize, cut, "{reason}");
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("cut at {cut}: strict recovery gave {other:?}"),
        }
        let (ids, report) = recovered(copy.path(), RecoveryMode::Repair).unwrap();
        let intact: BTreeSet<SessionId> = records.iter().filter(|r| r.2 <= cut).map(|r| r.0).collect();
        assert_eq!(ids, intact, "cut at {cut}");
        assert!(report.rewritten, "{report:?}");
        let (again, report) = recovered(copy.path(), RecoveryMode::Strict).unwrap();
        assert_eq!(again, intact, "the repair was durable");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
    }
}

#[test]
fn damage_in_the_middle_is_refused_by_strict_and_skipped_by_repair() {
    let (dir, segment, records) = build(40);
    let original = std::fs::read(&segment).unwrap();
    let relative = segment.strip_prefix(dir.path()).unwrap().to_path_buf();
    let all: BTreeSet<SessionId> = records.iter().map(|r| r.0).collect();
    // A seeded sweep over damaged records and bytes (printed for replay).
    let mut seed = 0x5EED_u64;
    println!("seed {seed:#x}");
    for trial in 0..60 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let damaged: BTreeSet<usize> = (0..1 + trial % 3)
            .map(|k| ((seed >> (8 * k + 3)) as usize) % (records.len() - 1))
            .collect();
        let mut bytes = original.clone();
        // Records whose header (checksum, length, type: the first 9 bytes)
        // is intact: the damage is in their payload, and they are reported
        // by id.
        let mut payload_damaged = BTreeSet::new();
        for &r in &damaged {
            let (_, start, end) = records[r];
            let at = start + ((seed >> 17) as usize) % (end - start);
            bytes[at] ^= 1 << ((seed >> 40) % 8);
            if at - start >= 9 {
                // The id as the damaged payload holds it (the flip may be in it).
                let id: [u8; 16] = bytes[start + 13..start + 29].try_into().unwrap();
                payload_damaged.insert(SessionId::from_bytes(id));
            }
        }
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        std::fs::write(copy.path().join(&relative), &bytes).unwrap();

        let first = *damaged.iter().next().unwrap();
        match recovered(copy.path(), RecoveryMode::Strict) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert!(path.ends_with(&relative), "trial {trial}: {}", path.display());
                assert_eq!(
                    offset as usize, records[first].1,
                    "trial {trial}: offset of the first bad record"
                );
            }
            other => panic!("trial {trial}: strict recovery of damaged records {damaged:?} gave {other:?}"),
        }
        let (ids, report) = recovered(copy.path(), RecoveryMode::Repair).unwrap();
        let untouched: BTreeSet<SessionId> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !damaged.contains(i))
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            ids, untouched,
            "trial {trial}: repair keeps every untouched record"
        );
        assert!(
            report.corrupt_skipped >= 1 && report.corrupt_bytes > 0,
            "{report:?}"
        );
        // A record whose header verified is reported by the id it was about.
        let reported: BTreeSet<SessionId> = report.damage.iter().filter_map(|d| d.id).collect();
        assert_eq!(reported, payload_damaged, "trial {trial}: {:?}", report.damage);
        // Repair rewrote the log: the next open, in the default Strict mode,
        // finds no damage and the same sessions.
        assert!(report.rewritten, "trial {trial}: {report:?}");
        let (again, report) = recovered(copy.path(), RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("trial {trial}: strict open after a repair: {e}"));
        assert_eq!(again, untouched, "trial {trial}");
        assert_eq!((report.torn_tails, report.corrupt_skipped), (0, 0), "{report:?}");
    }
}

#[test]
fn a_zeroed_record_with_records_after_it_is_damage_not_the_end() {
    // A page read back as zeros (lost in a power cut, or a block the
    // device returned blank) where a record starts: the zero header looks
    // like the end of the data, but records follow, so dropping them would
    // lose acknowledged writes unseen.
    let (dir, segment, records) = build(10);
    let original = std::fs::read(&segment).unwrap();
    let relative = segment.strip_prefix(dir.path()).unwrap().to_path_buf();
    for (label, zeroed) in [("whole record", 4), ("first record", 0), ("second to last", 8)] {
        let (lost, start, end) = records[zeroed];
        let mut bytes = original.clone();
        bytes[start..end].fill(0);
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        std::fs::write(copy.path().join(&relative), &bytes).unwrap();
        match recovered(copy.path(), RecoveryMode::Strict) {
            Err(Error::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset as usize, start, "{label}");
                assert!(reason.contains("zeroed record header"), "{label}: {reason}");
            }
            other => panic!("{label}: strict recovery gave {other:?}"),
        }
        let (ids, report) = recovered(copy.path(), RecoveryMode::Repair).unwrap();
        let expected: BTreeSet<SessionId> = records.iter().map(|r| r.0).filter(|&id| id != lost).collect();
        assert_eq!(ids, expected, "{label}: repair keeps every other record");
        assert_eq!(report.corrupt_skipped, 1, "{label}: {report:?}");
        assert_eq!(report.corrupt_bytes as usize, end - start, "{label}: {report:?}");
    }
}

/// A file in a shard's directory named as a segment of a sequence this
/// engine never reaches (the largest `u64`: the next one would overflow) is
/// not taken for one: the open neither panics nor numbers its next segment
/// from it, and the sessions and new writes are kept.
#[test]
fn a_segment_name_past_every_sequence_is_not_ours() {
    let (dir, segment, records) = build(5);
    let stray = segment.with_file_name(format!("{}.seg", u64::MAX));
    std::fs::write(&stray, b"").unwrap();
    for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
        let (ids, _) = recovered(dir.path(), mode).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(ids.len(), records.len(), "{mode:?}");
    }
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict)).unwrap();
    engine
        .insert(SessionId::from_bytes([99; 16]), b"after", Timeout::Never)
        .unwrap();
    engine.close().unwrap();
    let (ids, _) = recovered(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(ids.len(), records.len() + 1);
    assert!(stray.exists(), "a file that is not ours is left alone");
}

#[test]
fn garbage_files_never_panic() {
    let (dir, segment, _) = build(5);
    let relative = segment.strip_prefix(dir.path()).unwrap().to_path_buf();
    let mut seed = 42u64;
    for trial in 0..40 {
        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(dir.path(), copy.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        for b in bytes
            .iter_mut()
            .skip(if trial % 2 == 0 { 0 } else { HEADER })
            .take(4096)
        {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *b = (seed >> 56) as u8;
        }
        std::fs::write(copy.path().join(&relative), &bytes).unwrap();
        for mode in [RecoveryMode::Strict, RecoveryMode::Repair] {
            // Any typed outcome is fine; a panic is not.
            let _ = recovered(copy.path(), mode);
        }
    }
}

/// Many records in a row whose headers verify and whose payloads do not (a
/// systematic payload mismatch, or bytes damaged on purpose) are skipped in
/// one pass: each is skipped by its extent, and the search for the next
/// record that verifies is not run again over bytes it has already
/// searched. It was, from each damaged record to the first good one after
/// them all, so a segment of such records took time quadratic in their
/// number: this one, tens of minutes; a default 16 MiB segment, days.
/// (The bound below only tells a hang from a pass, which takes about a
/// second.)
#[test]
fn a_run_of_damaged_payloads_is_skipped_in_one_pass() {
    const N: u32 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict).segment_size_bytes(8 << 20)).unwrap();
    let id = |i: u32| {
        let mut bytes = [0x5A; 16];
        bytes[..4].copy_from_slice(&(i + 1).to_le_bytes());
        SessionId::from_bytes(bytes)
    };
    for i in 0..=N {
        engine.insert(id(i), &[0xA5; 20], Timeout::Never).unwrap();
    }
    engine.close().unwrap();
    let segment = dir.path().join("L00000001/S0000/0000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let salt = shard_salt(&std::fs::read(dir.path().join("MANIFEST")).unwrap(), 0).unwrap();
    let mut ends = Vec::new();
    let mut pos = HEADER;
    while let Decoded::Record(_, len) = decode(&bytes[pos..], salt) {
        pos += len;
        ends.push(pos);
    }
    assert_eq!(ends.len(), N as usize + 1, "one segment holds every record");
    // Every record's last payload byte but the last record's.
    for &end in &ends[..N as usize] {
        bytes[end - 1] ^= 0x01;
    }
    std::fs::write(&segment, &bytes).unwrap();

    let (done, opened) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let engine = Engine::open(config(&path, RecoveryMode::Repair).segment_size_bytes(8 << 20));
        let _ = done.send(engine.map(|e| {
            (
                e.list_all().iter().map(|s| s.id()).collect::<Vec<_>>(),
                e.recovery_report().unwrap().clone(),
            )
        }));
    });
    let (ids, report) = opened
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("Repair finishes (it ran for minutes when each damaged record searched again)")
        .expect("Repair opens");
    assert_eq!(ids, [id(N)], "the one intact record is kept");
    assert_eq!(
        report.corrupt_skipped, N as usize,
        "each damaged record skipped on its own"
    );
}
