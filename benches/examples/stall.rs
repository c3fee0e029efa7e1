//! The longest single operation while the tables grow and churn: each
//! round populates `--sessions` sessions (timing every create, so the
//! table doublings show up as the worst create), then replaces random live
//! sessions `--replaces` times (delete + create, each pair timed: the
//! worst one includes the in-place rebuilds that reclaim tombstones).
//! Contenders run interleaved, round by round, single-threaded, so that
//! the figures are side by side on this noisy machine.
//!
//! `cargo run --release -p session-engine-benches --example stall -- [--rounds N]
//! [--sessions N] [--replaces N] [--shards N] [CONTENDER...]` (default: 5 rounds,
//! 100K sessions, 300K replaces, the engine's default shard count, engine and
//! dashmap). Runs with transparent huge pages off (see `main`). Besides the usual contenders, `engine-presized` and
//! `dashmap-presized` start with room for `--sessions` sessions
//! (`Config::initial_capacity`, `DashMap::with_capacity`). Prints medians
//! over rounds with [min-max].
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use dashmap::DashMap;
use session_engine::{Config, Engine, SessionId};
use session_engine_benches::{contender, Contender, Dash, Moka, METADATA_BYTES};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    rounds: usize,
    sessions: usize,
    replaces: usize,
    shards: Option<usize>,
    names: Vec<String>,
}

fn args() -> Args {
    let mut args = Args {
        rounds: 5,
        sessions: 100_000,
        replaces: 300_000,
        shards: None,
        names: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => args.rounds = number(it.next(), "--rounds"),
            "--sessions" => args.sessions = number(it.next(), "--sessions"),
            "--replaces" => args.replaces = number(it.next(), "--replaces"),
            "--shards" => args.shards = Some(number(it.next(), "--shards")),
            "--bench" => {}
            name => args.names.push(name.to_owned()),
        }
    }
    if args.names.is_empty() {
        args.names = vec!["engine".into(), "dashmap".into()];
    }
    args
}

/// One round's figures for one contender.
#[derive(Clone, Copy)]
struct Round {
    populate: Duration,
    worst_create: Duration,
    churn: Duration,
    worst_replace: Duration,
}

fn build(name: &str, args: &Args) -> Box<dyn Contender> {
    let room = 4 * args.sessions;
    match name {
        "engine" | "engine-presized" => {
            let config = Config::default().sessions_max(room);
            let config = if name == "engine-presized" {
                config.initial_capacity(args.sessions)
            } else {
                config
            };
            let config = match args.shards {
                Some(shards) => config.shards(shards),
                None => config,
            };
            Box::new(Engine::open(config).expect("open engine"))
        }
        "moka" => Box::new(Moka::new(room as u64)),
        "dashmap-presized" => Box::new(Dash(DashMap::with_capacity_and_hasher(
            args.sessions,
            ahash::RandomState::new(),
        ))),
        other => contender(other),
    }
}

fn round(c: &dyn Contender, args: &Args, seed: u64) -> Round {
    let metadata = [0xAB_u8; METADATA_BYTES];
    // Written once before the clock starts, so that the first touch of its
    // pages (2 MiB apiece with huge pages) does not land in a timed create.
    let mut ids = vec![SessionId::from_bytes([0; 16]); args.sessions];
    ids.clear();
    let mut worst_create = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..args.sessions {
        let t = Instant::now();
        ids.push(c.create(&metadata));
        worst_create = worst_create.max(t.elapsed());
    }
    let populate = start.elapsed();
    let mut x = seed | 1;
    let mut worst_replace = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..args.replaces {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % ids.len() as u64) as usize;
        let t = Instant::now();
        assert!(c.delete(&ids[k]), "a live session was missing");
        ids[k] = c.create(&metadata);
        worst_replace = worst_replace.max(t.elapsed());
    }
    Round {
        populate,
        worst_create,
        churn: start.elapsed(),
        worst_replace,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median [min-max]" of `f` over the rounds.
fn summary(rounds: &[Round], f: impl Fn(&Round) -> f64, digits: usize) -> String {
    let mut v: Vec<f64> = rounds.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let (lo, mid, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
    format!("{mid:.digits$} [{lo:.digits$}-{hi:.digits$}]")
}

fn main() {
    // 4 KiB pages: the first touch of a fresh 2 MiB huge page (the
    // allocator taking new memory) costs milliseconds on a VM, for every
    // contender alike, and hid the tables' own stalls
    // (`results/engine-stall.md`). With 4 KiB pages that cost is spread thin.
    rustix::thread::disable_transparent_huge_pages(true).expect("prctl(PR_SET_THP_DISABLE)");
    let args = args();
    assert!(
        args.rounds > 0 && args.sessions > 0,
        "need at least one round and one session"
    );
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); args.names.len()];
    for r in 0..args.rounds {
        for (i, name) in args.names.iter().enumerate() {
            let c = build(name, &args);
            results[i].push(round(&*c, &args, 0x9E37_79B9_7F4A_7C15 ^ r as u64));
        }
        eprintln!("round {}/{} done", r + 1, args.rounds);
    }
    println!(
        "{} sessions of {METADATA_BYTES} B, then {} replaces; {} rounds, median [min-max]",
        args.sessions, args.replaces, args.rounds
    );
    println!("| contender | populate ms | worst create ms | replaces ms | worst replace ms |");
    println!("|---|---|---|---|---|");
    for (name, rounds) in args.names.iter().zip(&results) {
        println!(
            "| {name} | {} | {} | {} | {} |",
            summary(rounds, |r| ms(r.populate), 1),
            summary(rounds, |r| ms(r.worst_create), 2),
            summary(rounds, |r| ms(r.churn), 1),
            summary(rounds, |r| ms(r.worst_replace), 2),
        );
    }
}
