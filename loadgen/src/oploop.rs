//! Tight loops of one operation kind against one store, what the CI gates
//! measure: CPU time per operation, the engine's against the peer's, in
//! interleaved slices ([`crate::cost`]), and instructions per operation
//! under callgrind ([`crate::callgrind`]).
//!
//! The engine's loops live in the `session-gate-loops` crate (re-exported
//! here), compiled apart from the rest of loadgen so that no other code
//! changes how they are compiled (that crate's doc says why); the peer's
//! are instantiated here from the same generic loops. Each loop is its own
//! `#[inline(never)]` function per store (`counted_engine_get`,
//! `counted_peer_get`, ...), in a module named `oploop` either way, so
//! that callgrind can count it alone (one `--toggle-collect` per loop, by
//! its whole name) and tell the stores apart (Rust's symbol names do not
//! carry generic parameters). Nothing in a loop reads the clock or records
//! a histogram: a slice is timed as a whole. The engine runs on a manual
//! clock, moved a millisecond between loops (so each loop's first read of
//! a session slides its deadline, as a live server's reads do), and
//! without its sweeper, so the calling thread does all of its work and
//! nothing else runs beside it.

use session_engine::{Config, Engine, ManualClock};
pub use session_gate_loops::oploop::{
    counted_engine_create, counted_engine_delete, counted_engine_get, counted_engine_peek,
    counted_engine_touch, counted_engine_update, keys, now, run_engine_state, warm_state, Subject,
    STATE_KINDS,
};

use crate::error::Error;
use crate::limits::GATE_SHARDS;
use crate::mix::Op;
use crate::peer::PeerStore;

/// The kinds the gates measure, in the order a round runs them (creates
/// before the deletes that remove them).
pub const KINDS: [Op; 6] = [Op::Get, Op::Peek, Op::Touch, Op::Update, Op::Create, Op::Delete];

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

session_gate_loops::counted_loops!(
    counted_peer_get: PeerStore => get,
    counted_peer_peek: PeerStore => peek,
    counted_peer_touch: PeerStore => touch,
    counted_peer_update: PeerStore => update,
    counted_peer_create: PeerStore => create,
    counted_peer_delete: PeerStore => delete,
);

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
    use session_engine::SessionStore;

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

    /// The engine's loops are the other crate's, compiled there (where no
    /// loadgen code changes how), and every loop's path ends in
    /// `::oploop::` and its name, which is what callgrind's toggles match.
    #[test]
    fn the_engines_loops_are_compiled_in_their_own_crate() {
        assert_eq!(
            std::any::type_name_of_val(&counted_engine_get),
            "session_gate_loops::oploop::counted_engine_get"
        );
        assert_eq!(
            std::any::type_name_of_val(&counted_peer_get),
            "loadgen::oploop::counted_peer_get"
        );
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
