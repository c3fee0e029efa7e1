//! A shard's log, its writing side: appends into the current segment, rolls
//! to the next one, and hands its unsynced ranges to the group commit
//! (`commit.rs`), which makes them durable.
//!
//! Write path, in order (the caller holds the shard's writer lock
//! throughout 1-3):
//! 1. the caller encodes the record, checksummed from the log's salt, before
//!    locking anything;
//! 2. `append` takes this log's writer mutex, appends the readers' queued
//!    touches, rolls to a fresh segment if the record and a `SEAL` would not
//!    fit (a failure here is returned and nothing changes; the old segment
//!    ends with the `SEAL`), copies the record into the mapping and returns
//!    its end position;
//! 3. the caller applies the change to memory and releases the shard lock;
//! 4. in `Always` mode the caller waits until the group commit has synced
//!    its position.
//!
//! Lock order: the shard's writer lock, then this log's writer mutex.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crossbeam_queue::ArrayQueue;

use super::directory::{mark_sync_failed, unmarked_sync_failure};
use super::format::{
    seal_record, touch_record, LogSalt, SegmentHeader, FLAG_BASE, SEAL_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use super::segment::{segment_name, sync_dir, Segment};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::PREFAULT_AHEAD_BYTES;
use crate::limits::TOUCH_QUEUE_MAX;

/// Bytes past a record's end whose lines an append starts loading: about
/// one typical record (a 200-byte session's), so that the next append
/// writes into cached lines.
const NEXT_RECORDS_PREFETCHED: usize = 256;

/// `ShardLog::fail_syncs`' values: syncs work, fail, or panic (test hooks).
const SYNCS_WORK: u8 = 0;
const SYNCS_FAIL: u8 = 1;
const SYNCS_PANIC: u8 = 2;

/// How long an injected sync failure takes (`Engine::debug_fail_syncs`).
const INJECTED_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Which log this is: where its segments live, what their headers say, and
/// the salt its records are checksummed from.
#[derive(Clone, Debug)]
pub(crate) struct LogId {
    pub(crate) dir: PathBuf,
    pub(crate) layout: u64,
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) salt: LogSalt,
}

pub(crate) struct ShardLog {
    id: LogId,
    segment_len: usize,
    durability: Durability,
    writer: Mutex<Writer>,
    /// Test hook: every sync fails as a real one would
    /// (`Engine::debug_fail_syncs`), or panics (`Engine::debug_panic_syncs`).
    fail_syncs: AtomicU8,
    /// Readers' `TOUCH` records, appended by the next writer or the
    /// background thread.
    touches: ArrayQueue<(SessionId, u64)>,
    touches_dropped: AtomicU64,
    /// Test hook: runs once after the next append, outside this log's
    /// mutex, while the writer still holds its shard's lock
    /// (`Engine::debug_after_next_append`). `hook_armed` keeps the check
    /// to one relaxed load.
    hook_armed: AtomicBool,
    after_append: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

struct Writer {
    current: Arc<Segment>,
    /// Where the next record goes in `current`.
    pos: usize,
    /// Records in `current` (its `SEAL` counts them).
    records: u64,
    /// Where `current`'s unsynced bytes start.
    sync_from: usize,
    /// A preallocated segment to roll to.
    next: Option<Arc<Segment>>,
    next_sequence: u64,
    /// Sealed segments with unsynced bytes: (segment, from, to).
    unsynced: Vec<(Arc<Segment>, usize, usize)>,
    /// A sealed segment of a `Never` log, left for the background thread
    /// to unmap outside the writer mutex.
    retired: Option<Arc<Segment>>,
    /// Oldest segment sequence still on disk.
    first_sequence: u64,
    /// Bytes appended since open: the durability position.
    position: u64,
    /// Bytes in all of the shard's segments (headers and records).
    log_bytes: u64,
    /// Bytes the live sessions' `PUT` records take.
    live_bytes: u64,
    /// Why writes are refused, after a failed sync.
    failed: Option<String>,
}

/// Ranges of a log appended since its last sync, and the position they end
/// at: what a group-commit round syncs.
pub(crate) struct Unsynced {
    ranges: Vec<(Arc<Segment>, usize, usize)>,
    upto: u64,
}

impl Unsynced {
    /// The log position these ranges end at: durable once they are synced.
    pub(crate) fn upto(&self) -> u64 {
        self.upto
    }

    /// Nothing was appended since the last sync.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A log reopened by recovery.
pub(crate) struct Reopened {
    pub(crate) current: Segment,
    pub(crate) pos: usize,
    /// Records already in `current`.
    pub(crate) records: u64,
    pub(crate) first_sequence: u64,
    pub(crate) log_bytes: u64,
    pub(crate) live_bytes: u64,
}

fn io_error(context: String, source: io::Error) -> Error {
    Error::Io { context, source }
}

/// Where a compaction's seal left the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sealed {
    /// The segment sealed: the base takes its sequence.
    pub(crate) sequence: u64,
    /// The segment appends went on in, which the base's seal names.
    pub(crate) next: u64,
    /// The log's bytes up to the seal.
    pub(crate) bytes_before: u64,
}

impl ShardLog {
    /// Which log this is.
    pub(crate) fn id(&self) -> &LogId {
        &self.id
    }

    /// The salt this log's records are checksummed from.
    #[inline]
    pub(crate) fn salt(&self) -> LogSalt {
        self.id.salt
    }

    /// A fresh log: creates segment 1 in its directory.
    pub(crate) fn create(id: LogId, segment_len: usize, durability: Durability, now_ms: u64) -> Result<Self> {
        let segment = create_segment(&id, 1, 0, segment_len, now_ms)?;
        sync_dir(&id.dir).map_err(|e| io_error(format!("syncing directory {}", id.dir.display()), e))?;
        let reopened = Reopened {
            current: segment,
            pos: SEGMENT_HEADER_LEN,
            records: 0,
            first_sequence: 1,
            log_bytes: SEGMENT_HEADER_LEN as u64,
            live_bytes: 0,
        };
        Ok(Self::from_reopened(id, segment_len, durability, reopened))
    }

    pub(crate) fn from_reopened(id: LogId, segment_len: usize, durability: Durability, r: Reopened) -> Self {
        let next_sequence = r.current.sequence() + 1;
        Self {
            id,
            segment_len,
            durability,
            writer: Mutex::new(Writer {
                current: Arc::new(r.current),
                pos: r.pos,
                records: r.records,
                sync_from: 0,
                next: None,
                next_sequence,
                unsynced: Vec::new(),
                retired: None,
                first_sequence: r.first_sequence,
                position: 0,
                log_bytes: r.log_bytes,
                live_bytes: r.live_bytes,
                failed: None,
            }),
            fail_syncs: AtomicU8::new(SYNCS_WORK),
            touches: ArrayQueue::new(TOUCH_QUEUE_MAX),
            touches_dropped: AtomicU64::new(0),
            hook_armed: AtomicBool::new(false),
            after_append: Mutex::new(None),
        }
    }

    /// Appends one encoded record; returns its end position for
    /// `wait_durable`. `live_delta` adjusts the live-byte count.
    pub(crate) fn append(&self, record: &[u8], live_delta: i64, now_ms: u64) -> Result<u64> {
        let appended = {
            let mut w = self.writer.lock();
            self.drain_touches_locked(&mut w, now_ms);
            self.append_locked(&mut w, record, live_delta, now_ms)
        };
        if self.hook_armed.load(Ordering::Relaxed) {
            self.run_append_hook();
        }
        appended
    }

    /// The end of what has been appended so far: a change found already
    /// made waits for this (`Core::change_topic`), since the record that
    /// made it may not be durable yet.
    pub(crate) fn appended(&self) -> u64 {
        self.writer.lock().position
    }

    #[cold]
    #[inline(never)]
    fn run_append_hook(&self) {
        self.hook_armed.store(false, Ordering::Relaxed);
        let hook = self.after_append.lock().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Runs `hook` once after the next append (tests of what may happen
    /// between a record's append and its change in memory).
    pub(crate) fn after_next_append(&self, hook: Box<dyn FnOnce() + Send>) {
        *self.after_append.lock() = Some(hook);
        self.hook_armed.store(true, Ordering::Relaxed);
    }

    fn append_locked(&self, w: &mut Writer, record: &[u8], live_delta: i64, now_ms: u64) -> Result<u64> {
        if let Some(reason) = &w.failed {
            return Err(Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        if w.pos + record.len() + SEAL_RECORD_LEN > w.current.len() {
            self.roll(w, now_ms)?;
        }
        let at = w.pos;
        // SAFETY: `w` is the writer mutex's guard: the only writer.
        #[allow(unsafe_code)]
        unsafe {
            w.current.write(at, record);
        }
        w.pos += record.len();
        // The lines the next records will fill, loaded meanwhile.
        w.current.prefetch(w.pos, NEXT_RECORDS_PREFETCHED);
        w.records += 1;
        w.position += record.len() as u64;
        w.log_bytes += record.len() as u64;
        w.live_bytes = w.live_bytes.saturating_add_signed(live_delta);
        Ok(w.position)
    }

    /// Queues a `TOUCH` for the next append or the background thread (a
    /// reader's: lock-free, never waits). `TOUCH` records only raise a
    /// session's last access and apply to an existing session only, so
    /// their place among the other records does not matter. A full queue
    /// drops it (best effort: the lag then lasts until the next period).
    pub(crate) fn queue_touch(&self, id: SessionId, last_access_ms: u64) {
        if self.touches.push((id, last_access_ms)).is_err() {
            self.touches_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends the queued touches (the background thread's).
    pub(crate) fn drain_touches(&self, now_ms: u64) {
        if !self.touches.is_empty() {
            let mut w = self.writer.lock();
            self.drain_touches_locked(&mut w, now_ms);
        }
    }

    fn drain_touches_locked(&self, w: &mut Writer, now_ms: u64) {
        while let Some((id, last)) = self.touches.pop() {
            let record = touch_record(self.id.salt, id, last);
            if self.append_locked(w, &record, 0, now_ms).is_err() {
                // Writes are refused or the disk is full: the write path
                // reports that; touches are best effort.
                break;
            }
        }
    }

    /// Touches dropped because the queue was full.
    pub(crate) fn touches_dropped(&self) -> u64 {
        self.touches_dropped.load(Ordering::Relaxed)
    }

    /// Adjusts the live-byte count (sessions removed without a record).
    pub(crate) fn account(&self, live_delta: i64) {
        let mut w = self.writer.lock();
        w.live_bytes = w.live_bytes.saturating_add_signed(live_delta);
    }

    /// Creates segment `sequence`: its header is made durable before its
    /// name, and its name (directory fsync) before anything is written to
    /// it. In every durability, `Never` included: a named segment of zeros
    /// right after a sealed one is damage to `Strict` (the writer had
    /// rolled into it), so a power loss must never leave one. Two syncs
    /// per segment, made by the background thread ahead of need.
    fn new_segment(&self, sequence: u64, now_ms: u64) -> Result<Segment> {
        let segment = create_segment_with(&self.id, sequence, 0, self.segment_len, now_ms, |segment| {
            if self.fail_syncs.load(Ordering::Relaxed) == SYNCS_FAIL {
                return Err(io::Error::other("injected sync failure (debug_fail_syncs)"));
            }
            segment.sync(0, SEGMENT_HEADER_LEN)
        })?;
        if let Err(e) = sync_dir(&self.id.dir) {
            // Not kept: every retry would leave another preallocated
            // file behind until the disk filled.
            let path = segment.path().to_path_buf();
            drop(segment);
            let _ = std::fs::remove_file(path);
            return Err(io_error(
                format!("syncing directory {}", self.id.dir.display()),
                e,
            ));
        }
        Ok(segment)
    }

    fn roll(&self, w: &mut Writer, now_ms: u64) -> Result<()> {
        let next = if let Some(next) = w.next.take() {
            next
        } else {
            // Nothing prepared (a burst outran the background thread):
            // create one here, under the lock. Rare by design.
            let sequence = w.next_sequence;
            w.next_sequence += 1;
            Arc::new(self.new_segment(sequence, now_ms)?)
        };
        // The old segment ends with a SEAL: recovery can then tell its end
        // from a tail lost to damage. `append` kept room for it.
        let room = w.current.len() - w.pos;
        let seal = seal_record(self.id.salt, w.records, next.sequence(), room);
        let at = w.pos;
        // SAFETY: as in `append_locked`: `w` is the writer mutex's guard.
        #[allow(unsafe_code)]
        unsafe {
            w.current.write(at, &seal);
        }
        w.pos += seal.len();
        w.log_bytes += seal.len() as u64;
        let old = std::mem::replace(&mut w.current, next);
        if self.durability == Durability::Never {
            // Unmapped by the background thread, not here under the locks
            // writers wait on (`munmap` takes the process's address-space
            // lock and shoots down TLBs); without one, at the next roll.
            w.retired = Some(old);
        } else {
            let (from, to) = (w.sync_from, w.pos);
            w.unsynced.push((old, from, to));
        }
        w.pos = SEGMENT_HEADER_LEN;
        w.records = 0;
        w.sync_from = 0;
        w.log_bytes += SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Creates the next segment ahead of need, outside every lock, once the
    /// current one is half full.
    pub(crate) fn prepare_next(&self, now_ms: u64) -> Result<()> {
        self.prepare_next_from(now_ms, 2)
    }

    /// Prepares the next segment now if none is (outside the writer mutex):
    /// a `seal` that follows then only writes the `SEAL` (compaction seals
    /// holding the shard's lock, and usually before the background thread
    /// prepares a segment, at half full).
    pub(crate) fn prepare_next_now(&self, now_ms: u64) -> Result<()> {
        self.prepare_next_from(now_ms, usize::MAX)
    }

    /// Prepares the next segment once the current one is `1 / fraction`
    /// full (1: at once), outside the writer mutex.
    fn prepare_next_from(&self, now_ms: u64, fraction: usize) -> Result<()> {
        let sequence = {
            let mut w = self.writer.lock();
            if w.next.is_some() || w.failed.is_some() || w.pos < w.current.len() / fraction {
                return Ok(());
            }
            w.next_sequence += 1;
            w.next_sequence - 1
        };
        let segment = self.new_segment(sequence, now_ms)?;
        let unneeded = {
            let mut w = self.writer.lock();
            if w.next.is_none() && sequence > w.current.sequence() {
                w.next = Some(Arc::new(segment));
                None
            } else {
                Some(segment)
            }
        };
        if let Some(segment) = unneeded {
            // The writer rolled past it meanwhile; an empty segment is
            // harmless even if this removal is lost in a crash. Unmapped and
            // removed with no lock held.
            let path = segment.path().to_path_buf();
            drop(segment);
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// The background thread's upkeep of this log, every tick: keep the
    /// pages ahead of the writer faulted in, prepare the next segment once
    /// the current one is half full, and append the readers' queued
    /// touches. Failures resurface on the write path, which returns them.
    pub(crate) fn maintain(&self, now_ms: u64) {
        let retired = self.writer.lock().retired.take();
        drop(retired);
        self.prefault_ahead();
        let _ = self.prepare_next(now_ms);
        self.drain_touches(now_ms);
    }

    /// Keeps the pages just ahead of the writer faulted in (see
    /// `PREFAULT_AHEAD_BYTES`); the background thread's entry point.
    pub(crate) fn prefault_ahead(&self) {
        let (current, pos) = {
            let w = self.writer.lock();
            (Arc::clone(&w.current), w.pos)
        };
        current.prefault_to(pos.saturating_add(PREFAULT_AHEAD_BYTES));
        // And the pages behind it, which it will not write again, leave the
        // mapping before the kernel writes them back (see `release_to`).
        current.release_to(pos);
    }

    /// Starts writing back what was appended since the last sync, without
    /// taking it (a hint before several logs are synced in a row), with the
    /// writer mutex released: starting writeback walks the pages.
    pub(crate) fn hint_writeback(&self) {
        let (mut ranges, pos) = {
            let w = self.writer.lock();
            let mut ranges = w.unsynced.clone();
            ranges.push((Arc::clone(&w.current), w.sync_from, w.pos));
            (ranges, w.pos)
        };
        let current = ranges.pop().expect("pushed above");
        for (segment, from, to) in &ranges {
            // Sealed: nothing is written to it again.
            segment.release_to(segment.len());
            segment.start_writeback(*from, *to);
        }
        current.0.release_to(pos);
        current.0.start_writeback(current.1, current.2);
    }

    /// Takes the ranges appended since the last sync round (the group
    /// commit's), or the reason writes are refused.
    pub(crate) fn take_unsynced(&self) -> Result<Unsynced> {
        let mut w = self.writer.lock();
        if let Some(reason) = &w.failed {
            return Err(Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        let mut ranges = std::mem::take(&mut w.unsynced);
        if w.pos > w.sync_from {
            ranges.push((Arc::clone(&w.current), w.sync_from, w.pos));
        }
        w.sync_from = w.pos;
        Ok(Unsynced {
            ranges,
            upto: w.position,
        })
    }

    /// Makes `unsynced` durable; its position, or the error (after which
    /// this log refuses every write: after a failed writeback the page
    /// cache's state is unknown, so it does not pretend: fsyncgate).
    pub(crate) fn sync(&self, unsynced: &Unsynced) -> Result<u64> {
        for (segment, from, to) in &unsynced.ranges {
            // The writer is past `to`: the whole pages below it leave the
            // mapping first, so that writing them back write-protects none.
            segment.release_to(*to);
            let synced = self
                .injected_sync_failure()
                .and_then(|()| segment.sync(*from, *to));
            if let Err(e) = synced {
                return Err(self.sync_failed(segment.path(), e));
            }
        }
        Ok(unsynced.upto)
    }

    /// Readies `unsynced` for a sync of the whole file system
    /// (`SyncScope::FileSystem`) in place of its own: its pages leave the
    /// mapping as in [`ShardLog::sync`], and the test hooks run. An error
    /// (an injected failure) refuses this log's writes, as a failed sync.
    pub(crate) fn prepare_file_system_sync(&self, unsynced: &Unsynced) -> Result<()> {
        let current = Arc::clone(&self.writer.lock().current);
        for (segment, _, to) in &unsynced.ranges {
            segment.release_to(*to);
        }
        self.injected_sync_failure()
            .map_err(|e| self.sync_failed(current.path(), e))
    }

    /// A sync of this log's file system failed (`syncfs`'s error, `e`):
    /// this log refuses writes; the error for its waiters.
    pub(crate) fn file_system_sync_failed(&self, e: &io::Error) -> Error {
        let current = Arc::clone(&self.writer.lock().current);
        self.sync_failed(current.path(), io::Error::new(e.kind(), format!("syncfs: {e}")))
    }

    /// A sync of `path` failed with `e`: this log refuses every write from
    /// now on (the first failure is noted for the next open); the error for
    /// the writers who waited on it.
    fn sync_failed(&self, path: &std::path::Path, e: io::Error) -> Error {
        let reason = format!("sync of {} failed: {e}", path.display());
        let first = self.writer.lock().failed.replace(reason).is_none();
        if first {
            self.note_sync_failed();
        }
        // Logged once per log, outside its mutex.
        #[cfg(not(feature = "tracing"))]
        let _ = first;
        #[cfg(feature = "tracing")]
        if first {
            tracing::warn!(
                segment = %path.display(),
                error = %e,
                "session-engine: a log sync failed; this shard refuses writes from now on (WritesRefused)"
            );
        }
        io_error(format!("syncing {}", path.display()), e)
    }

    /// What a sync does under the test hooks: fail as a failing disk would
    /// (`debug_fail_syncs`), panic (`debug_panic_syncs`), or go ahead.
    fn injected_sync_failure(&self) -> io::Result<()> {
        let fail = self.fail_syncs.load(Ordering::Relaxed);
        assert!(fail != SYNCS_PANIC, "injected sync panic (debug_panic_syncs)");
        if fail == SYNCS_FAIL {
            // A failing disk takes its time to say so; writers queue
            // behind the round meanwhile, as they would.
            std::thread::sleep(INJECTED_FAILURE_DELAY);
            return Err(io::Error::other("injected sync failure (debug_fail_syncs)"));
        }
        Ok(())
    }

    /// Makes every later sync fail (tests of the failure path).
    pub(crate) fn fail_syncs(&self) {
        self.fail_syncs.store(SYNCS_FAIL, Ordering::Relaxed);
    }

    /// Makes every later sync panic (tests of the panic path).
    pub(crate) fn panic_syncs(&self) {
        self.fail_syncs.store(SYNCS_PANIC, Ordering::Relaxed);
    }

    /// Refuses every later write: a sync panicked, so what reached the disk
    /// is unknown, as after a failed sync. The error for its waiters.
    pub(crate) fn refuse_after_panic(&self, message: &str) -> Error {
        let reason = format!("a sync of log {} panicked: {message}", self.id.dir.display());
        let mut w = self.writer.lock();
        let first = w.failed.is_none();
        if first {
            w.failed = Some(reason.clone());
        }
        drop(w);
        if first {
            self.note_sync_failed();
        }
        io_error(reason, io::Error::other("panicked"))
    }

    /// Leaves the note for the next open ([`mark_sync_failed`]); if it
    /// cannot be written, the refusal's reason says so.
    fn note_sync_failed(&self) {
        if let Err(e) = mark_sync_failed(&self.id.dir) {
            let missing = unmarked_sync_failure(&self.id.dir, &e);
            #[cfg(feature = "tracing")]
            tracing::error!(dir = %self.id.dir.display(), "session-engine: a log sync failed{missing}");
            if let Some(reason) = self.writer.lock().failed.as_mut() {
                reason.push_str(&missing);
            }
        }
    }

    /// `(log_bytes, live_bytes)` for the compaction trigger.
    pub(crate) fn sizes(&self) -> (u64, u64) {
        let w = self.writer.lock();
        (w.log_bytes, w.live_bytes)
    }

    /// Starts a compaction: seals the current segment (appends continue in a
    /// new one) and says where.
    pub(crate) fn seal(&self, now_ms: u64) -> Result<Sealed> {
        let mut w = self.writer.lock();
        if let Some(reason) = &w.failed {
            return Err(Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        let sequence = w.current.sequence();
        let bytes_before = w.log_bytes;
        self.roll(&mut w, now_ms)?;
        Ok(Sealed {
            sequence,
            next: w.current.sequence(),
            bytes_before,
        })
    }

    /// Finishes a compaction whose base replaced segments up to `sealed`.
    pub(crate) fn compacted(&self, sealed: u64, bytes_before: u64, base_len: u64) {
        let replaced: Vec<_> = {
            let mut w = self.writer.lock();
            w.first_sequence = sealed;
            w.log_bytes = w.log_bytes - bytes_before + base_len;
            // The durable base holds what the replaced segments held: their
            // files are gone, and writing back their pages would be wasted
            // (a waiter's position is covered by the next round's `upto`).
            let (replaced, kept) = std::mem::take(&mut w.unsynced)
                .into_iter()
                .partition(|(segment, _, _)| segment.sequence() <= sealed);
            w.unsynced = kept;
            replaced
        };
        // Unmapped with no lock held.
        drop(replaced);
    }

    /// The sequence of the segment being written.
    pub(crate) fn current_sequence(&self) -> u64 {
        self.writer.lock().current.sequence()
    }

    pub(crate) fn first_sequence(&self) -> u64 {
        self.writer.lock().first_sequence
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }
}

/// Creates segment `sequence` of a log, header written and synced before
/// the file is named (`Segment::create`). A running log's `new_segment`
/// also honours the test hooks.
pub(crate) fn create_segment(
    id: &LogId,
    sequence: u64,
    flags: u32,
    len: usize,
    now_ms: u64,
) -> Result<Segment> {
    create_segment_with(id, sequence, flags, len, now_ms, |segment| {
        segment.sync(0, SEGMENT_HEADER_LEN)
    })
}

fn create_segment_with(
    id: &LogId,
    sequence: u64,
    flags: u32,
    len: usize,
    now_ms: u64,
    sync_header: impl FnOnce(&Segment) -> io::Result<()>,
) -> Result<Segment> {
    debug_assert!(flags & !FLAG_BASE == 0);
    let header = SegmentHeader {
        shard: id.shard,
        shards: id.shards,
        flags,
        sequence,
        created_ms: now_ms,
        layout: id.layout,
        len: len as u64,
    };
    let path = id.dir.join(segment_name(sequence));
    Segment::create(&path, &header, sync_header)
        .map_err(|e| io_error(format!("creating segment {} ({len} bytes)", path.display()), e))
}
