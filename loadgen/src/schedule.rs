//! The open-loop schedule: when each operation of a client is intended to
//! start, whatever happened before (see [`crate::client`]).

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
}
