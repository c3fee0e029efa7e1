//! A shard's index: an open-addressing table of tagged pointers to session
//! blocks, read without any lock, written by the shard's writer alone.
//!
//! ```text
//! slot (a pointer):  [ tag: 16 bits ][ block address: 48 bits ]   null = empty, 1 = tombstone
//! ```
//!
//! **One miss to the block.** A slot packs the top 16 bits of the id's hash
//! beside the block's address, so a lookup loads one slot line and goes
//! straight to the block whose tag matches (a false match, 1 in 65,536 per
//! probe, costs one block read); there is no separate control-byte array to
//! load first. Probing is linear, eight slots to a cache line. The table
//! rebuilds (same size if tombstones took the room, else twice the size)
//! once live entries and tombstones reach 3/4 of its slots: linear probing's
//! clusters lengthen fast beyond that (a search for an absent id, which
//! every create makes, reads 8.5 slots on average at 3/4 full, 32 at 7/8).
//!
//! **Readers** (`find`, `slot_entry`) load slots with `Acquire` and never
//! write. The blocks and the table itself stay allocated for as long as a
//! reader could hold their address: the caller pins a `crossbeam-epoch`
//! guard before loading the table from the shard, and the writer releases a
//! removed block's reference, or a replaced table, only through that
//! guard's `defer`, which runs once every thread pinned before it has
//! unpinned (a removed block comes out as an [`Unlinked`], which defers
//! its release when dropped, also by a panic's unwinding).
//!
//! **The writer** (the shard's, under its mutex) publishes with `Release`
//! stores: a block is fully written before its pointer is stored, so a
//! reader that sees the pointer sees the block. A slot goes from empty to a
//! pointer, from a pointer to another pointer (an update in place) or to a
//! tombstone, from a tombstone to a pointer, and from a tombstone back to
//! empty only where no probe needs it: a removal whose next slot is empty
//! empties its own tombstone and the run of tombstones just before it
//! ([`Table::take`]). That is safe for readers because every
//! live entry's probe path (its first slot up to its own) holds no empty
//! slot from the entry's insert (which took the first free slot, so every
//! slot before it was live) until its removal (an emptied slot is followed
//! by an empty one, so no live entry sits beyond it on a path through it);
//! a reader whose search began after an insert therefore finds every slot
//! on that entry's path non-empty. A reader racing with an insert may miss
//! it (the insert had not happened yet), never sees half a block, and never
//! loses an entry that sits behind a slot being reused (probing skips
//! tombstones and other ids).
#![allow(unsafe_code)]

// The tag lives in the top 16 bits of a 64-bit pointer: on a narrower
// target it would be cut to nothing, every lookup would miss and an id
// could be stored twice.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("session-engine's shard table needs 64-bit pointers (it tags their top 16 bits)");

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use ahash::RandomState;
use crossbeam_epoch::Guard;

use crate::block::{prefetch, BlockRef, Header, Metadata};
use crate::id::SessionId;

/// A slot's value: a block pointer tagged in its top 16 bits (the tag rides
/// in the pointer with `map_addr`, keeping the block's provenance), null, or
/// the tombstone address 1.
type Slot = *mut Header;
const TOMBSTONE_ADDR: usize = 1;
/// Bits of a slot that hold the address (x86-64 and aarch64 Linux user
/// addresses fit in 47 and 48 bits).
const PTR_BITS: u64 = (1 << 48) - 1;

#[inline]
fn tombstone() -> Slot {
    std::ptr::without_provenance_mut(TOMBSTONE_ADDR)
}

/// Neither empty nor a tombstone.
#[inline]
fn occupied(slot: Slot) -> bool {
    slot.addr() > TOMBSTONE_ADDR
}

#[inline]
fn slot_tag(slot: Slot) -> u64 {
    slot.addr() as u64 & !PTR_BITS
}
/// Fewest slots a table has (one cache line).
pub(crate) const SLOTS_MIN: usize = 8;

/// The tag bits of a hash, in place.
#[inline]
fn tag_of(hash: u64) -> u64 {
    hash & !PTR_BITS
}

/// The keyed hash of an id. Keys are per process, or the data directory's
/// (`RandomState::new` seeds from the OS), so ids chosen by an attacker
/// cannot be aimed at one shard or one probe sequence.
#[inline]
pub(crate) fn hash_id(hasher: &RandomState, id: &SessionId) -> u64 {
    hasher.hash_one(id.to_u128())
}

pub(crate) struct Table {
    slots: Box<[AtomicPtr<Header>]>,
    mask: usize,
    /// Bumped at every rebuild (list cursors remember it).
    generation: u32,
    /// Whether dropping the table releases the blocks it points to: not
    /// once a rebuild moved them to a successor.
    owns_blocks: AtomicBool,
}

impl Table {
    /// An empty table of `slots` slots (a power of two, at least
    /// `SLOTS_MIN`), or the allocation error.
    pub(crate) fn new(slots: usize, generation: u32) -> Result<Self, std::collections::TryReserveError> {
        debug_assert!(slots.is_power_of_two() && slots >= SLOTS_MIN, "{slots} slots");
        let mut v = Vec::new();
        v.try_reserve_exact(slots)?;
        v.resize_with(slots, || AtomicPtr::new(std::ptr::null_mut()));
        Ok(Self {
            slots: v.into_boxed_slice(),
            mask: slots - 1,
            generation,
            owns_blocks: AtomicBool::new(true),
        })
    }

    /// The slots a table needs to hold `entries` below its load limit.
    pub(crate) fn slots_for(entries: usize) -> usize {
        entries
            .saturating_mul(4)
            .div_ceil(3)
            .next_power_of_two()
            .max(SLOTS_MIN)
    }

    /// Live entries and tombstones the table holds before it must rebuild.
    pub(crate) fn limit(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// The slot a lookup of `hash` probes first.
    #[inline]
    pub(crate) fn start(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which the mask selects.
        #[allow(clippy::cast_possible_truncation)]
        let start = hash as usize & self.mask;
        start
    }

    /// The block an occupied slot points to.
    ///
    /// # Safety
    /// `slot` was loaded from a slot of a table the caller may read (an
    /// epoch guard pinned before the table was loaded, or the shard's
    /// writer), so the block is allocated for as long as `'a`.
    #[inline]
    unsafe fn block<'a>(slot: Slot) -> BlockRef<'a> {
        // SAFETY: the writer stores only pointers from `Metadata::into_raw`
        // (non-null, aligned, with their provenance) tagged in the top 16
        // bits, and the table holds a counted reference until the epoch
        // after it removes one (see the module doc).
        unsafe { BlockRef::from_raw(pointer(slot)) }
    }

    /// Starts loading the cache line of `hash`'s first slot.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(std::ptr::from_ref(&self.slots[self.start(hash)]).cast());
    }

    /// The block in `hash`'s first slot if its tag matches (a prefetch hint).
    #[inline]
    pub(crate) fn first_candidate(&self, hash: u64) -> Option<BlockRef<'_>> {
        let slot = self.slots[self.start(hash)].load(Ordering::Acquire);
        // SAFETY: loaded from this table under the caller's guard.
        (occupied(slot) && slot_tag(slot) == tag_of(hash)).then(|| unsafe { Self::block(slot) })
    }

    /// The block of `id`, if the table holds it. A reader: the caller holds
    /// an epoch guard pinned before it loaded this table.
    #[inline]
    pub(crate) fn find(&self, hash: u64, id: &SessionId) -> Option<BlockRef<'_>> {
        let tag = tag_of(hash);
        let mut at = self.start(hash);
        for _ in 0..self.slots.len() {
            let slot = self.slots[at].load(Ordering::Acquire);
            if slot.is_null() {
                return None;
            }
            if occupied(slot) && slot_tag(slot) == tag {
                // SAFETY: loaded from this table under the caller's guard.
                let block = unsafe { Self::block(slot) };
                if block.id == *id {
                    return Some(block);
                }
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// Where the run of non-empty slots (entries and tombstones) that ends
    /// just before `at` starts, looking back at most `max` slots and not
    /// past slot 0: `at` itself if slot `at - 1` is empty, 0 if the run
    /// reaches slot 0 or is longer than `max`. A reader's: the slots may
    /// change meanwhile, but every entry that stays in the table keeps the
    /// slots from its first probe to its own non-empty (module docs), so an
    /// entry with its first probe before `at` and its slot at or after it
    /// has its first probe at or after the slot returned.
    pub(crate) fn run_start(&self, at: usize, max: usize) -> usize {
        let mut start = at.min(self.slots.len());
        while start > 0 && !self.slots[start - 1].load(Ordering::Acquire).is_null() {
            if at - start >= max {
                return 0;
            }
            start -= 1;
        }
        start
    }

    /// The block in slot `at`, if any (readers and the writer).
    #[inline]
    pub(crate) fn slot_entry(&self, at: usize) -> Option<BlockRef<'_>> {
        let slot = self.slots[at].load(Ordering::Acquire);
        // SAFETY: loaded from this table under the caller's guard.
        occupied(slot).then(|| unsafe { Self::block(slot) })
    }

    /// The writer's: the slot holding `id`, or else the first free slot on
    /// its probe sequence (empty or tombstone) and whether it is a
    /// tombstone: one pass for an insert's check and its place.
    #[inline]
    pub(crate) fn find_or_free(&self, hash: u64, id: &SessionId) -> Result<usize, (usize, bool)> {
        let tag = tag_of(hash);
        let mut at = self.start(hash);
        let mut free = None;
        for _ in 0..self.slots.len() {
            let slot = self.slots[at].load(Ordering::Relaxed);
            if slot.is_null() {
                return Err(free.unwrap_or((at, false)));
            }
            if !occupied(slot) {
                free.get_or_insert((at, true));
            } else if slot_tag(slot) == tag {
                // SAFETY: the writer reads its own table; its blocks are
                // alive while the table holds them.
                if unsafe { Self::block(slot) }.id == *id {
                    return Ok(at);
                }
            }
            at = (at + 1) & self.mask;
        }
        Err(free.expect("a table below its limit has a free slot"))
    }

    /// The writer's: the slot holding `id`.
    pub(crate) fn find_slot(&self, hash: u64, id: &SessionId) -> Option<usize> {
        let tag = tag_of(hash);
        let mut at = self.start(hash);
        for _ in 0..self.slots.len() {
            let slot = self.slots[at].load(Ordering::Relaxed);
            if slot.is_null() {
                return None;
            }
            if occupied(slot) && slot_tag(slot) == tag {
                // SAFETY: the writer reads its own table; its blocks are
                // alive while the table holds them.
                if unsafe { Self::block(slot) }.id == *id {
                    return Some(at);
                }
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// The writer's: the first empty or tombstone slot on `hash`'s probe
    /// sequence, and whether it was a tombstone. The table is below its
    /// limit, so one exists.
    pub(crate) fn free_slot(&self, hash: u64) -> (usize, bool) {
        let mut at = self.start(hash);
        loop {
            let slot = self.slots[at].load(Ordering::Relaxed);
            if !occupied(slot) {
                return (at, !slot.is_null());
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The writer's: the block in an occupied slot.
    pub(crate) fn header(&self, at: usize) -> BlockRef<'_> {
        self.slot_entry(at).expect("the writer names only occupied slots")
    }

    /// The writer's: publishes `block` (its header complete) in a free slot.
    pub(crate) fn store(&self, at: usize, hash: u64, block: Metadata) {
        debug_assert!(
            !occupied(self.slots[at].load(Ordering::Relaxed)),
            "slot {at} is taken"
        );
        self.slots[at].store(entry(hash, block), Ordering::Release);
    }

    /// The writer's: puts `block` in place of the one in slot `at` and
    /// returns the old one's reference, released through `guard`'s epoch.
    pub(crate) fn replace<'g>(
        &self,
        at: usize,
        hash: u64,
        block: Metadata,
        guard: &'g Guard,
    ) -> Unlinked<'g> {
        let old = self.slots[at].swap(entry(hash, block), Ordering::AcqRel);
        // SAFETY: the slot held a pointer from `into_raw`, whose reference
        // the table owned and now hands back, once.
        Unlinked::new(unsafe { Metadata::from_raw(pointer(old)) }, guard)
    }

    /// The writer's: empties slot `at` and returns its block's reference,
    /// released through `guard`'s epoch, and how the table's count of
    /// tombstones changed. The slot becomes a tombstone (+1), unless the
    /// slot after it is empty: then it becomes empty too, with the run of
    /// tombstones just before it (minus their number). No probe for a
    /// live entry passes an empty slot, so none passes `at + 1`, and none
    /// can need the slots just before it either (see the module doc).
    /// Without this, every removal left its tombstone until a rebuild of
    /// the whole table (an O(n) pause of the shard's writers) swept it out.
    #[inline]
    pub(crate) fn take<'g>(&self, at: usize, guard: &'g Guard) -> (Unlinked<'g>, isize) {
        // A caller's bug (a slot taken twice) panics before it changes a
        // slot: emptying the tombstones before a slot with no block could
        // cut a live entry's probe path.
        assert!(
            occupied(self.slots[at].load(Ordering::Relaxed)),
            "a take of slot {at}, which holds no block"
        );
        let next_empty = self.slots[(at + 1) & self.mask].load(Ordering::Relaxed).is_null();
        let (old, change) = if next_empty {
            let old = self.slots[at].swap(std::ptr::null_mut(), Ordering::AcqRel);
            let mut reclaimed = 0;
            let mut i = at.wrapping_sub(1) & self.mask;
            while self.slots[i].load(Ordering::Relaxed).addr() == TOMBSTONE_ADDR {
                self.slots[i].store(std::ptr::null_mut(), Ordering::Release);
                reclaimed += 1;
                i = i.wrapping_sub(1) & self.mask;
            }
            (old, -reclaimed)
        } else {
            (self.slots[at].swap(tombstone(), Ordering::AcqRel), 1)
        };
        // SAFETY: as in `replace`.
        (
            Unlinked::new(unsafe { Metadata::from_raw(pointer(old)) }, guard),
            change,
        )
    }

    /// The tombstones the table holds (the writer's invariant checks).
    pub(crate) fn count_tombstones(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.load(Ordering::Relaxed).addr() == TOMBSTONE_ADDR)
            .count()
    }

    /// The writer's: copies every entry into `into` (an empty, larger or
    /// equal table that owns no blocks: [`Table::successor`]), handing each
    /// its new slot. The blocks stay this table's until the caller hands
    /// them over ([`Table::hand_blocks_to`]) where nothing can panic: a
    /// panic meanwhile (in `moved`, or the caller's own steps after it)
    /// drops a successor that releases nothing, and this table, still in
    /// use, keeps them all. Prefetches a few blocks ahead: they are cold and
    /// scattered, and each one's id must be rehashed.
    pub(crate) fn move_into(
        &self,
        into: &Table,
        hasher: &RandomState,
        mut moved: impl FnMut(usize, BlockRef<'_>),
    ) {
        const AHEAD: usize = 8;
        // Slot by slot from just after an empty slot, around the end: the
        // entries of each run of non-empty slots go in in their order, so
        // in a table of the same size each lands between its first probe
        // and its old slot, within its old run (the entries before it in
        // the new table come from before it in its run). A listing that
        // stood in this table resumes in the next one from the start of
        // its run (`Shard::list`), instead of from the shard's start. (From
        // slot 0, an entry wrapped around the end could land before one
        // that had its place: moved from the end to the start, past a
        // listing's position.)
        let n = self.slots.len();
        let origin = (0..n)
            .find(|&at| self.slots[at].load(Ordering::Relaxed).is_null())
            .map_or(0, |empty| empty + 1);
        let mut ahead = (origin..origin + n)
            .map(|at| at & self.mask)
            .filter(|&at| occupied(self.slots[at].load(Ordering::Relaxed)));
        let mut queue = std::collections::VecDeque::with_capacity(AHEAD);
        loop {
            while queue.len() < AHEAD {
                let Some(at) = ahead.next() else { break };
                prefetch(pointer(self.slots[at].load(Ordering::Relaxed)).as_ptr().cast());
                queue.push_back(at);
            }
            let Some(at) = queue.pop_front() else { break };
            let slot = self.slots[at].load(Ordering::Relaxed);
            // SAFETY: the writer reads its own table.
            let block = unsafe { Self::block(slot) };
            let hash = hash_id(hasher, &block.id);
            let (to, _) = into.free_slot(hash);
            into.slots[to].store(retag(slot, hash), Ordering::Release);
            moved(to, block);
        }
    }

    /// An empty table to move this one's entries into
    /// ([`Table::move_into`]): it owns no blocks until
    /// [`Table::hand_blocks_to`] gives them to it.
    pub(crate) fn successor(
        slots: usize,
        generation: u32,
    ) -> Result<Self, std::collections::TryReserveError> {
        let next = Self::new(slots, generation)?;
        next.owns_blocks.store(false, Ordering::Relaxed);
        Ok(next)
    }

    /// After [`Table::move_into`]: the blocks are `to`'s to release from now
    /// on, not this table's.
    pub(crate) fn hand_blocks_to(&self, to: &Table) {
        to.owns_blocks.store(true, Ordering::Relaxed);
        self.owns_blocks.store(false, Ordering::Relaxed);
    }
}

/// A block's reference just taken out of a table ([`Table::take`],
/// [`Table::replace`]). Readers pinned before the take may still hold the
/// block's address, so the reference is released only through the epoch:
/// dropping an `Unlinked` defers the release to the guard it was taken
/// under, on every path out of the writer's code, a panic's unwinding
/// included (a plain `Metadata` dropped by an unwinding writer, between
/// the take and its deferral, freed a block under the readers' feet).
/// The guard must be pinned on the collector the readers pin (the global
/// one, `crossbeam_epoch::pin`), and never `unprotected()` while readers
/// may hold the table: either would release the block under them.
pub(crate) struct Unlinked<'g> {
    block: ManuallyDrop<Metadata>,
    guard: &'g Guard,
}

impl<'g> Unlinked<'g> {
    #[inline]
    fn new(block: Metadata, guard: &'g Guard) -> Self {
        Self {
            block: ManuallyDrop::new(block),
            guard,
        }
    }
}

impl Deref for Unlinked<'_> {
    type Target = Metadata;

    #[inline]
    fn deref(&self) -> &Metadata {
        &self.block
    }
}

impl Drop for Unlinked<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: taken once, here; `self.block` is not used after.
        let block = unsafe { ManuallyDrop::take(&mut self.block) };
        self.guard.defer(move || drop(block));
    }
}

#[inline]
fn entry(hash: u64, block: Metadata) -> Slot {
    let ptr = block.into_raw().as_ptr();
    // A pointer beyond 48 bits would lose its top: never on the platforms
    // this runs on, but cheap to check where it would corrupt memory.
    assert!(
        ptr.addr() as u64 & !PTR_BITS == 0,
        "block address {ptr:p} beyond 48 bits"
    );
    retag(ptr, hash)
}

/// `slot`'s pointer with `hash`'s tag.
#[inline]
fn retag(slot: Slot, hash: u64) -> Slot {
    // The tag is the top 16 bits: on a 64-bit target it fits in `usize`.
    #[allow(clippy::cast_possible_truncation)]
    let tag = tag_of(hash) as usize;
    #[allow(clippy::cast_possible_truncation)]
    slot.map_addr(|a| (a & PTR_BITS as usize) | tag)
}

/// The block `slot` points to. Panics on a slot without one (empty, or a
/// tombstone, whose address is not null): handing that out as a block
/// would be a dangling reference (a caller's bug, caught here).
#[inline]
fn pointer(slot: Slot) -> NonNull<Header> {
    // Masking keeps the provenance `map_addr` carried along.
    #[allow(clippy::cast_possible_truncation)]
    let block = slot.map_addr(|a| a & PTR_BITS as usize);
    assert!(block.addr() > TOMBSTONE_ADDR, "a slot without a block");
    NonNull::new(block).expect("an occupied slot")
}

impl Drop for Table {
    fn drop(&mut self) {
        if !*self.owns_blocks.get_mut() {
            return;
        }
        for slot in &mut *self.slots {
            let value = *slot.get_mut();
            if occupied(value) {
                // SAFETY: the table owned this reference and nobody reads a
                // table being dropped.
                drop(unsafe { Metadata::from_raw(pointer(value)) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> SessionId {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        SessionId::from_bytes(bytes)
    }

    fn block(n: u32) -> Metadata {
        Metadata::session(format!("session {n}").as_bytes(), id(n), 1, 1, 100)
    }

    #[test]
    fn inserts_finds_replaces_takes_and_moves() {
        let hasher = RandomState::new();
        let hash = |n: u32| hash_id(&hasher, &id(n));
        let table = Table::new(64, 0).unwrap();
        for n in 0..50 {
            let (at, tomb) = table.free_slot(hash(n));
            assert!(!tomb);
            table.store(at, hash(n), block(n));
        }
        for n in 0..50 {
            assert_eq!(
                table.find(hash(n), &id(n)).unwrap().bytes(),
                format!("session {n}").as_bytes()
            );
            assert!(table.find_slot(hash(n), &id(n)).is_some());
        }
        assert!(table.find(hash(99), &id(99)).is_none());
        // Replace keeps the slot; take leaves a tombstone that probing skips.
        // SAFETY: no other thread reads this table, so the releases the
        // unprotected guard runs on the spot free nothing a reader holds.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        let at = table.find_slot(hash(7), &id(7)).unwrap();
        let old = table.replace(at, hash(7), Metadata::session(b"new", id(7), 1, 1, 100), guard);
        assert_eq!(&**old, b"session 7");
        assert_eq!(table.find(hash(7), &id(7)).unwrap().bytes(), b"new");
        for n in (0..50).step_by(3) {
            let at = table.find_slot(hash(n), &id(n)).unwrap();
            drop(table.take(at, guard));
        }
        for n in 0..50 {
            assert_eq!(table.find(hash(n), &id(n)).is_some(), n % 3 != 0, "{n}");
        }
        let bigger = Table::successor(128, 1).unwrap();
        let mut moved = 0;
        table.move_into(&bigger, &hasher, |at, h| {
            assert_eq!(bigger.header(at).id, h.id);
            moved += 1;
        });
        assert_eq!(moved, 50 - 17);
        table.hand_blocks_to(&bigger);
        drop(table); // releases nothing: the blocks moved
        for n in 0..50 {
            assert_eq!(bigger.find(hash(n), &id(n)).is_some(), n % 3 != 0, "{n}");
        }
        drop(old);
    }

    /// A rebuild at the same size moves each entry only back toward its
    /// first probe, within its run of non-empty slots, what a listing that
    /// resumes at the start of its run relies on (`Shard::list`). Moved
    /// from slot 0 on, an entry whose run wrapped around the end could
    /// take the place of one at the end, which wrapped to the start in
    /// turn: past a listing standing between them. Many small tables,
    /// filled and thinned at random, the runs often wrapping.
    #[test]
    #[allow(clippy::cast_possible_truncation)] // a hash's low bits, as `Table::start`
    fn a_rebuild_at_the_same_size_moves_entries_only_back_within_their_runs() {
        let hasher = RandomState::new();
        // SAFETY: no other thread reads these tables (see above).
        let guard = unsafe { crossbeam_epoch::unprotected() };
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..if cfg!(miri) { 20 } else { 500 } {
            let table = Table::new(32, 0).unwrap();
            let mask = table.slots() - 1;
            let mut live = Vec::new();
            for _ in 0..(next() % 40) {
                if live.len() < 22 && next() % 3 != 0 {
                    let n = u32::try_from(next() % 1_000_000).unwrap();
                    let hash = hash_id(&hasher, &id(n));
                    if table.find_slot(hash, &id(n)).is_none() && table.count_tombstones() + live.len() < 23 {
                        let (at, _) = table.free_slot(hash);
                        table.store(at, hash, block(n));
                        live.push(n);
                    }
                } else if !live.is_empty() {
                    let n = live.swap_remove(usize::try_from(next() % live.len() as u64).unwrap());
                    let at = table.find_slot(hash_id(&hasher, &id(n)), &id(n)).unwrap();
                    drop(table.take(at, guard));
                }
            }
            let offset = |at: usize, n: u32| at.wrapping_sub(hash_id(&hasher, &id(n)) as usize) & mask;
            let before: Vec<(u32, usize)> = live
                .iter()
                .map(|&n| (n, table.find_slot(hash_id(&hasher, &id(n)), &id(n)).unwrap()))
                .collect();
            let rebuilt = Table::successor(32, 1).unwrap();
            table.move_into(&rebuilt, &hasher, |_, _| {});
            table.hand_blocks_to(&rebuilt);
            for (n, old) in before {
                let new = rebuilt.find_slot(hash_id(&hasher, &id(n)), &id(n)).unwrap();
                assert!(
                    offset(new, n) <= offset(old, n),
                    "round {round}: session {n} moved from slot {old} to {new}, past where it was"
                );
            }
        }
    }

    /// A slot that holds no block (a tombstone, or empty) is never read as
    /// one: a second `take` of a slot (a caller's bug: a timer fired twice
    /// for one index) panics instead of handing out the tombstone's
    /// address as a block, which its deferred release would dereference.
    #[test]
    fn a_slot_without_a_block_is_never_taken_for_one() {
        let hasher = RandomState::new();
        let hash = hash_id(&hasher, &id(1));
        let table = Table::new(64, 0).unwrap();
        let (at, _) = table.free_slot(hash);
        table.store(at, hash, block(1));
        let collector = crossbeam_epoch::Collector::new();
        let writer = collector.register();
        drop(table.take(at, &writer.pin()));
        for _ in 0..2 {
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(table.take(at, &writer.pin()));
            }));
            assert!(again.is_err(), "a tombstone was taken for a block");
        }
        // Only slot `at` was ever used: the next one is empty.
        let empty = (at + 1) % table.slots();
        let replaced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let guard = writer.pin();
            let _old = table.replace(empty, hash, block(3), &guard);
        }));
        assert!(replaced.is_err(), "an empty slot was taken for a block");
        // Such a take changes no slot before it panics: an empty slot
        // before an occupied one stays empty (not a tombstone).
        let (b, _) = table.free_slot(hash);
        table.store(b, hash, block(2));
        let before = b.wrapping_sub(1) % table.slots();
        let tombstones = table.count_tombstones();
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(table.take(before, &writer.pin()));
        }))
        .is_err());
        assert_eq!(
            table.count_tombstones(),
            tombstones,
            "a failed take left a tombstone"
        );
        for _ in 0..256 {
            writer.pin().flush();
        }
        drop((writer, collector));
    }

    /// A writer that panics after taking a block out (a broken invariant in
    /// its steps between the take and the end of its write) leaves the
    /// block to the epoch: a reader pinned before the take still reads it.
    /// Released on the spot by the unwinding, it was freed under that
    /// reader (Miri, `scripts/miri.sh`, reports the use after free).
    #[test]
    fn a_writer_that_panics_after_a_take_leaves_the_block_to_the_epoch() {
        let hasher = RandomState::new();
        let hash = |n: u32| hash_id(&hasher, &id(n));
        let table = Table::new(64, 0).unwrap();
        for n in 0..4 {
            let (at, _) = table.free_slot(hash(n));
            table.store(at, hash(n), block(n));
        }
        // A collector of the test's own: no other test's guard holds its
        // epoch back, and dropping it runs what is still deferred (Miri's
        // leak check sees every block released).
        let collector = crossbeam_epoch::Collector::new();
        let (reader, writer) = (collector.register(), collector.register());
        let pinned = reader.pin();
        let seen = table.find(hash(1), &id(1)).expect("stored");
        let seen_replaced = table.find(hash(2), &id(2)).expect("stored");
        for n in [1, 2] {
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let guard = writer.pin();
                let at = table.find_slot(hash(n), &id(n)).unwrap();
                let _out = if n == 1 {
                    table.take(at, &guard).0
                } else {
                    table.replace(at, hash(n), block(99), &guard)
                };
                panic!("a bug after the take");
            }));
            assert!(unwound.is_err());
        }
        // The writer's pins move the epoch along as far as the reader lets.
        for _ in 0..256 {
            writer.pin().flush();
        }
        assert_eq!(seen.bytes(), b"session 1");
        assert_eq!(seen_replaced.bytes(), b"session 2");
        drop(pinned);
        drop((reader, writer, collector));
    }

    /// A move that panics halfway (a bug in the caller's step for each
    /// block) leaves every block with the old table, still in use: the
    /// successor, dropped by the unwinding, releases none of them (it
    /// released the moved ones, and the old table's reads used freed
    /// blocks: Miri, `scripts/miri.sh`, reports that).
    #[test]
    fn a_move_that_panics_halfway_leaves_every_block_with_the_old_table() {
        let hasher = RandomState::new();
        let hash = |n: u32| hash_id(&hasher, &id(n));
        let table = Table::new(64, 0).unwrap();
        for n in 0..40 {
            let (at, _) = table.free_slot(hash(n));
            table.store(at, hash(n), block(n));
        }
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let bigger = Table::successor(128, 1).unwrap();
            let mut moved = 0;
            table.move_into(&bigger, &hasher, |_, _| {
                moved += 1;
                assert!(moved < 10, "a bug while moving");
            });
            table.hand_blocks_to(&bigger);
        }));
        assert!(unwound.is_err());
        for n in 0..40 {
            let found = table.find(hash(n), &id(n)).expect("still in the old table");
            assert_eq!(found.bytes(), format!("session {n}").as_bytes());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(Table::slots_for(0), SLOTS_MIN);
        assert_eq!(Table::slots_for(6), SLOTS_MIN);
        assert_eq!(Table::slots_for(7), 16);
        for n in [100, 1_000, 100_000] {
            let t = Table::new(Table::slots_for(n), 0).unwrap();
            assert!(
                t.limit() >= n && t.limit() / 2 < n + 8,
                "{n}: {} slots",
                t.slots()
            );
        }
    }
}
