//! Persistence costs, measured side by side in one run on one machine:
//! - mixed workload (80% get, 15% update, 5% replace) at 100K sessions:
//!   in memory vs `Interval(1 s)` vs `Never`, interleaved, 11 rounds (the
//!   per-round ratio moves widely between rounds on a shared machine: more
//!   rounds, a steadier median; `results/persistence.md`);
//! - `Always` with 64 concurrent writers, as threads (blocking API) and as
//!   async tasks (the `SessionStore` trait): acknowledged durable writes/s
//!   and latency percentiles (every write waits for its group-committed sync);
//! - recovery of 1M sessions with 200-byte metadata;
//! - compaction of 1M sessions: its duration, and the get latency p99 of a
//!   reader running beside it versus without it.
//!
//! `cargo bench -p session-engine-benches --bench persist` writes
//! `results/persistence.md`. Flags: `--quick` (smaller sizes, for a smoke
//! run), `--out PATH`, `--dir PATH` (where the data directories go; default
//! a temporary directory under `target/`).
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use session_engine::{CompactionStep, Config, Durability, Engine, SessionId, Timeout};
use session_engine_benches::{git_commit, mixed_ops, run_mixed, Keys, METADATA_BYTES};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    quick: bool,
    out: String,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        quick: false,
        out: concat!(env!("CARGO_MANIFEST_DIR"), "/../results/persistence.md").into(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = it.next().expect("--out PATH"),
            "--dir" => args.dir = Some(it.next().expect("--dir PATH").into()),
            _ => {}
        }
    }
    args
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn engine(dir: Option<&Path>, durability: Durability, sessions_max: usize) -> Engine {
    engine_with(Config::default(), dir, durability, sessions_max)
}

fn engine_with(config: Config, dir: Option<&Path>, durability: Durability, sessions_max: usize) -> Engine {
    let mut config = config.sessions_max(sessions_max);
    if let Some(dir) = dir {
        config = config.data_dir(dir).durability(durability);
    }
    Engine::open(config).expect("open engine")
}

/// Mixed-workload throughput on 2 threads for one configuration (Mops/s).
fn mixed(dir: Option<&Path>, durability: Durability, sessions: usize, ops: usize, seed: u64) -> f64 {
    let engine = engine(dir, durability, 4 * sessions);
    let meta = [0xAB_u8; METADATA_BYTES];
    let ids: Vec<SessionId> = (0..sessions)
        .map(|_| engine.create(&meta, Timeout::from_secs(1800)).unwrap())
        .collect();
    let threads = 2;
    let per = sessions / threads;
    let mut parts: Vec<Vec<SessionId>> = ids.chunks(per).map(<[_]>::to_vec).take(threads).collect();
    let lists: Vec<_> = (0..threads)
        .map(|t| mixed_ops(per, ops, Keys::Uniform, seed + t as u64))
        .collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for (part, list) in parts.iter_mut().zip(&lists) {
            let engine = &engine;
            s.spawn(move || run_mixed(engine, part, list, usize::MAX, &mut histogram()));
        }
    });
    let elapsed = started.elapsed();
    drop(engine);
    (threads * ops) as f64 / elapsed.as_secs_f64() / 1e6
}

struct Always {
    writes_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl Always {
    /// The writers' latency histograms merged, and `writes` over `elapsed`.
    fn of(hists: &[Histogram<u64>], writes: u64, elapsed: Duration) -> Self {
        let mut merged = histogram();
        for h in hists {
            merged.add(h).unwrap();
        }
        Self {
            writes_per_sec: writes as f64 / elapsed.as_secs_f64(),
            p50_us: merged.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: merged.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: merged.value_at_quantile(0.999) as f64 / 1e3,
        }
    }
}

/// `writers` threads creating sessions in `Always` mode for `run`, on an
/// engine of `shards` shards (one log, and so one sync per group commit,
/// each).
fn always(dir: &Path, shards: usize, writers: usize, run: Duration) -> Always {
    let engine = engine_with(
        Config::default().shards(shards),
        Some(dir),
        Durability::Always,
        8 << 20,
    );
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let started = Instant::now();
    let hists: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (engine, stop, total) = (&engine, &stop, &total);
                s.spawn(move || {
                    let mut h = histogram();
                    let meta = [0x5A_u8; METADATA_BYTES];
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        engine.create(&meta, Timeout::from_secs(1800)).unwrap();
                        h.saturating_record(ns(t.elapsed()));
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    h
                })
            })
            .collect();
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    Always::of(&hists, total.load(Ordering::Relaxed), started.elapsed())
}

/// `tasks` async tasks on a 2-thread Tokio runtime creating sessions through
/// the `SessionStore` trait in `Always` mode for `run`: a write's future
/// completes when its group commit has synced it, and no thread blocks.
fn always_async(dir: &Path, shards: usize, tasks: usize, run: Duration) -> Always {
    use session_engine::SessionStore;
    let engine = std::sync::Arc::new(engine_with(
        Config::default().shards(shards),
        Some(dir),
        Durability::Always,
        8 << 20,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let total = std::sync::Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let hists: Vec<Histogram<u64>> = runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (engine, stop, total) = (
                    std::sync::Arc::clone(&engine),
                    std::sync::Arc::clone(&stop),
                    std::sync::Arc::clone(&total),
                );
                tokio::spawn(async move {
                    let mut h = histogram();
                    let meta = [0x5A_u8; METADATA_BYTES];
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        SessionStore::create(&*engine, &meta, Timeout::from_secs(1800))
                            .await
                            .unwrap();
                        h.saturating_record(ns(t.elapsed()));
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    h
                })
            })
            .collect();
        tokio::time::sleep(run).await;
        stop.store(true, Ordering::Relaxed);
        let mut hists = Vec::new();
        for h in handles {
            hists.push(h.await.unwrap());
        }
        hists
    });
    Always::of(&hists, total.load(Ordering::Relaxed), started.elapsed())
}

/// Get latency p99 (µs) of one reader while `during` runs (or for `alone`).
fn reader_p99(engine: &Engine, ids: &[SessionId], during: impl FnOnce()) -> f64 {
    let stop = AtomicBool::new(false);
    let hist = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut h = histogram();
            let mut x = 7u64;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let id = &ids[(x >> 33) as usize % ids.len()];
                let t = Instant::now();
                let _ = engine.get(id);
                h.saturating_record(ns(t.elapsed()));
            }
            h
        });
        during();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    hist.value_at_quantile(0.99) as f64 / 1e3
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    dir_size(&p)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args = args();
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data").into());
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let (sessions, ops, big, rounds) = if args.quick {
        (20_000, 200_000, 100_000, 1)
    } else {
        (100_000, 1_000_000, 1_000_000, 5)
    };
    let started = Instant::now();
    let mut md = String::new();
    let commit = git_commit();

    // 1. Mixed workload, interleaved.
    let modes: [(&str, Option<Durability>); 3] = [
        ("in memory", None),
        (
            "Interval(1 s)",
            Some(Durability::Interval(Duration::from_secs(1))),
        ),
        ("Never", Some(Durability::Never)),
    ];
    let mut results: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
    let mixed_rounds = if args.quick { 1 } else { 11 };
    for round in 0..mixed_rounds {
        for (i, (name, mode)) in modes.iter().enumerate() {
            let dir = scratch.path().join(format!("mixed-{round}-{i}"));
            let mops = mixed(
                mode.map(|_| dir.as_path()),
                mode.unwrap_or(Durability::Never),
                sessions,
                ops,
                round as u64,
            );
            eprintln!("mixed round {round} {name}: {mops:.2} Mops/s");
            results[i].push(mops);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    // 2. Always with 64 writers (and 8 for the shape of group commit).
    let mut always_rows = Vec::new();
    let default_shards = Engine::open(Config::default()).unwrap().shard_count();
    let rows: [(usize, usize, bool); 7] = [
        (default_shards, 8, false),
        (default_shards, 64, false),
        (2, 64, false),
        (1, 64, false),
        (default_shards, 64, true),
        (2, 64, true),
        (1, 64, true),
    ];
    for (shards, writers, tasks) in rows {
        let dir = scratch.path().join(format!("always-{shards}-{writers}-{tasks}"));
        let run = Duration::from_secs(if args.quick { 1 } else { 4 });
        let a = if tasks {
            always_async(&dir, shards, writers, run)
        } else {
            always(&dir, shards, writers, run)
        };
        let kind = if tasks { "async tasks" } else { "threads" };
        eprintln!(
            "always {shards} shards {writers} {kind}: {:.0} writes/s p99 {:.0} us",
            a.writes_per_sec, a.p99_us
        );
        always_rows.push((shards, writers, tasks, a));
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The raw sync cost on this disk, for scale.
    let (sync_us, sync_p99_us) = {
        let path = scratch.path().join("sync-probe");
        let file = std::fs::File::create(&path).unwrap();
        let mut h = histogram();
        for i in 0..200u64 {
            std::io::Write::write_all(&mut &file, &i.to_le_bytes()).unwrap();
            let t = Instant::now();
            file.sync_data().unwrap();
            h.saturating_record(ns(t.elapsed()));
        }
        (
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
        )
    };

    // Opening an empty data directory (default shards): what a restart of
    // an empty service, or a test, pays before its first write.
    let mut opens_ms: Vec<f64> = (0..5)
        .map(|i| {
            let dir = scratch.path().join(format!("open-{i}"));
            let t = Instant::now();
            let engine = engine(Some(&dir), Durability::Interval(Duration::from_secs(1)), 1 << 20);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(engine);
            let _ = std::fs::remove_dir_all(&dir);
            ms
        })
        .collect();
    let (open_ms, open_lo, open_hi) = median(&mut opens_ms);
    eprintln!("open of an empty directory: {open_ms:.1} ms");

    // 3. Recovery of `big` sessions, then 4. compaction of them.
    let dir = scratch.path().join("big");
    let meta = [0x11_u8; METADATA_BYTES];
    let ids: Vec<SessionId> = {
        let engine = engine(Some(&dir), Durability::Never, 2 * big);
        let ids: Vec<SessionId> = (0..big)
            .map(|_| engine.create(&meta, Timeout::from_secs(3600)).unwrap())
            .collect();
        // Half of them rewritten once: dead bytes for the compaction.
        for id in ids.iter().step_by(2) {
            engine.update(id, |m| m.to_vec()).unwrap();
        }
        engine.close().unwrap();
        ids
    };
    let log_bytes = dir_size(&dir);
    let mut recovery_ms = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let engine = engine(Some(&dir), Durability::Never, 2 * big);
        let took = t.elapsed();
        assert_eq!(engine.len(), big);
        recovery_ms.push(took.as_secs_f64() * 1e3);
        eprintln!("recovery of {big}: {took:?}");
    }
    let engine = engine(Some(&dir), Durability::Never, 2 * big);
    let quiet_p99 = reader_p99(&engine, &ids, || std::thread::sleep(Duration::from_secs(2)));
    let mut compaction = Duration::ZERO;
    let busy_p99 = reader_p99(&engine, &ids, || {
        let t = Instant::now();
        for shard in 0..engine.shard_count() {
            engine.debug_compact(shard, CompactionStep::Done).unwrap();
        }
        compaction = t.elapsed();
    });
    let compacted_bytes = engine.stats().log_bytes;
    drop(engine);
    eprintln!(
        "compaction of {big}: {compaction:?}; reader p99 {quiet_p99:.1} us quiet, {busy_p99:.1} us during"
    );

    let _ = writeln!(
        md,
        "# Persistence: cost on the hot path, group commit, recovery, compaction\n"
    );
    let _ = writeln!(
        md,
        "Command: `cargo bench -p session-engine-benches --bench persist{}`  \n\
         Machine: {}, virtual disk, shared and noisy. Commit `{commit}`. \
         Run took {:.0} s. Median over {rounds} round(s), [min-max].\n",
        if args.quick { " -- --quick" } else { "" },
        session_engine_benches::machine(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        md,
        "## Mixed workload, 2 threads, {sessions} sessions, 200-byte metadata\n"
    );
    let _ = writeln!(
        md,
        "80% get / 15% update / 5% delete+create, uniform keys, {ops} ops per thread; modes interleaved, \
         {mixed_rounds} rounds.\n"
    );
    let _ = writeln!(
        md,
        "| mode | Mops/s | vs in memory (median of per-round ratios) |\n|---|---|---|"
    );
    for (i, (name, _)) in modes.iter().enumerate() {
        // Each round's ratio pairs runs made back to back, which the
        // machine's drift between rounds does not skew.
        let mut ratios: Vec<f64> = results[i].iter().zip(&results[0]).map(|(r, m)| r / m).collect();
        let (rm, rlo, rhi) = median(&mut ratios);
        let (m, lo, hi) = median(&mut results[i]);
        let _ = writeln!(
            md,
            "| {name} | {m:.2} [{lo:.2}-{hi:.2}] | {rm:.2}x [{rlo:.2}-{rhi:.2}] |"
        );
    }
    let _ = writeln!(
        md,
        "\nTarget: `Interval(1 s)` at least 0.85x in memory (issue 15).\n"
    );
    let _ = writeln!(
        md,
        "## `Always`: every create waits for its sync (group commit per shard)\n"
    );
    let _ = writeln!(
        md,
        "One `fdatasync` of a small write on this disk, alone (200 in a row, same run): \
         p50 {sync_us:.0} µs, p99 {sync_p99_us:.0} µs.\n"
    );
    let _ = writeln!(
        md,
        "Writers are OS threads calling the blocking API (each waits in its sync), or async tasks on a \
         2-thread Tokio runtime calling the `SessionStore` trait (a write's future completes when it is \
         durable; the engine's flusher threads run the syncs, every log's at once).\n"
    );
    let _ = writeln!(
        md,
        "| shards (logs) | writers | durable writes/s | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|---|---|"
    );
    for (shards, writers, tasks, a) in &always_rows {
        let kind = if *tasks { "async tasks" } else { "threads" };
        let _ = writeln!(
            md,
            "| {shards} | {writers} {kind} | {:.0} | {:.0} | {:.0} | {:.0} |",
            a.writes_per_sec, a.p50_us, a.p99_us, a.p999_us
        );
    }
    let _ = writeln!(
        md,
        "\nTarget: 64 writers at least 150,000 durable writes/s with p99 at most 2 ms, at the default shard count (issue 15).\n"
    );
    let _ = writeln!(
        md,
        "## Opening an empty data directory\n\n\
         {default_shards} shards, `Interval(1 s)`: {open_ms:.1} ms [{open_lo:.1}-{open_hi:.1}], median of 5 opens \
         (creates each shard's first segment and faults in its first 2 MiB).\n"
    );
    let _ = writeln!(
        md,
        "## Recovery and compaction of {big} sessions (200-byte metadata)\n"
    );
    let (r, rlo, rhi) = median(&mut recovery_ms);
    let _ = writeln!(
        md,
        "| measure | value |\n|---|---|\n\
         | data directory before compaction | {:.0} MiB |\n\
         | recovery (open, replay, rebuild maps and wheels) | {r:.0} ms [{rlo:.0}-{rhi:.0}] |\n\
         | compaction of every shard, one after another | {:.0} ms |\n\
         | log bytes after compaction | {:.0} MiB |\n\
         | get p99 of a concurrent reader, no compaction | {quiet_p99:.1} µs |\n\
         | get p99 of a concurrent reader, during compaction | {busy_p99:.1} µs |\n",
        log_bytes as f64 / (1 << 20) as f64,
        compaction.as_secs_f64() * 1e3,
        compacted_bytes as f64 / (1 << 20) as f64,
    );
    let _ = writeln!(md, "Target: recovery of 1M sessions within 1 s.");
    if !args.quick || args.out != concat!(env!("CARGO_MANIFEST_DIR"), "/../results/persistence.md") {
        std::fs::write(&args.out, &md).expect("write report");
        eprintln!("wrote {}", args.out);
    }
    println!("{md}");
}
