//! `get_many` of 16 against 16 single `get`s, and `get_many_with` against
//! 16 `get_with`s (the borrowing reads), each pair interleaved block by block
//! (the compare bench measures the two loops once per round, so one slow
//! second moves its ratio by a third). Each round reads the same scattered
//! ids both ways, in alternating order; the report gives sessions read per
//! second, medians over the rounds, and the median of the per-round ratios.
//! One thread, 100K sessions of 200-byte metadata, in memory, mimalloc.
//!
//! `cargo run --release -p session-engine-benches --example get_many_ratio -- [ROUNDS]`
#![forbid(unsafe_code)]

use std::time::Instant;

use session_engine::{Config, Engine, SessionId, Timeout};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SESSIONS: usize = 100_000;
const BATCH: usize = 16;
/// Sessions read per block.
const BLOCK: usize = 160_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Scattered indices into the ids, `n` of them.
fn keys(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_possible_truncation)]
            let i = (x >> 33) as usize % SESSIONS;
            i
        })
        .collect()
}

/// Sessions read per second by `read` over `keys` in batches of 16.
fn rate(keys: &[usize], mut read: impl FnMut(&[usize])) -> f64 {
    let started = Instant::now();
    for chunk in keys.chunks(BATCH) {
        read(chunk);
    }
    #[allow(clippy::cast_precision_loss)]
    let per_sec = keys.len() as f64 / started.elapsed().as_secs_f64();
    per_sec
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(21);
    let engine = Engine::open(Config::default().initial_capacity(SESSIONS)).unwrap();
    let meta = vec![0xAB_u8; 200];
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|_| engine.create(&meta, Timeout::from_secs(1800)).unwrap())
        .collect();
    let singles = |chunk: &[usize]| {
        for &k in chunk {
            assert!(engine.get(&ids[k]).is_ok());
        }
    };
    let mut batch = [ids[0]; BATCH];
    let mut many = |chunk: &[usize]| {
        for (slot, &k) in batch.iter_mut().zip(chunk) {
            *slot = ids[k];
        }
        assert!(engine.get_many(&batch).iter().all(Result::is_ok));
    };
    // The borrowing pair: each session's metadata length read in place.
    let singles_with = |chunk: &[usize]| {
        for &k in chunk {
            assert!(engine.get_with(&ids[k], |s| s.metadata().len()).is_ok());
        }
    };
    let mut batch_with = [ids[0]; BATCH];
    let mut many_with = |chunk: &[usize]| {
        for (slot, &k) in batch_with.iter_mut().zip(chunk) {
            *slot = ids[k];
        }
        let lens = engine.get_many_with(&batch_with, |s| s.metadata().len());
        assert!(lens.iter().all(Result::is_ok));
    };
    let mut owned = Pair::default();
    let mut borrowed = Pair::default();
    for round in 0..rounds {
        let keys = keys(BLOCK, round as u64 * 0x9E37_79B9 + 7);
        owned.round(round, &keys, singles, &mut many);
        borrowed.round(round, &keys, singles_with, &mut many_with);
    }
    println!("{rounds} rounds of {BLOCK} sessions read each way; medians over the rounds:");
    owned.report("get", "get_many");
    borrowed.report("get_with", "get_many_with");
}

/// One pair of loops: 16 single reads against one batch of 16.
#[derive(Default)]
struct Pair {
    singles: Vec<f64>,
    many: Vec<f64>,
    ratios: Vec<f64>,
}

impl Pair {
    /// Runs both loops over `keys`, in an order that alternates by round.
    fn round(
        &mut self,
        round: usize,
        keys: &[usize],
        singles: impl FnMut(&[usize]),
        many: impl FnMut(&[usize]),
    ) {
        let (s, m) = if round.is_multiple_of(2) {
            let s = rate(keys, singles);
            (s, rate(keys, many))
        } else {
            let m = rate(keys, many);
            (rate(keys, singles), m)
        };
        self.singles.push(s / 1e6);
        self.many.push(m / 1e6);
        self.ratios.push(m / s);
    }

    fn report(&mut self, single: &str, many: &str) {
        let rows = [
            (
                format!("16 {single}s (M sessions/s)"),
                median(&mut self.singles),
                "",
            ),
            (format!("{many} of 16 (M sessions/s)"), median(&mut self.many), ""),
            (
                format!("{many} / {single}s (per-round ratio)"),
                median(&mut self.ratios),
                "x",
            ),
        ];
        for (label, value, unit) in rows {
            println!("  {label:<44} {value:>7.2}{unit}");
        }
    }
}
