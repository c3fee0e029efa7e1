//! Tight loops of one operation kind against one store, what the CI gates
//! measure: CPU time per operation, the engine's against the peer's, in
//! interleaved slices ([`crate::cost`]), and instructions per operation
//! under callgrind ([`crate::callgrind`]).
//!
//! Each loop is its own `#[inline(never)]` function per store
//! (`counted_engine_get`, `counted_peer_get`, ...), so that callgrind can
//! count it alone (one `--toggle-collect` per loop, by its whole name) and
//! tell the stores apart (Rust's symbol names do not carry generic
//! parameters). Nothing in a loop reads the clock or records a histogram: a
//! slice is timed as a whole. The engine runs on a manual clock, moved a
//! millisecond between loops (so each loop's first read of a session
//! slides its deadline, as a live server's reads do), and without its
//! sweeper, so the calling thread does all of its work and nothing else
//! runs beside it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use session_engine::{Bucket, Config, Engine, ManualClock, SessionId, SessionStore, Timeout, TimerHandle};

use crate::error::Error;
use crate::limits::GATE_SHARDS;
use crate::mix::Op;
use crate::peer::PeerStore;

/// The kinds the gates measure, in the order a round runs them (creates
/// before the deletes that remove them).
pub const KINDS: [Op; 6] = [Op::Get, Op::Peek, Op::Touch, Op::Update, Op::Create, Op::Delete];

/// Timeout of every session the loops create: long enough that none expires
/// (the engine's clock moves a millisecond a loop).
const TIMEOUT: Timeout = Timeout::After(std::time::Duration::from_secs(1_800));

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

/// The engine as the gates measure it: `shards` shards (the plan's,
/// [`GATE_SHARDS`]: never the engine's default, which follows the core
/// count), in memory, on a manual clock (returned: give it to the engine's
/// [`Subject`], whose loops move it a millisecond before each loop,
/// uncounted, so that reads slide deadlines as a live server's do), with
/// no sweeper thread,
/// room for `sessions_max` sessions, and tables sized up front for
/// [`TABLE_ROOM`] times that: no table grows or rebuilds in place during a
/// loop. (Whether one would is decided by the process's random hash seed
/// and ids: a create loop that met a rebuild counted many more
/// instructions per create than one that did not, from one process to the
/// next, which an exact gate cannot have.)
///
/// # Errors
/// [`Error::Usage`] if the engine refuses the configuration.
pub fn open_engine(sessions_max: usize, shards: usize) -> Result<(Engine, ManualClock), Error> {
    let clock = ManualClock::new(1_700_000_000_000);
    let room = sessions_max.saturating_mul(TABLE_ROOM);
    let config = Config::default()
        .shards(shards)
        .sessions_max(room)
        .initial_capacity(room)
        .clock(clock.clock())
        .without_sweeper();
    let engine = Engine::open(config).map_err(|e| Error::Usage(format!("engine configuration: {e}")))?;
    Ok((engine, clock))
}

/// The shard count a plan that records none was measured with
/// ([`GATE_SHARDS`]: baselines written before plans recorded it).
#[must_use]
pub fn gate_shards() -> usize {
    GATE_SHARDS
}

/// Checks one field of a gate's plan: `name = value` must lie in
/// `lo..=hi`.
///
/// # Errors
/// A message naming the field, its value and the range.
pub fn check_within(name: &str, value: usize, lo: usize, hi: usize) -> Result<(), String> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} = {value}: must be between {lo} and {hi}"))
    }
}

/// Most metadata bytes a gate's sessions hold: what the engine the gates
/// open accepts (its default).
pub const METADATA_BYTES_MAX: usize = session_engine::limits::METADATA_BYTES_MAX_DEFAULT;

/// How many times the gates' population the engine's tables are sized for:
/// the tombstones a loop's deletes leave never bring a table to its limit.
pub const TABLE_ROOM: usize = 4;

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
    /// [`Error::Failed`] if the store refuses one.
    pub fn populate(store: &'a S, sessions: usize, metadata_bytes: usize, seed: u64) -> Result<Self, Error> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let metadata = vec![0xAB; metadata_bytes];
        let mut ids = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let id = SessionId::from_bytes(rng.random());
            now(store.insert(id, &metadata, TIMEOUT)).map_err(|e| Error::Failed(e.into()))?;
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
    fn next_millisecond(&self) {
        if let Some(clock) = &self.clock {
            clock.advance_ms(1);
        }
    }
}

/// `count` indices into a population of `population`, uniform, from `seed`.
#[must_use]
pub fn keys(count: usize, population: usize, seed: u64) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let population = u32::try_from(population).expect("populations fit in u32");
    (0..count).map(|_| rng.random_range(0..population)).collect()
}

/// The loops, generic; the counted functions below instantiate them (the
/// counts are inclusive, so whether these are inlined does not matter).
#[inline]
fn reads<S: SessionStore>(store: &S, ids: &[SessionId], keys: &[u32], op: Op) -> u64 {
    let mut ok = 0;
    for &k in keys {
        let id = &ids[k as usize];
        let done = match op {
            Op::Get => now(store.get(id)).is_ok(),
            Op::Peek => now(store.peek(id)).is_ok(),
            Op::Touch => now(store.touch(id)).is_ok(),
            Op::Update => now(store.update(id, |m| {
                let mut next = m.to_vec();
                if let Some(first) = next.first_mut() {
                    *first ^= 1;
                }
                next
            }))
            .is_ok(),
            _ => unreachable!("reads and writes of existing sessions only"),
        };
        ok += u64::from(std::hint::black_box(done));
    }
    ok
}

#[inline]
fn creates<S: SessionStore>(
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

#[inline]
fn deletes<S: SessionStore>(store: &S, count: usize, created: &mut VecDeque<SessionId>) -> u64 {
    let mut ok = 0;
    for _ in 0..count {
        let Some(id) = created.pop_front() else { break };
        ok += u64::from(now(store.delete(&id)).is_ok());
    }
    ok
}

macro_rules! counted {
    ($($name:ident: $store:ty => $body:ident),* $(,)?) => {
        $(
            /// One counted loop (see the module doc); returns how many
            /// operations succeeded.
            #[inline(never)]
            pub fn $name(s: &mut Subject<'_, $store>, keys: &[u32], metadata: &[u8]) -> u64 {
                counted!(@body $body, s, keys, metadata)
            }
        )*
    };
    (@body get, $s:ident, $keys:ident, $m:ident) => {{ let _ = $m; reads($s.store, &$s.ids, $keys, Op::Get) }};
    (@body peek, $s:ident, $keys:ident, $m:ident) => {{ let _ = $m; reads($s.store, &$s.ids, $keys, Op::Peek) }};
    (@body touch, $s:ident, $keys:ident, $m:ident) => {{ let _ = $m; reads($s.store, &$s.ids, $keys, Op::Touch) }};
    (@body update, $s:ident, $keys:ident, $m:ident) => {{ let _ = $m; reads($s.store, &$s.ids, $keys, Op::Update) }};
    (@body create, $s:ident, $keys:ident, $m:ident) => { creates($s.store, $keys.len(), $m, &mut $s.created) };
    (@body delete, $s:ident, $keys:ident, $m:ident) => {{ let _ = $m; deletes($s.store, $keys.len(), &mut $s.created) }};
}

counted!(
    counted_engine_get: Engine => get,
    counted_engine_peek: Engine => peek,
    counted_engine_touch: Engine => touch,
    counted_engine_update: Engine => update,
    counted_engine_create: Engine => create,
    counted_engine_delete: Engine => delete,
    counted_peer_get: PeerStore => get,
    counted_peer_peek: PeerStore => peek,
    counted_peer_touch: PeerStore => touch,
    counted_peer_update: PeerStore => update,
    counted_peer_create: PeerStore => create,
    counted_peer_delete: PeerStore => delete,
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
            pub fn $name(s: &Subject<'_, Engine>, keys: &[u32], handles: &mut Vec<TimerHandle>) -> u64 {
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

/// The engine's loop of `op` over `keys` (creates and deletes: as many as
/// there are keys).
pub fn run_engine(op: Op, s: &mut Subject<'_, Engine>, keys: &[u32], metadata: &[u8]) -> u64 {
    s.next_millisecond();
    match op {
        Op::Get => counted_engine_get(s, keys, metadata),
        Op::Peek => counted_engine_peek(s, keys, metadata),
        Op::Touch => counted_engine_touch(s, keys, metadata),
        Op::Update => counted_engine_update(s, keys, metadata),
        Op::Create => counted_engine_create(s, keys, metadata),
        Op::Delete => counted_engine_delete(s, keys, metadata),
        Op::List => unreachable!("no list loop"),
    }
}

/// The peer's loop of `op` over `keys`.
pub fn run_peer(op: Op, s: &mut Subject<'_, PeerStore>, keys: &[u32], metadata: &[u8]) -> u64 {
    match op {
        Op::Get => counted_peer_get(s, keys, metadata),
        Op::Peek => counted_peer_peek(s, keys, metadata),
        Op::Touch => counted_peer_touch(s, keys, metadata),
        Op::Update => counted_peer_update(s, keys, metadata),
        Op::Create => counted_peer_create(s, keys, metadata),
        Op::Delete => counted_peer_delete(s, keys, metadata),
        Op::List => unreachable!("no list loop"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the machine's core count (the engine's default follows it):
    /// run under `taskset -c 0`, an engine left to its default has 4.
    #[test]
    fn the_gates_measure_an_engine_of_a_fixed_shard_count() {
        use crate::callgrind::CountPlan;
        use crate::cost::CostPlan;
        assert_eq!(CountPlan::default().shards, GATE_SHARDS);
        assert_eq!(CostPlan::default().shards, GATE_SHARDS);
        let (engine, _) = open_engine(1_000, GATE_SHARDS).unwrap();
        assert_eq!(engine.shard_count(), GATE_SHARDS);
    }

    /// The counted reads are real ones: a `get` or `touch` whose session's
    /// millisecond moved writes its access word (the path every read of a
    /// live server takes at least once a millisecond). On a clock that
    /// never moved, the gates counted `touch` as a `contains` and `get` as
    /// a `peek`, and a regression of the slide passed both.
    #[test]
    fn the_counted_reads_slide_the_deadline() {
        let (engine, clock) = open_engine(1_000, GATE_SHARDS).unwrap();
        let mut e = Subject::populate(&engine, 100, 32, 7).unwrap().with_clock(clock);
        let keys: Vec<u32> = (0..100).collect();
        for op in [Op::Get, Op::Touch] {
            let before: Vec<u64> = e
                .ids
                .iter()
                .map(|id| engine.peek(id).unwrap().last_access_ms())
                .collect();
            assert_eq!(run_engine(op, &mut e, &keys, &[1; 32]), 100);
            let slid = e
                .ids
                .iter()
                .zip(&before)
                .filter(|(id, b)| engine.peek(id).unwrap().last_access_ms() > **b)
                .count();
            assert_eq!(slid, 100, "{op}: the loop slid no deadline");
        }
    }

    #[test]
    fn every_loop_succeeds_on_both_stores_and_deletes_what_creates_made() {
        let (engine, clock) = open_engine(10_000, GATE_SHARDS).unwrap();
        let peer = PeerStore::default();
        let mut e = Subject::populate(&engine, 1_000, 32, 7)
            .unwrap()
            .with_clock(clock);
        let mut p = Subject::populate(&peer, 1_000, 32, 7).unwrap();
        assert_eq!(e.ids, p.ids, "the same ids from the same seed");
        let keys = keys(500, 1_000, 3);
        let metadata = [1u8; 32];
        for op in KINDS {
            assert_eq!(run_engine(op, &mut e, &keys, &metadata), 500, "engine {op}");
            assert_eq!(run_peer(op, &mut p, &keys, &metadata), 500, "peer {op}");
        }
        assert!(e.created.is_empty() && p.created.is_empty());
        let mut handles = Vec::new();
        warm_state(&e, &keys);
        for kind in STATE_KINDS {
            assert_eq!(
                run_engine_state(kind, &e, &keys, &mut handles),
                500,
                "engine {kind}"
            );
        }
        assert!(handles.is_empty(), "every armed timer's handle was cancelled");
        engine.debug_check_invariants();
        assert_eq!(now(SessionStore::len(&engine)).unwrap(), 1_000);
        assert_eq!(now(peer.len()).unwrap(), 1_000);
    }
}
