//! How the clients' histograms reach the report without a lock on the hot
//! path.
//!
//! Each client records into its own [`OpHists`] for the slice its current
//! operation was intended in. When it moves on to a later slice of its side
//! it sends the whole set, with what the machine took from it meanwhile,
//! through a channel and continues with a recycled set: one channel send per
//! client per slice, nothing shared per operation. The [`Collector`] (on the
//! main thread) merges one slice of all the clients of its side once every
//! one of them has moved past it, judges it ([`crate::slices`]), adds it to
//! its side's pools, and folds it into the per-second timeline and the
//! `HdrHistogram` interval log.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::{Deserialize, Serialize};

use crate::clock::Lost;
use crate::hist::{quantile_ns, Hist, OpHists};
use crate::mix::Op;
use crate::schedule::{Side, Slices};
use crate::slices::{SideTally, SliceMeta, SliceStats, Standing};

/// A client's counts for the whole load.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientSummary {
    /// Operations issued (warm-up included).
    pub ops: u64,
    /// Operations scheduled but never issued: the client was still this far
    /// behind when the backlog grace ran out (open loop only).
    pub unsent: u64,
    /// Deletes skipped because the client had no churn session to delete.
    pub skipped: u64,
    /// When the client stopped, on the run's clock (ns): the end of the
    /// measured time if its schedule ran out before it (a low rate), where
    /// it was if its `--ops` share stopped it.
    pub end_ns: u64,
}

impl ClientSummary {
    fn add(&mut self, other: &ClientSummary) {
        self.ops += other.ops;
        self.unsent += other.unsent;
        self.skipped += other.skipped;
        self.end_ns = self.end_ns.max(other.end_ns);
    }
}

/// One client's record of one slice.
pub struct SliceMsg {
    /// Which client.
    pub client: usize,
    /// Which slice.
    pub index: u64,
    /// The histograms; sent back empty for reuse.
    pub hists: Box<OpHists>,
    /// Point operations that completed before the slice ended.
    pub in_time: u64,
    /// What the machine took from the client meanwhile.
    pub lost: Lost,
    /// The client records nothing more before this slice: it is done with
    /// every slice up to `next - 1` (the one it opens next, or `index + 1`).
    pub next: u64,
}

/// What clients send the collector.
pub enum Msg {
    /// A client's record of one slice.
    Slice(SliceMsg),
    /// The client stopped; no more slices from it.
    Done {
        /// Which client.
        client: usize,
        /// Its counts.
        summary: ClientSummary,
    },
}

/// A client's side: records into the open slice and sends it when the
/// client moves on.
pub struct Recorder {
    client: usize,
    slice: Option<u64>,
    current: Box<OpHists>,
    in_time: u64,
    /// Gaps seen while no slice was open (a closed-loop client idling
    /// through the other side's slice), carried into the next.
    carried: Lost,
    tx: Sender<Msg>,
    spares: Receiver<Box<OpHists>>,
}

impl Recorder {
    /// A recorder for `client`.
    #[must_use]
    pub fn new(client: usize, tx: Sender<Msg>, spares: Receiver<Box<OpHists>>) -> Self {
        Self {
            client,
            slice: None,
            current: Box::default(),
            in_time: 0,
            carried: Lost::default(),
            tx,
            spares,
        }
    }

    /// The open slice.
    #[must_use]
    pub fn slice(&self) -> Option<u64> {
        self.slice
    }

    /// Sends the open slice, if any, with `lost`, and opens `index`.
    pub fn open(&mut self, index: u64, lost: Lost) {
        self.send(lost, Some(index));
        self.slice = Some(index);
    }

    /// Records an operation of the open slice.
    #[inline]
    pub fn record(&mut self, op: Op, latency_ns: u64, ok: bool, in_time: bool) {
        self.current.record(op, latency_ns, ok);
        if !in_time {
            self.current.mark_late(op);
        } else if op != Op::List {
            self.in_time += 1;
        }
    }

    /// Sends the open slice with what the machine took meanwhile (`lost`);
    /// with no slice open, `lost` is carried into the next.
    #[cold]
    pub fn close(&mut self, lost: Lost) {
        self.send(lost, None);
    }

    /// `close`, saying that the next slice this client records in is
    /// `next` (if known): the collector need not wait for it before then.
    #[cold]
    fn send(&mut self, lost: Lost, next: Option<u64>) {
        let lost = self.carried.merge(lost);
        let Some(index) = self.slice.take() else {
            self.carried = lost;
            return;
        };
        self.carried = Lost::default();
        let fresh = self.spares.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.current, fresh);
        // The collector outlives every client; a send can only fail after a
        // panic there, which is reported on its own.
        let _ = self.tx.send(Msg::Slice(SliceMsg {
            client: self.client,
            index,
            hists: full,
            in_time: std::mem::take(&mut self.in_time),
            lost,
            next: next.unwrap_or(index + 1).max(index + 1),
        }));
    }

    /// Sends the open slice and the client's summary.
    pub fn finish(mut self, summary: ClientSummary, lost: Lost) {
        self.close(lost);
        let _ = self.tx.send(Msg::Done {
            client: self.client,
            summary,
        });
    }
}

/// One second (one interval) of one side, for the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalPoint {
    /// Seconds since the load started (warm-up included).
    pub start_s: f64,
    /// True for warm-up intervals (in no figure).
    pub warmup: bool,
    /// The backend's point operations intended in it.
    pub ops: u64,
    /// Their rate over the backend's slices in it.
    pub ops_per_s: f64,
    /// The backend's median, ns.
    pub p50_ns: u64,
    /// The backend's 99th percentile, ns.
    pub p99_ns: u64,
    /// The backend's slowest point operation, ns.
    pub max_ns: u64,
    /// The peer's 99th percentile in the same interval, ns.
    pub peer_p99_ns: Option<u64>,
    /// Some slice in it (either side's) was disturbed.
    pub disturbed: bool,
    /// Time the machine took from its slices, ms (the longest side's).
    pub taken_ms: f64,
}

/// One side's interval being filled.
#[derive(Default)]
struct IntervalAcc {
    index: Option<u64>,
    hists: OpHists,
    slices: u32,
    warmup: bool,
    disturbed: bool,
    taken_ns: u64,
}

/// One side's finished interval.
struct SideInterval {
    index: u64,
    warmup: bool,
    ops: u64,
    ops_per_s: f64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    disturbed: bool,
    taken_ns: u64,
}

/// A slice some clients have reported.
struct Pending {
    hists: Box<OpHists>,
    in_time: u64,
    lost: Lost,
}

/// What the collector learned, once every client is done.
pub struct Collected {
    /// Per side (`Side::index`).
    pub tallies: [SideTally; 2],
    /// Every slice, in the order they were closed.
    pub slices: Vec<SliceStats>,
    /// The backend's intervals, with the peer's p99 beside.
    pub timeline: Vec<IntervalPoint>,
    /// The `HdrHistogram` interval log.
    pub interval_log: Vec<u8>,
    /// Summed client summaries, per side.
    pub summaries: [ClientSummary; 2],
}

/// How a collector is set up.
pub struct CollectorPlan {
    /// The side of each client, by client number.
    pub sides: Vec<Side>,
    /// The load's slices.
    pub slices: Slices,
    /// Slices of warm-up.
    pub warmup_slices: u64,
    /// The load's scheduled end on the run's clock, ns: no slice at or
    /// after it is the load's.
    pub end_ns: u64,
    /// Interval of the timeline and the log, ns (a whole number of slices).
    pub interval_ns: u64,
    /// Wall-clock start of the load.
    pub started_at: SystemTime,
    /// A comment for the interval log.
    pub comment: String,
}

/// The merging side.
pub struct Collector {
    plan: CollectorPlan,
    /// Highest slice each client has reported (`u64::MAX` once done).
    reported: Vec<Option<u64>>,
    /// Per side: the latest slice some client of it is known to have
    /// reached (reported, or ended in).
    reach: [Option<u64>; 2],
    /// Per side: the first slice not closed yet.
    next: [u64; 2],
    /// Per side: until when (run-clock ns) the time the machine took from a
    /// closed slice may have run on into the next ones.
    disturbed_until: [u64; 2],
    /// What a slice in which no client recorded anything holds (taken out
    /// while such a slice is folded in).
    empty: Option<Box<OpHists>>,
    pending: BTreeMap<u64, Pending>,
    tallies: [SideTally; 2],
    slice_stats: Vec<SliceStats>,
    acc: [IntervalAcc; 2],
    intervals: [Vec<SideInterval>; 2],
    summaries: [ClientSummary; 2],
    /// Operations merged so far (for progress).
    pub ops_seen: u64,
    log: Vec<u8>,
    serializer: V2DeflateSerializer,
    spares: Sender<Box<OpHists>>,
    clients_done: usize,
}

impl Collector {
    /// A collector for the clients of `plan`; spent histograms go back
    /// through `spares`.
    #[must_use]
    pub fn new(plan: CollectorPlan, spares: Sender<Box<OpHists>>) -> Self {
        assert!(
            plan.interval_ns.is_multiple_of(plan.slices.slice_ns),
            "interval {} ns is not a whole number of {} ns slices",
            plan.interval_ns,
            plan.slices.slice_ns
        );
        let mut log = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder.add_comment("[Histogram log format version 1.3]");
        for line in plan.comment.lines() {
            builder.add_comment(line);
        }
        builder.add_comment(
            "Values in nanoseconds, the backend's: untagged, all point operations; Tag=<op>, one kind. \
             Tag=peer: the reference peer's point operations in the same interval.",
        );
        builder
            .with_start_time(plan.started_at)
            .with_base_time(plan.started_at);
        builder
            .begin_log_with(&mut log, &mut serializer)
            .expect("writing to a Vec cannot fail");
        log.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        Self {
            reported: vec![None; plan.sides.len()],
            plan,
            reach: [None; 2],
            next: [0; 2],
            disturbed_until: [0; 2],
            empty: Some(Box::default()),
            pending: BTreeMap::new(),
            tallies: Default::default(),
            slice_stats: Vec::new(),
            acc: Default::default(),
            intervals: Default::default(),
            summaries: Default::default(),
            ops_seen: 0,
            log,
            serializer,
            spares,
            clients_done: 0,
        }
    }

    /// True once every client has sent `Done`.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.clients_done == self.reported.len()
    }

    /// The backend's latest finished measured interval: (ops/s, p99 ns,
    /// disturbed slices so far), for the progress line.
    #[must_use]
    pub fn latest(&self) -> Option<(f64, u64, u64)> {
        let latest = self.intervals[Side::Backend.index()].last()?;
        let tally = &self.tallies[Side::Backend.index()];
        Some((latest.ops_per_s, latest.p99_ns, tally.disturbed))
    }

    /// Takes one message.
    pub fn accept(&mut self, msg: Msg) {
        let side = match msg {
            Msg::Slice(slice) => {
                self.ops_seen += slice.hists.total();
                let side = self.plan.sides[slice.client];
                self.reported[slice.client] = Some(slice.next - 1);
                self.reached(side, slice.index);
                self.merge(slice);
                side
            }
            Msg::Done { client, summary } => {
                let side = self.plan.sides[client];
                self.reported[client] = Some(u64::MAX);
                self.reached(side, self.plan.slices.index_of(summary.end_ns));
                self.clients_done += 1;
                self.summaries[side.index()].add(&summary);
                side
            }
        };
        self.flush_final(side);
    }

    fn merge(&mut self, msg: SliceMsg) {
        match self.pending.get_mut(&msg.index) {
            Some(p) => {
                p.hists.add(&msg.hists);
                p.in_time += msg.in_time;
                // Clients of one thread see the same gaps: the longest
                // client's stand for the slice.
                p.lost = p.lost.max(msg.lost);
                self.recycle(msg.hists);
            }
            None => {
                self.pending.insert(
                    msg.index,
                    Pending {
                        hists: msg.hists,
                        in_time: msg.in_time,
                        lost: msg.lost,
                    },
                );
            }
        }
    }

    fn recycle(&self, mut hists: Box<OpHists>) {
        hists.reset();
        let _ = self.spares.try_send(hists);
    }

    fn reached(&mut self, side: Side, index: u64) {
        let reach = &mut self.reach[side.index()];
        *reach = Some(reach.map_or(index, |r| r.max(index)));
    }

    /// Slice `k` of `side` is final once every client of that side has
    /// reported `k` or later (a client reports each of its slices once, in
    /// order) or is done. A final slice of the side that no client recorded
    /// in (no operation was due, or a stalled operation spanned it) is
    /// closed empty: it was the side's time all the same, and a rate over
    /// the slices that held operations only would overstate what was served.
    fn flush_final(&mut self, side: Side) {
        let watermark = self
            .plan
            .sides
            .iter()
            .zip(&self.reported)
            .filter(|(s, _)| **s == side)
            .map(|(_, r)| *r)
            .min()
            .flatten();
        let (Some(watermark), Some(reach)) = (watermark, self.reach[side.index()]) else {
            return;
        };
        let last = self.plan.slices.index_of(self.plan.end_ns.saturating_sub(1));
        let upto = watermark.min(reach).min(last);
        let from = self.next[side.index()];
        if from > upto {
            return;
        }
        self.next[side.index()] = upto + 1;
        let slices = self.plan.slices;
        for index in (from..=upto).filter(|k| slices.side_of(*k) == side) {
            match self.pending.remove(&index) {
                Some(pending) => self.close_slice(index, side, pending),
                None => self.close_empty(index, side),
            }
        }
    }

    fn meta(&self, index: u64, side: Side, in_time: u64, lost: Lost) -> SliceMeta {
        let slices = self.plan.slices;
        SliceMeta {
            index,
            side,
            start_s: Duration::from_nanos(slices.start_of(index) - slices.start_ns).as_secs_f64(),
            measured: index >= self.plan.warmup_slices,
            in_time,
            lost,
            slice_ns: slices.slice_ns,
        }
    }

    /// A slice in which no client of `side` recorded anything. The machine's
    /// time taken is counted in the slice whose operation it delayed; where
    /// it ran on past that slice's end into this one, this one is disturbed
    /// too, so a stall of the machine does not count as the backend serving
    /// nothing in undisturbed time.
    fn close_empty(&mut self, index: u64, side: Side) {
        let empty = self.empty.take().expect("put back after each use");
        let mut stats = SliceStats::of(self.meta(index, side, 0, Lost::default()), &empty);
        if self.plan.slices.start_of(index) < self.disturbed_until[side.index()]
            || self.stalled_from_after(index, side)
        {
            stats.spilled_into();
        }
        self.tallies[side.index()].accept(&stats, &empty);
        self.fold_into_interval(side, index, &stats, &empty);
        self.empty = Some(empty);
        self.slice_stats.push(stats);
    }

    /// True if the machine's time taken that a later slice of `side`
    /// carries reaches back over slice `index`: a client with no slice open
    /// (waiting out the other side's) carries what it lost into the next
    /// slice it opens, and the stall may have begun before that slice's
    /// earlier ones, empty for it.
    fn stalled_from_after(&self, index: u64, side: Side) -> bool {
        let slices = self.plan.slices;
        let Some((&later, pending)) = self
            .pending
            .range(index + 1..)
            .find(|(k, _)| slices.side_of(**k) == side)
        else {
            return false;
        };
        let taken = pending.lost.gaps_ns.max(pending.lost.runqueue_wait_ns);
        slices.start_of(later).saturating_sub(taken) < slices.end_of(index)
    }

    /// A slice some client of `side` recorded in. The machine's time taken
    /// that an earlier slice of the side counted may have run on into this
    /// one (its clients were waiting for that slice's operation when it
    /// was taken, so it is counted there): then its first operations
    /// waited it out, and it is disturbed too (see
    /// [`SliceStats::spilled_over`]).
    fn close_slice(&mut self, index: u64, side: Side, pending: Pending) {
        let mut stats = SliceStats::of(
            self.meta(index, side, pending.in_time, pending.lost),
            &pending.hists,
        );
        let spill = self.disturbed_until[side.index()].saturating_sub(self.plan.slices.start_of(index));
        if spill > 0 {
            stats.spilled_over(spill);
        }
        if stats.disturbed {
            let until = self.plan.slices.end_of(index).saturating_add(stats.taken_ns());
            let mark = &mut self.disturbed_until[side.index()];
            *mark = (*mark).max(until);
        }
        self.tallies[side.index()].accept(&stats, &pending.hists);
        self.fold_into_interval(side, index, &stats, &pending.hists);
        self.slice_stats.push(stats);
        self.recycle(pending.hists);
    }

    fn fold_into_interval(&mut self, side: Side, index: u64, stats: &SliceStats, hists: &OpHists) {
        let slices_per_interval = self.plan.interval_ns / self.plan.slices.slice_ns;
        let interval = index / slices_per_interval;
        if self.acc[side.index()].index.is_some_and(|i| i != interval) {
            self.close_interval(side);
        }
        let acc = &mut self.acc[side.index()];
        acc.index = Some(interval);
        acc.hists.add(hists);
        acc.slices += 1;
        acc.warmup |= stats.standing == Standing::Warmup;
        acc.disturbed |= stats.disturbed;
        acc.taken_ns += stats.taken_ns();
    }

    fn close_interval(&mut self, side: Side) {
        let acc = std::mem::take(&mut self.acc[side.index()]);
        let Some(index) = acc.index else { return };
        let all = acc.hists.point_ops();
        let start = Duration::from_nanos(index * self.plan.interval_ns);
        let length = Duration::from_nanos(self.plan.interval_ns);
        match side {
            Side::Backend => {
                self.write_log(&all, start, length, None);
                for op in Op::ALL {
                    if !acc.hists.get(op).is_empty() {
                        self.write_log(acc.hists.get(op), start, length, Tag::new(op.name()));
                    }
                }
            }
            Side::Peer => self.write_log(&all, start, length, Tag::new("peer")),
        }
        let active_s = f64::from(acc.slices) * Duration::from_nanos(self.plan.slices.slice_ns).as_secs_f64();
        self.intervals[side.index()].push(SideInterval {
            index,
            warmup: acc.warmup,
            ops: all.len(),
            // Completed within their slices, as every rate here counts.
            ops_per_s: acc.hists.completed_point_ops() as f64 / active_s.max(1e-9),
            p50_ns: quantile_ns(&all, 0.5),
            p99_ns: quantile_ns(&all, 0.99),
            max_ns: all.max(),
            disturbed: acc.disturbed,
            taken_ns: acc.taken_ns,
        });
    }

    fn write_log(&mut self, hist: &Hist, start: Duration, length: Duration, tag: Option<Tag>) {
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.log, &mut self.serializer)
            .expect("writing to a Vec cannot fail");
        writer
            .write_histogram(hist, start, length, tag)
            .expect("serializing into a Vec cannot fail");
    }

    /// Closes what is left and hands over everything learned.
    #[must_use]
    pub fn finish(mut self) -> Collected {
        // Done clients have reported everything; anything pending is final.
        for side in Side::ALL {
            self.flush_final(side);
            let keys: Vec<u64> = self
                .pending
                .keys()
                .copied()
                .filter(|k| self.plan.slices.side_of(*k) == side)
                .collect();
            for index in keys {
                let pending = self.pending.remove(&index).expect("listed above");
                self.close_slice(index, side, pending);
            }
            self.close_interval(side);
        }
        let peer: BTreeMap<u64, &SideInterval> = self.intervals[Side::Peer.index()]
            .iter()
            .map(|p| (p.index, p))
            .collect();
        let interval_s = Duration::from_nanos(self.plan.interval_ns).as_secs_f64();
        let timeline = self.intervals[Side::Backend.index()]
            .iter()
            .map(|b| {
                let p = peer.get(&b.index);
                IntervalPoint {
                    start_s: b.index as f64 * interval_s,
                    warmup: b.warmup,
                    ops: b.ops,
                    ops_per_s: b.ops_per_s,
                    p50_ns: b.p50_ns,
                    p99_ns: b.p99_ns,
                    max_ns: b.max_ns,
                    peer_p99_ns: p.map(|p| p.p99_ns),
                    disturbed: b.disturbed || p.is_some_and(|p| p.disturbed),
                    taken_ms: b.taken_ns.max(p.map_or(0, |p| p.taken_ns)) as f64 / 1e6,
                }
            })
            .collect();
        Collected {
            tallies: self.tallies,
            slices: self.slice_stats,
            timeline,
            interval_log: self.log,
            summaries: self.summaries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    type Channels = (
        Sender<Msg>,
        Receiver<Msg>,
        Sender<Box<OpHists>>,
        Receiver<Box<OpHists>>,
    );

    fn channels() -> Channels {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stx, srx) = crossbeam_channel::bounded(16);
        (tx, rx, stx, srx)
    }

    fn collector(
        sides: Vec<Side>,
        slices: Slices,
        warmup: u64,
        interval_ns: u64,
        stx: Sender<Box<OpHists>>,
    ) -> Collector {
        Collector::new(
            CollectorPlan {
                sides,
                slices,
                warmup_slices: warmup,
                end_ns: u64::MAX,
                interval_ns,
                started_at: SystemTime::UNIX_EPOCH,
                comment: "test".into(),
            },
            stx,
        )
    }

    /// A client that opens a slice far ahead (a low rate, a rare lister:
    /// it opens the slice of its next operation before waiting for it) has
    /// nothing for the slices in between: the others' slices are final
    /// without waiting for it. They were kept until its next report, each
    /// with a set of histograms (1.7 MB): a lister at one page per 500 s
    /// held some 5,000 of them.
    #[test]
    fn a_client_far_ahead_does_not_hold_the_others_slices() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut busy = Recorder::new(0, tx.clone(), srx.clone());
        let mut rare = Recorder::new(1, tx, srx);
        let mut c = collector(vec![Side::Backend; 2], slices, 0, 100, stx);
        rare.open(0, Lost::default());
        rare.record(Op::List, 10, true, true);
        rare.open(1_001, Lost::default());
        for k in 0..1_000 {
            busy.open(k, Lost::default());
            busy.record(Op::Get, 10, true, true);
            for msg in rx.try_iter() {
                c.accept(msg);
            }
            assert!(c.pending.len() <= 2, "slice {k}: {} pending", c.pending.len());
        }
    }

    #[test]
    fn slices_merge_across_a_sides_clients_and_the_warmup_is_left_out() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut a = Recorder::new(0, tx.clone(), srx.clone());
        let mut b = Recorder::new(1, tx, srx);
        // Slice 0 (warm-up): one op each. Slice 1: a records 2, b 1.
        a.open(0, Lost::default());
        a.record(Op::Get, 10, true, true);
        b.open(0, Lost::default());
        b.record(Op::Get, 20, true, true);
        a.open(1, Lost::default());
        a.record(Op::Get, 30, true, true);
        a.record(Op::Update, 40, false, false);
        b.open(1, Lost::default());
        b.record(Op::Create, 50, true, true);
        // b skips slices 2 and 3 (no operation due) and records in 4.
        b.open(4, Lost::default());
        b.record(Op::Get, 300, true, true);
        a.finish(
            ClientSummary {
                ops: 3,
                ..Default::default()
            },
            Lost::default(),
        );
        b.finish(
            ClientSummary {
                ops: 3,
                unsent: 1,
                ..Default::default()
            },
            Lost::default(),
        );
        let mut c = collector(vec![Side::Backend; 2], slices, 1, 100, stx);
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        assert!(c.finished());
        let out = c.finish();
        let tally = &out.tallies[Side::Backend.index()];
        assert_eq!(tally.all.total(), 4, "warm-up slice excluded");
        assert_eq!(tally.judged.get(Op::Get).len(), 2);
        assert_eq!(tally.judged.get(Op::Get).max(), 300);
        assert_eq!(tally.all.errors[Op::Update.index()], 1);
        assert_eq!(tally.in_time_all, 3, "the late update is not in time");
        assert_eq!(
            (tally.all.get(Op::Update).len(), tally.all.completed(Op::Update)),
            (1, 0),
            "the late update's latency counts, not towards the rate"
        );
        assert_eq!(tally.all.completed_point_ops(), 3);
        assert_eq!(
            (tally.measured, tally.judged_slices),
            (4, 4),
            "slices 2 and 3 were the backend's time, with nothing in them"
        );
        assert_eq!(out.summaries[Side::Backend.index()].ops, 6);
        assert_eq!(out.summaries[Side::Backend.index()].unsent, 1);
        assert_eq!(out.slices.len(), 5, "slices 0 to 4");
        assert_eq!((out.slices[2].ops, out.slices[3].ops), (0, 0));
        assert!(out.timeline[0].warmup && !out.timeline[1].warmup);
    }

    /// Closes every message `rx` holds into a collector of one backend
    /// client (intervals of ten slices) and returns what it learned.
    fn collect_one(rx: &Receiver<Msg>, stx: Sender<Box<OpHists>>, slices: Slices, end_ns: u64) -> Collected {
        let mut c = collector(vec![Side::Backend], slices, 0, 10 * slices.slice_ns, stx);
        c.plan.end_ns = end_ns;
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        c.finish()
    }

    /// What the machine took in one gap of `ns`.
    fn gap(ns: u64) -> Lost {
        Lost {
            gaps_ns: ns,
            gap_max_ns: ns,
            runqueue_wait_ns: 0,
        }
    }

    /// The disturbed slices' indices.
    fn disturbed(out: &Collected) -> Vec<u64> {
        out.slices
            .iter()
            .filter(|s| s.disturbed)
            .map(|s| s.index)
            .collect()
    }

    #[test]
    fn slices_with_nothing_in_them_count_up_to_where_the_load_ended() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut r = Recorder::new(0, tx, srx);
        // An operation every fourth slice (a low open-loop rate), the client
        // ending in slice 9 of a load scheduled for 20.
        for index in [0, 4, 8] {
            r.open(index, Lost::default());
            r.record(Op::Get, 10, true, true);
        }
        r.finish(
            ClientSummary {
                ops: 3,
                end_ns: 950,
                ..Default::default()
            },
            Lost::default(),
        );
        let out = collect_one(&rx, stx, slices, 2_000);
        let tally = &out.tallies[Side::Backend.index()];
        assert_eq!(
            (tally.measured, tally.quiet_slices, tally.in_time_all),
            (10, 10, 3),
            "3 operations over 10 slices, not over the 3 that held one"
        );
        let rate = out.timeline[0].ops_per_s;
        assert!((rate - 3e6).abs() < 1.0, "the timeline's rate too: {rate}");
    }

    #[test]
    fn an_empty_slice_the_machines_time_ran_into_is_not_quiet() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut r = Recorder::new(0, tx, srx);
        // Slice 1's operation was held off its core for 250 ns: slices 2 and
        // 3 (and the start of 4) passed with the client not running.
        r.open(1, Lost::default());
        r.record(Op::Get, 300, true, false);
        r.open(4, gap(250));
        r.record(Op::Get, 10, true, true);
        r.open(6, Lost::default());
        r.record(Op::Get, 10, true, true);
        r.finish(ClientSummary::default(), Lost::default());
        let out = collect_one(&rx, stx, slices, 700);
        let tally = &out.tallies[Side::Backend.index()];
        let disturbed = disturbed(&out);
        // Slice 0 too: a slice's lost time is not placed within it (it may
        // have been carried from before it opened), so an empty slice it
        // could reach back over is set aside as well. Slice 4, whose start
        // the gap reached, is disturbed though it holds an operation.
        assert_eq!(disturbed, [0, 1, 2, 3, 4], "slice 5, after the gap, is quiet");
        assert_eq!(tally.measured, 7);
        assert_eq!((tally.quiet_slices, tally.in_time_quiet), (2, 1));
    }

    #[test]
    fn a_slice_the_machines_time_ran_into_is_not_quiet_with_operations_in_it_either() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut r = Recorder::new(0, tx, srx);
        // Slice 1's operation was held off its core for 150 ns, counted in
        // slice 1 (the client waited for its operation): it resumed at 350,
        // inside slice 3, and slice 2's operation, due at 210, waited for it.
        r.open(1, Lost::default());
        r.record(Op::Get, 10, true, true);
        r.open(2, gap(150));
        r.record(Op::Get, 140, true, true);
        r.open(4, Lost::default());
        r.record(Op::Get, 10, true, true);
        r.finish(ClientSummary::default(), Lost::default());
        let out = collect_one(&rx, stx, slices, 500);
        assert_eq!(disturbed(&out), [0, 1, 2, 3], "slice 2 is not quiet");
        assert_eq!(
            out.slices[2].standing,
            Standing::SetAside,
            "what ran into it explains its slowest operation"
        );
        let tally = &out.tallies[Side::Backend.index()];
        assert_eq!(
            tally.judged.get(Op::Get).max(),
            10,
            "slice 2's late get is not judged"
        );
    }

    #[test]
    fn an_empty_slice_a_carried_stall_reached_back_over_is_not_quiet() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 100);
        let mut r = Recorder::new(0, tx, srx);
        r.open(0, Lost::default());
        r.record(Op::Get, 10, true, true);
        // No slice open (as while waiting out the other side's), and the
        // machine takes 250 ns: carried into slice 4, the next opened.
        r.close(Lost::default());
        r.open(4, gap(250));
        r.record(Op::Get, 10, true, true);
        r.finish(ClientSummary::default(), Lost::default());
        let out = collect_one(&rx, stx, slices, 500);
        let disturbed = disturbed(&out);
        assert_eq!(disturbed, [1, 2, 3, 4], "the stall may have begun in slice 1");
        assert_eq!(out.tallies[Side::Backend.index()].quiet_slices, 1);
    }

    #[test]
    fn a_slice_waits_for_every_client_of_its_side_only() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices {
            start_ns: 0,
            slice_ns: 100,
            seed: 1,
            peer: true,
        };
        let backend_slice = (0..4).find(|i| slices.side_of(*i) == Side::Backend).unwrap();
        let mut backend = Recorder::new(0, tx.clone(), srx.clone());
        let peer = Recorder::new(1, tx, srx);
        backend.open(backend_slice, Lost::default());
        backend.record(Op::Get, 10, true, true);
        backend.close(Lost {
            gaps_ns: 5,
            gap_max_ns: 5,
            runqueue_wait_ns: 0,
        });
        let mut c = collector(vec![Side::Backend, Side::Peer], slices, 0, 200, stx);
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        assert_eq!(
            c.slice_stats.len(),
            1,
            "the backend's slice is final though the peer is silent"
        );
        assert_eq!(c.slice_stats[0].lost.gaps_ns, 5);
        drop(peer);
    }

    #[test]
    fn the_interval_log_decodes_with_tags() {
        let (tx, rx, stx, srx) = channels();
        let slices = Slices::backend_only(0, 500);
        let mut r = Recorder::new(0, tx, srx);
        r.open(0, Lost::default());
        for i in 0..100 {
            r.record(Op::Get, 1_000 + i, true, true);
        }
        r.open(4, Lost::default());
        r.record(Op::List, 5_000_000, true, true);
        r.finish(ClientSummary::default(), Lost::default());
        let mut c = collector(vec![Side::Backend], slices, 0, 1_000, stx);
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        let log = c.finish().interval_log;
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.starts_with("#[Histogram log format version 1.3]"), "{text}");
        let mut tags = Vec::new();
        let mut counts = 0;
        for entry in IntervalLogIterator::new(&log) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                tags.push(h.tag().map(|t| t.as_str().to_owned()));
                let bytes = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                counts += hist.len();
            }
        }
        // Untagged (all point ops) and Tag=get for interval 0, then Tag=list
        // alone for interval 2 (list is not a point op; untagged is empty).
        assert!(
            tags.contains(&None) && tags.contains(&Some("get".into())) && tags.contains(&Some("list".into()))
        );
        assert_eq!(counts, 100 + 100 + 1);
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|c| *c != b'=') {
            let v = u32::try_from(ALPHABET.iter().position(|a| *a == c).unwrap()).unwrap();
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
            }
        }
        out
    }
}
