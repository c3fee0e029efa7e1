//! Latency histograms: one `HdrHistogram` per operation kind ([`OpHists`]),
//! in nanoseconds, 1 ns to [`LATENCY_NS_MAX`] at [`HISTOGRAM_SIGFIG`]
//! significant digits. How they travel from the clients to the report is in
//! [`crate::collect`].

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
    /// Operations that completed after their slice ended, by
    /// [`Op::index`]: in the histograms (their latency counts), not in a
    /// rate (see [`OpHists::completed`]).
    pub late: [u64; Op::COUNT],
}

impl Default for OpHists {
    fn default() -> Self {
        Self {
            by_op: (0..Op::COUNT).map(|_| new_hist()).collect(),
            errors: [0; Op::COUNT],
            late: [0; Op::COUNT],
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
        for (mine, theirs) in self.late.iter_mut().zip(other.late) {
            *mine += theirs;
        }
    }

    /// Notes that an operation of `op` recorded in these histograms
    /// completed after its slice ended.
    #[inline]
    pub fn mark_late(&mut self, op: Op) {
        self.late[op.index()] += 1;
    }

    /// Operations of `op` that completed within their slice: what a rate
    /// counts (open loop, an overloaded backend finishes late what it
    /// was offered; those latencies count, but not towards the rate).
    #[must_use]
    pub fn completed(&self, op: Op) -> u64 {
        self.get(op).len().saturating_sub(self.late[op.index()])
    }

    /// [`OpHists::completed`] of every point operation (all but `list`).
    #[must_use]
    pub fn completed_point_ops(&self) -> u64 {
        Op::ALL
            .iter()
            .filter(|op| **op != Op::List)
            .map(|op| self.completed(*op))
            .sum()
    }

    /// Empties every histogram, keeping the memory.
    pub fn reset(&mut self) {
        self.by_op.iter_mut().for_each(Histogram::reset);
        self.errors = [0; Op::COUNT];
        self.late = [0; Op::COUNT];
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

/// Percentile `q` (0 to 1) of `hist`, 0 when it is empty.
#[must_use]
pub fn quantile_ns(hist: &Hist, q: f64) -> u64 {
    if hist.is_empty() {
        0
    } else {
        hist.value_at_quantile(q)
    }
}
