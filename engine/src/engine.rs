//! The engine: routes each operation to its shard, enforces the limits, and
//! runs the background threads (the sweeper, which also flushes and
//! prepares log segments, and the compactor when persistence is on).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ahash::RandomState;
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::block::Metadata;
use crate::clock::Clock;
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{LIST_LOCK_BATCH, LIST_PAGE_MAX, SWEEP_BATCH_MAX, UPDATE_OPTIMISTIC_TRIES};
use crate::persist::format::{put_len, Record};
use crate::persist::{self, CompactionStep, FlushRequests, RecoveryReport, ShardLog};
use crate::session::{Cursor, Listener, Page, RemovalCause, Session, Stats, Timeout, TIMEOUT_NEVER};
use crate::shard::{hash_id, Commit, Inserted, ListPosition, LogPosition, ShardState};
use crate::store::Settle;
use crate::wheel::Poll;

/// A sharded, in-memory session store with inactivity expiry.
///
/// `Engine` is `Send + Sync`: share it by reference or in an `Arc`. Every
/// operation is synchronous, takes one shard lock for the duration of one map
/// operation, and never blocks on I/O. Dropping the engine (or
/// [`Engine::close`]) stops and joins its sweeper thread.
pub struct Engine {
    inner: Arc<Inner>,
    background: Option<Background>,
}

struct Inner {
    shards: Box<[CachePadded<RwLock<ShardState>>]>,
    shard_mask: usize,
    hasher: RandomState,
    clock: Clock,
    /// Sessions held plus creates in flight: the capacity check reserves here
    /// before it locks a shard.
    sessions: CachePadded<AtomicUsize>,
    listener_panics: AtomicU64,
    compaction_errors: AtomicU64,
    /// One compaction at a time (the compactor thread, `debug_compact`):
    /// two would interleave their seals and their accounting of the log.
    compaction: Mutex<()>,
    config: Config,
    /// One log per shard when persistence is on.
    logs: Vec<Arc<ShardLog>>,
    recovery: Option<RecoveryReport>,
    // Holds the data directory's lock for the engine's lifetime.
    _persistence: Option<persist::Persistence>,
}

thread_local! {
    /// Where a write encodes its log record before taking any lock.
    static RECORD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Engine {
    /// Opens an engine.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting that is out of range.
    pub fn open(config: Config) -> Result<Self> {
        let shard_count = config.validate()?;
        let clock = config.clock.clone().unwrap_or_else(Clock::system);
        let now_ms = clock.now_ms();
        let shard_mask = shard_count - 1;
        let (hasher, shards, logs, recovery, persistence) = if let Some(dir) = config.data_dir.clone() {
            let opened = persist::open(&config, &dir, shard_count, now_ms, |hasher, id| {
                route_shard(hash_id(hasher, id), shard_mask)
            })?;
            let persistence = opened.persistence;
            let hasher = persist::hasher_from_key(persistence.hash_key);
            let recovered: usize = opened.sessions.iter().map(|m| m.len()).sum();
            if recovered > config.sessions_max {
                return Err(Error::InvalidConfig(format!(
                    "sessions_max = {}: the data directory holds {recovered} live sessions; raise sessions_max to open it",
                    config.sessions_max
                )));
            }
            let mut shards = Vec::with_capacity(shard_count);
            for (log, sessions) in persistence.logs.iter().zip(opened.sessions) {
                let mut state = ShardState::new(
                    hasher.clone(),
                    now_ms,
                    Some(Arc::clone(log)),
                    config.touch_persist_fraction,
                );
                state.reserve(config.shard_capacity(shard_count).max(sessions.len()))?;
                for (id, s) in sessions {
                    let mut block = s.metadata;
                    block.init(id, s.created_ms, s.last_access_ms, s.timeout_ms);
                    state.restore(hash_id(&hasher, &id), block);
                }
                shards.push(CachePadded::new(RwLock::new(state)));
            }
            let logs = persistence.logs.clone();
            let report = persistence.report.clone();
            (hasher, shards, logs, Some(report), Some(persistence))
        } else {
            let hasher = RandomState::new();
            let capacity = config.shard_capacity(shard_count);
            let shards = (0..shard_count)
                .map(|_| {
                    let mut state = ShardState::new(hasher.clone(), now_ms, None, 1.0);
                    state.reserve(capacity)?;
                    Ok(CachePadded::new(RwLock::new(state)))
                })
                .collect::<Result<Vec<_>>>()?;
            (hasher, shards, Vec::new(), None, None)
        };
        let sessions: usize = shards.iter().map(|s| s.read().len()).sum();
        let inner = Arc::new(Inner {
            shards: shards.into_boxed_slice(),
            shard_mask,
            hasher,
            clock,
            sessions: CachePadded::new(AtomicUsize::new(sessions)),
            listener_panics: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            compaction: Mutex::new(()),
            logs,
            recovery,
            _persistence: persistence,
            config,
        });
        let background = Background::start(&inner);
        Ok(Self {
            inner,
            background: Some(background),
        })
    }

    /// What recovery found when the engine opened its data directory
    /// (`None` without persistence).
    #[must_use]
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.recovery.as_ref()
    }

    /// Stops the background threads, waits for them and, with persistence,
    /// flushes the logs (dropping does the same, ignoring a flush error).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::WritesRefused`] if the final flush fails.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(background) = self.background.take() {
            background.stop();
        }
        for log in &self.inner.logs {
            if log.durability() != Durability::Never {
                log.flush()?;
            }
        }
        Ok(())
    }

    /// The configuration the engine was opened with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Creates a session with a fresh random id.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`],
    /// [`Error::CapacityExceeded`], [`Error::Entropy`]; nothing is stored.
    pub fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        let (id, pending) = self.create_pending(metadata, timeout)?;
        self.inner.settle(pending)?;
        Ok(id)
    }

    /// `create` without waiting for durability (the caller settles).
    pub(crate) fn create_pending(
        &self,
        metadata: &[u8],
        timeout: Timeout,
    ) -> Result<(SessionId, Option<Pending>)> {
        let timeout_ms = self.inner.check(metadata.len(), timeout)?;
        let mut block = Metadata::copy_from(metadata);
        loop {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self.inner.insert(id, &mut block, timeout_ms) {
                Ok(pending) => return Ok((id, pending)),
                // 2^-128 per live session: draw again rather than fail.
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a session with the configured default timeout.
    ///
    /// # Errors
    /// As [`Engine::create`].
    pub fn create_default(&self, metadata: &[u8]) -> Result<SessionId> {
        self.create(metadata, self.inner.config.default_timeout)
    }

    /// Stores a session under a caller-chosen id.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a live session has the id (it is left
    /// untouched), and the errors of [`Engine::create`].
    pub fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        let ((), pending) = self.insert_pending(id, metadata, timeout)?;
        self.inner.settle(pending)
    }

    /// `insert` without waiting for durability (the caller settles).
    pub(crate) fn insert_pending(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> Result<((), Option<Pending>)> {
        let timeout_ms = self.inner.check(metadata.len(), timeout)?;
        let pending = self
            .inner
            .insert(id, &mut Metadata::copy_from(metadata), timeout_ms)?;
        Ok(((), pending))
    }

    /// Returns the session and counts as activity (slides its deadline).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn get(&self, id: &SessionId) -> Result<Session> {
        #[cfg(feature = "inject-slowdown")]
        inject_slowdown::spin();
        self.inner.read(id, true)
    }

    /// Returns the session without counting as activity.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn peek(&self, id: &SessionId) -> Result<Session> {
        self.inner.read(id, false)
    }

    /// Slides the session's deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn touch(&self, id: &SessionId) -> Result<()> {
        let (hash, shard) = self.inner.route(id);
        let state = shard.read();
        if state.touch(hash, id, self.inner.clock.now_ms()) {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// True if a live session has this id (not activity).
    #[must_use]
    pub fn contains(&self, id: &SessionId) -> bool {
        let (hash, shard) = self.inner.route(id);
        let state = shard.read();
        state.contains(hash, id, self.inner.clock.now_ms())
    }

    /// Atomically replaces the session's metadata with `f(current)`; counts as
    /// activity and returns the updated session.
    ///
    /// `f` runs outside the shard lock on a snapshot; the result is installed
    /// only if nobody changed the session meanwhile, otherwise `f` runs again
    /// on the newer value (so it may run more than once: keep it free of side
    /// effects). After a few lost races `f` runs under the shard's lock,
    /// which guarantees progress; so `f` must not call this engine (a call
    /// into the same shard would then deadlock, as with `moka`'s `compute`
    /// or a `Mutex` held across a callback). If `f` panics, the session is
    /// left as it was and the engine stays usable.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session (also when it expires
    /// or is deleted while `f` runs); [`Error::ValueTooLarge`] if `f` returns
    /// too much (nothing is changed).
    pub fn update<F>(&self, id: &SessionId, f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        let (session, pending) = self.update_pending(id, f)?;
        self.inner.settle(pending)?;
        Ok(session)
    }

    /// `update` without waiting for durability (the caller settles).
    pub(crate) fn update_pending<F>(&self, id: &SessionId, mut f: F) -> Result<(Session, Option<Pending>)>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        let (hash, shard) = self.inner.route(id);
        for _ in 0..UPDATE_OPTIMISTIC_TRIES {
            let current = {
                let state = shard.read();
                state.read_for_update(hash, id, self.inner.clock.now_ms())
            }
            .ok_or_else(not_found)?;
            let new = f(&current);
            self.inner.check_len(new.len())?;
            let mut slot = Some(successor(&current, &new));
            // The record's access time is read before the lock; the commit
            // checks liveness at a time read under it (see `Inner::read`).
            let now_ms = self.inner.clock.now_ms();
            // The record borrows the new bytes while the commit moves them:
            // a second handle, taken only when there is a log to write.
            let logged = if self.inner.logs.is_empty() {
                None
            } else {
                slot.clone()
            };
            let commit = self.inner.with_record(
                hash,
                |m| Record::Update {
                    id: *id,
                    last_access_ms: now_ms,
                    metadata: m,
                },
                logged.as_deref().unwrap_or_default(),
                |record| {
                    let mut state = shard.write();
                    state.commit_update(hash, id, self.inner.clock.now_ms(), &current, &mut slot, record)
                },
            )?;
            match commit {
                Commit::Done(session, _old, position) => {
                    return Ok((session, self.inner.pending(hash, position)));
                }
                Commit::Conflict => {}
                Commit::Gone => return Err(Error::NotFound),
            }
        }
        // Contended: run `f` under the lock so this caller cannot starve.
        let mut state = shard.write();
        let now_ms = self.inner.clock.now_ms();
        let current = state.read_for_update(hash, id, now_ms).ok_or_else(not_found)?;
        let new = f(&current);
        self.inner.check_len(new.len())?;
        let mut new = Some(successor(&current, &new));
        let mut record = Vec::new();
        if !self.inner.logs.is_empty() {
            Record::Update {
                id: *id,
                last_access_ms: now_ms,
                metadata: new.as_deref().expect("just set"),
            }
            .encode(self.inner.salt(hash), &mut record);
        }
        let record = (!self.inner.logs.is_empty()).then_some(&record[..]);
        let commit = state.commit_update(hash, id, now_ms, &current, &mut new, record)?;
        drop(state);
        match commit {
            Commit::Done(session, _old, position) => Ok((session, self.inner.pending(hash, position))),
            Commit::Conflict | Commit::Gone => unreachable!("the lock was held since the read"),
        }
    }

    /// Removes the session and returns it; the listener hears `Deleted`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    pub fn delete(&self, id: &SessionId) -> Result<Session> {
        let (session, pending) = self.delete_pending(id)?;
        self.inner.settle(pending)?;
        Ok(session)
    }

    /// `delete` without waiting for durability (the caller settles).
    pub(crate) fn delete_pending(&self, id: &SessionId) -> Result<(Session, Option<Pending>)> {
        let (hash, shard) = self.inner.route(id);
        let removed = self.inner.with_record(
            hash,
            |_| Record::Delete { id: *id },
            &[],
            |record| {
                let mut state = shard.write();
                state.delete(hash, id, self.inner.clock.now_ms(), record)
            },
        )?;
        let (session, position) = removed.ok_or_else(not_found)?;
        self.inner.sessions.fetch_sub(1, Ordering::Relaxed);
        self.inner.notify(&session, RemovalCause::Deleted);
        Ok((session, self.inner.pending(hash, position)))
    }

    /// Changes the session's timeout (`Timeout::Never`: never expires). Counts
    /// as activity: the new deadline is now + timeout.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`], [`Error::NotFound`].
    pub fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        let ((), pending) = self.set_ttl_pending(id, timeout)?;
        self.inner.settle(pending)
    }

    /// `set_ttl` without waiting for durability (the caller settles).
    pub(crate) fn set_ttl_pending(&self, id: &SessionId, timeout: Timeout) -> Result<((), Option<Pending>)> {
        let timeout_ms = timeout.to_stored()?;
        let (hash, shard) = self.inner.route(id);
        let now_ms = self.inner.clock.now_ms();
        let set = self.inner.with_record(
            hash,
            |_| Record::Timeout {
                id: *id,
                last_access_ms: now_ms,
                timeout_ms: timeout.as_ms().unwrap_or(u64::MAX),
            },
            &[],
            |record| {
                let mut state = shard.write();
                state.set_timeout(hash, id, timeout_ms, self.inner.clock.now_ms(), record)
            },
        )?;
        let position = set.ok_or_else(not_found)?;
        Ok(((), self.inner.pending(hash, position)))
    }

    /// Sessions held, including expired ones not yet reclaimed (at most about
    /// one sweep interval old). Exact when no operation is in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// True if no sessions are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page of at most `limit` live sessions, starting at `cursor`
    /// ([`Cursor::START`] first, then each page's `next`). Locks one shard at
    /// a time, shared. Like Redis' `SCAN`: a session present for the whole
    /// listing is returned at least once (exactly once unless its shard's
    /// table was resized between two pages, which restarts that shard); one
    /// created or deleted meanwhile may or may not appear.
    ///
    /// # Errors
    /// [`Error::InvalidPageSize`], [`Error::InvalidCursor`].
    pub fn list(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        if limit == 0 || limit > LIST_PAGE_MAX {
            return Err(Error::InvalidPageSize {
                limit,
                max: LIST_PAGE_MAX,
            });
        }
        let shard_count = self.inner.shards.len();
        let mut part = cursor.part() as usize;
        if part >= shard_count {
            return Err(Error::InvalidCursor {
                reason: format!("partition {part} is beyond this engine's {shard_count} shards"),
            });
        }
        let mut position = Some(ListPosition::decode(cursor.position()));
        let mut sessions = Vec::with_capacity(limit.min(1024));
        while part < shard_count {
            // At most LIST_LOCK_BATCH sessions per lock hold: writers to the
            // shard wait for one batch, never for a whole page.
            let batch_end = limit.min(sessions.len() + LIST_LOCK_BATCH);
            let state = self.inner.shards[part].read();
            let resume = state.list(position, batch_end, self.inner.clock.now_ms(), &mut sessions);
            drop(state);
            match resume {
                Some(at) if sessions.len() == limit => {
                    let next = Cursor::new(to_u32(part), at.encode());
                    return Ok(Page {
                        sessions,
                        next: Some(next),
                    });
                }
                Some(at) => position = Some(at),
                None => {
                    part += 1;
                    position = None;
                }
            }
        }
        Ok(Page { sessions, next: None })
    }

    /// Every live session, page by page (a convenience over [`Engine::list`]).
    #[must_use]
    pub fn list_all(&self) -> Vec<Session> {
        let mut all = Vec::with_capacity(self.len());
        let mut cursor = Cursor::START;
        loop {
            let page = self
                .list(cursor, LIST_PAGE_MAX)
                .expect("cursor from the previous page");
            all.extend(page.sessions);
            match page.next {
                Some(next) => cursor = next,
                None => return all,
            }
        }
    }

    /// Reclaims every session whose deadline has passed and returns how many;
    /// the listener hears `Expired` for each. The sweeper calls this on its
    /// interval; hosts without a sweeper call it themselves.
    #[allow(clippy::must_use_candidate)] // called for its effect as often as its count
    pub fn cleanup_expired(&self) -> usize {
        self.inner.sweep_all(&mut Vec::new())
    }

    /// Counters and sizes.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            sessions_max: self.inner.config.sessions_max,
            listener_panics: self.inner.listener_panics.load(Ordering::Relaxed),
            compaction_errors: self.inner.compaction_errors.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for shard in &*self.inner.shards {
            let shard = shard.read();
            let (created, deleted, expired) = shard.totals();
            stats.sessions_per_shard.push(shard.len());
            stats.wheel_entries += shard.wheel_len();
            stats.rehashes_total += shard.rehashes();
            if let Some(log) = shard.log() {
                let (log_bytes, live_bytes) = log.sizes();
                stats.log_bytes += log_bytes;
                stats.log_live_bytes += live_bytes;
                stats.log_syncs += log.syncs();
            }
            stats.created_total += created;
            stats.deleted_total += deleted;
            stats.expired_total += expired;
        }
        stats.sessions = stats.sessions_per_shard.iter().sum();
        stats
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The engine's clock.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Compacts one shard now, stopping after `step` (tests use the early
    /// steps to leave the directory as a crash at that point would).
    ///
    /// # Errors
    /// As compaction: [`Error::Io`], [`Error::WritesRefused`].
    #[doc(hidden)]
    pub fn debug_compact(&self, shard: usize, step: CompactionStep) -> Result<()> {
        self.inner.compact(shard, step)
    }

    /// Turns a write's outcome into a future that completes once the write
    /// is durable (at once unless the durability is `Always`), without
    /// blocking the thread that polls it.
    pub(crate) fn settle_later<T: Unpin>(&self, outcome: Result<(T, Option<Pending>)>) -> Settle<T> {
        match outcome {
            Err(e) => Settle::ready(Err(e)),
            Ok((value, None)) => Settle::ready(Ok(value)),
            Ok((value, Some(p))) => Settle::after(value, Arc::clone(&self.inner.logs[p.shard]), p.position),
        }
    }

    /// Makes every later log sync fail as a failing disk would (`EIO`), to
    /// test what callers see: the writes waiting on the failed sync get
    /// [`Error::OutcomeUnknown`], later writes [`Error::WritesRefused`].
    #[doc(hidden)]
    pub fn debug_fail_syncs(&self) {
        for log in &self.inner.logs {
            log.fail_syncs();
        }
    }

    /// Asserts the invariants tying each shard's index, slab and wheel
    /// together; panics with the broken one. For tests, O(sessions).
    #[doc(hidden)]
    pub fn debug_check_invariants(&self) {
        for shard in &*self.inner.shards {
            shard.read().check_invariants();
        }
    }
}

/// A change applied in memory and appended to its shard's log that, in
/// `Always` mode, is acknowledged only once that log is durable up to
/// `position`. The blocking API waits for it in place (`Inner::settle`); the
/// async one awaits it without blocking a thread (`Engine::settle_later`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    shard: usize,
    position: u64,
}

/// A failed sync leaves the change applied in memory and in the log but of
/// unknown durability; later writes are refused. (By value: it is a
/// `map_err` argument.)
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn outcome_unknown(e: Error) -> Error {
    Error::OutcomeUnknown {
        reason: format!("the change is applied but its sync failed: {e}"),
    }
}

/// For `Option::ok_or_else`: `ok_or(Error::NotFound)` builds the error on
/// every call and drops it on success, which the compiler does not elide
/// (an out-of-line `drop_in_place::<Error>` per read, measured).
/// The block an update installs: `bytes`, with the session's id and
/// creation time from `current` (the commit takes over the rest).
fn successor(current: &Metadata, bytes: &[u8]) -> Metadata {
    let mut block = Metadata::copy_from(bytes);
    let h = current.header();
    block.init(h.id, h.created_ms, 0, TIMEOUT_NEVER);
    block
}

fn not_found() -> Error {
    Error::NotFound
}

/// The shard of a hash. The table uses the low bits (bucket) and the top 7
/// (tag); shards take bits from the middle so that the three stay independent.
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn route_shard(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

fn to_u32(part: usize) -> u32 {
    u32::try_from(part).expect("shard count is at most SHARDS_MAX")
}

impl Inner {
    #[inline]
    fn route(&self, id: &SessionId) -> (u64, &RwLock<ShardState>) {
        let hash = hash_id(&self.hasher, id);
        (hash, &self.shards[route_shard(hash, self.shard_mask)])
    }

    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.config.metadata_bytes_max;
        if len > max {
            return Err(Error::ValueTooLarge { len, max });
        }
        Ok(())
    }

    fn check(&self, len: usize, timeout: Timeout) -> Result<u32> {
        self.check_len(len)?;
        timeout.to_stored()
    }

    // Forced: left to itself the compiler calls it out of line, and the call
    // (saving six registers, a 150-byte frame) cost 24 of the ~290
    // instructions a `get` took in the bench loop (cachegrind: 289.5 -> 265.5
    // per get).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn read(&self, id: &SessionId, activity: bool) -> Result<Session> {
        let (hash, shard) = self.route(id);
        // The time is read under the lock: read before it, a caller that
        // waited for the lock across the session's deadline would judge the
        // session by a time already past and revive it, after another
        // caller was told it had expired.
        let state = shard.read();
        let found = state.get(hash, id, self.clock.now_ms(), activity);
        drop(state);
        found.ok_or_else(not_found)
    }

    /// Stores a session in `block`, reserving capacity first. On failure
    /// the block is left with the caller (unshared), so that `create` can
    /// retry with a new id.
    fn insert(&self, id: SessionId, block: &mut Metadata, timeout_ms: u32) -> Result<Option<Pending>> {
        self.reserve()?;
        let (hash, shard) = self.route(&id);
        let now_ms = self.clock.now_ms();
        block.init(id, now_ms, now_ms, timeout_ms);
        let block = &*block;
        let inserted = self.with_record(
            hash,
            |m| Record::Put {
                id,
                created_ms: now_ms,
                last_access_ms: now_ms,
                timeout_ms: Timeout::from_stored(timeout_ms).as_ms().unwrap_or(u64::MAX),
                metadata: m,
            },
            block,
            |record| {
                let mut state = shard.write();
                state.insert(hash, block, self.clock.now_ms(), record)
            },
        );
        let inserted = match inserted {
            Ok(inserted) => inserted,
            Err(e) => {
                self.sessions.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        match inserted {
            Inserted::Stored(replaced, position) => {
                if let Some(expired) = replaced {
                    self.sessions.fetch_sub(1, Ordering::Relaxed);
                    self.notify(&expired, RemovalCause::Expired);
                }
                Ok(self.pending(hash, position))
            }
            Inserted::Exists => {
                self.sessions.fetch_sub(1, Ordering::Relaxed);
                Err(Error::AlreadyExists)
            }
        }
    }

    /// Claims room for one more session; reclaims expired sessions once
    /// before refusing.
    fn reserve(&self) -> Result<()> {
        let max = self.config.sessions_max;
        for attempt in 0..2 {
            if self.sessions.fetch_add(1, Ordering::Relaxed) < max {
                return Ok(());
            }
            self.sessions.fetch_sub(1, Ordering::Relaxed);
            if attempt == 0 && self.sweep_all(&mut Vec::new()) == 0 {
                break;
            }
        }
        Err(Error::CapacityExceeded { sessions_max: max })
    }

    /// Runs `write` with the change's log record encoded (before any lock is
    /// taken), or with `None` when the engine is not persistent.
    fn with_record<'m, T>(
        &self,
        hash: u64,
        record: impl FnOnce(&'m [u8]) -> Record<'m>,
        metadata: &'m [u8],
        write: impl FnOnce(Option<&[u8]>) -> Result<T>,
    ) -> Result<T> {
        if self.logs.is_empty() {
            return write(None);
        }
        RECORD.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            record(metadata).encode(self.salt(hash), &mut buf);
            write(Some(&buf))
        })
    }

    /// The salt of the log of the shard `hash` routes to (persistence only).
    #[inline]
    fn salt(&self, hash: u64) -> u64 {
        self.logs[route_shard(hash, self.shard_mask)].salt()
    }

    /// What a change logged at `position` must wait for before it is
    /// acknowledged: nothing unless the durability is `Always`.
    #[inline]
    fn pending(&self, hash: u64, position: LogPosition) -> Option<Pending> {
        let position = position?;
        let shard = route_shard(hash, self.shard_mask);
        (self.logs[shard].durability() == Durability::Always).then_some(Pending { shard, position })
    }

    /// Blocks until `pending` is durable (group commit; see `ShardLog`).
    #[inline]
    fn settle(&self, pending: Option<Pending>) -> Result<()> {
        let Some(p) = pending else { return Ok(()) };
        self.logs[p.shard]
            .wait_durable(p.position)
            .map_err(outcome_unknown)
    }

    fn compact(&self, shard: usize, step: CompactionStep) -> Result<()> {
        let Some(log) = self.logs.get(shard) else {
            return Ok(());
        };
        let _one_at_a_time = self.compaction.lock();
        let state = &self.shards[shard];
        let now_ms = self.clock.now_ms();
        let mut position = None;
        persist::compact(log, now_ms, step, |batch| {
            let resume = state.read().list(position, 1024, now_ms, batch);
            position = resume;
            resume.is_some()
        })
    }

    fn notify(&self, session: &Session, cause: RemovalCause) {
        if let Some(listener) = &self.config.listener {
            call_listener(listener, session, cause, &self.listener_panics);
        }
    }

    /// Expires everything due now, shard by shard, in bounded batches.
    fn sweep_all(&self, batch: &mut Vec<Session>) -> usize {
        let mut total = 0;
        for shard in &*self.shards {
            loop {
                let now_ms = self.clock.now_ms();
                let (poll, log) = {
                    let mut state = shard.write();
                    (state.sweep(now_ms, SWEEP_BATCH_MAX, batch), state.log().cloned())
                };
                total += batch.len();
                self.sessions.fetch_sub(batch.len(), Ordering::Relaxed);
                if let Some(log) = log {
                    let freed: usize = batch.iter().map(|s| put_len(s.metadata().len())).sum();
                    log.account(-i64::try_from(freed).unwrap_or(i64::MAX));
                }
                // Listener calls and frees happen here, outside the lock.
                for session in batch.drain(..) {
                    self.notify(&session, RemovalCause::Expired);
                }
                if poll == Poll::Done {
                    break;
                }
            }
        }
        total
    }
}

fn call_listener(listener: &Listener, session: &Session, cause: RemovalCause, panics: &AtomicU64) {
    if catch_unwind(AssertUnwindSafe(|| listener(session, cause))).is_err() {
        panics.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Stop flag shared with the background threads.
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps up to `timeout`; true once stop was requested.
    fn wait(&self, timeout: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, timeout);
        }
        *stopped
    }
}

/// The engine's threads: the sweeper (expiry; with persistence also the
/// `Interval` flush and segment preparation), with persistence the
/// compactor, and in `Always` mode the flusher (for async writers). None
/// runs for an in-memory engine opened `without_sweeper` (the default clock
/// has a thread of its own: see `Clock::system`).
struct Background {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
    /// The flusher thread's requests (`Always` mode).
    flusher: Option<Arc<FlushRequests>>,
}

impl Background {
    fn start(inner: &Arc<Inner>) -> Self {
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut threads = Vec::new();
        let persistent = !inner.logs.is_empty();
        if inner.config.sweep_interval.is_some() || persistent {
            let (inner, stop) = (Arc::clone(inner), Arc::clone(&stop));
            threads.push(spawn("session-sweeper", move || sweeper(&inner, &stop)));
        }
        if persistent {
            let (inner, stop) = (Arc::clone(inner), Arc::clone(&stop));
            threads.push(spawn("session-compactor", move || compactor(&inner, &stop)));
        }
        let flusher = (persistent && inner.config.durability == Durability::Always).then(|| {
            let requests = Arc::new(FlushRequests::default());
            for log in &inner.logs {
                log.set_flusher(Arc::clone(&requests));
            }
            let (inner, requests2) = (Arc::clone(inner), Arc::clone(&requests));
            threads.push(spawn("session-flusher", move || flusher(&inner, &requests2)));
            requests
        });
        Self {
            stop,
            threads,
            flusher,
        }
    }

    fn stop(self) {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
        if let Some(flusher) = &self.flusher {
            flusher.stop();
        }
        let current = std::thread::current().id();
        for thread in self.threads {
            // Dropped from one of its own threads (a listener that held the
            // last handle): that thread sees the stop flag and ends once the
            // listener returns; joining itself would fail.
            if thread.thread().id() == current {
                continue;
            }
            // A panic there was already reported by the thread itself.
            let _ = thread.join();
        }
    }
}

/// Runs the flushes that async writers wait for in `Always` mode (they
/// cannot block in one): whenever asked, flushes every log that has them,
/// unless a writer's thread is already leading a flush there (that leader
/// covers them, hands over to another thread, or asks again).
fn flusher(inner: &Inner, requests: &FlushRequests) {
    while requests.next() {
        for log in &inner.logs {
            if log.has_async_waiters() {
                // A failure reaches the waiters through the log.
                let _ = log.flush();
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"))
}

/// How often the sweeper looks at the logs (prefaulting ahead of the writer,
/// segment preparation) when no shorter sweep or flush interval wakes it.
const LOG_CHECK_INTERVAL: Duration = Duration::from_millis(50);

fn sweeper(inner: &Inner, stop: &Stop) {
    let sweep_every = inner.config.sweep_interval;
    let flush_every = match inner.config.durability {
        Durability::Interval(every) if !inner.logs.is_empty() => Some(every),
        _ => None,
    };
    let mut tick = LOG_CHECK_INTERVAL;
    for every in [sweep_every, flush_every].into_iter().flatten() {
        tick = tick.min(every);
    }
    let mut batch = Vec::with_capacity(SWEEP_BATCH_MAX);
    let mut next_sweep = std::time::Instant::now();
    let mut next_flush = next_sweep;
    while !stop.wait(tick) {
        let now = std::time::Instant::now();
        if let Some(every) = sweep_every {
            if now >= next_sweep {
                inner.sweep_all(&mut batch);
                next_sweep = now + every;
            }
        }
        let now_ms = inner.clock.now_ms();
        for log in &inner.logs {
            log.prefault_ahead();
            // Failures resurface on the write path, which returns them.
            let _ = log.prepare_next(now_ms);
        }
        if let Some(every) = flush_every {
            if now >= next_flush {
                for log in &inner.logs {
                    let _ = log.flush();
                }
                next_flush = now + every;
            }
        }
    }
}

/// How often the compactor checks whether a shard's log is worth rewriting.
const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_millis(500);

fn compactor(inner: &Inner, stop: &Stop) {
    let threshold = inner.config.compaction_threshold;
    let segment_len = inner.config.segment_size_bytes;
    while !stop.wait(COMPACTION_CHECK_INTERVAL) {
        for (shard, log) in inner.logs.iter().enumerate() {
            if persist::wants_compaction(log, threshold, segment_len)
                && inner.compact(shard, CompactionStep::Done).is_err()
            {
                inner.compaction_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A manual clock pushed to the end of time stops there, and the engine
    /// and its wheel keep working (before, the wheel's arithmetic wrapped
    /// at `u64::MAX` and a debug build panicked).
    #[test]
    fn the_end_of_time_is_a_time_like_any_other() {
        let clock = ManualClock::new(1_000_000);
        let engine =
            Engine::open(Config::default().shards(1).without_sweeper().clock(clock.clock())).unwrap();
        let early = engine.create(b"early", Timeout::from_ms(100)).unwrap();
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), crate::limits::TIME_MS_MAX);
        assert_eq!(engine.cleanup_expired(), 1);
        assert!(matches!(engine.get(&early), Err(Error::NotFound)));
        let late = engine.create(b"late", Timeout::from_ms(100)).unwrap();
        let never = engine.create(b"never", Timeout::Never).unwrap();
        clock.advance_ms(1_000);
        assert_eq!(
            clock.now_ms(),
            crate::limits::TIME_MS_MAX,
            "time stops at its end"
        );
        assert_eq!(engine.cleanup_expired(), 0);
        assert!(engine.get(&late).is_ok() && engine.get(&never).is_ok());
        engine.debug_check_invariants();
    }

    /// An operation that waits for the shard's lock while the session's
    /// deadline passes must judge the session by the time after the wait:
    /// judged by a time read before it, the session looked live, and a read
    /// or update revived it after other callers had been told it expired.
    #[test]
    fn an_operation_waiting_for_the_lock_across_the_deadline_sees_the_session_expired() {
        type Op = fn(&Engine, &SessionId) -> Result<()>;
        let ops: [(&str, Op); 6] = [
            ("get", |e, id| e.get(id).map(drop)),
            ("peek", |e, id| e.peek(id).map(drop)),
            ("touch", Engine::touch),
            ("update", |e, id| e.update(id, <[u8]>::to_vec).map(drop)),
            ("set_ttl", |e, id| e.set_ttl(id, Timeout::from_secs(60))),
            ("delete", |e, id| e.delete(id).map(drop)),
        ];
        for (name, op) in ops {
            let clock = ManualClock::new(1_000_000);
            let engine =
                Engine::open(Config::default().shards(1).without_sweeper().clock(clock.clock())).unwrap();
            let id = engine.create(b"x", Timeout::from_ms(100)).unwrap();
            let guard = engine.inner.shards[0].write();
            let result = std::thread::scope(|s| {
                let waiter = s.spawn(|| op(&engine, &id));
                // Let it reach the lock (a head start, not a synchronisation:
                // if it is late, it reads the later time either way).
                std::thread::sleep(Duration::from_millis(50));
                clock.advance_ms(100); // the deadline passes while it waits
                drop(guard);
                waiter.join().unwrap()
            });
            assert!(matches!(result, Err(Error::NotFound)), "{name}: {result:?}");
            assert!(
                matches!(engine.get(&id), Err(Error::NotFound)),
                "{name}: not revived"
            );
            assert!(!engine.contains(&id), "{name}");
        }
    }
}

/// Test-only extra work in [`Engine::get`] (cargo feature `inject-slowdown`,
/// off by default): `SESSION_ENGINE_INJECT_GET_SPINS=N` in the environment
/// (read once per process) makes each `get` owe `N` iterations of an empty
/// loop the optimizer cannot remove, paid on the calling thread in chunks of
/// 1,000: a loop of a few dozen iterations hides behind the cache misses of
/// neighbouring operations (out-of-order execution) until it outgrows the
/// reorder window, then costs in full; chunks this long are paid in full,
/// so the average slowdown grows with `N`. The load generator's gates use
/// it to show they catch a slower `get`.
#[cfg(feature = "inject-slowdown")]
mod inject_slowdown {
    use std::cell::Cell;

    const CHUNK: u64 = 1_000;
    static SPINS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

    thread_local! {
        static OWED: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn spin() {
        let spins = *SPINS.get_or_init(|| {
            std::env::var("SESSION_ENGINE_INJECT_GET_SPINS")
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        });
        if spins == 0 {
            return;
        }
        let owed = OWED.with(|owed| {
            let due = owed.get() + spins;
            owed.set(due % CHUNK);
            due / CHUNK * CHUNK
        });
        for i in 0..owed {
            std::hint::black_box(i);
        }
    }
}
