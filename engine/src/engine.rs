//! The engine: routes each operation to its shard, enforces the limits, and
//! runs the sweeper thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ahash::RandomState;
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{LIST_PAGE_MAX, SWEEP_BATCH_MAX, UPDATE_OPTIMISTIC_TRIES};
use crate::session::{Cursor, Listener, Page, RemovalCause, Session, Stats, Timeout};
use crate::shard::{hash_id, Commit, Inserted, ListPosition, ShardState};
use crate::wheel::Poll;

/// A sharded, in-memory session store with inactivity expiry.
///
/// `Engine` is `Send + Sync`: share it by reference or in an `Arc`. Every
/// operation is synchronous, takes one shard lock for the duration of one map
/// operation, and never blocks on I/O. Dropping the engine (or
/// [`Engine::close`]) stops and joins its sweeper thread.
pub struct Engine {
    inner: Arc<Inner>,
    sweeper: Option<Sweeper>,
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
    config: Config,
}

impl Engine {
    /// Opens an engine.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting that is out of range.
    pub fn open(config: Config) -> Result<Self> {
        let shard_count = config.validate()?;
        let hasher = RandomState::new();
        let now_ms = config.clock.now_ms();
        let shards = (0..shard_count)
            .map(|_| CachePadded::new(RwLock::new(ShardState::new(hasher.clone(), now_ms))))
            .collect();
        let inner = Arc::new(Inner {
            shards,
            shard_mask: shard_count - 1,
            hasher,
            clock: config.clock.clone(),
            sessions: CachePadded::new(AtomicUsize::new(0)),
            listener_panics: AtomicU64::new(0),
            config,
        });
        let sweeper = inner
            .config
            .sweep_interval
            .map(|interval| Sweeper::start(Arc::clone(&inner), interval));
        Ok(Self { inner, sweeper })
    }

    /// Stops the sweeper thread and waits for it (dropping does the same).
    pub fn close(self) {}

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
        let timeout_ms = self.inner.check(metadata.len(), timeout)?;
        let mut metadata: Arc<[u8]> = Arc::from(metadata);
        loop {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self.inner.insert(id, metadata, timeout_ms) {
                Ok(()) => return Ok(id),
                // 2^-128 per live session: draw again rather than fail.
                Err((Error::AlreadyExists, back)) => metadata = back,
                Err((e, _)) => return Err(e),
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
        let timeout_ms = self.inner.check(metadata.len(), timeout)?;
        self.inner
            .insert(id, Arc::from(metadata), timeout_ms)
            .map_err(|(e, _)| e)
    }

    /// Returns the session and counts as activity (slides its deadline).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    #[inline]
    pub fn get(&self, id: &SessionId) -> Result<Session> {
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
        let now_ms = self.inner.clock.now_ms();
        if shard.read().touch(hash, id, now_ms) {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// True if a live session has this id (not activity).
    #[must_use]
    pub fn contains(&self, id: &SessionId) -> bool {
        let (hash, shard) = self.inner.route(id);
        let now_ms = self.inner.clock.now_ms();
        shard.read().contains(hash, id, now_ms)
    }

    /// Atomically replaces the session's metadata with `f(current)`; counts as
    /// activity and returns the updated session.
    ///
    /// `f` runs outside the shard lock on a snapshot; the result is installed
    /// only if nobody changed the session meanwhile, otherwise `f` runs again
    /// on the newer value (so it may run more than once: keep it free of side
    /// effects). After a few lost races `f` runs under the lock, which
    /// guarantees progress. If `f` panics, the session is left as it was and
    /// the engine stays usable.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session (also when it expires
    /// or is deleted while `f` runs); [`Error::ValueTooLarge`] if `f` returns
    /// too much (nothing is changed).
    pub fn update<F>(&self, id: &SessionId, mut f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8>,
    {
        let (hash, shard) = self.inner.route(id);
        for _ in 0..UPDATE_OPTIMISTIC_TRIES {
            let now_ms = self.inner.clock.now_ms();
            let (current, version) = shard
                .read()
                .read_for_update(hash, id, now_ms)
                .ok_or(Error::NotFound)?;
            let new = f(&current);
            drop(current);
            self.inner.check_len(new.len())?;
            let mut new = Some(Arc::<[u8]>::from(new));
            let now_ms = self.inner.clock.now_ms();
            let commit = shard.write().commit_update(hash, id, now_ms, version, &mut new);
            match commit {
                Commit::Done(session, _old) => return Ok(session),
                Commit::Conflict => {}
                Commit::Gone => return Err(Error::NotFound),
            }
        }
        // Contended: run `f` under the lock so this caller cannot starve.
        let now_ms = self.inner.clock.now_ms();
        let mut state = shard.write();
        let (current, version) = state.read_for_update(hash, id, now_ms).ok_or(Error::NotFound)?;
        let new = f(&current);
        self.inner.check_len(new.len())?;
        let mut new = Some(Arc::<[u8]>::from(new));
        let commit = state.commit_update(hash, id, now_ms, version, &mut new);
        drop(state);
        match commit {
            Commit::Done(session, _old) => Ok(session),
            Commit::Conflict | Commit::Gone => unreachable!("the lock was held since the read"),
        }
    }

    /// Removes the session and returns it; the listener hears `Deleted`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session with this id.
    pub fn delete(&self, id: &SessionId) -> Result<Session> {
        let (hash, shard) = self.inner.route(id);
        let now_ms = self.inner.clock.now_ms();
        let removed = shard.write().delete(hash, id, now_ms);
        let session = removed.ok_or(Error::NotFound)?;
        self.inner.sessions.fetch_sub(1, Ordering::Relaxed);
        self.inner.notify(&session, RemovalCause::Deleted);
        Ok(session)
    }

    /// Changes the session's timeout (`Timeout::Never`: never expires). Counts
    /// as activity: the new deadline is now + timeout.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`], [`Error::NotFound`].
    pub fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        let timeout_ms = timeout.to_stored()?;
        let (hash, shard) = self.inner.route(id);
        let now_ms = self.inner.clock.now_ms();
        if shard.write().set_timeout(hash, id, timeout_ms, now_ms) {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
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
        let now_ms = self.inner.clock.now_ms();
        while part < shard_count {
            let resume = self.inner.shards[part]
                .read()
                .list(position, limit, now_ms, &mut sessions);
            if let Some(at) = resume {
                let next = Cursor::new(to_u32(part), at.encode());
                return Ok(Page {
                    sessions,
                    next: Some(next),
                });
            }
            part += 1;
            position = None;
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
            ..Stats::default()
        };
        for shard in &*self.inner.shards {
            let shard = shard.read();
            let (created, deleted, expired) = shard.totals();
            stats.sessions_per_shard.push(shard.len());
            stats.wheel_entries += shard.wheel_len();
            stats.rehashes_total += shard.rehashes();
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

    /// Asserts the invariants tying each shard's index, slab and wheel
    /// together; panics with the broken one. For tests, O(sessions).
    #[doc(hidden)]
    pub fn debug_check_invariants(&self) {
        for shard in &*self.inner.shards {
            shard.read().check_invariants();
        }
    }
}

fn to_u32(part: usize) -> u32 {
    u32::try_from(part).expect("shard count is at most SHARDS_MAX")
}

impl Inner {
    #[inline]
    fn route(&self, id: &SessionId) -> (u64, &RwLock<ShardState>) {
        let hash = hash_id(&self.hasher, id);
        // The index uses the low bits (bucket) and the top 7 (tag); shards
        // take bits from the middle so that the three stay independent.
        #[allow(clippy::cast_possible_truncation)]
        let shard = (hash >> 32) as usize & self.shard_mask;
        (hash, &self.shards[shard])
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

    #[inline]
    fn read(&self, id: &SessionId, activity: bool) -> Result<Session> {
        let (hash, shard) = self.route(id);
        let now_ms = self.clock.now_ms();
        let found = shard.read().get(hash, id, now_ms, activity);
        found.ok_or(Error::NotFound)
    }

    /// Stores a session, reserving capacity first; hands the metadata back
    /// on failure so that `create` can retry with a new id.
    fn insert(&self, id: SessionId, metadata: Arc<[u8]>, timeout_ms: u32) -> Result<(), (Error, Arc<[u8]>)> {
        if let Err(e) = self.reserve() {
            return Err((e, metadata));
        }
        let (hash, shard) = self.route(&id);
        let now_ms = self.clock.now_ms();
        let inserted = shard.write().insert(hash, id, metadata, timeout_ms, now_ms);
        match inserted {
            Inserted::Stored(None) => Ok(()),
            Inserted::Stored(Some(expired)) => {
                self.sessions.fetch_sub(1, Ordering::Relaxed);
                self.notify(&expired, RemovalCause::Expired);
                Ok(())
            }
            Inserted::Exists(back) => {
                self.sessions.fetch_sub(1, Ordering::Relaxed);
                Err((Error::AlreadyExists, back))
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
                let poll = shard.write().sweep(now_ms, SWEEP_BATCH_MAX, batch);
                total += batch.len();
                self.sessions.fetch_sub(batch.len(), Ordering::Relaxed);
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
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.stop();
        }
    }
}

/// The background thread that advances the wheels.
struct Sweeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Sweeper {
    fn start(inner: Arc<Inner>, interval: Duration) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("session-sweeper".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(SWEEP_BATCH_MAX);
                loop {
                    {
                        let mut stopped = signal.0.lock();
                        if !*stopped {
                            signal.1.wait_for(&mut stopped, interval);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    inner.sweep_all(&mut batch);
                }
            })
            .expect("spawning the sweeper thread");
        Self { stop, handle }
    }

    fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        // A panic there was already reported by the thread itself.
        let _ = self.handle.join();
    }
}
