//! A stored record whose MessagePack claims lengths its bytes cannot hold
//! is refused (loaded as no session; the decoder's error text is checked in
//! `record.rs`), having reserved memory in proportion to its size: no more
//! than a genuine record of that size needs.
//!
//! The allocator of this test binary counts the bytes held at once (one
//! test in the file, so nothing else allocates meanwhile but the runtime).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use session_engine::{Config, Engine, SessionId, Timeout};
use session_tower::TowerStore;
use tower_sessions_core::session::Id;
use tower_sessions_core::SessionStore;

/// The system allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn held(grown: usize) {
    let now = HELD.fetch_add(grown, Ordering::Relaxed) + grown;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is System's, with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            held(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            held(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            held(new_size);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// A record as `record.rs` lays it out (version 1, the expiry date in ms,
/// little-endian, then the MessagePack map), padded to `len` bytes with
/// bytes that are never read.
fn record(map: &[u8], len: usize) -> Vec<u8> {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&4_000_000_000_000i64.to_le_bytes());
    bytes.extend_from_slice(map);
    assert!(bytes.len() <= len);
    bytes.resize(len, 0);
    bytes
}

/// The largest record the engine takes by default (64 KiB), and about what
/// a genuine one of that size may need decoded: an array of 64 Ki nulls is
/// 2 MiB of `Value`s, a map of 32 Ki two-byte entries 3.6 MiB of hash
/// table. (Each of the nested arrays below used to reserve room for every
/// byte left: 2 GiB in all for the 1,022 a record could nest then.)
const LEN: usize = session_engine::limits::METADATA_BYTES_MAX_DEFAULT;
const GENUINE_MAX: usize = 64 * LEN;

#[test]
fn lengths_the_bytes_cannot_hold_reserve_no_more_than_a_genuine_record() {
    // The decoder recurses once per level: at its bound it needs no more
    // than a tokio worker's stack (2 MiB), as on a server.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(refused_in_proportion());
        })
        .expect("thread")
        .join()
        .expect("no panic");
}

async fn refused_in_proportion() {
    let claims_u32 = [0xff; 4];
    // {"k": [[[ ... 127 arrays deep (the most the decoder opens: 128 levels
    // with the record's map), each claiming 2^32 - 1 items ... ]]]}, the
    // innermost item a marker no value has.
    let mut nested = vec![0x81, 0xa1, b'k'];
    for _ in 0..127 {
        nested.push(0xdd);
        nested.extend_from_slice(&claims_u32);
    }
    nested.push(0xc1);
    // A map claiming 2^32 - 1 entries, the first key a marker no key has.
    let mut wide = vec![0xdf];
    wide.extend_from_slice(&claims_u32);
    wide.push(0xc1);

    let engine = Arc::new(Engine::open(Config::default().without_sweeper()).expect("engine"));
    let store = TowerStore::from_arc(Arc::clone(&engine));
    for (what, map) in [("nested arrays", nested), ("a wide map", wide)] {
        let id = SessionId::random().expect("id");
        engine
            .insert(id, &record(&map, LEN), Timeout::from_secs(60))
            .expect("stored");
        let tower_id: Id = id.to_string().parse().expect("the same text");

        let before = HELD.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let loaded = store.load(&tower_id).await;
        let reserved = PEAK.load(Ordering::Relaxed) - before;

        assert!(
            matches!(loaded, Ok(None)),
            "{what}: expected no session, got {loaded:?}"
        );
        assert!(
            reserved <= GENUINE_MAX,
            "{what}: {reserved} bytes held at once to refuse a {LEN}-byte record (a genuine one needs at most {GENUINE_MAX})"
        );
    }
}
