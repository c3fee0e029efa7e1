//! One shard: a hash table holding the session entries inline, and a timer
//! wheel linking them by bucket index.
//!
//! Ground rules:
//! - The shard's `RwLock` (in `engine.rs`) protects all of `ShardState`.
//!   Reads (`get`, `peek`, `touch`, `contains`, `list`, the read half of
//!   `update`) take it shared: activity is recorded in an atomic
//!   `last_access_ms`, so readers never exclude each other. Everything that
//!   changes the table or the wheel takes it exclusive.
//! - It is held for one map operation only: callers compute the hash, read
//!   the clock, build the metadata `Arc` and validate input before locking.
//! - Lock order: at most one shard lock is held at a time, anywhere.
//! - Never under the lock: I/O, user callbacks (listener, `update`'s closure
//!   on its optimistic path), freeing metadata (removed sessions are returned
//!   and dropped by the caller after unlocking), or unbounded work (sweeps
//!   and listings work in bounded batches).
//! - Allocation under the lock only when the table grows (amortised, rare).
//!
//! Why inline entries: a lookup touches the table's control bytes, then the
//! entry, then the metadata; a separate index-to-slab indirection would add a
//! cache miss to every operation. The price is that bucket indices change
//! when the table rehashes (growth, or reclaiming tombstones), so the shard
//! rehashes only on its own terms (`make_room`) and then relinks the wheel,
//! which is O(n) like the rehash itself and amortised the same way.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ahash::RandomState;
use hashbrown::HashTable;

use crate::error::Result;
use crate::id::SessionId;
use crate::persist::format::{put_len, Record};
use crate::persist::ShardLog;
use crate::session::{Session, Timeout, TIMEOUT_NEVER};
use crate::wheel::{Link, Poll, Wheel, WheelStore};

/// One session, stored in its shard's table.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Entry {
    id: SessionId,
    metadata: Arc<[u8]>,
    created_ms: u64,
    /// Written under the shared lock by readers (see `record_activity`).
    last_access_ms: AtomicU64,
    /// Inactivity timeout in ms; `TIMEOUT_NEVER` for none.
    timeout_ms: u32,
    /// Low 32 bits of the last access the log holds (persistence only). Lags
    /// are computed with wrapping arithmetic, exact below 2^32 ms (49.7
    /// days), which every lag that matters is: a longer one means the
    /// session has expired.
    persisted_access_ms: AtomicU32,
    /// Place in the wheel while the session has a finite timeout.
    link: Link,
}

// 64 bytes, aligned to 64 (the `repr`): one cache line per session on
// x86-64. Without the alignment hashbrown asks the allocator for 16 bytes
// (its control group's), which mimalloc rounds up to 64 for large blocks but
// glibc's malloc does not (its large blocks start 16 bytes into a page):
// every entry would then straddle two lines. (Measured: no change in the
// mixed loop either way, the adjacent-line prefetcher hides the second
// line; kept so that the layout is what this comment says.)
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

impl Entry {
    #[inline]
    fn last_access_ms(&self) -> u64 {
        self.last_access_ms.load(Ordering::Relaxed)
    }

    /// Deadline in ms since the epoch; `None` if the session never expires.
    #[inline]
    fn deadline_ms(&self) -> Option<u64> {
        (self.timeout_ms != TIMEOUT_NEVER)
            .then(|| self.last_access_ms().saturating_add(u64::from(self.timeout_ms)))
    }

    #[inline]
    fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms().is_some_and(|d| d <= now_ms)
    }

    /// Slides the deadline to `now_ms` unless it is already there or later.
    /// Two readers racing within the same instant may both store; the later
    /// store wins even if its reading is a millisecond older. Skipping the
    /// store when nothing changes keeps a hot session's cache line shared
    /// between cores instead of bouncing it on every read.
    #[inline]
    fn record_activity(&self, now_ms: u64) -> u64 {
        let last = self.last_access_ms();
        if now_ms > last {
            self.last_access_ms.store(now_ms, Ordering::Relaxed);
            now_ms
        } else {
            last
        }
    }

    fn snapshot(&self) -> Session {
        self.snapshot_at(self.last_access_ms())
    }

    fn snapshot_at(&self, last_access_ms: u64) -> Session {
        Session::new(
            self.id,
            Arc::clone(&self.metadata),
            self.created_ms,
            last_access_ms,
            Timeout::from_stored(self.timeout_ms),
        )
    }

    fn metadata_len(&self) -> i64 {
        i64::try_from(put_len(self.metadata.len())).unwrap_or(i64::MAX)
    }

    fn into_session(self) -> Session {
        let last = self.last_access_ms.into_inner();
        Session::new(
            self.id,
            self.metadata,
            self.created_ms,
            last,
            Timeout::from_stored(self.timeout_ms),
        )
    }
}

/// The wheel addresses entries by bucket index.
impl WheelStore for HashTable<Entry> {
    #[inline]
    fn link(&mut self, index: u32) -> &mut Link {
        &mut self
            .get_bucket_mut(index as usize)
            .expect("the wheel links only occupied buckets")
            .link
    }

    #[inline]
    fn deadline(&self, index: u32) -> Option<u64> {
        self.get_bucket(index as usize)
            .expect("the wheel links only occupied buckets")
            .deadline_ms()
    }
}

fn to_index(bucket: usize) -> u32 {
    // Tables hold at most SESSIONS_MAX_LIMIT entries, so at most 2^31 buckets.
    u32::try_from(bucket).expect("bucket index fits the wheel's u32 links")
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
    Done(Session, Arc<[u8]>, LogPosition),
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
    table: HashTable<Entry>,
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

    #[inline]
    fn find(&self, hash: u64, id: &SessionId) -> Option<&Entry> {
        self.table.find(hash, |e| e.id == *id)
    }

    #[inline]
    fn find_live(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<&Entry> {
        self.find(hash, id).filter(|e| !e.is_expired(now_ms))
    }

    #[inline]
    fn find_live_index(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<usize> {
        let index = self.table.find_bucket_index(hash, |e| e.id == *id)?;
        let live = !self.table.get_bucket(index)?.is_expired(now_ms);
        live.then_some(index)
    }

    /// The live session, sliding its deadline if `activity`. Shared lock.
    #[inline]
    pub(crate) fn get(&self, hash: u64, id: &SessionId, now_ms: u64, activity: bool) -> Option<Session> {
        let entry = self.find_live(hash, id, now_ms)?;
        if activity {
            let last = entry.record_activity(now_ms);
            self.log_activity(entry, now_ms);
            Some(entry.snapshot_at(last))
        } else {
            Some(entry.snapshot())
        }
    }

    /// Slides the deadline; false if there is no live session. Shared lock.
    #[inline]
    pub(crate) fn touch(&self, hash: u64, id: &SessionId, now_ms: u64) -> bool {
        let Some(entry) = self.find_live(hash, id, now_ms) else {
            return false;
        };
        entry.record_activity(now_ms);
        self.log_activity(entry, now_ms);
        true
    }

    /// Logs a `TOUCH` when the logged access lags too far (see
    /// `Config::touch_persist_fraction`). Best effort: a read never fails or
    /// waits for it; an append error leaves the lag for the next read.
    /// Inlined down to the one test an in-memory engine pays.
    #[inline]
    fn log_activity(&self, entry: &Entry, now_ms: u64) {
        if let Some(log) = &self.log {
            self.log_activity_to(log, entry, now_ms);
        }
    }

    #[inline(never)]
    fn log_activity_to(&self, log: &ShardLog, entry: &Entry, now_ms: u64) {
        if entry.timeout_ms == TIMEOUT_NEVER {
            return;
        }
        #[allow(clippy::cast_possible_truncation)] // low 32 bits, by design
        let now_low = now_ms as u32;
        let logged = entry.persisted_access_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let allowed_lag = (f64::from(entry.timeout_ms) * self.touch_fraction) as u32;
        if now_low.wrapping_sub(logged) <= allowed_lag {
            return;
        }
        // One reader logs it; the others see the marker move.
        if entry
            .persisted_access_ms
            .compare_exchange(logged, now_low, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut record = Vec::with_capacity(40);
        Record::Touch {
            id: entry.id,
            last_access_ms: now_ms,
        }
        .encode(&mut record);
        if log.append(&record, 0, now_ms).is_err() {
            entry.persisted_access_ms.store(logged, Ordering::Relaxed);
        }
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
        self.find_live(hash, id, now_ms).is_some()
    }

    /// The metadata an optimistic update starts from. Shared lock. The
    /// caller keeps it alive until the commit, so its address identifies
    /// this version of the metadata (no other allocation can reuse it).
    pub(crate) fn read_for_update(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<Arc<[u8]>> {
        let entry = self.find_live(hash, id, now_ms)?;
        Some(Arc::clone(&entry.metadata))
    }

    pub(crate) fn insert(
        &mut self,
        hash: u64,
        id: SessionId,
        metadata: Arc<[u8]>,
        timeout_ms: u32,
        now_ms: u64,
        record: Option<&[u8]>,
    ) -> Result<Inserted> {
        let existing = self.table.find_bucket_index(hash, |e| e.id == id);
        let mut live_delta = i64::try_from(put_len(metadata.len())).unwrap_or(i64::MAX);
        if let Some(index) = existing {
            let entry = self.table.get_bucket(index).expect("found above");
            if !entry.is_expired(now_ms) {
                return Ok(Inserted::Exists);
            }
            live_delta -= entry.metadata_len();
        }
        // Logged before anything changes: a failed append leaves no trace.
        let position = self.append(record, live_delta, now_ms)?;
        // An expired session the sweeper has not reached goes now.
        let replaced = existing.map(|index| {
            self.expired_total += 1;
            self.remove_at(index)
        });
        #[allow(clippy::cast_possible_truncation)] // low 32 bits, by design
        let entry = Entry {
            id,
            metadata,
            created_ms: now_ms,
            last_access_ms: AtomicU64::new(now_ms),
            timeout_ms,
            persisted_access_ms: AtomicU32::new(now_ms as u32),
            link: Link::UNLINKED,
        };
        self.store_entry(hash, entry);
        self.created_total += 1;
        Ok(Inserted::Stored(replaced, position))
    }

    /// Loads a recovered session (recovery only: nothing is logged, no
    /// listener hears it).
    pub(crate) fn restore(&mut self, hash: u64, id: SessionId, s: crate::persist::Recovered) {
        debug_assert!(self.table.find(hash, |e| e.id == id).is_none(), "restored twice");
        #[allow(clippy::cast_possible_truncation)] // low 32 bits, by design
        let entry = Entry {
            id,
            metadata: s.metadata,
            created_ms: s.created_ms,
            last_access_ms: AtomicU64::new(s.last_access_ms),
            timeout_ms: s.timeout_ms,
            persisted_access_ms: AtomicU32::new(s.last_access_ms as u32),
            link: Link::UNLINKED,
        };
        self.store_entry(hash, entry);
    }

    /// Puts a new entry in the table (rehashing first if it must, on the
    /// shard's terms) and schedules it in the wheel.
    fn store_entry(&mut self, hash: u64, entry: Entry) {
        self.make_room();
        let hasher = &self.hasher;
        let index = self
            .table
            .insert_unique(hash, entry, |e| hash_id(hasher, &e.id))
            .bucket_index();
        self.schedule(to_index(index));
    }

    /// Rehashes now if the next insert would, and relinks the wheel to the
    /// new bucket indices.
    fn make_room(&mut self) {
        if self.table.len() < self.table.capacity() {
            return;
        }
        let hasher = &self.hasher;
        self.table.reserve(1, |e| hash_id(hasher, &e.id));
        self.generation = self.generation.wrapping_add(1);
        self.wheel.clear();
        for bucket in 0..self.table.num_buckets() {
            if self.table.get_bucket(bucket).is_some() {
                let index = to_index(bucket);
                *self.table.link(index) = Link::UNLINKED;
                self.schedule(index);
            }
        }
    }

    fn schedule(&mut self, index: u32) {
        if let Some(deadline) = self.table.deadline(index) {
            self.wheel.insert(&mut self.table, index, deadline);
        }
    }

    /// Unschedules and removes the entry at `index`.
    fn remove_at(&mut self, index: usize) -> Session {
        self.wheel.remove(&mut self.table, to_index(index));
        let (entry, _) = self
            .table
            .get_bucket_entry(index)
            .expect("occupied bucket")
            .remove();
        entry.into_session()
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
        let live_delta = -self.table.get_bucket(index).expect("found above").metadata_len();
        let position = self.append(record, live_delta, now_ms)?;
        self.deleted_total += 1;
        Ok(Some((self.remove_at(index), position)))
    }

    /// Sets a new timeout; counts as activity.
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
        let entry = self.table.get_bucket_mut(index).expect("found above");
        entry.timeout_ms = timeout_ms;
        entry.record_activity(now_ms);
        #[allow(clippy::cast_possible_truncation)] // low 32 bits, by design
        entry.persisted_access_ms.store(now_ms as u32, Ordering::Relaxed);
        // The deadline may have moved earlier, where a lazy re-arm would fire
        // late: re-schedule (O(1) both ways).
        let index = to_index(index);
        self.wheel.remove(&mut self.table, index);
        self.schedule(index);
        Ok(Some(position))
    }

    /// Installs `metadata` if the session still holds `read` (the metadata
    /// the update started from); counts as activity.
    pub(crate) fn commit_update(
        &mut self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        read: &Arc<[u8]>,
        metadata: &mut Option<Arc<[u8]>>,
        record: Option<&[u8]>,
    ) -> Result<Commit> {
        let Some(index) = self.find_live_index(hash, id, now_ms) else {
            return Ok(Commit::Gone);
        };
        let entry = self.table.get_bucket(index).expect("found above");
        if !Arc::ptr_eq(&entry.metadata, read) {
            return Ok(Commit::Conflict);
        }
        let new_len = metadata.as_ref().map_or(0, |m| put_len(m.len()));
        let live_delta = i64::try_from(new_len).unwrap_or(i64::MAX) - entry.metadata_len();
        let position = self.append(record, live_delta, now_ms)?;
        let entry = self.table.get_bucket_mut(index).expect("found above");
        let new = metadata.take().expect("commit consumes the new metadata once");
        let old = std::mem::replace(&mut entry.metadata, new);
        entry.record_activity(now_ms);
        #[allow(clippy::cast_possible_truncation)] // low 32 bits, by design
        entry.persisted_access_ms.store(now_ms as u32, Ordering::Relaxed);
        Ok(Commit::Done(entry.snapshot(), old, position))
    }

    /// Expires up to `budget` sessions due at `now_ms` into `out`.
    pub(crate) fn sweep(&mut self, now_ms: u64, budget: usize, out: &mut Vec<Session>) -> Poll {
        let (expired, poll) = self.wheel.poll(&mut self.table, now_ms, budget, |table, index| {
            let (entry, _) = table
                .get_bucket_entry(index as usize)
                .expect("fired entry is stored")
                .remove();
            out.push(entry.into_session());
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
            let Some(entry) = self.table.get_bucket(bucket) else {
                continue;
            };
            if out.len() == limit {
                return Some(ListPosition {
                    generation: self.generation,
                    bucket: to_index(bucket),
                });
            }
            if !entry.is_expired(now_ms) {
                out.push(entry.snapshot());
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
            let entry = self.table.get_bucket(index).expect("iterated bucket");
            assert_eq!(
                self.table
                    .find_bucket_index(hash_id(&self.hasher, &entry.id), |e| e.id == entry.id),
                Some(index)
            );
            assert_eq!(
                entry.link.is_linked(),
                entry.timeout_ms != TIMEOUT_NEVER,
                "bucket {index} scheduling: {entry:?}"
            );
            scheduled += usize::from(entry.link.is_linked());
        }
        assert_eq!(scheduled, self.wheel.len(), "wheel length");
    }
}
