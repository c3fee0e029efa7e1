//! Per-client histograms and how they reach the report without a lock on
//! the hot path.
//!
//! Each client records into its own [`OpHists`] (one `HdrHistogram` per
//! operation kind). When an operation completes past an interval boundary the
//! client sends the whole set through a channel and continues with a recycled
//! set: one channel send per client per interval, nothing shared per
//! operation. The [`Collector`] (on the main thread) merges the sets of one
//! interval once every client has moved past it, appends the merged interval
//! to the `HdrHistogram` interval log, and adds it to the totals unless it is
//! part of the warm-up.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::limits::{HISTOGRAM_SIGFIG, LATENCY_NS_MAX};
use crate::mix::Op;

/// A latency histogram in nanoseconds.
pub type Hist = Histogram<u64>;

/// An empty latency histogram (1 ns to [`LATENCY_NS_MAX`], 3 significant digits).
#[must_use]
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG).expect("constant bounds are valid")
}

/// One histogram and one error count per operation kind.
pub struct OpHists {
    /// Latencies by [`Op::index`].
    pub by_op: Vec<Hist>,
    /// Operations that returned an error, by [`Op::index`].
    pub errors: [u64; Op::COUNT],
}

impl Default for OpHists {
    fn default() -> Self {
        Self {
            by_op: (0..Op::COUNT).map(|_| new_hist()).collect(),
            errors: [0; Op::COUNT],
        }
    }
}

impl OpHists {
    /// Records one operation.
    #[inline]
    pub fn record(&mut self, op: Op, latency_ns: u64, ok: bool) {
        self.by_op[op.index()].saturating_record(latency_ns);
        if !ok {
            self.errors[op.index()] += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &OpHists) {
        for (mine, theirs) in self.by_op.iter_mut().zip(&other.by_op) {
            mine.add(theirs).expect("histograms share their bounds");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
    }

    /// Empties every histogram, keeping the memory.
    pub fn reset(&mut self) {
        self.by_op.iter_mut().for_each(Histogram::reset);
        self.errors = [0; Op::COUNT];
    }

    /// Operations recorded, all kinds.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_op.iter().map(Histogram::len).sum()
    }

    /// The histogram of `op`.
    #[must_use]
    pub fn get(&self, op: Op) -> &Hist {
        &self.by_op[op.index()]
    }

    /// All point operations together (everything but `list`).
    #[must_use]
    pub fn point_ops(&self) -> Hist {
        let mut all = new_hist();
        for op in Op::ALL.into_iter().filter(|op| *op != Op::List) {
            all.add(self.get(op)).expect("histograms share their bounds");
        }
        all
    }
}

/// What clients send the collector.
pub enum Msg {
    /// A client's histograms for interval `index`.
    Interval {
        /// Which client.
        client: usize,
        /// Interval number since the start of the load (warm-up included).
        index: u64,
        /// The histograms; sent back empty for reuse.
        hists: Box<OpHists>,
    },
    /// The client stopped; no more intervals from it.
    Done {
        /// Which client.
        client: usize,
        /// Its counts.
        summary: ClientSummary,
    },
}

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
    /// When the client stopped, on the run's clock (ns).
    pub end_ns: u64,
}

/// A client's side: records into the current interval and rotates at boundaries.
pub struct Recorder {
    client: usize,
    origin_ns: u64,
    interval_ns: u64,
    index: u64,
    next_boundary_ns: u64,
    current: Box<OpHists>,
    tx: Sender<Msg>,
    spares: Receiver<Box<OpHists>>,
}

impl Recorder {
    /// A recorder whose intervals start at `origin_ns` on the run's clock.
    #[must_use]
    pub fn new(
        client: usize,
        origin_ns: u64,
        interval_ns: u64,
        tx: Sender<Msg>,
        spares: Receiver<Box<OpHists>>,
    ) -> Self {
        assert!(interval_ns > 0, "interval must be positive");
        Self {
            client,
            origin_ns,
            interval_ns,
            index: 0,
            next_boundary_ns: origin_ns + interval_ns,
            current: Box::default(),
            tx,
            spares,
        }
    }

    /// Records an operation that completed at `now_ns`.
    #[inline]
    pub fn record(&mut self, op: Op, latency_ns: u64, ok: bool, now_ns: u64) {
        if now_ns >= self.next_boundary_ns {
            self.rotate(now_ns);
        }
        self.current.record(op, latency_ns, ok);
    }

    #[cold]
    fn rotate(&mut self, now_ns: u64) {
        let fresh = self.spares.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.current, fresh);
        // The collector outlives every client; a send can only fail after a
        // panic there, which is reported on its own.
        let _ = self.tx.send(Msg::Interval {
            client: self.client,
            index: self.index,
            hists: full,
        });
        self.index = (now_ns - self.origin_ns) / self.interval_ns;
        self.next_boundary_ns = self.origin_ns + (self.index + 1) * self.interval_ns;
    }

    /// Sends the last interval and the client's summary.
    pub fn finish(mut self, summary: ClientSummary) {
        let last = std::mem::take(&mut self.current);
        let _ = self.tx.send(Msg::Interval {
            client: self.client,
            index: self.index,
            hists: last,
        });
        let _ = self.tx.send(Msg::Done {
            client: self.client,
            summary,
        });
    }
}

/// One merged interval, for the timeline in the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntervalPoint {
    /// Seconds since the load started (warm-up included).
    pub start_s: f64,
    /// True for warm-up intervals (not in the totals).
    pub warmup: bool,
    /// Operations completed in it.
    pub ops: u64,
    /// Median latency of point operations in it.
    pub p50_ns: u64,
    /// 99th percentile of point operations in it.
    pub p99_ns: u64,
    /// Slowest point operation in it.
    pub max_ns: u64,
}

/// The merging side.
pub struct Collector {
    /// Highest interval each client has reported; `u64::MAX` once it is done.
    reported: Vec<u64>,
    pending: BTreeMap<u64, Box<OpHists>>,
    interval_ns: u64,
    warmup_intervals: u64,
    /// Everything after the warm-up.
    pub totals: OpHists,
    /// One point per interval.
    pub timeline: Vec<IntervalPoint>,
    /// Summed client summaries.
    pub summary: ClientSummary,
    /// Operations merged so far (for progress).
    pub ops_seen: u64,
    /// Operations of each kind (`Op::index`) completed after the warm-up
    /// and before interval `window_end`: an open-loop run's throughput
    /// counts these, not the backlog a client works off after the schedule
    /// ended.
    pub window_ops: [u64; Op::COUNT],
    window_end: u64,
    log: Vec<u8>,
    serializer: V2DeflateSerializer,
    spares: Sender<Box<OpHists>>,
    clients_done: usize,
}

impl Collector {
    /// A collector for `clients` clients; the interval log starts at `start`.
    #[must_use]
    pub fn new(
        clients: usize,
        interval_ns: u64,
        warmup_intervals: u64,
        start: SystemTime,
        spares: Sender<Box<OpHists>>,
        comment: &str,
    ) -> Self {
        let mut log = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder.add_comment("[Histogram log format version 1.3]");
        for line in comment.lines() {
            builder.add_comment(line);
        }
        builder.add_comment(
            "Values in nanoseconds. Untagged: all point operations; Tag=<op>: one operation kind.",
        );
        builder.with_start_time(start).with_base_time(start);
        builder
            .begin_log_with(&mut log, &mut serializer)
            .expect("writing to a Vec cannot fail");
        log.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        Self {
            reported: vec![0; clients],
            pending: BTreeMap::new(),
            interval_ns,
            warmup_intervals,
            totals: OpHists::default(),
            timeline: Vec::new(),
            summary: ClientSummary::default(),
            ops_seen: 0,
            window_ops: [0; Op::COUNT],
            window_end: u64::MAX,
            log,
            serializer,
            spares,
            clients_done: 0,
        }
    }

    /// Counts point operations in `window_point_ops` only in intervals
    /// before `index` (all of them by default).
    pub fn set_window_end(&mut self, index: u64) {
        self.window_end = index;
    }

    /// True once every client has sent `Done`.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.clients_done == self.reported.len()
    }

    /// Takes one message.
    pub fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Interval { client, index, hists } => {
                self.ops_seen += hists.total();
                self.reported[client] = self.reported[client].max(index);
                match self.pending.get_mut(&index) {
                    Some(merged) => {
                        merged.add(&hists);
                        self.recycle(hists);
                    }
                    None => {
                        self.pending.insert(index, hists);
                    }
                }
            }
            Msg::Done { client, summary } => {
                self.reported[client] = u64::MAX;
                self.clients_done += 1;
                self.summary.ops += summary.ops;
                self.summary.unsent += summary.unsent;
                self.summary.skipped += summary.skipped;
                self.summary.end_ns = self.summary.end_ns.max(summary.end_ns);
            }
        }
        self.flush_complete();
    }

    fn recycle(&self, mut hists: Box<OpHists>) {
        hists.reset();
        let _ = self.spares.try_send(hists);
    }

    /// Writes out every interval that no client can add to any more.
    fn flush_complete(&mut self) {
        let watermark = self.reported.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(entry) = self.pending.first_entry() {
            // A client that reported index k may still send more of k only if
            // k is its latest; intervals below every client's latest are final.
            if *entry.key() >= watermark && watermark != u64::MAX {
                break;
            }
            let (index, hists) = entry.remove_entry();
            self.close_interval(index, &hists);
            self.recycle(hists);
        }
    }

    fn close_interval(&mut self, index: u64, hists: &OpHists) {
        let warmup = index < self.warmup_intervals;
        if !warmup {
            self.totals.add(hists);
        }
        let all = hists.point_ops();
        if !warmup && index < self.window_end {
            for op in Op::ALL {
                self.window_ops[op.index()] += hists.get(op).len();
            }
        }
        let start = Duration::from_nanos(index * self.interval_ns);
        let length = Duration::from_nanos(self.interval_ns);
        self.write_log(&all, start, length, None);
        for op in Op::ALL {
            if !hists.get(op).is_empty() {
                self.write_log(hists.get(op), start, length, Tag::new(op.name()));
            }
        }
        self.timeline.push(IntervalPoint {
            start_s: start.as_secs_f64(),
            warmup,
            ops: hists.total(),
            p50_ns: all.value_at_quantile(0.5),
            p99_ns: all.value_at_quantile(0.99),
            max_ns: all.max(),
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

    /// The interval log text so far.
    #[must_use]
    pub fn log(&self) -> &[u8] {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

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

    #[test]
    fn intervals_merge_across_clients_and_warmup_is_left_out() {
        let (tx, rx, stx, srx) = channels();
        let mut a = Recorder::new(0, 0, 100, tx.clone(), srx.clone());
        let mut b = Recorder::new(1, 0, 100, tx, srx);
        // Interval 0 (warm-up): one op each. Interval 1: a records 2, b 1.
        a.record(Op::Get, 10, true, 5);
        b.record(Op::Get, 20, true, 50);
        a.record(Op::Get, 30, true, 150);
        a.record(Op::Update, 40, false, 160);
        b.record(Op::Create, 50, true, 199);
        // b is stalled across intervals 2 and 3 and completes in 4.
        b.record(Op::Get, 300, true, 420);
        a.finish(ClientSummary {
            ops: 3,
            ..Default::default()
        });
        b.finish(ClientSummary {
            ops: 3,
            unsent: 1,
            ..Default::default()
        });
        let mut c = Collector::new(2, 100, 1, SystemTime::UNIX_EPOCH, stx, "test");
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        assert!(c.finished());
        assert_eq!(c.totals.total(), 4, "warm-up interval excluded");
        assert_eq!(c.totals.get(Op::Get).len(), 2);
        assert_eq!(c.totals.get(Op::Get).max(), 300);
        assert_eq!(c.totals.errors[Op::Update.index()], 1);
        assert_eq!(c.summary.ops, 6);
        assert_eq!(c.summary.unsent, 1);
        let starts: Vec<f64> = c.timeline.iter().map(|p| p.start_s).collect();
        assert_eq!(starts.len(), 3, "{starts:?}");
        assert!(c.timeline[0].warmup && !c.timeline[1].warmup);
        assert_eq!(
            c.window_ops.iter().sum::<u64>(),
            4,
            "no window end: every measured op"
        );
    }

    #[test]
    fn the_window_leaves_out_what_completes_after_it() {
        let (tx, rx, stx, srx) = channels();
        let mut a = Recorder::new(0, 0, 100, tx, srx);
        a.record(Op::Get, 10, true, 50); // warm-up (interval 0)
        a.record(Op::Get, 10, true, 150); // interval 1
        a.record(Op::Get, 10, true, 250); // interval 2
        a.record(Op::List, 10, true, 260); // a list: not a point op
        a.record(Op::Get, 90, true, 350); // interval 3: after the window
        a.finish(ClientSummary::default());
        let mut c = Collector::new(1, 100, 1, SystemTime::UNIX_EPOCH, stx, "test");
        c.set_window_end(3);
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        assert_eq!(c.window_ops[Op::Get.index()], 2);
        assert_eq!(c.window_ops[Op::List.index()], 1);
        assert_eq!(c.totals.get(Op::Get).len(), 3, "late ops keep their latency");
    }

    #[test]
    fn the_interval_log_decodes_with_tags() {
        let (tx, rx, stx, srx) = channels();
        let mut r = Recorder::new(0, 0, 1_000, tx, srx);
        for i in 0..100 {
            r.record(Op::Get, 1_000 + i, true, i * 20);
        }
        r.record(Op::List, 5_000_000, true, 2_500);
        r.finish(ClientSummary::default());
        let mut c = Collector::new(1, 1_000, 0, SystemTime::UNIX_EPOCH, stx, "scenario: test");
        for msg in rx.try_iter() {
            c.accept(msg);
        }
        let text = String::from_utf8(c.log().to_vec()).unwrap();
        assert!(text.starts_with("#[Histogram log format version 1.3]"), "{text}");
        let mut tags = Vec::new();
        let mut counts = 0;
        for entry in IntervalLogIterator::new(c.log()) {
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
