//! Reads of one shard while its writer is held, against reads of the same
//! shard while nothing is held, in one process, windows alternating: the
//! figure issue 15 asks for ("a get on a shard whose writer is stalled:
//! report the reads' max") with the control that tells what the max is
//! made of. A reader thread times every `get` of shard 0's sessions; each
//! round holds that shard's writer mutex for `--hold-ms`
//! (`Engine::debug_hold_writer`, as a writer stalled in its critical
//! section would) and leaves it free for as long, alternating which comes
//! first. If reads waited for the writer, the held windows would show it
//! (a read of 100 ms, or none at all); what both windows share is the
//! machine's: the reader's thread descheduled, the host's other guests.
//!
//! `cargo run --release -p session-engine-benches --example held_writer -- [--rounds N] [--hold-ms MS] [--out FILE]`
//!
//! Writes a markdown report to `--out` (default `results/engine-held-writer.md`)
//! and prints it. Run it under `chrt -f 1` (as root) to take the reader out
//! of the CFS scheduler's time slicing: the report says which policy the
//! process ran under.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use session_engine::SessionId;
use session_engine_benches::{engine, git_commit, populate, SESSIONS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the reader is told about the current window.
const SETTLING: u8 = 0;
const HELD: u8 = 1;
const FREE: u8 = 2;
const DONE: u8 = 3;

/// Reads longer than this are counted apart (the target for the
/// max).
const SLOW_NS: u64 = 10_000;

struct Window {
    reads: u64,
    hist: Histogram<u64>,
    slow: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            reads: 0,
            hist: Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds"),
            slow: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        self.reads += 1;
        self.hist.saturating_record(ns);
        self.slow += u64::from(ns > SLOW_NS);
    }
}

struct Args {
    rounds: usize,
    hold: Duration,
    out: String,
}

fn args() -> Args {
    let mut args = Args {
        rounds: 10,
        hold: Duration::from_millis(100),
        out: concat!(env!("CARGO_MANIFEST_DIR"), "/../results/engine-held-writer.md").into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => args.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--hold-ms" => {
                args.hold =
                    Duration::from_millis(it.next().and_then(|v| v.parse().ok()).expect("--hold-ms MS"));
            }
            "--out" => args.out = it.next().expect("--out FILE"),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The process's scheduling policy, from `/proc/self/stat` (field 41).
fn policy() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    match fields.get(38).and_then(|p| p.parse::<u32>().ok()) {
        Some(0) => "SCHED_OTHER (CFS)".into(),
        Some(1) => "SCHED_FIFO".into(),
        Some(2) => "SCHED_RR".into(),
        Some(p) => format!("policy {p}"),
        None => "unknown".into(),
    }
}

/// One round: a held and a free window of `hold` each, in the given order.
fn round(
    mine: &[SessionId],
    e: &session_engine::Engine,
    hold: Duration,
    held_first: bool,
) -> (Window, Window) {
    let phase = AtomicU8::new(SETTLING);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut held, mut free) = (Window::new(), Window::new());
            loop {
                for id in mine {
                    let before = phase.load(Ordering::Relaxed);
                    if before == DONE {
                        return (held, free);
                    }
                    let t = Instant::now();
                    assert!(e.get(id).is_ok());
                    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    // Counted only if the whole read fell in one window.
                    if phase.load(Ordering::Relaxed) == before {
                        match before {
                            HELD => held.record(ns),
                            FREE => free.record(ns),
                            _ => {}
                        }
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        let held_window = || {
            e.debug_hold_writer(0, || {
                phase.store(HELD, Ordering::Relaxed);
                std::thread::sleep(hold);
                phase.store(SETTLING, Ordering::Relaxed);
            });
        };
        let free_window = || {
            phase.store(FREE, Ordering::Relaxed);
            std::thread::sleep(hold);
            phase.store(SETTLING, Ordering::Relaxed);
        };
        if held_first {
            held_window();
            free_window();
        } else {
            free_window();
            held_window();
        }
        phase.store(DONE, Ordering::Relaxed);
        reader.join().expect("reader")
    })
}

fn main() {
    let args = args();
    let e = engine();
    let ids = populate(&e, SESSIONS);
    let mine: Vec<SessionId> = ids.into_iter().filter(|id| e.debug_shard_of(id) == 0).collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Reads of a shard whose writer is held, against the same reads with it free\n"
    );
    let _ = writeln!(
        md,
        "Command: `cargo run --release -p session-engine-benches --example held_writer -- --rounds {} --hold-ms {}`  \n\
         Commit: `{}`. Scheduling policy of the process: {}. Machine: {}, shared and noisy. \
         {} sessions of 200 bytes, engine defaults ({} shards); one thread reads shard 0's {} sessions in turn, \
         every `get` timed (`Instant` pair included). Each round holds shard 0's writer mutex for {} ms \
         (`Engine::debug_hold_writer`) and leaves it free for as long, alternating which window comes first; \
         a read is counted in a window only if it started and ended in it. Reads over {} µs are counted apart.\n",
        args.rounds,
        args.hold.as_millis(),
        git_commit(),
        policy(),
        session_engine_benches::machine(),
        SESSIONS,
        e.shard_count(),
        mine.len(),
        args.hold.as_millis(),
        SLOW_NS / 1000,
    );
    let _ = writeln!(
        md,
        "| round | window | reads | p50 ns | p99.9 ns | max ns | reads over {} µs |",
        SLOW_NS / 1000
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let (mut held_max, mut free_max) = (Vec::new(), Vec::new());
    let (mut held_slow, mut free_slow, mut held_reads, mut free_reads) = (0, 0, 0, 0);
    for r in 0..args.rounds {
        let (held, free) = round(&mine, &e, args.hold, r % 2 == 0);
        for (name, w) in [("held", &held), ("free", &free)] {
            let _ = writeln!(
                md,
                "| {r} | {name} | {} | {} | {} | {} | {} |",
                w.reads,
                w.hist.value_at_quantile(0.5),
                w.hist.value_at_quantile(0.999),
                w.hist.max(),
                w.slow
            );
        }
        held_max.push(held.hist.max());
        free_max.push(free.hist.max());
        (held_slow, free_slow) = (held_slow + held.slow, free_slow + free.slow);
        (held_reads, free_reads) = (held_reads + held.reads, free_reads + free.reads);
    }
    held_max.sort_unstable();
    free_max.sort_unstable();
    // The mean of the middle two for an even count (the default 10 rounds).
    let median = |v: &[u64]| (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2;
    let _ = writeln!(
        md,
        "\nMedian of the rounds' max: held {} ns, free {} ns; largest max: held {} ns, free {} ns. \
         Reads over {} µs: held {held_slow} of {held_reads}, free {free_slow} of {free_reads}.",
        median(&held_max),
        median(&free_max),
        held_max.last().copied().unwrap_or(0),
        free_max.last().copied().unwrap_or(0),
        SLOW_NS / 1000,
    );
    print!("{md}");
    std::fs::write(&args.out, md).expect("write the report");
}
