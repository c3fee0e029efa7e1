//! After a failed log sync, the next open reads the failed shard from the
//! disk, not from the page cache. A binary of its own: the test counts the
//! process's reads from storage, which tests running beside it in the
//! same process would add to.

mod support;

use session_engine::{Engine, Error, Timeout};

/// The files named `name` anywhere under `dir`.
fn files_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    support::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect()
}

/// Bytes this process has had fetched from storage (`/proc/self/io`).
fn read_from_storage() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .expect("read_bytes")
        .parse()
        .unwrap()
}

/// After a failed writeback the kernel keeps the pages cached and clean
/// although the disk never got them. A restart in the same boot that read
/// the log through the cache would take records the disk lacks for its
/// own and append after them; a power loss later would leave a hole before
/// those appends, and a torn tail there drops every acknowledged write
/// after it. So a failed sync leaves a note in its shard's directory, and
/// the next open syncs that shard's files, drops their cached pages and
/// reads them from the disk (seen in the process's storage reads), then
/// clears the note. The test's directory is on the disk that holds the
/// build; on a tmpfs (no disk to read from, nothing to drop) or without
/// the kernel's per-process I/O accounting it says so and checks the
/// rest. (What it cannot show is the hazard itself: the injected failure
/// leaves the pages dirty, not cached and clean as a real `EIO` does.)
#[test]
fn after_a_failed_sync_the_next_open_reads_the_log_from_the_disk() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)] // its type varies by target
    let on_tmpfs = rustix::fs::statfs(dir.path()).unwrap().f_type as u64 == TMPFS_MAGIC;
    let counted = !on_tmpfs && std::path::Path::new("/proc/self/io").exists();
    if !counted {
        eprintln!("reads from storage not checked: tmpfs ({on_tmpfs}) or no /proc/self/io");
    }
    let timeout = Timeout::from_secs(3600);
    let acked = {
        let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
        // Enough records that reading them back is many pages.
        let acked: Vec<_> = (0..2_000u32)
            .map(|i| {
                engine
                    .create(&[i.to_le_bytes().as_slice(), &[7; 200]].concat(), timeout)
                    .unwrap()
            })
            .collect();
        assert!(files_named(dir.path(), "SYNC-FAILED").is_empty());
        engine.debug_fail_syncs();
        let err = engine.create(b"unknown", timeout).unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
        acked
    };
    let notes = files_named(dir.path(), "SYNC-FAILED");
    assert_eq!(notes.len(), 1, "one note, in the failed log's shard: {notes:?}");

    let before = if counted { read_from_storage() } else { 0 };
    let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
    let read = if counted {
        read_from_storage() - before
    } else {
        u64::MAX
    };
    let report = engine.recovery_report().unwrap();
    assert!(
        report.reread_after_failed_sync >= 1,
        "the failed shard's files were not read from the disk: {report:?}"
    );
    // About 1,000 records of 250 bytes in the failed shard: its log's
    // pages came from the disk, not from the cache that held them.
    assert!(read >= 128 * 1024, "{read} bytes read from storage at the open");
    for (i, id) in acked.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        assert_eq!(&engine.peek(id).unwrap().metadata()[..4], i.to_le_bytes());
    }
    assert!(
        files_named(dir.path(), "SYNC-FAILED").is_empty(),
        "the note outlived the open that read the disk"
    );
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
    assert_eq!(engine.recovery_report().unwrap().reread_after_failed_sync, 0);
}
