//! One shard: a hash table holding the session entries inline, and a timer
//! wheel linking them by bucket index.
//!
//! Ground rules:
//! - The shard's `RwLock` (in `engine.rs`) protects all of `ShardState`.
//!   Reads (`get`, `peek`, `touch`, `contains`, `list`, the read half of
//!   `update`) take it shared: activity is recorded in an atomic
//!   `last_access_ms`, so readers never exclude each other. Everything that
//!   changes the table or the wheel takes it exclusive.
//! - Expiry never revives: a reader's liveness check and its slide of the
//!   deadline are one compare-and-swap on `last_access_ms` (`Header::access`),
//!   and a reader that finds the session expired marks it so (the word's top
//!   bit) before it answers. A reader that read its time just before the
//!   deadline and was descheduled can then no longer slide a session that
//!   another reader already reported gone: its swap fails, it looks again and
//!   sees the mark.
//! - It is held for one map operation only: callers compute the hash, build
//!   the session block, encode the log record and validate input before
//!   locking. The time an operation judges liveness by is read under the
//!   lock (one load with the default clock): read before it, a caller that
//!   waited across a deadline would revive an expired session.
//! - Lock order: at most one shard lock is held at a time, anywhere.
//! - Never under the lock: I/O, user callbacks (the listener; `update`'s
//!   closure, except in the fallback after repeated lost races that
//!   `Engine::update` documents), freeing metadata (removed sessions are
//!   returned and dropped by the caller after unlocking), or unbounded work
//!   (sweeps and listings work in bounded batches).
//! - Allocation under the lock only when the table is rebuilt (it grew, or
//!   tombstones took its room; amortised, rare): the new table and a small
//!   look-ahead queue.
//!
//! Why a table of pointers: each session is one block (`block.rs`: the
//! session's fields in a 56-byte header, then the metadata), and the table
//! holds 8-byte pointers to the blocks. A lookup touches the control bytes,
//! one pointer in a table small enough to stay in cache, and the block's
//! first line (id, times and reference count together). The timer wheel
//! links sessions by bucket index, which keeps its links 4 bytes each (the
//! header fits 56 bytes, so a block with 200 bytes of metadata is exactly
//! one 256-byte allocator class); bucket indices change when the table
//! rehashes (growth, or reclaiming tombstones), so the shard rebuilds its
//! table on its own terms (`make_room`), relinking the wheel as it goes, O(n)
//! like the rehash itself and amortised the same way.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::RandomState;
use hashbrown::HashTable;

use crate::block::{Header, Metadata};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::persist::format::{put_len, touch_record};
use crate::persist::ShardLog;
use crate::session::{Session, Timeout, TIMEOUT_NEVER};
use crate::wheel::{Link, Poll, Wheel, WheelStore, INDEX_MAX};

/// Bit 63 of `last_access_ms`: the session was seen expired (times stay
/// below `TIME_MS_MAX` = 2^62, so no time has it).
const SEEN_EXPIRED: u64 = 1 << 63;
const _: () = assert!(crate::limits::TIME_MS_MAX < SEEN_EXPIRED);

/// A session's fields, as the shard reads and writes them.
impl Header {
    #[inline]
    fn last_access(&self) -> u64 {
        self.last_access_ms.load(Ordering::Relaxed) & !SEEN_EXPIRED
    }

    #[inline]
    fn timeout(&self) -> u32 {
        self.timeout_ms.load(Ordering::Relaxed)
    }

    /// Deadline in ms since the epoch; `None` if the session never expires.
    #[inline]
    fn deadline_ms(&self) -> Option<u64> {
        let timeout = self.timeout();
        (timeout != TIMEOUT_NEVER).then(|| self.last_access().saturating_add(u64::from(timeout)))
    }

    /// The liveness check at `now_ms` and, if `slide`, the slide of the
    /// deadline to `now_ms`, as one atomic step: `(before, after)`, the last
    /// access before and after it, or `None` if the session is expired (it
    /// is then marked so, and stays so). A slide never moves the access
    /// time back (two readers racing: the later time wins) and never writes
    /// when nothing changes, which keeps a hot session's cache line shared
    /// between cores instead of bouncing it on every read.
    #[inline]
    fn access(&self, now_ms: u64, slide: bool) -> Option<(u64, u64)> {
        let timeout = self.timeout();
        let mut last = self.last_access_ms.load(Ordering::Relaxed);
        loop {
            if last & SEEN_EXPIRED != 0 {
                return None;
            }
            let next = if timeout != TIMEOUT_NEVER && last.saturating_add(u64::from(timeout)) <= now_ms {
                last | SEEN_EXPIRED
            } else if slide && now_ms > last {
                now_ms
            } else {
                return Some((last, last));
            };
            match self
                .last_access_ms
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) if next & SEEN_EXPIRED != 0 => return None,
                Ok(_) => return Some((last, next)),
                Err(actual) => last = actual,
            }
        }
    }

    /// True if the session is due at `now_ms` or was seen expired (for the
    /// table's own checks; the API's liveness goes through `access`).
    #[inline]
    fn is_expired(&self, now_ms: u64) -> bool {
        self.last_access_ms.load(Ordering::Relaxed) & SEEN_EXPIRED != 0
            || self.deadline_ms().is_some_and(|d| d <= now_ms)
    }

    /// Moves the access time to `now_ms` if that is later. Exclusive lock
    /// only, on a session found live.
    #[inline]
    fn set_access_at_least(&self, now_ms: u64) {
        debug_assert!(
            self.last_access_ms.load(Ordering::Relaxed) & SEEN_EXPIRED == 0,
            "a write slid session {} after it was seen expired",
            self.id
        );
        self.last_access_ms
            .store(self.last_access().max(now_ms), Ordering::Relaxed);
    }

    #[inline]
    fn link(&self) -> Link {
        Link {
            prev: self.prev.load(Ordering::Relaxed),
            next: self.next.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn set_link(&self, link: Link) {
        self.prev.store(link.prev, Ordering::Relaxed);
        self.next.store(link.next, Ordering::Relaxed);
    }
}

#[inline]
fn snapshot_at(block: &Metadata, last_access_ms: u64) -> Session {
    let h = block.header();
    Session::new(
        h.id,
        block.clone(),
        h.created_ms,
        last_access_ms,
        Timeout::from_stored(h.timeout()),
    )
}

#[inline]
fn snapshot(block: &Metadata) -> Session {
    snapshot_at(block, block.header().last_access())
}

fn into_session(block: Metadata) -> Session {
    let h = block.header();
    let (id, created, last, timeout) = (h.id, h.created_ms, h.last_access(), h.timeout());
    Session::new(id, block, created, last, Timeout::from_stored(timeout))
}

fn metadata_len(block: &Metadata) -> i64 {
    i64::try_from(put_len(block.len())).unwrap_or(i64::MAX)
}

/// The wheel addresses sessions by bucket index.
impl WheelStore for HashTable<Metadata> {
    #[inline]
    fn link(&self, index: u32) -> Link {
        self.header(index).link()
    }

    #[inline]
    fn set_link(&mut self, index: u32, link: Link) {
        self.header(index).set_link(link);
    }

    #[inline]
    fn set_prev(&mut self, index: u32, prev: u32) {
        self.header(index).prev.store(prev, Ordering::Relaxed);
    }

    #[inline]
    fn set_next(&mut self, index: u32, next: u32) {
        self.header(index).next.store(next, Ordering::Relaxed);
    }

    #[inline]
    fn deadline(&self, index: u32) -> Option<u64> {
        self.header(index).deadline_ms()
    }
}

trait BucketHeader {
    fn header(&self, index: u32) -> &Header;
}

impl BucketHeader for HashTable<Metadata> {
    #[inline]
    fn header(&self, index: u32) -> &Header {
        self.get_bucket(index as usize)
            .expect("the wheel links only occupied buckets")
            .header()
    }
}

/// Entries a table of `buckets` buckets holds before it must grow
/// (hashbrown's load factor: 7/8, or one less than the buckets under 8).
fn full_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    }
}

/// Most buckets a table may have: the wheel's links are bucket indices up
/// to `INDEX_MAX`. A table this size holds 7/8 x 2^31 sessions, more than
/// `SESSIONS_MAX_LIMIT` (2^30), so it never needs to grow further.
const BUCKETS_MAX: usize = INDEX_MAX as usize + 1;
const _: () = assert!(BUCKETS_MAX / 8 * 7 > crate::limits::SESSIONS_MAX_LIMIT);

/// The capacity a full table of `len` entries in `buckets` buckets is
/// rebuilt with, by hashbrown's own policy: the same size while at most
/// half of it is live (tombstones took the room), else twice the size;
/// never beyond `BUCKETS_MAX` buckets.
fn rebuild_capacity(len: usize, buckets: usize) -> usize {
    let full = full_capacity(buckets);
    if len < full / 2 || buckets >= BUCKETS_MAX {
        full
    } else {
        full + 1
    }
}

/// Blocks a table rebuild prefetches ahead of the one it moves.
const REBUILD_PREFETCH: usize = 16;

fn to_index(bucket: usize) -> u32 {
    // Tables never exceed BUCKETS_MAX buckets (`rebuild_capacity`).
    u32::try_from(bucket)
        .ok()
        .filter(|&index| index <= INDEX_MAX)
        .expect("bucket index fits the wheel's links")
}

/// The keyed hash of an id. Keys are per process (`RandomState::new` seeds
/// from the OS), so ids chosen by an attacker cannot be aimed at one shard or
/// one probe sequence.
#[inline]
pub(crate) fn hash_id(hasher: &RandomState, id: &SessionId) -> u64 {
    hasher.hash_one(id.to_u128())
}

/// Result of inserting a session.
pub(crate) enum Inserted {
    /// Stored; if an expired (not yet swept) session had the id, it is returned.
    Stored(Option<Session>, LogPosition),
    /// A live session has this id.
    Exists,
}

/// Where a logged change ends in its shard's log (`None` without
/// persistence): what an `Always` writer waits for.
pub(crate) type LogPosition = Option<u64>;

/// Result of committing an optimistic update.
pub(crate) enum Commit {
    /// Applied: the new snapshot, the metadata it replaced (drop it after
    /// unlocking) and the log position.
    Done(Session, Metadata, LogPosition),
    /// The session changed since it was read; the new metadata stays with the
    /// caller (to be dropped after unlocking).
    Conflict,
    /// The session is gone or expired.
    Gone,
}

/// Where a listing stands within one shard: the table generation it started
/// in, and the next bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListPosition {
    pub(crate) generation: u32,
    pub(crate) bucket: u32,
}

impl ListPosition {
    pub(crate) fn encode(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.bucket)
    }

    #[allow(clippy::cast_possible_truncation)] // splitting a u64 into halves
    pub(crate) fn decode(position: u64) -> Self {
        Self {
            generation: (position >> 32) as u32,
            bucket: position as u32,
        }
    }
}

pub(crate) struct ShardState {
    table: HashTable<Metadata>,
    wheel: Wheel,
    hasher: RandomState,
    log: Option<Arc<ShardLog>>,
    /// A read logs a `TOUCH` once the logged access lags by more than this
    /// fraction of the timeout.
    touch_fraction: f64,
    /// Bumped whenever the table rehashes (bucket indices change).
    generation: u32,
    created_total: u64,
    deleted_total: u64,
    expired_total: u64,
}

impl ShardState {
    pub(crate) fn new(
        hasher: RandomState,
        now_ms: u64,
        log: Option<Arc<ShardLog>>,
        touch_fraction: f64,
    ) -> Self {
        Self {
            table: HashTable::new(),
            wheel: Wheel::new(now_ms),
            hasher,
            log,
            touch_fraction,
            generation: 0,
            created_total: 0,
            deleted_total: 0,
            expired_total: 0,
        }
    }

    /// Makes room in the empty table for `sessions` (`Config::initial_capacity`),
    /// failing with a typed error if the memory cannot be had.
    pub(crate) fn reserve(&mut self, sessions: usize) -> Result<()> {
        debug_assert!(self.table.is_empty(), "room is made before any session arrives");
        let hasher = &self.hasher;
        self.table
            .try_reserve(sessions, |b| hash_id(hasher, &b.header().id))
            .map_err(|e| {
                Error::InvalidConfig(format!(
                    "could not allocate a table for {sessions} sessions in a shard (Config::initial_capacity, \
                     or the sessions a data directory holds): {e:?}"
                ))
            })
    }

    #[inline]
    fn find(&self, hash: u64, id: &SessionId) -> Option<&Metadata> {
        self.table.find(hash, |b| b.header().id == *id)
    }

    /// The live session's block and bucket; marks an expired one seen.
    #[inline]
    fn find_live_index(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<usize> {
        let index = self.table.find_bucket_index(hash, |b| b.header().id == *id)?;
        let block = self.table.get_bucket(index)?;
        block.header().access(now_ms, false).map(|_| index)
    }

    /// The live session, sliding its deadline if `activity`. Shared lock.
    #[inline]
    pub(crate) fn get(&self, hash: u64, id: &SessionId, now_ms: u64, activity: bool) -> Option<Session> {
        let block = self.find(hash, id)?;
        let (before, after) = block.header().access(now_ms, activity)?;
        self.log_activity(block.header(), before, after);
        Some(snapshot_at(block, after))
    }

    /// Slides the deadline; false if there is no live session. Shared lock.
    #[inline]
    pub(crate) fn touch(&self, hash: u64, id: &SessionId, now_ms: u64) -> bool {
        let Some(block) = self.find(hash, id) else {
            return false;
        };
        let Some((before, after)) = block.header().access(now_ms, true) else {
            return false;
        };
        self.log_activity(block.header(), before, after);
        true
    }

    /// Logs a `TOUCH` when a slide crosses into a new period of
    /// `Config::touch_persist_fraction` x the timeout (counted from the
    /// epoch): the first slide into a period logs its time, so the log's
    /// access time lags the real one by less than one period, and of the
    /// readers that slide within a period only the one whose swap crossed
    /// the boundary writes. Best effort: a read never fails or waits for it;
    /// a failed append leaves the lag to the next period. Inlined down to
    /// the one test an in-memory engine pays.
    #[inline]
    fn log_activity(&self, header: &Header, before: u64, after: u64) {
        if let Some(log) = &self.log {
            if after != before {
                self.log_activity_to(log, header, before, after);
            }
        }
    }

    #[inline(never)]
    fn log_activity_to(&self, log: &ShardLog, header: &Header, before: u64, after: u64) {
        let timeout = header.timeout();
        if timeout == TIMEOUT_NEVER {
            return;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // at most the timeout
        let period_ms = ((f64::from(timeout) * self.touch_fraction) as u64).max(1);
        if before / period_ms == after / period_ms {
            return;
        }
        let record = touch_record(log.salt(), header.id, after);
        let _ = log.append(&record, 0, after);
    }

    /// Appends a record to the shard's log, if it has one.
    #[inline]
    fn append(&self, record: Option<&[u8]>, live_delta: i64, now_ms: u64) -> Result<LogPosition> {
        match (&self.log, record) {
            (Some(log), Some(record)) => log.append(record, live_delta, now_ms).map(Some),
            (None, _) => Ok(None),
            (Some(_), None) => unreachable!("a persistent shard was given no record"),
        }
    }

    /// Shared lock.
    pub(crate) fn contains(&self, hash: u64, id: &SessionId, now_ms: u64) -> bool {
        self.find(hash, id)
            .is_some_and(|b| b.header().access(now_ms, false).is_some())
    }

    /// The block an optimistic update starts from. Shared lock. The caller
    /// keeps it alive until the commit, so its address identifies this
    /// version of the session (no other allocation can reuse it).
    pub(crate) fn read_for_update(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<Metadata> {
        self.find(hash, id)
            .filter(|b| b.header().access(now_ms, false).is_some())
            .cloned()
    }

    /// Stores `block`, whose header the caller filled (`Metadata::init`)
    /// with the id, `now_ms` as creation and access time, and the timeout.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        block: &Metadata,
        now_ms: u64,
        record: Option<&[u8]>,
    ) -> Result<Inserted> {
        let id = block.header().id;
        let existing = self.table.find_bucket_index(hash, |b| b.header().id == id);
        let mut live_delta = metadata_len(block);
        if let Some(index) = existing {
            let old = self.table.get_bucket(index).expect("found above");
            if !old.header().is_expired(now_ms) {
                return Ok(Inserted::Exists);
            }
            live_delta -= metadata_len(old);
        }
        // Logged before anything changes: a failed append leaves no trace.
        let position = self.append(record, live_delta, now_ms)?;
        // An expired session the sweeper has not reached goes now.
        let replaced = existing.map(|index| {
            self.expired_total += 1;
            self.remove_at(index)
        });
        self.store_block(hash, block.clone());
        self.created_total += 1;
        Ok(Inserted::Stored(replaced, position))
    }

    /// Loads a recovered session, its header filled by the caller (recovery
    /// only: nothing is logged, no listener hears it).
    pub(crate) fn restore(&mut self, hash: u64, block: Metadata) {
        let id = block.header().id;
        debug_assert!(
            self.table.find(hash, |b| b.header().id == id).is_none(),
            "restored twice"
        );
        self.store_block(hash, block);
    }

    /// Puts a new block in the table (rehashing first if it must, on the
    /// shard's terms) and schedules it in the wheel.
    fn store_block(&mut self, hash: u64, block: Metadata) {
        block.header().set_link(Link::UNLINKED);
        self.make_room();
        let hasher = &self.hasher;
        let index = self
            .table
            .insert_unique(hash, block, |b| hash_id(hasher, &b.header().id))
            .bucket_index();
        self.schedule(to_index(index));
    }

    /// Rebuilds the table when the next insert would make it rehash (full,
    /// or out of room to tombstones), scheduling each session in a fresh
    /// wheel under its new bucket index as it moves.
    ///
    /// This holds the shard's lock for a time proportional to the shard's
    /// sessions, so it is built for speed: one pass that touches each block
    /// once, prefetching a few blocks ahead, since the blocks are cold and
    /// scattered. Letting the table rehash itself and relinking afterwards
    /// touched every block three times, one miss after another: the worst
    /// replace among 100K sessions on 8 shards took 1.34-1.40 ms that way,
    /// 0.25-0.38 ms now (`results/engine-stall.md`).
    fn make_room(&mut self) {
        if self.table.len() < self.table.capacity() {
            return;
        }
        let capacity = rebuild_capacity(self.table.len(), self.table.num_buckets());
        let old = std::mem::replace(&mut self.table, HashTable::with_capacity(capacity));
        self.generation = self.generation.wrapping_add(1);
        self.wheel.clear();
        let hasher = &self.hasher;
        let mut blocks = old.into_iter();
        let mut ahead = VecDeque::with_capacity(REBUILD_PREFETCH);
        loop {
            while ahead.len() < REBUILD_PREFETCH {
                let Some(next) = blocks.next() else { break };
                next.prefetch();
                ahead.push_back(next);
            }
            let Some(block) = ahead.pop_front() else { break };
            let hash = hash_id(hasher, &block.header().id);
            block.header().set_link(Link::UNLINKED);
            let index = self
                .table
                .insert_unique(hash, block, |b| hash_id(hasher, &b.header().id))
                .bucket_index();
            let index = to_index(index);
            if let Some(deadline) = self.table.deadline(index) {
                self.wheel.insert(&mut self.table, index, deadline);
            }
        }
    }

    fn schedule(&mut self, index: u32) {
        if let Some(deadline) = self.table.deadline(index) {
            self.wheel.insert(&mut self.table, index, deadline);
        }
    }

    /// Unschedules and removes the session at `index`.
    fn remove_at(&mut self, index: usize) -> Session {
        self.wheel.remove(&mut self.table, to_index(index));
        let (block, _) = self
            .table
            .get_bucket_entry(index)
            .expect("occupied bucket")
            .remove();
        into_session(block)
    }

    /// Removes the live session; expired ones are left to the sweeper, which
    /// reports them as expired.
    pub(crate) fn delete(
        &mut self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        record: Option<&[u8]>,
    ) -> Result<Option<(Session, LogPosition)>> {
        let Some(index) = self.find_live_index(hash, id, now_ms) else {
            return Ok(None);
        };
        let live_delta = -metadata_len(self.table.get_bucket(index).expect("found above"));
        let position = self.append(record, live_delta, now_ms)?;
        self.deleted_total += 1;
        Ok(Some((self.remove_at(index), position)))
    }

    /// Sets a new timeout; counts as activity. `now_ms` is read under the
    /// lock (the liveness check and the access time).
    pub(crate) fn set_timeout(
        &mut self,
        hash: u64,
        id: &SessionId,
        timeout_ms: u32,
        now_ms: u64,
        record: Option<&[u8]>,
    ) -> Result<Option<LogPosition>> {
        let Some(index) = self.find_live_index(hash, id, now_ms) else {
            return Ok(None);
        };
        let position = self.append(record, 0, now_ms)?;
        let header = self.table.get_bucket(index).expect("found above").header();
        header.timeout_ms.store(timeout_ms, Ordering::Relaxed);
        header.set_access_at_least(now_ms);
        // The deadline may have moved earlier, where a lazy re-arm would fire
        // late: re-schedule (O(1) both ways).
        let index = to_index(index);
        self.wheel.remove(&mut self.table, index);
        self.schedule(index);
        Ok(Some(position))
    }

    /// Installs `new` if the session is still the block `read` (the one
    /// the update started from); counts as activity. The caller gave `new`
    /// the session's id and creation time (`Metadata::init`); the rest of
    /// its header is taken over here. `now_ms` is read under the lock (the
    /// liveness check and the access time).
    pub(crate) fn commit_update(
        &mut self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        read: &Metadata,
        new: &mut Option<Metadata>,
        record: Option<&[u8]>,
    ) -> Result<Commit> {
        let Some(index) = self.find_live_index(hash, id, now_ms) else {
            return Ok(Commit::Gone);
        };
        let old = self.table.get_bucket(index).expect("found above");
        if !Metadata::ptr_eq(old, read) {
            return Ok(Commit::Conflict);
        }
        let new_len = new.as_ref().map_or(0, |m| put_len(m.len()));
        let live_delta = i64::try_from(new_len).unwrap_or(i64::MAX) - metadata_len(old);
        let position = self.append(record, live_delta, now_ms)?;
        let new = new.take().expect("commit consumes the new metadata once");
        let (oh, nh) = (old.header(), new.header());
        debug_assert!(
            nh.id == oh.id && nh.created_ms == oh.created_ms,
            "new block not initialised"
        );
        nh.timeout_ms.store(oh.timeout(), Ordering::Relaxed);
        nh.last_access_ms
            .store(oh.last_access().max(now_ms), Ordering::Relaxed);
        // Same bucket, so the wheel's links (bucket indices) carry over.
        nh.set_link(oh.link());
        let slot = self.table.get_bucket_mut(index).expect("found above");
        let old = std::mem::replace(slot, new);
        Ok(Commit::Done(snapshot(slot), old, position))
    }

    /// Expires up to `budget` sessions due at `now_ms` into `out`.
    pub(crate) fn sweep(&mut self, now_ms: u64, budget: usize, out: &mut Vec<Session>) -> Poll {
        let (expired, poll) = self.wheel.poll(&mut self.table, now_ms, budget, |table, index| {
            let (block, _) = table
                .get_bucket_entry(index as usize)
                .expect("fired entry is stored")
                .remove();
            out.push(into_session(block));
        });
        self.expired_total += expired as u64;
        poll
    }

    /// Appends live sessions from `from` on to `out` until it holds `limit`;
    /// returns where to resume, `None` at the end of the shard. A position
    /// from before a rehash restarts the shard (sessions may then repeat).
    pub(crate) fn list(
        &self,
        from: Option<ListPosition>,
        limit: usize,
        now_ms: u64,
        out: &mut Vec<Session>,
    ) -> Option<ListPosition> {
        let start = match from {
            Some(p) if p.generation == self.generation => p.bucket as usize,
            _ => 0,
        };
        for bucket in start..self.table.num_buckets() {
            let Some(block) = self.table.get_bucket(bucket) else {
                continue;
            };
            if out.len() == limit {
                return Some(ListPosition {
                    generation: self.generation,
                    bucket: to_index(bucket),
                });
            }
            if block.header().access(now_ms, false).is_some() {
                out.push(snapshot(block));
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn wheel_len(&self) -> usize {
        self.wheel.len()
    }

    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (self.created_total, self.deleted_total, self.expired_total)
    }

    pub(crate) fn log(&self) -> Option<&Arc<ShardLog>> {
        self.log.as_ref()
    }

    pub(crate) fn rehashes(&self) -> u64 {
        u64::from(self.generation)
    }

    /// Checks the invariants tying table and wheel together.
    pub(crate) fn check_invariants(&self) {
        let mut scheduled = 0;
        for index in self.table.iter_buckets() {
            let h = self.table.get_bucket(index).expect("iterated bucket").header();
            assert_eq!(
                self.table
                    .find_bucket_index(hash_id(&self.hasher, &h.id), |b| b.header().id == h.id),
                Some(index)
            );
            let linked = h.link().is_linked();
            assert_eq!(
                linked,
                h.timeout() != TIMEOUT_NEVER,
                "bucket {index} scheduling: {:?} timeout {}",
                h.link(),
                h.timeout()
            );
            scheduled += usize::from(linked);
        }
        assert_eq!(scheduled, self.wheel.len(), "wheel length");
    }
}

#[cfg(test)]
mod tests {
    //! The shard's blocks through every path that creates, shares, replaces
    //! and frees them (also run under Miri by `scripts/miri.sh`).
    use super::*;

    fn id(n: u32) -> SessionId {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        SessionId::from_bytes(bytes)
    }

    fn block(n: u32, now_ms: u64, timeout_ms: u32) -> Metadata {
        let mut b = Metadata::from(format!("session {n}").as_bytes());
        b.init(id(n), now_ms, now_ms, timeout_ms);
        b
    }

    /// The interleaving that revived expired sessions: reader A reads the
    /// time just before the deadline and is descheduled; reader B, at the
    /// deadline, is told the session expired; A resumes and slides the
    /// deadline. A's liveness check and slide are one atomic step that B's
    /// answer marked, so A finds the session expired too, whichever read
    /// each of them makes.
    #[test]
    fn a_reader_with_an_older_time_cannot_revive_a_session_seen_expired() {
        type Read = fn(&ShardState, u64, &SessionId, u64) -> bool;
        let reads: [(&str, Read); 5] = [
            ("get", |s, h, id, now| s.get(h, id, now, true).is_some()),
            ("peek", |s, h, id, now| s.get(h, id, now, false).is_some()),
            ("touch", |s, h, id, now| s.touch(h, id, now)),
            ("contains", |s, h, id, now| s.contains(h, id, now)),
            ("read for update", |s, h, id, now| {
                s.read_for_update(h, id, now).is_some()
            }),
        ];
        let hasher = RandomState::new();
        let hash = |n: u32| hash_id(&hasher, &id(n));
        for (b_name, b_read) in reads {
            for (a_name, a_read) in reads {
                let mut shard = ShardState::new(hasher.clone(), 1_000, None, 0.5);
                let b = block(1, 1_000, 100); // deadline 1_100
                assert!(matches!(
                    shard.insert(hash(1), &b, 1_000, None),
                    Ok(Inserted::Stored(None, None))
                ));
                assert!(
                    !b_read(&shard, hash(1), &id(1), 1_100),
                    "{b_name} at the deadline"
                );
                assert!(
                    !a_read(&shard, hash(1), &id(1), 1_099),
                    "{a_name} with the time read before {b_name} saw the session expired revived it"
                );
                assert!(shard.get(hash(1), &id(1), 1_099, false).is_none());
                // The wheel still expires it, with its real access time.
                let mut out = Vec::new();
                assert_eq!(shard.sweep(1_100, 16, &mut out), Poll::Done);
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].last_access_ms(), 1_000);
                shard.check_invariants();
            }
        }
        // A listing that skipped an expired session marks it too.
        let mut shard = ShardState::new(hasher.clone(), 1_000, None, 0.5);
        let b = block(2, 1_000, 100);
        assert!(shard.insert(hash(2), &b, 1_000, None).is_ok());
        let mut listed = Vec::new();
        assert!(shard.list(None, 10, 1_100, &mut listed).is_none());
        assert!(listed.is_empty());
        assert!(!shard.touch(hash(2), &id(2), 1_050));
    }

    #[test]
    fn rebuilds_follow_the_tables_own_sizing() {
        // Entries of 8 bytes, as the shard's (small tables' minimum size
        // depends on the entry size).
        let largest = if cfg!(miri) { 10 } else { 17 };
        for shift in 2..largest {
            let buckets = 1usize << shift;
            let full = full_capacity(buckets);
            let same: HashTable<u64> = HashTable::with_capacity(rebuild_capacity(full / 2 - 1, buckets));
            assert_eq!(same.num_buckets(), buckets, "mostly tombstones: same size");
            let grown: HashTable<u64> = HashTable::with_capacity(rebuild_capacity(full, buckets));
            assert_eq!(grown.num_buckets(), 2 * buckets, "full of live entries: doubles");
            // `full` is what a table of that size holds: one more grows it.
            let mut t: HashTable<usize> = HashTable::with_capacity(full);
            for i in 0..full {
                t.insert_unique(i as u64, i, |&v| v as u64);
            }
            assert_eq!((t.num_buckets(), t.capacity()), (buckets, full));
        }
        assert_eq!(rebuild_capacity(0, 1), 1, "the empty table's first rebuild");
        // The largest table rebuilds in place, however full: its indices
        // must stay within the wheel's links.
        let full = full_capacity(BUCKETS_MAX);
        assert_eq!(rebuild_capacity(full, BUCKETS_MAX), full);
        assert_eq!(rebuild_capacity(full - 1, BUCKETS_MAX / 2), full / 2 + 1);
    }

    #[test]
    fn room_that_cannot_be_had_is_a_typed_error() {
        let mut shard = ShardState::new(RandomState::new(), 1_000, None, 0.5);
        let err = shard.reserve(usize::MAX).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(err.to_string().contains("initial_capacity"), "{err}");
        // The shard is untouched and usable.
        shard.reserve(100).unwrap();
        assert!(shard.table.capacity() >= 100);
        shard.check_invariants();
    }

    #[test]
    fn churn_rebuilds_keep_the_table_bounded_and_the_wheel_whole() {
        // Replace sessions at random in a table kept near its load limit,
        // where deletes leave tombstones and inserts run out of room: the
        // table rebuilds (growing once, then at most in place) and every
        // rebuild moves the wheel's links with the sessions.
        let (live, rounds) = if cfg!(miri) { (100, 1_000) } else { (1_700, 60_000) };
        let hasher = RandomState::new();
        let mut shard = ShardState::new(hasher.clone(), 1_000, None, 0.5);
        let hash = |n: u32| hash_id(&hasher, &id(n));
        let timeout = |n: u32| {
            if n.is_multiple_of(5) {
                TIMEOUT_NEVER
            } else {
                100 + n % 50
            }
        };
        let mut slots: Vec<u32> = (0..live).collect();
        for &n in &slots {
            let b = block(n, 1_000, timeout(n));
            assert!(matches!(
                shard.insert(hash(n), &b, 1_000, None),
                Ok(Inserted::Stored(None, None))
            ));
        }
        let grown = shard.rehashes();
        let buckets = shard.table.num_buckets();
        let mut x = 0x9E37_79B9_u32;
        for next in live..live + rounds {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let slot = x as usize % slots.len();
            let old = slots[slot];
            assert!(shard.delete(hash(old), &id(old), 1_000, None).unwrap().is_some());
            let b = block(next, 1_000, timeout(next));
            assert!(matches!(
                shard.insert(hash(next), &b, 1_000, None),
                Ok(Inserted::Stored(None, None))
            ));
            slots[slot] = next;
        }
        shard.check_invariants();
        assert_eq!(shard.len(), live as usize);
        assert!(
            shard.table.num_buckets() <= 2 * buckets,
            "the table grew without bound"
        );
        if !cfg!(miri) {
            assert!(shard.rehashes() > grown, "churn never rebuilt the table");
        }
        for &n in &slots {
            assert!(
                shard.get(hash(n), &id(n), 1_000, false).is_some(),
                "session {n} lost"
            );
        }
        // Every session with a timeout expires by 1_000 + 150, through the wheel.
        let mut out = Vec::new();
        while shard.sweep(1_200, 256, &mut out) == Poll::More {}
        let expiring = slots.iter().filter(|&&n| timeout(n) != TIMEOUT_NEVER).count();
        assert_eq!(out.len(), expiring);
        assert_eq!(shard.len(), live as usize - expiring);
        shard.check_invariants();
    }

    #[test]
    fn blocks_survive_rehashes_updates_deletes_and_sweeps() {
        let hasher = RandomState::new();
        let mut shard = ShardState::new(hasher.clone(), 1_000, None, 0.5);
        let hash = |n: u32| hash_id(&hasher, &id(n));
        let n = 300;
        for i in 0..n {
            // Every third never expires; the rest expire 100 ms after their last activity.
            let timeout = if i % 3 == 0 { TIMEOUT_NEVER } else { 100 };
            let b = block(i, 1_000, timeout);
            assert!(matches!(
                shard.insert(hash(i), &b, 1_000, None),
                Ok(Inserted::Stored(None, None))
            ));
            // The shard holds its own handle; ours can go.
            drop(b);
        }
        assert!(shard.rehashes() >= 4, "the table grew through several rehashes");
        shard.check_invariants();
        // A snapshot outlives the session's replacement and removal.
        let before = shard.get(hash(1), &id(1), 1_010, true).expect("live");
        let read = shard.read_for_update(hash(1), &id(1), 1_020).expect("live");
        let mut new = Metadata::from(&b"updated"[..]);
        new.init(id(1), read.header().created_ms, 0, TIMEOUT_NEVER);
        let mut new = Some(new);
        let Ok(Commit::Done(after, old, None)) =
            shard.commit_update(hash(1), &id(1), 1_020, &read, &mut new, None)
        else {
            panic!("commit failed")
        };
        assert!(Metadata::ptr_eq(&old, &read));
        assert_eq!(
            (after.metadata(), after.last_access_ms()),
            (&b"updated"[..], 1_020)
        );
        assert_eq!(after.created_ms(), 1_000);
        // A second commit from the same read conflicts and leaves the new block with us.
        let mut again = Some(block(1, 0, 0));
        assert!(matches!(
            shard.commit_update(hash(1), &id(1), 1_020, &read, &mut again, None),
            Ok(Commit::Conflict)
        ));
        drop((old, read, again));
        assert!(shard
            .set_timeout(hash(2), &id(2), 5_000, 1_030, None)
            .unwrap()
            .is_some());
        let (deleted, None) = shard.delete(hash(4), &id(4), 1_040, None).unwrap().expect("live") else {
            panic!("no log, no position")
        };
        assert_eq!(deleted.metadata(), b"session 4");
        shard.check_invariants();
        // 1_000 + 100: everything with a 100 ms timeout and no later activity expires.
        let mut out = Vec::new();
        while shard.sweep(1_200, 16, &mut out) == Poll::More {}
        // Session 1 was active at 1_020, so it too is due (1_120); 2 now has 5 s.
        let expected: Vec<u32> = (0..n).filter(|i| i % 3 != 0 && ![2, 4].contains(i)).collect();
        assert_eq!(out.len(), expected.len());
        assert!(out
            .iter()
            .all(|s| s.metadata().starts_with(b"session ") || s.id() == id(1)));
        shard.check_invariants();
        let mut listed = Vec::new();
        assert!(shard.list(None, usize::MAX, 1_200, &mut listed).is_none());
        assert_eq!(listed.len(), n as usize - expected.len() - 1);
        assert_eq!(
            before.metadata(),
            b"session 1",
            "the old snapshot keeps its bytes"
        );
        // Dropping the shard frees the rest (Miri reports any leak).
    }
}
