//! Side-by-side comparison of the engine and its peers at 100K live sessions
//! with 200-byte metadata: mixed-workload throughput and CPU per operation on
//! 1 and 2 threads (uniform and Zipf keys), per-operation latency
//! percentiles, memory per session; and the engine's own: `get_many` against
//! single gets, and reads of a shard whose writer is stalled. Contenders run
//! interleaved (A B C D, A B C D, ...) for several rounds; the report quotes
//! medians with the min-max range, ratios paired within a round, and the CPU
//! the process got during each run (a 2-thread run that got much less than 2
//! cores was disturbed).
//!
//! `cargo bench -p session-engine-benches --bench compare` writes
//! `results/engine-compare.md`. Flags: `--rounds N` (default 3), `--ops N`
//! (mixed ops per thread, default 2,000,000), `--out PATH`.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use session_engine::SessionId;
use session_engine_benches::{
    allocator_collect, contender, engine, git_commit, mixed_ops, mixed_parts, populate, process_cpu_time,
    rss_bytes, run_mixed, thread_cpu_time, Contender, Keys, MixOp, METADATA_BYTES, NAMES, SESSIONS,
};

/// Peers' places in `NAMES`.
const SCC: usize = 1;
const DASHMAP: usize = 2;
const _: () = assert!(SCC < NAMES.len() && DASHMAP < NAMES.len());

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    rounds: usize,
    ops: usize,
    out: String,
    memory: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        rounds: 3,
        ops: 2_000_000,
        out: concat!(env!("CARGO_MANIFEST_DIR"), "/../results/engine-compare.md").into(),
        memory: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => args.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--ops" => args.ops = it.next().and_then(|v| v.parse().ok()).expect("--ops N"),
            "--out" => args.out = it.next().expect("--out PATH"),
            "--memory" => args.memory = Some(it.next().expect("--memory NAME")),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// Median, min and max of `values`.
fn summary(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

struct MixedRun {
    ops_per_sec: f64,
    /// CPU time of the worker threads per operation.
    cpu_ns_per_op: f64,
    get_p50_ns: f64,
    get_p99_ns: f64,
    cores: f64,
}

fn mixed_run(name: &str, threads: usize, keys: Keys, ops_per_thread: usize, seed: u64) -> MixedRun {
    let c = contender(name);
    let ids = populate(&*c, SESSIONS);
    let mut parts = mixed_parts(&ids, threads, keys, ops_per_thread, seed);
    // Warm-up: a tenth of the ops, unmeasured.
    std::thread::scope(|s| {
        for part in &mut parts {
            let c = &*c;
            s.spawn(move || {
                let warm_up = &part.ops[..part.ops.len() / 10];
                run_mixed(c, &mut part.ids, warm_up, usize::MAX, &mut histogram())
            });
        }
    });
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let hists: Vec<(Histogram<u64>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter_mut()
            .map(|part| {
                let c = &*c;
                s.spawn(move || {
                    let mut h = histogram();
                    let cpu = thread_cpu_time();
                    run_mixed(c, &mut part.ids, &part.ops, 8, &mut h);
                    (h, thread_cpu_time().saturating_sub(cpu))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let wall = started.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let mut merged = histogram();
    let mut worker_cpu = Duration::ZERO;
    for (h, cpu) in &hists {
        merged.add(h).expect("same bounds");
        worker_cpu += *cpu;
    }
    #[allow(clippy::cast_precision_loss)]
    let total_ops = (threads * ops_per_thread) as f64;
    drop(c);
    MixedRun {
        ops_per_sec: total_ops / wall.as_secs_f64(),
        cpu_ns_per_op: worker_cpu.as_nanos() as f64 / total_ops,
        get_p50_ns: merged.value_at_quantile(0.50) as f64,
        get_p99_ns: merged.value_at_quantile(0.99) as f64,
        cores: cpu.as_secs_f64() / wall.as_secs_f64(),
    }
}

/// Single-thread latency of each operation at 100K live sessions, every op timed.
fn op_latencies(name: &str, seed: u64) -> Vec<(&'static str, Histogram<u64>)> {
    use rand::{Rng, SeedableRng};
    let c = contender(name);
    let ids = populate(&*c, SESSIONS);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let picks: Vec<usize> = (0..200_000).map(|_| rng.random_range(0..ids.len())).collect();
    let metadata = [1u8; METADATA_BYTES];
    let mut out = Vec::new();
    let mut timed = |label: &'static str, f: &mut dyn FnMut(usize)| {
        let mut h = histogram();
        for (i, _) in picks.iter().enumerate() {
            let t = Instant::now();
            f(i);
            h.saturating_record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        out.push((label, h));
    };
    timed("get", &mut |i| assert!(c.get(&ids[picks[i]])));
    timed("peek", &mut |i| assert!(c.peek(&ids[picks[i]])));
    timed("touch", &mut |i| assert!(c.touch(&ids[picks[i]])));
    timed("update", &mut |i| assert!(c.update(&ids[picks[i]])));
    let mut created = Vec::with_capacity(picks.len());
    timed("create", &mut |_| created.push(c.create(&metadata)));
    timed("delete", &mut |i| assert!(c.delete(&created[i])));
    out
}

/// Bytes of RSS per session after populating, measured in a fresh process.
fn memory_child(name: &str) {
    // With transparent huge pages, RSS grows in 2 MiB steps wherever the
    // allocator's arena asks for them (mimalloc does): one step more or
    // less is 21 bytes a session at 100K, and which side of a step a run
    // lands on depends on unrelated allocations (a thread started by the
    // contender moved the engine from 275 to 294). Count 4 KiB pages.
    rustix::thread::disable_transparent_huge_pages(true).expect("prctl(PR_SET_THP_DISABLE)");
    let c: Box<dyn Contender> = contender(name);
    // The id vector belongs to the harness: allocate it before measuring,
    // and write it, or its pages would enter RSS during the measurement
    // (16 bytes a session, charged to the contender until 2026-11-25).
    let mut ids = vec![SessionId::from_bytes([1; 16]); SESSIONS];
    let metadata = [0xAB_u8; METADATA_BYTES];
    allocator_collect();
    let before = rss_bytes();
    for id in &mut ids {
        *id = c.create(&metadata);
    }
    assert_eq!(c.len(), SESSIONS);
    // Freed pages (the tables the maps outgrew) go back before the reading.
    allocator_collect();
    let after = rss_bytes();
    #[allow(clippy::cast_precision_loss)]
    let per_session = after.saturating_sub(before) as f64 / SESSIONS as f64;
    println!("{per_session:.1}");
}

fn memory_per_session(name: &str) -> f64 {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(["--memory", name])
        .output()
        .expect("memory child");
    assert!(out.status.success(), "memory child for {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("bytes per session")
}

fn timer_cost_ns() -> f64 {
    let n = 1_000_000u32;
    let started = Instant::now();
    let mut sink = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        sink += t.elapsed();
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The mixed loop's operations one kind at a time.
#[derive(Clone, Copy)]
enum Kind {
    Get,
    /// Lookup and activity, no metadata handed out.
    Touch,
    Update,
    Replace,
}

const KINDS: [(&str, Kind); 4] = [
    ("get", Kind::Get),
    ("touch", Kind::Touch),
    ("update", Kind::Update),
    ("replace (delete + create)", Kind::Replace),
];

/// Throughput (ops/s) of one operation kind alone, one thread, uniform keys,
/// untimed loop: where the mixed workload's time goes, contender by
/// contender, without a timer serialising the operations.
fn kind_run(name: &str, kind: Kind, ops: usize, seed: u64) -> f64 {
    let c = contender(name);
    let mut ids = populate(&*c, SESSIONS);
    let keys: Vec<usize> = mixed_ops(SESSIONS, ops, Keys::Uniform, seed)
        .into_iter()
        .map(|op| match op {
            MixOp::Get(k) | MixOp::Update(k) | MixOp::Replace(k) => k as usize,
        })
        .collect();
    let metadata = [0xCD_u8; METADATA_BYTES];
    let mut run = |keys: &[usize]| {
        for &k in keys {
            match kind {
                Kind::Get => assert!(c.get(&ids[k])),
                Kind::Touch => assert!(c.touch(&ids[k])),
                Kind::Update => assert!(c.update(&ids[k])),
                Kind::Replace => {
                    assert!(c.delete(&ids[k]));
                    ids[k] = c.create(&metadata);
                }
            }
        }
    };
    run(&keys[..keys.len() / 10]);
    let started = Instant::now();
    run(&keys);
    #[allow(clippy::cast_precision_loss)]
    let per_sec = keys.len() as f64 / started.elapsed().as_secs_f64();
    per_sec
}

/// Sessions a `get_many` batch reads.
const BATCH: usize = 16;

/// Sessions read per second by 16 single `get`s and by one `get_many` of
/// 16, one thread, uniform keys, the two loops over the same keys, in turn.
fn batch_run(ops: usize, seed: u64) -> (f64, f64) {
    use rand::{Rng, SeedableRng};
    let e = engine();
    let ids = populate(&e, SESSIONS);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let keys: Vec<usize> = (0..ops / BATCH * BATCH)
        .map(|_| rng.random_range(0..ids.len()))
        .collect();
    let singles = |keys: &[usize]| {
        for chunk in keys.chunks(BATCH) {
            for &k in chunk {
                assert!(e.get(&ids[k]).is_ok());
            }
        }
    };
    let many = |keys: &[usize]| {
        let mut batch = [ids[0]; BATCH];
        for chunk in keys.chunks(BATCH) {
            for (slot, &k) in batch.iter_mut().zip(chunk) {
                *slot = ids[k];
            }
            assert!(e.get_many(&batch).iter().all(Result::is_ok));
        }
    };
    singles(&keys[..keys.len() / 10]);
    many(&keys[..keys.len() / 10]);
    let rate = |f: &dyn Fn(&[usize])| {
        let started = Instant::now();
        f(&keys);
        keys.len() as f64 / started.elapsed().as_secs_f64()
    };
    let single_rate = rate(&singles);
    let many_rate = rate(&many);
    (single_rate, many_rate)
}

/// Reads of one shard's sessions while its writer lock is held for `hold`
/// (`Engine::debug_hold_writer`, as a writer stalled in its critical section
/// would): how many completed during the hold, and their latency (every
/// read timed, ns).
fn stalled_writer_run(hold: Duration) -> (u64, Histogram<u64>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = engine();
    let ids = populate(&e, SESSIONS);
    let mine: Vec<SessionId> = ids.into_iter().filter(|id| e.debug_shard_of(id) == 0).collect();
    let holding = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let mut h = histogram();
    let mut during = 0u64;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut h = histogram();
            let mut during = 0u64;
            'outer: loop {
                for id in &mine {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let held = holding.load(Ordering::Relaxed);
                    let t = Instant::now();
                    assert!(e.get(id).is_ok());
                    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if held && holding.load(Ordering::Relaxed) {
                        h.saturating_record(ns);
                        during += 1;
                    }
                }
            }
            (during, h)
        });
        std::thread::sleep(Duration::from_millis(50));
        e.debug_hold_writer(0, || {
            holding.store(true, Ordering::Relaxed);
            std::thread::sleep(hold);
            holding.store(false, Ordering::Relaxed);
        });
        stop.store(true, Ordering::Relaxed);
        (during, h) = reader.join().expect("reader");
    });
    (during, h)
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args = args();
    if let Some(name) = &args.memory {
        memory_child(name);
        return;
    }
    let started = Instant::now();
    let timer_ns = timer_cost_ns();
    let configs = [
        (1, Keys::Uniform),
        (2, Keys::Uniform),
        (1, Keys::Zipf(1.0)),
        (2, Keys::Zipf(1.0)),
    ];
    // results[config][contender] -> runs
    let mut mixed: Vec<Vec<Vec<MixedRun>>> = configs
        .iter()
        .map(|_| NAMES.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut memory: Vec<Vec<f64>> = NAMES.iter().map(|_| Vec::new()).collect();
    // Per contender: (op, p50 per round, p99 per round).
    type OpRounds = (&'static str, Vec<f64>, Vec<f64>);
    let mut latencies: Vec<Vec<OpRounds>> = NAMES.iter().map(|_| Vec::new()).collect();
    // kinds[kind][contender] -> ops/s per round
    let mut kinds: Vec<Vec<Vec<f64>>> = KINDS
        .iter()
        .map(|_| NAMES.iter().map(|_| Vec::new()).collect())
        .collect();
    // (single gets/s, get_many gets/s) per round.
    let mut batches: Vec<(f64, f64)> = Vec::new();
    // (reads during the hold, p50, p99.9, max) per round.
    let mut stalled: Vec<(u64, f64, f64, f64)> = Vec::new();
    for round in 0..args.rounds {
        // The contenders' order rotates from round to round, so that none
        // always runs first (after process start) or after the same peer.
        let order: Vec<(usize, &str)> = (0..NAMES.len())
            .map(|k| (k + round) % NAMES.len())
            .map(|ni| (ni, NAMES[ni]))
            .collect();
        for (ki, &(label, kind)) in KINDS.iter().enumerate() {
            for &(ni, name) in &order {
                let per_sec = kind_run(name, kind, args.ops / 2, 77 + round as u64);
                eprintln!("round {round} {label} alone {name}: {:.2} Mops/s", per_sec / 1e6);
                kinds[ki][ni].push(per_sec);
            }
        }
        for (ci, &(threads, keys)) in configs.iter().enumerate() {
            for &(ni, name) in &order {
                let run = mixed_run(name, threads, keys, args.ops, 1000 * round as u64 + ci as u64);
                eprintln!(
                    "round {round} {threads}t {keys:?} {name}: {:.2} Mops/s, get p50 {} ns p99 {} ns, {:.2} cores",
                    run.ops_per_sec / 1e6,
                    run.get_p50_ns,
                    run.get_p99_ns,
                    run.cores
                );
                mixed[ci][ni].push(run);
            }
        }
        let (single, many) = batch_run(args.ops, 5 + round as u64);
        eprintln!(
            "round {round} get_many: {:.2} M sessions/s, 16 gets: {:.2} M/s ({:.2}x)",
            many / 1e6,
            single / 1e6,
            many / single
        );
        batches.push((single, many));
        let (during, h) = stalled_writer_run(Duration::from_millis(100));
        let row = (
            during,
            h.value_at_quantile(0.5) as f64,
            h.value_at_quantile(0.999) as f64,
            h.max() as f64,
        );
        eprintln!("round {round} stalled writer: {row:?}");
        stalled.push(row);
        for &(ni, name) in &order {
            memory[ni].push(memory_per_session(name));
            for (label, h) in op_latencies(name, round as u64) {
                let entry = if let Some(e) = latencies[ni].iter_mut().find(|e| e.0 == label) {
                    e
                } else {
                    latencies[ni].push((label, Vec::new(), Vec::new()));
                    latencies[ni].last_mut().expect("just pushed")
                };
                entry.1.push(h.value_at_quantile(0.5) as f64);
                entry.2.push(h.value_at_quantile(0.99) as f64);
            }
        }
    }

    let mut md = String::new();
    let commit = git_commit();
    let _ = writeln!(md, "# Engine vs peers: 100K live sessions, 200-byte metadata\n");
    let _ = writeln!(
        md,
        "Command: `cargo bench -p session-engine-benches --bench compare -- --rounds {} --ops {}`  \n\
         Machine: {}, shared and noisy. mimalloc as global allocator.  \n\
         Commit: `{commit}`. Rounds: {} (contenders interleaved within each round, their order rotating). Run took {:.0} s.  \n\
         Figures: median over rounds, [min-max] in brackets. Timer cost (one `Instant::now()` pair): {timer_ns:.0} ns, \
         included in every latency below.\n",
        args.rounds,
        args.ops,
        session_engine_benches::machine(),
        args.rounds,
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Peers: `scc` 3 `HashMap` with an atomic deadline beside each value that reads slide (no expiry runs); \
         `dashmap` 6 (no expiry: the raw ceiling); `mutex-map` = sharded `parking_lot::Mutex<HashMap>` (same \
         shard count and hasher, no expiry); `moka` 0.12 `sync::Cache` with `time_to_idle`. Every peer's `get` \
         hands out the value as an `Arc` clone, as the engine's hands out a `Session` sharing its bytes. \
         The engine does its session work on every op: deadlines, timer wheel, listener hook, capacity accounting.\n"
    );
    let _ = writeln!(md, "## Mixed workload (80% get, 15% update, 5% delete+create)\n");
    let _ = writeln!(
        md,
        "{} ops per thread after a 10% warm-up; get latency sampled 1 op in 8. The threads own disjoint \
         halves of the sessions. `vs dashmap` and `vs scc`: the ratio to the peer's run in the same round, \
         median over rounds [min-max]. CPU ns/op: the worker threads' CPU time per operation (steadier \
         than throughput on a shared machine); its ratios are paired the same way (lower is better).\n",
        args.ops
    );
    let _ = writeln!(
        md,
        "| threads | keys | contender | Mops/s | vs dashmap | vs scc | CPU ns/op | CPU vs dashmap | CPU vs scc | \
         get p50 ns | get p99 ns | cores used |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (ci, &(threads, keys)) in configs.iter().enumerate() {
        // Ratios pair each run with the peer's run of the same round (seconds
        // apart), then take the median over rounds: steadier than a ratio of
        // medians taken from rounds minutes apart.
        let ratio_to = |ni: usize, peer: usize, of: fn(&MixedRun) -> f64| {
            let mut v: Vec<f64> = mixed[ci][ni]
                .iter()
                .zip(&mixed[ci][peer])
                .map(|(a, b)| of(a) / of(b))
                .collect();
            summary(&mut v)
        };
        let rate: fn(&MixedRun) -> f64 = |r| r.ops_per_sec;
        let cpu: fn(&MixedRun) -> f64 = |r| r.cpu_ns_per_op;
        for (ni, name) in NAMES.iter().enumerate() {
            let runs = &mixed[ci][ni];
            let (t, tmin, tmax) = summary(&mut runs.iter().map(|r| r.ops_per_sec / 1e6).collect::<Vec<_>>());
            let (p50, ..) = summary(&mut runs.iter().map(|r| r.get_p50_ns).collect::<Vec<_>>());
            let (p99, p99min, p99max) = summary(&mut runs.iter().map(|r| r.get_p99_ns).collect::<Vec<_>>());
            let (cores, cmin, cmax) = summary(&mut runs.iter().map(|r| r.cores).collect::<Vec<_>>());
            let keys = match keys {
                Keys::Uniform => "uniform".to_string(),
                Keys::Zipf(s) => format!("zipf {s}"),
            };
            let (vd, vdmin, vdmax) = ratio_to(ni, DASHMAP, rate);
            let (vs, vsmin, vsmax) = ratio_to(ni, SCC, rate);
            let (ns, nsmin, nsmax) = summary(&mut runs.iter().map(|r| r.cpu_ns_per_op).collect::<Vec<_>>());
            let (cd, cdmin, cdmax) = ratio_to(ni, DASHMAP, cpu);
            let (cs, csmin, csmax) = ratio_to(ni, SCC, cpu);
            let _ = writeln!(
                md,
                "| {threads} | {keys} | {name} | {t:.2} [{tmin:.2}-{tmax:.2}] | {vd:.2}x [{vdmin:.2}-{vdmax:.2}] | \
                 {vs:.2}x [{vsmin:.2}-{vsmax:.2}] | {ns:.0} [{nsmin:.0}-{nsmax:.0}] | {cd:.2}x [{cdmin:.2}-{cdmax:.2}] | \
                 {cs:.2}x [{csmin:.2}-{csmax:.2}] | {p50:.0} | {p99:.0} [{p99min:.0}-{p99max:.0}] | \
                 {cores:.2} [{cmin:.2}-{cmax:.2}] |"
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Each operation of the mixed loop alone: one thread, uniform keys, untimed (Mops/s)\n"
    );
    let _ = writeln!(
        md,
        "{} ops after a 10% warm-up, same key sequence for every contender; the ratio is to dashmap in \
         the same round, median over rounds. `touch` is a lookup that hands out no metadata (peers: \
         `contains_key`), so get minus touch is the cost of cloning the metadata `Arc`.\n",
        args.ops / 2
    );
    let _ = write!(md, "| op |");
    for name in NAMES {
        let _ = write!(md, " {name} |");
    }
    let _ = writeln!(md, " engine vs dashmap | engine vs scc |");
    let _ = writeln!(md, "|---|{}---|---|", "---|".repeat(NAMES.len()));
    for (ki, (label, _)) in KINDS.iter().enumerate() {
        let _ = write!(md, "| {label} |");
        for per in &kinds[ki] {
            let (m, lo, hi) = summary(&mut per.iter().map(|v| v / 1e6).collect::<Vec<_>>());
            let _ = write!(md, " {m:.2} [{lo:.2}-{hi:.2}] |");
        }
        for peer in [DASHMAP, SCC] {
            let mut ratios: Vec<f64> = kinds[ki][0]
                .iter()
                .zip(&kinds[ki][peer])
                .map(|(e, d)| e / d)
                .collect();
            let (r, rlo, rhi) = summary(&mut ratios);
            let _ = write!(md, " {r:.2}x [{rlo:.2}-{rhi:.2}] |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\n## Single-operation latency, one thread, every op timed (ns)\n"
    );
    let _ = writeln!(
        md,
        "200,000 operations each on random live sessions (create/delete: 200,000 new ones).\n"
    );
    let _ = write!(md, "| op |");
    for name in NAMES {
        let _ = write!(md, " {name} p50 | {name} p99 |");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---|---|".repeat(NAMES.len()));
    for (li, (label, ..)) in latencies[0].iter().enumerate() {
        let _ = write!(md, "| {label} |");
        for per in &latencies {
            let (p50, ..) = summary(&mut per[li].1.clone());
            let (p99, ..) = summary(&mut per[li].2.clone());
            let _ = write!(md, " {p50:.0} | {p99:.0} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n## The engine's `get_many` against single gets\n");
    let _ = writeln!(
        md,
        "One thread, uniform keys, {} sessions read per loop: 16 `get`s in a row against one \
         `get_many` of the same 16 ids (results in a `Vec`), the two loops in turn within a round. \
         Sessions read per second, and the ratio paired per round.\n",
        args.ops / BATCH * BATCH
    );
    let (mut singles, mut manys): (Vec<f64>, Vec<f64>) =
        batches.iter().map(|&(s, m)| (s / 1e6, m / 1e6)).unzip();
    let mut ratios: Vec<f64> = batches.iter().map(|&(s, m)| m / s).collect();
    let (s, smin, smax) = summary(&mut singles);
    let (m, mmin, mmax) = summary(&mut manys);
    let (r, rmin, rmax) = summary(&mut ratios);
    let _ = writeln!(md, "| 16 gets (M/s) | get_many of 16 (M/s) | get_many / gets |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| {s:.2} [{smin:.2}-{smax:.2}] | {m:.2} [{mmin:.2}-{mmax:.2}] | {r:.2}x [{rmin:.2}-{rmax:.2}] |"
    );
    let _ = writeln!(md, "\n## Reads while a shard's writer is stalled\n");
    let _ = writeln!(
        md,
        "One thread reads the sessions of shard 0 (every read timed) while another holds that shard's \
         writer lock for 100 ms (`Engine::debug_hold_writer`, as a writer stalled in its critical section \
         would). Reads completed during the hold and their latency (ns), per round. With a lock readers \
         share with writers, none would complete.\n"
    );
    let _ = writeln!(
        md,
        "| round | reads during the hold | p50 ns | p99.9 ns | max ns |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (round, (n, p50, p999, max)) in stalled.iter().enumerate() {
        let _ = writeln!(md, "| {round} | {n} | {p50:.0} | {p999:.0} | {max:.0} |");
    }
    let _ = writeln!(md, "\n## Memory per session\n");
    let _ = writeln!(
        md,
        "RSS growth while creating 100,000 sessions in a fresh process, divided by 100,000 \
         (mimalloc, `mi_collect` before each reading, so pages the maps freed while growing are not \
         counted; the harness's id vector is allocated and written before the first reading; \
         transparent huge pages off, so that RSS grows in 4 KiB pages, not 2 MiB steps). \
         Includes the 200 metadata bytes and the allocator's rounding of them.\n"
    );
    let _ = writeln!(
        md,
        "| contender | bytes/session | beyond the 200 metadata bytes |"
    );
    let _ = writeln!(md, "|---|---|---|");
    for (ni, name) in NAMES.iter().enumerate() {
        let (m, mmin, mmax) = summary(&mut memory[ni]);
        let _ = writeln!(
            md,
            "| {name} | {m:.0} [{mmin:.0}-{mmax:.0}] | {:.0} |",
            m - METADATA_BYTES as f64
        );
    }
    std::fs::write(&args.out, &md).expect("write report");
    println!("{md}");
    eprintln!("wrote {}", args.out);
}
