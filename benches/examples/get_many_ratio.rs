//! `get_many` of 16 against 16 single `get`s, interleaved block by block
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
    let (mut single_rates, mut many_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let keys = keys(BLOCK, round as u64 * 0x9E37_79B9 + 7);
        let (s, m) = if round % 2 == 0 {
            let s = rate(&keys, singles);
            (s, rate(&keys, &mut many))
        } else {
            let m = rate(&keys, &mut many);
            (rate(&keys, singles), m)
        };
        single_rates.push(s / 1e6);
        many_rates.push(m / 1e6);
        ratios.push(m / s);
    }
    println!("{rounds} rounds of {BLOCK} sessions read each way; medians over the rounds:");
    println!(
        "  16 gets (M sessions/s)            {:>7.2}",
        median(&mut single_rates)
    );
    println!(
        "  get_many of 16 (M sessions/s)     {:>7.2}",
        median(&mut many_rates)
    );
    println!(
        "  get_many / gets (per-round ratio) {:>7.2}x",
        median(&mut ratios)
    );
}
