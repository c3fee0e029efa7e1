//! The Redis backend beside `redis-benchmark`, on loopback, on servers this
//! program starts itself (one standalone server and a 6-node cluster, as the
//! tests do), plus failover recovery times.
//!
//! For each operation the backend's own command (the same script, by SHA, or
//! the same `HMGET`) is replayed by `redis-benchmark` at the same concurrency
//! against the same server, interleaved (ours, theirs, theirs, ours, ...),
//! so the ratio of the two latencies is the client's overhead: the `redis`
//! crate, this crate's retry loop and the Tokio runtime, against
//! `redis-benchmark`'s bare C event loop. Ours runs `--concurrency` tasks on
//! one thread and one multiplexed connection per server; theirs as many
//! connections with one request each in flight, on one thread for a single
//! server and one per master on the cluster (its cluster mode's own choice),
//! whose ops/s there are not reported (it ends a cluster run on a 250 ms
//! tick of its own).
//!
//! ```text
//! cargo run --release -p session-redis --example redis_bench -- \
//!     [--ops 10000] [--concurrency 1,50] [--repeats 9] [--out results/redis]
//! ```
//!
//! `--only get_many` measures instead `get_many` of 16 sessions against 16
//! `get`s in a row on the same store (one server and the cluster; the two
//! interleaved in each round, `--ops` sessions each), writing
//! `get_many.md` under `--out`:
//!
//! ```text
//! cargo run --release -p session-redis --example redis_bench -- \
//!     --only get_many [--ops 16000] [--concurrency 1,16] [--repeats 9]
//! ```
//!
//! `--only state` measures the per-session state on the standalone server
//! (one caller): `rate_limit`, `subscribe` and `unsubscribe` beside `touch`,
//! each one's commands per call (the server's `total_commands_processed`),
//! and a fan-out of 10,000 subscribers in pages of 1000, writing
//! `state.md` under `--out`:
//!
//! ```text
//! cargo run --release -p session-redis --example redis_bench -- \
//!     --only state [--ops 2000] [--repeats 9]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use session_engine::{Config, Engine, SessionId, SessionStore, Timeout};
use session_redis::{RedisConfig, RedisStore, Replication};

const NODE_TIMEOUT_MS: u64 = 1_000;
const SESSIONS: usize = 10_000;
const METADATA: &[u8; 100] = &[b'm'; 100];
const TTL_MS: u64 = 600_000;
/// The key prefix of our sessions (the store's keys are `<prefix>{<id>}`).
const PREFIX: &str = "bench:";
const FAILOVER_ROUNDS: usize = 3;

struct Args {
    ops: usize,
    concurrency: Vec<usize>,
    repeats: usize,
    out: PathBuf,
    /// `get_many`: only the batch comparison; `state`: only the
    /// per-session state.
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        ops: 10_000,
        concurrency: vec![1, 50],
        repeats: 9,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results/redis"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => args.ops = value.parse().expect("--ops N"),
            "--concurrency" => {
                args.concurrency = value
                    .split(',')
                    .map(|c| c.parse().expect("--concurrency N[,N...]"))
                    .collect();
            }
            "--repeats" => args.repeats = value.parse().expect("--repeats N"),
            "--out" => args.out = PathBuf::from(value),
            "--only" if value == "get_many" || value == "state" => args.only = Some(value),
            _ => {
                panic!(
                    "unknown flag {flag} {value}: --ops, --concurrency, --repeats, --out, --only get_many|state"
                )
            }
        }
    }
    args
}

/// One operation as both contenders run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Peek,
    Get,
    Touch,
    Create,
    /// `insert` of new ids chosen on one master (cluster, 1 in flight).
    Insert,
    Update,
}

impl Op {
    const ALL: [Op; 5] = [Op::Peek, Op::Get, Op::Touch, Op::Create, Op::Update];

    fn name(self) -> &'static str {
        match self {
            Op::Peek => "peek",
            Op::Get => "get",
            Op::Touch => "touch",
            Op::Create => "create",
            Op::Insert => "insert",
            Op::Update => "update",
        }
    }

    /// The `redis-benchmark` command lines equivalent to one operation
    /// (two for `update`, which takes two round trips: their latencies add).
    fn their_commands(self) -> Vec<Vec<String>> {
        let sha = |name| session_redis::script_source(name).expect("script").1;
        let key = "rb:{tag}:__rand_int__".to_owned();
        let meta = String::from_utf8(METADATA.to_vec()).unwrap();
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Op::Peek => vec![words(&["HMGET", &key, "m", "c", "a", "t"])],
            Op::Get => vec![words(&["EVALSHA", &sha("get"), "1", &key])],
            Op::Touch => vec![words(&["EVALSHA", &sha("touch"), "1", &key])],
            Op::Create | Op::Insert => vec![words(&[
                "EVALSHA",
                &sha("insert"),
                "1",
                "rbc:{tag}:__rand_int__",
                &meta,
                &TTL_MS.to_string(),
                "token",
                // The first version (ARGV[4]: the script fails without it).
                "1",
            ])],
            // The commit script cannot be replayed with fixed arguments (its
            // version check would fail after the first run per key and take
            // the read-only conflict branch); its replay variant does the
            // same reads and writes with the checks switched off.
            Op::Update => vec![
                words(&["HMGET", &key, "m", "v"]),
                words(&["EVALSHA", &commit_replay().1, "1", &key, "1", &meta, "token"]),
            ],
        }
    }
}

/// The commit script for `redis-benchmark` to replay with fixed arguments:
/// the backend's own text with its token and version checks made always
/// false, so every run takes the committing branch, reading and writing
/// exactly what a real commit reads and writes. Text and SHA-1.
fn commit_replay() -> (String, String) {
    let (code, _) = session_redis::script_source("commit").expect("commit script");
    let mut replay = code.clone();
    for check in ["if r[2] == ARGV[3] then", "if r[1] ~= ARGV[1] then"] {
        assert!(
            replay.contains(check),
            "commit script changed: {check:?} not in\n{code}"
        );
        replay = replay.replace(check, &check.replacen("if ", "if false and ", 1));
    }
    let sha = redis::Script::new(&replay).get_hash().to_owned();
    (replay, sha)
}

/// Latency summary of one run.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    ops_per_s: f64,
    /// Server CPU per operation (all masters), µs.
    server_cpu_us: f64,
    /// This process's CPU per operation, µs (ours only).
    client_cpu_us: Option<f64>,
}

impl Run {
    fn add(self, other: Run) -> Run {
        Run {
            p50_us: self.p50_us + other.p50_us,
            p99_us: self.p99_us + other.p99_us,
            mean_us: self.mean_us + other.mean_us,
            ops_per_s: 1.0 / (1.0 / self.ops_per_s + 1.0 / other.ops_per_s),
            server_cpu_us: self.server_cpu_us + other.server_cpu_us,
            client_cpu_us: None,
        }
    }
}

/// This process's user+system CPU, µs (from /proc/self/stat, 100 ticks/s).
fn process_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * 10_000
}

/// Summed `used_cpu_user + used_cpu_sys` of the given servers, µs.
fn servers_cpu_us(ports: &[u16]) -> f64 {
    ports
        .iter()
        .map(|p| {
            let info = support::cli(*p, &["INFO", "cpu"]);
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (field("used_cpu_user") + field("used_cpu_sys")) * 1e6
        })
        .sum()
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[i]) / 1_000.0
}

/// Runs `op` `ops` times from `concurrency` tasks on `store`.
async fn run_ours<S: SessionStore + 'static>(
    store: &Arc<S>,
    ids: &Arc<[SessionId]>,
    op: Op,
    ops: usize,
    concurrency: usize,
    server_ports: &[u16],
) -> Run {
    let left = Arc::new(AtomicUsize::new(ops));
    let cpu_before = process_cpu_us();
    let server_before = servers_cpu_us(server_ports);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (store, ids, left) = (Arc::clone(store), Arc::clone(ids), Arc::clone(&left));
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(t as u64);
            let mut lat = Vec::with_capacity(ops / concurrency + 1);
            while let Ok(n) = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)) {
                // `insert` takes each of `ids` once (they are new); the rest pick at random.
                let id = if op == Op::Insert {
                    ids[n - 1]
                } else {
                    ids[rng.random_range(0..ids.len())]
                };
                let t0 = Instant::now();
                match op {
                    Op::Peek => drop(store.peek(&id).await.expect("peek")),
                    Op::Get => drop(store.get(&id).await.expect("get")),
                    Op::Touch => store.touch(&id).await.expect("touch"),
                    Op::Create => drop(
                        store
                            .create(METADATA, Timeout::from_ms(TTL_MS))
                            .await
                            .expect("create"),
                    ),
                    Op::Insert => store
                        .insert(id, METADATA, Timeout::from_ms(TTL_MS))
                        .await
                        .expect("insert"),
                    Op::Update => drop(store.update(&id, <[u8]>::to_vec).await.expect("update")),
                }
                lat.push(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
            }
            lat
        });
    }
    let mut all = Vec::with_capacity(ops);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("bench task"));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_us = process_cpu_us().saturating_sub(cpu_before);
    let server_us = servers_cpu_us(server_ports) - server_before;
    all.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let n = all.len() as f64;
    #[allow(clippy::cast_precision_loss)]
    Run {
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        mean_us: all.iter().map(|&x| f64::from(x)).sum::<f64>() / n / 1_000.0,
        ops_per_s: n / wall,
        server_cpu_us: server_us / n,
        client_cpu_us: Some(cpu_us as f64 / n),
    }
}

/// `redis-benchmark` for the commands of `op` (summed for two).
fn run_theirs(op: Op, port: u16, cluster: bool, ops: usize, concurrency: usize, server_ports: &[u16]) -> Run {
    let runs: Vec<Run> = op
        .their_commands()
        .into_iter()
        .map(|words| {
            let range = if matches!(op, Op::Create | Op::Insert) {
                1_000_000_000
            } else {
                SESSIONS
            };
            let before = servers_cpu_us(server_ports);
            let line = redis_benchmark(port, cluster, ops, concurrency, range, &words);
            let server_us = servers_cpu_us(server_ports) - before;
            let cols: Vec<f64> = line
                .split("\",\"")
                .skip(1)
                .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
                .collect();
            #[allow(clippy::cast_precision_loss)]
            Run {
                // In cluster mode redis-benchmark runs a thread per master
                // and ends a run on a 250 ms tick of its own: its cluster
                // rate is the same whatever the command (`results/redis/
                // bench.md` says so). Not reported there.
                ops_per_s: if cluster { f64::NAN } else { cols[0] },
                mean_us: cols[1] * 1_000.0,
                p50_us: cols[3] * 1_000.0,
                p99_us: cols[5] * 1_000.0,
                server_cpu_us: server_us / ops as f64,
                client_cpu_us: None,
            }
        })
        .collect();
    runs.into_iter().reduce(Run::add).expect("one command at least")
}

/// One `redis-benchmark --csv` run; returns its result line.
fn redis_benchmark(
    port: u16,
    cluster: bool,
    ops: usize,
    concurrency: usize,
    range: usize,
    words: &[String],
) -> String {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", support::HOST, "-p", &port.to_string()]);
    if cluster {
        cmd.arg("--cluster");
    }
    cmd.args([
        "-c",
        &concurrency.to_string(),
        "-n",
        &ops.to_string(),
        "-r",
        &range.to_string(),
        "--csv",
    ])
    .args(words)
    .stdin(Stdio::null());
    let out = cmd.output().expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .unwrap_or_else(|| panic!("redis-benchmark gave no result for {words:?}:\n{text}"))
        .to_owned()
}

/// Thousands of `ops_per_s` to one decimal, or `missing` where not
/// measured (NaN).
fn kops_text(ops_per_s: f64, missing: &str) -> String {
    if ops_per_s.is_nan() {
        missing.to_owned()
    } else {
        format!("{:.1}", ops_per_s / 1_000.0)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0}–{:.0}", min, max)
}

struct Deployment {
    name: &'static str,
    /// The port redis-benchmark connects to.
    port: u16,
    cluster: bool,
    masters: Vec<u16>,
    nodes: Vec<u16>,
    config: RedisConfig,
}

/// Fills the keyspaces both contenders read, and loads the scripts for
/// `redis-benchmark`'s `EVALSHA`.
fn prepare_theirs(d: &Deployment) {
    let mut codes: Vec<String> = ["insert", "get", "touch", "commit"]
        .iter()
        .map(|name| session_redis::script_source(name).unwrap().0)
        .collect();
    codes.push(commit_replay().0);
    for code in &codes {
        for port in &d.nodes {
            support::cli(*port, &["SCRIPT", "LOAD", code]);
        }
    }
    let meta = String::from_utf8(METADATA.to_vec()).unwrap();
    // Live sessions, as ours are: created and last used now by the
    // server's clock. (Stamped 1 ms past 1970, every record was expired to
    // the scripts, which deleted it at their first call and from then on
    // answered "absent" after one HMGET: theirs replayed an early return
    // against our full work.) A day's timeout outlives the bench; the
    // timeout's value costs nothing.
    let now = server_ms(d.port).to_string();
    let words: Vec<String> = [
        "HSET",
        "rb:{tag}:__rand_int__",
        "m",
        &meta,
        "c",
        &now,
        "a",
        &now,
        "t",
        "86400000",
        "v",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    redis_benchmark(d.port, d.cluster, SESSIONS * 8, 50, SESSIONS, &words);
}

/// The server's clock (`TIME`), in ms.
fn server_ms(port: u16) -> u64 {
    let time = support::cli(port, &["TIME"]);
    let mut parts = time
        .split_whitespace()
        .map(|p| p.parse::<u64>().expect("TIME answers numbers"));
    let (secs, micros) = (
        parts.next().expect("seconds"),
        parts.next().expect("microseconds"),
    );
    secs * 1_000 + micros / 1_000
}

/// The master that `redis-benchmark` with one connection loads: the one
/// whose CPU time grows most during a short run.
fn master_of_theirs(d: &Deployment) -> u16 {
    let before: Vec<f64> = d.masters.iter().map(|p| servers_cpu_us(&[*p])).collect();
    redis_benchmark(
        d.port,
        d.cluster,
        5_000,
        1,
        SESSIONS,
        &Op::Get.their_commands()[0],
    );
    let grew = d
        .masters
        .iter()
        .zip(before)
        .map(|(p, b)| (*p, servers_cpu_us(&[*p]) - b));
    grew.max_by(|a, b| a.1.total_cmp(&b.1)).expect("a master").0
}

/// The sessions of `ids` stored on the server at `port` (`SCAN` there).
fn sessions_on(port: u16, ids: &[SessionId]) -> Vec<SessionId> {
    let wanted: std::collections::HashSet<SessionId> = ids.iter().copied().collect();
    let keys = support::cli(port, &["--scan", "--pattern", &format!("{PREFIX}{{*}}")]);
    let found: Vec<SessionId> = keys
        .lines()
        .filter_map(|k| {
            k.trim()
                .strip_prefix(PREFIX)?
                .strip_prefix('{')?
                .strip_suffix('}')?
                .parse()
                .ok()
        })
        .filter(|id| wanted.contains(id))
        .collect();
    assert!(!found.is_empty(), "no bench session on the master at port {port}");
    found
}

/// The hash slots of `ids`' keys.
fn slots_of(ids: &[SessionId]) -> std::collections::HashSet<u16> {
    ids.iter()
        .map(|id| session_redis::key_slot(PREFIX, id).expect("valid prefix"))
        .collect()
}

/// `n` new random ids whose keys fall in `slots`.
fn new_ids_in(slots: &std::collections::HashSet<u16>, n: usize) -> Arc<[SessionId]> {
    std::iter::repeat_with(|| SessionId::random().expect("OS random"))
        .filter(|id| slots.contains(&session_redis::key_slot(PREFIX, id).expect("valid prefix")))
        .take(n)
        .collect()
}

#[derive(Default)]
struct Row {
    ours: Vec<Run>,
    theirs: Vec<Run>,
}

async fn compare(d: &Deployment, args: &Args, out: &mut String, json: &mut Vec<String>) {
    for &concurrency in &args.concurrency {
        compare_at(d, args, concurrency, out, json).await;
    }
}

async fn compare_at(
    d: &Deployment,
    args: &Args,
    concurrency: usize,
    out: &mut String,
    json: &mut Vec<String>,
) {
    let store = Arc::new(RedisStore::connect(d.config.clone()).await.expect("connect"));
    let mut ids = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        ids.push(
            store
                .create(METADATA, Timeout::from_ms(TTL_MS))
                .await
                .expect("populate"),
        );
    }
    prepare_theirs(d);
    // With one connection, redis-benchmark in cluster mode loads one master:
    // each of its connections serves one node, `{tag}` in its keys becoming
    // a hash tag of that node's slots. Ours then reads the sessions on that
    // master, so both keep the same master and replica busy. (With more
    // connections theirs spread over every master, as ours do.)
    let mut note = String::new();
    let mut ops = Op::ALL.to_vec();
    let mut master_slots = None;
    if d.cluster && concurrency == 1 {
        let master = master_of_theirs(d);
        let total = ids.len();
        ids = sessions_on(master, &ids);
        master_slots = Some(slots_of(&ids));
        ops.insert(4, Op::Insert);
        let _ = write!(
            note,
            "Sessions read: the {} of {total} on the master at port {master}, the one redis-benchmark's connection uses. \
             `create` makes new sessions on every master for ours (random ids), on that one master for theirs; \
             `insert` (the same script as `create`) stores new ids chosen on that master.\n\n",
            ids.len()
        );
    }
    let ids: Arc<[SessionId]> = ids.into();
    // Warm up both (connections, script caches, allocator).
    run_ours(&store, &ids, Op::Get, args.ops / 4, concurrency, &d.masters).await;
    let mut rows: Vec<(Op, Row)> = ops.iter().map(|op| (*op, Row::default())).collect();
    for rep in 0..args.repeats {
        for (op, row) in &mut rows {
            let ids = match (*op, &master_slots) {
                (Op::Insert, Some(slots)) => new_ids_in(slots, args.ops),
                _ => Arc::clone(&ids),
            };
            let ours_first = rep % 2 == 0;
            // Blocks the runtime's one thread while redis-benchmark runs:
            // nothing of ours is in flight then.
            let theirs = || run_theirs(*op, d.port, d.cluster, args.ops, concurrency, &d.masters);
            if ours_first {
                row.ours
                    .push(run_ours(&store, &ids, *op, args.ops, concurrency, &d.masters).await);
                row.theirs.push(theirs());
            } else {
                row.theirs.push(theirs());
                row.ours
                    .push(run_ours(&store, &ids, *op, args.ops, concurrency, &d.masters).await);
            }
        }
    }
    let heading = format!(
        "{} ({} ops per run, {} in flight, {} runs each, interleaved)",
        d.name, args.ops, concurrency, args.repeats
    );
    write_rows(&heading, &note, d.name, concurrency, &rows, out, json);
}

/// The table of one deployment and concurrency, and its JSON lines.
fn write_rows(
    heading: &str,
    note: &str,
    deployment: &str,
    concurrency: usize,
    rows: &[(Op, Row)],
    out: &mut String,
    json: &mut Vec<String>,
) {
    let _ = writeln!(out, "\n### {heading}\n");
    out.push_str(note);
    let _ = writeln!(
        out,
        "| op | ours p50 µs | redis-benchmark p50 µs | p50 ratio | ours mean µs | theirs mean µs | mean ratio | ours p99 µs | theirs p99 µs | ours kops/s | theirs kops/s | server CPU µs/op ours / theirs | our client CPU µs/op |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (op, row) in rows {
        let pick = |runs: &[Run], f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let (o50, t50) = (pick(&row.ours, |r| r.p50_us), pick(&row.theirs, |r| r.p50_us));
        let (omean, tmean) = (pick(&row.ours, |r| r.mean_us), pick(&row.theirs, |r| r.mean_us));
        let (o99, t99) = (pick(&row.ours, |r| r.p99_us), pick(&row.theirs, |r| r.p99_us));
        let ratio50: Vec<f64> = o50.iter().zip(&t50).map(|(o, t)| o / t).collect();
        let ratio_mean: Vec<f64> = omean.iter().zip(&tmean).map(|(o, t)| o / t).collect();
        let label = if *op == Op::Update {
            "update (2 round trips; theirs: HMGET + the commit script's replay, summed)"
        } else {
            op.name()
        };
        let _ = writeln!(
            out,
            "| {label} | {:.0} ({}) | {:.0} ({}) | **{:.2}** ({:.2}–{:.2}) | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {} | {:.1} / {:.1} | {:.1} |",
            median(o50.clone()),
            spread(&o50),
            median(t50.clone()),
            spread(&t50),
            median(ratio50.clone()),
            ratio50.iter().copied().fold(f64::INFINITY, f64::min),
            ratio50.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median(omean.clone()),
            median(tmean.clone()),
            median(ratio_mean.clone()),
            median(o99),
            median(t99),
            median(pick(&row.ours, |r| r.ops_per_s)) / 1_000.0,
            kops_text(median(pick(&row.theirs, |r| r.ops_per_s)), "n/a"),
            median(pick(&row.ours, |r| r.server_cpu_us)),
            median(pick(&row.theirs, |r| r.server_cpu_us)),
            median(pick(&row.ours, |r| r.client_cpu_us.unwrap_or(f64::NAN))),
        );
        json.push(format!(
            "{{\"deployment\":\"{}\",\"concurrency\":{concurrency},\"op\":\"{}\",\"ours_p50_us\":{:.1},\"theirs_p50_us\":{:.1},\"p50_ratio\":{:.3},\"mean_ratio\":{:.3},\"ours_kops\":{:.1},\"theirs_kops\":{}}}",
            deployment,
            op.name(),
            median(o50),
            median(t50),
            median(ratio50),
            median(ratio_mean),
            median(pick(&row.ours, |r| r.ops_per_s)) / 1_000.0,
            kops_text(median(pick(&row.theirs, |r| r.ops_per_s)), "null"),
        ));
    }
}

/// The embedded engine and the cluster with and without WAIT, same ops.
async fn beside(cluster_config: &RedisConfig, args: &Args, masters: &[u16], out: &mut String) {
    let concurrency = *args.concurrency.last().expect("a concurrency");
    let engine = Arc::new(Engine::open(Config::default()).expect("engine"));
    let mut ids = Vec::new();
    for _ in 0..SESSIONS {
        ids.push(
            engine
                .create(METADATA, Timeout::from_ms(TTL_MS))
                .expect("populate engine"),
        );
    }
    let ids: Arc<[SessionId]> = ids.into();
    let waiting = Arc::new(
        RedisStore::connect(cluster_config.clone().replication(Replication::Wait {
            replicas: 1,
            timeout: Duration::from_millis(100),
        }))
        .await
        .expect("connect"),
    );
    let mut wids = Vec::new();
    for _ in 0..SESSIONS / 4 {
        wids.push(
            waiting
                .create(METADATA, Timeout::from_ms(TTL_MS))
                .await
                .expect("populate"),
        );
    }
    let wids: Arc<[SessionId]> = wids.into();
    let _ = writeln!(
        out,
        "\n### Beside the embedded engine, and the cost of `WAIT 1` (cluster), same harness, {concurrency} in flight: p50 µs (ops/s)\n"
    );
    let _ = writeln!(
        out,
        "| op | embedded engine | cluster, `Replication::Wait {{ replicas: 1 }}` |"
    );
    let _ = writeln!(out, "| --- | --- | --- |");
    for op in [Op::Get, Op::Create, Op::Update] {
        let e = run_ours(&engine, &ids, op, args.ops, concurrency, &[]).await;
        let w = run_ours(&waiting, &wids, op, args.ops / 4, concurrency, masters).await;
        let _ = writeln!(
            out,
            "| {} | {:.2} ({:.0}) | {:.0} ({:.0}) |",
            op.name(),
            e.p50_us,
            e.ops_per_s,
            w.p50_us,
            w.ops_per_s
        );
    }
}

/// Kills the master of each shard in turn (restarting it after), timing how
/// long until the same store object reads and writes a session there again.
fn failovers(cluster: &mut support::Cluster, rt: &tokio::runtime::Runtime, out: &mut String) -> Vec<f64> {
    let config = RedisConfig::cluster(cluster.urls())
        .key_prefix("bench-failover:")
        .replication(Replication::Async);
    let store = rt.block_on(RedisStore::connect(config)).expect("connect");
    let ids: Vec<SessionId> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..300 {
            v.push(store.create(b"0", Timeout::from_secs(600)).await.expect("create"));
        }
        v
    });
    let _ = writeln!(
        out,
        "\n### Failover recovery (6-node cluster, node timeout {NODE_TIMEOUT_MS} ms; target: node timeout + 3 s = {} ms)\n",
        NODE_TIMEOUT_MS + 3_000
    );
    let _ = writeln!(
        out,
        "| round | replica promoted after ms | store serving the shard again after ms | client rebuilds |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let mut recovered_ms = Vec::new();
    for round in 0..FAILOVER_ROUNDS {
        cluster.wait_healthy(Duration::from_secs(30));
        let firsts = cluster.first_slots();
        let slot = firsts[round % firsts.len()];
        let victim = cluster.master_of(slot).expect("master");
        let probe = *ids
            .iter()
            .find(|id| {
                let s: u32 = cluster.nodes[victim]
                    .cli(&["CLUSTER", "KEYSLOT", &store.key(id)])
                    .trim()
                    .parse()
                    .unwrap();
                firsts.iter().rev().find(|f| **f <= s) == Some(&slot)
            })
            .expect("probe on the victim's shard");
        let killed = Instant::now();
        cluster.nodes[victim].kill9();
        let (promoted, recovered) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| cluster.wait_promoted(slot, victim, Duration::from_secs(30)));
            let recovered = rt.block_on(async {
                loop {
                    let ok =
                        store.get(&probe).await.is_ok() && store.update(&probe, <[u8]>::to_vec).await.is_ok();
                    if ok {
                        return killed.elapsed();
                    }
                    assert!(killed.elapsed() < Duration::from_secs(30), "no recovery");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            (watcher.join().expect("watcher"), recovered)
        });
        cluster.nodes[victim].restart();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            round + 1,
            promoted.as_millis(),
            recovered.as_millis(),
            store.stats().client_rebuilds
        );
        #[allow(clippy::cast_precision_loss)]
        recovered_ms.push(recovered.as_millis() as f64);
    }
    cluster.wait_healthy(Duration::from_secs(30));
    recovered_ms
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Sessions one `get_many` reads, against as many `get`s in a row.
const BATCH: usize = 16;

/// CPU time of the calling thread so far, ns (`/proc/thread-self/schedstat`:
/// exact, where `/proc/self/stat` counts 10 ms ticks). The client runs on
/// one current-thread runtime, so this is all of its CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The machine's load averages (1, 5 and 15 minutes), to show how busy it was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `tasks` callers on `store`, each reading batches of [`BATCH`] random ids
/// from `ids` (with `get_many`, or `get` one after another) until
/// `sessions` sessions are read in all. Latency is per batch; rates and CPU
/// per session.
async fn run_batches(
    store: &Arc<RedisStore>,
    ids: &Arc<[SessionId]>,
    many: bool,
    sessions: usize,
    tasks: usize,
    server_ports: &[u16],
) -> Run {
    let left = Arc::new(AtomicUsize::new(sessions / BATCH));
    let cpu_before = thread_cpu_ns();
    let server_before = servers_cpu_us(server_ports);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (store, ids, left) = (Arc::clone(store), Arc::clone(ids), Arc::clone(&left));
        set.spawn(async move {
            let mut rng = StdRng::seed_from_u64(1_000 + t as u64);
            let mut lat = Vec::new();
            let mut batch = [SessionId::from_bytes([0; 16]); BATCH];
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                for id in &mut batch {
                    *id = ids[rng.random_range(0..ids.len())];
                }
                let t0 = Instant::now();
                if many {
                    for r in store.get_many(&batch).await {
                        drop(r.expect("get_many"));
                    }
                } else {
                    for id in &batch {
                        drop(store.get(id).await.expect("get"));
                    }
                }
                lat.push(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.extend(done.expect("bench task"));
    }
    let wall = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let cpu_us = thread_cpu_ns().saturating_sub(cpu_before) as f64 / 1_000.0;
    let server_us = servers_cpu_us(server_ports) - server_before;
    all.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let read = (all.len() * BATCH) as f64;
    #[allow(clippy::cast_precision_loss)]
    Run {
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        mean_us: all.iter().map(|&x| f64::from(x)).sum::<f64>() / all.len() as f64 / 1_000.0,
        ops_per_s: read / wall,
        server_cpu_us: server_us / read,
        client_cpu_us: Some(cpu_us / read),
    }
}

/// `get_many` of [`BATCH`] against as many `get`s, on one deployment: the
/// two in turn within each round (the order alternating), `--ops` sessions
/// each; a table row per concurrency.
async fn compare_get_many(d: &Deployment, args: &Args, out: &mut String) {
    let store = Arc::new(RedisStore::connect(d.config.clone()).await.expect("connect"));
    let mut ids = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        ids.push(
            store
                .create(METADATA, Timeout::from_ms(TTL_MS))
                .await
                .expect("populate"),
        );
    }
    let ids: Arc<[SessionId]> = ids.into();
    for &tasks in &args.concurrency {
        // Warm up both paths (connections, script caches, allocator).
        for many in [false, true] {
            run_batches(&store, &ids, many, args.ops / 4, tasks, &d.masters).await;
        }
        let (mut gets, mut manys) = (Vec::new(), Vec::new());
        for rep in 0..args.repeats {
            for many in [rep % 2 == 1, rep % 2 == 0] {
                let run = run_batches(&store, &ids, many, args.ops, tasks, &d.masters).await;
                if many {
                    manys.push(run);
                } else {
                    gets.push(run);
                }
            }
        }
        let pick = |runs: &[Run], f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let (g_rate, m_rate) = (pick(&gets, |r| r.ops_per_s), pick(&manys, |r| r.ops_per_s));
        let ratio: Vec<f64> = m_rate.iter().zip(&g_rate).map(|(m, g)| m / g).collect();
        let cpu = |runs: &[Run]| median(pick(runs, |r| r.client_cpu_us.unwrap_or(f64::NAN)));
        let _ = writeln!(
            out,
            "| {} | {tasks} | {:.1} ({}) | {:.1} ({}) | **{:.2}** ({:.2}–{:.2}) | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} |",
            d.name,
            median(g_rate.clone()) / 1_000.0,
            spread_k(&g_rate),
            median(m_rate.clone()) / 1_000.0,
            spread_k(&m_rate),
            median(ratio.clone()),
            ratio.iter().copied().fold(f64::INFINITY, f64::min),
            ratio.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median(pick(&gets, |r| r.p50_us)),
            median(pick(&manys, |r| r.p50_us)),
            median(pick(&gets, |r| r.p99_us)),
            median(pick(&manys, |r| r.p99_us)),
            cpu(&gets),
            cpu(&manys),
            median(pick(&gets, |r| r.server_cpu_us)),
            median(pick(&manys, |r| r.server_cpu_us)),
        );
    }
}

/// "min–max" of rates, in thousands.
fn spread_k(v: &[f64]) -> String {
    let k: Vec<f64> = v.iter().map(|x| x / 1_000.0).collect();
    let min = k.iter().copied().fold(f64::INFINITY, f64::min);
    let max = k.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.1}–{max:.1}")
}

/// `--only get_many`: the batch comparison on both deployments, to
/// `get_many.md`.
fn get_many_main(args: &Args, rt: &tokio::runtime::Runtime, deployments: &[Deployment], version: &str) {
    let started = Instant::now();
    let load_before = load_average();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| deployment | callers | 16 gets: k sessions/s | get_many of 16: k sessions/s | get_many / gets | p50 per 16 µs, gets / get_many | p99 per 16 µs | client CPU µs per session | server CPU µs per session |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for d in deployments {
        eprintln!("get_many on {} ...", d.name);
        rt.block_on(compare_get_many(d, args, &mut out));
    }
    let text = format!(
        "# Redis backend: `get_many` of {BATCH} against {BATCH} `get`s in a row\n\n\
         Command: `cargo run --release -p session-redis --example redis_bench -- --only get_many --ops {} --concurrency {} --repeats {}`  \n\
         {}  \n\
         Each caller reads batches of {BATCH} random sessions of {SESSIONS} (100-byte metadata) on one store: \
         with `get_many` (one pipeline of the `get` script per master, the masters at the same time) or with \
         {BATCH} `get`s one after another; {} sessions per run, the two in turn within each of {} rounds \
         (the order alternating). Rates and the ratio are medians over the rounds (min–max in brackets; the \
         ratio is paired per round); latency is per batch of {BATCH}. Client: one current-thread Tokio \
         runtime (its CPU from `/proc/thread-self/schedstat`); server CPU from the masters' `INFO cpu`. \
         Load average before / after: {} / {}. Wall time {:.0} s.\n\n",
        args.ops,
        args.concurrency.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        args.repeats,
        machine_line(version),
        args.ops,
        args.repeats,
        load_before,
        load_average(),
        started.elapsed().as_secs_f64()
    );
    let text = format!("{text}{out}");
    println!("{text}");
    std::fs::create_dir_all(&args.out).expect("create --out");
    std::fs::write(args.out.join("get_many.md"), &text).expect("write get_many.md");
    eprintln!("wrote {}", args.out.join("get_many.md").display());
}

/// "Date: ...; machine: ..." for a results file.
fn machine_line(version: &str) -> String {
    let date_text = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let dirty = Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--", "redis-backend", "engine"])
        .status()
        .is_ok_and(|s| !s.success());
    format!(
        "Commit: `{commit}`{}; date: {}; machine: {} cores ({}), shared (other work ran beside it); {}",
        if dirty { " (with uncommitted changes)" } else { "" },
        date_text,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model(),
        version.trim(),
    )
}

/// The full comparison: every operation beside `redis-benchmark`, the
/// embedded engine and `WAIT`, failovers; to `bench.md` and `bench.json`.
fn bench_main(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    deployments: &[Deployment],
    cluster: &mut support::Cluster,
    version: &str,
) {
    let mut out = String::new();
    let mut json = Vec::new();
    let started = Instant::now();
    for d in deployments {
        eprintln!("comparing on {} ...", d.name);
        rt.block_on(compare(d, args, &mut out, &mut json));
    }
    eprintln!("embedded engine and WAIT ...");
    rt.block_on(beside(
        &deployments[1].config,
        args,
        &deployments[1].masters,
        &mut out,
    ));
    eprintln!("failovers ...");
    let recovered = failovers(cluster, rt, &mut out);
    let date = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = format!(
        "# Redis backend beside redis-benchmark\n\n\
         Command: `cargo run --release -p session-redis --example redis_bench -- --ops {} --concurrency {} --repeats {}`  \n\
         {}  \n\
         Servers: started by the bench on 127.0.0.1 (no persistence); client: a current-thread Tokio runtime, \
         `redis-benchmark`: one thread on a single server, one per master on the cluster (its cluster mode's choice; \
         its ops/s there are not reported: it ends a cluster run on a 250 ms tick of its own, and read 37.6-39.8K/s whatever the command). \
         Ratio = ours / redis-benchmark for the same command at the same concurrency \
         (target <= 1.30). Medians of {} interleaved runs, min–max in brackets. Wall time {:.0} s.\n",
        args.ops,
        args.concurrency.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        args.repeats,
        machine_line(version),
        args.repeats,
        started.elapsed().as_secs_f64()
    );
    let text = format!("{header}{out}");
    println!("{text}");
    std::fs::create_dir_all(&args.out).expect("create --out");
    std::fs::write(args.out.join("bench.md"), &text).expect("write bench.md");
    let json_text = format!(
        "{{\"date_unix_s\":{date},\"ops\":{},\"concurrency\":{:?},\"repeats\":{},\"comparisons\":[{}],\"failover_recovered_ms\":{:?},\"failover_target_ms\":{}}}\n",
        args.ops,
        args.concurrency,
        args.repeats,
        json.join(","),
        recovered,
        NODE_TIMEOUT_MS + 3_000
    );
    std::fs::write(args.out.join("bench.json"), json_text).expect("write bench.json");
    eprintln!("wrote {}", args.out.join("bench.md").display());
}

fn main() {
    let args = parse_args();
    support::require_redis();
    assert!(
        Command::new("redis-benchmark").arg("--version").output().is_ok(),
        "redis-benchmark missing: bash scripts/ensure-redis.sh"
    );
    // One thread runs the client tasks and the connections, as
    // redis-benchmark runs on one thread (one per master on the cluster); the servers get the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let standalone = support::Server::standalone();
    let mut cluster = support::Cluster::start(NODE_TIMEOUT_MS);
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .expect("version")
        .stdout;
    let version = String::from_utf8_lossy(&version).into_owned();
    let deployments = [
        Deployment {
            name: "standalone",
            port: standalone.port,
            cluster: false,
            masters: vec![standalone.port],
            nodes: vec![standalone.port],
            config: RedisConfig::standalone(standalone.url()).key_prefix(PREFIX),
        },
        Deployment {
            name: "cluster (3 masters + 3 replicas)",
            port: cluster.nodes[0].port,
            cluster: true,
            masters: cluster
                .node_lines()
                .iter()
                .filter(|l| l.is_master())
                .map(|l| l.port)
                .collect(),
            nodes: cluster.nodes.iter().map(|n| n.port).collect(),
            config: RedisConfig::cluster(cluster.urls())
                .key_prefix(PREFIX)
                .replication(Replication::Async),
        },
    ];
    if args.only.as_deref() == Some("state") {
        state_main(&args, &rt, &deployments[0], &version);
    } else if args.only.is_some() {
        get_many_main(&args, &rt, &deployments, &version);
    } else {
        bench_main(&args, &rt, &deployments, &mut cluster, &version);
    }
}

/// Subscribers of the fan-out topic in `--only state`.
const FAN_OUT: usize = 10_000;

/// The page size of the fan-out in `--only state`.
const FAN_OUT_PAGE: usize = 1_000;

/// Calls of the proxy counted per operation in `--only state`.
const COUNTED_CALLS: usize = 200;

/// One state operation of `--only state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateOp {
    Touch,
    RateLimit,
    Subscribe,
    Unsubscribe,
}

impl StateOp {
    const ALL: [StateOp; 4] = [
        StateOp::Touch,
        StateOp::RateLimit,
        StateOp::Subscribe,
        StateOp::Unsubscribe,
    ];

    fn name(self) -> &'static str {
        match self {
            StateOp::Touch => "`touch`",
            StateOp::RateLimit => "`rate_limit` (allowed)",
            StateOp::Subscribe => "`subscribe` (new topic)",
            StateOp::Unsubscribe => "`unsubscribe`",
        }
    }
}

/// Runs `op` once on each of `ids` in a row (topic `round`'s): sorted
/// latencies (ns).
async fn run_state_op(store: &RedisStore, op: StateOp, ids: &[SessionId], round: usize) -> Vec<u32> {
    use session_engine::Bucket;
    let bucket = Bucket {
        capacity: 1_000_000,
        refill_per_sec: 1_000,
    };
    let topic = format!("bench/topic/{round}");
    let mut latencies = Vec::with_capacity(ids.len());
    for id in ids {
        let started = Instant::now();
        match op {
            StateOp::Touch => store.touch(id).await.expect("touch"),
            StateOp::RateLimit => {
                store.rate_limit(id, bucket, 1).await.expect("rate_limit");
            }
            StateOp::Subscribe => {
                assert!(store.subscribe(id, &topic).await.expect("subscribe"));
            }
            StateOp::Unsubscribe => {
                assert!(store.unsubscribe(id, &topic).await.expect("unsubscribe"));
            }
        }
        latencies.push(u32::try_from(started.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    latencies.sort_unstable();
    latencies
}

/// Requests per call of each [`StateOp`], counted at a proxy in front of
/// the server (a pipeline sent in one write is one request), and per
/// whole listing of `topic`'s fan-out.
async fn count_requests(port: u16, topic: &str, limit: usize) -> ([f64; 4], u64) {
    use session_engine::TopicCursor;
    let proxy = support::proxy::Proxy::start(port).await;
    let store = RedisStore::connect(RedisConfig::standalone(proxy.url()).key_prefix("bench-state:"))
        .await
        .expect("connect through the proxy");
    let ttl = Timeout::from_ms(TTL_MS);
    let mut ids = Vec::with_capacity(COUNTED_CALLS);
    for _ in 0..COUNTED_CALLS {
        ids.push(store.create(METADATA, ttl).await.expect("create"));
    }
    let mut per_call = [0.0; 4];
    for (i, op) in StateOp::ALL.iter().enumerate() {
        let before = proxy.client_reads();
        run_state_op(&store, *op, &ids, 0).await;
        #[allow(clippy::cast_precision_loss)]
        let calls = COUNTED_CALLS as f64;
        #[allow(clippy::cast_precision_loss)]
        let reads = (proxy.client_reads() - before) as f64;
        per_call[i] = reads / calls;
    }
    let before = proxy.client_reads();
    let mut cursor = TopicCursor::START;
    loop {
        let page = store
            .subscribers(topic, cursor, limit)
            .await
            .expect("subscribers");
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    (per_call, proxy.client_reads() - before)
}

/// `--only state`: the per-session state beside `touch` on one server, to
/// `state.md`.
fn state_main(args: &Args, rt: &tokio::runtime::Runtime, d: &Deployment, version: &str) {
    use session_engine::TopicCursor;
    let started = Instant::now();
    let load_before = load_average();
    let store = rt
        .block_on(RedisStore::connect(d.config.clone().key_prefix("bench-state:")))
        .expect("connect");
    let ttl = Timeout::from_ms(TTL_MS);
    let ids: Vec<SessionId> = rt.block_on(async {
        let mut ids = Vec::with_capacity(args.ops);
        for _ in 0..args.ops {
            ids.push(store.create(METADATA, ttl).await.expect("create"));
        }
        ids
    });
    assert!(args.repeats < 200, "one topic per round, at most 256 per session");
    // [op] -> per round (p50 µs, p99 µs)
    let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); StateOp::ALL.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); StateOp::ALL.len()];
    for round in 0..args.repeats {
        let mut p50s = [0.0; 4];
        // Subscribe before unsubscribe; touch and rate_limit around them,
        // their order alternating by round.
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [1, 2, 3, 0]
        };
        for i in order {
            let op = StateOp::ALL[i];
            let lat = rt.block_on(run_state_op(&store, op, &ids, round));
            p50s[i] = percentile(&lat, 0.5);
            rows[i].push((p50s[i], percentile(&lat, 0.99)));
        }
        for i in 0..4 {
            ratios[i].push(p50s[i] / p50s[0]);
        }
    }
    // The fan-out: FAN_OUT subscribers of one topic, listed whole.
    let fan_ids: Vec<SessionId> = rt.block_on(async {
        let mut v = Vec::with_capacity(FAN_OUT);
        for _ in 0..FAN_OUT {
            let id = store.create(b"", ttl).await.expect("create");
            store.subscribe(&id, "bench/hot").await.expect("subscribe");
            v.push(id);
        }
        v
    });
    let mut fan_ms = Vec::new();
    for _ in 0..args.repeats {
        let t = Instant::now();
        let listed = rt.block_on(async {
            let mut n = 0;
            let mut cursor = TopicCursor::START;
            loop {
                let page = store
                    .subscribers("bench/hot", cursor, FAN_OUT_PAGE)
                    .await
                    .expect("subscribers");
                n += page.ids.len();
                match page.next {
                    Some(next) => cursor = next,
                    None => return n,
                }
            }
        });
        fan_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(listed, fan_ids.len());
    }
    let (requests, fan_requests) = rt.block_on(count_requests(d.port, "bench/hot", FAN_OUT_PAGE));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| operation | p50 µs | p99 µs | p50 / `touch` p50 | requests per call (at a proxy) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for (i, op) in StateOp::ALL.iter().enumerate() {
        let pick = |f: fn(&(f64, f64)) -> f64| rows[i].iter().map(f).collect::<Vec<f64>>();
        let p50 = pick(|r| r.0);
        let p99 = pick(|r| r.1);
        let _ = writeln!(
            out,
            "| {} | {:.0} ({}) | {:.0} ({}) | {:.2} ({:.2}–{:.2}) | {:.2} |",
            op.name(),
            median(p50.clone()),
            spread(&p50),
            median(p99.clone()),
            spread(&p99),
            median(ratios[i].clone()),
            ratios[i].iter().copied().fold(f64::INFINITY, f64::min),
            ratios[i].iter().copied().fold(f64::NEG_INFINITY, f64::max),
            requests[i],
        );
    }
    let _ = writeln!(
        out,
        "\nFan-out: all {FAN_OUT} subscribers of one topic in pages of {FAN_OUT_PAGE}: {:.1} ms median ({:.1}–{:.1}), \
         {fan_requests} reads per listing at the proxy ({} pages, each a `ZRANGEBYLEX` and then one pipeline of \
         `HGET`s, about 60 KB, which the proxy may take in more than one read).",
        median(fan_ms.clone()),
        fan_ms.iter().copied().fold(f64::INFINITY, f64::min),
        fan_ms.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        FAN_OUT.div_ceil(FAN_OUT_PAGE),
    );
    let text = format!(
        "# Redis backend: per-session state beside `touch`\n\n\
         Command: `cargo run --release -p session-redis --example redis_bench -- --only state --ops {} --repeats {}`  \n\
         {}  \n\
         One standalone server started by the bench on 127.0.0.1; one caller (1 in flight) on a current-thread \
         Tokio runtime; {} sessions, each operation once per session per round, {} rounds (latency medians \
         over the rounds, min–max in brackets; the ratio is paired per round). Requests per call are counted \
         afterwards by a second store through a loopback proxy ({COUNTED_CALLS} calls each; a pipeline is one \
         request): a `rate_limit` is one `EVALSHA`, one round trip; a `subscribe` is its script, then the index \
         script (`ZADD` and the index's TTL; to the session's and the topic's masters in a cluster), and \
         every {}th new subscription a store makes is followed by a tidying of the topic's index (a range \
         read and one pipeline of checks: two requests more, {:.2} a call on average). \
         Load average before / after: {} / {}. Wall time {:.0} s.\n\n",
        args.ops,
        args.repeats,
        machine_line(version),
        args.ops,
        args.repeats,
        session_redis::limits::INDEX_TIDY_EVERY,
        2.0 + 2.0 / session_redis::limits::INDEX_TIDY_EVERY as f64,
        load_before,
        load_average(),
        started.elapsed().as_secs_f64()
    );
    let text = format!("{text}{out}");
    println!("{text}");
    std::fs::create_dir_all(&args.out).expect("create --out");
    std::fs::write(args.out.join("state.md"), &text).expect("write state.md");
    eprintln!("wrote {}", args.out.join("state.md").display());
}
