//! One run of the compare bench's mixed workload (80% get, 15% update, 5%
//! delete + create) for one contender, to profile it alone:
//!
//! `perf record -g target/release/examples/mix_loop CONTENDER KEYS THREADS OPS`
//!
//! with KEYS `uniform` or `zipf` (exponent 1.0), OPS per thread, CONTENDER
//! any name `contender` takes (the engine with another clock too). Populates
//! 100K sessions, splits them between the threads as the bench does, and
//! prints the throughput of the loop (a single run: compare contenders with
//! the compare bench, which interleaves them).
#![forbid(unsafe_code)]

use std::time::Instant;

use session_engine_benches::{contender, mixed_parts, populate, run_mixed, Keys, SESSIONS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "mix_loop CONTENDER (uniform|zipf) THREADS OPS";
    let [name, keys, threads, ops] = args.as_slice() else {
        panic!("usage: {usage}");
    };
    let keys = match keys.as_str() {
        "uniform" => Keys::Uniform,
        "zipf" => Keys::Zipf(1.0),
        other => panic!("keys {other}: uniform or zipf ({usage})"),
    };
    let threads: usize = threads.parse().expect("THREADS");
    let ops: usize = ops.parse().expect("OPS");
    assert!(threads > 0, "THREADS must be at least 1");
    let c = contender(name);
    let ids = populate(&*c, SESSIONS);
    let mut parts = mixed_parts(&ids, threads, keys, ops, 7);
    let started = Instant::now();
    std::thread::scope(|s| {
        for part in &mut parts {
            let c = &*c;
            s.spawn(move || {
                let mut unused = hdrhistogram::Histogram::new(3).expect("histogram");
                run_mixed(c, &mut part.ids, &part.ops, usize::MAX, &mut unused)
            });
        }
    });
    #[allow(clippy::cast_precision_loss)]
    let mops = (threads * ops) as f64 / started.elapsed().as_secs_f64() / 1e6;
    println!("{name} {keys:?} {threads} thread(s): {mops:.2} Mops/s");
}
