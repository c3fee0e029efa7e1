//! Opening a data directory: create it, or recover every shard and either
//! keep its layout (appending where each log left off) or rewrite the logs
//! into a new layout (another shard count, an upgrade from format 1, or a
//! repair that skipped damage).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ahash::{AHashMap, RandomState};

use super::appender::{create_segment, LogId, Reopened, ShardLog};
use super::base::write_base;
use super::commit::{FileSystem, GroupCommit};
use super::directory::{
    clear_sync_failed, clear_unfinished_creation, io, layout_dir, lock, make_dir, mark_sync_failed,
    read_manifest, remove_other_layouts, reread_from_disk, shard_dir, write_manifest,
};
use super::format::{
    log_salt, log_salt_format_2, Manifest, FORMAT_ONE_SALT, FORMAT_VERSION, LOG_KEY_LEN, SEGMENT_HEADER_LEN,
};
use super::recovery::{
    live_bytes, recover_shard, Codec, Fix, Recovered, RecoveryReport, ShardFiles, ShardRecovery,
};
use super::segment::{sync_dir, Segment};
use super::{hasher_from_key, Opened, Persistence, TimeMark};
use crate::config::{Config, Durability, RecoveryMode, SyncScope};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Session, Timeout};

type Sessions = Vec<AHashMap<SessionId, Recovered>>;

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
    let segment_needs = super::smallest_segment(config.metadata_bytes_max);
    if config.segment_size_bytes < segment_needs {
        return Err(Error::InvalidConfig(format!(
            "segment_size_bytes = {}: a segment must hold the largest record ({segment_needs} bytes at metadata_bytes_max = {})",
            config.segment_size_bytes, config.metadata_bytes_max
        )));
    }
    let lock = lock(dir)?;
    // A file system the scope refuses (not ext4) is refused before
    // anything on disk changes: a rewrite below (a reshard, an upgrade, a
    // repair) would otherwise be done, and its report lost, by an open
    // that fails.
    let file_system = match config.sync_scope {
        SyncScope::FileSystem => Some(Arc::new(FileSystem::open(dir)?)),
        _ => None,
    };
    // The last run may have seen time pass beyond its newest record (see
    // `time_mark.rs`): recovery judges expiry from there at the earliest.
    let (time_mark, marked_ms) = TimeMark::open(dir, config.durability != Durability::Never)?;
    let now_ms = now_ms.max(marked_ms);
    let Some(manifest) = read_manifest(dir)? else {
        return create_directory(config, dir, shards, now_ms, (lock, time_mark, file_system));
    };
    // A MANIFEST switched by a process that died before syncing the
    // directory is made durable before anything acts on it (FORMAT.md).
    if config.durability != Durability::Never {
        sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    }
    let layout = layout_dir(dir, manifest.layout);
    // The MANIFEST is written only after the layout it names and all its
    // shard directories are in place and synced: one missing is damage,
    // not an empty store, in either mode (no record to keep survives it).
    if !layout.is_dir() {
        return Err(missing(&layout, "the layout the MANIFEST names is missing"));
    }
    let recoveries = recover_all(config, &layout, &manifest, now_ms)?;
    // Only now that the named layout recovered: the others are leftovers
    // of an interrupted rewrite (a reshard, an upgrade, a repair).
    remove_other_layouts(dir, manifest.layout)?;
    let logged_newest_ms = recoveries.iter().map(|r| r.newest_ms).max().unwrap_or(0);
    let newest_ms = logged_newest_ms.max(marked_ms);
    let now_ms = now_ms.max(newest_ms);
    let mut report = RecoveryReport::default();
    for r in &recoveries {
        report.add(&r.report);
    }
    let damaged = recoveries.iter().any(|r| r.damaged);
    debug_assert!(
        !damaged || config.recovery == RecoveryMode::Repair,
        "Strict stops at damage"
    );
    let same_shards = manifest.shards as usize == shards;
    // Ids are routed by ahash, whose output changes with the CPU features,
    // toolchain and version it is built with: a log whose sessions this
    // build routes to other shards was written by another build, and its
    // layout cannot be kept (every operation would miss them).
    let rerouted = same_shards && !routed_here(&hasher_from_key(manifest.hash_key), &recoveries, &route);
    let keep = same_shards && manifest.format == FORMAT_VERSION && !damaged && !rerouted;
    let mut switch = None;
    let (sessions, logs, hash_key) = if keep {
        let (sessions, logs, synced) = keep_layout(config, &layout, &manifest, now_ms, recoveries)?;
        report.synced_segments = synced;
        (sessions, logs, manifest.hash_key)
    } else {
        let sessions = reroute(recoveries, shards, &hasher_from_key(manifest.hash_key), &route);
        let (logs, to) = rewrite(config, dir, &manifest, shards, now_ms, &sessions)?;
        if manifest.shards != to.next.shards {
            report.reshard = Some((manifest.shards, to.next.shards));
        }
        if manifest.format != FORMAT_VERSION {
            report.upgraded_from = Some(manifest.format);
        }
        report.rewritten = damaged;
        report.rerouted = rerouted;
        switch = Some(to);
        (sessions, logs, manifest.hash_key)
    };
    // The time expiry was judged by, marked now: sessions dropped as
    // expired keep their records in a kept layout, and a crash before the
    // first periodic mark, then a clock stepped back, would bring them back.
    time_mark.mark(now_ms)?;
    // What a failed sync's note asked for is done: the shards were read
    // from the disk, and what the open keeps is synced. (A rewritten
    // layout's switch removes the old one with its notes; an open that
    // fails before it leaves them for the next.)
    if switch.is_none() {
        for shard in 0..manifest.shards as usize {
            clear_sync_failed(&shard_dir(&layout, shard));
        }
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    #[cfg(feature = "tracing")]
    log_report(dir, &report);
    Ok(Opened {
        persistence: Persistence {
            commits: group_commits(&logs, file_system)?,
            logs,
            report,
            hash_key,
            time_mark,
            switch: parking_lot::Mutex::new(switch),
            _lock: lock,
        },
        sessions,
        newest_ms,
        logged_newest_ms,
    })
}

/// Damage that no record can explain and `Repair` cannot undo: the
/// directory must be restored.
fn missing(path: &Path, reason: &str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("{reason} ({UNREPAIRABLE})"),
    }
}

/// What an error `RecoveryMode::Repair` cannot fix tells the operator.
pub(crate) const UNREPAIRABLE: &str =
    "RecoveryMode::Repair cannot rebuild it: restore the data directory from a backup";

fn random_log_key() -> Result<[u8; LOG_KEY_LEN]> {
    let mut key = [0u8; LOG_KEY_LEN];
    getrandom::fill(&mut key).map_err(Error::Entropy)?;
    Ok(key)
}

fn log_id(layout_dir: &Path, manifest: &Manifest, shard: usize) -> LogId {
    LogId {
        dir: shard_dir(layout_dir, shard),
        layout: manifest.layout,
        shard: to_u32(shard),
        shards: manifest.shards,
        salt: log_salt(&manifest.log_key, manifest.layout, to_u32(shard)),
    }
}

/// A new directory: fresh keys, layout 1, an empty log per shard.
fn create_directory(
    config: &Config,
    dir: &Path,
    shards: usize,
    now_ms: u64,
    (lock, time_mark, file_system): (File, TimeMark, Option<Arc<FileSystem>>),
) -> Result<Opened> {
    let mut key_bytes = [0u8; 32];
    getrandom::fill(&mut key_bytes).map_err(Error::Entropy)?;
    let hash_key = key_from_bytes(key_bytes);
    let manifest = Manifest {
        format: FORMAT_VERSION,
        shards: to_u32(shards),
        layout: 1,
        hash_key,
        log_key: random_log_key()?,
    };
    clear_unfinished_creation(dir)?;
    let layout = layout_dir(dir, manifest.layout);
    let mut logs = Vec::with_capacity(shards);
    for shard in 0..shards {
        let id = log_id(&layout, &manifest, shard);
        make_dir(&id.dir)?;
        let log = ShardLog::create(id, config.segment_size_bytes, config.durability, now_ms)?;
        logs.push(Arc::new(log));
    }
    sync_dir(&layout).map_err(io(format!("syncing {}", layout.display())))?;
    // The layout's own name in the data directory, before the MANIFEST
    // that names it: a MANIFEST naming a layout lost in a machine crash
    // would open as an empty store.
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    write_manifest(dir, &manifest)?;
    Ok(Opened {
        persistence: Persistence {
            commits: group_commits(&logs, file_system)?,
            logs,
            report: RecoveryReport::default(),
            hash_key: manifest.hash_key,
            time_mark,
            // A new directory has nothing to report: it is named at once.
            switch: parking_lot::Mutex::new(None),
            _lock: lock,
        },
        sessions: (0..shards).map(|_| AHashMap::new()).collect(),
        newest_ms: now_ms,
        logged_newest_ms: 0,
    })
}

/// Every recovered session, in the shard `route` gives it among `shards`.
fn reroute(
    recoveries: Vec<ShardRecovery>,
    shards: usize,
    hasher: &RandomState,
    route: impl Fn(&RandomState, &SessionId) -> usize,
) -> Sessions {
    let mut sessions: Sessions = (0..shards).map(|_| AHashMap::new()).collect();
    for r in recoveries {
        for (id, s) in r.sessions {
            sessions[route(hasher, &id)].insert(id, s);
        }
    }
    sessions
}

/// The same layout as last time: clear what recovery asked for, make what
/// it read durable, and append where each log left off. Returns the
/// segment files synced too.
fn keep_layout(
    config: &Config,
    layout: &Path,
    manifest: &Manifest,
    now_ms: u64,
    recoveries: Vec<ShardRecovery>,
) -> Result<(Sessions, Vec<Arc<ShardLog>>, usize)> {
    let mut sessions = Vec::with_capacity(recoveries.len());
    let mut logs = Vec::with_capacity(recoveries.len());
    let mut synced = 0;
    for (shard, r) in recoveries.into_iter().enumerate() {
        let id = log_id(layout, manifest, shard);
        let durable = apply_fixes(&id.dir, &r.fixes).and_then(|()| {
            if config.durability == Durability::Never {
                Ok(0)
            } else {
                // The segments' names too: a dead process may have rolled
                // to one without syncing the directory.
                let synced = sync_segments(&id.dir)?;
                sync_dir(&id.dir).map_err(io(format!("syncing {}", id.dir.display())))?;
                Ok(synced)
            }
        });
        // A sync failing here leaves the shard's note as one in a run does:
        // the pages it could not write stay cached and clean, and a retried
        // open, whose sync no longer reports the error, would read them as
        // the disk's.
        // The open fails with the sync's error whether or not the note is
        // written; the next open rereads only if it is.
        synced += durable.inspect_err(|_| {
            let _ = mark_sync_failed(&id.dir);
        })?;
        let live = r.live_bytes();
        let reopened = if let Some(tail) = &r.tail {
            let current = Segment::open(tail.path.clone(), tail.sequence, tail.pos)
                .map_err(io(format!("opening {}", tail.path.display())))?;
            Reopened {
                current,
                pos: tail.pos,
                records: tail.records,
                first_sequence: r.first_sequence,
                log_bytes: r.log_bytes,
                live_bytes: live,
            }
        } else {
            // No segment to append to (none yet, or the last one is sealed).
            make_dir(&id.dir)?;
            let current = create_segment(&id, r.next_sequence, 0, config.segment_size_bytes, now_ms)?;
            sync_dir(&id.dir).map_err(io(format!("syncing {}", id.dir.display())))?;
            Reopened {
                current,
                pos: SEGMENT_HEADER_LEN,
                records: 0,
                first_sequence: r.first_sequence.min(r.next_sequence),
                log_bytes: r.log_bytes + SEGMENT_HEADER_LEN as u64,
                live_bytes: live,
            }
        };
        logs.push(Arc::new(ShardLog::from_reopened(
            id,
            config.segment_size_bytes,
            config.durability,
            reopened,
        )));
        sessions.push(r.sessions);
    }
    Ok((sessions, logs, synced))
}

/// Syncs every segment file in `dir` (one that is clean costs a system
/// call): recovery read them through the page cache, which may hold
/// records a dead process wrote and no one synced. Returns how many.
fn sync_segments(dir: &Path) -> Result<usize> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    let mut synced = 0;
    for entry in entries {
        let path = entry.map_err(io(format!("listing {}", dir.display())))?.path();
        if path.extension().is_some_and(|x| x == "seg") {
            #[cfg(test)]
            if tests::FAIL_SEGMENT_SYNCS.with(std::cell::Cell::get) {
                let injected = std::io::Error::other("injected sync failure");
                return Err(io(format!("syncing {}", path.display()))(injected));
            }
            File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(io(format!("syncing {}", path.display())))?;
            synced += 1;
        }
    }
    Ok(synced)
}

/// Clears torn tails (zeroed and synced) and removes the files recovery
/// found superseded, unfinished or surplus.
fn apply_fixes(dir: &Path, fixes: &[Fix]) -> Result<()> {
    let mut removed = false;
    for fix in fixes {
        match fix {
            Fix::Zero { path, from, to } => {
                // Synced, so that a later crash cannot bring the torn bytes
                // back behind records appended over them.
                let segment =
                    Segment::open(path.clone(), 0, 0).map_err(io(format!("opening {}", path.display())))?;
                // SAFETY: recovery opened the segment just above; no other
                // thread has it.
                #[allow(unsafe_code)]
                unsafe { segment.zero(*from, to - from) }
                    .map_err(io(format!("clearing the torn tail of {}", path.display())))?;
            }
            Fix::Remove { path } => match std::fs::remove_file(path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
            },
        }
    }
    if removed {
        sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    }
    Ok(())
}

/// Rewrites the sessions recovered from `manifest`'s layout into the next
/// layout, in the current format; returns its logs and the switch to it.
fn rewrite(
    config: &Config,
    dir: &Path,
    manifest: &Manifest,
    shards: usize,
    now_ms: u64,
    sessions: &Sessions,
) -> Result<(Vec<Arc<ShardLog>>, LayoutSwitch)> {
    let log_key = if manifest.format == FORMAT_VERSION {
        manifest.log_key
    } else {
        random_log_key()?
    };
    let next = Manifest {
        format: FORMAT_VERSION,
        shards: to_u32(shards),
        layout: manifest.layout.checked_add(1).ok_or_else(|| Error::Corrupt {
            path: dir.join("MANIFEST"),
            offset: 0,
            reason: format!("layout {} has no successor ({UNREPAIRABLE})", manifest.layout),
        })?,
        hash_key: manifest.hash_key,
        log_key,
    };
    let logs = write_layout(config, dir, &next, now_ms, sessions)?;
    let switch = LayoutSwitch {
        dir: dir.to_path_buf(),
        next,
        old_layout: manifest.layout,
    };
    Ok((logs, switch))
}

/// Writes every session into layout `next.layout` (a base and a fresh
/// segment per shard), synced, and returns its logs. The MANIFEST still
/// names the old layout: the open switches it ([`LayoutSwitch`]) once
/// nothing else can fail, so that until then a crash or an error leaves
/// the old layout in force.
fn write_layout(
    config: &Config,
    dir: &Path,
    next: &Manifest,
    now_ms: u64,
    sessions: &[AHashMap<SessionId, Recovered>],
) -> Result<Vec<Arc<ShardLog>>> {
    let layout = layout_dir(dir, next.layout);
    let mut logs = Vec::with_capacity(sessions.len());
    for (shard, map) in sessions.iter().enumerate() {
        let id = log_id(&layout, next, shard);
        make_dir(&id.dir)?;
        let base = map.iter().map(|(sid, s)| {
            let session = Session::new(
                *sid,
                s.metadata.clone(),
                s.created_ms,
                s.last_access_ms,
                Timeout::from_stored(s.timeout_ms),
            )
            .with_lifetime(Timeout::from_stored(s.lifetime));
            (session, s.topics.clone())
        });
        let base_len = write_base(&id, 1, 2, now_ms, base)?;
        let current = create_segment(&id, 2, 0, config.segment_size_bytes, now_ms)?;
        sync_dir(&id.dir).map_err(io(format!("syncing {}", id.dir.display())))?;
        let reopened = Reopened {
            current,
            pos: SEGMENT_HEADER_LEN,
            records: 0,
            first_sequence: 1,
            log_bytes: base_len + SEGMENT_HEADER_LEN as u64,
            live_bytes: live_bytes(map),
        };
        logs.push(Arc::new(ShardLog::from_reopened(
            id,
            config.segment_size_bytes,
            config.durability,
            reopened,
        )));
    }
    sync_dir(&layout).map_err(io(format!("syncing {}", layout.display())))?;
    // As in `create_directory`: the new layout's name before the MANIFEST
    // that will name it.
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    Ok(logs)
}

/// A layout the open rewrote (a repair, a reshard, an upgrade, a reroute)
/// and has not switched to yet. The engine switches it last
/// (`Engine::open`), after the shards are built and its threads started:
/// an open that fails before leaves the MANIFEST naming the old layout,
/// whose damage the retried open finds and reports again (the new layout
/// is a leftover it removes). Switched earlier, the retried open would
/// find a clean log, and the report naming the records a repair dropped
/// would be lost with the failed open.
pub(crate) struct LayoutSwitch {
    dir: PathBuf,
    next: Manifest,
    old_layout: u64,
}

impl LayoutSwitch {
    /// Points the MANIFEST at the new layout, then removes the old one.
    pub(crate) fn switch(self) -> Result<()> {
        write_manifest(&self.dir, &self.next)?;
        // The switch is made and durable; the old layout is now a
        // leftover, which the next open removes if this removal fails:
        // failing the open here would lose the report it made.
        let old = layout_dir(&self.dir, self.old_layout);
        if std::fs::remove_dir_all(&old).is_ok() {
            let _ = sync_dir(&self.dir);
        }
        Ok(())
    }
}

/// A group commit per log; with `SyncScope::FileSystem`, each given the
/// file system it is on (`data_dir`'s, opened and checked first; a log on
/// another one, a shard directory mounted elsewhere, gets that one's).
fn group_commits(
    logs: &[Arc<ShardLog>],
    data_dir_fs: Option<Arc<FileSystem>>,
) -> Result<Vec<Arc<GroupCommit>>> {
    let scoped = data_dir_fs.is_some();
    let mut file_systems: Vec<Arc<FileSystem>> = data_dir_fs.into_iter().collect();
    let mut commits = Vec::with_capacity(logs.len());
    for log in logs {
        let file_system = if scoped {
            let dir = &log.id().dir;
            let device = std::os::unix::fs::MetadataExt::dev(
                &std::fs::metadata(dir).map_err(io(format!("reading {}'s metadata", dir.display())))?,
            );
            let shared = file_systems.iter().find(|fs| fs.device() == device).cloned();
            if let Some(fs) = shared {
                Some(fs)
            } else {
                let fs = Arc::new(FileSystem::open(dir)?);
                file_systems.push(Arc::clone(&fs));
                Some(fs)
            }
        } else {
            None
        };
        commits.push(Arc::new(GroupCommit::new(Arc::clone(log), file_system)));
    }
    Ok(commits)
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
/// True if this build routes every recovered session to the shard whose
/// log held it.
fn routed_here(
    hasher: &RandomState,
    recoveries: &[ShardRecovery],
    route: &(impl Fn(&RandomState, &SessionId) -> usize + Sync),
) -> bool {
    recoveries
        .iter()
        .enumerate()
        .all(|(shard, r)| r.sessions.keys().all(|id| route(hasher, id) == shard))
}

/// `InvalidConfig` if the recovered shards hold more live sessions than
/// `sessions_max`: checked before anything on disk changes (a rewrite
/// would drop the damage a Repair open reports, and the retried open would
/// have nothing to report).
fn check_room(config: &Config, recoveries: &[ShardRecovery]) -> Result<()> {
    let live: usize = recoveries.iter().map(|r| r.sessions.len()).sum();
    if live > config.sessions_max {
        return Err(Error::InvalidConfig(format!(
            "sessions_max = {}: the data directory holds {live} live sessions; raise sessions_max to open it",
            config.sessions_max
        )));
    }
    Ok(())
}

/// Every shard's sessions (expired ones dropped); refused
/// ([`check_room`]) if they are more than `sessions_max`.
fn recover_all(
    config: &Config,
    layout: &Path,
    manifest: &Manifest,
    now_ms: u64,
) -> Result<Vec<ShardRecovery>> {
    let shards = manifest.shards as usize;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(shards)
        .max(1);
    let recover = |shard: usize| -> Result<ShardRecovery> {
        let dir = shard_dir(layout, shard);
        if !dir.is_dir() {
            return Err(missing(&dir, "a shard directory of the layout is missing"));
        }
        let codec = match manifest.format {
            FORMAT_VERSION => Codec::Salted {
                salt: log_salt(&manifest.log_key, manifest.layout, to_u32(shard)),
            },
            FORMAT_ONE_SALT => Codec::Salted {
                salt: log_salt_format_2(&manifest.log_key, manifest.layout, to_u32(shard)),
            },
            _ => Codec::V1,
        };
        let reread = reread_from_disk(&dir)?;
        let files = ShardFiles {
            dir: &dir,
            layout: manifest.layout,
            shard: to_u32(shard),
            shards: manifest.shards,
            codec,
        };
        let mut recovered = recover_shard(files, config.recovery)?;
        recovered.report.reread_after_failed_sync = reread;
        Ok(recovered)
    };
    // Thread `t` recovers shards t, t + threads, ...
    let share = |t: usize| -> Vec<(usize, Result<ShardRecovery>)> {
        (t..shards)
            .step_by(threads)
            .map(|shard| (shard, recover(shard)))
            .collect()
    };
    let results: Vec<Vec<(usize, Result<ShardRecovery>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = &share;
                let spawned = if config.fail_recovery_threads {
                    Err(std::io::Error::other(
                        "injected failure (debug_fail_recovery_threads)",
                    ))
                } else {
                    std::thread::Builder::new()
                        .name("session-recovery".into())
                        .spawn_scoped(s, move || share(t))
                };
                (t, spawned)
            })
            .collect();
        workers
            .into_iter()
            .map(|(t, w)| match w {
                Ok(w) => w.join().expect("recovery thread panicked"),
                // Out of threads (a process or cgroup limit): its share
                // is recovered here, on the opening thread.
                Err(_) => share(t),
            })
            .collect()
    });
    let mut by_shard: Vec<Option<ShardRecovery>> = (0..shards).map(|_| None).collect();
    for (shard, r) in results.into_iter().flatten() {
        by_shard[shard] = Some(r?);
    }
    let mut recovered: Vec<ShardRecovery> = by_shard
        .into_iter()
        .map(|r| r.expect("every shard recovered"))
        .collect();
    // The log's runs reached the newest time it holds. A clock now behind
    // that (a VM restored, an NTP step, a boot before NTP) must not bring
    // back what they had already seen expire; the engine's clock is raised
    // to it too (`Core::open`), so that the log's times never step back.
    let newest_ms = recovered.iter().map(|r| r.newest_ms).max().unwrap_or(0);
    for r in &mut recovered {
        r.drop_expired(now_ms.max(newest_ms));
    }
    check_room(config, &recovered)?;
    Ok(recovered)
}

/// The open's rare findings, one event each (feature `tracing`).
#[cfg(feature = "tracing")]
fn log_report(dir: &Path, report: &RecoveryReport) {
    let dir = dir.display();
    if report.corrupt_skipped > 0 {
        tracing::warn!(
            %dir,
            stretches = report.corrupt_skipped,
            bytes = report.corrupt_bytes,
            rewritten = report.rewritten,
            "session-engine: repair skipped damaged records (recovery_report().damage lists them)"
        );
    }
    if report.torn_tails > 0 {
        tracing::info!(
            %dir,
            tails = report.torn_tails,
            bytes = report.torn_bytes,
            "session-engine: torn log tails cleared at open (the trace of a crash mid-write)"
        );
    }
    if let Some(format) = report.upgraded_from {
        tracing::info!(%dir, from = format, "session-engine: log upgraded to the current format");
    }
    if let Some((old, new)) = report.reshard {
        tracing::info!(%dir, old, new, "session-engine: log rewritten for a new shard count");
    }
    if report.rerouted {
        tracing::info!(%dir, "session-engine: log rewritten: its ids had been routed to shards by another hash");
    }
    if report.reread_after_failed_sync > 0 {
        tracing::warn!(
            %dir,
            files = report.reread_after_failed_sync,
            "session-engine: a log sync failed in an earlier run: its shards were read from the disk, not the page cache"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::{Config, Durability, Engine, Error, Timeout};

    thread_local! {
        /// Makes this thread's open fail the syncs of the segments it
        /// keeps, as a disk returning `EIO` would.
        pub(super) static FAIL_SEGMENT_SYNCS: Cell<bool> = const { Cell::new(false) };
    }

    /// Two shards, `Always`, small segments, no sweeper, in `dir`.
    fn two_shards_always(dir: &std::path::Path) -> Config {
        Config::default()
            .shards(2)
            .data_dir(dir)
            .durability(Durability::Always)
            .segment_size_bytes(256 * 1024)
            .without_sweeper()
    }

    fn notes(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                if p.is_dir() {
                    notes(&p)
                } else {
                    usize::from(p.file_name().is_some_and(|n| n == "SYNC-FAILED"))
                }
            })
            .sum()
    }

    /// An open of an existing directory acts on names the process before
    /// it may have made without syncing their directory (it died between
    /// a rename and the sync): the MANIFEST a layout change switched, a
    /// segment it rolled to. Before it acknowledges anything (and before
    /// it removes the layouts that MANIFEST leaves behind), it makes them
    /// durable: the data directory and every shard's directory are synced,
    /// or a power loss could bring the old MANIFEST back beside a removed
    /// layout, or drop the segment holding acknowledged writes.
    #[test]
    fn an_open_makes_the_names_it_acts_on_durable() {
        use crate::persist::segment::SYNCED_DIRS;
        let dir = tempfile::tempdir().unwrap();
        let config = || two_shards_always(dir.path());
        drop(Engine::open(config()).unwrap());
        SYNCED_DIRS.with(|synced| synced.borrow_mut().clear());
        let engine = Engine::open(config()).unwrap();
        let synced = SYNCED_DIRS.with(|synced| synced.borrow().clone());
        assert!(
            synced.iter().any(|d| d == dir.path()),
            "the data directory: {synced:?}"
        );
        let layout = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .expect("a layout directory");
        let shards: Vec<_> = std::fs::read_dir(&layout)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(shards.len(), 2, "{shards:?}");
        for shard in &shards {
            assert!(synced.contains(shard), "{}: {synced:?}", shard.display());
        }
        drop(engine);
    }

    /// A sync that fails at an open (the kernel's own writeback of a log
    /// failed before a crash, and the open's sync is the first to hear of
    /// it) fails that open and leaves the shard's note: the open retried
    /// next, whose sync no longer reports the error, reads that shard from
    /// the disk rather than from the pages left cached and clean.
    #[test]
    fn a_sync_that_fails_at_an_open_leaves_the_note_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let config = || two_shards_always(dir.path());
        let id = {
            let engine = Engine::open(config()).unwrap();
            engine.create(b"kept", Timeout::from_secs(3600)).unwrap()
        };
        FAIL_SEGMENT_SYNCS.with(|f| f.set(true));
        let failed = Engine::open(config());
        FAIL_SEGMENT_SYNCS.with(|f| f.set(false));
        let err = failed.expect_err("the open's sync failed");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(notes(dir.path()) >= 1, "no note left by the failed open");

        let engine = Engine::open(config()).unwrap();
        assert!(engine.recovery_report().unwrap().reread_after_failed_sync >= 1);
        assert_eq!(engine.peek(&id).unwrap().metadata(), b"kept");
        assert_eq!(
            notes(dir.path()),
            0,
            "the note outlived the open that read the disk"
        );
    }
}
