//! A shard's session entries: fixed 64-byte slots in chunks that never move,
//! addressed by `u32` index, with a free list threaded through unused slots.
//!
//! Stable indices let the hash index store 4 bytes per session and let the
//! timer wheel link entries by index (see `wheel.rs`).

use std::sync::Arc;

use crate::id::SessionId;
use crate::limits::SLAB_CHUNK_ENTRIES;
use crate::session::{Session, Timeout, TIMEOUT_NEVER};
use crate::wheel::{Link, WheelStore, INDEX_MAX, NIL};

/// One session, or a free slot (`metadata == None`).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: SessionId,
    pub(crate) metadata: Option<Arc<[u8]>>,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    /// Inactivity timeout in ms; `TIMEOUT_NEVER` for none.
    pub(crate) timeout_ms: u32,
    /// Bumped by every metadata change; `update` commits only if unchanged.
    pub(crate) version: u32,
    /// Wheel links while scheduled; `next` threads the free list while free.
    pub(crate) link: Link,
}

// 64 bytes: one cache line per session on x86-64.
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

impl Entry {
    const FREE: Entry = Entry {
        id: SessionId::from_bytes([0; 16]),
        metadata: None,
        created_ms: 0,
        last_access_ms: 0,
        timeout_ms: TIMEOUT_NEVER,
        version: 0,
        link: Link::UNLINKED,
    };

    /// Deadline in ms since the epoch; `None` if the session never expires.
    #[inline]
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        (self.timeout_ms != TIMEOUT_NEVER)
            .then(|| self.last_access_ms.saturating_add(u64::from(self.timeout_ms)))
    }

    /// True if the session's deadline is at or before `now_ms`.
    #[inline]
    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms().is_some_and(|d| d <= now_ms)
    }

    pub(crate) fn snapshot(&self) -> Session {
        let metadata = self.metadata.as_ref().expect("snapshot of a free slot");
        Session::new(
            self.id,
            Arc::clone(metadata),
            self.created_ms,
            self.last_access_ms,
            Timeout::from_stored(self.timeout_ms),
        )
    }

    fn into_session(self) -> Session {
        let timeout = Timeout::from_stored(self.timeout_ms);
        let metadata = self.metadata.expect("a freed slot held a session");
        Session::new(self.id, metadata, self.created_ms, self.last_access_ms, timeout)
    }
}

pub(crate) struct Slab {
    chunks: Vec<Box<[Entry]>>,
    /// Head of the free list (through `link.next`), `NIL` if none.
    free: u32,
    len: usize,
}

impl Slab {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (used or free): the bound of positions to list.
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.len() * SLAB_CHUNK_ENTRIES
    }

    #[inline]
    pub(crate) fn get(&self, index: u32) -> &Entry {
        let i = index as usize;
        &self.chunks[i / SLAB_CHUNK_ENTRIES][i % SLAB_CHUNK_ENTRIES]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, index: u32) -> &mut Entry {
        let i = index as usize;
        &mut self.chunks[i / SLAB_CHUNK_ENTRIES][i % SLAB_CHUNK_ENTRIES]
    }

    /// Stores `entry` in a free slot, growing by one chunk if none is free.
    /// Hands the entry back when the shard has used every index it can address.
    pub(crate) fn insert(&mut self, entry: Entry) -> Result<u32, Entry> {
        debug_assert!(entry.metadata.is_some() && !entry.link.is_linked());
        if self.free == NIL && self.grow().is_none() {
            return Err(entry);
        }
        let index = self.free;
        let slot = self.get_mut(index);
        debug_assert!(slot.metadata.is_none(), "free list points at a used slot {index}");
        let next_free = slot.link.next;
        *slot = entry;
        self.free = next_free;
        self.len += 1;
        Ok(index)
    }

    /// Frees a used, unscheduled slot and returns what it held.
    pub(crate) fn remove(&mut self, index: u32) -> Session {
        let free = self.free;
        let slot = self.get_mut(index);
        debug_assert!(slot.metadata.is_some(), "removing free slot {index}");
        debug_assert!(!slot.link.is_linked(), "removing scheduled slot {index}");
        let mut old = std::mem::replace(slot, Entry::FREE);
        slot.link.next = free;
        self.free = index;
        self.len -= 1;
        old.link = Link::UNLINKED;
        old.into_session()
    }

    fn grow(&mut self) -> Option<()> {
        let base = self.capacity();
        if base + SLAB_CHUNK_ENTRIES - 1 > INDEX_MAX as usize {
            return None;
        }
        let mut chunk: Vec<Entry> = (0..SLAB_CHUNK_ENTRIES).map(|_| Entry::FREE).collect();
        // Thread the new slots onto the free list in index order.
        for (offset, entry) in chunk.iter_mut().enumerate() {
            entry.link.next = if offset + 1 < SLAB_CHUNK_ENTRIES {
                u32::try_from(base + offset + 1).expect("checked against INDEX_MAX")
            } else {
                self.free
            };
        }
        self.free = u32::try_from(base).expect("checked against INDEX_MAX");
        self.chunks.push(chunk.into_boxed_slice());
        Some(())
    }

    /// Used slots at positions `from..`, in position order.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, &Entry)> {
        let skip_chunks = from / SLAB_CHUNK_ENTRIES;
        self.chunks
            .iter()
            .enumerate()
            .skip(skip_chunks)
            .flat_map(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .map(move |(o, e)| (c * SLAB_CHUNK_ENTRIES + o, e))
            })
            .skip(from % SLAB_CHUNK_ENTRIES)
            .filter(|(_, e)| e.metadata.is_some())
    }
}

impl WheelStore for Slab {
    #[inline]
    fn link(&mut self, index: u32) -> &mut Link {
        &mut self.get_mut(index).link
    }

    #[inline]
    fn deadline(&self, index: u32) -> Option<u64> {
        self.get(index).deadline_ms()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            id: SessionId::from_bytes([n; 16]),
            metadata: Some(Arc::from(vec![n])),
            ..Entry::FREE
        }
    }

    #[test]
    fn reuses_freed_slots_and_grows_by_chunks() {
        let mut slab = Slab::new();
        let a = slab.insert(entry(1)).unwrap();
        let b = slab.insert(entry(2)).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(slab.capacity(), SLAB_CHUNK_ENTRIES);
        assert_eq!(slab.remove(a).metadata(), &[1]);
        assert_eq!(slab.insert(entry(3)).unwrap(), a, "freed slot reused first");
        for n in 0..SLAB_CHUNK_ENTRIES {
            slab.insert(entry((n % 250) as u8)).unwrap();
        }
        assert_eq!(slab.len(), SLAB_CHUNK_ENTRIES + 2);
        assert_eq!(slab.capacity(), 2 * SLAB_CHUNK_ENTRIES);
        let listed: Vec<usize> = slab.iter_from(SLAB_CHUNK_ENTRIES - 1).map(|(p, _)| p).collect();
        assert_eq!(listed.first(), Some(&(SLAB_CHUNK_ENTRIES - 1)));
        assert_eq!(listed.len(), 3);
    }
}
