//! One shard: a table of session blocks that readers search without any
//! lock (`table.rs`), and one writer at a time for everything that changes
//! it.
//!
//! Ground rules:
//! - **Readers** (`read`, `touch`, `contains`, `list`) take no lock: they pin
//!   a `crossbeam-epoch` guard, load the table, find the block and decide
//!   liveness and slide the deadline in one compare-and-swap on its access
//!   word (`block.rs`). Nothing a writer, the sweeper, the compactor or a
//!   table rebuild holds can make them wait, with one exception: a read
//!   whose session's deadline passes while a writer is changing that very
//!   session waits for the writer, whose new block decides (`block.rs`). A read that slides a session
//!   into a new touch period hands a `TOUCH` to its log's lock-free queue.
//! - **The writer mutex** guards the table's slots, its rebuilds, the timer
//!   wheel and the counters. It is held for one change: the caller builds
//!   the new block and encodes the log record before locking; under the
//!   lock the writer decides (at a time read under the lock), retires the
//!   old block, appends the record (a copy into the mapped log: no system
//!   call, no allocation), publishes, and schedules. A rebuild (the table
//!   ran out of room) allocates its new table and moves every entry under
//!   the lock, amortised like any hash table's growth; readers go on in the
//!   old table meanwhile.
//! - **Never under the writer mutex**: user callbacks (the listener; an
//!   update's closure, except in the fallback after repeated lost races
//!   that `Engine::update` documents), freeing a block (removed blocks are
//!   released through the epoch, after every reader that could see them),
//!   log flushes, segment creation, or unbounded work (sweeps, listings and
//!   compaction work in bounded batches).
//! - **Lock order**: a shard's writer mutex, then its log's writer mutex.
//!   At most one shard's writer mutex is held at a time, anywhere.
//!
//! The timer wheel links sessions by slot index, with the links in an array
//! of the writer's beside the table (not in the blocks: unlinking a session
//! then touches its neighbours' 8-byte links in a dense array, not their
//! scattered blocks, which cost a create or a delete two cache misses more).
//! A rebuild moves sessions to new slots, so it relinks the wheel as it
//! moves them.
//!
//! The unsafe code here is the epoch's: loading the shard's table under a
//! guard and handing a replaced table to the epoch for destruction.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::RandomState;
use crossbeam_epoch::{Atomic, Guard, Owned};
use parking_lot::{Mutex, MutexGuard};

use crate::block::stored_timeout_ms;
use crate::block::{Access, BlockRef, Due, Metadata};
use crate::clock::{ms_after, Clock};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::per_session::{EntryLine, Owner, States};
use crate::persist::format::put_len;
use crate::persist::ShardLog;
use crate::session::{Cursor, Session};
use crate::table::{hash_id, Table, SLOTS_MIN};
use crate::wheel::{self, Link, Wheel, WheelStore, INDEX_MAX};

/// Where a logged change ends in its shard's log (`None` without
/// persistence): what an `Always` writer waits for.
pub(crate) type LogPosition = Option<u64>;

/// Result of inserting a session.
pub(crate) enum Inserted {
    /// Stored; if an expired (not yet swept) session had the id, it is returned.
    Stored(Option<Session>, LogPosition),
    /// A live session has this id; the block comes back to the caller.
    Exists(Metadata),
    /// The id is new and the engine holds `sessions_max` sessions; the
    /// block comes back to the caller (nothing changed).
    Full(Metadata),
    /// An expired session of this id (or one the sweep removed, of any id)
    /// was created no earlier than the new one (its time was read before
    /// the writer mutex): the block comes
    /// back, to be made again later than that creation time, so that
    /// recovery tells the two apart (a `PUT` of the same creation time is
    /// the same session, whose topics it keeps); or the new one's deadline
    /// passed while it waited for the mutex (made again at the time given).
    /// Nothing changed.
    Stale(Metadata, u64),
}

/// Whether `block`, made at a time read before its writer waited for the
/// shard's mutex, is past its deadline at `now_ms` (see `Shard::insert`).
#[cold]
#[inline(never)]
fn expired_while_waiting(block: &Metadata, now_ms: u64) -> bool {
    block
        .block()
        .deadline_ms()
        .is_some_and(|deadline| deadline <= now_ms)
}

/// Whether `new`, replacing `old` with the access time `logged_ms` (or the
/// old block's own, if later: `Shard::install`), is past its deadline at
/// `now_ms` (see `Shard::commit`).
#[cold]
#[inline(never)]
fn expires_by(old: BlockRef<'_>, new: &Metadata, logged_ms: u64, now_ms: u64) -> bool {
    let access = old.last_access_ms().max(logged_ms);
    new.header()
        .expiry()
        .deadline(access)
        .is_some_and(|deadline| deadline <= now_ms)
}

/// The engine's count of sessions against `Config::sessions_max`. An insert
/// claims room under the shard's writer mutex once it knows its id is new:
/// another insert of the same id, serialized by that mutex, then finds it
/// taken and claims nothing (claimed before the mutex, one put of a new
/// id at the limit could be refused for another's claim in flight).
pub(crate) struct Room<'a> {
    pub(crate) count: &'a AtomicUsize,
    pub(crate) max: usize,
}

impl Room<'_> {
    /// Counts one more session unless that would pass the limit. Never
    /// counts past it, even for a moment: a claim that added itself and
    /// then took itself back made a claim racing it see no room.
    fn claim(&self) -> bool {
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// [`Room::claim`], given back when the returned guard drops unless it
    /// is kept: a write that fails or unwinds (a panic between its append
    /// and its table store) leaves the count as it was.
    fn claim_guarded(&self) -> Option<Claim<'_, '_>> {
        self.claim().then(|| Claim { room: self })
    }
}

/// A claim on one session's room that is given back on drop, unless kept.
struct Claim<'r, 'a> {
    room: &'r Room<'a>,
}

impl Claim<'_, '_> {
    /// The session is stored: the room stays counted.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Claim<'_, '_> {
    fn drop(&mut self) {
        self.room.give_back();
    }
}

/// Result of committing a replacement block (an update or a new timeout).
pub(crate) enum Commit {
    /// Applied: the new snapshot and the log position.
    Done(Session, LogPosition),
    /// The session changed since it was read; the new block comes back, to
    /// be dropped outside the lock.
    Conflict(#[allow(dead_code)] Option<Metadata>),
    /// The session is gone or expired.
    Gone,
    /// Removed (a conditional delete): the session as it was, and the log
    /// position.
    Deleted(Session, LogPosition),
    /// Left as it was, its deadline slid (a locked change that kept it).
    Kept(Session),
    /// The change declined to do anything (nothing slid).
    Declined,
}

/// What a change built under the writer mutex does (`commit_locked`).
pub(crate) enum Locked {
    /// Install this successor; its record (empty without persistence) and
    /// the access time that record logs (`None` without persistence),
    /// which the successor takes.
    Install(Metadata, Vec<u8>, Option<u64>),
    /// Remove the session; the record of the removal.
    Delete(Vec<u8>),
    /// Keep the session and slide its deadline.
    Keep,
    /// Leave everything as it is.
    Decline,
}

/// Why a change cannot apply to the block it was decided on.
enum Stale {
    /// The session is gone or expired (the next read says so).
    Gone,
    /// It was replaced meanwhile: decide again.
    Changed,
}

/// The slot of the session if it is still the block `read` (under the
/// writer mutex), else why not.
fn still_at(table: &Table, hash: u64, read: &Metadata, now_ms: u64) -> std::result::Result<usize, Stale> {
    let at = table.find_slot(hash, &read.header().id).ok_or(Stale::Gone)?;
    let current = table.header(at);
    if current.same(read.block()) {
        Ok(at)
    } else if !current.live_for_writer(now_ms) {
        // Marked expired if it is due: whoever is told it is gone, no
        // reader with an older time may revive it afterwards.
        Err(Stale::Gone)
    } else {
        Err(Stale::Changed)
    }
}

/// What `rotate` did.
pub(crate) enum Rotated {
    /// The session moved to the new id: its snapshot there, the position.
    Done(Session, LogPosition),
    /// The session changed since it was read (read it again).
    Conflict,
    /// The session is gone or expired.
    Gone,
    /// The new id is taken (draw another).
    Taken,
}

/// Where a listing stands within one shard: the table generation it started
/// in, and the next slot; and, for a listing that resumes in a rebuilt
/// table of the same size, the table's size and how far before `slot` the
/// run of non-empty slots it stood in started (see [`Shard::list`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListPosition {
    pub(crate) generation: u32,
    pub(crate) slot: u32,
    /// Log2 of the table's slots (0: no table, the shard's start).
    pub(crate) slots_log2: u32,
    /// Slots from the start of the run `slot` ends to `slot`
    /// ([`BACK_FROM_START`]: the run reached slot 0, or was longer than
    /// that says).
    pub(crate) back: u32,
}

/// Bits of a cursor's `part` that name the shard.
const SHARD_BITS: u32 = 10;
const _: () = assert!(crate::limits::SHARDS_MAX <= 1 << SHARD_BITS);
/// Bits of a cursor's `part` that hold the table's log2 size (up to 31).
const SLOTS_LOG2_BITS: u32 = 5;
/// Bits of a cursor's `part` that hold `ListPosition::back`.
const BACK_BITS: u32 = 32 - SHARD_BITS - SLOTS_LOG2_BITS;
/// `ListPosition::back` for a run that reached slot 0 or is too long to
/// say: a resume in a rebuilt table starts the shard again.
pub(crate) const BACK_FROM_START: u32 = (1 << BACK_BITS) - 1;

impl ListPosition {
    /// The position at the start of a shard.
    pub(crate) const START: Self = Self {
        generation: 0,
        slot: 0,
        slots_log2: 0,
        back: 0,
    };

    /// The cursor of this position in shard `shard` (layout: the shard in
    /// `part`'s low bits, the table's size and `back` above; the generation
    /// and slot in `position`).
    pub(crate) fn cursor(self, shard: usize) -> Cursor {
        debug_assert!(shard < 1 << SHARD_BITS && self.slots_log2 < 1 << SLOTS_LOG2_BITS);
        let shard = u32::try_from(shard).expect("below SHARDS_MAX");
        let part = shard
            | self.slots_log2 << SHARD_BITS
            | self.back.min(BACK_FROM_START) << (SHARD_BITS + SLOTS_LOG2_BITS);
        Cursor::new(part, u64::from(self.generation) << 32 | u64::from(self.slot))
    }

    /// The shard a cursor names and its position there.
    #[allow(clippy::cast_possible_truncation)] // splitting a u64 into halves
    pub(crate) fn of_cursor(cursor: Cursor) -> (usize, Self) {
        let part = cursor.part();
        let position = cursor.position();
        let at = Self {
            generation: (position >> 32) as u32,
            slot: position as u32,
            slots_log2: part >> SHARD_BITS & ((1 << SLOTS_LOG2_BITS) - 1),
            back: part >> (SHARD_BITS + SLOTS_LOG2_BITS),
        };
        ((part & ((1 << SHARD_BITS) - 1)) as usize, at)
    }
}

/// The bits of a table generation that hold the run's mark (`Shard::run_mark`).
const RUN_MARK_BITS: u32 = 0xFFFF_0000;

/// The generation of a shard's next table: the run's mark kept, the count
/// of rebuilds in the bottom half moved on (wrapping: a cursor would have
/// to sleep through 65,536 rebuilds of its shard to match again).
fn next_generation(generation: u32) -> u32 {
    generation & RUN_MARK_BITS | (generation.wrapping_add(1) & !RUN_MARK_BITS)
}

/// Whether a sweep step left due sessions for the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Swept {
    /// Everything due is gone.
    All,
    /// The budget ran out; sweep again.
    More,
}

/// Most slots a table may have: the wheel's links are slot indices up to
/// `INDEX_MAX`. A table this size holds 3/4 x 2^31 sessions, more than
/// `SESSIONS_MAX_LIMIT` (2^30), so it never needs to grow further.
const SLOTS_MAX: usize = INDEX_MAX as usize + 1;
const _: () = assert!(SLOTS_MAX / 4 * 3 > crate::limits::SESSIONS_MAX_LIMIT);

/// `slots` unlinked timer links, or the allocation's error (the table's
/// growth fails with a typed error rather than aborting the process).
fn unlinked(slots: usize) -> std::result::Result<Vec<Link>, std::collections::TryReserveError> {
    let mut links = Vec::new();
    links.try_reserve_exact(slots)?;
    links.resize(slots, Link::UNLINKED);
    Ok(links)
}

fn to_index(slot: usize) -> u32 {
    u32::try_from(slot)
        .ok()
        .filter(|&index| index <= INDEX_MAX)
        .expect("tables never exceed SLOTS_MAX slots")
}

/// Undoes a write's `retire` if the write unwinds before it publishes or
/// removes the block (a panic between its two steps: its log append): the
/// block then stands as it was, for the writers' checks (an insert, a
/// sweep, a state call) as for readers. Disarmed once the block is done
/// with; an error path undoes the mark itself.
struct Retired<'a>(Option<BlockRef<'a>>);

impl Retired<'_> {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Retired<'_> {
    fn drop(&mut self) {
        if let Some(block) = self.0.take() {
            if std::thread::panicking() {
                block.unretire();
            }
        }
    }
}

fn live_len(block: BlockRef<'_>) -> i64 {
    i64::try_from(put_len(block.len())).unwrap_or(i64::MAX)
}

/// An owned snapshot of a block (one reference count increment).
#[inline]
pub(crate) fn snapshot(block: BlockRef<'_>, last_access_ms: u64) -> Session {
    Session::stored(
        block.id,
        block.share(),
        block.created_ms,
        last_access_ms,
        block.timeout_ms,
        block.lifetime,
    )
}

/// The wheel addresses sessions by slot index in the current table; their
/// links live in the writer's array of the same size.
struct Slots<'a> {
    table: &'a Table,
    links: &'a mut [Link],
}

impl WheelStore for Slots<'_> {
    #[inline]
    fn link(&self, index: u32) -> Link {
        self.links[index as usize]
    }

    #[inline]
    fn set_link(&mut self, index: u32, link: Link) {
        self.links[index as usize] = link;
    }

    #[inline]
    fn deadline(&self, index: u32) -> Option<u64> {
        self.table.header(index as usize).deadline_ms()
    }

    /// Decided on the access word, so a reader sliding the deadline at the
    /// same moment either moves it first (re-armed) or finds it expired.
    #[inline]
    fn due(&mut self, index: u32, now: u64) -> wheel::Due {
        match self.table.header(index as usize).expire_if_due(now) {
            Due::Expired => wheel::Due::Fire,
            Due::At(deadline) => wheel::Due::At(deadline),
            Due::Never => wheel::Due::Never,
        }
    }
}

/// What the writer mutex guards beside the table's slots.
struct Writer {
    wheel: Wheel,
    /// Each slot's place in the wheel (as many as the table has slots).
    links: Vec<Link>,
    /// The slots a sweep batch takes out, kept between batches so that a
    /// sweep allocates nothing under the mutex once it has swept a batch.
    swept: Vec<u32>,
    tombstones: usize,
    created_total: u64,
    deleted_total: u64,
    expired_total: u64,
    rebuilds: u64,
    /// Sum of the held sessions' creation times (ms since the epoch): their
    /// mean age in O(1), with `Shard::len`. A u128 cannot overflow: 2^30
    /// sessions (`SESSIONS_MAX_LIMIT`) x 2^64 ms.
    created_ms_sum: u128,
    /// Metadata bytes of the held sessions.
    metadata_bytes: u64,
    /// The earliest creation time an insert may have (0 before any
    /// removal): an insert of any id made earlier is `Stale`, as over an
    /// expired session still in the table, and made again at this time (or
    /// the clock's, if later). It is one past the latest creation time of a
    /// session the sweep removed (no record says so), or deleted or rotated
    /// away with topics in a log (a repair may skip the damaged record that
    /// says so: `Shard::removed_floor_ms`), so that recovery never reads a
    /// new session's `PUT` as a replacement of one removed; and the latest
    /// access time of a session
    /// removed (deleted, rotated away, swept), so that a `TOUCH` a reader
    /// of the removed session queued late, after the new session's `PUT`,
    /// cannot raise the new one's access time in the log above the one it
    /// has in memory (recovery takes the later of the two: an insert that
    /// read the clock before the reader slid the old session would have
    /// come back later than memory had it expire).
    created_floor_ms: u64,
    /// Per-session state (topics, buckets, timers) of the sessions that
    /// hold any: leaves with the session (`release`).
    states: States,
    /// What a compaction listing this shard must know of the writes made
    /// since it sealed the log (`start_compaction_listing`).
    listing: Option<Listing>,
}

/// The writes since a compaction sealed the log that its base must account
/// for: the log's records after the seal replay over the base, which holds
/// each session as the listing found it, later than the seal. Replaying a
/// record over a later state of its session gives that state again, except
/// where the session the record was about is not the one the base holds.
struct Listing {
    /// The ids `rotate` moved sessions to. A rotate puts the session in a
    /// slot of the new id's choosing, which the listing may have passed
    /// while the old one is not reached yet: then the listing sees neither,
    /// and the `ROTATE` record would find nothing to move. The base holds
    /// these sessions too, as they are at the end of the listing.
    rotated: Vec<SessionId>,
    /// The ids a new session was inserted under since the seal. Its `PUT`
    /// is after the seal, so the base leaves it out: its records after the
    /// seal then replay onto the session they were about (a `SUBSCRIBE` of
    /// the session that held the id before, expired since, would otherwise
    /// land on the new one, which the base gives the same creation time as
    /// the new `PUT`). Not told by creation times: a session restored after
    /// the wall clock went back can have been created "later". As many as
    /// the shard's inserts while it is listed.
    born: ahash::AHashSet<SessionId>,
}

impl Listing {
    /// True if the base must leave `s` out (inserted after the seal).
    fn born_after_seal(&self, s: &Session) -> bool {
        self.born.contains(&s.id())
    }
}

/// A shard's counters and sizes, read under its writer mutex (one
/// consistent view of that shard).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    /// Sessions in the table, expired ones not yet swept included.
    pub(crate) sessions: usize,
    /// Sessions scheduled in the wheel.
    pub(crate) scheduled: usize,
    pub(crate) created_total: u64,
    pub(crate) deleted_total: u64,
    pub(crate) expired_total: u64,
    pub(crate) rebuilds: u64,
    pub(crate) created_ms_sum: u128,
    pub(crate) metadata_bytes: u64,
    /// The table's slots (and as many wheel links).
    pub(crate) slots: usize,
}

pub(crate) struct Shard {
    table: Atomic<Table>,
    writer: Mutex<Writer>,
    /// Sessions in the table, expired ones not yet swept included.
    len: AtomicUsize,
    hasher: RandomState,
    log: Option<Arc<ShardLog>>,
    /// A read logs a `TOUCH` when it slides a session into a new period of
    /// at most this fraction of its timeout (`touch_period_crossed`), in
    /// 32-bit fixed point (2^32 is the whole timeout).
    touch_fraction_q32: u64,
    /// Makes every table growth fail as an allocation failure would (a
    /// test hook: `Engine::debug_fail_table_growth`).
    fail_growth: AtomicBool,
    /// This run's mark in the top half of every table generation (the
    /// rebuilds count in the bottom half): a listing cursor from another
    /// run of the engine carries another mark (`check_list_position`).
    run_mark: u32,
}

/// `touch_persist_fraction` (in `(0, 1]`, checked by `Config`) in 32-bit
/// fixed point.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 1..=2^32
fn fraction_q32(fraction: f64) -> u64 {
    ((fraction * 4_294_967_296.0) as u64).clamp(1, 1 << 32)
}

/// Whether a slide of a session with a timeout of `timeout_ms` from
/// `before` to `after` (`before <= after`) crosses into a new touch period.
/// A period is the largest power of two of milliseconds not over
/// `fraction_q32` of the timeout (at least 1 ms), counted from the epoch:
/// between half that fraction and all of it. So the log's access time lags
/// by less than the fraction, and the check is a shift where a period of
/// exactly the fraction would take two 64-bit divisions, which a read of
/// a persisted engine paid on every slide.
#[inline]
pub(crate) fn touch_period_crossed(before: u64, after: u64, timeout_ms: u64, fraction_q32: u64) -> bool {
    // At most the timeout (the fraction is at most 2^32 / 2^32).
    #[allow(clippy::cast_possible_truncation)]
    let most = ((u128::from(timeout_ms) * u128::from(fraction_q32)) >> 32) as u64;
    let shift = most.max(1).ilog2();
    (before ^ after) >> shift != 0
}

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: nobody else can reach the shard while it drops, and the
        // current table is owned by it (replaced ones went to the epoch).
        let table = unsafe { std::mem::replace(&mut self.table, Atomic::null()).into_owned() };
        drop(table);
    }
}

impl Shard {
    /// A shard of an engine whose run is marked `run_mark` (see
    /// `Shard::run_mark`).
    pub(crate) fn new(
        hasher: RandomState,
        now_ms: u64,
        log: Option<Arc<ShardLog>>,
        touch_fraction: f64,
        run_mark: u16,
    ) -> Self {
        let run_mark = u32::from(run_mark) << 16;
        Self {
            table: Atomic::new(Table::new(SLOTS_MIN, run_mark).expect("a table of one cache line")),
            writer: Mutex::new(Writer {
                wheel: Wheel::new(now_ms),
                links: vec![Link::UNLINKED; SLOTS_MIN],
                swept: Vec::new(),
                tombstones: 0,
                created_total: 0,
                deleted_total: 0,
                expired_total: 0,
                rebuilds: 0,
                created_ms_sum: 0,
                metadata_bytes: 0,
                created_floor_ms: 0,
                states: States::new(log.clone(), now_ms, SLOTS_MIN),
                listing: None,
            }),
            len: AtomicUsize::new(0),
            hasher,
            log,
            touch_fraction_q32: fraction_q32(touch_fraction),
            fail_growth: AtomicBool::new(false),
            run_mark,
        }
    }

    /// The current table. Readers hold `guard` pinned from before this load
    /// until they are done with what they found in it.
    #[inline]
    fn table<'g>(&self, guard: &'g Guard) -> &'g Table {
        // SAFETY: the shard always holds a table, and a replaced one is
        // destroyed only through the epoch (`defer_destroy`), after every
        // guard pinned before the replacement is gone.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
    }

    /// Makes room in the empty table for `sessions` (`Config::initial_capacity`),
    /// failing with a typed error if the memory cannot be had.
    pub(crate) fn reserve(&self, sessions: usize, guard: &Guard) -> Result<()> {
        debug_assert_eq!(self.len(), 0, "room is made before any session arrives");
        let slots = Table::slots_for(sessions).min(SLOTS_MAX);
        let table = Table::new(slots, self.run_mark).map_err(|e| {
            Error::InvalidConfig(format!(
                "could not allocate a table for {sessions} sessions in a shard (Config::initial_capacity, \
                 or the sessions a data directory holds): {e}"
            ))
        })?;
        let links = unlinked(slots).map_err(|e| {
            Error::InvalidConfig(format!(
                "could not allocate the timer links for {sessions} sessions in a shard: {e}"
            ))
        })?;
        let mut w = self.writer.lock();
        w.links = links;
        w.states.reset_slots(slots);
        let old = self.table.swap(Owned::new(table), Ordering::AcqRel, guard);
        // SAFETY: `old` is unlinked from the shard, and destroyed only
        // after every guard that could have loaded it is gone.
        unsafe { guard.defer_destroy(old) };
        Ok(())
    }

    // ---- Readers: no lock --------------------------------------------------

    /// Reads the live session and hands its block and its last access (this
    /// read's, if it slid) to `f`.
    #[inline]
    pub(crate) fn read<'g, R>(
        &self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        slide: bool,
        guard: &'g Guard,
        f: impl FnOnce(BlockRef<'g>, u64) -> R,
    ) -> Option<R> {
        self.read_from(self.table(guard), hash, id, now_ms, slide, guard, f)
    }

    /// `read` that slides the block it finds only if it is `kept` (a
    /// `try_update` keep decided on it must not slide a successor another
    /// writer installed meanwhile: the closure decides again there, and
    /// may fail, which slides nothing). `kept` is slid in place, where a
    /// writer retiring it sees the slide and carries it over, or not at
    /// all if it has been retired; the successor found is then passed to
    /// `f` unslid. Not `read` with a predicate: the read path would pay
    /// for it on every `get`.
    pub(crate) fn read_sliding_only<'g, R>(
        &self,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        kept: BlockRef<'g>,
        guard: &'g Guard,
        f: impl FnOnce(BlockRef<'g>, u64) -> R,
    ) -> Option<R> {
        loop {
            let (found, last) = self.read(hash, id, now_ms, false, guard, |block, last| (block, last))?;
            if !found.same(kept) {
                return Some(f(found, last));
            }
            let mut access = kept.access(now_ms, true);
            if access == Access::Marked {
                access = kept.decide_marked(now_ms, true);
            }
            match access {
                Access::Live { before, after } => {
                    if after != before {
                        self.log_activity(kept, before, after);
                    }
                    return Some(f(kept, after));
                }
                Access::Expired => return None,
                // Retired since the look: read again, which finds (or
                // waits for) what replaced it.
                Access::Replaced | Access::Marked | Access::Pending => {}
            }
        }
    }

    /// `read`, looking first in `table`, the shard's table as loaded under
    /// `guard` (by `start_read`); a second look loads it again, and so does
    /// a miss in a table that has been replaced since (a batch's tables are
    /// loaded before its lookups, and its closure may have written: a
    /// session it inserted, and the rebuild that made room for it, are in
    /// the current table only).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_from<'g, R>(
        &self,
        table: &'g Table,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        slide: bool,
        guard: &'g Guard,
        f: impl FnOnce(BlockRef<'g>, u64) -> R,
    ) -> Option<R> {
        let mut table = table;
        loop {
            let Some(block) = table.find(hash, id) else {
                table = self.replacing_table(table, guard)?;
                continue;
            };
            let mut access = block.access(now_ms, slide);
            if access == Access::Marked {
                access = block.decide_marked(now_ms, slide);
            }
            match access {
                Access::Live { before, after } => {
                    if after != before {
                        self.log_activity(block, before, after);
                    }
                    return Some(f(block, after));
                }
                Access::Expired => return None,
                // A writer replaced or removed it: the table now holds the
                // successor, or nothing.
                Access::Replaced | Access::Marked => table = self.table(guard),
                // The successor decides, once the writer has published it:
                // wait for the writer (the one read that ever waits).
                Access::Pending => table = self.wait_for_writer(hash, id, guard),
            }
        }
    }

    /// `read_from` for a batch, whose caller's closure may have written
    /// since the batch loaded `table`: a session expired (or missing) there
    /// is looked for again in the table a rebuild has put in its place, if
    /// any, where such a write may have put a live successor. (A lone read
    /// loads the table just before it looks: a write that rebuilt it in
    /// between overlaps the read, which may then miss it.)
    #[allow(clippy::too_many_arguments)] // `read_from`'s
    pub(crate) fn read_from_in_batch<'g, R>(
        &self,
        table: &'g Table,
        hash: u64,
        id: &SessionId,
        now_ms: u64,
        slide: bool,
        guard: &'g Guard,
        mut f: impl FnMut(BlockRef<'g>, u64) -> R,
    ) -> Option<R> {
        if let Some(got) = self.read_from(table, hash, id, now_ms, slide, guard, &mut f) {
            return Some(got);
        }
        let current = self.replacing_table(table, guard)?;
        self.read_from(current, hash, id, now_ms, slide, guard, f)
    }

    /// `read_from` after a miss in `table` (and `read_from_in_batch` after
    /// an expired session there): the shard's current table if a rebuild
    /// has replaced `table` since it was loaded (out of line: a miss is
    /// rare on the read path, a replaced table rarer still).
    #[cold]
    #[inline(never)]
    fn replacing_table<'g>(&self, table: &'g Table, guard: &'g Guard) -> Option<&'g Table> {
        let current = self.table(guard);
        (!std::ptr::eq(current, table)).then_some(current)
    }

    /// `read_from`'s wait for the writer changing the session (out of
    /// line: the read path stays small enough to inline): the table to
    /// look in once it is done.
    #[cold]
    #[inline(never)]
    fn wait_for_writer<'g>(&self, hash: u64, id: &SessionId, guard: &'g Guard) -> &'g Table {
        let _w = self.writer.lock();
        let table = self.table(guard);
        // Holding the writer mutex, no write is under way: a block still
        // retired was left so by a writer that panicked before publishing;
        // it stands as it was.
        if let Some(orphan) = table.find(hash, id) {
            orphan.unretire_orphan();
        }
        table
    }

    /// `get_many`'s first step for one session: the shard's table, loaded
    /// once for the steps after, with the slot `hash` probes first on its
    /// way.
    #[inline]
    pub(crate) fn start_read<'g>(&self, hash: u64, guard: &'g Guard) -> &'g Table {
        let table = self.table(guard);
        table.prefetch(hash);
        table
    }

    /// Logs a `TOUCH` when a slide crosses into a new touch period (see
    /// `touch_period_crossed`): the first slide into a period queues its
    /// time, so the log's access time lags the real one by less than one
    /// period, and of the readers that slide within a period only the one
    /// whose swap crossed the boundary queues. Best effort: a full queue
    /// drops it (the next period logs).
    #[inline]
    fn log_activity(&self, block: BlockRef<'_>, before: u64, after: u64) {
        if let Some(log) = &self.log {
            self.log_touch(log, block, before, after);
        }
    }

    /// Out of line: inlined, it grows the in-memory engine's read path
    /// (which never calls it) by a few instructions a read.
    #[inline(never)]
    fn log_touch(&self, log: &ShardLog, block: BlockRef<'_>, before: u64, after: u64) {
        let Some(timeout) = stored_timeout_ms(block.timeout_ms) else {
            return;
        };
        if touch_period_crossed(before, after, timeout, self.touch_fraction_q32) {
            log.queue_touch(block.id, after);
        }
    }

    /// `Err` naming the slot if `position` is in this shard's current table
    /// generation but past its end: no page ends there (a forged or damaged
    /// cursor), and listing from it would leave the shard out.
    pub(crate) fn check_list_position(
        &self,
        position: ListPosition,
        guard: &Guard,
    ) -> std::result::Result<(), String> {
        let table = self.table(guard);
        // `Cursor::START` (and a page's end at a shard's start) names no
        // table; every other position names one of this run's.
        if position != ListPosition::START && position.generation & RUN_MARK_BITS != self.run_mark {
            return Err(format!(
                "it was given by another run of the engine (a cursor from before a restart, whose \
                 tables are gone, or a forged one): list again from Cursor::START (run mark {:#06x}, \
                 this run's {:#06x})",
                position.generation >> 16,
                self.run_mark >> 16
            ));
        }
        if position.generation == table.generation() && position.slot as usize >= table.slots() {
            return Err(format!(
                "slot {} is past the end of its shard's table ({} slots): a forged or damaged cursor, or one from before a restart",
                position.slot,
                table.slots()
            ));
        }
        // Every page's end names a table of 8 to 2^31 slots, a slot in it
        // and a run starting at or before that slot: a cursor naming
        // anything else would resume nowhere (or past its shard's end) if
        // its table had been rebuilt, and silently leave the shard out.
        let sized = (SLOTS_MIN.trailing_zeros()..=SLOTS_MAX.trailing_zeros()).contains(&position.slots_log2);
        if position != ListPosition::START
            && !(sized
                && u64::from(position.slot) < 1 << position.slots_log2
                && (position.back == BACK_FROM_START || position.back <= position.slot))
        {
            return Err(format!(
                "slot {} of a table of 2^{} slots, its run {} slots back, is no page's end: a forged or damaged cursor",
                position.slot, position.slots_log2, position.back
            ));
        }
        Ok(())
    }

    /// Appends live sessions from `from` on to `out` until it holds `limit`;
    /// returns where to resume, `None` at the end of the shard.
    ///
    /// A position from before a rebuild of the table at the same size (the
    /// tombstones took the room) resumes at the start of the run of
    /// non-empty slots it stood in (`ListPosition::back`): a rebuild moves
    /// each entry only back toward its first probe, within its run
    /// (`Table::move_into`), so an entry not listed yet either stays at or
    /// after the position or moves back no further than that run's start,
    /// whose other entries are listed again (sessions may repeat). A
    /// position from a table of another size (it grew) starts the shard
    /// again: tables only grow, so that happens at most 31 times.
    pub(crate) fn list(
        &self,
        from: Option<ListPosition>,
        limit: usize,
        now_ms: u64,
        out: &mut Vec<Session>,
        guard: &Guard,
    ) -> Option<ListPosition> {
        let table = self.table(guard);
        let slots_log2 = table.slots().trailing_zeros();
        let start = match from {
            Some(p) if p.generation == table.generation() => p.slot as usize,
            Some(p) if p.slots_log2 == slots_log2 && p.back != BACK_FROM_START => {
                (p.slot.saturating_sub(p.back) as usize).min(table.slots())
            }
            _ => 0,
        };
        for at in start..table.slots() {
            let Some(block) = table.slot_entry(at) else {
                continue;
            };
            if out.len() == limit {
                let run = table.run_start(at, BACK_FROM_START as usize - 1);
                return Some(ListPosition {
                    generation: table.generation(),
                    slot: to_index(at),
                    slots_log2,
                    back: if run == 0 {
                        BACK_FROM_START
                    } else {
                        to_index(at - run)
                    },
                });
            }
            let mut access = block.access(now_ms, false);
            if access == Access::Marked {
                access = block.decide_marked(now_ms, false);
            }
            match access {
                Access::Live { after, .. } => out.push(snapshot(block, after)),
                // Changed since this slot was loaded, or being changed with
                // its deadline passing meanwhile: the session as the shard
                // holds it now (its current table, which may have been
                // rebuilt since this listing loaded its own), waiting for
                // the writer if need be. Its id is listed here, or not at
                // all: it is gone, or was rotated to another id (which this
                // listing meets if its slot is still ahead).
                Access::Replaced | Access::Pending | Access::Marked => {
                    let hash = hash_id(&self.hasher, &block.id);
                    if let Some(session) = self.read(hash, &block.id, now_ms, false, guard, snapshot) {
                        out.push(session);
                    }
                }
                Access::Expired => {}
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn log(&self) -> Option<&Arc<ShardLog>> {
        self.log.as_ref()
    }

    // ---- The writer --------------------------------------------------------

    fn lock<'g>(&self, guard: &'g Guard) -> (MutexGuard<'_, Writer>, &'g Table) {
        let writer = self.writer.lock();
        // Loaded under the mutex: only a writer replaces the table.
        (writer, self.table(guard))
    }

    /// Appends a record to the shard's log, if it has one.
    #[inline]
    pub(crate) fn append(&self, record: Option<&[u8]>, live_delta: i64, now_ms: u64) -> Result<LogPosition> {
        match (&self.log, record) {
            (Some(log), Some(record)) => log.append(record, live_delta, now_ms).map(Some),
            (None, _) => Ok(None),
            (Some(_), None) => unreachable!("a persistent shard was given no record"),
        }
    }

    /// Stores `block`, whose header the caller filled (`Metadata::init`)
    /// with the id, its creation and access time and the timeout.
    pub(crate) fn insert(
        &self,
        hash: u64,
        block: Metadata,
        clock: &Clock,
        room: &Room<'_>,
        record: Option<&[u8]>,
        guard: &Guard,
    ) -> Result<Inserted> {
        let (mut w, mut table) = self.lock(guard);
        let now_ms = clock.now_ms();
        // The block's time was read before the wait for this mutex: if its
        // deadline passed meanwhile, stored it would be expired at once
        // (`Ok` to its caller, `NotFound` to the next read, `Expired` to
        // the listener). Made again, now. (Timeouts are 1 ms or more:
        // within the millisecond it read, the common case, none passed.)
        if now_ms != block.header().created_ms && expired_while_waiting(&block, now_ms) {
            return Ok(Inserted::Stale(block, now_ms - 1));
        }
        let id = block.header().id;
        let mut found = table.find_or_free(hash, &id);
        let mut live_delta = live_len(block.block());
        if let Ok(at) = found {
            let old = table.header(at);
            if matches!(old.access(now_ms, false), Access::Live { .. }) {
                return Ok(Inserted::Exists(block));
            }
            // Later than the expired session's creation, and no earlier
            // than its last access (a late `TOUCH` of it, see
            // `created_floor_ms`).
            let earliest = ms_after(old.created_ms).max(old.last_access_ms());
            if block.header().created_ms < earliest {
                return Ok(Inserted::Stale(block, earliest - 1));
            }
            live_delta -= live_len(old);
        } else if block.header().created_ms < w.created_floor_ms {
            // The id's last session may be one the sweep removed after
            // this block's time was read: made later, it cannot pass for
            // that session's replacement (whose topics it would keep).
            return Ok(Inserted::Stale(block, w.created_floor_ms - 1));
        }
        // The slot the search found fits, unless the table must grow first
        // (a tombstone reused leaves the count of used slots as it was; an
        // expired session replaced leaves a tombstone for one it removes).
        // Grown before anything is logged: a growth that fails leaves no
        // trace, as a failed append does.
        let slot_of = |w: &Writer, table: &Table, found| match found {
            Err((at, tombstone)) if tombstone || w.tombstones + self.len() < table.limit() => {
                Some((at, tombstone))
            }
            _ => None,
        };
        let mut slot = slot_of(&w, table, found);
        if slot.is_none() && w.tombstones + self.len() + 1 > table.limit() {
            table = self.rebuild(&mut w, table, guard)?;
            found = table.find_or_free(hash, &id);
            slot = slot_of(&w, table, found);
            // A rebuild of a large table takes a while: as above.
            let now_ms = clock.now_ms();
            if expired_while_waiting(&block, now_ms) {
                return Ok(Inserted::Stale(block, now_ms - 1));
            }
        }
        // An expired session of this id passes its room on; a new id claims
        // room, before anything is logged.
        let replacing = found.is_ok();
        let claim = if replacing {
            None
        } else {
            match room.claim_guarded() {
                Some(claim) => Some(claim),
                None => return Ok(Inserted::Full(block)),
            }
        };
        // Logged before anything changes: a failed append leaves no trace
        // (the claim goes back as it drops).
        let position = self.append(record, live_delta, now_ms)?;
        // An expired session the sweeper has not reached goes now.
        let replaced = found.ok().map(|at| {
            w.expired_total += 1;
            self.remove_at(&mut w, table, at, guard)
        });
        let (at, was_tombstone) = slot.unwrap_or_else(|| table.free_slot(hash));
        w.tombstones -= usize::from(was_tombstone);
        w.hold(block.block());
        table.store(at, hash, block);
        self.len.fetch_add(1, Ordering::Relaxed);
        if let Some(claim) = claim {
            claim.keep();
        }
        w.created_total += 1;
        if let Some(listing) = &mut w.listing {
            listing.born.insert(id);
        }
        w.schedule(table, at);
        Ok(Inserted::Stored(replaced, position))
    }

    /// Loads a recovered session, its header filled by the caller (recovery
    /// only: nothing is logged, no listener hears it).
    pub(crate) fn restore(&self, hash: u64, block: Metadata, guard: &Guard) -> Result<()> {
        let (mut w, mut table) = self.lock(guard);
        debug_assert!(
            table.find_slot(hash, &block.header().id).is_none(),
            "restored twice"
        );
        if w.tombstones + self.len() + 1 > table.limit() {
            table = self.rebuild(&mut w, table, guard)?;
        }
        let (at, _) = table.free_slot(hash);
        w.hold(block.block());
        table.store(at, hash, block);
        self.len.fetch_add(1, Ordering::Relaxed);
        w.schedule(table, at);
        Ok(())
    }

    /// The creation floor a deleted or rotated-away session in slot `at`
    /// sets (see `created_floor_ms`): one past its creation time if it is
    /// logged with topics, else 0. A session made again under its id in its
    /// creation's millisecond then comes a millisecond later, as after an
    /// expiry, so that no log can take its `PUT` for this session's: should
    /// the `DELETE` or `ROTATE` between them be damaged, a repair that
    /// skips it would replay the new session over the old one, which keeps
    /// the old one's topics. (Nothing else of the old one survives such a
    /// replay; and in memory, or without topics, nothing is at stake, so
    /// inserts in that millisecond are not sent a millisecond later.)
    fn removed_floor_ms(&self, w: &Writer, at: usize, block: BlockRef<'_>) -> u64 {
        let logged_with_topics =
            self.log.is_some() && !w.states.is_empty() && w.states.has_topics(Owner::new(at, block.id));
        if logged_with_topics {
            ms_after(block.created_ms)
        } else {
            0
        }
    }

    /// Unschedules and removes the session in slot `at` (already retired or
    /// expired); its reference goes to the epoch, a new one to the caller.
    fn remove_at(&self, w: &mut Writer, table: &Table, at: usize, guard: &Guard) -> Session {
        w.unschedule(table, at);
        let (block, tombstones) = table.take(at, guard);
        w.release(at, block.block());
        w.tombstones = w.tombstones.wrapping_add_signed(tombstones);
        self.len.fetch_sub(1, Ordering::Relaxed);
        snapshot(block.block(), block.header().last_access_ms())
    }

    /// Removes the live session; expired ones are left to the sweeper, which
    /// reports them as expired.
    pub(crate) fn delete(
        &self,
        hash: u64,
        id: &SessionId,
        clock: &Clock,
        record: Option<&[u8]>,
        guard: &Guard,
    ) -> Result<Option<(Session, LogPosition)>> {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        let Some(at) = table.find_slot(hash, id) else {
            return Ok(None);
        };
        self.remove_logged(&mut w, table, at, record, now_ms, guard)
    }

    /// Removes the live session in slot `at`, logging `record` first
    /// (`None` if it is no longer live).
    fn remove_logged(
        &self,
        w: &mut Writer,
        table: &Table,
        at: usize,
        record: Option<&[u8]>,
        now_ms: u64,
        guard: &Guard,
    ) -> Result<Option<(Session, LogPosition)>> {
        let block = table.header(at);
        if block.retire(now_ms).is_err() {
            return Ok(None);
        }
        let mut retired = Retired(Some(block));
        let position = match self.append(record, -live_len(block), now_ms) {
            Ok(position) => position,
            Err(e) => {
                block.unretire();
                retired.disarm();
                return Err(e);
            }
        };
        w.deleted_total += 1;
        let floor_ms = self.removed_floor_ms(w, at, block);
        let session = self.remove_at(w, table, at, guard);
        retired.disarm();
        let last_ms = block.close();
        w.created_floor_ms = w.created_floor_ms.max(last_ms).max(floor_ms);
        Ok(Some((session, position)))
    }

    /// Removes the session if it is still the block `read` (a `try_update`
    /// that chose to delete what it saw); `Conflict` if it changed.
    pub(crate) fn delete_if(
        &self,
        hash: u64,
        read: &Metadata,
        clock: &Clock,
        record: Option<&[u8]>,
        guard: &Guard,
    ) -> Result<Commit> {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        let at = match still_at(table, hash, read, now_ms) {
            Ok(at) => at,
            Err(Stale::Gone) => return Ok(Commit::Gone),
            Err(Stale::Changed) => return Ok(Commit::Conflict(None)),
        };
        Ok(
            match self.remove_logged(&mut w, table, at, record, now_ms, guard)? {
                Some((session, position)) => Commit::Deleted(session, position),
                None => Commit::Gone,
            },
        )
    }

    /// Moves the session `read` (still the block at its id) to the id of
    /// `new` (a copy of it under that id, which routes to this shard), in
    /// one logged step: afterwards the old id is gone.
    #[allow(clippy::too_many_arguments)] // both ids' places and the change
    #[allow(clippy::too_many_arguments)] // the change, its record and the time it logged
    pub(crate) fn rotate(
        &self,
        hash: u64,
        read: &Metadata,
        new_hash: u64,
        new: Metadata,
        clock: &Clock,
        record: Option<&[u8]>,
        logged_ms: Option<u64>,
        guard: &Guard,
    ) -> Result<Rotated> {
        let (mut w, table) = self.lock(guard);
        let table = self.room_for_one(&mut w, table, guard)?;
        let now_ms = clock.now_ms();
        let at = match still_at(table, hash, read, now_ms) {
            Ok(at) => at,
            Err(Stale::Gone) => return Ok(Rotated::Gone),
            Err(Stale::Changed) => return Ok(Rotated::Conflict),
        };
        self.rotate_at(&mut w, table, at, new_hash, new, record, now_ms, logged_ms, guard)
    }

    /// `rotate` built under the writer mutex (the fallback of a rotation
    /// that lost its optimistic races): `make` gets the current block and
    /// returns its copy under the new id and the record (empty without
    /// persistence). Never `Conflict`.
    pub(crate) fn rotate_locked(
        &self,
        hash: u64,
        id: &SessionId,
        new_hash: u64,
        clock: &Clock,
        guard: &Guard,
        make: impl FnOnce(&Metadata, u64) -> (Metadata, Vec<u8>),
    ) -> Result<Rotated> {
        let (mut w, table) = self.lock(guard);
        let table = self.room_for_one(&mut w, table, guard)?;
        let now_ms = clock.now_ms();
        let Some(at) = table.find_slot(hash, id) else {
            return Ok(Rotated::Gone);
        };
        let block = table.header(at);
        if !matches!(block.access(now_ms, false), Access::Live { .. }) {
            return Ok(Rotated::Gone);
        }
        let (new, record) = make(&block.share(), now_ms);
        let record = self.log.is_some().then_some(&record[..]);
        self.rotate_at(&mut w, table, at, new_hash, new, record, now_ms, None, guard)
    }

    /// Room in the table for one more id (a rotation holds both for a
    /// moment): nothing may fail once the old one goes.
    fn room_for_one<'g>(&self, w: &mut Writer, table: &'g Table, guard: &'g Guard) -> Result<&'g Table> {
        if w.tombstones + self.len() + 1 > table.limit() {
            return self.rebuild(w, table, guard);
        }
        Ok(table)
    }

    /// The rotation of the live block in slot `at` to `new`'s id; its
    /// access time as [`Shard::install`] sets one.
    #[allow(clippy::too_many_arguments)] // the writer's state and the change
    fn rotate_at(
        &self,
        w: &mut Writer,
        table: &Table,
        at: usize,
        new_hash: u64,
        mut new: Metadata,
        record: Option<&[u8]>,
        now_ms: u64,
        logged_ms: Option<u64>,
        guard: &Guard,
    ) -> Result<Rotated> {
        let old = table.header(at);
        let new_id = new.header().id;
        if table.find_slot(new_hash, &new_id).is_some() {
            return Ok(Rotated::Taken);
        }
        let Ok(last) = old.retire(now_ms) else {
            return Ok(Rotated::Gone);
        };
        let mut retired = Retired(Some(old));
        let header = new.header_mut().expect("a new block is unshared");
        header.set_access_unpublished(last.max(logged_ms.unwrap_or(now_ms)));
        let live_delta = live_len(new.block()) - live_len(old);
        let position = match self.append(record, live_delta, now_ms) {
            Ok(position) => position,
            Err(e) => {
                old.unretire();
                retired.disarm();
                return Err(e);
            }
        };
        let floor_ms = self.removed_floor_ms(w, at, old);
        drop(self.remove_at(w, table, at, guard));
        let session = snapshot(new.block(), new.header().last_access_ms());
        if let Some(listing) = &mut w.listing {
            listing.rotated.push(new_id);
        }
        let (at, was_tombstone) = table.free_slot(new_hash);
        w.tombstones -= usize::from(was_tombstone);
        w.hold(new.block());
        table.store(at, new_hash, new);
        self.len.fetch_add(1, Ordering::Relaxed);
        // Reads of the old id made since `retire` slid it: the new id keeps
        // those slides.
        retired.disarm();
        let last_ms = old.close();
        table.header(at).carry(last_ms);
        // The old id is free: see `created_floor_ms`.
        w.created_floor_ms = w.created_floor_ms.max(last_ms).max(floor_ms);
        w.schedule(table, at);
        Ok(Rotated::Done(session, position))
    }

    /// Installs `new` (an update's or a timeout change's block) if the
    /// session is still the block `read` (the one the change started from);
    /// counts as activity. The caller gave `new` every field but its access
    /// time, set here; the time is read under the lock.
    #[allow(clippy::too_many_arguments)] // the change, its record and the time it logged
    pub(crate) fn commit(
        &self,
        hash: u64,
        read: &Metadata,
        new: Metadata,
        clock: &Clock,
        record: Option<&[u8]>,
        logged_ms: Option<u64>,
        guard: &Guard,
    ) -> Result<Commit> {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        let at = match still_at(table, hash, read, now_ms) {
            Ok(at) => at,
            Err(Stale::Gone) => return Ok(Commit::Gone),
            Err(Stale::Changed) => return Ok(Commit::Conflict(Some(new))),
        };
        // The record logs a time read before the wait for this mutex, which
        // the successor takes: if its deadline passed meanwhile, installed
        // it would be expired at once (`Ok` to the caller, `NotFound` to the
        // next read). Made again, at a later time (the caller retries).
        if logged_ms
            .is_some_and(|logged| logged != now_ms && expires_by(table.header(at), &new, logged, now_ms))
        {
            return Ok(Commit::Conflict(Some(new)));
        }
        self.install(&mut w, table, at, hash, new, record, now_ms, logged_ms, guard)
    }

    /// `commit` for a change built under the writer mutex (the fallback of
    /// a contended update): `make` gets the current block and returns its
    /// successor and the record (empty without persistence).
    pub(crate) fn commit_locked(
        &self,
        hash: u64,
        id: &SessionId,
        clock: &Clock,
        guard: &Guard,
        make: impl FnOnce(&Metadata) -> Result<Locked>,
    ) -> Result<Commit> {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        let Some(at) = table.find_slot(hash, id) else {
            return Ok(Commit::Gone);
        };
        let block = table.header(at);
        if !matches!(block.access(now_ms, false), Access::Live { .. }) {
            return Ok(Commit::Gone);
        }
        let current = block.share();
        match make(&current)? {
            Locked::Install(new, record, logged_ms) => {
                let record = self.log.is_some().then_some(&record[..]);
                self.install(&mut w, table, at, hash, new, record, now_ms, logged_ms, guard)
            }
            Locked::Delete(record) => {
                let record = self.log.is_some().then_some(&record[..]);
                Ok(
                    match self.remove_logged(&mut w, table, at, record, now_ms, guard)? {
                        Some((session, position)) => Commit::Deleted(session, position),
                        None => Commit::Gone,
                    },
                )
            }
            Locked::Keep => Ok(match block.access(now_ms, true) {
                Access::Live { before, after } => {
                    self.log_activity(block, before, after);
                    Commit::Kept(snapshot(block, after))
                }
                _ => Commit::Gone,
            }),
            Locked::Decline => Ok(Commit::Declined),
        }
    }

    /// Retires the block in slot `at`, logs the change and publishes `new`
    /// in its place.
    #[allow(clippy::too_many_arguments)] // the writer's state and the change
    ///
    /// The new block's access time is `logged_ms` if its record logged one
    /// (read before the writer mutex, so a wait for it does not leave
    /// memory's time ahead of the log's: a reopen in between would drop a
    /// session memory kept live; or, for a change decided under the mutex,
    /// read there after `now_ms`, which a log ahead of memory would bring
    /// back for a tick after memory had it expire), else `now_ms` (or the
    /// old block's, if later).
    fn install(
        &self,
        w: &mut Writer,
        table: &Table,
        at: usize,
        hash: u64,
        mut new: Metadata,
        record: Option<&[u8]>,
        now_ms: u64,
        logged_ms: Option<u64>,
        guard: &Guard,
    ) -> Result<Commit> {
        let old = table.header(at);
        let id = old.id;
        let Ok(last) = old.retire(now_ms) else {
            return Ok(Commit::Gone);
        };
        let mut retired = Retired(Some(old));
        let header = new.header_mut().expect("a new block is unshared");
        debug_assert!(
            header.id == id && header.created_ms == old.created_ms,
            "new block not initialised"
        );
        header.set_access_unpublished(last.max(logged_ms.unwrap_or(now_ms)));
        let live_delta = live_len(new.block()) - live_len(old);
        let position = match self.append(record, live_delta, now_ms) {
            Ok(position) => position,
            Err(e) => {
                old.unretire();
                retired.disarm();
                return Err(e);
            }
        };
        // Same slot, so the wheel's links and the per-session state (by slot
        // index) carry over.
        let timeout_changed =
            (new.header().timeout_ms, new.header().lifetime) != (old.timeout_ms, old.lifetime);
        let session = snapshot(new.block(), new.header().last_access_ms());
        // Same creation time (asserted above): only the bytes move.
        w.metadata_bytes = w.metadata_bytes - old.len() as u64 + new.len() as u64;
        let replaced = table.replace(at, hash, new, guard);
        // Reads made since `retire` slid the old block: the new one keeps
        // those slides.
        retired.disarm();
        table.header(at).carry(old.close());
        drop(replaced);
        if timeout_changed {
            // The deadline may have moved earlier, where a lazy re-arm
            // would fire late: re-schedule (O(1) both ways).
            w.unschedule(table, at);
            w.schedule(table, at);
        }
        Ok(Commit::Done(session, position))
    }

    /// Expires up to `budget` sessions due at the clock's time into `out`.
    pub(crate) fn sweep(
        &self,
        clock: &Clock,
        budget: usize,
        out: &mut Vec<Session>,
        sessions: &AtomicUsize,
        guard: &Guard,
    ) -> Swept {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        let mut taken = std::mem::take(&mut w.swept);
        taken.clear();
        let Writer { wheel, links, .. } = &mut *w;
        let (expired, poll) = wheel.poll(&mut Slots { table, links }, now_ms, budget, |_, index| {
            taken.push(index);
        });
        for &index in &taken {
            // Unlinked by the wheel already; marked expired by `due`.
            let (block, tombstones) = table.take(index as usize, guard);
            w.tombstones = w.tombstones.wrapping_add_signed(tombstones);
            let header = block.header();
            w.created_floor_ms = w
                .created_floor_ms
                .max(ms_after(header.created_ms))
                .max(header.last_access_ms());
            w.release(index as usize, block.block());
            out.push(snapshot(block.block(), block.header().last_access_ms()));
        }
        w.swept = taken;
        self.len.fetch_sub(expired, Ordering::Relaxed);
        // The engine's count too, before the writer mutex is released: an
        // insert that finds the engine full sweeps in turn, and sessions
        // already gone from the table but still counted would have it
        // refused with room to spare.
        sessions.fetch_sub(expired, Ordering::Relaxed);
        w.expired_total += expired as u64;
        match poll {
            wheel::Poll::Done => Swept::All,
            wheel::Poll::More => Swept::More,
        }
    }

    /// Replaces the table with one that has room for one more entry: the
    /// same size if tombstones took the room, else twice the size. Moves
    /// every session and reschedules it under its new slot; readers go on in
    /// the old table until the epoch retires it.
    fn rebuild<'g>(&self, w: &mut Writer, table: &Table, guard: &'g Guard) -> Result<&'g Table> {
        let live = self.len();
        let slots = if live + 1 < table.limit() / 2 || table.slots() >= SLOTS_MAX {
            table.slots()
        } else {
            table.slots() * 2
        };
        let grown = if self.fail_growth.load(Ordering::Relaxed) {
            Err("an injected allocation failure".to_owned())
        } else {
            Table::successor(slots, next_generation(table.generation()))
                .map_err(|e| e.to_string())
                .and_then(|next| Ok((next, unlinked(slots).map_err(|e| e.to_string())?)))
                .and_then(|(next, links)| {
                    let by_slot = w.states.relocation(slots).map_err(|e| e.to_string())?;
                    Ok((next, links, by_slot))
                })
        };
        let (next, mut links, by_slot) = grown.map_err(|e| Error::Io {
            context: format!("growing a shard's table to {slots} slots"),
            source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
        })?;
        // The new wheel, links and state map are built aside and put in
        // place only once every step that could panic is done: a panic
        // meanwhile leaves the shard as it was, its wheel included.
        let mut wheel = w.wheel.emptied();
        table.move_into(&next, &self.hasher, |at, block| {
            #[cfg(test)]
            tests::injected_move_panic();
            if let Some(deadline) = block.deadline_ms() {
                let store = &mut Slots {
                    table: &next,
                    links: &mut links,
                };
                wheel.insert(store, to_index(at), deadline);
            }
        });
        w.states
            .relocate(slots, by_slot, |id| next.find_slot(hash_id(&self.hasher, id), id));
        w.wheel = wheel;
        w.links = links;
        w.tombstones = 0;
        w.rebuilds += 1;
        // The blocks change owner here, with nothing between that can
        // panic: until now `next` owned none of them, so a panic while
        // moving (the wheel, the states) dropped it harmlessly and left the
        // shard on `table`, which still owned them all.
        table.hand_blocks_to(&next);
        let old = self.table.swap(Owned::new(next), Ordering::AcqRel, guard);
        // SAFETY: `old` is unlinked from the shard, and destroyed only after
        // every guard that could have loaded it is gone (it no longer owns
        // the blocks: they moved).
        unsafe { guard.defer_destroy(old) };
        Ok(self.table(guard))
    }

    /// The shard's counters and sizes, all read under its writer mutex.
    pub(crate) fn counters(&self) -> Counters {
        let w = self.writer.lock();
        Counters {
            sessions: self.len(),
            scheduled: w.wheel.len(),
            created_total: w.created_total,
            deleted_total: w.deleted_total,
            expired_total: w.expired_total,
            rebuilds: w.rebuilds,
            created_ms_sum: w.created_ms_sum,
            metadata_bytes: w.metadata_bytes,
            slots: w.links.len(),
        }
    }

    // ---- Per-session state (`per_session.rs`) -------------------------------

    /// Runs `f` on the shard's per-session state if `id` is a live session
    /// (else `NotFound`), under the writer mutex: the session cannot leave
    /// meanwhile, so state never outlives it. `f` gets the session's table
    /// slot (which names its entry) and the time read under the lock; the
    /// `line` of the session's entry that `f` reads, if given, is
    /// prefetched before the lookup. No epoch guard: see `with_writer`.
    #[inline]
    pub(crate) fn with_state<R>(
        &self,
        hash: u64,
        id: &SessionId,
        clock: &Clock,
        line: Option<EntryLine>,
        f: impl FnOnce(&mut States, Owner, u64) -> Result<R>,
    ) -> Result<R> {
        self.with_writer(|w, table| {
            if let Some(line) = line {
                w.states.prefetch(table.start(hash), line);
            }
            let now_ms = clock.now_ms();
            let Some(at) = table.find_slot(hash, id) else {
                return Err(Error::NotFound);
            };
            if !table.header(at).live_for_writer(now_ms) {
                return Err(Error::NotFound);
            }
            f(&mut w.states, Owner::new(at, *id), now_ms)
        })
    }

    /// Runs `f` under the writer mutex with the shard's table, without
    /// pinning an epoch guard (a pin is a fence and two stores on every
    /// per-session state call). For work done entirely under the mutex.
    #[inline]
    fn with_writer<R>(&self, f: impl FnOnce(&mut Writer, &Table) -> R) -> R {
        let mut w = self.writer.lock();
        // SAFETY: only a holder of the writer mutex replaces the table or
        // takes a block out of it, and a replaced table or removed block is
        // freed through the epoch only after that. So while `w` is held,
        // the table loaded here and every block it points to stay
        // allocated, with or without a guard. `f` cannot keep the reference
        // past this call (its lifetime is the call's), and nothing is
        // deferred through the unprotected guard (it is used for this load
        // only). Exercised under Miri by `state_calls_read_the_table_
        // without_a_guard` (scripts/miri.sh).
        let table = unsafe {
            self.table
                .load(Ordering::Acquire, crossbeam_epoch::unprotected())
                .deref()
        };
        f(&mut w, table)
    }

    /// Runs `f` on the shard's per-session state under the writer mutex,
    /// without looking any session up (a timer cancelled by its handle, a
    /// listing of a topic's subscribers).
    #[inline]
    pub(crate) fn with_states<R>(&self, f: impl FnOnce(&mut States) -> R) -> R {
        f(&mut self.writer.lock().states)
    }

    /// The topics of each session in `sessions` (compaction), under one hold
    /// of the writer mutex; a session under an id a new session was
    /// inserted under since the listing started is left out (`Listing`).
    pub(crate) fn topics_of(
        &self,
        sessions: Vec<Session>,
        out: &mut Vec<(Session, Vec<crate::per_session::Topic>)>,
    ) {
        self.with_writer(|w, table| {
            let any = !w.states.is_empty();
            let listing = w.listing.as_ref();
            let fresh = |s: &Session| listing.is_some_and(|l| l.born_after_seal(s));
            out.extend(sessions.into_iter().filter(|s| !fresh(s)).map(|s| {
                let id = s.id();
                let topics = match table.find_slot(hash_id(&self.hasher, &id), &id) {
                    Some(at) if any => w.states.topics_shared(Owner::new(at, id)),
                    _ => Vec::new(),
                };
                (s, topics)
            }));
        });
    }

    /// At open: no session made from now on has a creation time at or
    /// before `newest_ms`, the newest time a record of the log holds. A session removed
    /// with topics before the reopen raised the floor past its creation
    /// (`removed_floor_ms`), which the reopen would otherwise forget: the
    /// clock resumes at `newest_ms` at the earliest, and a session made
    /// again under the id in that millisecond would log a `PUT` that a
    /// repair skipping the damaged removal takes for the old session's.
    pub(crate) fn raise_created_floor(&self, newest_ms: u64) {
        let mut w = self.writer.lock();
        w.created_floor_ms = w.created_floor_ms.max(ms_after(newest_ms));
    }

    /// Restores a recovered session's topics (at open, after `restore`).
    pub(crate) fn restore_topics(&self, id: SessionId, topics: &[crate::per_session::Topic]) -> Result<()> {
        self.with_writer(|w, table| {
            if let Some(at) = table.find_slot(hash_id(&self.hasher, &id), &id) {
                w.states.restore(Owner::new(at, id), topics)?;
            }
            Ok(())
        })
    }

    /// Fires up to `budget` session timers due by `until_ms` (and at the
    /// clock's time) into `out` (those of sessions still live; the others
    /// die silently).
    pub(crate) fn fire_timers(
        &self,
        clock: &Clock,
        until_ms: u64,
        budget: usize,
        out: &mut Vec<(SessionId, u64, u64)>,
        guard: &Guard,
    ) -> Swept {
        let (mut w, table) = self.lock(guard);
        let now_ms = clock.now_ms();
        // Marks a session it finds expired, as every writer-side check
        // does: its timer dies here, so no reader holding an earlier time
        // may slide the session back to life after.
        let live = |id: &SessionId| {
            let at = table.find_slot(hash_id(&self.hasher, id), id)?;
            let header = table.header(at);
            header.live_for_writer(now_ms).then_some(header.created_ms)
        };
        match w.states.fire(now_ms.min(until_ms), budget, live, out) {
            wheel::Poll::Done => Swept::All,
            wheel::Poll::More => Swept::More,
        }
    }

    /// Timers armed and sessions holding state in this shard.
    pub(crate) fn state_counts(&self) -> (usize, usize) {
        let w = self.writer.lock();
        (w.states.timers(), w.states.sessions())
    }

    /// Makes every later growth of the table fail (tests).
    pub(crate) fn fail_growth(&self) {
        self.fail_growth.store(true, Ordering::Relaxed);
    }

    /// Runs a compaction's `seal` of this shard's log holding the writer
    /// mutex (so that no write is between its append and its change in
    /// memory), and from then on keeps what the compaction's listing must
    /// know of the writes (`Listing`) until
    /// [`Shard::end_compaction_listing`].
    pub(crate) fn seal_for_compaction<T>(&self, seal: &mut dyn FnMut() -> Result<T>) -> Result<T> {
        let mut w = self.writer.lock();
        let sealed = seal()?;
        w.listing = Some(Listing {
            rotated: Vec::new(),
            born: ahash::AHashSet::new(),
        });
        Ok(sealed)
    }

    /// Ends a compaction's listing: the live sessions under the ids
    /// rotated to since it started (not inserted since), as they are now.
    pub(crate) fn end_compaction_listing(&self, now_ms: u64) -> Vec<Session> {
        self.with_writer(|w, table| {
            let Some(listing) = w.listing.take() else {
                return Vec::new();
            };
            let mut out = Vec::with_capacity(listing.rotated.len());
            for id in &listing.rotated {
                let Some(at) = table.find_slot(hash_id(&self.hasher, id), id) else {
                    continue;
                };
                let Some(block) = table.slot_entry(at) else {
                    continue;
                };
                // Under the writer mutex: no write is under way.
                let Access::Live { after, .. } = block.access(now_ms, false) else {
                    continue;
                };
                let session = snapshot(block, after);
                if !listing.born_after_seal(&session) {
                    out.push(session);
                }
            }
            out
        })
    }

    /// Runs `while_held` holding the writer mutex (tests: a stalled writer).
    pub(crate) fn hold_writer(&self, while_held: impl FnOnce()) {
        let _w = self.writer.lock();
        while_held();
    }

    /// Checks the invariants tying table, wheel and counters together.
    pub(crate) fn check_invariants(&self, guard: &Guard) {
        let (w, table) = self.lock(guard);
        let (mut live, mut scheduled) = (0, 0);
        for at in 0..table.slots() {
            let Some(block) = table.slot_entry(at) else {
                continue;
            };
            live += 1;
            let hash = hash_id(&self.hasher, &block.id);
            assert_eq!(
                table.find_slot(hash, &block.id),
                Some(at),
                "slot {at}: {:?}",
                block.id
            );
            let linked = w.links[at].is_linked();
            assert_eq!(
                linked,
                block.deadline_ms().is_some(),
                "slot {at} scheduling: {:?} timeout {} lifetime {}",
                w.links[at],
                block.timeout_ms,
                block.lifetime
            );
            scheduled += usize::from(linked);
        }
        assert_eq!(live, self.len(), "sessions counted");
        let (mut created_ms_sum, mut metadata_bytes) = (0u128, 0u64);
        for at in 0..table.slots() {
            if let Some(block) = table.slot_entry(at) {
                created_ms_sum += u128::from(block.created_ms);
                metadata_bytes += block.len() as u64;
            }
        }
        assert_eq!(created_ms_sum, w.created_ms_sum, "creation times summed");
        assert_eq!(metadata_bytes, w.metadata_bytes, "metadata bytes summed");
        assert_eq!(scheduled, w.wheel.len(), "wheel length");
        assert_eq!(table.count_tombstones(), w.tombstones, "tombstones counted");
        assert!(live + w.tombstones <= table.limit(), "table over its limit");
        w.states.check_invariants();
        for (entry, id) in w.states.held() {
            let at = table.find_slot(hash_id(&self.hasher, id), id);
            assert!(at.is_some(), "state kept for {id:?}, which left the shard");
            assert_eq!(
                at.and_then(|at| w.states.entry_of(Owner::new(at, *id))),
                Some(entry),
                "{id:?}'s slot does not name its entry"
            );
        }
        for at in 0..table.slots() {
            let id = table.slot_entry(at).map(|block| block.id);
            if let Some(entry) = w.states.entry_at(at) {
                assert!(
                    id.is_some_and(|id| w.states.holds(entry, &id)),
                    "slot {at} ({id:?}) names entry {entry}, not its session's"
                );
            }
        }
    }
}

impl Writer {
    /// Counts a session entering the table.
    #[inline]
    fn hold(&mut self, block: BlockRef<'_>) {
        self.created_ms_sum += u128::from(block.created_ms);
        self.metadata_bytes += block.len() as u64;
    }

    /// Counts the session in slot `at` leaving the table; its per-session
    /// state (if any session of the shard holds some) leaves with it.
    #[inline]
    fn release(&mut self, at: usize, block: BlockRef<'_>) {
        self.created_ms_sum -= u128::from(block.created_ms);
        self.metadata_bytes -= block.len() as u64;
        if !self.states.is_empty() {
            self.states.drop_session(Owner::new(at, block.id));
        }
    }

    /// Schedules the session in slot `at` at its deadline, if it has one.
    fn schedule(&mut self, table: &Table, at: usize) {
        self.links[at] = Link::UNLINKED;
        if let Some(deadline) = table.header(at).deadline_ms() {
            let links = &mut self.links;
            self.wheel
                .insert(&mut Slots { table, links }, to_index(at), deadline);
        }
    }

    /// Takes the session in slot `at` out of the wheel, if it is in it.
    fn unschedule(&mut self, table: &Table, at: usize) {
        let links = &mut self.links;
        self.wheel.remove(&mut Slots { table, links }, to_index(at));
    }
}

#[cfg(test)]
mod tests {
    //! The shard's blocks through every path that creates, shares, replaces
    //! and frees them (also run under Miri by `scripts/miri.sh`).
    use super::*;
    use crate::block::TIMEOUT_NEVER;
    use crate::clock::ManualClock;

    proptest::proptest! {
        /// A read's touch period: a power of two of ms over half the
        /// fraction of the timeout and not over all of it, crossed exactly
        /// where a division by that power of two changes; so a slide by
        /// the whole fraction always logs.
        #[test]
        #[cfg_attr(miri, ignore)] // arithmetic only, slow under Miri
        fn a_touch_period_is_a_power_of_two_within_the_fraction(
            before in 0..crate::limits::TIME_MS_MAX / 2,
            step in 0..crate::limits::TIMEOUT_MS_MAX,
            timeout in 1..=crate::limits::TIMEOUT_MS_MAX,
            fraction in 0.0001..=1.0f64,
        ) {
            let after = before + step;
            let q32 = fraction_q32(fraction);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let most = (timeout as f64 * fraction) as u64;
            let period = 1u64 << most.max(1).ilog2();
            proptest::prop_assert!(period <= most.max(1) && 2 * period > most.max(1).saturating_sub(1));
            let crossed = touch_period_crossed(before, after, timeout, q32);
            // The fixed-point fraction rounds the bound down: by at most
            // 2^-32 of the timeout (under 9 ms at the longest), plus 1 ms.
            #[allow(clippy::cast_possible_truncation)]
            let q_most = ((u128::from(timeout) * u128::from(q32)) >> 32) as u64;
            let q_period = 1u64 << q_most.max(1).ilog2();
            proptest::prop_assert!(q_most <= most.max(1) && q_most + 10 >= most);
            proptest::prop_assert_eq!(crossed, before / q_period != after / q_period);
            if step >= most.max(1) {
                proptest::prop_assert!(crossed, "a slide of {} ms past a fraction of {} ms", step, most);
            }
        }
    }

    #[test]
    fn touch_periods_at_the_edges() {
        // A 1 ms bound (or less) logs every slide.
        assert!(touch_period_crossed(10, 11, 1, fraction_q32(1.0)));
        assert!(touch_period_crossed(10, 11, 5, fraction_q32(0.01)));
        assert!(!touch_period_crossed(10, 10, 5, fraction_q32(0.01)));
        // 100 s at 0.1: 10 s bound, 8,192 ms periods.
        let q = fraction_q32(0.1);
        assert!(!touch_period_crossed(8_192, 16_383, 100_000, q));
        assert!(touch_period_crossed(16_383, 16_384, 100_000, q));
        assert_eq!(fraction_q32(1.0), 1 << 32);
    }

    /// A claim that fails does not take room from one that would succeed:
    /// one room freed while another thread keeps failing claims at the
    /// limit goes to exactly one claim. (A claim that counted itself in
    /// and then out again made a claim racing it see the limit, with room
    /// free: `CapacityExceeded` below `sessions_max`.)
    #[test]
    fn a_failing_claim_takes_no_room_from_a_free_one() {
        use std::sync::atomic::AtomicBool;
        for _ in 0..2_000 {
            let count = AtomicUsize::new(1);
            let room = Room {
                count: &count,
                max: 1,
            };
            let done = AtomicBool::new(false);
            let successes = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        if room.claim() {
                            successes.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                });
                std::thread::yield_now();
                room.give_back();
                if room.claim() {
                    successes.fetch_add(1, Ordering::Relaxed);
                }
                done.store(true, Ordering::Release);
            });
            assert_eq!(
                successes.load(Ordering::Relaxed),
                1,
                "one room was free: exactly one claim takes it"
            );
            assert_eq!(count.load(Ordering::Relaxed), 1);
        }
    }

    thread_local! {
        /// Moves left before a rebuild on this thread panics (`None`: it
        /// does not), as a bug in a step of the move would.
        static MOVES_BEFORE_PANIC: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }

    pub(super) fn injected_move_panic() {
        MOVES_BEFORE_PANIC.with(|left| match left.get() {
            Some(0) => {
                left.set(None);
                panic!("an injected panic in a rebuild's move");
            }
            Some(n) => left.set(Some(n - 1)),
            None => {}
        });
    }

    /// A rebuild that panics halfway (a bug in a step of the move) leaves
    /// the shard as it was: the old table with its wheel, links and state
    /// map, consistent; its sessions stay readable and still expire. (The
    /// wheel used to be cleared before the move: the shard kept the old
    /// table with an empty wheel, its sessions linked to nothing.)
    #[test]
    fn a_rebuild_that_panics_halfway_leaves_the_shard_as_it_was() {
        let f = Fixture::new(1_000);
        MOVES_BEFORE_PANIC.with(|left| left.set(Some(2)));
        let mut stored = Vec::new();
        for n in 0..1_000 {
            let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.insert(n, 500)));
            if inserted.is_err() {
                break;
            }
            stored.push(n);
            if n == 0 {
                assert!(f.rate_limit(0, 0), "a session with per-session state");
            }
        }
        assert!(
            MOVES_BEFORE_PANIC.with(std::cell::Cell::get).is_none(),
            "no rebuild panicked"
        );
        assert!(stored.len() >= 3, "{stored:?}");
        f.check();
        for &n in &stored {
            assert!(f.get(n, 1_000, false).is_some(), "session {n} lost");
        }
        // The shard goes on: it grows (a rebuild that completes) and
        // expires every session by its timer.
        let more = u32::try_from(stored.len()).unwrap();
        for n in more..more + 64 {
            f.insert(n, 500);
        }
        f.check();
        f.clock.advance(std::time::Duration::from_millis(600));
        assert_eq!(f.sweep(1_000).len(), stored.len() + 64, "every session expired");
        f.check();
    }

    /// Sessions that come and go at a steady few leave no tombstones for
    /// a rebuild to sweep out: a removal whose next slot is empty empties
    /// its own slot and the tombstones just before it. (Each removal used
    /// to leave a tombstone until the table rebuilt, an O(n) pause of the
    /// shard's writers: 8,000 sessions through a table of a few lines
    /// rebuilt it every few rounds.) The invariant check counts the
    /// tombstones in the table against the writer's count.
    #[test]
    fn tombstones_before_an_empty_slot_are_reclaimed_without_a_rebuild() {
        let f = Fixture::new(1_000);
        for n in 0..4 {
            f.insert(n, 10);
        }
        f.clock.advance_ms(20);
        assert_eq!(f.sweep(64).len(), 4);
        let rebuilds = f.shard.counters().rebuilds;
        for round in 1..2_000u32 {
            for n in round * 4..round * 4 + 4 {
                f.insert(n, 10);
            }
            if round % 100 == 0 {
                f.check();
            }
            f.clock.advance_ms(20);
            assert_eq!(f.sweep(64).len(), 4);
        }
        f.check();
        // Rare, not never: a tombstone with a live neighbour after it stays
        // until an insert reuses it or a removal next to it empties it.
        let more = f.shard.counters().rebuilds - rebuilds;
        assert!(more < 20, "{more} rebuilds");
        // And deletes (not only expiries) reclaim theirs.
        let g = crossbeam_epoch::pin();
        for n in 100_000..108_000u32 {
            f.insert(n, 1_000);
            let at = f.shard.table(&g).find_slot(f.hash(n), &id(n)).unwrap();
            let mut w = f.shard.writer.lock();
            let table = f.shard.table(&g);
            table.header(at).retire(f.clock.now_ms()).unwrap();
            drop(f.shard.remove_at(&mut w, table, at, &g));
        }
        drop(g);
        f.check();
        assert!(f.shard.counters().rebuilds - rebuilds < 40);
    }

    thread_local! {
        /// Allocations made by this thread (the counting allocator below).
        static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// The system allocator, counting each thread's allocations (for the
    /// tests that check a path allocates nothing).
    struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged; the
    // count is a thread-local `Cell` with a const initialiser and no
    // destructor, whose access never allocates.
    #[allow(unsafe_code)]
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract, passed on.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// A sweep allocates nothing of its own under the writer mutex once it
    /// has swept a batch: the slots it takes out are listed in a buffer the
    /// shard keeps (it allocated a list per batch). What is left is the
    /// epoch's: a retired block's release is queued in a bag of 64, and a
    /// full bag goes to the global queue in an allocation.
    #[test]
    fn sweep_batches_allocate_nothing_of_their_own() {
        let f = Fixture::new(1_000);
        for n in 0..4_096 {
            f.insert(n, 10);
        }
        f.clock.advance_ms(20);
        let clock = f.clock.clock();
        let mut out = Vec::with_capacity(4_096);
        let g = crossbeam_epoch::pin();
        let counted = counted();
        assert_eq!(f.shard.sweep(&clock, 4, &mut out, &counted, &g), Swept::More);
        let before = ALLOCATIONS.with(std::cell::Cell::get);
        let mut batches = 1;
        while f.shard.sweep(&clock, 4, &mut out, &counted, &g) == Swept::More {
            batches += 1;
        }
        let allocations = ALLOCATIONS.with(std::cell::Cell::get) - before;
        drop(g);
        assert_eq!(out.len(), 4_096);
        assert!(batches >= 1_000, "{batches} batches");
        // One bag in 16 batches of 4.
        assert!(
            allocations < batches / 4,
            "{allocations} allocations in {batches} batches"
        );
        f.check();
    }

    fn id(n: u32) -> SessionId {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        SessionId::from_bytes(bytes)
    }

    fn block(n: u32, now_ms: u64, timeout_ms: u32) -> Metadata {
        Metadata::session(
            format!("session {n}").as_bytes(),
            id(n),
            now_ms,
            now_ms,
            timeout_ms,
        )
    }

    /// Room for any number of sessions (the capacity is the engine's
    /// concern, tested there).
    fn unbounded() -> Room<'static> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        Room {
            count: &COUNT,
            max: usize::MAX,
        }
    }

    /// An engine's session count for a sweep, far from zero.
    fn counted() -> AtomicUsize {
        AtomicUsize::new(1 << 40)
    }

    struct Fixture {
        shard: Shard,
        hasher: RandomState,
        clock: ManualClock,
    }

    impl Drop for Fixture {
        /// Runs the epoch's deferred frees before the test ends, so that
        /// Miri's leak check sees every block the shard retired released
        /// (`scripts/miri.sh` runs these tests one at a time: a guard of
        /// another test would hold the epoch back).
        fn drop(&mut self) {
            for _ in 0..256 {
                crossbeam_epoch::pin().flush();
            }
        }
    }

    impl Fixture {
        fn new(now_ms: u64) -> Self {
            let hasher = RandomState::new();
            Self {
                shard: Shard::new(hasher.clone(), now_ms, None, 0.5, 1),
                hasher,
                clock: ManualClock::new(now_ms),
            }
        }

        fn hash(&self, n: u32) -> u64 {
            hash_id(&self.hasher, &id(n))
        }

        fn insert(&self, n: u32, timeout_ms: u32) {
            let g = crossbeam_epoch::pin();
            let b = block(n, self.clock.now_ms(), timeout_ms);
            let r = self
                .shard
                .insert(self.hash(n), b, &self.clock.clock(), &unbounded(), None, &g);
            assert!(matches!(r, Ok(Inserted::Stored(None, None))));
        }

        fn get(&self, n: u32, now_ms: u64, slide: bool) -> Option<Session> {
            let g = crossbeam_epoch::pin();
            self.shard
                .read(self.hash(n), &id(n), now_ms, slide, &g, |b, last| {
                    snapshot(b, last)
                })
        }

        fn sweep(&self, budget: usize) -> Vec<Session> {
            let mut out = Vec::new();
            let g = crossbeam_epoch::pin();
            let counted = counted();
            while self
                .shard
                .sweep(&self.clock.clock(), budget, &mut out, &counted, &g)
                == Swept::More
            {}
            out
        }

        fn check(&self) {
            self.shard.check_invariants(&crossbeam_epoch::pin());
        }

        /// A rate-limit check on session `n` (a per-session state call),
        /// `late_ms` after the clock: true if the session was live.
        fn rate_limit(&self, n: u32, late_ms: u64) -> bool {
            let clock = self.clock.clock();
            let bucket = crate::state::Bucket {
                capacity: 9,
                refill_per_sec: 1,
            };
            self.shard
                .with_state(self.hash(n), &id(n), &clock, None, |states, owner, now_ms| {
                    states.rate_limit(owner, bucket, 1, now_ms + late_ms)
                })
                .is_ok()
        }
    }

    /// Per-session state calls find the session in the table under the
    /// writer mutex without an epoch guard (`with_writer`): across a table
    /// rebuild, a replaced block and a removed one (under Miri, any use of
    /// a freed table or block is an error).
    #[test]
    fn state_calls_read_the_table_without_a_guard() {
        let f = Fixture::new(1_000);
        let clock = f.clock.clock();
        let live = |n: u32| f.rate_limit(n, 0);
        f.insert(1, 100);
        assert!(live(1));
        // Enough inserts to rebuild the table (it starts at one line).
        for n in 2..40 {
            f.insert(n, 100);
        }
        assert!(live(1) && live(39));
        // Expired, then replaced by a new session under its id (a new block
        // in its slot), and the rest swept.
        f.clock.advance_ms(200);
        assert!(!live(1) && !live(2), "expired");
        let g = crossbeam_epoch::pin();
        let r = f
            .shard
            .insert(f.hash(1), block(1, 1_200, 500), &clock, &unbounded(), None, &g);
        assert!(matches!(r, Ok(Inserted::Stored(Some(_), _))));
        drop(g);
        assert!(live(1));
        f.sweep(64);
        assert!(live(1) && !live(2));
        f.check();
    }

    /// The same, with another thread deleting and re-creating sessions,
    /// growing the table and sweeping while state calls run: under Miri a
    /// table or block freed while a state call can still reach it would be
    /// reported (the epoch frees them once no guard is pinned, and a state
    /// call pins none).
    #[test]
    fn state_calls_race_removals_rebuilds_and_sweeps() {
        let f = Fixture::new(1_000);
        let clock = f.clock.clock();
        let rounds: u32 = if cfg!(miri) { 3 } else { 200 };
        for n in 0..16 {
            f.insert(n, 50);
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..rounds {
                    for n in 0..16 {
                        let _ = f.rate_limit(n, u64::from(round));
                    }
                }
            });
            for round in 0..rounds {
                let g = crossbeam_epoch::pin();
                for n in 0..16 {
                    let _ = f.shard.delete(f.hash(n), &id(n), &clock, None, &g);
                    let r = f
                        .shard
                        .insert(f.hash(n), block(n, 1_000, 50), &clock, &unbounded(), None, &g);
                    assert!(matches!(r, Ok(Inserted::Stored(..))));
                }
                // New ids each round grow the table (rebuilds).
                let fresh = 100 + round * 4;
                for n in fresh..fresh + 4 {
                    let r = f
                        .shard
                        .insert(f.hash(n), block(n, 1_000, 50), &clock, &unbounded(), None, &g);
                    assert!(matches!(r, Ok(Inserted::Stored(..))));
                }
                drop(g);
                crossbeam_epoch::pin().flush();
            }
        });
        f.clock.advance_ms(100);
        f.sweep(1 << 12);
        f.check();
    }

    /// Lock-free reads of sessions that another thread updates, deletes
    /// and re-creates, moves through table rebuilds and sweeps as they
    /// expire: a read finds its own id with whole bytes, or nothing, and a
    /// snapshot keeps its bytes after its guard is gone. Under Miri
    /// (`scripts/miri.sh`) a block or table freed while a reader could
    /// still reach it, or a racing plain access, is reported.
    #[test]
    fn reads_race_updates_removals_rebuilds_and_sweeps() {
        let f = Fixture::new(1_000);
        let rounds: u32 = if cfg!(miri) { 3 } else { 200 };
        for n in 0..16 {
            f.insert(n, 50);
        }
        let whole = |n: u32, bytes: &[u8]| {
            assert!(
                bytes == format!("session {n}").as_bytes() || bytes == format!("updated {n}").as_bytes(),
                "session {n} read as {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let done = AtomicBool::new(false);
        let (found, passes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| loop {
                if passes.load(Ordering::Relaxed) == 0 {
                    start.wait();
                }
                let last = done.load(Ordering::Acquire);
                for n in 0..16 {
                    let now_ms = f.clock.clock().now_ms();
                    let g = crossbeam_epoch::pin();
                    if let Some(read) = f.shard.read(f.hash(n), &id(n), now_ms, n % 2 == 0, &g, |b, _| {
                        assert_eq!(b.id, id(n));
                        whole(n, b.bytes());
                        b.share()
                    }) {
                        drop(g);
                        whole(n, read.as_bytes());
                        found.fetch_add(1, Ordering::Relaxed);
                    }
                }
                passes.fetch_add(1, Ordering::Release);
                if last {
                    break;
                }
            });
            start.wait();
            for round in 0..rounds {
                // Now and then the reader's pass ends inside the rounds.
                if round % 16 == 0 {
                    let seen = passes.load(Ordering::Acquire);
                    while passes.load(Ordering::Acquire) == seen {
                        std::thread::yield_now();
                    }
                }
                let clock = f.clock.clock();
                let now_ms = clock.now_ms();
                let g = crossbeam_epoch::pin();
                for n in 0..16 {
                    let read = f
                        .shard
                        .read(f.hash(n), &id(n), now_ms, false, &g, |b, _| b.share());
                    if let Some(read) = read {
                        let created_ms = read.header().created_ms;
                        let new = Metadata::session(
                            format!("updated {n}").as_bytes(),
                            id(n),
                            created_ms,
                            0,
                            read.header().timeout_ms,
                        );
                        let _ = f.shard.commit(f.hash(n), &read, new, &clock, None, None, &g);
                    }
                    if (round + n) % 3 == 0 {
                        let _ = f.shard.delete(f.hash(n), &id(n), &clock, None, &g);
                    }
                    let _ = f
                        .shard
                        .insert(f.hash(n), block(n, now_ms, 50), &clock, &unbounded(), None, &g);
                }
                // New ids each round grow the table (rebuilds).
                let fresh = 100 + round * 4;
                for n in fresh..fresh + 4 {
                    let r = f
                        .shard
                        .insert(f.hash(n), block(n, now_ms, 50), &clock, &unbounded(), None, &g);
                    assert!(matches!(r, Ok(Inserted::Stored(..))));
                }
                drop(g);
                // The sessions the reader does not slide expire and are swept.
                f.clock.advance_ms(30);
                f.sweep(8);
                crossbeam_epoch::pin().flush();
            }
            done.store(true, Ordering::Release);
        });
        assert!(found.load(Ordering::Relaxed) > 0, "the reader found nothing");
        f.check();
    }

    /// The interleaving that revived expired sessions: reader A reads the
    /// time just before the deadline and is descheduled; reader B, at the
    /// deadline, is told the session expired; A resumes and slides the
    /// deadline. A's liveness check and slide are one atomic step that B's
    /// answer marked, so A finds the session expired too, whichever read
    /// each of them makes.
    /// A session whose timer fires as it expires: the firing finds it
    /// expired and drops the timer, so it must mark the session expired as
    /// every writer-side check does, or a reader holding an earlier time
    /// slides it back to life with its timer gone, never reported.
    #[test]
    fn a_reader_with_an_older_time_cannot_revive_a_session_whose_timer_died_with_it() {
        let f = Fixture::new(1_000);
        f.insert(1, 50); // deadline 1_050
        let clock = f.clock.clock();
        f.shard
            .with_state(f.hash(1), &id(1), &clock, None, |states, owner, _| {
                states.arm(owner, 7, 1_050).map(|_| ())
            })
            .unwrap();
        f.clock.advance_ms(50);
        let mut fired = Vec::new();
        let g = crossbeam_epoch::pin();
        while f
            .shard
            .fire_timers(&f.clock.clock(), u64::MAX, 16, &mut fired, &g)
            == Swept::More
        {}
        drop(g);
        assert!(fired.is_empty(), "the session's timer died with it: {fired:?}");
        assert!(
            f.get(1, 1_049, true).is_none(),
            "a read with the time before the expiry revived the session whose timer was dropped"
        );
        f.check();
    }

    #[test]
    fn a_reader_with_an_older_time_cannot_revive_a_session_seen_expired() {
        type Read = fn(&Fixture, u32, u64) -> bool;
        let reads: [(&str, Read); 4] = [
            ("get", |f, n, now| f.get(n, now, true).is_some()),
            ("peek", |f, n, now| f.get(n, now, false).is_some()),
            ("contains", |f, n, now| {
                let g = crossbeam_epoch::pin();
                f.shard
                    .read(f.hash(n), &id(n), now, false, &g, |_, _| ())
                    .is_some()
            }),
            ("list", |f, _, now| {
                let mut out = Vec::new();
                f.shard.list(None, 10, now, &mut out, &crossbeam_epoch::pin());
                !out.is_empty()
            }),
        ];
        for (b_name, b_read) in reads {
            for (a_name, a_read) in reads {
                let f = Fixture::new(1_000);
                f.insert(1, 100); // deadline 1_100
                assert!(!b_read(&f, 1, 1_100), "{b_name} at the deadline");
                assert!(
                    !a_read(&f, 1, 1_099),
                    "{a_name} with the time read before {b_name} saw the session expired revived it"
                );
                // The wheel still expires it, with its real access time.
                f.clock.advance_ms(100);
                let out = f.sweep(16);
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].last_access_ms(), 1_000);
                f.check();
            }
        }
    }

    #[test]
    fn churn_rebuilds_keep_the_table_bounded_and_the_wheel_whole() {
        // Replace sessions at random in a table kept near its load limit,
        // where deletes leave tombstones and inserts run out of room: the
        // table rebuilds (growing once, then at most in place) and every
        // rebuild moves the wheel's links with the sessions.
        let (live, rounds) = if cfg!(miri) { (100, 1_000) } else { (1_700, 60_000) };
        let f = Fixture::new(1_000);
        let timeout = |n: u32| {
            if n.is_multiple_of(5) {
                TIMEOUT_NEVER
            } else {
                100 + n % 50
            }
        };
        let mut slots: Vec<u32> = (0..live).collect();
        for &n in &slots {
            f.insert(n, timeout(n));
        }
        let grown = f.shard.counters().rebuilds;
        let table_slots = f.shard.table(&crossbeam_epoch::pin()).slots();
        let mut x = 0x9E37_79B9_u32;
        for next in live..live + rounds {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let slot = x as usize % slots.len();
            let old = slots[slot];
            let g = crossbeam_epoch::pin();
            assert!(f
                .shard
                .delete(f.hash(old), &id(old), &f.clock.clock(), None, &g)
                .unwrap()
                .is_some());
            drop(g);
            f.insert(next, timeout(next));
            slots[slot] = next;
        }
        f.check();
        assert_eq!(f.shard.len(), live as usize);
        assert!(
            f.shard.table(&crossbeam_epoch::pin()).slots() <= 2 * table_slots,
            "the table grew without bound"
        );
        assert!(
            f.shard.counters().rebuilds > grown,
            "churn never rebuilt the table"
        );
        for &n in &slots {
            assert!(f.get(n, 1_000, false).is_some(), "session {n} lost");
        }
        // Every session with a timeout expires by 1_000 + 150, through the wheel.
        f.clock.advance_ms(200);
        let out = f.sweep(256);
        let expiring = slots.iter().filter(|&&n| timeout(n) != TIMEOUT_NEVER).count();
        assert_eq!(out.len(), expiring);
        assert_eq!(f.shard.len(), live as usize - expiring);
        f.check();
    }

    #[test]
    fn blocks_survive_rebuilds_updates_deletes_and_sweeps() {
        let f = Fixture::new(1_000);
        let n = 300;
        for i in 0..n {
            // Every third never expires; the rest expire 100 ms after their last activity.
            f.insert(i, if i % 3 == 0 { TIMEOUT_NEVER } else { 100 });
        }
        assert!(
            f.shard.counters().rebuilds >= 4,
            "the table grew through several rebuilds"
        );
        f.check();
        // A snapshot outlives the session's replacement and removal.
        let before = f.get(1, 1_010, true).expect("live");
        f.clock.advance_ms(20);
        let read = {
            let g = crossbeam_epoch::pin();
            f.shard
                .read(f.hash(1), &id(1), 1_020, false, &g, |b, _| b.share())
                .expect("live")
        };
        let new = Metadata::session(
            b"updated",
            id(1),
            read.header().created_ms,
            0,
            read.header().timeout_ms,
        );
        let g = crossbeam_epoch::pin();
        let Ok(Commit::Done(after, None)) =
            f.shard
                .commit(f.hash(1), &read, new, &f.clock.clock(), None, None, &g)
        else {
            panic!("commit failed")
        };
        assert_eq!(
            (after.metadata(), after.last_access_ms()),
            (&b"updated"[..], 1_020)
        );
        assert_eq!(after.created_ms(), 1_000);
        // A second commit from the same read conflicts and hands the block back.
        let again = block(1, 0, 100);
        assert!(matches!(
            f.shard
                .commit(f.hash(1), &read, again, &f.clock.clock(), None, None, &g),
            Ok(Commit::Conflict(_))
        ));
        drop(read);
        // A timeout change is a new block too, rescheduled.
        let read2 = f
            .shard
            .read(f.hash(2), &id(2), 1_020, false, &g, |b, _| b.share())
            .unwrap();
        let longer = Metadata::session(read2.as_bytes(), id(2), read2.header().created_ms, 0, 5_000);
        assert!(matches!(
            f.shard
                .commit(f.hash(2), &read2, longer, &f.clock.clock(), None, None, &g),
            Ok(Commit::Done(..))
        ));
        let (deleted, None) = f
            .shard
            .delete(f.hash(4), &id(4), &f.clock.clock(), None, &g)
            .unwrap()
            .expect("live")
        else {
            panic!("no log, no position")
        };
        drop(g);
        assert_eq!(deleted.metadata(), b"session 4");
        f.check();
        // 1_000 + 100: everything with a 100 ms timeout and no later activity expires.
        f.clock.advance_ms(180);
        let out = f.sweep(16);
        // Session 1 was active at 1_020, so it too is due (1_120); 2 now has 5 s.
        let expected: Vec<u32> = (0..n).filter(|i| i % 3 != 0 && ![2, 4].contains(i)).collect();
        assert_eq!(out.len(), expected.len());
        f.check();
        let mut listed = Vec::new();
        assert!(f
            .shard
            .list(None, usize::MAX, 1_200, &mut listed, &crossbeam_epoch::pin())
            .is_none());
        assert_eq!(listed.len(), n as usize - expected.len() - 1);
        assert_eq!(
            before.metadata(),
            b"session 1",
            "the old snapshot keeps its bytes"
        );
        // Dropping the shard frees the rest (Miri reports any leak).
    }

    /// A writer whose read went stale and who finds the session's newer
    /// block due is told the session expired (`Gone`): it marks that block
    /// expired, so a reader holding an older clock reading cannot slide it
    /// back to life afterwards (it only loaded the word, and the reader
    /// revived a session a writer had been told was gone). For `commit`
    /// (`update`, `set_ttl`, `put`), `delete_if` (`try_update`'s delete) and
    /// `rotate`.
    #[test]
    fn a_stale_writer_told_the_session_expired_leaves_it_expired() {
        for (n, path) in [(1, "commit"), (2, "delete_if"), (3, "rotate")] {
            let f = Fixture::new(1_000);
            f.insert(n, 100); // due at 1_100
            let clock = f.clock.clock();
            let g = crossbeam_epoch::pin();
            let read = f
                .shard
                .read(f.hash(n), &id(n), 1_000, false, &g, |b, _| b.share())
                .unwrap();
            let (t, l) = (read.header().timeout_ms, read.header().lifetime);
            // Another writer wins first (its block's access time is 1_000).
            let other = read.successor(b"other", t, l);
            assert!(matches!(
                f.shard.commit(f.hash(n), &read, other, &clock, None, None, &g),
                Ok(Commit::Done(..))
            ));
            f.clock.advance_ms(100);
            let told_gone = match path {
                "commit" => matches!(
                    f.shard.commit(
                        f.hash(n),
                        &read,
                        read.successor(b"mine", t, l),
                        &clock,
                        None,
                        None,
                        &g
                    ),
                    Ok(Commit::Gone)
                ),
                "delete_if" => matches!(
                    f.shard.delete_if(f.hash(n), &read, &clock, None, &g),
                    Ok(Commit::Gone)
                ),
                _ => {
                    let copy = Metadata::session(read.as_bytes(), id(10), read.header().created_ms, 0, t);
                    matches!(
                        f.shard
                            .rotate(f.hash(n), &read, f.hash(10), copy, &clock, None, None, &g),
                        Ok(Rotated::Gone)
                    )
                }
            };
            assert!(told_gone, "{path}: the writer is told the session is gone");
            drop((read, g));
            assert!(
                f.get(n, 1_099, true).is_none(),
                "{path}: a reader with an older time revived it"
            );
            f.check();
        }
    }

    /// An insert whose time was read before the sweep removed the id's
    /// expired session, created in that same millisecond, is `Stale`: its
    /// `PUT` would carry the swept session's creation time, and recovery
    /// would read it as that session replaced, keeping its topics (nothing
    /// logs a sweep). It is stored when made later.
    #[test]
    fn an_insert_no_later_than_a_swept_session_is_stale() {
        let f = Fixture::new(1_000);
        f.insert(1, 1); // created 1_000, due 1_001
        f.clock.advance_ms(1);
        assert_eq!(f.sweep(16).len(), 1);
        let clock = f.clock.clock();
        let g = crossbeam_epoch::pin();
        let same_ms = block(1, 1_000, 100);
        assert!(matches!(
            f.shard.insert(f.hash(1), same_ms, &clock, &unbounded(), None, &g),
            Ok(Inserted::Stale(_, 1_000))
        ));
        let later = block(1, 1_001, 100);
        assert!(matches!(
            f.shard.insert(f.hash(1), later, &clock, &unbounded(), None, &g),
            Ok(Inserted::Stored(None, None))
        ));
        drop(g);
        f.check();
    }

    /// Both rotation paths move the block to the new id and free the old
    /// one (under Miri: no use of the retired block, no leak), with a
    /// reader's snapshot of the old block outliving it: the optimistic one
    /// from a read, and the one under the writer mutex (the fallback after
    /// lost races) from the current block; a taken new id changes nothing,
    /// and an absent id is `Gone`.
    #[test]
    fn rotations_move_the_block_and_free_the_old_one() {
        let f = Fixture::new(1_000);
        for i in 0..4 {
            f.insert(i, 100);
        }
        let clock = f.clock.clock();
        let g = crossbeam_epoch::pin();
        let before = f.get(0, 1_000, false).expect("live");
        let read = f
            .shard
            .read(f.hash(0), &id(0), 1_000, false, &g, |b, _| b.share())
            .unwrap();
        let copy = |from: &Metadata, n: u32| {
            Metadata::session(from.as_bytes(), id(n), from.header().created_ms, 0, 100)
        };
        let moved = f.shard.rotate(
            f.hash(0),
            &read,
            f.hash(10),
            copy(&read, 10),
            &clock,
            None,
            None,
            &g,
        );
        assert!(matches!(moved, Ok(Rotated::Done(_, None))));
        drop(read);
        let locked = |from: u32, to: u32| {
            f.shard
                .rotate_locked(f.hash(from), &id(from), f.hash(to), &clock, &g, |current, _| {
                    (copy(current, to), Vec::new())
                })
        };
        assert!(matches!(locked(1, 11), Ok(Rotated::Done(_, None))));
        assert!(matches!(locked(2, 3), Ok(Rotated::Taken)), "3 is taken");
        assert!(matches!(locked(5, 15), Ok(Rotated::Gone)), "5 was never there");
        drop(g);
        for (gone, there) in [(0, 10), (1, 11)] {
            assert!(f.get(gone, 1_000, false).is_none());
            assert_eq!(
                f.get(there, 1_000, false).unwrap().metadata(),
                format!("session {gone}").as_bytes()
            );
        }
        assert!(f.get(2, 1_000, false).is_some(), "a taken id moves nothing");
        assert_eq!(f.shard.len(), 4);
        assert_eq!(
            before.metadata(),
            b"session 0",
            "the old snapshot keeps its bytes"
        );
        f.check();
        // The wheel moved with them: all four expire.
        f.clock.advance_ms(200);
        assert_eq!(f.sweep(16).len(), 4);
        f.check();
    }

    #[test]
    fn a_reader_never_waits_for_the_writer() {
        let f = Fixture::new(1_000);
        for n in 0..64 {
            f.insert(n, 100_000);
        }
        let (held_tx, held) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let f = &f;
            s.spawn(move || {
                f.shard.hold_writer(|| {
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                });
            });
            held.recv().unwrap();
            // The writer mutex is held until we release it: reads go on.
            for n in 0..64 {
                assert!(f.get(n, 1_001, true).is_some());
            }
            assert!(
                f.shard.writer.try_lock().is_none(),
                "the writer held its mutex throughout"
            );
            release.send(()).unwrap();
        });
    }
}
