//! A small xorshift for the crate's randomized tests: deterministic, no
//! dependency.

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).expect("below a usize bound")
    }
}
