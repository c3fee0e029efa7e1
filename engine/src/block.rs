//! One allocation per session: a 56-byte header with the session's fields,
//! followed by its metadata bytes, reference-counted like an `Arc`.
//!
//! Why: a session used to be a 64-byte entry inline in its shard's table
//! plus an `Arc<[u8]>` for the metadata. A lookup then touched the table's
//! control bytes, the entry (in a table eight times larger than a table of
//! pointers) and the `Arc`'s count, and the memory per session was the
//! entry at the table's load factor plus the `Arc` header and the
//! allocator's rounding (136 bytes beyond the metadata, against a target of
//! 80). Here the table holds one 8-byte pointer per session and the header
//! shares the block's first cache line with the reference count: a lookup
//! is the control bytes, a pointer in a small table, and one line of the
//! block. At 200 bytes of metadata a block is exactly 256 bytes, one of
//! mimalloc's size classes.
//!
//! [`Metadata`] is both the shard's entry and the public handle a
//! [`Session`](crate::Session) snapshot holds: cloning it shares the block.
//! Holders outside the shard read only the metadata bytes, which never
//! change after the block is built. The shard reads and writes the header's
//! mutable fields (last access, timeout, wheel links, persisted access)
//! through atomics, so no `&mut` to a shared block ever exists; the only
//! plain fields (`len`, `id`, `created_ms`) are written while the block is
//! unique ([`Metadata::header_mut`]).
//!
//! The unsafe code is this module's allocation, dereference and
//! deallocation; its tests run under Miri (`scripts/miri.sh`).
#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::id::SessionId;
use crate::wheel::NIL;

/// The fields a session keeps beside its metadata. `repr(C)`: the layout is
/// the one this comment describes, 56 bytes with alignment 8 (4 of them
/// padding).
#[repr(C)]
pub(crate) struct Header {
    /// Handles sharing the block (the shard's, and snapshots').
    refs: AtomicU32,
    /// Metadata bytes after the header.
    len: u32,
    /// Creation time, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Written under the shard's shared lock by readers (compare-and-swap;
    /// the top bit marks a session seen expired, see `shard.rs`).
    pub(crate) last_access_ms: AtomicU64,
    pub(crate) id: SessionId,
    /// Inactivity timeout in ms; `TIMEOUT_NEVER` for none.
    pub(crate) timeout_ms: AtomicU32,
    /// Place in the shard's timer wheel (bucket indices, see `wheel.rs`).
    pub(crate) prev: AtomicU32,
    pub(crate) next: AtomicU32,
}

const HEADER_LEN: usize = std::mem::size_of::<Header>();
const _: () = assert!(HEADER_LEN == 56 && std::mem::align_of::<Header>() == 8);

/// Reference counts above this abort the process, as `Arc`'s do: only a
/// leak of two billion handles could reach it.
const REFS_MAX: u32 = i32::MAX as u32;

/// A session's metadata bytes, shared without copying: a snapshot holds one,
/// and it stays valid after the session changes or goes.
///
/// Build one from bytes (`Metadata::from(&b"..."[..])`, `Metadata::from(vec)`)
/// when implementing a backend; the engine builds its own.
pub struct Metadata {
    ptr: NonNull<Header>,
}

// SAFETY: the block is shared between threads like an `Arc`'s contents. Its
// bytes are immutable after construction; every header field that changes
// while shared is an atomic; the plain header fields are written only
// through `header_mut`, which requires the only handle.
unsafe impl Send for Metadata {}
// SAFETY: as for `Send`: `&Metadata` gives only shared reads and atomics.
unsafe impl Sync for Metadata {}

impl Metadata {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(HEADER_LEN.checked_add(len).expect("metadata length overflows"), 8)
            .expect("metadata length overflows")
    }

    /// A block holding a copy of `bytes`, with a blank session header.
    ///
    /// # Panics
    /// If `bytes` is 4 GiB or longer (the engine's limit is 16 MiB), or the
    /// allocation fails (as `Vec` does).
    #[must_use]
    pub fn copy_from(bytes: &[u8]) -> Self {
        let len = u32::try_from(bytes.len()).expect("metadata of 4 GiB or more");
        let layout = Self::layout(bytes.len());
        // SAFETY: the layout's size is at least HEADER_LEN > 0.
        let raw = unsafe { alloc(layout) };
        // The layout's alignment is the header's (8), so the cast is aligned.
        #[allow(clippy::cast_ptr_alignment)]
        let Some(ptr) = NonNull::new(raw.cast::<Header>()) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `raw` is a fresh allocation of HEADER_LEN + len bytes,
        // aligned to 8 (the header's alignment): the header fits at its
        // start and `len` bytes after it; `bytes` is a different object, so
        // the copy does not overlap.
        unsafe {
            ptr.as_ptr().write(Header {
                refs: AtomicU32::new(1),
                len,
                created_ms: 0,
                last_access_ms: AtomicU64::new(0),
                id: SessionId::from_bytes([0; 16]),
                timeout_ms: AtomicU32::new(0),
                prev: AtomicU32::new(NIL),
                next: AtomicU32::new(NIL),
            });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.add(HEADER_LEN), bytes.len());
        }
        Self { ptr }
    }

    /// The metadata bytes.
    #[inline]
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.header().len as usize;
        // SAFETY: the block holds `len` initialised bytes right after the
        // header (`copy_from`), never written again, and lives while `self`
        // does. The pointer comes from the allocation, not from the
        // `&Header`, so it may address the bytes past the header.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(HEADER_LEN), len) }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the block is alive while `self` holds a reference, and its
        // header was initialised in `copy_from`. Shared fields are atomics.
        unsafe { self.ptr.as_ref() }
    }

    /// Asks the CPU to start loading the header's cache line, so that a
    /// loop over many cold blocks can overlap their misses (a hint: it
    /// changes nothing and never faults). A no-op off x86-64 and under Miri.
    #[inline]
    pub(crate) fn prefetch(&self) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has; a
        // prefetch reads nothing into the program and cannot fault, and the
        // address is this live block's anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.ptr.as_ptr().cast::<i8>());
        }
    }

    /// The header for writing its plain fields, if this is the only handle
    /// (as `Arc::get_mut`).
    pub(crate) fn header_mut(&mut self) -> Option<&mut Header> {
        if self.header().refs.load(Ordering::Acquire) != 1 {
            return None;
        }
        // SAFETY: this is the only handle and `&mut self` borrows it
        // uniquely, so no other reference to the header exists; the Acquire
        // load orders us after the other handles' last use (their Release
        // decrement in `drop`).
        Some(unsafe { self.ptr.as_mut() })
    }

    /// Fills the session fields of a block about to enter a shard (copying
    /// the bytes into a block of its own first if this one is shared).
    pub(crate) fn init(&mut self, id: SessionId, created_ms: u64, last_access_ms: u64, timeout_ms: u32) {
        if self.header_mut().is_none() {
            *self = Self::copy_from(self.as_bytes());
        }
        let h = self.header_mut().expect("a fresh copy is unique");
        h.id = id;
        h.created_ms = created_ms;
        *h.last_access_ms.get_mut() = last_access_ms;
        *h.timeout_ms.get_mut() = timeout_ms;
        *h.prev.get_mut() = NIL;
        *h.next.get_mut() = NIL;
    }

    /// True if both handles share one block.
    #[inline]
    #[must_use]
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.ptr == b.ptr
    }
}

impl Clone for Metadata {
    #[inline]
    fn clone(&self) -> Self {
        // Relaxed, as `Arc::clone`: a new handle comes from an existing one,
        // which already orders the block's contents for this thread.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > REFS_MAX {
            std::process::abort();
        }
        Self { ptr: self.ptr }
    }
}

impl Drop for Metadata {
    #[inline]
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other handle's use happens before this free (as `Arc`).
        fence(Ordering::Acquire);
        let layout = Self::layout(self.header().len as usize);
        // SAFETY: this was the last handle: nothing references the block
        // any more, and it was allocated in `copy_from` with this layout.
        unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

impl Deref for Metadata {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Metadata {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for Metadata {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Metadata {}

impl Hash for Metadata {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({} bytes)", self.len())
    }
}

impl From<&[u8]> for Metadata {
    fn from(bytes: &[u8]) -> Self {
        Self::copy_from(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for Metadata {
    fn from(bytes: &[u8; N]) -> Self {
        Self::copy_from(bytes)
    }
}

impl From<Vec<u8>> for Metadata {
    fn from(bytes: Vec<u8>) -> Self {
        Self::copy_from(&bytes)
    }
}

impl From<&str> for Metadata {
    fn from(text: &str) -> Self {
        Self::copy_from(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_possible_truncation)] // below 256
    fn bytes_round_trip_at_every_small_length() {
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let m = Metadata::from(&bytes[..]);
            assert_eq!(m.as_bytes(), &bytes[..]);
            assert_eq!(m.len(), len);
        }
    }

    #[test]
    fn clones_share_the_block_and_the_last_drop_frees_it() {
        let a = Metadata::from(&b"shared"[..]);
        let b = a.clone();
        assert!(Metadata::ptr_eq(&a, &b));
        assert_eq!(a.header().refs.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(&*b, b"shared");
        assert_eq!(b.header().refs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn prefetch_is_only_a_hint() {
        let a = Metadata::from(vec![7u8; 200]);
        let b = a.clone();
        a.prefetch();
        b.prefetch();
        assert_eq!(a.as_bytes(), &[7u8; 200][..]);
        assert_eq!(a.header().refs.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn header_mut_only_when_unique() {
        let mut a = Metadata::from(&b"x"[..]);
        let id = SessionId::from_bytes([7; 16]);
        a.header_mut().expect("unique").id = id;
        a.header_mut().expect("unique").created_ms = 42;
        let b = a.clone();
        assert!(a.header_mut().is_none());
        drop(b);
        let h = a.header_mut().expect("unique again");
        assert_eq!((h.id, h.created_ms), (id, 42));
        assert_eq!(&*a, b"x");
    }

    #[test]
    fn atomics_in_a_shared_block_are_writable_from_many_threads() {
        let m = Metadata::from(vec![1u8; 200]);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let m = m.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        m.header()
                            .last_access_ms
                            .fetch_max(t * 100 + i, Ordering::Relaxed);
                        let c = m.clone();
                        assert_eq!(c.len(), 200);
                    }
                });
            }
        });
        assert_eq!(m.header().last_access_ms.load(Ordering::Relaxed), 349);
        assert_eq!(m.header().refs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn init_copies_a_shared_block_instead_of_writing_it() {
        let mut a = Metadata::from(&b"bytes"[..]);
        let b = a.clone();
        let id = SessionId::from_bytes([1; 16]);
        a.init(id, 5, 6, 7);
        assert!(!Metadata::ptr_eq(&a, &b));
        assert_eq!(b.header().id, SessionId::from_bytes([0; 16]));
        let h = a.header();
        assert_eq!((h.id, h.created_ms), (id, 5));
        assert_eq!(h.last_access_ms.load(Ordering::Relaxed), 6);
        assert_eq!(h.timeout_ms.load(Ordering::Relaxed), 7);
        assert_eq!(&*a, b"bytes");
        let before = a.as_bytes().as_ptr();
        a.init(id, 8, 9, 10);
        assert_eq!(
            a.as_bytes().as_ptr(),
            before,
            "a unique block is written in place"
        );
        assert_eq!(a.header().created_ms, 8);
    }

    #[test]
    fn equality_and_hash_follow_the_bytes() {
        use std::collections::HashSet;
        let a = Metadata::from("same");
        let b = Metadata::from(&b"same"[..]);
        assert!(!Metadata::ptr_eq(&a, &b));
        assert_eq!(a, b);
        let set: HashSet<Metadata> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(format!("{:?}", Metadata::from("abc")), "Metadata(3 bytes)");
    }
}
