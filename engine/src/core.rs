//! The engine's core: routes each operation to its shard, enforces the
//! limits, encodes log records before any lock, and runs the chores the
//! background threads schedule (sweeps, compactions, the logs' upkeep).

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::RandomState;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::block::{stored_timeout_ms, BlockRef, Metadata, HEADER_LEN};
use crate::clock::Clock;
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{
    COMPACTION_LIST_RESTARTS_MAX, LIST_LOCK_BATCH, SWEEP_BATCH_MAX, TIMER_BATCH_MAX, UPDATE_OPTIMISTIC_TRIES,
};
use crate::per_session::{self, EntryLine, IdOf, TimerHandle, TopicParts, Topics};
use crate::persist::format::{put_len, Record, TIMEOUT_NEVER_STORED};
use crate::persist::{
    self, flush_all, flush_all_waiting, CompactionStep, GroupCommit, RecoveryReport, ShardLog,
};
use crate::session::{Listener, RemovalCause, Session, SessionRef, Stats, Timeout};
use crate::settle::Pending;
use crate::shard::{
    snapshot, Commit, Inserted, ListPosition, Locked, LogPosition, Room, Rotated, Shard, Swept,
    BACK_FROM_START,
};
use crate::state::{check_bucket, check_topic};
use crate::state::{Bucket, RateDecision, TopicCursor, TopicPage};
use crate::table::hash_id;

thread_local! {
    /// Where a write encodes its log record before taking any lock.
    static RECORD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(crate) struct Core {
    pub(crate) shards: Box<[CachePadded<Shard>]>,
    shard_mask: usize,
    hasher: RandomState,
    pub(crate) clock: Clock,
    /// Sessions held: an insert claims its room here under its shard's
    /// writer mutex, once it knows its id is new (`shard::Room`).
    pub(crate) sessions: CachePadded<AtomicUsize>,
    pub(crate) listener_panics: AtomicU64,
    pub(crate) compaction_errors: AtomicU64,
    /// Panics caught in the background threads' passes (`Stats`).
    pub(crate) background_panics: AtomicU64,
    /// Test hook: the next pass of the background threads whose bits are
    /// set panics (`Engine::debug_panic_in_next_pass`).
    pub(crate) panic_next_pass: std::sync::atomic::AtomicU8,
    /// Sweep passes, and what the last one expired: written once a pass
    /// (`sweep_all`), never by an operation.
    sweeps_total: AtomicU64,
    expired_last_sweep: AtomicU64,
    /// One compaction at a time (the compactor thread, `debug_compact`):
    /// two would interleave their seals and their accounting of the log.
    compaction: Mutex<()>,
    pub(crate) config: Config,
    /// `Config::max_lifetime`, stored: the cap every new session gets.
    lifetime: u32,
    /// One log per shard when persistence is on.
    pub(crate) logs: Vec<Arc<ShardLog>>,
    /// Their group commits, one per log.
    pub(crate) commits: Vec<Arc<GroupCommit>>,
    pub(crate) recovery: Option<RecoveryReport>,
    /// This engine's mark in its timer handles (`TimerHandle`): a handle
    /// of another engine in the process cancels nothing here.
    timer_mark: u32,
    // Holds the data directory's lock for the engine's lifetime.
    persistence: Option<persist::Persistence>,
}

/// A mark for this run of an engine, in its listing cursors (`Shard::run_mark`):
/// random, never 0 (a cursor's position 0 is the start of a shard).
fn next_run_mark() -> u16 {
    let drawn = SessionId::random().map_or_else(
        // Without the OS's random source: this process and this moment.
        |_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            (std::process::id() ^ nanos ^ nanos >> 16 ^ next_timer_mark()).to_le_bytes()
        },
        |id| {
            let b = id.to_bytes();
            [b[0], b[1], b[2], b[3]]
        },
    );
    u16::from_le_bytes([drawn[0], drawn[1]]).max(1)
}

/// A mark for each engine opened in this process (`Core::timer_mark`).
fn next_timer_mark() -> u32 {
    static MARKS: AtomicU32 = AtomicU32::new(0);
    MARKS.fetch_add(1, Ordering::Relaxed)
}

/// The shard of a hash. The table uses the low bits (slot) and the top 16
/// (tag); shards take bits from the middle so that the three stay independent.
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn route_shard(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

/// The sync round `Core::maintain_logs` ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFlush {
    No,
    /// Every log, but one whose sync is under way is left to that sync
    /// (the `Interval` flush).
    UnlessRunning,
    /// Every log, waiting for a sync under way and then syncing what it
    /// did not cover; that sync's failure is this flush's (`close`, the
    /// last drop).
    Complete,
}

/// What a change does to the session it read (`Core::change`).
pub(crate) enum Step {
    /// Install this successor (every field but its access time set),
    /// logged as `kind`.
    Replace(Metadata, Kind),
    /// Remove the session.
    Delete,
    /// Leave it, sliding its deadline.
    Keep,
}

/// Which record logs a replacement.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// New metadata: `UPDATE`.
    Update,
    /// New timeout: `TIMEOUT`.
    Timeout,
    /// Both: `PUT`.
    Put,
}

/// What a change did.
pub(crate) enum Changed {
    Replaced(Session, Option<Pending>),
    Deleted(Session, Option<Pending>),
    Kept(Session),
    Declined,
}

/// What `insert` did with the block it was given.
pub(crate) enum Placed {
    /// Stored; acknowledged once `Pending` (if any) settles.
    Done(Option<Pending>),
    /// A live session has the id: the block comes back (for a new id).
    Taken(Metadata),
}

/// `read`'s session under `new_id`: the same metadata and times (the
/// access time is set when it is installed).
fn rotated_copy(read: &Metadata, new_id: SessionId) -> Metadata {
    let h = read.header();
    Metadata::session(read.as_bytes(), new_id, h.created_ms, 0, h.timeout_ms).with_lifetime(h.lifetime)
}

#[cfg(test)]
thread_local! {
    /// Optimistic rotations on this thread to fail as if a writer had
    /// committed between their read and their commit (tests).
    pub(crate) static FORCED_ROTATE_CONFLICTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether this optimistic rotation is to lose its race (tests only).
#[inline]
fn forced_rotate_conflict() -> bool {
    #[cfg(test)]
    {
        FORCED_ROTATE_CONFLICTS.with(|n| {
            let left = n.get();
            n.set(left.saturating_sub(1));
            left > 0
        })
    }
    #[cfg(not(test))]
    {
        false
    }
}

fn not_found() -> Error {
    Error::NotFound
}

/// Ends a shard's compaction listing however the compaction ends: done,
/// stopped early, failed, or unwinding from a panic (left on, the shard
/// would note every insert and rotation for a listing no one reads, until
/// the next compaction).
struct EndListing<'a>(&'a Shard, u64);

impl Drop for EndListing<'_> {
    fn drop(&mut self) {
        drop(self.0.end_compaction_listing(self.1));
    }
}

impl Core {
    /// Opens the shards (recovering them from the data directory, if any).
    pub(crate) fn open(config: Config) -> Result<Self> {
        let shard_count = config.validate()?;
        let clock = config.clock.clone().unwrap_or_else(Clock::system);
        let now_ms = clock.now_ms();
        let shard_mask = shard_count - 1;
        let guard = crossbeam_epoch::pin();
        let run_mark = next_run_mark();
        let (hasher, shards, logs, commits, recovery, persistence) =
            if let Some(dir) = config.data_dir.clone() {
                let opened = persist::open(&config, &dir, shard_count, now_ms, |hasher, id| {
                    route_shard(hash_id(hasher, id), shard_mask)
                })?;
                // Engine time never runs behind the log's (recovery judged
                // expiry at the later of the two).
                clock.raise_to(opened.newest_ms);
                let now_ms = clock.now_ms();
                let persistence = opened.persistence;
                let hasher = persist::hasher_from_key(persistence.hash_key);
                // `persist::open` refused a directory holding more live
                // sessions than `sessions_max`, before it changed anything.
                debug_assert!(opened.sessions.iter().map(|s| s.len()).sum::<usize>() <= config.sessions_max);
                let mut shards = Vec::with_capacity(shard_count);
                for (log, sessions) in persistence.logs.iter().zip(opened.sessions) {
                    let shard = Shard::new(
                        hasher.clone(),
                        now_ms,
                        Some(Arc::clone(log)),
                        config.touch_persist_fraction,
                        run_mark,
                    );
                    shard.reserve(config.shard_capacity(shard_count).max(sessions.len()), &guard)?;
                    if opened.logged_newest_ms > 0 {
                        shard.raise_created_floor(opened.logged_newest_ms);
                    }
                    for (id, s) in sessions {
                        let mut block = s.metadata;
                        block.init(id, s.created_ms, s.last_access_ms, s.timeout_ms);
                        let block = block.with_lifetime(s.lifetime);
                        shard.restore(hash_id(&hasher, &id), block, &guard)?;
                        if !s.topics.is_empty() {
                            shard.restore_topics(id, &s.topics)?;
                        }
                    }
                    shards.push(CachePadded::new(shard));
                }
                let logs = persistence.logs.clone();
                let commits = persistence.commits.clone();
                let report = persistence.report.clone();
                (hasher, shards, logs, commits, Some(report), Some(persistence))
            } else {
                let hasher = RandomState::new();
                let capacity = config.shard_capacity(shard_count);
                let shards = (0..shard_count)
                    .map(|_| {
                        let shard = Shard::new(hasher.clone(), now_ms, None, 1.0, run_mark);
                        shard.reserve(capacity, &guard)?;
                        Ok(CachePadded::new(shard))
                    })
                    .collect::<Result<Vec<_>>>()?;
                (hasher, shards, Vec::new(), Vec::new(), None, None)
            };
        let sessions: usize = shards.iter().map(|s| s.len()).sum();
        let lifetime = config.max_lifetime.to_stored()?;
        Ok(Self {
            lifetime,
            shards: shards.into_boxed_slice(),
            shard_mask,
            hasher,
            clock,
            sessions: CachePadded::new(AtomicUsize::new(sessions)),
            listener_panics: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            background_panics: AtomicU64::new(0),
            panic_next_pass: std::sync::atomic::AtomicU8::new(0),
            sweeps_total: AtomicU64::new(0),
            expired_last_sweep: AtomicU64::new(0),
            compaction: Mutex::new(()),
            logs,
            commits,
            recovery,
            timer_mark: next_timer_mark(),
            persistence,
            config,
        })
    }

    /// Switches the data directory to the layout the open rewrote, if it
    /// rewrote one (see `persist::LayoutSwitch`).
    pub(crate) fn switch_layout(&self) -> Result<()> {
        let pending = self.persistence.as_ref().and_then(|p| p.switch.lock().take());
        pending.map_or(Ok(()), persist::LayoutSwitch::switch)
    }

    #[inline]
    pub(crate) fn route(&self, id: &SessionId) -> (u64, &Shard) {
        let hash = hash_id(&self.hasher, id);
        (hash, &self.shards[route_shard(hash, self.shard_mask)])
    }

    /// Sessions held, including expired ones not yet reclaimed.
    pub(crate) fn len(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn check_len(&self, len: usize) -> Result<()> {
        let max = self.config.metadata_bytes_max;
        if len > max {
            return Err(Error::ValueTooLarge { len, max });
        }
        Ok(())
    }

    pub(crate) fn check(&self, len: usize, timeout: Timeout) -> Result<u32> {
        self.check_len(len)?;
        timeout.to_stored()
    }

    // ---- Reads -------------------------------------------------------------

    /// The live session, sliding its deadline if `slide`.
    #[inline]
    pub(crate) fn read(&self, id: &SessionId, slide: bool) -> Result<Session> {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        shard
            .read(hash, id, self.clock.now_ms(), slide, &guard, snapshot)
            .ok_or_else(not_found)
    }

    /// Hands the live session, borrowed, to `f`.
    #[inline]
    pub(crate) fn read_with<R>(
        &self,
        id: &SessionId,
        slide: bool,
        f: impl FnOnce(SessionRef<'_>) -> R,
    ) -> Result<R> {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        shard
            .read(hash, id, self.clock.now_ms(), slide, &guard, |block, last| {
                f(SessionRef::new(block, last))
            })
            .ok_or_else(not_found)
    }

    /// Whether the session is live, sliding its deadline if `slide`.
    #[inline]
    pub(crate) fn probe(&self, id: &SessionId, slide: bool) -> bool {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        shard
            .read(hash, id, self.clock.now_ms(), slide, &guard, |_, _| ())
            .is_some()
    }

    /// Many reads in one pass: the slots of a batch are prefetched together,
    /// so their cache misses overlap instead of following one another, and
    /// each id's hash, shard and table are found once for its three steps.
    /// Each chunk of the batch reads the clock when it starts: a session is
    /// judged at most one chunk's lookups (and the closure's calls) late,
    /// not by the time a long batch started at.
    pub(crate) fn read_many(&self, ids: &[SessionId], slide: bool) -> Vec<Result<Session>> {
        self.read_many_with(ids, slide, snapshot)
    }

    /// [`Core::read_many`] handing each live session, borrowed, to `f`
    /// (with its access time), as [`Core::read_with`] does for one.
    pub(crate) fn read_many_with<R>(
        &self,
        ids: &[SessionId],
        slide: bool,
        mut f: impl FnMut(BlockRef<'_>, u64) -> R,
    ) -> Vec<Result<R>> {
        const BATCH: usize = 16;
        let guard = crossbeam_epoch::pin();
        let mut out = Vec::with_capacity(ids.len());
        let first: &Shard = &self.shards[0];
        let filler = (0, first, first.start_read(0, &guard));
        for chunk in ids.chunks(BATCH) {
            let now_ms = self.clock.now_ms();
            let mut batch = [filler; BATCH];
            for (b, id) in batch.iter_mut().zip(chunk) {
                let (hash, shard) = self.route(id);
                *b = (hash, shard, shard.start_read(hash, &guard));
            }
            let batch = &batch[..chunk.len()];
            // The slots are on their way; start the blocks they point to.
            for &(hash, _, table) in batch {
                if let Some(block) = table.first_candidate(hash) {
                    block.prefetch();
                }
            }
            for (&(hash, shard, table), id) in batch.iter().zip(chunk) {
                out.push(
                    shard
                        .read_from_in_batch(table, hash, id, now_ms, slide, &guard, &mut f)
                        .ok_or_else(not_found),
                );
            }
        }
        out
    }

    // ---- Writes ------------------------------------------------------------

    /// Runs `write` with the change's log record: `encode` writes it into
    /// this thread's buffer (before any lock) when the engine persists;
    /// without persistence `write` gets `None` and no buffer is touched.
    /// `payload` (the new block, if any) goes to `encode` by reference,
    /// then to `write` by value.
    #[inline]
    fn with_record<P, T>(
        &self,
        payload: P,
        encode: impl FnOnce(&P, &mut Vec<u8>),
        write: impl FnOnce(P, Option<&[u8]>) -> T,
    ) -> T {
        if !self.persistent() {
            return write(payload, None);
        }
        RECORD.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            encode(&payload, &mut buf);
            write(payload, Some(&buf))
        })
    }

    /// The salt of the log of the shard `hash` routes to (persistence only).
    #[inline]
    fn salt(&self, hash: u64) -> crate::persist::format::LogSalt {
        self.logs[route_shard(hash, self.shard_mask)].salt()
    }

    fn persistent(&self) -> bool {
        !self.logs.is_empty()
    }

    /// Stores a session in `block` if its id is new, claiming room for it
    /// under the shard's writer mutex; when the engine is full, reclaims
    /// expired sessions once and tries again before refusing.
    #[inline]
    pub(crate) fn insert(&self, id: SessionId, block: Metadata, timeout_ms: u32) -> Result<Placed> {
        self.insert_with(id, block, timeout_ms, || {})
    }

    /// `insert`, running `before_lock` once, after its first clock read and
    /// before its shard's writer mutex (`Engine::debug_insert_with`).
    pub(crate) fn insert_with(
        &self,
        id: SessionId,
        mut block: Metadata,
        timeout_ms: u32,
        before_lock: impl FnOnce(),
    ) -> Result<Placed> {
        let mut before_lock = Some(before_lock);
        let (hash, shard) = self.route(&id);
        let room = Room {
            count: &self.sessions,
            max: self.config.sessions_max,
        };
        let lifetime = self.lifetime;
        let mut swept = false;
        // Made later than an expired session of the id it replaces.
        let mut after_ms = 0;
        loop {
            let now_ms = self.clock.now_ms().max(after_ms);
            if let Some(hook) = before_lock.take() {
                hook();
            }
            block.init(id, now_ms, now_ms, timeout_ms);
            block = block.with_lifetime(lifetime);
            let guard = crossbeam_epoch::pin();
            let inserted = self.with_record(
                block,
                |block, buf| {
                    Record::Put {
                        id,
                        created_ms: now_ms,
                        last_access_ms: now_ms,
                        timeout_ms: stored_to_record(timeout_ms),
                        lifetime_ms: stored_to_record(lifetime),
                        metadata: block.as_bytes(),
                    }
                    .encode(self.salt(hash), buf);
                },
                |block, record| shard.insert(hash, block, &self.clock, &room, record, &guard),
            )?;
            drop(guard);
            match inserted {
                Inserted::Stored(replaced, position) => {
                    if let Some(expired) = replaced {
                        self.notify(&expired, RemovalCause::Expired);
                    }
                    return Ok(Placed::Done(self.pending(hash, position)));
                }
                Inserted::Exists(block) => return Ok(Placed::Taken(block)),
                Inserted::Stale(back, created_ms) => {
                    after_ms = crate::clock::ms_after(created_ms);
                    block = back;
                }
                Inserted::Full(back) if !swept => {
                    // Outside every shard's mutex: the sweep takes them.
                    self.sweep_all(&mut Vec::new(), false, &mut || true);
                    swept = true;
                    block = back;
                }
                Inserted::Full(_) => {
                    return Err(Error::CapacityExceeded {
                        sessions_max: self.config.sessions_max,
                    })
                }
            }
        }
    }

    /// Removes the live session.
    pub(crate) fn delete(&self, id: &SessionId) -> Result<(Session, Option<Pending>)> {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        let removed = self.with_record(
            (),
            |(), buf| Record::Delete { id: *id }.encode(self.salt(hash), buf),
            |(), record| shard.delete(hash, id, &self.clock, record, &guard),
        )?;
        drop(guard);
        let (session, position) = removed.ok_or_else(not_found)?;
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        self.notify(&session, RemovalCause::Deleted);
        Ok((session, self.pending(hash, position)))
    }

    /// Replaces the session's metadata with `f(current)` (an update).
    pub(crate) fn replace<F>(&self, id: &SessionId, mut f: F) -> Result<(Session, Option<Pending>)>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        self.replace_with(id, Kind::Update, |read| {
            let bytes = f(read.as_bytes());
            self.check_len(bytes.len())?;
            let h = read.header();
            Ok(read.successor(&bytes, h.timeout_ms, h.lifetime))
        })
    }

    /// Changes the session's timeout and/or lifetime cap (stored values;
    /// `None` keeps the current one), keeping its metadata.
    pub(crate) fn set_expiry(
        &self,
        id: &SessionId,
        timeout_ms: Option<u32>,
        lifetime: Option<u32>,
    ) -> Result<(Session, Option<Pending>)> {
        self.replace_with(id, Kind::Timeout, |read| {
            let h = read.header();
            Ok(read.successor(
                read.as_bytes(),
                timeout_ms.unwrap_or(h.timeout_ms),
                lifetime.unwrap_or(h.lifetime),
            ))
        })
    }

    /// Replaces a live session's metadata and timeout in one step (`put`),
    /// keeping its creation time and lifetime cap: `NotFound` if there is
    /// none.
    pub(crate) fn overwrite(
        &self,
        id: &SessionId,
        metadata: &[u8],
        timeout_ms: u32,
    ) -> Result<(Session, Option<Pending>)> {
        self.replace_with(id, Kind::Put, |read| {
            Ok(read.successor(metadata, timeout_ms, read.header().lifetime))
        })
    }

    /// A change that always replaces: the successor `build` makes of the
    /// current block, logged as `kind`.
    fn replace_with(
        &self,
        id: &SessionId,
        kind: Kind,
        mut build: impl FnMut(&Metadata) -> Result<Metadata>,
    ) -> Result<(Session, Option<Pending>)> {
        match self.change(id, |read| Ok(Some(Step::Replace(build(read)?, kind))))? {
            Changed::Replaced(session, pending) => Ok((session, pending)),
            _ => unreachable!("a replacement only replaces"),
        }
    }

    /// A read-modify-write of the session: `decide` sees the current block
    /// and says what to do (`None`: nothing, and nothing slides).
    /// Optimistic: the step is decided with no lock held and committed only
    /// if the session is still the block it was decided on, else `decide`
    /// runs again on the newer one; after `UPDATE_OPTIMISTIC_TRIES` lost
    /// races it runs under the shard's writer mutex, which guarantees
    /// progress.
    pub(crate) fn change(
        &self,
        id: &SessionId,
        mut decide: impl FnMut(&Metadata) -> Result<Option<Step>>,
    ) -> Result<Changed> {
        let (hash, shard) = self.route(id);
        for _ in 0..UPDATE_OPTIMISTIC_TRIES {
            let read = {
                let guard = crossbeam_epoch::pin();
                shard
                    .read(hash, id, self.clock.now_ms(), false, &guard, |block, _| {
                        block.share()
                    })
                    .ok_or_else(not_found)?
            };
            // The user's closure runs with no epoch pinned (`read` owns its
            // bytes): a slow one must not hold back the freeing of every
            // block and table the writers retire meanwhile.
            let step = decide(&read)?;
            let guard = crossbeam_epoch::pin();
            let commit = match step {
                None => return Ok(Changed::Declined),
                Some(Step::Keep) => {
                    drop(guard);
                    match self.keep(id, &read)? {
                        Some(kept) => return Ok(kept),
                        // Changed since the decision: decide again.
                        None => continue,
                    }
                }
                Some(Step::Replace(new, kind)) => {
                    // The time the record logs, which memory then takes.
                    let logged = Cell::new(None);
                    self.with_record(
                        new,
                        |new, buf| logged.set(Some(self.change_record(hash, new, kind, buf))),
                        |new, record| {
                            shard.commit(hash, &read, new, &self.clock, record, logged.get(), &guard)
                        },
                    )?
                }
                Some(Step::Delete) => self.with_record(
                    (),
                    |(), buf| Record::Delete { id: *id }.encode(self.salt(hash), buf),
                    |(), record| shard.delete_if(hash, &read, &self.clock, record, &guard),
                )?,
            };
            drop(guard);
            if !matches!(commit, Commit::Conflict(_)) {
                return self.changed(hash, commit);
            }
        }
        // Contended: decide under the writer mutex.
        let guard = crossbeam_epoch::pin();
        let commit = shard.commit_locked(hash, id, &self.clock, &guard, |read| {
            let mut record = Vec::new();
            Ok(match decide(read)? {
                None => Locked::Decline,
                Some(Step::Keep) => Locked::Keep,
                Some(Step::Delete) => {
                    if self.persistent() {
                        Record::Delete { id: *id }.encode(self.salt(hash), &mut record);
                    }
                    Locked::Delete(record)
                }
                Some(Step::Replace(new, kind)) => {
                    let logged_ms = self
                        .persistent()
                        .then(|| self.change_record(hash, &new, kind, &mut record));
                    Locked::Install(new, record, logged_ms)
                }
            })
        })?;
        drop(guard);
        if matches!(commit, Commit::Conflict(_)) {
            unreachable!("the writer mutex was held since the read");
        }
        self.changed(hash, commit)
    }

    /// A change's outcome, settled with the counters and the listener.
    fn changed(&self, hash: u64, commit: Commit) -> Result<Changed> {
        match commit {
            Commit::Done(session, position) => Ok(Changed::Replaced(session, self.pending(hash, position))),
            Commit::Deleted(session, position) => {
                self.sessions.fetch_sub(1, Ordering::Relaxed);
                self.notify(&session, RemovalCause::Deleted);
                Ok(Changed::Deleted(session, self.pending(hash, position)))
            }
            Commit::Kept(session) => Ok(Changed::Kept(session)),
            Commit::Declined => Ok(Changed::Declined),
            Commit::Gone => Err(Error::NotFound),
            Commit::Conflict(_) => unreachable!("retried by the caller"),
        }
    }

    /// A change that keeps the session `read`: slides its deadline (as a
    /// `get` would) and returns it as it was read; `None` if the id holds
    /// another block by now (the decision was made on bytes that are gone:
    /// the caller decides again), which is not slid (that decision may
    /// fail, and a failed `try_update` slides nothing).
    fn keep(&self, id: &SessionId, read: &Metadata) -> Result<Option<Changed>> {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        let kept = read.block();
        let last = shard
            .read_sliding_only(hash, id, self.clock.now_ms(), kept, &guard, |block, last| {
                block.same(kept).then_some(last)
            })
            .ok_or_else(not_found)?;
        Ok(last.map(|last| Changed::Kept(snapshot(kept, last))))
    }

    /// Moves the live session to a fresh random id in the same shard, in
    /// one logged step. Optimistic, as `change`: the copy is made with no
    /// lock held and moved only if the session is still the block it was
    /// copied from; after `UPDATE_OPTIMISTIC_TRIES` lost races the copy is
    /// made under the shard's writer mutex, which guarantees progress.
    pub(crate) fn rotate(&self, id: &SessionId) -> Result<(SessionId, Session, Option<Pending>)> {
        let (hash, shard) = self.route(id);
        for _ in 0..UPDATE_OPTIMISTIC_TRIES {
            let read = {
                let guard = crossbeam_epoch::pin();
                shard
                    .read(hash, id, self.clock.now_ms(), false, &guard, |block, _| {
                        block.share()
                    })
                    .ok_or_else(not_found)?
            };
            let (new_id, new_hash) = self.fresh_id_beside(hash)?;
            if forced_rotate_conflict() {
                continue;
            }
            let new = rotated_copy(&read, new_id);
            let guard = crossbeam_epoch::pin();
            // The time the record logs, which memory then takes.
            let logged = Cell::new(None);
            let rotated = self.with_record(
                new,
                |_, buf| {
                    let now_ms = self.clock.now_ms();
                    logged.set(Some(now_ms));
                    self.rotate_record(hash, id, new_id, now_ms, buf);
                },
                |new, record| {
                    shard.rotate(
                        hash,
                        &read,
                        new_hash,
                        new,
                        &self.clock,
                        record,
                        logged.get(),
                        &guard,
                    )
                },
            )?;
            match rotated {
                Rotated::Done(session, position) => {
                    return Ok((new_id, session, self.pending(hash, position)))
                }
                Rotated::Gone => return Err(Error::NotFound),
                Rotated::Conflict | Rotated::Taken => {}
            }
        }
        // Contended: copy under the writer mutex.
        loop {
            let (new_id, new_hash) = self.fresh_id_beside(hash)?;
            let guard = crossbeam_epoch::pin();
            let rotated =
                shard.rotate_locked(hash, id, new_hash, &self.clock, &guard, |current, now_ms| {
                    let mut record = Vec::new();
                    if self.persistent() {
                        self.rotate_record(hash, id, new_id, now_ms, &mut record);
                    }
                    (rotated_copy(current, new_id), record)
                })?;
            match rotated {
                Rotated::Done(session, position) => {
                    return Ok((new_id, session, self.pending(hash, position)))
                }
                Rotated::Gone => return Err(Error::NotFound),
                Rotated::Taken => {}
                Rotated::Conflict => unreachable!("the writer mutex was held since the read"),
            }
        }
    }

    /// A fresh random id that routes to the same shard as `hash`, so that
    /// one shard's log carries a rotation (one draw in n qualifies).
    fn fresh_id_beside(&self, hash: u64) -> Result<(SessionId, u64)> {
        let shard_index = route_shard(hash, self.shard_mask);
        loop {
            let new_id = SessionId::random().map_err(Error::Entropy)?;
            let new_hash = hash_id(&self.hasher, &new_id);
            if route_shard(new_hash, self.shard_mask) == shard_index {
                return Ok((new_id, new_hash));
            }
        }
    }

    fn rotate_record(
        &self,
        hash: u64,
        id: &SessionId,
        new_id: SessionId,
        last_access_ms: u64,
        buf: &mut Vec<u8>,
    ) {
        Record::Rotate {
            id: *id,
            new_id,
            last_access_ms,
        }
        .encode(self.salt(hash), buf);
    }

    /// The record of a replacement (the time read now: the commit judges
    /// liveness at a time read under the lock, and gives the new block the
    /// access time logged here): `UPDATE` (new metadata), `TIMEOUT` (new
    /// timeout) or `PUT` (both). Returns the access time it logged.
    fn change_record(&self, hash: u64, new: &Metadata, kind: Kind, buf: &mut Vec<u8>) -> u64 {
        let h = new.header();
        let last_access_ms = self.clock.now_ms();
        let record = match kind {
            Kind::Timeout => Record::Timeout {
                id: h.id,
                last_access_ms,
                timeout_ms: stored_to_record(h.timeout_ms),
                lifetime_ms: stored_to_record(h.lifetime),
            },
            Kind::Update => Record::Update {
                id: h.id,
                last_access_ms,
                metadata: new.as_bytes(),
            },
            Kind::Put => Record::Put {
                id: h.id,
                created_ms: h.created_ms,
                last_access_ms,
                timeout_ms: stored_to_record(h.timeout_ms),
                lifetime_ms: stored_to_record(h.lifetime),
                metadata: new.as_bytes(),
            },
        };
        record.encode(self.salt(hash), buf);
        last_access_ms
    }

    /// What a change logged at `position` must wait for before it is
    /// acknowledged: nothing unless the durability is `Always`.
    #[inline]
    pub(crate) fn pending(&self, hash: u64, position: LogPosition) -> Option<Pending> {
        let position = position?;
        let shard = route_shard(hash, self.shard_mask);
        (self.logs[shard].durability() == Durability::Always).then_some(Pending { shard, position })
    }

    // ---- Listing, expiry, compaction ---------------------------------------

    /// One batch of a listing: live sessions of shard `part` from `from` on
    /// into `out` until it holds `limit`; where to resume in that shard.
    /// See `Shard::check_list_position`.
    pub(crate) fn check_list_position(
        &self,
        part: usize,
        position: ListPosition,
    ) -> std::result::Result<(), String> {
        let guard = crossbeam_epoch::pin();
        self.shards[part].check_list_position(position, &guard)
    }

    pub(crate) fn list_batch(
        &self,
        part: usize,
        from: Option<ListPosition>,
        limit: usize,
        out: &mut Vec<Session>,
    ) -> Option<ListPosition> {
        let guard = crossbeam_epoch::pin();
        self.shards[part].list(from, limit, self.clock.now_ms(), out, &guard)
    }

    pub(crate) fn notify(&self, session: &Session, cause: RemovalCause) {
        if let Some(listener) = &self.config.listener {
            call_listener(listener, session, cause, &self.listener_panics);
        }
    }

    /// Expires everything due now, shard by shard, in bounded batches, and
    /// fires the due session timers if `timers` (the sweeper and
    /// `cleanup_expired`; not a full engine's create, on its caller's thread).
    /// `between` runs after each batch and after each listener call (a
    /// listener's, not the engine's, time): the sweeper keeps its other
    /// chores' cadence there (the `Interval` flush) through a pass that
    /// listeners make long. After a batch, `between` returning false ends
    /// the pass there (the engine is closing: `close` waits for one batch,
    /// not a whole pass); what is left stays due for the next one.
    pub(crate) fn sweep_all(
        &self,
        batch: &mut Vec<Session>,
        timers: bool,
        between: &mut dyn FnMut() -> bool,
    ) -> usize {
        let mut total = 0;
        'shards: for shard in &*self.shards {
            loop {
                let swept = {
                    let guard = crossbeam_epoch::pin();
                    shard.sweep(&self.clock, SWEEP_BATCH_MAX, batch, &self.sessions, &guard)
                };
                total += batch.len();
                if let Some(log) = shard.log() {
                    let freed: usize = batch.iter().map(|s| put_len(s.metadata().len())).sum();
                    log.account(-i64::try_from(freed).unwrap_or(i64::MAX));
                }
                // Listener calls and frees happen here, outside the lock.
                for session in batch.drain(..) {
                    self.notify(&session, RemovalCause::Expired);
                    if self.config.listener.is_some() {
                        between();
                    }
                }
                if !between() {
                    break 'shards;
                }
                if swept == Swept::All {
                    break;
                }
            }
            if timers && !self.fire_timers(shard, between) {
                break;
            }
        }
        self.sweeps_total.fetch_add(1, Ordering::Relaxed);
        self.expired_last_sweep.store(total as u64, Ordering::Relaxed);
        total
    }

    /// Fires the shard's session timers due when it begins, calling the
    /// timer listener outside the lock, batch by batch. Only those: a
    /// listener that re-arms its timers for sooner than it takes to run a
    /// batch would otherwise keep the pass here for good, and the other
    /// shards unswept. What it re-arms fires in the next pass. False if
    /// `between` ended the pass (see [`Core::sweep_all`]).
    fn fire_timers(&self, shard: &Shard, between: &mut dyn FnMut() -> bool) -> bool {
        let mut fired = Vec::new();
        let until_ms = self.clock.now_ms();
        loop {
            let swept = {
                let guard = crossbeam_epoch::pin();
                shard.fire_timers(&self.clock, until_ms, TIMER_BATCH_MAX, &mut fired, &guard)
            };
            if let Some(listener) = &self.config.timer_listener {
                for (id, token, created_ms) in fired.drain(..) {
                    // Its session may have ended since the shard took the
                    // batch (a callback before it, another thread): its
                    // timer died with it, and a session inserted under the
                    // id since is another one.
                    if !self.is_live_as_created(&id, created_ms) {
                        continue;
                    }
                    if catch_unwind(AssertUnwindSafe(|| listener(&id, token))).is_err() {
                        self.listener_panics.fetch_add(1, Ordering::Relaxed);
                    }
                    between();
                }
            }
            fired.clear();
            if !between() {
                return false;
            }
            if swept == Swept::All {
                return true;
            }
        }
    }

    /// True if session `id` is live and is the one created at
    /// `created_ms`. A timer's session was created before the timer came
    /// due, and one inserted under the id after the sweep took the timer
    /// is created later still (the engine's clock never steps back).
    fn is_live_as_created(&self, id: &SessionId, created_ms: u64) -> bool {
        let (hash, shard) = self.route(id);
        let guard = crossbeam_epoch::pin();
        shard
            .read(hash, id, self.clock.now_ms(), false, &guard, |block, _| {
                block.created_ms == created_ms
            })
            .unwrap_or(false)
    }

    // ---- Per-session state ---------------------------------------------------

    /// Subscribes the live session to `topic`, logged as `SUBSCRIBE`.
    pub(crate) fn subscribe(&self, id: &SessionId, topic: &str) -> Result<(bool, Option<Pending>)> {
        self.change_topic::<true>(id, topic)
    }

    /// Unsubscribes the live session from `topic`, logged as `UNSUBSCRIBE`.
    pub(crate) fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<(bool, Option<Pending>)> {
        self.change_topic::<false>(id, topic)
    }

    /// Subscribes (`SUBSCRIBE`) or unsubscribes the live session; true if
    /// that changed anything.
    #[inline]
    fn change_topic<const SUBSCRIBE: bool>(
        &self,
        id: &SessionId,
        topic: &str,
    ) -> Result<(bool, Option<Pending>)> {
        check_topic(topic)?;
        let (hash, shard) = self.route(id);
        let (changed, position) = self.with_record(
            (),
            |(), buf| {
                let record = if SUBSCRIBE {
                    Record::Subscribe { id: *id, topic }
                } else {
                    Record::Unsubscribe { id: *id, topic }
                };
                record.encode(self.salt(hash), buf);
            },
            |(), record| {
                shard.with_state(
                    hash,
                    id,
                    &self.clock,
                    Some(EntryLine::Topics),
                    |states, owner, now_ms| {
                        let append = |live| shard.append(record, live, now_ms);
                        if SUBSCRIBE {
                            states.subscribe(owner, topic, append)
                        } else {
                            states.unsubscribe(owner, topic, append)
                        }
                    },
                )
            },
        )?;
        if changed {
            return Ok((true, self.pending(hash, position)));
        }
        // Found already so: the record that made it so may still be on its
        // way to disk (another caller's, not synced yet, or whose sync
        // failed). Under `Always` this call answers once the log is
        // durable up to everything appended by now, which covers it.
        Ok((false, self.found(id)))
    }

    /// Under `Always`: where the log of `id`'s shard has been appended to
    /// by now. A write call that answers from what it found in memory
    /// (`AlreadyExists`, `NotFound`, a change already made, kept or
    /// declined) waits for it: what it found may be another caller's
    /// change whose record is not durable yet (or whose sync failed), and
    /// the answer would vouch for it. `None` otherwise.
    #[cold]
    #[inline(never)]
    pub(crate) fn found(&self, id: &SessionId) -> Option<Pending> {
        if self.logs.is_empty() {
            return None;
        }
        let hash = hash_id(&self.hasher, id);
        self.pending(hash, self.appended_so_far(hash))
    }

    /// Where the shard's log has been appended to by now, under `Always`
    /// (`None` otherwise, or without a log: nothing waits for it there).
    #[cold]
    #[inline(never)]
    pub(crate) fn appended_so_far(&self, hash: u64) -> LogPosition {
        let log = self.logs.get(route_shard(hash, self.shard_mask))?;
        (log.durability() == Durability::Always).then(|| log.appended())
    }

    /// The live session's topics.
    pub(crate) fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        let (hash, shard) = self.route(id);
        shard.with_state(
            hash,
            id,
            &self.clock,
            Some(EntryLine::Topics),
            |states, owner, _| Ok(states.topics(owner)),
        )
    }

    /// A page of the live subscribers of `topic`, from the index; ids whose
    /// session expired but is not yet swept are left out.
    pub(crate) fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        check_topic(topic)?;
        if limit == 0 || limit > crate::limits::LIST_PAGE_MAX {
            return Err(Error::InvalidPageSize {
                limit,
                max: crate::limits::LIST_PAGE_MAX,
            });
        }
        let mut ids = Vec::with_capacity(limit.min(LIST_LOCK_BATCH));
        let next = per_session::page(&*self.shards, topic, cursor.position(), limit, &mut ids);
        let now_ms = self.clock.now_ms();
        let guard = crossbeam_epoch::pin();
        ids.retain(|id| {
            let (hash, shard) = self.route(id);
            shard.read(hash, id, now_ms, false, &guard, |_, _| ()).is_some()
        });
        Ok(TopicPage {
            ids,
            next: next.map(TopicCursor::new),
        })
    }

    /// Checks and charges the live session's token bucket (not logged: a
    /// restart refills it).
    pub(crate) fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        check_bucket(bucket, cost)?;
        let (hash, shard) = self.route(id);
        shard.with_state(
            hash,
            id,
            &self.clock,
            // Not prefetched: the path is short enough for the CPU to load
            // the entry right after the lookup on its own; a prefetch made
            // rate limits slower, and with the bucket on the topics' line
            // no faster (results/state.md).
            None,
            |states, owner, now_ms| states.rate_limit(owner, bucket, cost, now_ms),
        )
    }

    /// Arms (or re-arms) the live session's timer `token`, `after_ms` from now.
    pub(crate) fn arm_timer(&self, id: &SessionId, token: u64, after_ms: u64) -> Result<TimerHandle> {
        let (hash, shard) = self.route(id);
        let armed = shard.with_state(
            hash,
            id,
            &self.clock,
            Some(EntryLine::Arm),
            |states, owner, now_ms| {
                // At least the next tick: the wheel fires ticks after the last
                // one it processed, which may be `now_ms` itself.
                states.arm(owner, token, now_ms.saturating_add(after_ms.max(1)))
            },
        )?;
        let index = u32::try_from(route_shard(hash, self.shard_mask)).expect("shard counts fit u32");
        Ok(TimerHandle::new(self.timer_mark, index, armed))
    }

    /// Cancels the live session's timer `token`; false if it had none.
    pub(crate) fn cancel_timer(&self, id: &SessionId, token: u64) -> Result<bool> {
        let (hash, shard) = self.route(id);
        shard.with_state(
            hash,
            id,
            &self.clock,
            Some(EntryLine::Timers),
            |states, owner, _| Ok(states.cancel(owner, token)),
        )
    }

    /// Cancels the timer `handle` names, if it is still armed.
    pub(crate) fn cancel_timer_handle(&self, handle: TimerHandle) -> bool {
        let (mark, shard, slot, generation) = handle.parts();
        if mark != self.timer_mark {
            return false;
        }
        self.shards
            .get(shard as usize)
            .is_some_and(|shard| shard.with_states(|states| states.cancel_slot(slot, generation)))
    }

    /// Timers armed and sessions holding state, engine-wide.
    pub(crate) fn state_counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(t, s), shard| {
            let (dt, ds) = shard.state_counts();
            (t + dt, s + ds)
        })
    }

    pub(crate) fn compact(&self, shard: usize, step: CompactionStep) -> Result<()> {
        self.compact_with(shard, step, |_| ())
    }

    /// [`Core::compact`], running `listed(n)` once the log is sealed and
    /// `n` batches of the live sessions are listed: `listed(0)` before the
    /// listing starts (tests: writes in those windows).
    pub(crate) fn compact_with(
        &self,
        shard: usize,
        step: CompactionStep,
        listed: impl FnMut(usize),
    ) -> Result<()> {
        let Some(log) = self.logs.get(shard) else {
            return Ok(());
        };
        let _one_at_a_time = self.compaction.lock();
        let now_ms = self.clock.now_ms();
        let _end_listing = EndListing(&self.shards[shard], now_ms);
        let mut position: Option<ListPosition> = None;
        let mut batches = 0;
        let mut restarts = 0;
        let gave_up = Cell::new(false);
        // Called from the seal's closure and the listing's.
        let listed = RefCell::new(listed);
        let this = &self.shards[shard];
        let compacted = persist::compact(
            log,
            now_ms,
            step,
            |seal| {
                let sealed = this.seal_for_compaction(seal)?;
                (listed.borrow_mut())(0);
                Ok(sealed)
            },
            |batch| {
                let mut sessions = Vec::with_capacity(LIST_LOCK_BATCH);
                let resume = self.list_batch(shard, position, LIST_LOCK_BATCH, &mut sessions);
                // A batch that resumes in a table of another size than it
                // started from listed the shard again from its start (the
                // table grew since the last batch; a rebuild at the same
                // size resumes where it stood): past the bound, the load
                // is winning and the base would only grow.
                if let (Some(from), Some(to)) = (position, resume) {
                    let restarted = from.generation != to.generation
                        && (from.slots_log2 != to.slots_log2 || from.back == BACK_FROM_START);
                    if restarted {
                        restarts += 1;
                        if restarts > COMPACTION_LIST_RESTARTS_MAX {
                            gave_up.set(true);
                            return false;
                        }
                    }
                }
                // Topics read after the sessions: a change in between is also
                // in the segment after the seal, which replays over the base.
                this.topics_of(sessions, batch);
                if resume.is_none() {
                    // The sessions rotated behind the listing's back (the
                    // others twice in the base: harmless, since the log
                    // holding their `ROTATE` records is synced before the
                    // base replaces it).
                    this.topics_of(this.end_compaction_listing(self.clock.now_ms()), batch);
                }
                position = resume;
                batches += 1;
                if resume.is_some() {
                    (listed.borrow_mut())(batches);
                }
                resume.is_some()
            },
            || {
                // Failed before the base replaces anything (its `.tmp` is
                // removed): retried after the compactor's backoff.
                if gave_up.get() {
                    return Err(Error::Io {
                        context: format!("compacting shard {shard}"),
                        source: std::io::Error::other(format!(
                            "its table grew {} times while its sessions were listed \
                             (each growth starts the listing again): given up, retried later",
                            COMPACTION_LIST_RESTARTS_MAX + 1
                        )),
                    });
                }
                self.commits[shard].flush_waiting()
            },
        );
        // A compaction that stopped early or failed keeps nothing
        // (`_end_listing`).
        compacted
    }

    /// Writes the data directory's time mark: engine time reached now (see
    /// `persist/time_mark.rs`). Nothing without persistence, or when the
    /// time has not moved since the last mark.
    pub(crate) fn mark_time(&self) -> Result<()> {
        match &self.persistence {
            Some(p) => p.time_mark.mark(self.clock.now_ms()),
            None => Ok(()),
        }
    }

    /// The chores of each shard's log: keeping pages ahead of the writer
    /// faulted in, preparing the next segment, appending the readers'
    /// queued touches; then the sync round `flush` asks for.
    pub(crate) fn maintain_logs(&self, flush: LogFlush) -> Result<()> {
        let now_ms = self.clock.now_ms();
        for log in &self.logs {
            log.maintain(now_ms);
        }
        let commits = self.commits.iter().map(|c| &**c);
        match flush {
            LogFlush::No => Ok(()),
            LogFlush::UnlessRunning => flush_all(commits),
            LogFlush::Complete => flush_all_waiting(commits),
        }
    }

    /// The shard index of a hash.
    pub(crate) fn shard_index(&self, hash: u64) -> usize {
        route_shard(hash, self.shard_mask)
    }

    /// Counters and sizes, shard by shard.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats {
            sessions_max: self.config.sessions_max,
            listener_panics: self.listener_panics.load(Ordering::Relaxed),
            compaction_errors: self.compaction_errors.load(Ordering::Relaxed),
            background_panics: self.background_panics.load(Ordering::Relaxed),
            sweeps_total: self.sweeps_total.load(Ordering::Relaxed),
            expired_last_sweep: self.expired_last_sweep.load(Ordering::Relaxed),
            ..Stats::default()
        };
        let mut created_ms_sum = 0u128;
        let mut slots = 0u64;
        for shard in &*self.shards {
            let c = shard.counters();
            stats.sessions_per_shard.push(c.sessions);
            stats.wheel_entries += c.scheduled;
            stats.rehashes_total += c.rebuilds;
            if let Some(log) = shard.log() {
                let (log_bytes, live_bytes) = log.sizes();
                stats.log_bytes += log_bytes;
                stats.log_live_bytes += live_bytes;
                stats.touches_dropped += log.touches_dropped();
            }
            stats.created_total += c.created_total;
            stats.deleted_total += c.deleted_total;
            stats.expired_total += c.expired_total;
            stats.metadata_bytes += c.metadata_bytes;
            created_ms_sum += c.created_ms_sum;
            slots += c.slots as u64;
        }
        stats.sessions = stats.sessions_per_shard.iter().sum();
        stats.average_age_ms = average_age_ms(self.clock.now_ms(), created_ms_sum, stats.sessions);
        // A table slot is a tagged pointer; a wheel link, two u32s.
        let slot_bytes = (std::mem::size_of::<usize>() + 2 * std::mem::size_of::<u32>()) as u64;
        stats.memory_bytes =
            stats.sessions as u64 * HEADER_LEN as u64 + stats.metadata_bytes + slots * slot_bytes;
        // Read before `log_syncs`, which counts each of them first: a
        // reading never shows more syncs by the file system than syncs.
        stats.log_syncs_by_file_system = self.commits.iter().map(|c| c.file_system_syncs()).sum();
        stats.log_syncs = self.commits.iter().map(|c| c.syncs()).sum();
        stats
    }

    /// Checks every shard's invariants (tests).
    pub(crate) fn check_invariants(&self) {
        let guard = crossbeam_epoch::pin();
        for shard in &*self.shards {
            shard.check_invariants(&guard);
        }
    }
}

/// Mean age at `now_ms` of `sessions` sessions whose creation times sum to
/// `created_ms_sum`, rounded down (0 without sessions; a session created
/// after `now_ms`, by a clock set back, counts as age 0 through the
/// saturation).
fn average_age_ms(now_ms: u64, created_ms_sum: u128, sessions: usize) -> u64 {
    if sessions == 0 {
        return 0;
    }
    let total_ms = (u128::from(now_ms) * sessions as u128).saturating_sub(created_ms_sum);
    u64::try_from(total_ms / sessions as u128).unwrap_or(u64::MAX)
}

/// The record's timeout for a stored one.
fn stored_to_record(timeout_ms: u32) -> u64 {
    stored_timeout_ms(timeout_ms).unwrap_or(TIMEOUT_NEVER_STORED)
}

fn call_listener(listener: &Listener, session: &Session, cause: RemovalCause, panics: &AtomicU64) {
    if catch_unwind(AssertUnwindSafe(|| listener(session, cause))).is_err() {
        panics.fetch_add(1, Ordering::Relaxed);
    }
}

impl TopicParts for [CachePadded<Shard>] {
    fn parts(&self) -> usize {
        self.len()
    }

    fn with_topics<R>(&self, part: usize, f: impl FnOnce(&mut Topics, IdOf<'_>) -> R) -> R {
        self[part].with_states(|states| states.with_topics_index(f))
    }
}
