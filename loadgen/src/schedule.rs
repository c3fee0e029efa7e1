//! The schedule of a load: when each operation of a client is intended to
//! start ([`Pace`]), and which store the load is aimed at when ([`Slices`]).
//!
//! **Slices.** A run alternates short slices of time (100 ms by default)
//! between the backend under test and the reference peer, a plain sharded
//! map, at the same offered rate, each driven by its own worker threads: the
//! backend's clients are idle during the peer's slices and the other way
//! round. Slices come in pairs, one of each side, in an order drawn per pair
//! from the run's seed, so that nothing periodic on the machine (the engine's
//! sweeper, a timer) always lands on the same side. Both sides therefore see
//! the same machine, a few milliseconds apart, and the verdict can judge what
//! the backend adds over the peer (see [`crate::slices`]).
//!
//! ```text
//! slice:   0     1     2     3     4     5     6 ...
//! pair:    0-----0     1-----1     2-----2     3 ...
//! side:    B     P     P     B     B     P     ...   (order per pair from the seed)
//! ```
//!
//! An operation belongs to the slice its *intended* start falls in, even if
//! it completes later; a client skips the operations intended in the other
//! side's slices (they are not "unsent": they were never its to send).

use serde::{Deserialize, Serialize};

/// How a client paces its operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Closed loop.
    Closed,
    /// Open loop: one operation every `period_ns`, the first at `offset_ns`.
    Open {
        /// Nanoseconds between intended starts.
        period_ns: f64,
        /// Intended start of operation 0, relative to the client's start.
        offset_ns: f64,
    },
}

impl Pace {
    /// Intended start of operation `i` (open loop), relative to the start.
    #[inline]
    #[must_use]
    pub fn intended_ns(self, i: u64) -> Option<u64> {
        match self {
            Pace::Closed => None,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Pace::Open { period_ns, offset_ns } => Some((offset_ns + i as f64 * period_ns) as u64),
        }
    }

    /// The first operation intended at or after `rel_ns` (relative to the
    /// start); `None` in closed loop.
    #[must_use]
    pub fn first_at_or_after(self, rel_ns: u64) -> Option<u64> {
        let Pace::Open { period_ns, offset_ns } = self else {
            return None;
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let mut i = ((rel_ns as f64 - offset_ns) / period_ns).ceil().max(0.0) as u64;
        // Float rounding can land one off either way; settle it exactly.
        while i > 0 && self.intended_ns(i - 1).is_some_and(|t| t >= rel_ns) {
            i -= 1;
        }
        while self.intended_ns(i).is_some_and(|t| t < rel_ns) {
            i += 1;
        }
        Some(i)
    }
}

/// The store a slice of the load is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The backend under test.
    Backend,
    /// The reference peer.
    Peer,
}

impl Side {
    /// Both sides, backend first.
    pub const ALL: [Side; 2] = [Side::Backend, Side::Peer];

    /// The other side.
    #[must_use]
    pub const fn other(self) -> Side {
        match self {
            Side::Backend => Side::Peer,
            Side::Peer => Side::Backend,
        }
    }

    /// Slot in per-side arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lowercase name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Side::Backend => "backend",
            Side::Peer => "peer",
        }
    }
}

/// Which side owns each slice of a load, on the run's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slices {
    /// Start of slice 0 (the start of the load), ns on the run's clock.
    pub start_ns: u64,
    /// Length of one slice, ns.
    pub slice_ns: u64,
    /// Draws the order within each pair.
    pub seed: u64,
    /// False: every slice is the backend's (no peer in the run).
    pub peer: bool,
}

impl Slices {
    /// Every slice the backend's: a load with no peer.
    #[must_use]
    pub fn backend_only(start_ns: u64, slice_ns: u64) -> Self {
        Self {
            start_ns,
            slice_ns,
            seed: 0,
            peer: false,
        }
    }

    /// The slice `t_ns` falls in (slice 0 before the start).
    #[inline]
    #[must_use]
    pub fn index_of(&self, t_ns: u64) -> u64 {
        t_ns.saturating_sub(self.start_ns) / self.slice_ns
    }

    /// Start of slice `index`.
    #[inline]
    #[must_use]
    pub fn start_of(&self, index: u64) -> u64 {
        self.start_ns.saturating_add(index.saturating_mul(self.slice_ns))
    }

    /// End of slice `index` (the start of the next).
    #[inline]
    #[must_use]
    pub fn end_of(&self, index: u64) -> u64 {
        self.start_of(index.saturating_add(1))
    }

    /// The side slice `index` belongs to.
    #[inline]
    #[must_use]
    pub fn side_of(&self, index: u64) -> Side {
        if !self.peer {
            return Side::Backend;
        }
        let backend_first = splitmix64(self.seed ^ (index / 2)) & 1 == 0;
        let first = if backend_first { Side::Backend } else { Side::Peer };
        if index.is_multiple_of(2) {
            first
        } else {
            first.other()
        }
    }

    /// The first slice of `side` at or after slice `from`.
    #[must_use]
    pub fn next_of(&self, side: Side, from: u64) -> u64 {
        // At most two steps (B P | P B): every pair holds one of each side.
        let mut index = from;
        while self.side_of(index) != side {
            index += 1;
        }
        index
    }
}

/// `SplitMix64`'s finalizer: a well-mixed 64-bit value from any input.
#[must_use]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_holds_one_slice_of_each_side_in_an_order_from_the_seed() {
        let slices = Slices {
            start_ns: 1_000,
            slice_ns: 100,
            seed: 42,
            peer: true,
        };
        let mut backend_first = 0;
        for pair in 0..1_000 {
            let (a, b) = (slices.side_of(2 * pair), slices.side_of(2 * pair + 1));
            assert_ne!(a, b, "pair {pair}");
            backend_first += u32::from(a == Side::Backend);
        }
        assert!(
            (400..=600).contains(&backend_first),
            "the order is drawn, not fixed: {backend_first} of 1000 pairs start with the backend"
        );
        let other = Slices { seed: 43, ..slices };
        assert!((0..64).any(|i| slices.side_of(i) != other.side_of(i)));
        assert_eq!(slices.index_of(999), 0);
        assert_eq!(slices.index_of(1_250), 2);
        assert_eq!(slices.start_of(2), 1_200);
        assert_eq!(slices.end_of(2), 1_300);
        for side in Side::ALL {
            for from in 0..50 {
                let next = slices.next_of(side, from);
                assert!(next <= from + 2 && slices.side_of(next) == side, "{from} {next}");
                assert!((from..next).all(|i| slices.side_of(i) != side));
            }
        }
    }

    #[test]
    fn without_a_peer_every_slice_is_the_backends() {
        let slices = Slices::backend_only(0, 10);
        assert!((0..100).all(|i| slices.side_of(i) == Side::Backend));
    }

    #[test]
    fn the_first_operation_at_or_after_a_time_is_exact() {
        let pace = Pace::Open {
            period_ns: 1_000.0 / 3.0,
            offset_ns: 50.0,
        };
        for rel in [0, 49, 50, 51, 383, 384, 1_000, 999_999, 1_000_050] {
            let i = pace.first_at_or_after(rel).unwrap();
            assert!(pace.intended_ns(i).unwrap() >= rel, "{rel}");
            assert!(i == 0 || pace.intended_ns(i - 1).unwrap() < rel, "{rel}");
        }
        assert_eq!(Pace::Closed.first_at_or_after(5), None);
    }
}
