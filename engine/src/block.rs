//! The session block: one allocation per session, a 48-byte header with the
//! session's fields followed by its metadata bytes, reference-counted like an
//! `Arc`; and the protocol on its access word that lets readers slide the
//! deadline without a lock.
//!
//! Why one block: a lookup reaches the session in one cache line (id, access
//! time, timeout and reference count together), and at up to 208 bytes of
//! metadata a block fits 256 bytes, one of mimalloc's size classes. A session
//! snapshot ([`Session`](crate::Session)) holds a handle to the block
//! ([`Metadata`]), so `get` copies nothing.
//!
//! **Immutable but for one word.** A block's id, times, timeout and bytes are
//! written before it is published and never again: a write that changes a
//! session (an update, a new timeout) installs a new block (`shard.rs`). The
//! one field that changes while readers see it is `access`, the last access
//! time, changed by compare-and-swap only.
//!
//! **The access word** holds the last access time in its low 62 bits and two
//! marks, each set once and never cleared:
//! - `EXPIRED`: someone found the session past its deadline. Set by a reader
//!   before it answers "not found", by a writer that finds it so, and by the
//!   sweeper before it removes it.
//! - `RETIRED`: the shard's writer is replacing or removing this block. It
//!   marks the block, logs the change, then publishes the successor (or
//!   removes the block) and sets `EXPIRED` too: the block is *closed*.
//!   Between the two steps the block as it was still answers a reader (the
//!   read comes before the write), and a reader's slide goes into its word
//!   as usual; the writer carries the word's time over to the successor
//!   after publishing it (`close`, `carry`), so no touch made meanwhile is
//!   lost. A reader that meets a closed block looks the session up again.
//!   One case cannot be answered from the old block: its deadline has
//!   passed at the reader's time, while the successor (its access time
//!   taken by the writer, its timeout maybe changed) may be live. That
//!   reader waits for the writer to finish (`Access::Pending`): the only
//!   read that ever waits, and only when a session's deadline falls inside
//!   a write to that very session. The successor is published `RETIRED`
//!   too, until the carry (`publishing`): its own time is the writer's,
//!   from before the log append, and a reader that found it due before
//!   the slides of the old block reached it would expire a session those
//!   slides kept alive; it waits instead.
//!
//! Every liveness decision and every slide is one compare-and-swap against
//! the value the decision was made on ([`access`], [`retire`],
//! [`expire_if_due`]). So once anyone has been told a session expired, no
//! reader with an older reading of the clock can slide its deadline (the
//! word it compared against has changed), no writer can replace it with a
//! live successor, and the sweeper never removes a session whose deadline a
//! reader just moved. The `loom` model below checks these interleavings
//! exhaustively on the real functions.
//!
//! The unsafe code is this module's allocation, dereference and
//! deallocation; its tests run under Miri (`scripts/miri.sh`).
#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::id::SessionId;

/// Mark of the access word: the session was seen expired.
pub(crate) const EXPIRED: u64 = 1 << 63;
/// Mark of the access word: a writer is replacing or removing this block.
pub(crate) const RETIRED: u64 = 1 << 62;
/// Both marks: the writer that retired the block has finished.
const CLOSED: u64 = EXPIRED | RETIRED;
/// The time bits of the access word.
pub(crate) const TIME_BITS: u64 = RETIRED - 1;
const _: () = assert!(crate::limits::TIME_MS_MAX <= TIME_BITS);

/// The fields a session keeps beside its metadata. `repr(C)`: the layout is
/// the one this comment describes, 48 bytes with alignment 8; the id, the
/// access word and the timeouts share the first line.
#[repr(C)]
pub(crate) struct Header {
    /// Handles sharing the block (the shard's table, and snapshots').
    refs: AtomicU32,
    /// Metadata bytes after the header.
    len: u32,
    pub(crate) id: SessionId,
    /// Last access, ms since the Unix epoch, and the marks above.
    access: AtomicU64,
    /// Creation time, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Inactivity timeout, stored (`stored_timeout_ms`);
    /// `TIMEOUT_NEVER` for none.
    pub(crate) timeout_ms: u32,
    /// Lifetime cap counted from `created_ms`, stored like the timeout;
    /// `TIMEOUT_NEVER` for none.
    pub(crate) lifetime: u32,
}

// ---- Stored timeouts ----------------------------------------------------

/// `timeout_ms` value that stores `Timeout::Never` (no timeout, no cap).
pub(crate) const TIMEOUT_NEVER: u32 = u32::MAX;

/// The flag of a stored timeout kept in whole seconds (the low 31 bits).
const TIMEOUT_IN_SECONDS: u32 = 1 << 31;

/// A stored timeout in milliseconds (`None`: never).
#[allow(clippy::inline_always)] // on every read's liveness check
#[inline(always)]
pub(crate) fn stored_timeout_ms(stored: u32) -> Option<u64> {
    if stored & TIMEOUT_IN_SECONDS == 0 {
        Some(u64::from(stored))
    } else if stored == TIMEOUT_NEVER {
        None
    } else {
        Some(u64::from(stored & !TIMEOUT_IN_SECONDS) * 1000)
    }
}

/// Packs a finite timeout of `ms` (1 to `TIMEOUT_MS_MAX`, checked by the
/// caller): exact below `crate::limits::TIMEOUT_EXACT_MS_MAX`, whole seconds rounded up
/// above it.
pub(crate) fn timeout_to_stored(ms: u64) -> u32 {
    debug_assert!(
        (1..=crate::limits::TIMEOUT_MS_MAX).contains(&ms),
        "unchecked timeout {ms}"
    );
    if ms <= crate::limits::TIMEOUT_EXACT_MS_MAX {
        u32::try_from(ms).expect("below 2^31")
    } else {
        TIMEOUT_IN_SECONDS | u32::try_from(ms.div_ceil(1000)).expect("TIMEOUT_MS_MAX fits")
    }
}

pub(crate) const HEADER_LEN: usize = std::mem::size_of::<Header>();
const _: () = assert!(HEADER_LEN == 48 && std::mem::align_of::<Header>() == 8);

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
// bytes and plain header fields are immutable once it is shared (written
// only through `header_mut`, which requires the only handle); every field
// that changes while shared is an atomic.
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
                id: SessionId::from_bytes([0; 16]),
                access: AtomicU64::new(0),
                created_ms: 0,
                timeout_ms: TIMEOUT_NEVER,
                lifetime: TIMEOUT_NEVER,
            });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.add(HEADER_LEN), bytes.len());
        }
        Self { ptr }
    }

    /// A block for a session: `bytes`, and its fields.
    pub(crate) fn session(
        bytes: &[u8],
        id: SessionId,
        created_ms: u64,
        last_access_ms: u64,
        timeout_ms: u32,
    ) -> Self {
        let mut block = Self::copy_from(bytes);
        block.init(id, created_ms, last_access_ms, timeout_ms);
        block
    }

    /// The metadata bytes.
    #[inline]
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.block().bytes()
    }

    /// The block, borrowed for as long as this handle is.
    #[inline]
    pub(crate) fn block(&self) -> BlockRef<'_> {
        BlockRef {
            ptr: self.ptr,
            _borrow: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the block is alive while `self` holds a reference, and its
        // header was initialised in `copy_from`. Shared fields are atomics.
        unsafe { self.ptr.as_ref() }
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
        debug_assert!(
            last_access_ms <= TIME_BITS,
            "time {last_access_ms} overlaps the marks"
        );
        if self.header_mut().is_none() {
            *self = Self::copy_from(self.as_bytes());
        }
        let h = self.header_mut().expect("a fresh copy is unique");
        h.id = id;
        h.created_ms = created_ms;
        *h.access.get_mut() = last_access_ms;
        h.timeout_ms = timeout_ms;
        h.lifetime = TIMEOUT_NEVER;
    }

    /// The block that replaces this session's: `bytes` with its id and
    /// creation time, the given timeout and lifetime cap (stored); its
    /// access time is set when it is installed.
    pub(crate) fn successor(&self, bytes: &[u8], timeout_ms: u32, lifetime: u32) -> Self {
        let h = self.header();
        Self::session(bytes, h.id, h.created_ms, 0, timeout_ms).with_lifetime(lifetime)
    }

    /// Sets the lifetime cap of a block about to enter a shard (a unique
    /// one, as `init` leaves it).
    #[must_use]
    pub(crate) fn with_lifetime(mut self, lifetime: u32) -> Self {
        self.header_mut().expect("a new block is unique").lifetime = lifetime;
        self
    }

    /// True if both handles share one block.
    #[inline]
    #[must_use]
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.ptr == b.ptr
    }

    /// Gives up the handle, keeping its reference: the caller stores the
    /// pointer (the shard's table) and gets the handle back with
    /// [`Metadata::from_raw`].
    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The handle `into_raw` gave up.
    ///
    /// # Safety
    /// `ptr` came from `into_raw`, and its reference is given back once.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<Header>) -> Self {
        Self { ptr }
    }
}

/// Asks the CPU to start loading the cache line at `ptr`, so that a loop
/// over many cold lines overlaps their misses. A no-op off x86-64 and under
/// Miri.
#[inline]
pub(crate) fn prefetch(ptr: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has; a
    // prefetch reads nothing into the program and cannot fault, whatever
    // the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = ptr;
}

/// A block borrowed for `'a`: from a handle, or from a shard's table under
/// an epoch guard (the table's reference is released only after the guard
/// is gone). Either way the block holds a counted reference for as long as
/// the borrow lives. It keeps the allocation's pointer, whose provenance
/// covers the metadata bytes after the header (a `&Header` covers only the
/// header).
#[derive(Clone, Copy)]
pub(crate) struct BlockRef<'a> {
    ptr: NonNull<Header>,
    _borrow: PhantomData<&'a Header>,
}

impl<'a> BlockRef<'a> {
    /// # Safety
    /// `ptr` is a block's pointer (from `Metadata::into_raw`, with its
    /// provenance), and the block holds a counted reference for `'a`.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<Header>) -> Self {
        Self {
            ptr,
            _borrow: PhantomData,
        }
    }

    /// The header's fields.
    #[inline]
    pub(crate) fn header(self) -> &'a Header {
        // SAFETY: the block is alive for `'a` (see the type's doc).
        unsafe { self.ptr.as_ref() }
    }

    /// The metadata bytes after the header.
    #[inline]
    pub(crate) fn bytes(self) -> &'a [u8] {
        let len = self.header().len as usize;
        // SAFETY: the block was allocated by `copy_from` with `len`
        // initialised bytes right after the header, never written again,
        // and is alive for `'a`; the pointer is the allocation's.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(HEADER_LEN), len) }
    }

    /// A new handle to the block (the count is at least one while the
    /// borrow lives, see the type's doc).
    #[inline]
    pub(crate) fn share(self) -> Metadata {
        // Relaxed, as `Arc::clone`: the borrow already orders the block's
        // contents for this thread.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > REFS_MAX {
            std::process::abort();
        }
        Metadata { ptr: self.ptr }
    }

    /// True if both borrow the same block.
    #[inline]
    pub(crate) fn same(self, other: BlockRef<'_>) -> bool {
        self.ptr == other.ptr
    }

    /// Asks the CPU to start loading the header's line.
    #[inline]
    pub(crate) fn prefetch(self) {
        prefetch(self.ptr.as_ptr().cast());
    }
}

impl Deref for BlockRef<'_> {
    type Target = Header;

    #[inline]
    fn deref(&self) -> &Header {
        // SAFETY: as `header`.
        unsafe { self.ptr.as_ref() }
    }
}

impl Header {
    /// Metadata bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// The last access time, without the marks.
    #[inline]
    pub(crate) fn last_access_ms(&self) -> u64 {
        self.access.load(Ordering::Acquire) & TIME_BITS
    }

    /// When the session expires unless it is used first: its timeout and
    /// its lifetime's end.
    #[inline]
    pub(crate) fn expiry(&self) -> Expiry {
        Expiry {
            timeout_ms: self.timeout_ms,
            lifetime: self.lifetime,
            created_ms: self.created_ms,
        }
    }

    /// Deadline in ms since the epoch; `None` if the session never expires.
    #[inline]
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        self.expiry().deadline(self.last_access_ms())
    }

    /// See [`access`].
    #[inline]
    pub(crate) fn access(&self, now_ms: u64, slide: bool) -> Access {
        access(&self.access, self.expiry(), now_ms, slide)
    }

    /// `access` for a word `access` found `Marked`: expired, closed, or
    /// retired by a writer still at work ([`marked`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn decide_marked(&self, now_ms: u64, slide: bool) -> Access {
        marked(
            &self.access,
            self.expiry(),
            now_ms,
            slide,
            self.access.load(Ordering::Acquire),
        )
    }

    /// See [`live_for_writer`].
    #[inline]
    pub(crate) fn live_for_writer(&self, now_ms: u64) -> bool {
        live_for_writer(&self.access, self.expiry(), now_ms)
    }

    /// See [`retire`].
    #[inline]
    pub(crate) fn retire(&self, now_ms: u64) -> Result<u64, Gone> {
        retire(&self.access, self.expiry(), now_ms)
    }

    /// See [`unretire`].
    #[inline]
    pub(crate) fn unretire(&self) {
        unretire(&self.access);
    }

    /// See [`close`].
    #[inline]
    pub(crate) fn close(&self) -> u64 {
        close(&self.access)
    }

    /// For a holder of the writer mutex, under which no write is under way:
    /// clears a `RETIRED` mark left by a writer that panicked between its
    /// two steps (the block stands as it was; nothing else to do if not).
    pub(crate) fn unretire_orphan(&self) {
        let word = self.access.load(Ordering::Acquire);
        if word & CLOSED == RETIRED {
            unretire(&self.access);
        }
    }

    /// See [`carry`].
    #[inline]
    pub(crate) fn carry(&self, last_ms: u64) {
        carry(&self.access, last_ms);
    }

    /// Sets the last access of a block not yet published (its successor's).
    pub(crate) fn set_access_unpublished(&mut self, last_access_ms: u64) {
        debug_assert!(last_access_ms <= TIME_BITS);
        *self.access.get_mut() = publishing(last_access_ms);
    }

    /// See [`expire_if_due`].
    #[inline]
    pub(crate) fn expire_if_due(&self, now_ms: u64) -> Due {
        expire_if_due(&self.access, self.expiry(), now_ms)
    }
}

// ---- The access word's protocol ---------------------------------------------

/// The access word, as the protocol sees it: `AtomicU64` in the engine, the
/// `loom` model's atomic in the tests.
pub(crate) trait AccessWord {
    fn load(&self) -> u64;
    /// A strong compare-and-swap; `Err` carries the value found.
    fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64>;
}

impl AccessWord for AtomicU64 {
    #[inline]
    fn load(&self) -> u64 {
        AtomicU64::load(self, Ordering::Acquire)
    }

    #[inline]
    fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64> {
        self.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// What a reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Live; the last access before and after this read (equal unless it slid).
    Live { before: u64, after: u64 },
    /// Past its deadline (and now marked so).
    Expired,
    /// The word carries a mark (`access` leaves it to [`marked`], out of
    /// line, so that its common path makes no call): never from
    /// [`BlockRef::decide_marked`].
    Marked,
    /// The writer that retired this block has finished: look the session
    /// up again (the table holds its successor, or nothing).
    Replaced,

    /// A writer is changing the session and its deadline has passed at the
    /// reader's time under the old block's times: the successor decides,
    /// once the writer has published it.
    Pending,
}

/// A writer found the session gone: expired (now marked so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gone;

/// What the sweeper found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Expired, and marked so: remove it.
    Expired,
    /// Not due: its deadline (re-arm it there).
    At(u64),
    /// Never expires.
    Never,
}

/// What decides when a session expires: its inactivity timeout and its
/// lifetime cap (both stored, `session::stored_timeout_ms`), the cap
/// counted from its creation. The cap's end is computed only for a session
/// that has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expiry {
    pub(crate) timeout_ms: u32,
    pub(crate) lifetime: u32,
    pub(crate) created_ms: u64,
}

impl Expiry {
    /// An inactivity timeout alone (no lifetime cap).
    #[cfg(test)]
    pub(crate) const fn idle(timeout_ms: u32) -> Self {
        Self {
            timeout_ms,
            lifetime: TIMEOUT_NEVER,
            created_ms: 0,
        }
    }

    /// The deadline after a last access at `last_ms`: the earlier of the
    /// inactivity deadline and the lifetime's end; `None`: never.
    #[allow(clippy::inline_always)] // on every read: kept inline, the cap itself out of line
    #[inline(always)]
    pub(crate) fn deadline(self, last_ms: u64) -> Option<u64> {
        let idle = stored_timeout_ms(self.timeout_ms).map(|t| last_ms.saturating_add(t));
        if self.lifetime == TIMEOUT_NEVER {
            return idle;
        }
        Some(self.capped(idle))
    }

    /// `deadline` for a session with a lifetime cap (out of the common
    /// path: most sessions have none).
    #[cold]
    #[inline(never)]
    fn capped(self, idle: Option<u64>) -> u64 {
        let end = stored_timeout_ms(self.lifetime).map_or(u64::MAX, |l| self.created_ms.saturating_add(l));
        idle.map_or(end, |d| d.min(end))
    }

    #[allow(clippy::inline_always)] // as `deadline`
    #[inline(always)]
    fn is_due(self, last_ms: u64, now_ms: u64) -> bool {
        self.deadline(last_ms).is_some_and(|d| d <= now_ms)
    }
}

/// A reader's liveness check at `now_ms` and, if `slide`, its slide of the
/// deadline to `now_ms`, as one atomic step. A session found due is marked
/// `EXPIRED` before the answer; a slide never moves the time back and never
/// writes when nothing changes (a hot session's line stays shared between
/// cores).
#[allow(clippy::inline_always)] // left to the compiler, every read pays a call here (see the instruction gate)
#[inline(always)]
pub(crate) fn access(word: &impl AccessWord, expiry: Expiry, now_ms: u64, slide: bool) -> Access {
    let mut current = word.load();
    loop {
        if current & CLOSED != 0 {
            return Access::Marked;
        }
        let next = if expiry.is_due(current, now_ms) {
            current | EXPIRED
        } else if slide && now_ms > current {
            now_ms
        } else {
            return Access::Live {
                before: current,
                after: current,
            };
        };
        match word.swap_if(current, next) {
            Ok(_) if next & EXPIRED != 0 => return Access::Expired,
            Ok(_) => {
                return Access::Live {
                    before: current,
                    after: next,
                }
            }
            Err(found) => current = found,
        }
    }
}

/// `access` on a marked word (`current`): expired, closed, or retired by a
/// writer still at work, where the block as it was answers and takes the
/// slide (the writer carries it over). Out of line: the common path makes
/// no call.
#[cold]
#[inline(never)]
pub(crate) fn marked(
    word: &impl AccessWord,
    expiry: Expiry,
    now_ms: u64,
    slide: bool,
    mut current: u64,
) -> Access {
    loop {
        match current & CLOSED {
            // Unretired meanwhile (its write failed).
            0 => match access(word, expiry, now_ms, slide) {
                Access::Marked => current = word.load(),
                other => return other,
            },
            EXPIRED => return Access::Expired,
            CLOSED => return Access::Replaced,
            _ => {}
        }
        let last = current & TIME_BITS;
        if expiry.is_due(last, now_ms) {
            return Access::Pending;
        }
        if !slide || now_ms <= last {
            return Access::Live {
                before: last,
                after: last,
            };
        }
        match word.swap_if(current, RETIRED | now_ms) {
            Ok(_) => {
                return Access::Live {
                    before: last,
                    after: now_ms,
                }
            }
            Err(found) => current = found,
        }
    }
}

/// `access` without a slide, for a holder of the shard's writer mutex,
/// which no other writer can be inside: the block is in the table, so not
/// retired, and any mark means expired. Live, or now marked expired.
#[allow(clippy::inline_always)] // as `access`
#[inline(always)]
pub(crate) fn live_for_writer(word: &impl AccessWord, expiry: Expiry, now_ms: u64) -> bool {
    let mut current = word.load();
    loop {
        debug_assert!(current & RETIRED == 0, "a retired block under the writer mutex");
        if current & CLOSED != 0 {
            return false;
        }
        if !expiry.is_due(current, now_ms) {
            return true;
        }
        match word.swap_if(current, current | EXPIRED) {
            Ok(_) => return false,
            Err(found) => current = found,
        }
    }
}

/// The writer's step before it replaces or removes a block: if the session
/// is live at `now_ms`, marks it `RETIRED` and returns its last access;
/// if it is due, marks it `EXPIRED` and returns `Gone`. Only the shard's
/// writer retires, so the block is not retired already.
pub(crate) fn retire(word: &impl AccessWord, expiry: Expiry, now_ms: u64) -> Result<u64, Gone> {
    let mut current = word.load();
    loop {
        debug_assert!(current & RETIRED == 0, "block retired twice (word {current:#x})");
        if current & EXPIRED != 0 {
            return Err(Gone);
        }
        let due = expiry.is_due(current, now_ms);
        let next = current | if due { EXPIRED } else { RETIRED };
        match word.swap_if(current, next) {
            Ok(_) if due => return Err(Gone),
            Ok(_) => return Ok(current),
            Err(found) => current = found,
        }
    }
}

/// Undoes `retire` when the write it prepared failed (its log append); the
/// slides readers made meanwhile stay. Only the writer that retired the
/// block clears or closes it.
pub(crate) fn unretire(word: &AtomicU64) {
    let before = word.fetch_and(!RETIRED, Ordering::AcqRel);
    debug_assert!(before & RETIRED != 0 && before & EXPIRED == 0, "word {before:#x}");
}

/// The writer's last step on a retired block, once its successor is
/// published (or the block removed): marks it closed, so that readers look
/// the session up again, and returns its last access, slides made since
/// `retire` included.
pub(crate) fn close(word: &impl ClosableWord) -> u64 {
    let before = word.close();
    debug_assert!(before & CLOSED == RETIRED, "word {before:#x}");
    before & TIME_BITS
}

/// The access word a successor is published with: its time, marked
/// `RETIRED` until the writer's [`carry`]. Its time is the writer's, taken
/// before its log append; readers may have slid the old block since, which
/// only `carry` brings over. Until then a reader that finds the successor's
/// deadline passed waits for the writer (`Access::Pending`, as on the old
/// block) instead of expiring a session a slide kept alive; one that finds
/// it live answers and slides it, as on any retired block.
pub(crate) const fn publishing(last_ms: u64) -> u64 {
    RETIRED | last_ms
}

/// Carries the slides a retired block took (`close`'s time) over to its
/// published successor and clears the successor's `RETIRED` mark
/// ([`publishing`]): its access moves forward to `last_ms`, or stays at a
/// later slide of its own. Readers meanwhile only slid it (a due one
/// waits); nothing else marks a block the writer holds.
pub(crate) fn carry(word: &impl AccessWord, last_ms: u64) {
    let mut current = word.load();
    loop {
        debug_assert!(current & CLOSED == RETIRED, "successor word {current:#x}");
        let next = (current & TIME_BITS).max(last_ms);
        match word.swap_if(current, next) {
            Ok(_) => return,
            Err(found) => current = found,
        }
    }
}

/// A word the writer can close in one step (`fetch_or`).
pub(crate) trait ClosableWord {
    /// Sets `EXPIRED`; returns the word before.
    fn close(&self) -> u64;
}

impl ClosableWord for AtomicU64 {
    #[inline]
    fn close(&self) -> u64 {
        self.fetch_or(EXPIRED, Ordering::AcqRel)
    }
}

/// The sweeper's step: marks a session due at `now_ms` `EXPIRED` (or finds
/// it marked already), else reports its current deadline.
pub(crate) fn expire_if_due(word: &impl AccessWord, expiry: Expiry, now_ms: u64) -> Due {
    let mut current = word.load();
    loop {
        debug_assert!(current & RETIRED == 0, "a retired block is still scheduled");
        if current & EXPIRED != 0 {
            return Due::Expired;
        }
        match expiry.deadline(current) {
            None => return Due::Never,
            Some(d) if d > now_ms => return Due::At(d),
            Some(_) => {}
        }
        match word.swap_if(current, current | EXPIRED) {
            Ok(_) => return Due::Expired,
            Err(found) => current = found,
        }
    }
}

impl Clone for Metadata {
    #[inline]
    fn clone(&self) -> Self {
        self.block().share()
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

    fn refs(m: &Metadata) -> u32 {
        m.header().refs.load(Ordering::Relaxed)
    }

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
        assert_eq!(refs(&a), 2);
        drop(a);
        assert_eq!(&*b, b"shared");
        assert_eq!(refs(&b), 1);
    }

    #[test]
    fn raw_handles_keep_their_reference() {
        let a = Metadata::from(&b"table"[..]);
        let raw = a.into_raw();
        // SAFETY: `raw` holds the reference `a` gave up until it is given back.
        let block = unsafe { BlockRef::from_raw(raw) };
        let b = block.share();
        assert_eq!(refs(&b), 2);
        assert_eq!(block.bytes(), b"table");
        // SAFETY: `raw` came from `into_raw` and is given back once.
        let a = unsafe { Metadata::from_raw(raw) };
        drop(a);
        assert_eq!(refs(&b), 1);
        assert_eq!(&*b, b"table");
    }

    #[test]
    fn prefetch_is_only_a_hint() {
        let a = Metadata::from(vec![7u8; 200]);
        let b = a.clone();
        a.block().prefetch();
        prefetch(std::ptr::null());
        assert_eq!(a.as_bytes(), &[7u8; 200][..]);
        assert_eq!(refs(&b), 2);
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
    fn init_copies_a_shared_block_instead_of_writing_it() {
        let mut a = Metadata::from(&b"bytes"[..]);
        let b = a.clone();
        let id = SessionId::from_bytes([1; 16]);
        a.init(id, 5, 6, 7);
        assert!(!Metadata::ptr_eq(&a, &b));
        assert_eq!(b.header().id, SessionId::from_bytes([0; 16]));
        let h = a.header();
        assert_eq!(
            (h.id, h.created_ms, h.last_access_ms(), h.timeout_ms),
            (id, 5, 6, 7)
        );
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
    fn the_access_word_from_many_threads() {
        // Readers slide concurrently; the word ends at the largest time and
        // no reader ever sees it go back.
        let m = Metadata::session(&[1u8; 200], SessionId::from_bytes([3; 16]), 0, 0, 1_000_000);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let m = m.clone();
                s.spawn(move || {
                    let mut seen = 0;
                    for i in 0..50 {
                        match m.header().access(t * 100 + i, true) {
                            Access::Live { before, after } => {
                                assert!(after >= before && after >= seen);
                                seen = after;
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                });
            }
        });
        assert_eq!(m.header().last_access_ms(), 349);
        assert_eq!(refs(&m), 1);
    }

    /// A lifetime cap ends the session at its end however recent the last
    /// access: slides stop helping, the sweeper arms the end, and a
    /// session without a timeout still ends.
    #[test]
    fn the_lifetime_end_caps_every_deadline() {
        let capped = Expiry {
            timeout_ms: 100,
            lifetime: 120,
            created_ms: 1_000,
        };
        assert_eq!(capped.deadline(1_000), Some(1_100));
        assert_eq!(capped.deadline(1_050), Some(1_120), "the end comes first");
        let word = AtomicU64::new(1_000);
        assert!(matches!(decide(&word, capped, 1_050, true), Access::Live { .. }));
        assert_eq!(expire_if_due(&word, capped, 1_060), Due::At(1_120));
        assert!(matches!(decide(&word, capped, 1_119, true), Access::Live { .. }));
        assert_eq!(decide(&word, capped, 1_120, true), Access::Expired);
        let no_timeout = Expiry {
            timeout_ms: TIMEOUT_NEVER,
            lifetime: 4_000,
            created_ms: 1_000,
        };
        assert_eq!(no_timeout.deadline(1), Some(5_000));
        assert_eq!(Expiry::idle(TIMEOUT_NEVER).deadline(1), None);
        let word = AtomicU64::new(1_000);
        assert_eq!(retire(&word, no_timeout, 5_000), Err(Gone));
    }

    #[test]
    fn protocol_outcomes_one_step_at_a_time() {
        let word = AtomicU64::new(1_000);
        let timeout = Expiry::idle(100);
        assert_eq!(
            decide(&word, timeout, 1_050, false),
            Access::Live {
                before: 1_000,
                after: 1_000
            }
        );
        assert_eq!(
            decide(&word, timeout, 1_050, true),
            Access::Live {
                before: 1_000,
                after: 1_050
            }
        );
        assert_eq!(
            decide(&word, timeout, 1_040, true),
            Access::Live {
                before: 1_050,
                after: 1_050
            }
        );
        assert_eq!(expire_if_due(&word, timeout, 1_100), Due::At(1_150));
        assert_eq!(decide(&word, timeout, 1_150, false), Access::Expired);
        // Marked: an older reading of the clock no longer revives it.
        assert_eq!(decide(&word, timeout, 1_100, true), Access::Expired);
        assert_eq!(retire(&word, timeout, 1_100), Err(Gone));
        assert_eq!(expire_if_due(&word, timeout, 0), Due::Expired);
        // Retired: the block as it was answers and takes the slide, a
        // failed write keeps it, and a deadline passed under the old times
        // waits for the successor.
        let word = AtomicU64::new(1_000);
        assert_eq!(retire(&word, timeout, 1_050), Ok(1_000));
        assert_eq!(
            decide(&word, timeout, 1_060, true),
            Access::Live {
                before: 1_000,
                after: 1_060
            }
        );
        assert_eq!(decide(&word, timeout, 1_170, false), Access::Pending);
        unretire(&word);
        assert_eq!(
            decide(&word, timeout, 1_070, true),
            Access::Live {
                before: 1_060,
                after: 1_070
            }
        );
        // Closed: readers look again; the successor gets the slides.
        assert_eq!(retire(&word, timeout, 1_080), Ok(1_070));
        assert_eq!(
            decide(&word, timeout, 1_090, true),
            Access::Live {
                before: 1_070,
                after: 1_090
            }
        );
        // Published marked: a reader past its own deadline waits, one
        // before it slides it.
        let successor = AtomicU64::new(publishing(1_080));
        assert_eq!(decide(&successor, timeout, 1_185, false), Access::Pending);
        assert_eq!(
            decide(&successor, timeout, 1_085, true),
            Access::Live {
                before: 1_080,
                after: 1_085
            }
        );
        assert_eq!(close(&word), 1_090);
        assert_eq!(decide(&word, timeout, 1_095, true), Access::Replaced);
        carry(&successor, 1_090);
        assert_eq!(successor.load(Ordering::Relaxed), 1_090);
        let ahead = AtomicU64::new(publishing(1_080));
        assert!(matches!(
            decide(&ahead, timeout, 1_095, true),
            Access::Live { .. }
        ));
        carry(&ahead, 1_090);
        assert_eq!(
            ahead.load(Ordering::Relaxed),
            1_095,
            "carried only forward, unmarked"
        );
        let never = AtomicU64::new(5);
        assert_eq!(
            expire_if_due(&never, Expiry::idle(TIMEOUT_NEVER), u64::MAX >> 2),
            Due::Never
        );
        assert_eq!(
            access(&never, Expiry::idle(TIMEOUT_NEVER), TIME_BITS, true),
            Access::Live {
                before: 5,
                after: TIME_BITS
            }
        );
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

/// The access word's protocol under `loom`: every interleaving of two or
/// three threads' steps, on the real functions above.
/// `access`, a mark decided by `marked` (tests).
#[cfg(test)]
fn decide(word: &impl AccessWord, expiry: Expiry, now_ms: u64, slide: bool) -> Access {
    match access(word, expiry, now_ms, slide) {
        Access::Marked => marked(word, expiry, now_ms, slide, word.load()),
        other => other,
    }
}

#[cfg(all(test, not(miri)))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::{AtomicU64 as LoomU64, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    impl AccessWord for LoomU64 {
        fn load(&self) -> u64 {
            LoomU64::load(self, Ordering::Acquire)
        }

        fn swap_if(&self, current: u64, new: u64) -> Result<u64, u64> {
            self.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
        }
    }

    const TIMEOUT: Expiry = Expiry::idle(100);
    /// Last access at 1000 ms: the deadline is at 1100 ms.
    const LAST: u64 = 1_000;
    const BEFORE_DEADLINE: u64 = 1_099;
    const AT_DEADLINE: u64 = 1_100;

    fn live_at(word: &LoomU64, now: u64) -> bool {
        matches!(access(word, TIMEOUT, now, false), Access::Live { .. })
    }

    /// Reader A read the clock just before the deadline, reader B at it. If
    /// B is told the session expired, A's slide did not happen first, and
    /// the session stays expired for everyone after.
    #[test]
    fn a_late_reader_never_revives_what_another_saw_expire() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(LAST));
            let a = {
                let word = Arc::clone(&word);
                thread::spawn(move || decide(&*word, TIMEOUT, BEFORE_DEADLINE, true))
            };
            let b = decide(&*word, TIMEOUT, AT_DEADLINE, true);
            let a = a.join().unwrap();
            let later = live_at(&word, AT_DEADLINE);
            match b {
                Access::Expired => {
                    assert!(!later, "revived after B saw it expire (A: {a:?})");
                    assert_eq!(a, Access::Expired, "A slid after B saw it expire");
                }
                Access::Live { .. } => {
                    assert!(matches!(
                        a,
                        Access::Live {
                            after: BEFORE_DEADLINE,
                            ..
                        }
                    ));
                    assert!(later);
                }
                Access::Replaced | Access::Pending | Access::Marked => unreachable!(),
            }
        });
    }

    /// A writer (an update at a time before the deadline) against a reader
    /// at the deadline: exactly one of them wins, never both.
    #[test]
    fn a_writer_and_a_reader_at_the_deadline_never_both_win() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(LAST));
            let writer = {
                let word = Arc::clone(&word);
                thread::spawn(move || retire(&*word, TIMEOUT, BEFORE_DEADLINE))
            };
            let reader = decide(&*word, TIMEOUT, AT_DEADLINE, false);
            let writer = writer.join().unwrap();
            match (writer, reader) {
                // The reader met the retired word: the successor decides.
                (Ok(last), Access::Pending) => assert_eq!(last, LAST),
                (Err(Gone), Access::Expired) => {}
                other => panic!("both or neither won: {other:?}"),
            }
        });
    }

    impl ClosableWord for LoomU64 {
        fn close(&self) -> u64 {
            self.fetch_or(EXPIRED, Ordering::AcqRel)
        }
    }

    /// A block last used at `LAST`, and a writer replacing it at `now` on a
    /// thread of its own, as `shard.rs` does: it retires the block,
    /// publishes the successor with its own time (the successor's word is 0
    /// until then), then closes the old block and carries its time over.
    fn replacing_at(now: u64) -> (Arc<LoomU64>, Arc<LoomU64>, thread::JoinHandle<()>) {
        let old = Arc::new(LoomU64::new(LAST));
        let successor = Arc::new(LoomU64::new(0));
        let writer = {
            let (old, successor) = (Arc::clone(&old), Arc::clone(&successor));
            thread::spawn(move || {
                let last = retire(&*old, TIMEOUT, now).unwrap();
                successor.store(publishing(last.max(now)), Ordering::Release);
                carry(&*successor, close(&*old));
            })
        };
        (old, successor, writer)
    }

    /// A writer retires, then (its change logged) closes the block and
    /// carries its time to the successor, while a reader slides the old
    /// block: the slide is never lost. Either the reader slid the old block
    /// (and the successor gets its time) or it found the block closed (and
    /// would look the session up again, finding the successor).
    #[test]
    fn a_slide_during_a_write_reaches_the_successor() {
        loom::model(|| {
            let (old, successor, writer) = replacing_at(1_010);
            let reader = decide(&*old, TIMEOUT, 1_050, true);
            writer.join().unwrap();
            let now = LoomU64::load(&successor, Ordering::Acquire);
            match reader {
                Access::Live { after: 1_050, .. } => assert_eq!(now, 1_050, "the slide was lost"),
                Access::Replaced => {
                    assert!(matches!(
                        decide(&*successor, TIMEOUT, 1_050, true),
                        Access::Live { after: 1_050, .. }
                    ));
                }
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    /// A writer slow between retiring a block and carrying its time over
    /// (its log append stalled): one reader slides the old block meanwhile,
    /// another reads the published successor at a time past the deadline
    /// the writer's own time gives it but before the slid one. The slide
    /// is never lost: the second reader never expires the session, it
    /// answers live or waits for the writer (`Pending`), and the session is
    /// live at that time once the writer is done.
    #[test]
    fn a_reader_of_the_successor_never_undoes_a_slide_of_the_old_block() {
        const SLID: u64 = 1_050;
        /// Past the writer's deadline (`1_010` + 100), before the slid one.
        const LATE: u64 = 1_120;
        loom::model(|| {
            let (old, successor, writer) = replacing_at(1_010);
            let slider = {
                let old = Arc::clone(&old);
                thread::spawn(move || decide(&*old, TIMEOUT, SLID, true))
            };
            while LoomU64::load(&successor, Ordering::Acquire) == 0 {
                thread::yield_now();
            }
            let late = decide(&*successor, TIMEOUT, LATE, false);
            let slid = slider.join().unwrap();
            writer.join().unwrap();
            if matches!(slid, Access::Live { after: SLID, .. }) {
                assert_ne!(late, Access::Expired, "the slide was undone");
                assert!(live_at(&successor, LATE), "the slide was lost");
            }
        });
    }

    /// The sweeper at the deadline against a reader sliding just before it:
    /// the sweeper never removes a session whose deadline the reader moved.
    #[test]
    fn the_sweeper_never_removes_a_session_a_reader_just_slid() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(LAST));
            let reader = {
                let word = Arc::clone(&word);
                thread::spawn(move || decide(&*word, TIMEOUT, BEFORE_DEADLINE, true))
            };
            let sweeper = expire_if_due(&*word, TIMEOUT, AT_DEADLINE);
            let reader = reader.join().unwrap();
            match (sweeper, reader) {
                (Due::Expired, Access::Expired) => {}
                (Due::At(d), Access::Live { after, .. }) => assert_eq!(Some(d), TIMEOUT.deadline(after)),
                other => panic!("inconsistent: {other:?}"),
            }
        });
    }

    /// Two readers sliding to different times and a third checking: the
    /// word only moves forward, and never past what someone read.
    #[test]
    fn slides_only_move_forward() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(LAST));
            let handles: Vec<_> = [1_010, 1_020]
                .into_iter()
                .map(|now| {
                    let word = Arc::clone(&word);
                    thread::spawn(move || decide(&*word, TIMEOUT, now, true))
                })
                .collect();
            for h in handles {
                assert!(matches!(h.join().unwrap(), Access::Live { .. }));
            }
            assert_eq!(LoomU64::load(&word, Ordering::Acquire), 1_020);
        });
    }
}
