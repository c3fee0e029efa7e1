//! What a data directory adds to a read: `get` (which slides the deadline,
//! and on a persisted engine checks whether the slide starts a new touch
//! period) or `peek` loops over the same random sessions, on the in-memory
//! engine and on one with a data directory (`Interval(1 s)`), interleaved
//! in one process, round after round:
//!
//! `cargo run --release -p session-engine-benches --example read_cost -- [get|peek] [ROUNDS]`
//!
//! Prints each round's ns per read for both and the median of the rounds'
//! ratios (persisted over in memory).
#![forbid(unsafe_code)]

use std::time::Instant;

use session_engine_benches::{contender, populate, Contender, SESSIONS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads per loop.
const READS: usize = 2_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "get".to_owned());
    assert!(
        op == "get" || op == "peek",
        "usage: read_cost [get|peek] [ROUNDS]"
    );
    let rounds: usize = args.next().map_or(9, |r| r.parse().expect("ROUNDS"));
    assert!(rounds > 0, "ROUNDS must be at least 1");
    let names = ["engine", "engine-interval"];
    let contenders: Vec<Box<dyn Contender>> = names.iter().map(|n| contender(n)).collect();
    let ids: Vec<_> = contenders.iter().map(|c| populate(&**c, SESSIONS)).collect();
    // xorshift64: the same random order of sessions for both.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let order: Vec<usize> = (0..READS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % SESSIONS as u64).expect("below SESSIONS")
        })
        .collect();
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut ns = [0.0; 2];
        for (i, c) in contenders.iter().enumerate() {
            let started = Instant::now();
            let found = order
                .iter()
                .filter(|&&k| {
                    if op == "get" {
                        c.get(&ids[i][k])
                    } else {
                        c.peek(&ids[i][k])
                    }
                })
                .count();
            assert_eq!(found, READS, "every session is live");
            #[allow(clippy::cast_precision_loss)]
            let per = started.elapsed().as_nanos() as f64 / READS as f64;
            ns[i] = per;
        }
        println!(
            "round {round}: {op} in memory {:.1} ns, with a data directory {:.1} ns",
            ns[0], ns[1]
        );
        ratios.push(ns[1] / ns[0]);
    }
    ratios.sort_by(f64::total_cmp);
    // The median: midway between the middle two of an even count.
    let median = f64::midpoint(ratios[(rounds - 1) / 2], ratios[rounds / 2]);
    println!(
        "median ratio (with a data directory / in memory) over {rounds} rounds: {median:.2}x [{:.2}-{:.2}]",
        ratios[0],
        ratios[rounds - 1]
    );
}
