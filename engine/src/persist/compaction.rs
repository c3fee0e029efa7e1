//! Compaction: a shard's log rewritten as one base segment of its live
//! sessions once dead records dominate it (`FORMAT.md`, "Crash cases").
//!
//! Order: reserve the base's room (a `.tmp` file of the live sessions'
//! size, so that a disk without it fails the compaction before anything
//! changes), seal the current segment (appends continue in a new one), write
//! the live sessions into `<sealed>.tmp` and sync it, sync the log (the
//! records appended since the seal), rename the `.tmp` over the sealed
//! segment and sync the directory, then delete the segments before it. A
//! crash before the rename leaves a `.tmp` that recovery deletes; one after
//! it leaves a base that supersedes what it replaced.
//!
//! **Why the log is synced before the rename.** The listing is not a
//! snapshot of one moment: it reads the shard in batches while writes go
//! on, so the base can hold a session rotated during the listing under both
//! ids (the old one listed before, the new one after), an update listed
//! while an earlier one to another session was not, and so on. The records
//! after the seal replay over the base and bring it to a state that was.
//! Without them — a machine crash that lost them, while the base it
//! replaced the log with was durable — the base alone is a state that
//! never was. So they are durable before the base takes the log's place,
//! in every durability mode (with `Never`, whose log syncs nothing it
//! rolled out of, the segments after the seal are synced by name).

use super::appender::{Sealed, ShardLog};
use super::base::Based;
use super::base::{reserve_base_tmp, write_base_into};
use super::directory::{io, rename_durably};
use super::format::{SEAL_RECORD_LEN, SEGMENT_HEADER_LEN};
use super::segment::{segment_name, sync_dir, sync_segments_between, tmp_name};
use crate::config::Durability;
use crate::error::Result;

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
/// hands out live sessions with their topics in batches (taking the shard
/// lock per batch).
///
/// `seal_listing` runs the seal it is given (`ShardLog::seal`) holding the
/// shard's lock, and starts there what the listing keeps of the writes
/// after it (`Shard::seal_for_compaction`). A write appends its record and
/// then changes memory, under the shard's lock: so no write is halfway when
/// the seal happens (one that appended into the sealed segment without
/// having changed memory yet would be missed by the snapshots, and the
/// base replaces its only record: a deleted session would come back at the
/// next open, a created one would be lost), and every write after it
/// appends after the seal, into segments that replay over the base.
///
/// `sync_log` makes everything appended to the log so far durable (its
/// group commit's flush); it runs once the listing is over and before the
/// rename (see the module docs).
pub(crate) fn compact(
    log: &ShardLog,
    now_ms: u64,
    stop_after: CompactionStep,
    seal_listing: impl FnOnce(&mut dyn FnMut() -> Result<Sealed>) -> Result<Sealed>,
    mut snapshot: impl FnMut(&mut Vec<Based>) -> bool,
    sync_log: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let id = log.id();
    // The base's room first, before anything changes: a compaction that
    // sealed the log and then found no room for its base would leave the
    // segment it rolled into behind, full size, on every retry, until the
    // disk filled with them. Reserved under the name of the segment being
    // written, renamed if a roll moved the seal on meanwhile. The live
    // sessions' records, what a base mostly holds (it may still outgrow the
    // reservation: sessions created during the listing, topics).
    let reserved = id.dir.join(tmp_name(log.current_sequence()));
    // One under that name is a leftover of a try that could not remove it
    // (compactions of a shard run one at a time, and the directory's lock
    // keeps other processes out): in the way, it failed every try until a
    // write rolled the log on.
    match std::fs::remove_file(&reserved) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("removing the leftover {}", reserved.display()))(e));
        }
        _ => {}
    }
    let (_, live_bytes) = log.sizes();
    let room = live_bytes + (SEGMENT_HEADER_LEN + SEAL_RECORD_LEN) as u64;
    let file = reserve_base_tmp(&reserved, room)?;
    // A failed compaction leaves no `.tmp` behind (`FORMAT.md`), whether
    // it returns an error or unwinds (a panic in the listing): the
    // compactor retries, and each try would leave another full base.
    let mut unfinished = RemoveOnDrop(Some(reserved.clone()));
    // The next segment made first, outside every lock: the seal under the
    // shard's lock then only writes the `SEAL` (see `ShardLog::seal`).
    log.prepare_next_now(now_ms)?;
    let Sealed {
        sequence: sealed,
        next,
        bytes_before,
    } = seal_listing(&mut || log.seal(now_ms))?;
    if stop_after == CompactionStep::Sealed {
        return Ok(());
    }
    let tmp = id.dir.join(tmp_name(sealed));
    if tmp != reserved {
        std::fs::rename(&reserved, &tmp).map_err(io(format!("renaming {}", reserved.display())))?;
        unfinished.0 = Some(tmp.clone());
    }
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
    let base_len = write_base_into(file, &tmp, id, sealed, next, now_ms, sessions)?;
    if stop_after == CompactionStep::TmpWritten {
        // A test's crash at this step: the `.tmp` stays, as a crash's would.
        unfinished.0 = None;
        return Ok(());
    }
    sync_log()?;
    if log.durability() == Durability::Never {
        // The segments the writer rolled out of since the seal are no
        // longer the log's to sync (it keeps no account of them without
        // syncs; `sync_log` synced the current one): synced by name, so
        // that the base is never durable without the records that replay
        // over it.
        sync_segments_between(&id.dir, sealed, log.current_sequence()).map_err(io(format!(
            "syncing {}'s segments after the seal",
            id.dir.display()
        )))?;
    }
    rename_durably(&id.dir, &tmp, &id.dir.join(segment_name(sealed)))?;
    unfinished.0 = None;
    if stop_after == CompactionStep::Renamed {
        return Ok(());
    }
    for sequence in log.first_sequence()..sealed {
        let old = id.dir.join(segment_name(sequence));
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", old.display()))(e)),
        }
    }
    sync_dir(&id.dir).map_err(io(format!("syncing {}", id.dir.display())))?;
    log.compacted(sealed, bytes_before, base_len);
    Ok(())
}

/// Removes a file when dropped, unless disarmed (`None`).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// True when dead bytes dominate the log enough to compact.
pub(crate) fn wants_compaction(log: &ShardLog, threshold: f64, segment_len: usize) -> bool {
    let (log_bytes, live_bytes) = log.sizes();
    #[allow(clippy::cast_precision_loss)]
    let dead_fraction = log_bytes.saturating_sub(live_bytes) as f64 / log_bytes.max(1) as f64;
    log_bytes > 2 * segment_len as u64 && dead_fraction > threshold
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::persist::segment::SYNCED_SEGMENTS;
    use crate::{CompactionStep, Config, Durability, Engine, Timeout};

    /// With `Durability::Never`, the records written after a compaction's
    /// seal are durable before its base replaces the log, as in the other
    /// modes: here sessions rotated in the middle of the listing roll the
    /// log over several segments, and every one of them after the seal is
    /// synced by the time the base is renamed (a machine crash that kept
    /// the base and lost them opened with both ids of each rotation live).
    #[test]
    fn with_never_every_segment_after_the_seal_is_synced_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default()
            .data_dir(dir.path())
            .shards(1)
            .durability(Durability::Never)
            .metadata_bytes_max(1024)
            .segment_size_bytes(64 * 1024)
            .compaction_threshold(0.99)
            .sweep_interval(Duration::from_secs(60));
        let engine = Engine::open(config).unwrap();
        let ids: Vec<_> = (0..3 * crate::limits::LIST_LOCK_BATCH)
            .map(|i| {
                engine
                    .create(format!("s{i}").as_bytes(), Timeout::from_secs(3600))
                    .unwrap()
            })
            .collect();
        let shard_dir = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .unwrap()
            .join("S0000");
        let segments = || -> Vec<_> {
            let mut names: Vec<_> = std::fs::read_dir(&shard_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect();
            names.sort();
            names
        };
        let before = segments();
        engine
            .debug_compact_listing(0, CompactionStep::Renamed, |listed| {
                if listed == 1 {
                    for id in &ids {
                        engine.rotate(id).unwrap();
                    }
                }
            })
            .unwrap();
        // The sealed segment is the last of those before that holds
        // records (the base took its name); those after it that hold any (a
        // segment prepared ahead of the writer holds its header alone).
        let holds_records = |path: &std::path::PathBuf| {
            std::fs::read(path).unwrap()[crate::persist::format::SEGMENT_HEADER_LEN..]
                .iter()
                .any(|&b| b != 0)
        };
        let sealed = before.iter().rev().find(|p| holds_records(p)).unwrap();
        let after_seal: Vec<_> = segments()
            .into_iter()
            .filter(|p| p > sealed && holds_records(p))
            .collect();
        assert!(
            after_seal.len() >= 3,
            "the rotations rolled the log only into {after_seal:?}"
        );
        let synced = SYNCED_SEGMENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let unsynced: Vec<_> = after_seal.iter().filter(|p| !synced.contains(p)).collect();
        assert!(unsynced.is_empty(), "not synced before the rename: {unsynced:?}");
    }
}
