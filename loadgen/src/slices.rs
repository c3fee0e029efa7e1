//! What each slice of a load measured, which slices the machine disturbed,
//! and the pools the verdict judges (see [`crate::schedule`] for how slices
//! alternate between the backend and the peer).
//!
//! **Disturbed.** A slice is disturbed when the machine took a worker off
//! its core long enough to shape the slice's tail: one gap of
//! [`DISTURBED_GAP_NS`] or more in a client's wait loop, as much run-queue
//! wait, or [`DISTURBED_SHARE`] of the slice in all (see [`crate::clock`]).
//!
//! **Set aside.** A disturbed slice of the peer is set aside. A disturbed
//! slice of the backend is set aside only if the disturbance explains its
//! slowest point operation (no slower than [`EXPLAINED_FACTOR`] × the time the
//! machine took + [`EXPLAINED_SLACK_NS`]): a backend that stalls for 100 ms
//! in a slice where the machine also took 2 ms is judged like any other.
//!
//! **Judged.** Every other measured slice is judged: its histograms join its
//! side's judged pool, and its per-kind medians and p99s (of groups of
//! judged slices that run enough of the kind) the lists whose
//! medians are the "typical slice". The verdict ([`crate::targets`])
//! compares the two sides' judged pools.

use serde::{Deserialize, Serialize};

use crate::clock::Lost;
use crate::hist::{new_hist, quantile_ns, Hist, OpHists};
use crate::limits::{
    DISTURBED_GAP_NS, DISTURBED_SHARE, EXPLAINED_FACTOR, EXPLAINED_SLACK_NS, TYPICAL_GROUPS_MIN,
    TYPICAL_P99_SAMPLES_MIN, TYPICAL_SAMPLES_MIN,
};
use crate::mix::Op;
use crate::schedule::Side;

/// How a slice counts in the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Part of the warm-up: in no figure but the timeline.
    Warmup,
    /// Judged.
    Judged,
    /// Disturbed by the machine, and the disturbance explains it: reported,
    /// not judged.
    SetAside,
}

/// One slice's figures, all clients of its side together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SliceStats {
    /// Slice number since the start of the load (warm-up included).
    pub index: u64,
    /// Whose slice it was.
    pub side: Side,
    /// Seconds since the start of the load.
    pub start_s: f64,
    /// How it counts.
    pub standing: Standing,
    /// The machine took enough to shape its tail (see the module doc).
    pub disturbed: bool,
    /// Point operations intended in it.
    pub ops: u64,
    /// Of which completed before it ended.
    pub in_time: u64,
    /// Median of its point operations, ns.
    pub p50_ns: u64,
    /// 99th percentile of its point operations, ns.
    pub p99_ns: u64,
    /// Its slowest operation of any kind, ns.
    pub max_ns: u64,
    /// Its slowest point operation, ns: what the machine's taken time must
    /// explain for a disturbed slice to be set aside (a list page takes
    /// milliseconds of its own, which no stall explains, and would keep
    /// every disturbed slice it lands in judged on the backend's side
    /// while the peer's are set aside).
    #[serde(skip)]
    pub point_max_ns: u64,
    /// What the machine took from its clients (the most any one lost):
    /// gaps in their wait loops and their threads' run-queue wait (0 where
    /// it cannot be read).
    pub lost: Lost,
    /// Operations of each kind (`Op::index`).
    #[serde(skip)]
    pub count_by_op: [u64; Op::COUNT],
    /// Median of each kind, ns (0 where none ran).
    #[serde(skip)]
    pub p50_by_op_ns: [u64; Op::COUNT],
    /// 99th percentile of each kind, ns (0 where none ran).
    #[serde(skip)]
    pub p99_by_op_ns: [u64; Op::COUNT],
}

/// What is known of a slice besides its histograms.
#[derive(Clone, Copy, Debug)]
pub struct SliceMeta {
    /// Slice number since the start of the load.
    pub index: u64,
    /// Whose slice it was.
    pub side: Side,
    /// Seconds since the start of the load.
    pub start_s: f64,
    /// False for warm-up slices.
    pub measured: bool,
    /// Point operations that completed before it ended.
    pub in_time: u64,
    /// What the machine took from its clients.
    pub lost: Lost,
    /// Its length, ns.
    pub slice_ns: u64,
}

impl SliceStats {
    /// Summarizes one slice.
    #[must_use]
    pub fn of(meta: SliceMeta, hists: &OpHists) -> Self {
        let SliceMeta {
            index,
            side,
            start_s,
            measured,
            in_time,
            lost,
            slice_ns,
        } = meta;
        let points = hists.point_ops();
        let max_ns = hists
            .by_op
            .iter()
            .map(hdrhistogram::Histogram::max)
            .max()
            .unwrap_or(0);
        let mut stats = Self {
            index,
            side,
            start_s,
            standing: Standing::Warmup,
            disturbed: false,
            ops: points.len(),
            in_time,
            p50_ns: quantile_ns(&points, 0.5),
            p99_ns: quantile_ns(&points, 0.99),
            max_ns,
            point_max_ns: points.max(),
            lost,
            count_by_op: by_index(|op| hists.get(op).len()),
            p50_by_op_ns: by_index(|op| quantile_ns(hists.get(op), 0.5)),
            p99_by_op_ns: by_index(|op| quantile_ns(hists.get(op), 0.99)),
        };
        stats.disturbed = stats.machine_took_enough(slice_ns);
        stats.standing = if !measured {
            Standing::Warmup
        } else if stats.disturbed && (side == Side::Peer || stats.explained()) {
            Standing::SetAside
        } else {
            Standing::Judged
        };
        stats
    }

    /// Marks a slice with no operation in it as disturbed: the time the
    /// machine took from an earlier slice ran on into it. Set aside, as a
    /// disturbed slice with nothing slow in it is.
    pub fn spilled_into(&mut self) {
        self.disturbed = true;
        if self.standing == Standing::Judged {
            self.standing = Standing::SetAside;
        }
    }

    /// Marks a slice with operations in it as disturbed: the time the
    /// machine took in an earlier slice of its side ran on `spill_ns` into
    /// this one. Set aside as a disturbed slice is: the peer's always, the
    /// backend's if that time (or its own, if more) explains its slowest
    /// operation.
    pub fn spilled_over(&mut self, spill_ns: u64) {
        self.disturbed = true;
        let took = spill_ns.max(self.taken_ns());
        let explained = self.point_max_ns
            <= EXPLAINED_FACTOR
                .saturating_mul(took)
                .saturating_add(EXPLAINED_SLACK_NS);
        if self.standing == Standing::Judged && (self.side == Side::Peer || explained) {
            self.standing = Standing::SetAside;
        }
    }

    /// Time the machine took from the slice, as far as it can be seen:
    /// gaps in the wait loop and run-queue wait (the two overlap, so the
    /// larger stands for both).
    #[must_use]
    pub fn taken_ns(&self) -> u64 {
        self.lost.gaps_ns.max(self.lost.runqueue_wait_ns)
    }

    fn machine_took_enough(&self, slice_ns: u64) -> bool {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let share_ns = (slice_ns as f64 * DISTURBED_SHARE) as u64;
        self.lost.gap_max_ns >= DISTURBED_GAP_NS
            || self.lost.runqueue_wait_ns >= DISTURBED_GAP_NS
            || self.taken_ns() >= share_ns
    }

    fn explained(&self) -> bool {
        self.point_max_ns <= EXPLAINED_FACTOR * self.taken_ns() + EXPLAINED_SLACK_NS
    }
}

/// A per-kind array in `Op::index` order (which is not `Op::ALL`'s).
fn by_index(f: impl Fn(Op) -> u64) -> [u64; Op::COUNT] {
    let mut out = [0; Op::COUNT];
    for op in Op::ALL {
        out[op.index()] = f(op);
    }
    out
}

/// One side's slices, pooled.
#[derive(Default)]
pub struct SideTally {
    /// Every measured slice.
    pub all: OpHists,
    /// The judged slices.
    pub judged: OpHists,
    /// Measured slices.
    pub measured: u64,
    /// Of which judged.
    pub judged_slices: u64,
    /// Of which disturbed (judged or set aside).
    pub disturbed: u64,
    /// Point operations completed in their slice, every measured slice.
    pub in_time_all: u64,
    /// Point operations due in every measured slice (issued, in time or
    /// late).
    pub offered_all: u64,
    /// The same, undisturbed slices only (what the rate verdict judges: a
    /// disturbed slice that stays judged for its tail says nothing of the
    /// rate the backend keeps).
    pub in_time_quiet: u64,
    /// Undisturbed measured slices.
    pub quiet_slices: u64,
    /// Point operations due in them (issued, in time or late): what the
    /// rate verdict compares `in_time_quiet` with.
    pub offered_quiet: u64,
    /// Time the machine took over the measured slices, ns.
    pub taken_ns: u64,
    /// The longest single gap, ns.
    pub gap_max_ns: u64,
    /// Per kind: the medians of groups of judged slices that ran at least
    /// [`TYPICAL_SAMPLES_MIN`] of it (see [`Groups`]).
    p50s: [Groups; Op::COUNT],
    /// Per kind: the p99s of groups of judged slices that ran at least
    /// [`TYPICAL_P99_SAMPLES_MIN`] of it.
    p99s: [Groups; Op::COUNT],
}

/// One kind's judged slices cut into groups that each hold at least a
/// floor of its samples (a slice that runs that many is a group of its
/// own; the others are pooled in order until a group holds the floor),
/// and one quantile of each group.
/// A kind's typical figure is the median over its groups: a kind that
/// most slices run too few of still has one over the whole run, which a
/// stall in one group cannot move. Taking only the slices that happened to
/// reach the floor made it the median of a handful, or of one: whether
/// there were any, and how many, followed the mix's random draws, not the
/// schedule.
#[derive(Default)]
struct Groups {
    /// The group being filled (none yet: empty).
    open: Option<Hist>,
    /// The quantile of each full group.
    quantiles: Vec<u64>,
}

impl Groups {
    /// Adds one judged slice's samples of the kind.
    fn add(&mut self, hist: &Hist, floor: u64, quantile: f64) {
        if hist.is_empty() {
            return;
        }
        if hist.len() >= floor {
            // A group of its own; a group being filled stays open.
            self.quantiles.push(quantile_ns(hist, quantile));
            return;
        }
        let open = self.open.get_or_insert_with(new_hist);
        open.add(hist).expect("histograms share their bounds");
        if open.len() >= floor {
            self.quantiles.push(quantile_ns(open, quantile));
            open.reset();
        }
    }

    /// The median over the groups, if there are [`TYPICAL_GROUPS_MIN`].
    fn typical(&self) -> Option<u64> {
        (self.quantiles.len() >= TYPICAL_GROUPS_MIN).then(|| median_ns(&mut self.quantiles.clone()))
    }
}

impl SideTally {
    /// Takes one final slice of this side.
    pub fn accept(&mut self, stats: &SliceStats, hists: &OpHists) {
        if stats.standing == Standing::Warmup {
            return;
        }
        self.measured += 1;
        self.all.add(hists);
        self.in_time_all += stats.in_time;
        self.offered_all += stats.ops;
        self.taken_ns += stats.taken_ns();
        self.gap_max_ns = self.gap_max_ns.max(stats.lost.gap_max_ns);
        self.disturbed += u64::from(stats.disturbed);
        if !stats.disturbed {
            self.quiet_slices += 1;
            self.in_time_quiet += stats.in_time;
            self.offered_quiet += stats.ops;
        }
        if stats.standing == Standing::Judged {
            self.judged_slices += 1;
            self.judged.add(hists);
            for op in Op::ALL {
                let hist = hists.get(op);
                self.p50s[op.index()].add(hist, TYPICAL_SAMPLES_MIN, 0.5);
                self.p99s[op.index()].add(hist, TYPICAL_P99_SAMPLES_MIN, 0.99);
            }
        }
    }

    /// The typical slice's median of `op`: the median over the groups of
    /// judged slices that ran [`TYPICAL_SAMPLES_MIN`] of it (see
    /// [`Groups`]), or, for kinds too rare for [`TYPICAL_GROUPS_MIN`]
    /// groups (a list page a second), the median of the judged pool.
    #[must_use]
    pub fn typical_p50_ns(&self, op: Op) -> Option<u64> {
        self.p50s[op.index()].typical().or_else(|| {
            let pooled = self.judged.get(op);
            (!pooled.is_empty()).then(|| pooled.value_at_quantile(0.5))
        })
    }

    /// The typical slice's p99 of `op`: the median over the groups of
    /// judged slices that ran [`TYPICAL_P99_SAMPLES_MIN`] of it; `None` if
    /// there are fewer than [`TYPICAL_GROUPS_MIN`] (a kind too rare in the
    /// run, whose p99 is then judged on the pool).
    #[must_use]
    pub fn typical_p99_ns(&self, op: Op) -> Option<u64> {
        self.p99s[op.index()].typical()
    }

    /// Set-aside slices.
    #[must_use]
    pub fn set_aside(&self) -> u64 {
        self.measured - self.judged_slices
    }
}

/// The median of `values` (not empty), midway between the middle two of
/// an even count (rounded down), as `gate::median`.
fn median_ns(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        u64::midpoint(values[mid - 1], values[mid])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn slice(side: Side, max_ns: u64, lost: Lost, wait_ns: u64) -> SliceStats {
        let mut hists = OpHists::default();
        for i in 0..100 {
            hists.record(Op::Get, 300 + i, true);
        }
        hists.record(Op::Get, max_ns, true);
        SliceStats::of(meta(side, 101, lost, wait_ns), &hists)
    }

    fn meta(side: Side, in_time: u64, lost: Lost, runqueue_wait_ns: u64) -> SliceMeta {
        SliceMeta {
            index: 3,
            side,
            start_s: 0.3,
            measured: true,
            in_time,
            lost: Lost {
                runqueue_wait_ns,
                ..lost
            },
            slice_ns: 100 * MS,
        }
    }

    fn gaps(total_ms: u64, max_ms: u64) -> Lost {
        Lost {
            gaps_ns: total_ms * MS,
            gap_max_ns: max_ms * MS,
            runqueue_wait_ns: 0,
        }
    }

    #[test]
    fn a_quiet_slice_is_judged() {
        let s = slice(
            Side::Backend,
            80_000,
            gaps(2, 0), /* texture: 2 ms of short gaps */
            0,
        );
        assert!(!s.disturbed);
        assert_eq!(s.standing, Standing::Judged);
    }

    #[test]
    fn a_long_gap_or_wait_disturbs_a_slice_and_explains_its_tail() {
        for (lost, wait) in [(gaps(4, 4), 0), (gaps(0, 0), 4 * MS), (gaps(12, 0), 0)] {
            let s = slice(Side::Backend, 7 * MS, lost, wait);
            assert!(s.disturbed, "{lost:?} {wait}");
            assert_eq!(s.standing, Standing::SetAside, "{lost:?} {wait}");
        }
    }

    #[test]
    fn a_backend_stall_in_a_disturbed_slice_is_still_judged() {
        // The machine took 3 ms; the slowest operation waited 100 ms.
        let s = slice(Side::Backend, 100 * MS, gaps(3, 3), 0);
        assert!(s.disturbed);
        assert_eq!(s.standing, Standing::Judged);
        // The peer's disturbed slices are always set aside.
        let p = slice(Side::Peer, 100 * MS, gaps(3, 3), 0);
        assert_eq!(p.standing, Standing::SetAside);
    }

    /// A list page's own milliseconds are not the machine's to explain: a
    /// disturbed slice whose point operations the stall explains is set
    /// aside though a page in it took longer (the peer's always are; kept
    /// judged, the machine's noise counted against the backend alone).
    #[test]
    fn a_slow_list_page_does_not_keep_a_disturbed_slice_judged() {
        let mut hists = OpHists::default();
        for i in 0..100 {
            hists.record(Op::Get, 300 + i, true);
        }
        hists.record(Op::Get, 6 * MS, true);
        hists.record(Op::List, 40 * MS, true);
        let s = SliceStats::of(meta(Side::Backend, 101, gaps(4, 4), 0), &hists);
        assert!(s.disturbed);
        assert_eq!(s.max_ns, hists.get(Op::List).max());
        assert_eq!(s.standing, Standing::SetAside);
        let mut spilled = SliceStats::of(meta(Side::Backend, 101, Lost::default(), 0), &hists);
        assert_eq!(spilled.standing, Standing::Judged);
        spilled.spilled_over(4 * MS);
        assert_eq!(spilled.standing, Standing::SetAside);
    }

    /// The typical slice's p99: the median of the judged slices' p99s,
    /// so a slice held up for milliseconds (one in five here) does not move
    /// it; slices with too few of a kind for a p99 of their own count not.
    #[test]
    fn the_typical_p99_is_the_median_of_the_judged_slices_p99s() {
        let mut tally = SideTally::default();
        for held_up in [false, false, true, false, false] {
            let mut hists = OpHists::default();
            for i in 0..TYPICAL_P99_SAMPLES_MIN {
                // 2% of the slice slow: 40 us, or 5 ms in the held-up one.
                let slow = if held_up { 5 * MS } else { 40_000 };
                hists.record(Op::Get, if i % 50 == 0 { slow } else { 500 }, true);
            }
            for _ in 0..TYPICAL_P99_SAMPLES_MIN - 1 {
                hists.record(Op::Delete, 300, true);
            }
            let stats = SliceStats::of(meta(Side::Backend, 20, Lost::default(), 0), &hists);
            tally.accept(&stats, &hists);
        }
        assert_eq!(tally.judged_slices, 5);
        let typical = tally.typical_p99_ns(Op::Get).unwrap();
        assert!(typical.abs_diff(40_000) <= 400, "{typical}");
        assert!(
            tally.judged.get(Op::Get).max() >= 4 * MS,
            "the pool has the slow slice"
        );
        assert_eq!(
            tally.typical_p99_ns(Op::Delete),
            None,
            "199 a slice: two groups of two slices, too few"
        );
    }

    /// A kind most slices run fewer than 200 of: its typical p99 is over
    /// groups of slices, not the one slice that drew 200 by
    /// chance (which made three slow operations in it the run's p99).
    #[test]
    fn a_kind_too_rare_in_most_slices_is_typical_over_groups_of_slices() {
        let mut tally = SideTally::default();
        for n in 0..50 {
            let mut hists = OpHists::default();
            let (count, slow) = if n == 20 {
                (TYPICAL_P99_SAMPLES_MIN, 3)
            } else {
                (180, 0)
            };
            for i in 0..count {
                hists.record(Op::Peek, if i < slow { 5 * MS } else { 500 }, true);
            }
            let stats = SliceStats::of(meta(Side::Backend, count, Lost::default(), 0), &hists);
            tally.accept(&stats, &hists);
        }
        let typical = tally.typical_p99_ns(Op::Peek).unwrap();
        assert!(typical.abs_diff(500) <= 5, "{typical}");
        assert!(tally.judged.get(Op::Peek).max() >= 4 * MS);
    }

    /// A slice that alone reaches the floor is a group of its own, and a
    /// group being filled stays open for the slices after it.
    #[test]
    fn a_slice_reaching_the_floor_alone_is_its_own_group() {
        let hist = |n: u64, ns: u64| {
            let mut h = crate::hist::new_hist();
            for _ in 0..n {
                h.record(ns).unwrap();
            }
            h
        };
        let mut groups = Groups::default();
        groups.add(&hist(10, 100), 20, 0.5);
        groups.add(&hist(25, 900), 20, 0.5);
        assert_eq!(groups.quantiles.len(), 1, "the 25 alone");
        assert!(groups.quantiles[0].abs_diff(900) <= 9);
        groups.add(&hist(10, 300), 20, 0.5);
        assert_eq!(groups.quantiles.len(), 2, "the two tens together");
        assert!(
            (100..=303).contains(&groups.quantiles[1]),
            "{:?}",
            groups.quantiles
        );
        groups.add(&hist(0, 1), 20, 0.5);
        assert_eq!(groups.quantiles.len(), 2, "an empty slice adds nothing");
    }

    /// Fewer than three groups: no typical p99 (the pool's), and a median
    /// from the pool.
    #[test]
    fn two_groups_are_too_few_for_a_typical_figure() {
        let mut tally = SideTally::default();
        for _ in 0..2 {
            let mut hists = OpHists::default();
            for _ in 0..TYPICAL_P99_SAMPLES_MIN {
                hists.record(Op::Get, 700, true);
            }
            let stats = SliceStats::of(meta(Side::Backend, 200, Lost::default(), 0), &hists);
            tally.accept(&stats, &hists);
        }
        assert_eq!(tally.typical_p99_ns(Op::Get), None);
        let pooled = tally.typical_p50_ns(Op::Get).unwrap();
        assert!(pooled.abs_diff(700) <= 7, "{pooled}");
    }

    /// Of an even count of judged slices, the typical one is midway between
    /// the middle two (as the gate's medians): the upper middle made the
    /// worse of two slices, a held-up one, decide a p99 bound alone.
    #[test]
    fn the_typical_slice_of_an_even_count_is_midway_between_the_middle_two() {
        let mut tally = SideTally::default();
        for (p50, p99) in [(300, 40_000), (400, 5 * MS), (300, 40_000), (400, 5 * MS)] {
            let mut hists = OpHists::default();
            for i in 0..TYPICAL_P99_SAMPLES_MIN {
                hists.record(Op::Get, if i % 50 == 0 { p99 } else { p50 }, true);
            }
            let stats = SliceStats::of(meta(Side::Backend, 20, Lost::default(), 0), &hists);
            tally.accept(&stats, &hists);
        }
        let typical = tally.typical_p99_ns(Op::Get).unwrap();
        let midway = u64::midpoint(40_000, 5 * MS);
        assert!(typical.abs_diff(midway) <= midway / 100, "{typical}");
        let typical = tally.typical_p50_ns(Op::Get).unwrap();
        assert!((348..=352).contains(&typical), "{typical}");
    }

    #[test]
    fn the_typical_slice_is_the_median_of_the_judged_slices_medians() {
        let mut tally = SideTally::default();
        for (p50, disturbed) in [(300, false), (310, false), (900, true), (305, false)] {
            let mut hists = OpHists::default();
            for _ in 0..TYPICAL_SAMPLES_MIN {
                hists.record(Op::Get, p50, true);
            }
            hists.record(Op::List, 2 * MS, true);
            let lost = if disturbed { gaps(5, 5) } else { Lost::default() };
            let stats = SliceStats::of(meta(Side::Backend, 20, lost, 0), &hists);
            tally.accept(&stats, &hists);
        }
        assert_eq!((tally.measured, tally.judged_slices, tally.disturbed), (4, 3, 1));
        let typical = tally.typical_p50_ns(Op::Get).unwrap();
        assert!((304..=306).contains(&typical), "{typical}");
        // One list page a slice: too few for a per-slice median; the pool's.
        assert!(tally.typical_p50_ns(Op::List).unwrap() >= 2 * MS - 2 * MS / 1000);
        assert_eq!(tally.typical_p50_ns(Op::Delete), None);
    }

    #[test]
    fn each_kind_keeps_its_own_typical_median() {
        let mut tally = SideTally::default();
        let mut hists = OpHists::default();
        for (op, ns) in [
            (Op::Get, 400),
            (Op::Create, 900),
            (Op::Peek, 300),
            (Op::Delete, 200),
        ] {
            for _ in 0..TYPICAL_SAMPLES_MIN {
                hists.record(op, ns, true);
            }
        }
        tally.accept(
            &SliceStats::of(meta(Side::Backend, 80, Lost::default(), 0), &hists),
            &hists,
        );
        for (op, ns) in [
            (Op::Get, 400),
            (Op::Create, 900),
            (Op::Peek, 300),
            (Op::Delete, 200),
        ] {
            let typical = tally.typical_p50_ns(op).unwrap();
            assert!(typical.abs_diff(ns) <= ns / 100, "{op}: {typical}");
        }
    }
}
