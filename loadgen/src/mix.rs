//! What a client does next: the operation kinds, the weighted mix they are
//! drawn from, and the key distribution (uniform or Zipf) over the live
//! population.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::ParseError;

/// The operations a load run issues; each has its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `get`: read, counts as activity (the seed's "retrieve").
    #[serde(alias = "retrieve")]
    Get,
    /// `peek`: read, not activity.
    Peek,
    /// `update`: atomic read-modify-write of the metadata.
    Update,
    /// `touch`: slide the deadline.
    Touch,
    /// `create`: a new session with the short churn timeout.
    Create,
    /// `delete`: remove one of this client's churn sessions.
    Delete,
    /// `list`: one page of a listing (run by the lister thread, not the mix).
    List,
}

impl Op {
    /// Every kind, in report order.
    pub const ALL: [Op; 7] = [
        Op::Create,
        Op::Get,
        Op::Peek,
        Op::Update,
        Op::Touch,
        Op::Delete,
        Op::List,
    ];
    /// Number of kinds (histogram slots).
    pub const COUNT: usize = Op::ALL.len();

    /// Lowercase name, as in flags, TOML and reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Peek => "peek",
            Op::Update => "update",
            Op::Touch => "touch",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }

    /// Histogram slot.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let name = s.trim().to_ascii_lowercase();
        // The seed reference calls a read "retrieve".
        let name = if name == "retrieve" {
            "get".to_owned()
        } else {
            name
        };
        Op::ALL.into_iter().find(|op| op.name() == name).ok_or_else(|| {
            ParseError::new(
                "operation",
                s,
                "expected get, peek, update, touch, create, delete or list",
            )
        })
    }
}

/// Relative weights of the point operations (list runs on its own schedule).
/// A scenario file's `[mix]` table, like `--mix`, gives the kinds it does
/// not name weight 0 (no table at all: the default mix); filling them from
/// the default mix ran operations the file never asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Weight of `get`.
    #[serde(default)]
    pub get: f64,
    /// Weight of `peek`.
    #[serde(default)]
    pub peek: f64,
    /// Weight of `update`.
    #[serde(default)]
    pub update: f64,
    /// Weight of `touch`.
    #[serde(default)]
    pub touch: f64,
    /// Weight of `create`.
    #[serde(default)]
    pub create: f64,
    /// Weight of `delete`.
    #[serde(default)]
    pub delete: f64,
}

impl Default for Mix {
    /// A read-heavy web session mix: most requests read the session, some
    /// write it back, and sessions come and go at a steady clip.
    fn default() -> Self {
        Self {
            get: 60.0,
            peek: 5.0,
            update: 15.0,
            touch: 6.0,
            create: 8.0,
            delete: 6.0,
        }
    }
}

impl Mix {
    const POINT_OPS: [Op; 6] = [Op::Get, Op::Peek, Op::Update, Op::Touch, Op::Create, Op::Delete];

    fn weight(&self, op: Op) -> f64 {
        match op {
            Op::Get => self.get,
            Op::Peek => self.peek,
            Op::Update => self.update,
            Op::Touch => self.touch,
            Op::Create => self.create,
            Op::Delete => self.delete,
            Op::List => 0.0,
        }
    }

    fn weight_mut(&mut self, op: Op) -> Option<&mut f64> {
        match op {
            Op::Get => Some(&mut self.get),
            Op::Peek => Some(&mut self.peek),
            Op::Update => Some(&mut self.update),
            Op::Touch => Some(&mut self.touch),
            Op::Create => Some(&mut self.create),
            Op::Delete => Some(&mut self.delete),
            Op::List => None,
        }
    }

    /// The share of point operations that are `op` (0 for the lister's).
    #[must_use]
    pub fn share(&self, op: Op) -> f64 {
        let total: f64 = Self::POINT_OPS.iter().map(|&o| self.weight(o)).sum();
        if total > 0.0 {
            self.weight(op) / total
        } else {
            0.0
        }
    }

    /// True if the mix issues `op` at all.
    #[must_use]
    pub fn includes(&self, op: Op) -> bool {
        self.weight(op) > 0.0
    }

    /// Checks that weights are finite, non-negative, not all zero, and
    /// of a finite sum.
    ///
    /// # Errors
    /// A message naming the bad weight.
    pub fn validate(&self) -> Result<(), String> {
        for op in Self::POINT_OPS {
            let w = self.weight(op);
            if !(w.is_finite() && w >= 0.0) {
                return Err(format!(
                    "mix weight for {op} is {w}: must be a non-negative number"
                ));
            }
        }
        if Self::POINT_OPS.iter().all(|op| self.weight(*op) == 0.0) {
            return Err("mix: every weight is zero".into());
        }
        let total: f64 = Self::POINT_OPS.iter().map(|op| self.weight(*op)).sum();
        if !total.is_finite() {
            return Err(format!(
                "mix: the weights' sum is {total}: weights are shares, give them as percentages or counts"
            ));
        }
        let (create, delete) = (self.weight(Op::Create), self.weight(Op::Delete));
        if delete > create {
            // A delete removes a session a create of the same client made:
            // the excess would find none, be skipped, and the offered rate
            // never be held (every run failing, every sweep without a knee).
            return Err(format!(
                "mix weight for delete ({delete}) is above create's ({create}): deletes remove sessions the \
                 creates made, so the excess would be skipped and the rate not held"
            ));
        }
        Ok(())
    }

    /// The sampling table for this mix.
    #[must_use]
    pub fn table(&self) -> MixTable {
        let total: f64 = Self::POINT_OPS.iter().map(|op| self.weight(*op)).sum();
        let mut thresholds = [u32::MAX; 6];
        let mut cumulative = 0.0;
        for (slot, op) in Self::POINT_OPS.iter().enumerate() {
            cumulative += self.weight(*op) / total;
            // Scaled into the u32 range so a draw is one integer compare per kind.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let scaled = (cumulative * f64::from(u32::MAX))
                .round()
                .min(f64::from(u32::MAX)) as u32;
            thresholds[slot] = scaled;
        }
        // The last kind with weight catches rounding at the top of the range.
        let last = Self::POINT_OPS.iter().rposition(|op| self.weight(*op) > 0.0);
        if let Some(last) = last {
            thresholds[last] = u32::MAX;
        }
        MixTable {
            thresholds,
            last: last.map_or(Op::Get, |slot| Self::POINT_OPS[slot]),
        }
    }
}

impl FromStr for Mix {
    type Err = ParseError;

    /// `get=60,update=20,create=10,delete=10` (unnamed kinds get weight 0).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut mix = Mix {
            get: 0.0,
            peek: 0.0,
            update: 0.0,
            touch: 0.0,
            create: 0.0,
            delete: 0.0,
        };
        let mut named: Vec<Op> = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| ParseError::new("mix", s, format!("{part:?} is not op=weight")))?;
            let op: Op = name
                .parse()
                .map_err(|e: ParseError| ParseError::new("mix", s, e.to_string()))?;
            if named.contains(&op) {
                return Err(ParseError::new(
                    "mix",
                    s,
                    format!("{} is given twice", name.trim()),
                ));
            }
            named.push(op);
            let slot = mix.weight_mut(op).ok_or_else(|| {
                ParseError::new("mix", s, "list has its own rate (--list-rate), not a mix weight")
            })?;
            *slot = weight
                .trim()
                .parse()
                .map_err(|_| ParseError::new("mix", s, format!("weight {weight:?} is not a number")))?;
        }
        mix.validate()
            .map_err(|reason| ParseError::new("mix", s, reason))?;
        Ok(mix)
    }
}

/// Cumulative thresholds over `u32`: a uniform `u32` draw picks the first
/// kind whose threshold it does not exceed.
#[derive(Clone, Copy, Debug)]
pub struct MixTable {
    /// Each kind's range of draws ends (exclusive) at its threshold and
    /// starts at the one before: a kind of weight 0 has an empty range.
    thresholds: [u32; 6],
    /// The last kind with weight, which also takes the draw `u32::MAX`.
    last: Op,
}

impl MixTable {
    /// The operation for a uniform random `draw`.
    #[inline]
    #[must_use]
    pub fn pick(&self, draw: u32) -> Op {
        for (slot, threshold) in self.thresholds.iter().enumerate() {
            if draw < *threshold {
                return Mix::POINT_OPS[slot];
            }
        }
        self.last
    }
}

/// How keys of the live population are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDist {
    /// Every live session equally likely.
    Uniform,
    /// Zipf with this exponent: rank k is drawn with probability ∝ 1/k^s.
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = ParseError;

    /// `uniform` or `zipf:EXPONENT` (e.g. `zipf:0.99`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        if text == "uniform" {
            return Ok(KeyDist::Uniform);
        }
        let exponent = text
            .strip_prefix("zipf:")
            .ok_or_else(|| ParseError::new("key distribution", s, "expected uniform or zipf:EXPONENT"))?;
        let exponent: f64 = exponent
            .parse()
            .map_err(|_| ParseError::new("key distribution", s, "the Zipf exponent is not a number"))?;
        if !(exponent > 0.0 && exponent <= 10.0) {
            return Err(ParseError::new(
                "key distribution",
                s,
                "the Zipf exponent must be in (0, 10]",
            ));
        }
        Ok(KeyDist::Zipf(exponent))
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

impl Serialize for KeyDist {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for KeyDist {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Draws population indices in `0..n`.
#[derive(Clone, Debug)]
pub enum KeySampler {
    /// Uniform over `0..n`.
    Uniform {
        /// Population size.
        n: u64,
    },
    /// Zipf over ranks `1..=n`, returned as `rank - 1`.
    Zipf(Zipf),
}

impl KeySampler {
    /// A sampler over `n > 0` keys.
    #[must_use]
    pub fn new(dist: KeyDist, n: usize) -> Self {
        assert!(n > 0, "a key sampler needs at least one key");
        let n = n as u64;
        match dist {
            KeyDist::Uniform => KeySampler::Uniform { n },
            KeyDist::Zipf(s) => KeySampler::Zipf(Zipf::new(n, s)),
        }
    }

    /// One index; `bits` is a uniform `u64` and `unit` a uniform draw in
    /// `[0, 1)` source for rejection loops.
    #[inline]
    pub fn sample<R: rand::Rng>(&self, rng: &mut R) -> usize {
        match self {
            // Lemire's multiply-shift: unbiased enough for load (bias < n / 2^64).
            #[allow(clippy::cast_possible_truncation)]
            KeySampler::Uniform { n } => ((u128::from(rng.next_u64()) * u128::from(*n)) >> 64) as usize,
            #[allow(clippy::cast_possible_truncation)]
            KeySampler::Zipf(z) => (z.sample(rng) - 1) as usize,
        }
    }
}

/// Zipf sampling by rejection-inversion (W. Hörmann and G. Derflinger,
/// "Rejection-inversion to generate variates from monotone discrete
/// distributions", 1996), as in Apache Commons RNG: O(1) per draw with no
/// table, for any exponent `s > 0`.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    /// Ranks `1..=n` with exponent `s`.
    #[must_use]
    pub fn new(n: u64, s: f64) -> Self {
        assert!(
            n >= 1 && s > 0.0,
            "Zipf needs n >= 1 and s > 0 (n = {n}, s = {s})"
        );

        let n = n as f64;
        let h_integral_x1 = h_integral(1.5, s) - 1.0;
        let h_integral_n = h_integral(n + 0.5, s);
        let threshold = 2.0 - h_integral_inverse(h_integral(2.5, s) - h(2.0, s), s);
        Self {
            n,
            s,
            h_integral_x1,
            h_integral_n,
            threshold,
        }
    }

    /// One rank in `1..=n`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn sample<R: rand::Rng>(&self, rng: &mut R) -> u64 {
        loop {
            let u = self.h_integral_n + rng.random::<f64>() * (self.h_integral_x1 - self.h_integral_n);
            let x = h_integral_inverse(u, self.s);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= h_integral(k + 0.5, self.s) - h(k, self.s) {
                return k as u64;
            }
        }
    }
}

fn h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

fn h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    helper2((1.0 - s) * log_x) * log_x
}

fn h_integral_inverse(x: f64, s: f64) -> f64 {
    let t = (x * (1.0 - s)).max(-1.0);
    (helper1(t) * x).exp()
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn mix_draws_follow_the_weights() {
        let mix: Mix = "get=50,update=30,create=20".parse().unwrap();
        let table = mix.table();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; Op::COUNT];
        for _ in 0..100_000 {
            counts[table.pick(rng.random()).index()] += 1;
        }
        let share = |op: Op| f64::from(counts[op.index()]) / 100_000.0;
        assert!((share(Op::Get) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(Op::Update) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(Op::Create) - 0.2).abs() < 0.01, "{counts:?}");
        assert_eq!(counts[Op::Peek.index()] + counts[Op::Delete.index()], 0);
        assert_eq!(table.pick(u32::MAX), Op::Create);
        assert_eq!(table.pick(0), Op::Get);
    }

    /// A kind of weight 0 is never drawn, not even by the draw at an end
    /// of the range: a mix without `get` issued one for the draw 0 (once
    /// in 2^32, about one run in a thousand).
    #[test]
    fn a_kind_of_weight_zero_is_never_drawn() {
        let table = "update=60,create=20,delete=20".parse::<Mix>().unwrap().table();
        assert_eq!(table.pick(0), Op::Update);
        assert_eq!(table.pick(u32::MAX), Op::Delete);
        let table = "peek=1".parse::<Mix>().unwrap().table();
        for draw in [0, 1, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
            assert_eq!(table.pick(draw), Op::Peek, "draw {draw}");
        }
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        assert!("get=0".parse::<Mix>().unwrap_err().reason.contains("zero"));
        assert!("list=5".parse::<Mix>().unwrap_err().reason.contains("list-rate"));
        assert!("get=-1".parse::<Mix>().is_err());
        assert!("fly=1".parse::<Mix>().is_err());
        assert!("get".parse::<Mix>().is_err());
        let more_deletes = "get=1,create=1,delete=2".parse::<Mix>().unwrap_err().reason;
        assert!(
            more_deletes.contains("delete") && more_deletes.contains("create"),
            "{more_deletes}"
        );
        assert!("get=1,create=2,delete=2".parse::<Mix>().is_ok());
        let twice = "get=60,get=10,update=30".parse::<Mix>().unwrap_err().reason;
        assert!(twice.contains("get is given twice"), "{twice}");
        // Finite weights whose sum is not: every share was 0, and nearly
        // every draw the last kind.
        let huge = "get=1e308,update=1e308".parse::<Mix>().unwrap_err().reason;
        assert!(huge.contains("sum"), "{huge}");
    }

    #[test]
    fn zipf_stays_in_range_and_skews_like_one_over_k() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = SmallRng::seed_from_u64(42);
        let mut counts = vec![0u32; 1001];
        for _ in 0..200_000 {
            let k = zipf.sample(&mut rng);
            assert!((1..=1000).contains(&k));
            counts[usize::try_from(k).unwrap()] += 1;
        }
        // P(1) / P(2) = 2 and P(1) / P(10) = 10 for s = 1.
        let ratio2 = f64::from(counts[1]) / f64::from(counts[2]);
        let ratio10 = f64::from(counts[1]) / f64::from(counts[10]);
        assert!((ratio2 - 2.0).abs() < 0.15, "{ratio2}");
        assert!((ratio10 - 10.0).abs() < 1.5, "{ratio10}");
        // H(1000) ≈ 7.485, so rank 1 takes about 13.4% of draws.
        let top = f64::from(counts[1]) / 200_000.0;
        assert!((top - 0.1336).abs() < 0.01, "{top}");
    }

    #[test]
    fn key_samplers_cover_the_population() {
        let mut rng = SmallRng::seed_from_u64(1);
        for dist in [KeyDist::Uniform, KeyDist::Zipf(0.99), KeyDist::Zipf(2.5)] {
            let sampler = KeySampler::new(dist, 10);
            let mut seen = [false; 10];
            for _ in 0..100_000 {
                seen[sampler.sample(&mut rng)] = true;
            }
            assert!(seen.iter().all(|s| *s), "{dist}: {seen:?}");
        }
        assert_eq!("zipf:0.99".parse::<KeyDist>().unwrap(), KeyDist::Zipf(0.99));
        assert!("zipf:0".parse::<KeyDist>().is_err());
        assert!("pareto".parse::<KeyDist>().is_err());
    }
}
