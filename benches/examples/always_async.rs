//! `Always` durability with async writers, at several shard counts side by
//! side: 64 (or TASKS) Tokio tasks (a 2-thread runtime) creating sessions of 200-byte
//! metadata through the `SessionStore` trait, each write acknowledged once
//! a sync covers it. Every round runs each shard count for the same time,
//! in an order that reverses every round; the report gives each count's
//! median writes/s and p99 over the rounds, and the median per-round ratio
//! to the first count. A fresh data directory per run, in the system's temp
//! dir.
//!
//! `cargo run --release -p session-engine-benches --example always_async -- [ROUNDS] [SHARDS,...] [SECONDS] [TASKS]`
//! (defaults: 7 rounds; the default shard count, 2 and 1; 2 s a run; 64
//! tasks). A shard count written with `fs` after it (`8fs`) runs with
//! `SyncScope::FileSystem` (one `syncfs` per round for every log), so
//! `-- 7 8,8fs,1` compares the scopes side by side.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use session_engine::{Config, Durability, Engine, SessionStore, SyncScope, Timeout};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes/s and p99 (µs) of one run.
fn run(dir: &std::path::Path, logs: Logs, tasks: usize, length: Duration) -> (f64, f64) {
    let engine = Arc::new(
        Engine::open(
            Config::default()
                .shards(logs.shards)
                .data_dir(dir)
                .durability(Durability::Always)
                .sync_scope(logs.scope)
                .segment_size_bytes(8 << 20),
        )
        .expect("open engine"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let hist = runtime.block_on(async {
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let (engine, stop, total) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&total));
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
                    let meta = [0x5A_u8; 200];
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        SessionStore::create(&*engine, &meta, Timeout::from_secs(1800))
                            .await
                            .expect("create");
                        h.saturating_record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    h
                })
            })
            .collect();
        tokio::time::sleep(length).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
        for t in tasks {
            all.add(t.await.expect("task")).expect("same bounds");
        }
        all
    });
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = total.load(Ordering::Relaxed) as f64 / secs;
    #[allow(clippy::cast_precision_loss)]
    let p99 = hist.value_at_quantile(0.99) as f64 / 1e3;
    (rate, p99)
}

/// A contender: a shard count and how a round syncs its logs.
#[derive(Clone, Copy)]
struct Logs {
    shards: usize,
    scope: SyncScope,
}

impl std::str::FromStr for Logs {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, scope) = match s.strip_suffix("fs") {
            Some(count) => (count, SyncScope::FileSystem),
            None => (s, SyncScope::Logs),
        };
        Ok(Self {
            shards: count.parse()?,
            scope,
        })
    }
}

impl std::fmt::Display for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scope {
            SyncScope::FileSystem => write!(f, "{} (syncfs)", self.shards),
            _ => write!(f, "{}", self.shards),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(7, |a| a.parse().expect("ROUNDS"));
    let default_shards = Engine::open(Config::default()).expect("open").shard_count();
    let shards: Vec<Logs> = args.next().map_or_else(
        || {
            [default_shards, 2, 1]
                .map(|shards| Logs {
                    shards,
                    scope: SyncScope::Logs,
                })
                .to_vec()
        },
        |a| {
            a.split(',')
                .map(|s| s.parse().expect("SHARDS (a count, or a count then fs)"))
                .collect()
        },
    );
    let length = Duration::from_secs_f64(args.next().map_or(2.0, |a| a.parse().expect("SECONDS")));
    let tasks: usize = args.next().map_or(64, |a| a.parse().expect("TASKS"));
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut rates = vec![Vec::new(); shards.len()];
    let mut p99s = vec![Vec::new(); shards.len()];
    let mut ratios = vec![Vec::new(); shards.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..shards.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut this = vec![0.0; shards.len()];
        for i in order {
            let dir = scratch.path().join(format!("r{round}-c{i}"));
            let (rate, p99) = run(&dir, shards[i], tasks, length);
            eprintln!(
                "round {round} shards {}: {rate:.0} writes/s p99 {p99:.0} us",
                shards[i]
            );
            this[i] = rate;
            rates[i].push(rate);
            p99s[i].push(p99);
            let _ = std::fs::remove_dir_all(&dir);
        }
        for i in 0..shards.len() {
            ratios[i].push(this[i] / this[0]);
        }
    }
    println!("| shards | writes/s (median) | p99 µs (median) | writes/s / first row (median of rounds) |");
    println!("| --- | --- | --- | --- |");
    for i in 0..shards.len() {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            shards[i],
            median(&mut rates[i]),
            median(&mut p99s[i]),
            median(&mut ratios[i])
        );
    }
}
