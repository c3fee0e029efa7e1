//! The public API: `Engine`, a thin layer over the core (`core.rs`) and
//! the background threads (`background.rs`).

use std::sync::Arc;

use crate::background::Background;
use crate::clock::Clock;
use crate::config::{Config, Durability};
use crate::core::{Changed, Core, Kind, LogFlush, Placed, Step};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{LIST_LOCK_BATCH, LIST_PAGE_MAX};
use crate::per_session::TimerHandle;
use crate::persist::{CompactionStep, RecoveryReport};
use crate::session::{Cursor, Op, Page, Session, SessionRef, Stats, Timeout, Updated};
use crate::settle::{Pending, Settle};
use crate::shard::ListPosition;
use crate::state::{Bucket, RateDecision, TopicCursor, TopicPage};

/// A sharded, in-memory session store with inactivity expiry.
///
/// `Engine` is a handle: `Clone` is two reference-count increments, and
/// every clone works on the same sessions (hand one to each task or
/// request handler, as with `Arc`). Reads (`get`, `peek`, `touch`,
/// `contains`, `list`) take no lock at all; a write takes its shard's
/// writer lock for one change and does no I/O under it beyond its append
/// to the mapped log (except when it fills a segment before the next one
/// was prepared, and creates that one itself). When the
/// last handle drops (or at [`Engine::close`]) the background threads stop
/// and, with persistence, the logs are flushed and the data directory's
/// lock is let go. A listener that calls back into the engine holds a
/// [`WeakEngine`] ([`Engine::downgrade`]), not an `Engine`: a handle the
/// engine's own listener holds is never the last to drop.
///
/// With `Durability::Always`, every write call also answers
/// [`Error::OutcomeUnknown`] when the log cannot be made durable: for its
/// own change, or, for an answer it found in memory (`NotFound`,
/// `AlreadyExists`, `try_update`'s `Kept` or refusal, a subscription
/// already made), for what is appended by then (another caller's change
/// that answer depends on may not be durable); after a failed sync a shard
/// refuses writes ([`Error::WritesRefused`]). The `# Errors` sections below
/// leave these two out.
#[derive(Clone)]
pub struct Engine {
    core: Arc<Core>,
    owner: Arc<Owner>,
}

/// A handle that does not keep the engine open ([`Engine::downgrade`]): for
/// a listener (or anything the engine itself holds) that calls back into
/// it. [`WeakEngine::upgrade`] gives an `Engine` while another handle
/// exists.
#[derive(Clone)]
pub struct WeakEngine {
    core: std::sync::Weak<Core>,
    owner: std::sync::Weak<Owner>,
}

impl WeakEngine {
    /// An `Engine` handle, or `None` once the last one has dropped.
    #[must_use]
    pub fn upgrade(&self) -> Option<Engine> {
        Some(Engine {
            owner: self.owner.upgrade()?,
            core: self.core.upgrade()?,
        })
    }
}

impl std::fmt::Debug for WeakEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakEngine")
            .field("open", &(self.owner.strong_count() > 0))
            .finish_non_exhaustive()
    }
}

/// What the last handle's drop shuts down: the background threads, then a
/// final flush of the logs.
struct Owner {
    core: Arc<Core>,
    background: parking_lot::Mutex<Option<Background>>,
    /// A thread `close` could not join, being that thread (a listener on
    /// the sweeper's closed the engine): the last handle's drop joins it,
    /// as it joins the others, so that nothing of the engine (its
    /// directory's lock) outlives the drop.
    unjoined: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Owner {
    /// `Engine::close`: the sweeper and the compactor stop; the flusher
    /// threads stay for the other handles' async `Always` writers (they
    /// cannot sync for themselves) until the last handle drops.
    ///
    /// The threads are joined after the lock on `background` is released:
    /// a listener on the sweeper thread may itself be closing a handle
    /// (and waiting for that lock) while this thread waits for it.
    fn close(&self) -> Result<()> {
        let chores = self.background.lock().as_mut().map(Background::take_chores);
        if let Some(chores) = chores {
            let own = chores.join();
            self.unjoined.lock().extend(own);
        }
        self.final_flush()
    }

    /// Flushes the logs, waiting for a sync under way (its failure is
    /// this flush's), then writes the time mark: the time this run reached
    /// (a failed mark loses a floor, not a session: not this flush's error).
    fn final_flush(&self) -> Result<()> {
        self.core
            .maintain_logs(if self.core.config.durability == Durability::Never {
                LogFlush::No
            } else {
                LogFlush::Complete
            })?;
        let _ = self.core.mark_time();
        Ok(())
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let background = self.background.lock().take();
        if let Some(background) = background {
            background.stop();
        }
        let unjoined = std::mem::take(&mut *self.unjoined.lock());
        drop(crate::background::join(unjoined));
        let _ = self.final_flush();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.core.shards.len())
            .field("sessions", &self.core.len())
            .field("data_dir", &self.core.config.data_dir)
            .field("durability", &self.core.config.durability)
            .field("sync_scope", &self.core.config.sync_scope)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A [`WeakEngine`] for this engine: it does not keep the engine open.
    #[must_use]
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            core: Arc::downgrade(&self.core),
            owner: Arc::downgrade(&self.owner),
        }
    }

    /// Opens an engine.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting that is out of range; with
    /// a data directory, the errors of recovery ([`Error::Corrupt`],
    /// [`Error::Io`], [`Error::DirectoryLocked`]).
    pub fn open(config: Config) -> Result<Self> {
        let core = Arc::new(Core::open(config)?);
        let background = Background::start(&core)?;
        let owner = Arc::new(Owner {
            core: Arc::clone(&core),
            background: parking_lot::Mutex::new(Some(background)),
            unjoined: parking_lot::Mutex::new(Vec::new()),
        });
        let engine = Self { core, owner };
        // Last, once nothing else can fail: a layout this open rewrote
        // takes over the directory (`persist::LayoutSwitch`). On an error
        // the engine drops, and the retried open finds the old layout.
        // (Its threads started before: a switch that fails, on a disk
        // error, may follow a sweep that told the listener of sessions
        // expired meanwhile, as a close right after the open would.)
        engine.core.switch_layout()?;
        Ok(engine)
    }

    /// What recovery found when the engine opened its data directory
    /// (`None` without persistence).
    #[must_use]
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.core.recovery.as_ref()
    }

    /// Stops the sweeper and the compactor, waits for them (a sweep pass
    /// under way ends after its batch, at most `limits::SWEEP_BATCH_MAX`
    /// removals and their listener calls; the expired sessions it leaves
    /// are removed by a later `cleanup_expired` or, with persistence, by
    /// the next open) and, with
    /// persistence, flushes the logs, waiting for a sync under way (the
    /// last handle's drop does the same, ignoring a flush error). Other
    /// clones of this handle keep working on the sessions in memory,
    /// without the sweeper; in `Always` mode their async writes are still
    /// synced (the flusher threads stop with the last handle), and their
    /// writes are flushed when the last of them drops: in `Interval` mode
    /// no longer every interval (the sweeper ran that flush), so a machine
    /// crash then loses what they wrote since `close`. A removal listener
    /// may call it (on the sweeper thread, which it then does not wait for),
    /// also while another thread is closing; of two closes at once, the
    /// one that stops the threads waits for them, the other flushes and
    /// returns meanwhile. The last handle's drop (a `close` of the last
    /// handle too) waits for every thread but its own, the sweeper whose
    /// listener closed the engine included: a listener must not wait for
    /// the thread dropping the last handle.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::WritesRefused`] if the final flush fails,
    /// or a sync under way when it started.
    pub fn close(self) -> Result<()> {
        self.owner.close()
    }

    /// The configuration the engine was opened with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Creates a session with a fresh random id.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`],
    /// [`Error::CapacityExceeded`], [`Error::Entropy`]; nothing is stored.
    pub fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        let (id, pending) = self.create_pending(metadata, timeout)?;
        self.core.settle(pending)?;
        Ok(id)
    }

    /// `create` without waiting for durability (the caller settles).
    pub(crate) fn create_pending(
        &self,
        metadata: &[u8],
        timeout: Timeout,
    ) -> Result<(SessionId, Option<Pending>)> {
        let timeout_ms = self.core.check(metadata.len(), timeout)?;
        let mut block = crate::block::Metadata::copy_from(metadata);
        loop {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self.core.insert(id, block, timeout_ms)? {
                Placed::Done(pending) => return Ok((id, pending)),
                // 2^-128 per live session: draw again rather than fail.
                Placed::Taken(back) => block = back,
            }
        }
    }

    /// Creates a session with the configured default timeout.
    ///
    /// # Errors
    /// As [`Engine::create`].
    pub fn create_default(&self, metadata: &[u8]) -> Result<SessionId> {
        self.create(metadata, self.core.config.default_timeout)
    }

    /// Stores a session under a caller-chosen id.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a live session has the id (it is left
    /// untouched), and the errors of [`Engine::create`].
    pub fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        let ((), pending) = self
            .insert_pending(id, metadata, timeout)
            .map_err(|e| self.core.found_error(&id, e))?;
        self.core.settle(pending)
    }

    /// `insert` without waiting for durability (the caller settles).
    pub(crate) fn insert_pending(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> Result<((), Option<Pending>)> {
        let timeout_ms = self.core.check(metadata.len(), timeout)?;
        match self
            .core
            .insert(id, crate::block::Metadata::copy_from(metadata), timeout_ms)?
        {
            Placed::Done(pending) => Ok(((), pending)),
            Placed::Taken(_) => Err(Error::AlreadyExists),
        }
    }

    /// Stores the session under `id` whether or not one is there: a new
    /// session, or the live one's metadata and timeout replaced in one step
    /// (its creation time kept). Counts as activity; one log record either
    /// way (a `PUT`). What a web framework's "save" needs.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`],
    /// [`Error::CapacityExceeded`] (only when the id is new); nothing is
    /// stored.
    pub fn put(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        let ((), pending) = self.put_pending(id, metadata, timeout)?;
        self.core.settle(pending)
    }

    /// `put` without waiting for durability (the caller settles).
    pub(crate) fn put_pending(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> Result<((), Option<Pending>)> {
        let timeout_ms = self.core.check(metadata.len(), timeout)?;
        // Each turn of this loop follows another writer's success (the
        // session came or went in between): lock-free, never stuck.
        loop {
            match self.core.overwrite(&id, metadata, timeout_ms) {
                Ok((_, pending)) => return Ok(((), pending)),
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
            match self
                .core
                .insert(id, crate::block::Metadata::copy_from(metadata), timeout_ms)?
            {
                Placed::Done(pending) => return Ok(((), pending)),
                Placed::Taken(_) => {}
            }
        }
    }

    /// Moves the session to a fresh random id, atomically: afterwards the
    /// old id is gone and the new one holds the same metadata, creation
    /// time and timeout. Counts as activity; one log record (`ROTATE`). The
    /// defence against session fixation: rotate at login. The listener
    /// hears nothing (the session goes on). The new id is drawn among the
    /// ids of the session's shard (a few draws), so it carries 128 -
    /// log2(shards) bits of entropy.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id;
    /// [`Error::Entropy`].
    pub fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        let (new_id, pending) = self
            .rotate_pending(id)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(new_id)
    }

    /// `rotate` without waiting for durability (the caller settles).
    pub(crate) fn rotate_pending(&self, id: &SessionId) -> Result<(SessionId, Option<Pending>)> {
        let (new_id, _, pending) = self.core.rotate(id)?;
        Ok((new_id, pending))
    }

    /// A read-modify-write that may decide to keep, replace or delete the
    /// session, or fail: `f` sees the metadata and returns [`Op::Keep`]
    /// (counts as activity, like `get`), [`Op::Replace`] (as
    /// [`Engine::update`]), [`Op::Delete`] (removes the session only if it
    /// is still what `f` saw; the listener hears `Deleted`), or `Err(e)`:
    /// nothing changes, nothing slides, and `e` comes back as `Ok(Err(e))`.
    /// Like `update`, `f` runs again if the session changed meanwhile (keep
    /// it free of side effects) and must not call this engine. The shape of
    /// moka's `and_compute_with`, and what a per-session rate limit needs.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session; [`Error::ValueTooLarge`]
    /// if `f` returns too much (nothing is changed).
    pub fn try_update<F, E>(&self, id: &SessionId, f: F) -> Result<std::result::Result<Updated, E>>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E>,
    {
        let (outcome, pending) = self
            .try_update_pending(id, f)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(outcome)
    }

    /// `try_update` without waiting for durability (the caller settles).
    #[allow(clippy::type_complexity)] // the closure's verdict and the wait
    pub(crate) fn try_update_pending<F, E>(
        &self,
        id: &SessionId,
        mut f: F,
    ) -> Result<(std::result::Result<Updated, E>, Option<Pending>)>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E>,
    {
        let mut declined = None;
        let changed = self.core.change(id, |read| match f(read.as_bytes()) {
            Err(e) => {
                declined = Some(e);
                Ok(None)
            }
            Ok(Op::Keep) => Ok(Some(Step::Keep)),
            Ok(Op::Delete) => Ok(Some(Step::Delete)),
            Ok(Op::Replace(bytes)) => {
                self.core.check_len(bytes.len())?;
                let h = read.header();
                Ok(Some(Step::Replace(
                    read.successor(&bytes, h.timeout_ms, h.lifetime),
                    Kind::Update,
                )))
            }
        })?;
        Ok(match changed {
            Changed::Replaced(session, pending) => (Ok(Updated::Replaced(session)), pending),
            Changed::Deleted(session, pending) => (Ok(Updated::Deleted(session)), pending),
            // Answers from what is in memory (see `Core::found`).
            Changed::Kept(session) => (Ok(Updated::Kept(session)), self.core.found(id)),
            Changed::Declined => (
                Err(declined.expect("declined with its error")),
                self.core.found(id),
            ),
        })
    }

    /// Returns the session and counts as activity (slides its deadline).
    /// Takes no lock; the snapshot shares the session's bytes (one atomic
    /// reference count increment, no copy).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn get(&self, id: &SessionId) -> Result<Session> {
        #[cfg(feature = "inject-slowdown")]
        inject_slowdown::spin();
        self.core.read(id, true)
    }

    /// Returns the session without counting as activity.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn peek(&self, id: &SessionId) -> Result<Session> {
        self.core.read(id, false)
    }

    /// Counts as activity and hands the session, borrowed, to `f`: the
    /// cheapest read, which writes nothing shared (not even a reference
    /// count) unless the millisecond of the last access moves. Keep `f`
    /// short: while it runs, memory freed by writers waits for it.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn get_with<R>(&self, id: &SessionId, f: impl FnOnce(SessionRef<'_>) -> R) -> Result<R> {
        self.core.read_with(id, true, f)
    }

    /// As [`Engine::get_with`], without counting as activity.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn peek_with<R>(&self, id: &SessionId, f: impl FnOnce(SessionRef<'_>) -> R) -> Result<R> {
        self.core.read_with(id, false, f)
    }

    /// [`Engine::get`] for many sessions at once, results in order: the
    /// lookups of a batch are started together, so their cache misses
    /// overlap (a request that needs several sessions gets them at memory
    /// speed rather than one miss after another). The lookups go in groups
    /// of 16, each judged by the clock as read when its group starts.
    #[must_use]
    pub fn get_many(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        self.core.read_many(ids, true)
    }

    /// [`Engine::get_many`] lending each live session to `f`, as
    /// [`Engine::get_with`] does for one: no snapshot is made, so nothing
    /// shared is written (not even a reference count) unless a session's
    /// last access moves to a new millisecond. Results in order; `f` runs
    /// once per live session, in the order of `ids`. Keep `f` short: while
    /// the batch runs, memory freed by writers waits for it.
    pub fn get_many_with<R>(
        &self,
        ids: &[SessionId],
        mut f: impl FnMut(SessionRef<'_>) -> R,
    ) -> Vec<Result<R>> {
        self.core
            .read_many_with(ids, true, |block, last| f(SessionRef::new(block, last)))
    }

    /// Slides the session's deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn touch(&self, id: &SessionId) -> Result<()> {
        if self.core.probe(id, true) {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// True if a live session has this id (not activity).
    #[must_use]
    #[inline]
    pub fn contains(&self, id: &SessionId) -> bool {
        self.core.probe(id, false)
    }

    /// Atomically replaces the session's metadata with `f(current)`; counts as
    /// activity and returns the updated session.
    ///
    /// `f` runs with no lock held on the current bytes; the result is
    /// installed only if nobody changed the session meanwhile, otherwise `f`
    /// runs again on the newer value (so it may run more than once: keep it
    /// free of side effects). After a few lost races `f` runs under the
    /// shard's writer lock, which guarantees progress; so `f` must not call
    /// this engine (a write to the same shard would then deadlock, as with
    /// `moka`'s `compute` or a `Mutex` held across a callback). If `f`
    /// panics, the session is left as it was and the engine stays usable.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session (also when it expires
    /// or is deleted while `f` runs); [`Error::ValueTooLarge`] if `f` returns
    /// too much (nothing is changed).
    pub fn update<F>(&self, id: &SessionId, f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        let (session, pending) = self
            .update_pending(id, f)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(session)
    }

    /// `update` without waiting for durability (the caller settles).
    pub(crate) fn update_pending<F>(&self, id: &SessionId, f: F) -> Result<(Session, Option<Pending>)>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        self.core.replace(id, f)
    }

    /// Removes the session and returns it; the listener hears `Deleted`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    pub fn delete(&self, id: &SessionId) -> Result<Session> {
        let (session, pending) = self
            .delete_pending(id)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(session)
    }

    /// `delete` without waiting for durability (the caller settles).
    pub(crate) fn delete_pending(&self, id: &SessionId) -> Result<(Session, Option<Pending>)> {
        self.core.delete(id)
    }

    /// Changes the session's timeout (`Timeout::Never`: never expires). Counts
    /// as activity: the new deadline is now + timeout.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`], [`Error::NotFound`].
    pub fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        let ((), pending) = self
            .set_ttl_pending(id, timeout)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)
    }

    /// `set_ttl` without waiting for durability (the caller settles).
    pub(crate) fn set_ttl_pending(&self, id: &SessionId, timeout: Timeout) -> Result<((), Option<Pending>)> {
        let timeout_ms = timeout.to_stored()?;
        let (_, pending) = self.core.set_expiry(id, Some(timeout_ms), None)?;
        Ok(((), pending))
    }

    /// Caps the session's lifetime: it expires `lifetime` after its
    /// creation however active it is (`Timeout::Never` lifts the cap).
    /// Counts as activity. New sessions get `Config::max_lifetime`.
    ///
    /// A cap that has already passed ends the session at once (as Redis'
    /// `EXPIRE` with a time in the past): later reads find it expired.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`], [`Error::NotFound`].
    pub fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> Result<()> {
        let ((), pending) = self
            .set_lifetime_pending(id, lifetime)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)
    }

    /// `set_lifetime` without waiting for durability (the caller settles).
    pub(crate) fn set_lifetime_pending(
        &self,
        id: &SessionId,
        lifetime: Timeout,
    ) -> Result<((), Option<Pending>)> {
        let lifetime = lifetime.to_stored()?;
        let (_, pending) = self.core.set_expiry(id, None, Some(lifetime))?;
        Ok(((), pending))
    }

    /// Sessions held, including expired ones not yet reclaimed (at most about
    /// one sweep interval old). Exact when no operation is in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True if no sessions are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page of at most `limit` live sessions, starting at `cursor`
    /// ([`Cursor::START`] first, then each page's `next`). Takes no lock,
    /// but for the wait every read has for a writer changing a session
    /// whose deadline passes meanwhile.
    /// Like Redis' `SCAN`: a session present for the whole listing is
    /// returned at least once (exactly once unless its shard's table was
    /// rebuilt while the listing was in that shard: a rebuild at the same
    /// size, which churn at a steady count makes, moves sessions back
    /// toward the page's end, and the next page lists again the few it may
    /// have moved there from beyond, from the start of the run of slots the
    /// page ended in; a table that grew, at most 31 times, starts the shard
    /// again; so sessions may repeat, within a page or across pages). A
    /// page smaller than that run (tens of slots at most, but for bad luck)
    /// may not get past it while the table rebuilds between every page.
    /// One created or deleted meanwhile may or may not appear, and a
    /// rotation is both (its old id deleted, its new one created): a
    /// session rotated meanwhile may appear under either id, both or
    /// neither, as a key renamed during a `SCAN`. A cursor is good for the
    /// engine that gave it: one from before a restart (or from another
    /// engine) is an [`Error::InvalidCursor`] (its shards' tables are gone;
    /// a 1 in 65,535 chance that it passes for this run's and resumes in
    /// the tables of this run). A cursor held while its shard's table is
    /// rebuilt 65,536 times (the count of rebuilds wraps) resumes in the
    /// table of that count as if it were its own, and may skip sessions.
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
        let shard_count = self.core.shards.len();
        let (mut part, at) = ListPosition::of_cursor(cursor);
        if part >= shard_count {
            return Err(Error::InvalidCursor {
                reason: format!("partition {part} is beyond this engine's {shard_count} shards"),
            });
        }
        let mut position = Some(at);
        self.core
            .check_list_position(part, at)
            .map_err(|reason| Error::InvalidCursor { reason })?;
        let mut sessions = Vec::with_capacity(limit.min(LIST_LOCK_BATCH));
        while part < shard_count {
            // At most LIST_LOCK_BATCH sessions per epoch pin: memory freed
            // by writers waits for one batch, never for a whole page.
            let batch_end = limit.min(sessions.len() + LIST_LOCK_BATCH);
            match self.core.list_batch(part, position, batch_end, &mut sessions) {
                Some(at) if sessions.len() == limit => {
                    let next = at.cursor(part);
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

    /// Every live session, page by page (a convenience over [`Engine::list`]):
    /// a session may appear twice if its shard's table was rebuilt during
    /// the listing (see `list`); collect into a set where that matters.
    /// Its pages are the largest, so the rebuilds that churn makes between
    /// them (each takes inserts into three eighths of the table's slots or
    /// more) do not keep it from ending.
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
        self.core.sweep_all(&mut Vec::new(), true, &mut || true)
    }

    // ---- Per-session state (see `SessionState` and the README) -------------

    /// Subscribes the session to `topic`; `true` if it was not subscribed.
    /// Logged (`SUBSCRIBE`) and recovered; not activity.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidArgument`] for an empty topic;
    /// [`Error::LimitExceeded`] past `limits::TOPIC_LEN_MAX` bytes or
    /// `limits::TOPICS_PER_SESSION_MAX` topics; the log's write errors.
    /// Nothing changes on an error.
    pub fn subscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        let (added, pending) = self
            .core
            .subscribe(id, topic)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(added)
    }

    pub(crate) fn subscribe_pending(&self, id: &SessionId, topic: &str) -> Result<(bool, Option<Pending>)> {
        self.core.subscribe(id, topic)
    }

    /// Unsubscribes the session from `topic`; `true` if it was subscribed.
    ///
    /// # Errors
    /// As [`Engine::subscribe`].
    pub fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        let (removed, pending) = self
            .core
            .unsubscribe(id, topic)
            .map_err(|e| self.core.found_error(id, e))?;
        self.core.settle(pending)?;
        Ok(removed)
    }

    pub(crate) fn unsubscribe_pending(&self, id: &SessionId, topic: &str) -> Result<(bool, Option<Pending>)> {
        self.core.unsubscribe(id, topic)
    }

    /// The session's topics, in no particular order.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        self.core.topics(id)
    }

    /// A page of at most `limit` live sessions subscribed to `topic`, in
    /// id order, merged from the shards' topic indexes (no scan of the
    /// sessions). Pass `TopicCursor::START`, then each page's `next`, until
    /// `next` is `None`: a page can be short, even empty, with more after
    /// it (subscribers that expired and were not swept yet are left out).
    ///
    /// # Errors
    /// [`Error::InvalidPageSize`] for `limit` 0 or above
    /// `limits::LIST_PAGE_MAX`; the topic errors of [`Engine::subscribe`].
    pub fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        self.core.subscribers(topic, cursor, limit)
    }

    /// Checks and charges `cost` tokens of the session's token bucket in
    /// one step under its shard's lock. In memory only: a restart refills
    /// every bucket.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidArgument`] for a bucket with a
    /// zero capacity or refill, or a `cost` above its capacity.
    pub fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        self.core.rate_limit(id, bucket, cost)
    }

    /// Arms the session's timer `token` to fire `after` from now (rounded up
    /// to whole milliseconds; re-arming
    /// a token replaces its deadline and keeps its handle). When it fires,
    /// the [`Config::timer_listener`](crate::Config::timer_listener) hears
    /// the session's id and the token, from the sweeper thread (so a timer
    /// fires up to one sweep interval late; one re-armed by the listener for
    /// a time the running pass has passed fires in the next pass, so that a
    /// listener slower than its timers' delays cannot hold the sweeper on
    /// one shard). A timer dies silently with its
    /// session (expiry, delete, rotate) and is not persisted: it guards work
    /// of this process (a pending request), which a restart ends anyway.
    /// O(1): one wheel insert under the shard's lock. The returned handle
    /// cancels the timer without a second lookup of the session
    /// ([`Engine::cancel_timer_handle`]).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidArgument`] if `after` exceeds
    /// `limits::TIMEOUT_MS_MAX`; [`Error::LimitExceeded`] past
    /// `limits::TIMERS_PER_SESSION_MAX` timers.
    pub fn arm_timer(&self, id: &SessionId, token: u64, after: std::time::Duration) -> Result<TimerHandle> {
        // Rounded up, as timeouts are: a timer never fires before its delay.
        let whole_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let after_ms = whole_ms.saturating_add(u64::from(!after.subsec_nanos().is_multiple_of(1_000_000)));
        if after_ms > crate::limits::TIMEOUT_MS_MAX {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "a timer's delay of {after_ms} ms is past the longest, {} ms (limits::TIMEOUT_MS_MAX)",
                    crate::limits::TIMEOUT_MS_MAX
                ),
            });
        }
        self.core.arm_timer(id, token, after_ms)
    }

    /// Cancels the session's timer `token`; `false` if it had none (never
    /// armed, fired already, or cancelled).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn cancel_timer(&self, id: &SessionId, token: u64) -> Result<bool> {
        self.core.cancel_timer(id, token)
    }

    /// Cancels the timer `handle` names without looking its session up in
    /// the shard's table (the cheap way for a server that keeps the handle
    /// with its pending request); `false` if it is no longer armed: it fired,
    /// was cancelled, or its session was deleted, rotated or swept. (A
    /// session that expired but is not swept yet still holds its timers,
    /// which will not fire: cancelling one then answers `true`.)
    #[must_use = "false means the timer had already fired or gone"]
    pub fn cancel_timer_handle(&self, handle: TimerHandle) -> bool {
        self.core.cancel_timer_handle(handle)
    }

    /// Timers armed and sessions holding per-session state, engine-wide
    /// (takes every shard's lock: for tests and diagnostics).
    #[must_use]
    pub fn state_counts(&self) -> (usize, usize) {
        self.core.state_counts()
    }

    /// Counters and sizes.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.core.shards.len()
    }

    /// The engine's clock.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// Compacts one shard now, stopping after `step` (tests use the early
    /// steps to leave the directory as a crash at that point would).
    ///
    /// # Errors
    /// As compaction: [`Error::Io`], [`Error::WritesRefused`].
    #[doc(hidden)]
    pub fn debug_compact(&self, shard: usize, step: CompactionStep) -> Result<()> {
        self.core.compact(shard, step)
    }

    /// [`Engine::debug_compact`] to the end, running `before_listing` once the
    /// log is sealed and before the live sessions are read: what it writes
    /// is in the segments after the base, and replays over it.
    #[doc(hidden)]
    pub fn debug_compact_with(&self, shard: usize, before_listing: impl FnOnce()) -> Result<()> {
        let mut before_listing = Some(before_listing);
        self.core.compact_with(shard, CompactionStep::Done, |listed| {
            if listed == 0 {
                if let Some(f) = before_listing.take() {
                    f();
                }
            }
        })
    }

    /// [`Engine::debug_compact`] up to `step`, running `listed(n)` once `n`
    /// batches of the live sessions (`LIST_LOCK_BATCH` each) are read into
    /// the base, `listed(0)` before the first: writes in the middle of the
    /// listing.
    #[doc(hidden)]
    pub fn debug_compact_listing(
        &self,
        shard: usize,
        step: CompactionStep,
        listed: impl FnMut(usize),
    ) -> Result<()> {
        self.core.compact_with(shard, step, listed)
    }

    /// Turns a write's outcome into a future that completes once the write
    /// is durable (at once unless the durability is `Always`).
    pub(crate) fn settle_later<T>(&self, outcome: Result<(T, Option<Pending>)>) -> Settle<T> {
        self.core.settle_later(outcome)
    }

    /// `settle_later` for a write call on `id` that may answer from what it
    /// found in memory (`Core::found_error`).
    pub(crate) fn settle_found_later<T>(
        &self,
        id: &SessionId,
        outcome: Result<(T, Option<Pending>)>,
    ) -> Settle<T> {
        self.core.settle_found_later(id, outcome)
    }

    /// Makes every later log sync fail as a failing disk would (`EIO`), to
    /// test what callers see: the writes waiting on the failed sync get
    /// [`Error::OutcomeUnknown`], later writes [`Error::WritesRefused`].
    #[doc(hidden)]
    pub fn debug_fail_syncs(&self) {
        for log in &self.core.logs {
            log.fail_syncs();
        }
    }

    /// Makes every later `syncfs` of an engine opened with
    /// `SyncScope::FileSystem` fail, as a writeback error on its file
    /// system would (each log's own sync is left alone), to test that every
    /// log on it then fails its writers and refuses writes.
    #[doc(hidden)]
    pub fn debug_fail_file_system_syncs(&self) {
        for commit in &self.core.commits {
            if let Some(fs) = commit.file_system() {
                fs.fail_syncs();
            }
        }
    }

    /// Makes the next pass of a background thread panic, as a bug there
    /// would, to test that the thread survives it and says so: `compactor`
    /// picks the compactor's, else the sweeper's.
    #[doc(hidden)]
    pub fn debug_panic_in_next_pass(&self, compactor: bool) {
        let bit = if compactor {
            crate::background::PANIC_COMPACTOR
        } else {
            crate::background::PANIC_SWEEPER
        };
        self.core
            .panic_next_pass
            .fetch_or(bit, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every later log sync panic, as a bug in the sync path (or a
    /// `tracing` subscriber panicking in it) would, to test that its
    /// waiters fail as after a failed sync instead of waiting forever.
    #[doc(hidden)]
    pub fn debug_panic_syncs(&self) {
        for log in &self.core.logs {
            log.panic_syncs();
        }
    }

    /// Makes every later growth of a shard's table fail as an allocation
    /// failure would, to test that the write that needed it fails with a
    /// typed error and leaves no trace, in memory or in the log.
    #[doc(hidden)]
    pub fn debug_fail_table_growth(&self) {
        for shard in &*self.core.shards {
            shard.fail_growth();
        }
    }

    /// Runs `hook` once, right after the next record is appended to shard
    /// `shard`'s log and before that write changes the sessions in memory
    /// (the writer holds the shard's lock meanwhile), to test what runs
    /// concurrently with a write in that window (compaction). Without
    /// persistence nothing runs.
    #[doc(hidden)]
    pub fn debug_after_next_append(&self, shard: usize, hook: impl FnOnce() + Send + 'static) {
        if let Some(log) = self.core.logs.get(shard) {
            log.after_next_append(Box::new(hook));
        }
    }

    /// `insert`, running `before_lock` after the insert read the clock
    /// and before it takes its shard's writer lock, as a thread preempted
    /// there would: to test what other threads do to the id meanwhile.
    ///
    /// # Errors
    /// As [`Engine::insert`].
    #[doc(hidden)]
    pub fn debug_insert_with(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
        before_lock: impl FnOnce(),
    ) -> Result<()> {
        let timeout_ms = self.core.check(metadata.len(), timeout)?;
        let block = crate::block::Metadata::copy_from(metadata);
        match self.core.insert_with(id, block, timeout_ms, before_lock)? {
            Placed::Done(pending) => self.core.settle(pending),
            Placed::Taken(_) => Err(Error::AlreadyExists),
        }
    }

    /// Queues a `TOUCH` record of `id` at `last_access_ms` in its shard's
    /// log, as a reader whose slide crossed a touch period does: to test a
    /// reader's push that comes late, after other writes to the id.
    #[doc(hidden)]
    pub fn debug_queue_touch(&self, id: &SessionId, last_access_ms: u64) {
        let (hash, _) = self.core.route(id);
        if let Some(log) = self.core.logs.get(self.core.shard_index(hash)) {
            log.queue_touch(*id, last_access_ms);
        }
    }

    /// Runs `while_held` holding shard `shard`'s writer lock, as a writer
    /// stalled in its critical section would (tests and the stalled-writer
    /// measurement: reads of that shard must go on).
    #[doc(hidden)]
    pub fn debug_hold_writer(&self, shard: usize, while_held: impl FnOnce()) {
        self.core.shards[shard].hold_writer(while_held);
    }

    /// The shard an id lives in (tests).
    #[doc(hidden)]
    #[must_use]
    pub fn debug_shard_of(&self, id: &SessionId) -> usize {
        let (hash, _) = self.core.route(id);
        self.core.shard_index(hash)
    }

    /// Asserts the invariants tying each shard's table, wheel and counters
    /// together; panics with the broken one. For tests, O(sessions).
    #[doc(hidden)]
    pub fn debug_check_invariants(&self) {
        self.core.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    /// Expired sessions a sweep takes out of a shard stop counting against
    /// `sessions_max` before the shard's writer mutex is released: an
    /// insert at the limit that comes between the sweeper's batch and its
    /// bookkeeping (the insert's own sweep then finds nothing left) is not
    /// refused while the table has room.
    #[test]
    fn sessions_a_sweep_took_are_room_for_an_insert_at_once() {
        let clock = ManualClock::new(1_000_000);
        let engine = Engine::open(
            Config::default()
                .shards(1)
                .sessions_max(4)
                .without_sweeper()
                .clock(clock.clock()),
        )
        .unwrap();
        for i in 0..4u8 {
            engine.create(&[i], crate::Timeout::from_ms(1_000)).unwrap();
        }
        clock.advance(Duration::from_secs(2));
        // The sweeper's batch, taken under the shard's mutex; the sweeper
        // is held up right after it.
        let mut batch = Vec::new();
        let guard = crossbeam_epoch::pin();
        engine.core.shards[0].sweep(&engine.core.clock, 64, &mut batch, &engine.core.sessions, &guard);
        drop(guard);
        assert_eq!(batch.len(), 4);
        engine
            .create(b"new", crate::Timeout::from_secs(60))
            .expect("room: the table holds no session");
    }

    /// A rotation that loses every optimistic race (a writer of the same
    /// session commits between each read and commit) still ends: after
    /// `UPDATE_OPTIMISTIC_TRIES` it moves the session under the shard's
    /// writer mutex, as a contended update does (it retried forever, so a
    /// client updating its own session in a loop could starve the
    /// server's rotation). Persisted: the record it logs replays to the
    /// same move.
    #[test]
    fn a_rotation_that_loses_every_race_still_ends() {
        let dir = tempfile::tempdir().unwrap();
        let config = || {
            Config::default()
                .shards(2)
                .without_sweeper()
                .data_dir(dir.path())
                .durability(crate::Durability::Never)
        };
        let engine = Engine::open(config()).unwrap();
        let id = engine.create(b"kept", Timeout::from_secs(60)).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let rotating = engine.clone();
        let rotation = std::thread::spawn(move || {
            crate::core::FORCED_ROTATE_CONFLICTS.with(|n| n.set(usize::MAX));
            let moved = rotating.rotate(&id);
            crate::core::FORCED_ROTATE_CONFLICTS.with(|n| n.set(0));
            done.send(moved).unwrap();
        });
        let moved = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the rotation ends")
            .unwrap();
        rotation.join().unwrap();
        assert!(
            matches!(engine.get(&id), Err(Error::NotFound)),
            "the old id is gone"
        );
        assert_eq!(engine.get(&moved).unwrap().metadata(), b"kept");
        assert_eq!(engine.len(), 1);
        engine.debug_check_invariants();
        drop(engine);
        let reopened = Engine::open(config()).unwrap();
        assert!(matches!(reopened.get(&id), Err(Error::NotFound)));
        assert_eq!(reopened.get(&moved).unwrap().metadata(), b"kept");
    }

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

    /// At the end of time a session removed with topics in a persisted
    /// shard asks the next creation to come a millisecond after its own,
    /// which time no longer has: that creation is made in the last
    /// millisecond instead. It was made one past it, a time the access word
    /// reads as its retired mark (so the new session read as expired) and
    /// its `PUT` out of range (so the log it wrote failed to open).
    #[test]
    fn a_creation_after_a_removal_at_the_end_of_time_is_live_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(u64::MAX);
        let config = || {
            Config::default()
                .shards(1)
                .without_sweeper()
                .data_dir(dir.path())
                .durability(crate::Durability::Never)
                .clock(clock.clock())
        };
        let engine = Engine::open(config()).unwrap();
        for remove in [
            (|e: &Engine, id: &SessionId| e.delete(id).map(drop)) as fn(&Engine, &SessionId) -> Result<()>,
            |e, id| e.rotate(id).map(drop),
        ] {
            let old = engine.create(b"old", Timeout::from_secs(60)).unwrap();
            engine.subscribe(&old, "t").unwrap();
            remove(&engine, &old).unwrap();
            let new = engine.create(b"new", Timeout::from_secs(60)).unwrap();
            assert_eq!(engine.get(&new).unwrap().metadata(), b"new");
        }
        engine.debug_check_invariants();
        drop(engine);
        let reopened = Engine::open(config()).expect("the engine's own log opens");
        assert_eq!(reopened.len(), 3, "two new sessions and one rotated");
    }

    /// A write that waits for the shard's writer lock while the session's
    /// deadline passes judges the session by the time after the wait: judged
    /// by a time read before it, an update revived a session after readers
    /// had been told it expired. (Reads wait for nothing; their liveness
    /// check and slide are one atomic step, tested in `block.rs`.)
    #[test]
    fn a_write_waiting_for_the_lock_across_the_deadline_sees_the_session_expired() {
        type Op = fn(&Engine, &SessionId) -> Result<()>;
        let ops: [(&str, Op); 3] = [
            ("update", |e, id| e.update(id, <[u8]>::to_vec).map(drop)),
            ("set_ttl", |e, id| e.set_ttl(id, Timeout::from_secs(60))),
            ("delete", |e, id| e.delete(id).map(drop)),
        ];
        for (name, op) in ops {
            let clock = ManualClock::new(1_000_000);
            let engine =
                Engine::open(Config::default().shards(1).without_sweeper().clock(clock.clock())).unwrap();
            let id = engine.create(b"x", Timeout::from_ms(100)).unwrap();
            let (held_tx, held) = std::sync::mpsc::channel();
            let (release, release_rx) = std::sync::mpsc::channel::<()>();
            let result = std::thread::scope(|s| {
                let engine_ref = &engine;
                s.spawn(move || {
                    engine_ref.debug_hold_writer(0, || {
                        held_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                    });
                });
                held.recv().unwrap();
                let waiter = s.spawn(|| op(&engine, &id));
                // Let it reach the lock (a head start, not a synchronisation:
                // if it is late, it reads the later time either way).
                std::thread::sleep(Duration::from_millis(50));
                clock.advance_ms(100); // the deadline passes while it waits
                release.send(()).unwrap();
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
