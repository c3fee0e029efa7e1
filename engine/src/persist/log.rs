//! A shard's log: appends into the current segment, rolls to the next one,
//! and makes appended bytes durable with group commit.
//!
//! Write path, in order (the caller holds the shard's lock throughout 1-3):
//! 1. the caller encodes the record, checksummed from the log's salt, before
//!    locking anything;
//! 2. `append` takes the writer mutex, rolls to a fresh segment if the
//!    record and a `SEAL` would not fit (a failure here is returned and
//!    nothing changes; the old segment ends with the `SEAL`), copies the
//!    record into the mapping and returns its end position;
//! 3. the caller applies the change to memory and releases the shard lock;
//! 4. in `Always` mode the caller waits in `wait_durable` until a flush has
//!    covered its position. The first waiter without a flush in progress
//!    becomes the leader: it collects every unsynced range (its own and
//!    everyone else's) and syncs them with no lock held. Then it wakes
//!    exactly the waiters its flush covered, and hands leadership to the
//!    oldest waiter it did not cover, which starts the next flush at once.
//!    Nobody is woken to find its record still unsynced, and waiters never
//!    queue on a mutex to be released one by one (with 64 writers on two
//!    cores those wake-ups, not the device, were the bottleneck).
//!    An async writer (`poll_durable`, behind the `SessionStore` trait) waits
//!    in the same queue with a task waker instead of a parked thread; it
//!    cannot lead a flush (that would block its executor), so when no flush
//!    is under way it asks the engine's flusher thread for one, and a leader
//!    that leaves async writers uncovered with nobody to hand over to asks
//!    the same.
//!
//! Lock order: shard lock, then writer mutex; the sync mutex is never held
//! together with the writer mutex by a thread that waits.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};

use parking_lot::{Condvar, Mutex};

use crossbeam_queue::ArrayQueue;

use super::format::{
    seal_record, touch_record, SegmentHeader, FLAG_BASE, SEAL_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use super::segment::{segment_name, sync_dir, Segment, PREFAULT_AHEAD};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::TOUCH_QUEUE_MAX;

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
    pub(crate) salt: u64,
}

pub(crate) struct ShardLog {
    id: LogId,
    segment_len: usize,
    durability: Durability,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    /// Test hook: every sync fails as a real one would (`Engine::debug_fail_syncs`).
    fail_syncs: AtomicBool,
    /// The engine's flusher thread, which runs the flushes async writers
    /// wait for (set in `Always` mode).
    flusher: OnceLock<Arc<FlushRequests>>,
    /// Readers' `TOUCH` records, appended by the next writer or the
    /// background thread.
    touches: ArrayQueue<(SessionId, u64)>,
    touches_dropped: AtomicU64,
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

struct SyncState {
    durable: u64,
    /// A leader is flushing (or has been handed the next flush).
    flushing: bool,
    /// Writers waiting for a flush to cover their position, oldest first.
    waiters: Vec<Arc<Waiter>>,
    /// Successful flushes since open.
    syncs: u64,
    /// Async writers (futures) waiting for a flush to cover their position.
    async_waiters: Vec<Arc<AsyncWaiter>>,
    /// Why the last flush failed (async writers read it, see `poll_durable`).
    failure: Option<String>,
}

/// One writer parked in `wait_durable`.
struct Waiter {
    position: u64,
    thread: Thread,
    /// `WAITING` until the leader sets one of the others (then unparks).
    state: AtomicU8,
}

const WAITING: u8 = 0;
/// A flush covered the position.
const DONE: u8 = 1;
/// The waiter now leads the next flush (`flushing` stays set for it).
const LEAD: u8 = 2;
/// A flush failed: look at the log again (and meet the error).
const RETRY: u8 = 3;

/// One async writer waiting in `poll_durable`: woken through its task's
/// waker instead of a parked thread.
pub(crate) struct AsyncWaiter {
    position: u64,
    waker: Mutex<Waker>,
    /// `WAITING` until a leader sets `DONE` or `RETRY` (then wakes it).
    state: AtomicU8,
}

impl AsyncWaiter {
    fn wake(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.waker.lock().wake_by_ref();
    }
}

/// Wakes the engine's flusher thread (`Always` mode). Async writers cannot
/// run a flush themselves (it would block their executor's thread), so when
/// one waits and no flush is under way, it asks this thread for one.
#[derive(Default)]
pub(crate) struct FlushRequests {
    state: Mutex<FlushState>,
    wake: Condvar,
}

#[derive(Default)]
struct FlushState {
    requested: bool,
    stopped: bool,
}

impl FlushRequests {
    pub(crate) fn request(&self) {
        let mut state = self.state.lock();
        if !state.requested {
            state.requested = true;
            self.wake.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }

    /// Blocks until a request (true) or a stop (false).
    pub(crate) fn next(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                return false;
            }
            if std::mem::take(&mut state.requested) {
                return true;
            }
            self.wake.wait(&mut state);
        }
    }
}

impl Waiter {
    fn wake(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.thread.unpark();
    }

    /// Parks until a leader decides; tolerates spurious unparks.
    fn wait(&self) -> u8 {
        loop {
            match self.state.load(Ordering::Acquire) {
                WAITING => thread::park(),
                decided => return decided,
            }
        }
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

impl ShardLog {
    /// Which log this is.
    pub(crate) fn id(&self) -> &LogId {
        &self.id
    }

    /// The salt this log's records are checksummed from.
    #[inline]
    pub(crate) fn salt(&self) -> u64 {
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
                first_sequence: r.first_sequence,
                position: 0,
                log_bytes: r.log_bytes,
                live_bytes: r.live_bytes,
                failed: None,
            }),
            sync: Mutex::new(SyncState {
                durable: 0,
                flushing: false,
                waiters: Vec::new(),
                syncs: 0,
                async_waiters: Vec::new(),
                failure: None,
            }),
            fail_syncs: AtomicBool::new(false),
            flusher: OnceLock::new(),
            touches: ArrayQueue::new(TOUCH_QUEUE_MAX),
            touches_dropped: AtomicU64::new(0),
        }
    }

    /// Appends one encoded record; returns its end position for
    /// `wait_durable`. `live_delta` adjusts the live-byte count.
    pub(crate) fn append(&self, record: &[u8], live_delta: i64, now_ms: u64) -> Result<u64> {
        let mut w = self.writer.lock();
        self.drain_touches_locked(&mut w, now_ms);
        self.append_locked(&mut w, record, live_delta, now_ms)
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
        w.current.write(at, record);
        w.pos += record.len();
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

    /// Creates segment `sequence`; unless durability is `Never`, its name is
    /// made durable too (directory fsync) before anything is written to it.
    fn new_segment(&self, sequence: u64, now_ms: u64) -> Result<Segment> {
        let segment = create_segment(&self.id, sequence, 0, self.segment_len, now_ms)?;
        if self.durability != Durability::Never {
            sync_dir(&self.id.dir)
                .map_err(|e| io_error(format!("syncing directory {}", self.id.dir.display()), e))?;
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
        let seal = seal_record(self.id.salt, w.records);
        let at = w.pos;
        w.current.write(at, &seal);
        w.pos += seal.len();
        w.log_bytes += seal.len() as u64;
        let old = std::mem::replace(&mut w.current, next);
        if self.durability != Durability::Never {
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
        let sequence = {
            let mut w = self.writer.lock();
            if w.next.is_some() || w.failed.is_some() || w.pos < w.current.len() / 2 {
                return Ok(());
            }
            w.next_sequence += 1;
            w.next_sequence - 1
        };
        let segment = self.new_segment(sequence, now_ms)?;
        let mut w = self.writer.lock();
        if w.next.is_none() && sequence > w.current.sequence() {
            w.next = Some(Arc::new(segment));
        } else {
            // The writer rolled past it meanwhile; an empty segment is
            // harmless even if this removal is lost in a crash.
            let path = segment.path().to_path_buf();
            drop(segment);
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// The background thread's upkeep of this log, every tick: keep the
    /// pages ahead of the writer faulted in, prepare the next segment once
    /// the current one is half full, append the readers' queued touches,
    /// and flush if `flush` (an `Interval` is due). Failures resurface on
    /// the write path, which returns them.
    pub(crate) fn maintain(&self, now_ms: u64, flush: bool) {
        self.prefault_ahead();
        let _ = self.prepare_next(now_ms);
        self.drain_touches(now_ms);
        if flush {
            let _ = self.flush();
        }
    }

    /// Keeps the pages just ahead of the writer faulted in (see
    /// `PREFAULT_AHEAD`); the background thread's entry point.
    pub(crate) fn prefault_ahead(&self) {
        let (current, pos) = {
            let w = self.writer.lock();
            (Arc::clone(&w.current), w.pos)
        };
        current.prefault_to(pos.saturating_add(PREFAULT_AHEAD));
    }

    /// Blocks until everything up to `position` is durable (group commit).
    pub(crate) fn wait_durable(&self, position: u64) -> Result<()> {
        loop {
            let mut sync = self.sync.lock();
            if sync.durable >= position {
                return Ok(());
            }
            if sync.flushing {
                let waiter = Arc::new(Waiter {
                    position,
                    thread: thread::current(),
                    state: AtomicU8::new(WAITING),
                });
                sync.waiters.push(Arc::clone(&waiter));
                drop(sync);
                match waiter.wait() {
                    DONE => return Ok(()),
                    LEAD => return self.lead(),
                    _ => continue,
                }
            }
            sync.flushing = true;
            drop(sync);
            return self.lead();
        }
    }

    /// Syncs everything appended so far unless a flush is already running
    /// (the `Interval` thread's entry point).
    pub(crate) fn flush(&self) -> Result<()> {
        {
            let mut sync = self.sync.lock();
            if sync.flushing {
                return Ok(());
            }
            sync.flushing = true;
        }
        self.lead()
    }

    /// Runs one flush as the leader (`flushing` is set for the caller), then
    /// wakes the waiters it covered and hands the next flush to the oldest
    /// one it did not. Everything the caller appended before calling is
    /// covered on success.
    fn lead(&self) -> Result<()> {
        let flushed = self.flush_now();
        let mut sync = self.sync.lock();
        let waiters = std::mem::take(&mut sync.waiters);
        let async_waiters = std::mem::take(&mut sync.async_waiters);
        let mut wake = Vec::with_capacity(waiters.len());
        let mut wake_async = Vec::with_capacity(async_waiters.len());
        let mut next_leader = None;
        match &flushed {
            Ok(upto) => {
                sync.durable = sync.durable.max(*upto);
                sync.syncs += 1;
                let durable = sync.durable;
                for w in waiters {
                    if w.position <= durable {
                        wake.push((w, DONE));
                    } else if next_leader.is_none() {
                        next_leader = Some(w);
                    } else {
                        sync.waiters.push(w);
                    }
                }
                for w in async_waiters {
                    if w.position <= durable {
                        wake_async.push((w, DONE));
                    } else {
                        sync.async_waiters.push(w);
                    }
                }
            }
            // Everyone looks again and meets the refusal themselves.
            Err(e) => {
                sync.failure = Some(e.to_string());
                wake.extend(waiters.into_iter().map(|w| (w, RETRY)));
                wake_async.extend(async_waiters.into_iter().map(|w| (w, RETRY)));
            }
        }
        // `flushing` stays set when leadership passes on; async writers left
        // uncovered with no thread to lead for them get the flusher thread.
        sync.flushing = next_leader.is_some();
        let ask_flusher = next_leader.is_none() && !sync.async_waiters.is_empty();
        drop(sync);
        if let Some(w) = next_leader {
            w.wake(LEAD);
        }
        for (w, state) in wake {
            w.wake(state);
        }
        for (w, state) in wake_async {
            w.wake(state);
        }
        if ask_flusher {
            self.request_flush();
        }
        flushed.map(|_| ())
    }

    /// Connects this log to the engine's flusher thread (`Always` mode).
    pub(crate) fn set_flusher(&self, flusher: Arc<FlushRequests>) {
        let _ = self.flusher.set(flusher);
    }

    fn request_flush(&self) {
        if let Some(flusher) = self.flusher.get() {
            flusher.request();
        }
    }

    /// True if async writers wait for a flush (the flusher thread's test).
    pub(crate) fn has_async_waiters(&self) -> bool {
        !self.sync.lock().async_waiters.is_empty()
    }

    /// The async counterpart of `wait_durable`: ready once everything up to
    /// `position` is durable; until then `waiter` holds this writer's place
    /// in the queue and the task's waker. Never blocks on I/O: a flush is run
    /// by a leader already under way, or by the flusher thread.
    pub(crate) fn poll_durable(
        &self,
        position: u64,
        waiter: &mut Option<Arc<AsyncWaiter>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        if let Some(w) = waiter {
            match w.state.load(Ordering::Acquire) {
                DONE => return Poll::Ready(Ok(())),
                WAITING => {
                    let mut waker = w.waker.lock();
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                    drop(waker);
                    // A leader that decided before the new waker was stored
                    // woke the old one: look again.
                    match w.state.load(Ordering::Acquire) {
                        WAITING => return Poll::Pending,
                        DONE => return Poll::Ready(Ok(())),
                        _ => {}
                    }
                }
                _ => {}
            }
            // `RETRY`: a flush failed; register afresh to meet the failure.
            *waiter = None;
        }
        let mut sync = self.sync.lock();
        if sync.durable >= position {
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = &sync.failure {
            return Poll::Ready(Err(Error::WritesRefused {
                reason: reason.clone(),
            }));
        }
        let w = Arc::new(AsyncWaiter {
            position,
            waker: Mutex::new(cx.waker().clone()),
            state: AtomicU8::new(WAITING),
        });
        sync.async_waiters.push(Arc::clone(&w));
        let ask_flusher = !sync.flushing;
        drop(sync);
        *waiter = Some(w);
        if ask_flusher {
            self.request_flush();
        }
        Poll::Pending
    }

    fn flush_now(&self) -> Result<u64> {
        let (ranges, upto) = {
            let mut w = self.writer.lock();
            if let Some(reason) = &w.failed {
                return Err(Error::WritesRefused {
                    reason: reason.clone(),
                });
            }
            let mut ranges = std::mem::take(&mut w.unsynced);
            ranges.push((Arc::clone(&w.current), w.sync_from, w.pos));
            w.sync_from = w.pos;
            (ranges, w.position)
        };
        for (segment, from, to) in &ranges {
            let synced = if self.fail_syncs.load(Ordering::Relaxed) {
                // A failing disk takes its time to say so; writers queue
                // behind the flush meanwhile, as they would.
                thread::sleep(INJECTED_FAILURE_DELAY);
                Err(io::Error::other("injected sync failure (debug_fail_syncs)"))
            } else {
                segment.sync(*from, *to)
            };
            if let Err(e) = synced {
                // After a failed writeback the page cache's state is unknown:
                // refuse further writes rather than pretend (fsyncgate).
                let reason = format!("sync of {} failed: {e}", segment.path().display());
                self.writer.lock().failed = Some(reason.clone());
                return Err(io_error(format!("syncing {}", segment.path().display()), e));
            }
        }
        Ok(upto)
    }

    /// Makes every later sync fail (tests of the failure path).
    pub(crate) fn fail_syncs(&self) {
        self.fail_syncs.store(true, Ordering::Relaxed);
    }

    /// Successful flushes since open.
    pub(crate) fn syncs(&self) -> u64 {
        self.sync.lock().syncs
    }

    /// `(log_bytes, live_bytes)` for the compaction trigger.
    pub(crate) fn sizes(&self) -> (u64, u64) {
        let w = self.writer.lock();
        (w.log_bytes, w.live_bytes)
    }

    /// Starts a compaction: seals the current segment (appends continue in a
    /// new one) and returns the sealed sequence and the log bytes up to it.
    pub(crate) fn seal(&self, now_ms: u64) -> Result<(u64, u64)> {
        let mut w = self.writer.lock();
        if let Some(reason) = &w.failed {
            return Err(Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        let sealed = w.current.sequence();
        let before = w.log_bytes;
        self.roll(&mut w, now_ms)?;
        Ok((sealed, before))
    }

    /// Finishes a compaction whose base replaced segments up to `sealed`.
    pub(crate) fn compacted(&self, sealed: u64, bytes_before: u64, base_len: u64) {
        let mut w = self.writer.lock();
        w.first_sequence = sealed;
        w.log_bytes = w.log_bytes - bytes_before + base_len;
    }

    pub(crate) fn first_sequence(&self) -> u64 {
        self.writer.lock().first_sequence
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }
}

/// Creates segment `sequence` of a log, header written.
pub(crate) fn create_segment(
    id: &LogId,
    sequence: u64,
    flags: u32,
    len: usize,
    now_ms: u64,
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
    Segment::create(&path, &header)
        .map_err(|e| io_error(format!("creating segment {} ({len} bytes)", path.display()), e))
}
