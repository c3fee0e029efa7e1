//! The wall-clock gate's measurement: CPU time per operation of the engine
//! against the reference peer, in interleaved slices.
//!
//! A run opens a fresh engine and a fresh peer (new hash seeds, new memory
//! layout), inserts the same sessions into both, then repeats a round:
//! for each kind in [`KINDS`], four slices of `ops_per_slice` operations in
//! the order engine, peer, peer, engine (ABBA, so a machine that speeds up
//! or slows down over the round weighs on both alike), each timed by the
//! calling thread's CPU time (`schedstat`, ns; wall time where it cannot be
//! read). A preempted thread's CPU clock stops, so a busy machine costs
//! time, not accuracy. The round's figure for a kind is the engine's CPU
//! per operation over the peer's; the run's is the median over its rounds.
//! See `BENCHMARKING.md`: a CPU-per-op ratio to a peer in the same slices of
//! time is what moves least on a shared machine.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::gate::median;
use crate::limits::{GATE_ROUNDS_MAX, GATE_SESSIONS_MAX};
use crate::oploop::{self, Subject, KINDS};
use crate::peer::PeerStore;
use crate::procfs;
use crate::progress::Progress;

/// What a gate run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostPlan {
    /// Live sessions in each store.
    pub sessions: usize,
    /// Metadata bytes of each.
    pub metadata_bytes: usize,
    /// Operations per slice.
    pub ops_per_slice: usize,
    /// Rounds per run (each: four slices per kind).
    pub rounds: usize,
    /// Draws the ids and the keys.
    pub seed: u64,
    /// The engine's shards ([`crate::limits::GATE_SHARDS`]; absent from a
    /// baseline written before plans recorded it, which was measured with
    /// that many).
    #[serde(default = "oploop::gate_shards")]
    pub shards: usize,
}

impl Default for CostPlan {
    /// The gate's plan: the default scenario's 100K sessions of 256 B,
    /// 10K operations a slice, 8 rounds (a run takes milliseconds a slice,
    /// about a second in all: `results/gate.md`). A run's own hash seeds
    /// and memory layout move its ratios by a few percent, which more
    /// rounds do not average out; more runs do (`--repeat`).
    fn default() -> Self {
        Self {
            sessions: 100_000,
            metadata_bytes: 256,
            ops_per_slice: 10_000,
            rounds: 8,
            seed: 0x5EED_CAFE,
            shards: oploop::gate_shards(),
        }
    }
}

impl CostPlan {
    /// Checks that the plan can be measured: sessions and operations per
    /// slice in `1..=`[`GATE_SESSIONS_MAX`] (none would draw keys from
    /// nothing or time empty slices), rounds in `1..=`[`GATE_ROUNDS_MAX`],
    /// metadata the gates' engine accepts.
    ///
    /// # Errors
    /// A message naming the first field out of its range.
    pub fn check(&self) -> Result<(), String> {
        oploop::check_within("plan.sessions", self.sessions, 1, GATE_SESSIONS_MAX)?;
        oploop::check_within("plan.ops_per_slice", self.ops_per_slice, 1, GATE_SESSIONS_MAX)?;
        oploop::check_within("plan.rounds", self.rounds, 1, GATE_ROUNDS_MAX)?;
        oploop::check_within(
            "plan.metadata_bytes",
            self.metadata_bytes,
            1,
            oploop::METADATA_BYTES_MAX,
        )
    }
}

/// One kind's figures over one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCost {
    /// The engine's CPU per operation, median over the rounds, ns.
    pub engine_ns: f64,
    /// The peer's, ns.
    pub peer_ns: f64,
    /// Engine / peer, median over the rounds.
    pub ratio: f64,
    /// The lowest round's ratio.
    pub ratio_min: f64,
    /// The highest round's ratio.
    pub ratio_max: f64,
}

/// One run: a fresh engine and peer, `rounds` rounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostRun {
    /// Per kind.
    pub ops: BTreeMap<String, OpCost>,
    /// True if the thread's CPU time could be read (false: wall time).
    pub cpu_time: bool,
}

/// Per round: the engine's CPU per operation, the peer's, their ratio.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Slices of keys the rounds cycle through.
const KEY_WINDOWS: usize = 8;

/// The calling thread's CPU time, or wall time where it cannot be read, ns.
fn clock_ns(origin: Instant) -> (u64, bool) {
    match procfs::thread_cpu_ns() {
        Some(ns) => (ns, true),
        None => (
            u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
            false,
        ),
    }
}

/// One gate run.
///
/// # Errors
/// [`Error::Failed`] if a store refuses an operation of a loop (a loop that
/// failed fast would look cheap).
pub fn measure(plan: &CostPlan, progress: Option<&Progress>) -> Result<CostRun, Error> {
    plan.check().map_err(Error::Usage)?;
    let (engine, clock) = oploop::open_engine(plan.sessions + 2 * plan.ops_per_slice, plan.shards)?;
    let peer = PeerStore::default();
    if let Some(bar) = progress {
        bar.set_message(format!("populating {} sessions in each store", plan.sessions));
    }
    let mut e = Subject::populate(&engine, plan.sessions, plan.metadata_bytes, plan.seed)
        .map_err(|e| Error::Failed(e.into()))?
        .with_clock(clock);
    let mut p = Subject::populate(&peer, plan.sessions, plan.metadata_bytes, plan.seed)
        .map_err(|e| Error::Failed(e.into()))?;
    let keys = oploop::keys(
        plan.ops_per_slice * KEY_WINDOWS,
        plan.sessions,
        plan.seed ^ 0x4B45_5953,
    );
    let metadata = vec![0xCD; plan.metadata_bytes];
    let origin = Instant::now();
    let mut per_op: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut cpu_time = true;
    // Round 0 warms caches, allocator and branch predictors; not counted.
    for round in 0..=plan.rounds {
        if let Some(bar) = progress {
            bar.set_message(format!("round {round} of {}", plan.rounds));
        }
        let window = round % KEY_WINDOWS;
        let slice = &keys[window * plan.ops_per_slice..(window + 1) * plan.ops_per_slice];
        for op in KINDS {
            let mut timed = |engine_side: bool, e: &mut Subject<'_, _>, p: &mut Subject<'_, PeerStore>| {
                let (before, cpu) = clock_ns(origin);
                let ok = if engine_side {
                    oploop::run_engine(op, e, slice, &metadata)
                } else {
                    oploop::run_peer(op, p, slice, &metadata)
                };
                let (after, _) = clock_ns(origin);
                cpu_time &= cpu;
                if ok != slice.len() as u64 {
                    return Err(Error::Failed(anyhow::anyhow!(
                        "{} {op}: {ok} of {} operations succeeded",
                        if engine_side { "engine" } else { "peer" },
                        slice.len()
                    )));
                }
                Ok(after.saturating_sub(before) as f64)
            };
            let e1 = timed(true, &mut e, &mut p)?;
            let p1 = timed(false, &mut e, &mut p)?;
            let p2 = timed(false, &mut e, &mut p)?;
            let e2 = timed(true, &mut e, &mut p)?;
            if round > 0 {
                let ops = 2.0 * plan.ops_per_slice as f64;
                let entry = per_op.entry(op.name()).or_default();
                entry.0.push((e1 + e2) / ops);
                entry.1.push((p1 + p2) / ops);
                entry.2.push((e1 + e2) / (p1 + p2).max(1.0));
            }
        }
    }
    let ops = per_op
        .into_iter()
        .map(|(name, (engine_ns, peer_ns, mut ratios))| {
            ratios.sort_by(f64::total_cmp);
            let cost = OpCost {
                engine_ns: median(&engine_ns),
                peer_ns: median(&peer_ns),
                ratio: median(&ratios),
                ratio_min: ratios[0],
                ratio_max: ratios[ratios.len() - 1],
            };
            (name.to_owned(), cost)
        })
        .collect();
    Ok(CostRun { ops, cpu_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_every_kind_on_both_stores() {
        let plan = CostPlan {
            sessions: 2_000,
            metadata_bytes: 16,
            ops_per_slice: 200,
            rounds: 3,
            seed: 1,
            shards: oploop::gate_shards(),
        };
        let run = measure(&plan, None).unwrap();
        assert_eq!(run.ops.len(), KINDS.len());
        for (op, cost) in &run.ops {
            assert!(cost.engine_ns > 0.0 && cost.peer_ns > 0.0, "{op}: {cost:?}");
            assert!(
                cost.ratio_min <= cost.ratio && cost.ratio <= cost.ratio_max,
                "{op}: {cost:?}"
            );
        }
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        // The middle of an even count, as the gate's median of runs: the
        // upper middle biased a run of few rounds upward against a
        // baseline of more.
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
    }
}
