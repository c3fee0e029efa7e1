//! The data directory: its lock, its MANIFEST, and the layout directories
//! (`FORMAT.md`, "Directory" and "MANIFEST").

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::{Manifest, FORMAT_ONE_SALT, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use super::segment::{create_owner_only, sync_dir};
use crate::error::{Error, Result};

const LOCK_FILE: &str = "LOCK";
const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
/// In a shard directory: a sync of its log failed in a run since the
/// machine booted (see [`mark_sync_failed`]).
const SYNC_FAILED_FILE: &str = "SYNC-FAILED";

pub(crate) fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

pub(crate) fn layout_dir(dir: &Path, layout: u64) -> PathBuf {
    dir.join(format!("L{layout:08}"))
}

pub(crate) fn shard_dir(layout_dir: &Path, shard: usize) -> PathBuf {
    layout_dir.join(format!("S{shard:04}"))
}

/// Creates `path` and its missing parents (owner only), and syncs the
/// parent of each directory it created: a directory's name lives in its
/// parent, and a machine crash could otherwise lose a directory whose
/// files were all synced (a data directory with its MANIFEST and logs).
/// Nothing is synced when `path` already exists.
pub(crate) fn make_dir(path: &Path) -> Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(format!("creating directory {}", path.display())))?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent).map_err(io(format!("syncing {}", parent.display())))?;
    }
    Ok(())
}

/// Locks the directory for this engine (`flock`: released by the kernel when
/// the holder dies, so a crash never leaves a stale lock), and clears a
/// manifest that was being written.
pub(crate) fn lock(dir: &Path) -> Result<File> {
    make_dir(dir)?;
    let lock = open_kept(&dir.join(LOCK_FILE))?;
    lock_outcome(dir, lock.try_lock())?;
    let _ = std::fs::remove_file(dir.join(MANIFEST_TMP));
    Ok(lock)
}

/// `DirectoryLocked` only where another holder has the lock; a lock the
/// file system could not take at all (`ENOLCK` on NFS without a lock
/// daemon, a FUSE file system without `flock`) is the I/O error it is.
fn lock_outcome(dir: &Path, outcome: std::result::Result<(), std::fs::TryLockError>) -> Result<()> {
    match outcome {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DirectoryLocked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("locking {}", dir.join(LOCK_FILE).display()))(e))
        }
    }
}

/// Opens a file of the directory that stays (read and write, owner only),
/// creating it empty if it is not there.
pub(crate) fn open_kept(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Manifest::decode(&bytes)
            .map(Some)
            .map_err(|reason| Error::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "{reason} (it holds the logs' key and layout: {})",
                    super::open::UNREPAIRABLE
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// Replaces the MANIFEST durably: write `MANIFEST.tmp`, sync, rename, sync
/// the directory.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let _ = std::fs::remove_file(&tmp);
    let mut file = create_owner_only(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    file.write_all(&manifest.encode())
        .map_err(io(format!("writing {}", tmp.display())))?;
    file.sync_all()
        .map_err(io(format!("syncing {}", tmp.display())))?;
    rename_durably(dir, &tmp, &dir.join(MANIFEST_FILE))
}

/// Renames `from` to `to` (atomically replacing it) within `dir`, then
/// fsyncs `dir` so that the new name survives a crash.
pub(crate) fn rename_durably(dir: &Path, from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io(format!("renaming {} to {}", from.display(), to.display())))?;
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))
}

/// Removes every layout directory but `keep` (what a layout change or an
/// upgrade interrupted after or before its MANIFEST switch left behind).
pub(crate) fn remove_other_layouts(dir: &Path, keep: u64) -> Result<()> {
    for (n, path) in layout_dirs(dir)? {
        if n != keep {
            std::fs::remove_dir_all(&path)
                .map_err(io(format!("removing stale layout {}", path.display())))?;
        }
    }
    Ok(())
}

fn layout_dirs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    let mut layouts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only a name the engine gives (`layout_dir`): a user's `L1` or
        // `L+2` beside them is not a layout, and is never removed.
        if let Some(n) = name.strip_prefix('L').and_then(|n| n.parse().ok()) {
            if layout_dir(Path::new(""), n).as_os_str() == &*name {
                layouts.push((n, entry.path()));
            }
        }
    }
    Ok(layouts)
}

/// Removes what a first open that failed part-way (a crash, a full disk)
/// left: layout directories (`L*`) whose segments hold no record. The
/// MANIFEST is written last, so without one no write was ever acknowledged
/// here; but a layout holding records (any layout: a resharded directory
/// keeps its data in a later one) means the MANIFEST went missing from a
/// directory in use, and that is refused rather than overwritten. So is
/// anything in a layout that is not a plain file or directory.
pub(crate) fn clear_unfinished_creation(dir: &Path) -> Result<()> {
    let listing = |dir: &Path| -> Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(io(format!("listing {}", dir.display())))
    };
    let layouts: Vec<PathBuf> = layout_dirs(dir)?.into_iter().map(|(_, p)| p).collect();
    let refuse = |path: &Path, what: &str| {
        Error::InvalidConfig(format!(
            "data directory {} has no {MANIFEST_FILE} but {} {what}; refusing to overwrite it \
             (restore the {MANIFEST_FILE}, or move the directory away)",
            dir.display(),
            path.display()
        ))
    };
    let mut pending = layouts.clone();
    while let Some(path) = pending.pop() {
        let kind = std::fs::symlink_metadata(&path)
            .map_err(io(format!("reading {}", path.display())))?
            .file_type();
        if kind.is_dir() {
            pending.extend(listing(&path)?);
        } else if !kind.is_file() {
            return Err(refuse(&path, "is not a plain file"));
        } else if holds_records(&path)? {
            return Err(refuse(&path, "holds data"));
        }
    }
    for layout in layouts {
        std::fs::remove_dir_all(&layout).map_err(io(format!("removing unfinished {}", layout.display())))?;
    }
    Ok(())
}

/// True if a file has a non-zero byte after its segment header (64 bytes in
/// format 1, 128 since format 2; a file too short to say is read as format 1).
fn holds_records(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    let mut header_len = super::format_v1::SEGMENT_HEADER_LEN;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok(false);
        }
        let format = || u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if offset == 0 && n >= 12 && matches!(format(), FORMAT_ONE_SALT | FORMAT_VERSION) {
            header_len = SEGMENT_HEADER_LEN;
        }
        let skip = header_len.saturating_sub(offset).min(n);
        if buf[skip..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        offset += n;
    }
}

/// Notes in `shard_dir` that a sync of its log failed, for the next open
/// (a note already there is this one). The caller's write has failed
/// already; an error here is for its reason to say that the next open
/// will not know.
///
/// After a failed writeback (`EIO`) the kernel keeps the pages in its
/// cache, marked clean, although the disk never got their bytes. A restart
/// in the same boot reading the log through the cache would take those
/// records for the disk's, append after them and sync only its own pages,
/// and a power loss later would leave a hole in the log before those
/// appends: a torn tail there, and every acknowledged write after it gone.
/// The note survives a restart as the cache does (a reboot clears both),
/// and the next open reads the shard from the disk ([`reread_from_disk`]).
pub(crate) fn mark_sync_failed(shard_dir: &Path) -> std::io::Result<()> {
    match super::segment::create_owner_only(&shard_dir.join(SYNC_FAILED_FILE)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a log's refusal adds when [`mark_sync_failed`] failed.
pub(crate) fn unmarked_sync_failure(shard_dir: &Path, e: &std::io::Error) -> String {
    format!(
        "; and the note that makes the next open read this log from the disk could not be written in {} \
         ({e}): open it again only after a reboot (the page cache may hold pages the disk never got), \
         or create that file by hand",
        shard_dir.join(SYNC_FAILED_FILE).display()
    )
}

/// If a run of this boot noted a failed sync in `shard_dir`: syncs each of
/// its files (what a dead process left dirty goes to the disk, or the disk
/// still fails and the open with it) and drops its cached pages, so that
/// recovery reads what the disk holds. Returns how many files, 0 when no
/// sync failed.
///
/// The drop is advice the kernel takes for pages that are clean, unmapped
/// and unlocked: after the sync above, and with the failed run's process
/// gone (the directory's lock says no engine has it), those are all the
/// pages of these files. On a tmpfs there is no disk and nothing to drop.
pub(crate) fn reread_from_disk(shard_dir: &Path) -> Result<usize> {
    if !shard_dir.join(SYNC_FAILED_FILE).exists() {
        return Ok(0);
    }
    let entries = std::fs::read_dir(shard_dir).map_err(io(format!("listing {}", shard_dir.display())))?;
    let mut files = 0;
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", shard_dir.display())))?;
        let path = entry.path();
        if entry.file_name() == SYNC_FAILED_FILE || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let context = || {
            format!(
                "reading {} from the disk (a sync of this log failed in an earlier run)",
                path.display()
            )
        };
        let file = File::open(&path).map_err(io(context()))?;
        file.sync_data().map_err(io(context()))?;
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
            .map_err(|e| io(context())(e.into()))?;
        files += 1;
    }
    Ok(files)
}

/// Removes `shard_dir`'s note of a failed sync once an open has read the
/// shard from the disk and synced what it keeps. Best effort: a note left
/// only makes the next open read from the disk again.
pub(crate) fn clear_sync_failed(shard_dir: &Path) {
    let _ = std::fs::remove_file(shard_dir.join(SYNC_FAILED_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::segment::SYNCED_DIRS;

    /// A held lock is `DirectoryLocked`; a lock the file system refused is
    /// an I/O error naming the lock file and the OS error (it was reported
    /// as held by another engine, which sent the operator looking for one).
    #[test]
    fn only_a_held_lock_is_directory_locked() {
        let dir = Path::new("/data/sessions");
        assert!(lock_outcome(dir, Ok(())).is_ok());
        assert!(matches!(
            lock_outcome(dir, Err(std::fs::TryLockError::WouldBlock)),
            Err(Error::DirectoryLocked { path }) if path == dir
        ));
        let refused = std::io::Error::from_raw_os_error(37); // ENOLCK
        match lock_outcome(dir, Err(std::fs::TryLockError::Error(refused))) {
            Err(e @ Error::Io { .. }) => {
                let text = e.to_string();
                assert!(text.contains("/data/sessions/LOCK"), "{text}");
                assert!(text.contains("os error 37"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // A real second lock of the same directory is the held case.
        let root = tempfile::tempdir().unwrap();
        let _held = lock(root.path()).unwrap();
        assert!(matches!(lock(root.path()), Err(Error::DirectoryLocked { .. })));
    }

    /// A data directory that `open` creates (its missing parents too) has
    /// its name synced into its parent before anything is acknowledged: a
    /// machine crash must not lose the whole directory, whose MANIFEST
    /// and logs were synced inside a directory entry that was not.
    #[test]
    fn a_created_directory_is_synced_into_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("data");
        SYNCED_DIRS.with(|s| s.borrow_mut().clear());
        let held = lock(&dir).unwrap();
        let synced = SYNCED_DIRS.with(|s| s.borrow().clone());
        for parent in [
            root.path().to_path_buf(),
            root.path().join("a"),
            root.path().join("a").join("b"),
        ] {
            assert!(
                synced.contains(&parent),
                "{} not synced: {synced:?}",
                parent.display()
            );
        }
        // An existing directory is not synced again.
        drop(held);
        SYNCED_DIRS.with(|s| s.borrow_mut().clear());
        let _lock = lock(&dir).unwrap();
        assert!(SYNCED_DIRS.with(|s| s.borrow().is_empty()));
    }
}
