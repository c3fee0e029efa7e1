//! Where a request's latency goes at one request in flight, layer by layer:
//! the same `HMGET` of one 100-byte session on a standalone server this
//! program starts, sent by
//!
//! - `raw`: the `redis` crate's `MultiplexedConnection`, no timeout;
//! - `raw+timeout`: the same with a response timeout (a timer per request);
//! - `manager`: its `ConnectionManager` (what the store uses for one server);
//! - `store.peek`: this crate's `RedisStore::peek` (key, retry loop with its
//!   deadline, health accounting, reply parsed into a `Session`);
//! - `redis-benchmark`: the same command from its C event loop.
//!
//! Each round runs all five one after the other (the order rotates per
//! round); the table gives per-round medians of the p50 and the mean, so the
//! layers' costs show as differences measured side by side.
//!
//! ```text
//! cargo run --release -p session-redis --example client_layers -- [--ops 20000] [--rounds 7]
//! ```
//!
//! `--only CLIENT` (`raw`, `raw+timeout`, `manager` or `store.peek`) runs
//! just that client for `--ops` requests and writes nothing: the loop to
//! count under callgrind, where the store's own instructions per request
//! are the difference between `store.peek` and `manager`:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/client_layers --only store.peek --ops 100000
//! ```

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::median;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;
use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

const NAMES: [&str; 5] = ["raw", "raw+timeout", "manager", "store.peek", "redis-benchmark"];
const METADATA: &[u8; 100] = &[b'm'; 100];

struct Clients {
    raw: MultiplexedConnection,
    raw_timeout: MultiplexedConnection,
    manager: ConnectionManager,
    store: RedisStore,
    id: SessionId,
    key: String,
    port: u16,
}

/// p50 and mean latency of `ops` requests through client `which`, µs.
async fn run(c: &mut Clients, which: usize, ops: usize) -> (f64, f64) {
    if which == 4 {
        return redis_benchmark(c.port, ops, &c.key);
    }
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(&c.key).arg("m").arg("c").arg("a").arg("t");
    let mut lat: Vec<u32> = Vec::with_capacity(ops);
    for _ in 0..ops {
        let t0 = Instant::now();
        match which {
            0 => drop(c.raw.req_packed_command(&cmd).await.expect("raw")),
            1 => drop(c.raw_timeout.req_packed_command(&cmd).await.expect("raw+timeout")),
            2 => drop(c.manager.req_packed_command(&cmd).await.expect("manager")),
            _ => drop(c.store.peek(&c.id).await.expect("peek")),
        }
        lat.push(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    lat.sort_unstable();
    let mean =
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / f64::from(u32::try_from(ops).unwrap_or(u32::MAX));
    (f64::from(lat[lat.len() / 2]) / 1e3, mean / 1e3)
}

/// `redis-benchmark -c 1` for the same `HMGET`: (p50, mean) µs.
fn redis_benchmark(port: u16, ops: usize, key: &str) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            support::HOST,
            "-p",
            &port.to_string(),
            "-c",
            "1",
            "-n",
            &ops.to_string(),
            "--csv",
        ])
        .args(["HMGET", key, "m", "c", "a", "t"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .unwrap_or_else(|| panic!("redis-benchmark gave no result:\n{text}"));
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    let cols: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    (cols[3] * 1e3, cols[1] * 1e3)
}

/// CPU time, µs, from `/proc/self/stat` (100 ticks/s): this process's
/// user + system time, or with `children` that of the children it has
/// waited for (each `redis-benchmark` run; the server is still running).
fn cpu_us(children: bool) -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let (user, system) = if children { (13, 14) } else { (11, 12) };
    (ticks(user) + ticks(system)) * 10_000
}

fn main() {
    let mut ops = 20_000;
    let mut rounds = 7;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => ops = value.parse().expect("--ops N"),
            "--rounds" => rounds = value.parse().expect("--rounds N"),
            "--only" => {
                let which = NAMES[..4].iter().position(|n| *n == value);
                only = Some(which.unwrap_or_else(|| panic!("--only: one of {:?}", &NAMES[..4])));
            }
            _ => panic!("unknown flag {flag}: --ops, --rounds, --only"),
        }
    }
    support::require_redis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = support::Server::standalone();
    // (p50 µs, mean µs, client CPU µs per request) per round.
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); NAMES.len()];
    rt.block_on(async {
        let client = redis::Client::open(server.url()).expect("client");
        let timeout = Some(Duration::from_secs(1));
        let store = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix("layers:"))
            .await
            .expect("store");
        let id = store.create(METADATA, Timeout::Never).await.expect("create");
        let mut c = Clients {
            raw: client.get_multiplexed_async_connection().await.expect("raw"),
            raw_timeout: client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new().set_response_timeout(timeout),
                )
                .await
                .expect("raw+timeout"),
            manager: ConnectionManager::new_with_config(
                client.clone(),
                ConnectionManagerConfig::new().set_response_timeout(timeout),
            )
            .await
            .expect("manager"),
            store,
            id,
            key: format!("layers:{{{id}}}"),
            port: server.port,
        };
        if let Some(which) = only {
            run(&mut c, which, ops).await;
            return;
        }
        for which in 0..NAMES.len() {
            run(&mut c, which, ops / 4).await; // warm-up
        }
        for round in 0..rounds {
            for k in 0..NAMES.len() {
                let which = (k + round) % NAMES.len();
                let before = cpu_us(which == 4);
                let (p50, mean) = run(&mut c, which, ops).await;
                #[allow(clippy::cast_precision_loss)]
                let cpu = (cpu_us(which == 4) - before) as f64 / ops as f64;
                results[which].push((p50, mean, cpu));
            }
            eprintln!("round {} of {rounds} done", round + 1);
        }
    });
    if only.is_none() {
        write_report(ops, rounds, &results);
    }
}

/// `results/redis/layers.md` from (p50 µs, mean µs, client CPU µs per
/// request) per round, per client.
fn write_report(ops: usize, rounds: usize, results: &[Vec<(f64, f64, f64)>]) {
    let base_p50 = median(results[4].iter().map(|r| r.0).collect());
    let base_mean = median(results[4].iter().map(|r| r.1).collect());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Client layers at one request in flight (standalone, `HMGET` of a 100-byte session)\n\n\
         Command: `cargo run --release -p session-redis --example client_layers -- --ops {ops} --rounds {rounds}`  \n\
         Commit: `{}`; {}  \n\
         {rounds} rounds, the five clients one after the other in each (order rotating), \
         {ops} requests each; medians over rounds, min–max of the per-round p50 in brackets. \
         `redis-benchmark` reports latency in 8 µs steps, so its p50 is coarse; its mean is not.\n\n\
         Client CPU: this process's time per request, or `redis-benchmark`'s (a child process); the kernel's TCP work \
         on the client side included.\n\n\
         | client | p50 µs | mean µs | p50 vs redis-benchmark | mean vs redis-benchmark | client CPU µs/request |\n\
         | --- | --- | --- | --- | --- | --- |",
        common::output("git", &["rev-parse", "--short", "HEAD"]),
        common::machine_line(),
    );
    for (name, runs) in NAMES.iter().zip(results) {
        let p50s: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let lo = p50s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p50s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let p50 = median(p50s);
        let mean = median(runs.iter().map(|r| r.1).collect());
        let cpu = median(runs.iter().map(|r| r.2).collect());
        let _ = writeln!(
            md,
            "| {name} | {p50:.1} ({lo:.0}–{hi:.0}) | {mean:.1} | {:.2} | {:.2} | {cpu:.1} |",
            p50 / base_p50,
            mean / base_mean
        );
    }
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/redis/layers.md");
    std::fs::write(&out, md).expect("write layers.md");
    eprintln!("wrote {}", out.display());
}
