//! The engine's counted loops: one `#[inline(never)]` function per
//! operation kind (`counted_engine_get`, ...), so that callgrind can count
//! each alone (one `--toggle-collect` per loop, by its whole name, which
//! ends in `::oploop::` and the loop's: loadgen counts its peer's loops,
//! built from the generic ones here, under the same names in its own
//! `oploop` module). Nothing in a loop reads the clock or records a
//! histogram. The engine runs on a manual clock, moved a millisecond
//! before each loop ([`Subject::next_millisecond`], uncounted), so each
//! loop's first read of a session slides its deadline, as a live server's
//! reads do.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use session_engine::{Bucket, Engine, ManualClock, Result, SessionId, SessionStore, Timeout, TimerHandle};

/// Timeout of every session the loops create or insert: long enough that
/// none expires (the engine's clock moves a millisecond a loop).
pub const TIMEOUT: Timeout = Timeout::After(std::time::Duration::from_secs(1_800));

/// Polls a future that must be ready at once (the engine in memory, the
/// peer).
///
/// # Panics
/// If it is not: the gates measure stores that answer on the calling thread.
#[inline]
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the gates measure stores whose futures are ready at once"),
    }
}

/// One store's side of a loop: its live sessions and the ones its creates
/// made, for its deletes.
pub struct Subject<'a, S> {
    /// The store.
    pub store: &'a S,
    /// Its live population.
    pub ids: Vec<SessionId>,
    /// Sessions created by `create` loops, oldest first.
    pub created: VecDeque<SessionId>,
    /// The store's manual clock, if it has one: moved a millisecond before
    /// each loop (uncounted), so that every session's millisecond has
    /// moved since the loop before and its first read in a loop slides it.
    pub clock: Option<ManualClock>,
}

impl<'a, S: SessionStore> Subject<'a, S> {
    /// Inserts `sessions` sessions of `metadata_bytes` with ids drawn from
    /// `seed`, so that two runs hold the same ids.
    ///
    /// # Errors
    /// The store's, if it refuses one.
    pub fn populate(store: &'a S, sessions: usize, metadata_bytes: usize, seed: u64) -> Result<Self> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let metadata = vec![0xAB; metadata_bytes];
        let mut ids = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let id = SessionId::from_bytes(rng.random());
            now(store.insert(id, &metadata, TIMEOUT))?;
            ids.push(id);
        }
        Ok(Self {
            store,
            ids,
            created: VecDeque::new(),
            clock: None,
        })
    }

    /// This subject's store runs on `clock` (see [`Subject::clock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Moves the store's clock a millisecond (before a loop, uncounted).
    pub fn next_millisecond(&self) {
        if let Some(clock) = &self.clock {
            clock.advance_ms(1);
        }
    }
}

/// `count` indices into a population of `population`, uniform, from `seed`.
///
/// # Panics
/// If `population` exceeds `u32::MAX`.
#[must_use]
pub fn keys(count: usize, population: usize, seed: u64) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let population = u32::try_from(population).expect("populations fit in u32");
    (0..count).map(|_| rng.random_range(0..population)).collect()
}

/// What a read loop does to each session it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// `get`.
    Get,
    /// `peek`.
    Peek,
    /// `touch`.
    Touch,
    /// `update`, flipping the first byte.
    Update,
}

/// The read loop, generic; the counted functions instantiate it (the
/// counts are inclusive, so whether it is inlined does not matter).
#[inline]
pub fn reads<S: SessionStore>(store: &S, ids: &[SessionId], keys: &[u32], read: Read) -> u64 {
    let mut ok = 0;
    for &k in keys {
        let id = &ids[k as usize];
        let done = match read {
            Read::Get => now(store.get(id)).is_ok(),
            Read::Peek => now(store.peek(id)).is_ok(),
            Read::Touch => now(store.touch(id)).is_ok(),
            Read::Update => now(store.update(id, |m| {
                let mut next = m.to_vec();
                if let Some(first) = next.first_mut() {
                    *first ^= 1;
                }
                next
            }))
            .is_ok(),
        };
        ok += u64::from(std::hint::black_box(done));
    }
    ok
}

/// The create loop, generic: `count` sessions of `metadata`, their ids
/// queued in `created`.
#[inline]
pub fn creates<S: SessionStore>(
    store: &S,
    count: usize,
    metadata: &[u8],
    created: &mut VecDeque<SessionId>,
) -> u64 {
    let mut ok = 0;
    for _ in 0..count {
        if let Ok(id) = now(store.create(metadata, TIMEOUT)) {
            created.push_back(id);
            ok += 1;
        }
    }
    ok
}

/// The delete loop, generic: up to `count` of the oldest `created`.
#[inline]
pub fn deletes<S: SessionStore>(store: &S, count: usize, created: &mut VecDeque<SessionId>) -> u64 {
    let mut ok = 0;
    for _ in 0..count {
        let Some(id) = created.pop_front() else { break };
        ok += u64::from(now(store.delete(&id)).is_ok());
    }
    ok
}

/// Defines one counted loop per kind over `$store` (the engine here; the
/// peer in loadgen): `get`, `peek`, `touch` and `update` read the keyed
/// sessions, `create` makes as many as there are keys, `delete` removes as
/// many of the oldest created. Each returns how many operations succeeded.
#[macro_export]
macro_rules! counted_loops {
    ($($name:ident: $store:ty => $body:ident),* $(,)?) => {
        $(
            /// One counted loop (see the module doc); returns how many
            /// operations succeeded.
            #[inline(never)]
            pub fn $name(
                s: &mut $crate::oploop::Subject<'_, $store>,
                keys: &[u32],
                metadata: &[u8],
            ) -> u64 {
                $crate::counted_loops!(@body $body, s, keys, metadata)
            }
        )*
    };
    (@body get, $s:ident, $keys:ident, $m:ident) => {{
        let _ = $m;
        $crate::oploop::reads($s.store, &$s.ids, $keys, $crate::oploop::Read::Get)
    }};
    (@body peek, $s:ident, $keys:ident, $m:ident) => {{
        let _ = $m;
        $crate::oploop::reads($s.store, &$s.ids, $keys, $crate::oploop::Read::Peek)
    }};
    (@body touch, $s:ident, $keys:ident, $m:ident) => {{
        let _ = $m;
        $crate::oploop::reads($s.store, &$s.ids, $keys, $crate::oploop::Read::Touch)
    }};
    (@body update, $s:ident, $keys:ident, $m:ident) => {{
        let _ = $m;
        $crate::oploop::reads($s.store, &$s.ids, $keys, $crate::oploop::Read::Update)
    }};
    (@body create, $s:ident, $keys:ident, $m:ident) => {
        $crate::oploop::creates($s.store, $keys.len(), $m, &mut $s.created)
    };
    (@body delete, $s:ident, $keys:ident, $m:ident) => {{
        let _ = $m;
        $crate::oploop::deletes($s.store, $keys.len(), &mut $s.created)
    }};
}

counted_loops!(
    counted_engine_get: Engine => get,
    counted_engine_peek: Engine => peek,
    counted_engine_touch: Engine => touch,
    counted_engine_update: Engine => update,
    counted_engine_create: Engine => create,
    counted_engine_delete: Engine => delete,
);

/// The engine's per-session state calls the instruction gate counts too,
/// in the order a round runs them (unsubscribes undo the subscribes,
/// cancels by handle the arms; the cancels by token find timers armed
/// again, uncounted), after [`warm_state`]. The engine alone:
/// the peer has no such calls. Their counts guard what `state_ratio`'s
/// wall-clock ratios cannot (they move between sittings).
pub const STATE_KINDS: [&str; 6] = [
    "rate_limit",
    "subscribe",
    "unsubscribe",
    "arm_timer",
    "cancel_timer",
    "cancel_timer_token",
];

/// The topic the state loops subscribe to.
const TOPIC: &str = "resource://gate";

/// The bucket the rate-limit loop charges: never limits.
const BUCKET: Bucket = Bucket {
    capacity: 1_000_000,
    refill_per_sec: 1_000_000,
};

/// One counted state loop (see the module doc); returns how many calls
/// succeeded. `handles`: the arms' timer handles, for the cancels.
macro_rules! counted_state {
    ($($name:ident => |$e:ident, $id:ident, $handles:ident| $call:expr),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(s: &Subject<'_, Engine>, keys: &[u32], handles: &mut Vec<TimerHandle>) -> u64 {
                let mut ok = 0;
                for &k in keys {
                    let ($e, $id, $handles) = (s.store, &s.ids[k as usize], &mut *handles);
                    ok += u64::from(std::hint::black_box($call));
                }
                ok
            }
        )*
    };
}

counted_state!(
    counted_engine_rate_limit => |e, id, _h| e.rate_limit(id, BUCKET, 1).is_ok(),
    counted_engine_subscribe => |e, id, _h| e.subscribe(id, TOPIC).is_ok(),
    counted_engine_unsubscribe => |e, id, _h| e.unsubscribe(id, TOPIC).is_ok(),
    counted_engine_arm_timer => |e, id, h| e
        .arm_timer(id, 0, std::time::Duration::from_secs(5))
        .map(|handle| h.push(handle))
        .is_ok(),
    counted_engine_cancel_timer_token => |e, id, _h| e.cancel_timer(id, 0).is_ok(),
    counted_engine_cancel_timer => |e, _id, h| {
        // Every handle the arms returned, latest first (a re-armed token's
        // handle comes twice: the second cancel finds nothing, a call all
        // the same).
        h.pop().is_some_and(|handle| {
            let _ = e.cancel_timer_handle(handle);
            true
        })
    },
);

/// Readies the engine for the state loops, uncounted: the keyed sessions'
/// entries made (by a rate-limit check) and the timer slab grown (by an arm
/// and a cancel each), so the loops count calls in the steady state, not a
/// session's first state or the slab's growth.
pub fn warm_state(s: &Subject<'_, Engine>, keys: &[u32]) {
    for &k in keys {
        let id = &s.ids[k as usize];
        let _ = s.store.rate_limit(id, BUCKET, 1);
        if let Ok(handle) = s.store.arm_timer(id, 0, std::time::Duration::from_secs(5)) {
            let _ = s.store.cancel_timer_handle(handle);
        }
    }
}

/// The engine's state loop `kind` (one of [`STATE_KINDS`]) over `keys`.
///
/// # Panics
/// On a kind not in [`STATE_KINDS`].
pub fn run_engine_state(
    kind: &str,
    s: &Subject<'_, Engine>,
    keys: &[u32],
    handles: &mut Vec<TimerHandle>,
) -> u64 {
    s.next_millisecond();
    match kind {
        "rate_limit" => counted_engine_rate_limit(s, keys, handles),
        "subscribe" => counted_engine_subscribe(s, keys, handles),
        "unsubscribe" => counted_engine_unsubscribe(s, keys, handles),
        "arm_timer" => counted_engine_arm_timer(s, keys, handles),
        "cancel_timer" => counted_engine_cancel_timer(s, keys, handles),
        "cancel_timer_token" => {
            // Uncounted: the timers the by-token cancels find.
            for &k in keys {
                let _ = s
                    .store
                    .arm_timer(&s.ids[k as usize], 0, std::time::Duration::from_secs(5));
            }
            counted_engine_cancel_timer_token(s, keys, handles)
        }
        other => unreachable!("no state loop {other}"),
    }
}
