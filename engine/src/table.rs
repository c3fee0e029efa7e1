//! A shard's index: an open-addressing table of tagged pointers to session
//! blocks, read without any lock, written by the shard's writer alone.
//!
//! ```text
//! slot (u64):  [ tag: 16 bits ][ block pointer: 48 bits ]   0 = empty, 1 = tombstone
//! ```
//!
//! **One miss to the block.** A slot packs the top 16 bits of the id's hash
//! beside the block's address, so a lookup loads one slot line and goes
//! straight to the block whose tag matches (a false match, 1 in 65,536 per
//! probe, costs one block read); there is no separate control-byte array to
//! load first. Probing is linear, eight slots to a cache line. The table
//! rebuilds (same size if tombstones took the room, else twice the size)
//! once live entries and tombstones reach 7/8 of its slots.
//!
//! **Readers** (`find`, `slot_entry`) load slots with `Acquire` and never
//! write. The blocks and the table itself stay allocated for as long as a
//! reader could hold their address: the caller pins a `crossbeam-epoch`
//! guard before loading the table from the shard, and the writer releases a
//! removed block's reference, or a replaced table, only through that
//! guard's `defer`, which runs once every thread pinned before it has
//! unpinned.
//!
//! **The writer** (the shard's, under its mutex) publishes with `Release`
//! stores: a block is fully written before its pointer is stored, so a
//! reader that sees the pointer sees the block. A slot goes from empty to a
//! pointer, from a pointer to another pointer (an update in place) or to a
//! tombstone, from a tombstone to a pointer; never back to empty except in a
//! fresh table. A reader racing with an insert may miss it (the insert had
//! not happened yet), never sees half a block, and never loses an entry that
//! sits behind a slot being reused (probing skips tombstones and other ids).
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ahash::RandomState;

use crate::block::{prefetch, BlockRef, Header, Metadata};
use crate::id::SessionId;

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;
/// Bits of a slot that hold the pointer (x86-64 and aarch64 Linux user
/// addresses fit in 47 and 48 bits).
const PTR_BITS: u64 = (1 << 48) - 1;
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
    slots: Box<[AtomicU64]>,
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
        v.resize_with(slots, || AtomicU64::new(EMPTY));
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
            .saturating_mul(8)
            .div_ceil(7)
            .next_power_of_two()
            .max(SLOTS_MIN)
    }

    /// Live entries and tombstones the table holds before it must rebuild.
    pub(crate) fn limit(&self) -> usize {
        self.slots.len() / 8 * 7
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    #[inline]
    fn start(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which the mask selects.
        #[allow(clippy::cast_possible_truncation)]
        let start = hash as usize & self.mask;
        start
    }

    /// The block a non-empty, non-tombstone slot value points to.
    ///
    /// # Safety
    /// `value` was loaded from a slot of a table the caller may read (an
    /// epoch guard pinned before the table was loaded, or the shard's
    /// writer), so the block is allocated for as long as `'a`.
    #[inline]
    unsafe fn block<'a>(value: u64) -> BlockRef<'a> {
        // SAFETY: the writer stores only pointers from `Metadata::into_raw`
        // (non-null, aligned, provenance exposed by `entry`) in the low 48
        // bits, and the table holds a counted reference until the epoch
        // after it removes one (see the module doc).
        unsafe { BlockRef::from_raw(pointer(value)) }
    }

    /// Starts loading the cache line of `hash`'s first slot.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(std::ptr::from_ref(&self.slots[self.start(hash)]).cast());
    }

    /// The block in `hash`'s first slot if its tag matches (a prefetch hint).
    #[inline]
    pub(crate) fn first_candidate(&self, hash: u64) -> Option<BlockRef<'_>> {
        let value = self.slots[self.start(hash)].load(Ordering::Acquire);
        // SAFETY: loaded from this table under the caller's guard.
        (value > TOMBSTONE && value & !PTR_BITS == tag_of(hash)).then(|| unsafe { Self::block(value) })
    }

    /// The block of `id`, if the table holds it. A reader: the caller holds
    /// an epoch guard pinned before it loaded this table.
    #[inline]
    pub(crate) fn find(&self, hash: u64, id: &SessionId) -> Option<BlockRef<'_>> {
        let tag = tag_of(hash);
        let mut at = self.start(hash);
        for _ in 0..self.slots.len() {
            let value = self.slots[at].load(Ordering::Acquire);
            if value == EMPTY {
                return None;
            }
            if value != TOMBSTONE && value & !PTR_BITS == tag {
                // SAFETY: loaded from this table under the caller's guard.
                let block = unsafe { Self::block(value) };
                if block.id == *id {
                    return Some(block);
                }
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// The block in slot `at`, if any (readers and the writer).
    #[inline]
    pub(crate) fn slot_entry(&self, at: usize) -> Option<BlockRef<'_>> {
        let value = self.slots[at].load(Ordering::Acquire);
        // SAFETY: loaded from this table under the caller's guard.
        (value > TOMBSTONE).then(|| unsafe { Self::block(value) })
    }

    /// The writer's: the slot holding `id`.
    pub(crate) fn find_slot(&self, hash: u64, id: &SessionId) -> Option<usize> {
        let tag = tag_of(hash);
        let mut at = self.start(hash);
        for _ in 0..self.slots.len() {
            let value = self.slots[at].load(Ordering::Relaxed);
            if value == EMPTY {
                return None;
            }
            if value != TOMBSTONE && value & !PTR_BITS == tag {
                // SAFETY: the writer reads its own table; its blocks are
                // alive while the table holds them.
                if unsafe { Self::block(value) }.id == *id {
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
            match self.slots[at].load(Ordering::Relaxed) {
                EMPTY => return (at, false),
                TOMBSTONE => return (at, true),
                _ => at = (at + 1) & self.mask,
            }
        }
    }

    /// The writer's: the block in an occupied slot.
    pub(crate) fn header(&self, at: usize) -> BlockRef<'_> {
        self.slot_entry(at).expect("the writer names only occupied slots")
    }

    /// The writer's: publishes `block` (its header complete) in a free slot.
    pub(crate) fn store(&self, at: usize, hash: u64, block: Metadata) {
        debug_assert!(
            self.slots[at].load(Ordering::Relaxed) <= TOMBSTONE,
            "slot {at} is taken"
        );
        self.slots[at].store(entry(hash, block), Ordering::Release);
    }

    /// The writer's: puts `block` in place of the one in slot `at` and
    /// returns the old one's reference (release it through the epoch).
    pub(crate) fn replace(&self, at: usize, hash: u64, block: Metadata) -> Metadata {
        let old = self.slots[at].swap(entry(hash, block), Ordering::AcqRel);
        // SAFETY: the slot held a pointer from `into_raw`, whose reference
        // the table owned and now hands back, once.
        unsafe { Metadata::from_raw(pointer(old)) }
    }

    /// The writer's: empties slot `at` (a tombstone) and returns its block's
    /// reference (release it through the epoch).
    pub(crate) fn take(&self, at: usize) -> Metadata {
        let old = self.slots[at].swap(TOMBSTONE, Ordering::AcqRel);
        // SAFETY: as in `replace`.
        unsafe { Metadata::from_raw(pointer(old)) }
    }

    /// The writer's: copies every entry into `into` (an empty, larger or
    /// equal table), handing each its new slot; this table then no longer
    /// owns the blocks. Prefetches a few blocks ahead: they are cold and
    /// scattered, and each one's id must be rehashed.
    pub(crate) fn move_into(
        &self,
        into: &Table,
        hasher: &RandomState,
        mut moved: impl FnMut(usize, BlockRef<'_>),
    ) {
        const AHEAD: usize = 8;
        let occupied = |at: usize| self.slots[at].load(Ordering::Relaxed) > TOMBSTONE;
        let mut ahead = (0..self.slots.len()).filter(|&at| occupied(at));
        let mut queue = std::collections::VecDeque::with_capacity(AHEAD);
        loop {
            while queue.len() < AHEAD {
                let Some(at) = ahead.next() else { break };
                prefetch(pointer(self.slots[at].load(Ordering::Relaxed)).as_ptr().cast());
                queue.push_back(at);
            }
            let Some(at) = queue.pop_front() else { break };
            let value = self.slots[at].load(Ordering::Relaxed);
            // SAFETY: the writer reads its own table.
            let block = unsafe { Self::block(value) };
            let hash = hash_id(hasher, &block.id);
            let (to, _) = into.free_slot(hash);
            into.slots[to].store(tag_of(hash) | (value & PTR_BITS), Ordering::Release);
            moved(to, block);
        }
        self.owns_blocks.store(false, Ordering::Relaxed);
    }
}

fn entry(hash: u64, block: Metadata) -> u64 {
    let ptr = block.into_raw().as_ptr().expose_provenance() as u64;
    // A pointer beyond 48 bits would lose its top: never on the platforms
    // this runs on, but cheap to check where it would corrupt memory.
    assert!(ptr & !PTR_BITS == 0, "block address {ptr:#x} beyond 48 bits");
    tag_of(hash) | ptr
}

fn pointer(value: u64) -> NonNull<Header> {
    // Below 2^48, so the cast cannot truncate on a 64-bit target.
    #[allow(clippy::cast_possible_truncation)]
    let address = (value & PTR_BITS) as usize;
    NonNull::new(std::ptr::with_exposed_provenance_mut::<Header>(address)).expect("an occupied slot")
}

impl Drop for Table {
    fn drop(&mut self) {
        if !*self.owns_blocks.get_mut() {
            return;
        }
        for slot in &mut *self.slots {
            let value = *slot.get_mut();
            if value > TOMBSTONE {
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
        let at = table.find_slot(hash(7), &id(7)).unwrap();
        let old = table.replace(at, hash(7), Metadata::session(b"new", id(7), 1, 1, 100));
        assert_eq!(&*old, b"session 7");
        assert_eq!(table.find(hash(7), &id(7)).unwrap().bytes(), b"new");
        for n in (0..50).step_by(3) {
            let at = table.find_slot(hash(n), &id(n)).unwrap();
            drop(table.take(at));
        }
        for n in 0..50 {
            assert_eq!(table.find(hash(n), &id(n)).is_some(), n % 3 != 0, "{n}");
        }
        let bigger = Table::new(128, 1).unwrap();
        let mut moved = 0;
        table.move_into(&bigger, &hasher, |at, h| {
            assert_eq!(bigger.header(at).id, h.id);
            moved += 1;
        });
        assert_eq!(moved, 50 - 17);
        drop(table); // releases nothing: the blocks moved
        for n in 0..50 {
            assert_eq!(bigger.find(hash(n), &id(n)).is_some(), n % 3 != 0, "{n}");
        }
        drop(old);
    }

    #[test]
    fn sizes() {
        assert_eq!(Table::slots_for(0), SLOTS_MIN);
        assert_eq!(Table::slots_for(7), SLOTS_MIN);
        assert_eq!(Table::slots_for(8), 16);
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
