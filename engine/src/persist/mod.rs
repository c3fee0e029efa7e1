//! Persistence: per-shard append-only logs in a data directory, recovered at
//! open. The byte layout is in `engine/FORMAT.md` and `format.rs`; the write
//! path and group commit in `log.rs`; recovery in `recovery.rs`; compaction
//! below.

pub mod format;
mod log;
mod recovery;
mod segment;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ahash::{AHashMap, RandomState};

use self::format::{put_len, Manifest, Record, SegmentHeader, FLAG_BASE, SEGMENT_HEADER_LEN};
use self::log::{create_segment, Reopened};
pub(crate) use self::log::{AsyncWaiter, FlushRequests, ShardLog};
pub(crate) use self::recovery::Recovered;
pub use self::recovery::RecoveryReport;
use self::recovery::{recover_shard, ShardRecovery};
use self::segment::{create_owner_only, segment_name, sync_dir, tmp_name};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Session, Timeout};

const LOCK_FILE: &str = "LOCK";
const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn layout_dir(dir: &Path, layout: u64) -> PathBuf {
    dir.join(format!("L{layout:08}"))
}

fn shard_dir(layout_dir: &Path, shard: usize) -> PathBuf {
    layout_dir.join(format!("S{shard:04}"))
}

fn make_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(format!("creating directory {}", path.display())))
}

/// The ahash seeds a manifest's key stands for.
pub(crate) fn hasher_from_key(key: [u64; 4]) -> RandomState {
    RandomState::with_seeds(key[0], key[1], key[2], key[3])
}

/// An open data directory.
pub(crate) struct Persistence {
    pub(crate) logs: Vec<Arc<ShardLog>>,
    pub(crate) report: RecoveryReport,
    pub(crate) hash_key: [u64; 4],
    // Held for the engine's lifetime; the kernel drops the flock with it.
    _lock: File,
}

/// What `open` hands the engine: the directory, and the sessions to load
/// into each shard.
pub(crate) struct Opened {
    pub(crate) persistence: Persistence,
    pub(crate) sessions: Vec<AHashMap<SessionId, Recovered>>,
}

/// Opens (or creates) the data directory and recovers its sessions, routed
/// to `shards` shards by `route(hasher, id)`.
pub(crate) fn open(
    config: &Config,
    dir: &Path,
    shards: usize,
    now_ms: u64,
    route: impl Fn(&RandomState, &SessionId) -> usize + Sync,
) -> Result<Opened> {
    let started = Instant::now();
    make_dir(dir)?;
    let lock = lock_directory(dir)?;
    let _ = std::fs::remove_file(dir.join(MANIFEST_TMP));
    let Some(manifest) = read_manifest(dir)? else {
        return create_directory(config, dir, shards, now_ms, lock);
    };
    remove_other_layouts(dir, manifest.layout)?;
    let layout = layout_dir(dir, manifest.layout);
    let same_layout = manifest.shards as usize == shards;
    let recoveries = recover_all(config, &layout, manifest.shards, now_ms, same_layout)?;
    let mut report = RecoveryReport::default();
    for r in &recoveries {
        report.add(&r.report);
    }
    let (sessions, logs) = if same_layout {
        reopen_layout(config, &layout, shards, now_ms, recoveries)?
    } else {
        let hasher = hasher_from_key(manifest.hash_key);
        let mut sessions: Vec<AHashMap<SessionId, Recovered>> =
            (0..shards).map(|_| AHashMap::new()).collect();
        for r in recoveries {
            for (id, s) in r.sessions {
                sessions[route(&hasher, &id)].insert(id, s);
            }
        }
        let logs = write_layout(config, dir, &manifest, shards, now_ms, &sessions)?;
        report.reshard = Some((manifest.shards, to_u32(shards)));
        (sessions, logs)
    };
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(Opened {
        persistence: Persistence {
            logs,
            report,
            hash_key: manifest.hash_key,
            _lock: lock,
        },
        sessions,
    })
}

fn lock_directory(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    if lock.try_lock().is_err() {
        return Err(Error::DirectoryLocked {
            path: dir.to_path_buf(),
        });
    }
    Ok(lock)
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Manifest::decode(&bytes)
            .map(Some)
            .map_err(|reason| Error::Corrupt {
                path,
                offset: 0,
                reason: reason.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// Removes what a first open that failed part-way (a crash, a full disk)
/// left: layout directories (`L*`) whose segments hold no record. The
/// MANIFEST is written last, so without one no write was ever acknowledged
/// here; but a layout holding records (any layout: a resharded directory
/// keeps its data in a later one) means the MANIFEST went missing from a
/// directory in use, and that is refused rather than overwritten. So is
/// anything in a layout that is not a plain file or directory.
fn clear_unfinished_creation(dir: &Path) -> Result<()> {
    let listing = |dir: &Path| -> Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(io(format!("listing {}", dir.display())))
    };
    let layouts: Vec<PathBuf> = listing(dir)?
        .into_iter()
        .filter(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.strip_prefix('L').is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .collect();
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

/// True if a file has a non-zero byte after a segment header's length.
fn holds_records(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok(false);
        }
        let skip = format::SEGMENT_HEADER_LEN.saturating_sub(offset).min(n);
        if buf[skip..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        offset += n;
    }
}

/// A new directory: a fresh key, layout 1, an empty log per shard.
fn create_directory(config: &Config, dir: &Path, shards: usize, now_ms: u64, lock: File) -> Result<Opened> {
    let mut key_bytes = [0u8; 32];
    getrandom::fill(&mut key_bytes).map_err(Error::Entropy)?;
    let manifest = Manifest {
        shards: to_u32(shards),
        layout: 1,
        hash_key: key_from_bytes(key_bytes),
    };
    clear_unfinished_creation(dir)?;
    let layout = layout_dir(dir, manifest.layout);
    let mut logs = Vec::with_capacity(shards);
    for shard in 0..shards {
        let sdir = shard_dir(&layout, shard);
        make_dir(&sdir)?;
        let log = ShardLog::create(
            sdir,
            to_u32(shard),
            manifest.shards,
            config.segment_size_bytes,
            config.durability,
            now_ms,
        )?;
        logs.push(Arc::new(log));
    }
    sync_dir(&layout).map_err(io(format!("syncing {}", layout.display())))?;
    write_manifest(dir, &manifest)?;
    Ok(Opened {
        persistence: Persistence {
            logs,
            report: RecoveryReport::default(),
            hash_key: manifest.hash_key,
            _lock: lock,
        },
        sessions: (0..shards).map(|_| AHashMap::new()).collect(),
    })
}

type Layout = (Vec<AHashMap<SessionId, Recovered>>, Vec<Arc<ShardLog>>);

/// The same shard count as last time: append where each log left off.
fn reopen_layout(
    config: &Config,
    layout: &Path,
    shards: usize,
    now_ms: u64,
    recoveries: Vec<ShardRecovery>,
) -> Result<Layout> {
    let mut sessions = Vec::with_capacity(shards);
    let mut logs = Vec::with_capacity(shards);
    for (shard, r) in recoveries.into_iter().enumerate() {
        let sdir = shard_dir(layout, shard);
        let reopened = if let Some(tail) = r.tail {
            tail
        } else {
            // No usable segment (none yet, or a torn creation removed).
            make_dir(&sdir)?;
            let current = create_segment(
                &sdir,
                to_u32(shard),
                to_u32(shards),
                r.next_sequence,
                0,
                config.segment_size_bytes,
                now_ms,
            )?;
            sync_dir(&sdir).map_err(io(format!("syncing {}", sdir.display())))?;
            Reopened {
                current,
                pos: SEGMENT_HEADER_LEN,
                first_sequence: r.first_sequence.min(r.next_sequence),
                log_bytes: r.log_bytes + SEGMENT_HEADER_LEN as u64,
                live_bytes: live_bytes(&r.sessions),
            }
        };
        logs.push(Arc::new(ShardLog::from_reopened(
            sdir,
            to_u32(shard),
            to_u32(shards),
            config.segment_size_bytes,
            config.durability,
            reopened,
        )));
        sessions.push(r.sessions);
    }
    Ok((sessions, logs))
}

fn live_bytes(sessions: &AHashMap<SessionId, Recovered>) -> u64 {
    sessions.values().map(|s| put_len(s.metadata.len()) as u64).sum()
}

/// A new shard count: writes every session into a new layout, then switches
/// the manifest to it and removes the old one.
fn write_layout(
    config: &Config,
    dir: &Path,
    old: &Manifest,
    shards: usize,
    now_ms: u64,
    sessions: &[AHashMap<SessionId, Recovered>],
) -> Result<Vec<Arc<ShardLog>>> {
    let manifest = Manifest {
        shards: to_u32(shards),
        layout: old.layout + 1,
        hash_key: old.hash_key,
    };
    let layout = layout_dir(dir, manifest.layout);
    let mut logs = Vec::with_capacity(shards);
    for (shard, map) in sessions.iter().enumerate() {
        let sdir = shard_dir(&layout, shard);
        make_dir(&sdir)?;
        let base = map.iter().map(|(id, s)| {
            Session::new(
                *id,
                s.metadata.clone(),
                s.created_ms,
                s.last_access_ms,
                Timeout::from_stored(s.timeout_ms),
            )
        });
        let base_len = write_base(&sdir, to_u32(shard), manifest.shards, 1, now_ms, base)?;
        let current = create_segment(
            &sdir,
            to_u32(shard),
            manifest.shards,
            2,
            0,
            config.segment_size_bytes,
            now_ms,
        )?;
        sync_dir(&sdir).map_err(io(format!("syncing {}", sdir.display())))?;
        let reopened = Reopened {
            current,
            pos: SEGMENT_HEADER_LEN,
            first_sequence: 1,
            log_bytes: base_len + SEGMENT_HEADER_LEN as u64,
            live_bytes: live_bytes(map),
        };
        logs.push(Arc::new(ShardLog::from_reopened(
            sdir,
            to_u32(shard),
            manifest.shards,
            config.segment_size_bytes,
            config.durability,
            reopened,
        )));
    }
    sync_dir(&layout).map_err(io(format!("syncing {}", layout.display())))?;
    write_manifest(dir, &manifest)?;
    let old_layout = layout_dir(dir, old.layout);
    std::fs::remove_dir_all(&old_layout).map_err(io(format!("removing {}", old_layout.display())))?;
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    Ok(logs)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("bounded by SHARDS_MAX")
}

fn key_from_bytes(bytes: [u8; 32]) -> [u64; 4] {
    let mut key = [0u64; 4];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    }
    key
}

/// Replays every shard of a layout, on as many threads as there are cores.
fn recover_all(
    config: &Config,
    layout: &Path,
    shards: u32,
    now_ms: u64,
    append: bool,
) -> Result<Vec<ShardRecovery>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(shards as usize)
        .max(1);
    let mode = config.recovery;
    let results: Vec<Result<ShardRecovery>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..shards as usize)
                        .step_by(threads)
                        .map(|shard| {
                            let sdir = shard_dir(layout, shard);
                            if sdir.exists() {
                                recover_shard(&sdir, to_u32(shard), shards, mode, now_ms, append)
                                    .map(|r| (shard, r))
                            } else {
                                Ok((shard, empty_recovery()))
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_shard: Vec<Option<Result<ShardRecovery>>> = (0..shards).map(|_| None).collect();
        for w in workers {
            for r in w.join().expect("recovery thread panicked") {
                match r {
                    Ok((shard, rec)) => by_shard[shard] = Some(Ok(rec)),
                    Err(e) => return vec![Err(e)],
                }
            }
        }
        by_shard
            .into_iter()
            .map(|r| r.expect("every shard recovered"))
            .collect()
    });
    results.into_iter().collect()
}

fn empty_recovery() -> ShardRecovery {
    ShardRecovery {
        sessions: AHashMap::new(),
        report: RecoveryReport::default(),
        tail: None,
        next_sequence: 1,
        first_sequence: 1,
        log_bytes: 0,
    }
}

fn remove_other_layouts(dir: &Path, keep: u64) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix('L').and_then(|n| n.parse::<u64>().ok()) {
            if n != keep {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .map_err(io(format!("removing stale layout {}", path.display())))?;
            }
        }
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
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
fn rename_durably(dir: &Path, from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io(format!("renaming {} to {}", from.display(), to.display())))?;
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))
}

/// Writes a `BASE` segment holding `sessions` as `PUT` records, synced and
/// durable under its final name. Returns its length.
fn write_base(
    dir: &Path,
    shard: u32,
    shards: u32,
    sequence: u64,
    now_ms: u64,
    sessions: impl Iterator<Item = Session>,
) -> Result<u64> {
    let tmp = dir.join(tmp_name(sequence));
    let len = write_base_tmp(&tmp, shard, shards, sequence, now_ms, sessions)?;
    rename_durably(dir, &tmp, &dir.join(segment_name(sequence)))?;
    Ok(len)
}

/// Step one of writing a base: the `.tmp` file, synced.
fn write_base_tmp(
    tmp: &Path,
    shard: u32,
    shards: u32,
    sequence: u64,
    now_ms: u64,
    sessions: impl Iterator<Item = Session>,
) -> Result<u64> {
    let file = create_owner_only(tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = SegmentHeader {
        shard,
        shards,
        flags: FLAG_BASE,
        sequence,
        created_ms: now_ms,
    };
    let write_err = io(format!("writing {}", tmp.display()));
    let mut len = SEGMENT_HEADER_LEN as u64;
    let mut record = Vec::with_capacity(512);
    let result = (|| {
        out.write_all(&header.encode())?;
        for s in sessions {
            record.clear();
            put_record(&s).encode(&mut record);
            out.write_all(&record)?;
            len += record.len() as u64;
        }
        let file = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        // A partial base must not sit on a disk that is likely full (it
        // would be removed at the next open only).
        let _ = std::fs::remove_file(tmp);
        return Err(write_err(e));
    }
    Ok(len)
}

/// The `PUT` record that recreates `s`.
pub(crate) fn put_record(s: &Session) -> Record<'_> {
    Record::Put {
        id: s.id(),
        created_ms: s.created_ms(),
        last_access_ms: s.last_access_ms(),
        timeout_ms: s.timeout().to_stored().unwrap_or(crate::session::TIMEOUT_NEVER),
        metadata: s.metadata(),
    }
}

/// How far a compaction goes before it stops (tests simulate a crash at
/// each step by stopping there).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompactionStep {
    /// The current segment is sealed; appends continue in a new one.
    Sealed,
    /// The base is written to its `.tmp` file and synced.
    TmpWritten,
    /// The `.tmp` file is renamed over the sealed segment.
    Renamed,
    /// The superseded segments are deleted: complete.
    Done,
}

/// Compacts one shard: seals its log, writes the live sessions into a base
/// segment that replaces the sealed ones, and deletes those. `snapshot`
/// hands out live sessions in batches (taking the shard lock per batch).
pub(crate) fn compact(
    log: &ShardLog,
    now_ms: u64,
    stop_after: CompactionStep,
    mut snapshot: impl FnMut(&mut Vec<Session>) -> bool,
) -> Result<()> {
    let (sealed, bytes_before) = log.seal(now_ms)?;
    if stop_after == CompactionStep::Sealed {
        return Ok(());
    }
    let dir = log.shard_dir().to_path_buf();
    let (shard, shards) = log.identity();
    let tmp = dir.join(tmp_name(sealed));
    let mut batch = Vec::with_capacity(1024);
    let mut done = false;
    let sessions = std::iter::from_fn(|| loop {
        if let Some(s) = batch.pop() {
            return Some(s);
        }
        if done {
            return None;
        }
        done = !snapshot(&mut batch);
    });
    let base_len = write_base_tmp(&tmp, shard, shards, sealed, now_ms, sessions)?;
    if stop_after == CompactionStep::TmpWritten {
        return Ok(());
    }
    rename_durably(&dir, &tmp, &dir.join(segment_name(sealed)))?;
    if stop_after == CompactionStep::Renamed {
        return Ok(());
    }
    for sequence in log.first_sequence()..sealed {
        let old = dir.join(segment_name(sequence));
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", old.display()))(e)),
        }
    }
    sync_dir(&dir).map_err(io(format!("syncing {}", dir.display())))?;
    log.compacted(sealed, bytes_before, base_len);
    Ok(())
}

/// True when dead bytes dominate the log enough to compact.
pub(crate) fn wants_compaction(log: &ShardLog, threshold: f64, segment_len: usize) -> bool {
    let (log_bytes, live_bytes) = log.sizes();
    #[allow(clippy::cast_precision_loss)]
    let dead_fraction = log_bytes.saturating_sub(live_bytes) as f64 / log_bytes.max(1) as f64;
    log_bytes > 2 * segment_len as u64 && dead_fraction > threshold
}
