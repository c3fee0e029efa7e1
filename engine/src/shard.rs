//! One shard: a hash index over a slab of entries, and a timer wheel.
//!
//! Ground rules:
//! - The shard's `Mutex` (in `engine.rs`) protects all of `ShardState`. It
//!   is held for one map operation only: callers compute the hash, read the
//!   clock, build the metadata `Arc` and validate input *before* locking.
//! - Lock order: at most one shard lock is held at a time, anywhere.
//! - Never under the lock: I/O, user callbacks (listener, `update`'s closure
//!   on its optimistic path), freeing metadata (removed sessions are returned
//!   and dropped by the caller after unlocking), blocking, or unbounded work
//!   (sweeps and listings work in bounded batches).
//! - Allocation under the lock only where unavoidable: the index grows
//!   (amortised, rare) and the slab adds a 64 KiB chunk once per 1024 slots.

use std::sync::Arc;

use ahash::RandomState;
use hashbrown::HashTable;

use crate::id::SessionId;
use crate::session::{Session, TIMEOUT_NEVER};
use crate::slab::{Entry, Slab};
use crate::wheel::{Link, Poll, Wheel};

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
    Stored(Option<Session>),
    /// A live session has this id; the metadata is handed back.
    Exists(Arc<[u8]>),
    /// The shard cannot address another entry.
    Full(Arc<[u8]>),
}

/// Result of committing an optimistic update.
pub(crate) enum Commit {
    /// Applied: the new snapshot and the metadata it replaced (drop it after
    /// unlocking).
    Done(Session, Arc<[u8]>),
    /// The session changed since it was read; the new metadata stays with
    /// the caller (to be dropped after unlocking).
    Conflict,
    /// The session is gone or expired.
    Gone,
}

pub(crate) struct ShardState {
    index: HashTable<u32>,
    slab: Slab,
    wheel: Wheel,
    hasher: RandomState,
    created_total: u64,
    deleted_total: u64,
    expired_total: u64,
}

impl ShardState {
    pub(crate) fn new(hasher: RandomState, now_ms: u64) -> Self {
        Self {
            index: HashTable::new(),
            slab: Slab::new(),
            wheel: Wheel::new(now_ms),
            hasher,
            created_total: 0,
            deleted_total: 0,
            expired_total: 0,
        }
    }

    #[inline]
    fn find(&self, hash: u64, id: &SessionId) -> Option<u32> {
        let slab = &self.slab;
        self.index.find(hash, |&i| slab.get(i).id == *id).copied()
    }

    /// The index of the live (unexpired) session with this id.
    #[inline]
    fn find_live(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<u32> {
        self.find(hash, id)
            .filter(|&i| !self.slab.get(i).is_expired(now_ms))
    }

    pub(crate) fn insert(
        &mut self,
        hash: u64,
        id: SessionId,
        metadata: Arc<[u8]>,
        timeout_ms: u32,
        now_ms: u64,
    ) -> Inserted {
        let fresh = Entry {
            id,
            metadata: Some(metadata),
            created_ms: now_ms,
            last_access_ms: now_ms,
            timeout_ms,
            version: 0,
            link: Link::UNLINKED,
        };
        let replaced = match self.find(hash, &id) {
            Some(i) if !self.slab.get(i).is_expired(now_ms) => {
                return Inserted::Exists(fresh.metadata.expect("just set"));
            }
            Some(i) => {
                // An expired session the sweeper has not reached: it goes now.
                self.wheel.remove(&mut self.slab, i);
                self.remove_from_index(hash, i);
                self.expired_total += 1;
                Some(self.slab.remove(i))
            }
            None => None,
        };
        let i = match self.slab.insert(fresh) {
            Ok(i) => i,
            Err(fresh) => {
                debug_assert!(replaced.is_none(), "a removal frees a slot");
                return Inserted::Full(fresh.metadata.expect("just set"));
            }
        };
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hash_id(hasher, &slab.get(j).id));
        self.schedule(i);
        self.created_total += 1;
        Inserted::Stored(replaced)
    }

    fn schedule(&mut self, i: u32) {
        if let Some(deadline) = self.slab.get(i).deadline_ms() {
            self.wheel.insert(&mut self.slab, i, deadline);
        }
    }

    fn remove_from_index(&mut self, hash: u64, i: u32) {
        match self.index.find_entry(hash, |&j| j == i) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => debug_assert!(false, "entry {i} missing from the index"),
        }
    }

    /// The live session, sliding its deadline if `activity`.
    #[inline]
    pub(crate) fn get(&mut self, hash: u64, id: &SessionId, now_ms: u64, activity: bool) -> Option<Session> {
        let i = self.find_live(hash, id, now_ms)?;
        let entry = self.slab.get_mut(i);
        if activity {
            // Threads may read the clock in one order and lock in another.
            entry.last_access_ms = entry.last_access_ms.max(now_ms);
        }
        Some(entry.snapshot())
    }

    /// Slides the deadline; false if there is no live session.
    #[inline]
    pub(crate) fn touch(&mut self, hash: u64, id: &SessionId, now_ms: u64) -> bool {
        let Some(i) = self.find_live(hash, id, now_ms) else {
            return false;
        };
        let entry = self.slab.get_mut(i);
        entry.last_access_ms = entry.last_access_ms.max(now_ms);
        true
    }

    pub(crate) fn contains(&self, hash: u64, id: &SessionId, now_ms: u64) -> bool {
        self.find_live(hash, id, now_ms).is_some()
    }

    /// Removes the live session; expired ones are left to the sweeper, which
    /// reports them as expired.
    pub(crate) fn delete(&mut self, hash: u64, id: &SessionId, now_ms: u64) -> Option<Session> {
        let i = self.find_live(hash, id, now_ms)?;
        self.wheel.remove(&mut self.slab, i);
        self.remove_from_index(hash, i);
        self.deleted_total += 1;
        Some(self.slab.remove(i))
    }

    /// Sets a new timeout; counts as activity.
    pub(crate) fn set_timeout(&mut self, hash: u64, id: &SessionId, timeout_ms: u32, now_ms: u64) -> bool {
        let Some(i) = self.find_live(hash, id, now_ms) else {
            return false;
        };
        let entry = self.slab.get_mut(i);
        entry.timeout_ms = timeout_ms;
        entry.last_access_ms = entry.last_access_ms.max(now_ms);
        // The deadline may have moved earlier, where a lazy re-arm would fire
        // late: re-schedule (O(1) both ways).
        self.wheel.remove(&mut self.slab, i);
        if timeout_ms != TIMEOUT_NEVER {
            self.schedule(i);
        }
        true
    }

    /// The metadata and version an optimistic update starts from.
    pub(crate) fn read_for_update(&self, hash: u64, id: &SessionId, now_ms: u64) -> Option<(Arc<[u8]>, u32)> {
        let i = self.find_live(hash, id, now_ms)?;
        let entry = self.slab.get(i);
        Some((Arc::clone(entry.metadata.as_ref()?), entry.version))
    }

    /// Installs `metadata` if the session is still at `version`; counts as
    /// activity.
    pub(crate) fn commit_update(
        &mut self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        version: u32,
        metadata: &mut Option<Arc<[u8]>>,
    ) -> Commit {
        let Some(i) = self.find_live(hash, id, now_ms) else {
            return Commit::Gone;
        };
        let entry = self.slab.get_mut(i);
        if entry.version != version {
            return Commit::Conflict;
        }
        let new = metadata.take().expect("commit consumes the new metadata once");
        let old = entry.metadata.replace(new).expect("live entry has metadata");
        entry.version = entry.version.wrapping_add(1);
        entry.last_access_ms = entry.last_access_ms.max(now_ms);
        Commit::Done(entry.snapshot(), old)
    }

    /// Expires up to `budget` sessions due at `now_ms` into `out`.
    pub(crate) fn sweep(&mut self, now_ms: u64, budget: usize, out: &mut Vec<Session>) -> Poll {
        let Self {
            index,
            slab,
            wheel,
            hasher,
            ..
        } = self;
        let (expired, poll) = wheel.poll(slab, now_ms, budget, |slab, i| {
            let hash = hash_id(hasher, &slab.get(i).id);
            match index.find_entry(hash, |&j| j == i) {
                Ok(entry) => {
                    entry.remove();
                }
                Err(_) => debug_assert!(false, "expired entry {i} missing from the index"),
            }
            out.push(slab.remove(i));
        });
        self.expired_total += expired as u64;
        poll
    }

    /// Appends live sessions at slab positions `from..` to `out` until it
    /// holds `limit`; returns the position to resume at, `None` at the end.
    pub(crate) fn list(
        &self,
        from: usize,
        limit: usize,
        now_ms: u64,
        out: &mut Vec<Session>,
    ) -> Option<usize> {
        for (position, entry) in self.slab.iter_from(from) {
            if out.len() == limit {
                return Some(position);
            }
            if !entry.is_expired(now_ms) {
                out.push(entry.snapshot());
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn wheel_len(&self) -> usize {
        self.wheel.len()
    }

    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (self.created_total, self.deleted_total, self.expired_total)
    }

    /// Checks the invariants tying index, slab and wheel together (tests).
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.slab.len(), "index and slab disagree");
        let mut scheduled = 0;
        for &i in &self.index {
            let entry = self.slab.get(i);
            assert!(entry.metadata.is_some(), "index points at free slot {i}");
            assert_eq!(self.find(hash_id(&self.hasher, &entry.id), &entry.id), Some(i));
            assert_eq!(
                entry.link.is_linked(),
                entry.timeout_ms != TIMEOUT_NEVER,
                "slot {i} scheduling"
            );
            scheduled += usize::from(entry.link.is_linked());
        }
        assert_eq!(scheduled, self.wheel.len());
    }
}
