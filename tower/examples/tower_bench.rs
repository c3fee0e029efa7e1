//! What a request costs through tower-sessions' layer with our store and
//! with tower-sessions' own, side by side: one `load` and one `save` per
//! request (an axum handler that adds one to a counter in the session, the
//! session's cookie on every request).
//!
//! ```text
//! cargo run --release -p session-tower --features peers --example tower_bench -- \
//!     [--requests 20000] [--redis-requests 4000] [--concurrency 1,50] [--rounds 9] [--out results/tower.md] [--no-redis]
//! ```
//!
//! In process: `TowerStore<Engine>` (fixed and sliding) against
//! tower-sessions' `MemoryStore` and `tower-sessions-moka-store`'s
//! `MokaStore`. On one local `redis-server` this program starts:
//! `TowerStore<RedisStore>` against `tower-sessions-redis-store` (fred, a
//! pool of one multiplexed connection, like ours). Each request goes through
//! the whole stack (`SessionManagerLayer`, cookie parsing, the handler, the
//! `Set-Cookie`), in process via `tower::ServiceExt::oneshot` (no HTTP
//! socket: the store's cost is what differs).
//!
//! The moka and Redis stores' latest releases implement tower-sessions-core
//! 0.14, so they run under tower-sessions 0.14's layer; `MemoryStore` runs
//! under both (0.14 and 0.15) to show what the layer's version costs.
//!
//! Each round runs every contestant once, `--concurrency` tasks each with a
//! session of its own, in an order that alternates between rounds (paired,
//! interleaved). A contestant's figures are the medians over rounds of its
//! per-round p50 latency and requests per second; the ratios are the
//! medians of its per-round ratios to the first row of its group (our fixed
//! `TowerStore`). At 50 in flight the p50 latency of a store whose futures
//! never wait (the engine's, moka's) is one request's own CPU time, while a
//! store that takes turns on a lock (tower-sessions' `MemoryStore`, a
//! `tokio::sync::Mutex` over its map) shows the queue: compare requests per
//! second there. Every session's
//! counter is checked at the end of each run: a store that dropped a save
//! fails the run.
//!
//! Each row also has the CPU time per request of this process (all its
//! threads) and, on Redis, of the server: on a 2-core machine where client
//! and server share the cores, their sum is what bounds requests per second
//! at 50 in flight.

#[path = "../../redis-backend/tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use session_engine::{Config, Engine};
use session_redis::{RedisConfig, RedisStore};
use session_tower::TowerStore;
use tower::ServiceExt as _;
use tower_sessions_redis_store::fred::prelude::{ClientLike as _, Config as FredConfig, Pool};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inactivity timeout of every session in the bench.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Requests per contestant before the rounds (connections, caches, allocator).
const WARMUP_REQUESTS: usize = 500;

#[derive(Parser, Debug)]
struct Args {
    /// Requests per contestant per round, in process.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests per contestant per round, on Redis.
    #[arg(long, default_value_t = 4_000)]
    redis_requests: usize,
    /// Requests in flight (tasks, each with its own session), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    concurrency: Vec<usize>,
    /// Rounds (each runs every contestant once).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Where the markdown report goes.
    #[arg(long, default_value = "results/tower.md")]
    out: PathBuf,
    /// Skip the Redis group (no redis-server needed).
    #[arg(long)]
    no_redis: bool,
}

/// One store behind its session layer.
struct Contestant {
    name: &'static str,
    app: Router,
}

async fn counter_015(session: tower_sessions::Session) -> String {
    let n: u64 = session.get("n").await.expect("load").unwrap_or(0) + 1;
    session.insert("n", n).await.expect("insert");
    n.to_string()
}

async fn counter_014(session: tower_sessions_014::Session) -> String {
    let n: u64 = session.get("n").await.expect("load").unwrap_or(0) + 1;
    session.insert("n", n).await.expect("insert");
    n.to_string()
}

fn inactivity() -> time::Duration {
    time::Duration::try_from(TIMEOUT).expect("fits")
}

fn app_015<S: tower_sessions::SessionStore + Clone>(store: S, expiry: tower_sessions::Expiry) -> Router {
    let layer = tower_sessions::SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(expiry);
    Router::new().route("/", get(counter_015)).layer(layer)
}

fn app_014<S: tower_sessions_014::SessionStore + Clone>(store: S) -> Router {
    let layer = tower_sessions_014::SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(tower_sessions_014::Expiry::OnInactivity(inactivity()));
    Router::new().route("/", get(counter_014)).layer(layer)
}

fn ours<S: session_engine::SessionStore + 'static>(store: S, sliding: bool) -> Router {
    if sliding {
        let store = TowerStore::new(store)
            .sliding(true)
            .inactivity_timeout(TIMEOUT)
            .expect("valid timeout");
        app_015(store, tower_sessions::Expiry::OnSessionEnd)
    } else {
        app_015(
            TowerStore::new(store),
            tower_sessions::Expiry::OnInactivity(inactivity()),
        )
    }
}

fn in_process() -> Vec<Contestant> {
    let engine = || Engine::open(Config::default()).expect("open engine");
    vec![
        Contestant {
            name: "TowerStore<Engine> (fixed)",
            app: ours(engine(), false),
        },
        Contestant {
            name: "TowerStore<Engine> (sliding)",
            app: ours(engine(), true),
        },
        Contestant {
            name: "MemoryStore (tower-sessions 0.15)",
            app: app_015(
                tower_sessions::MemoryStore::default(),
                tower_sessions::Expiry::OnInactivity(inactivity()),
            ),
        },
        Contestant {
            name: "MemoryStore (tower-sessions 0.14)",
            app: app_014(tower_sessions_014::MemoryStore::default()),
        },
        Contestant {
            name: "MokaStore (0.15, on tower-sessions 0.14)",
            app: app_014(tower_sessions_moka_store::MokaStore::new(None)),
        },
    ]
}

async fn on_redis(url: &str) -> Vec<Contestant> {
    let connect = || async {
        RedisStore::connect(RedisConfig::standalone(url))
            .await
            .expect("connect our store")
    };
    let pool = Pool::new(FredConfig::from_url(url).expect("fred URL"), None, None, None, 1).expect("pool");
    let _connection = pool.init().await.expect("fred connects");
    vec![
        Contestant {
            name: "TowerStore<RedisStore> (fixed)",
            app: ours(connect().await, false),
        },
        Contestant {
            name: "TowerStore<RedisStore> (sliding)",
            app: ours(connect().await, true),
        },
        Contestant {
            name: "tower-sessions-redis-store 0.16 (fred)",
            app: app_014(tower_sessions_redis_store::RedisStore::new(pool)),
        },
    ]
}

/// One request through the stack; returns its latency and body.
async fn request(app: &Router, cookie: Option<&HeaderValue>) -> (Duration, HeaderValue, String) {
    let mut req = Request::get("/");
    if let Some(cookie) = cookie {
        req = req.header(COOKIE, cookie.clone());
    }
    let req = req.body(Body::empty()).expect("request");
    let start = Instant::now();
    let res = app.clone().oneshot(req).await.expect("infallible");
    let took = start.elapsed();
    assert!(res.status().is_success(), "status {}", res.status());
    let set = res.headers().get(SET_COOKIE).map(|v| {
        v.to_str()
            .expect("ASCII")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned()
    });
    let cookie = set.map_or_else(
        || cookie.expect("a cookie was sent or set").clone(),
        |c| HeaderValue::from_str(&c).expect("header"),
    );
    let body = axum::body::to_bytes(res.into_body(), 64).await.expect("body");
    (took, cookie, String::from_utf8_lossy(&body).into_owned())
}

/// CPU time of every thread of process `pid` ("self" for this one), in
/// nanoseconds: the sum of `/proc/<pid>/task/*/schedstat`'s first field
/// (nanosecond resolution, where `/proc/<pid>/stat` counts 10 ms ticks).
/// 0 where `/proc` cannot say.
fn cpu_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What one run took: per-request latencies (ns), the wall time, and the
/// CPU time of this process and of the Redis server (ns; 0 in process).
struct Run {
    latencies_ns: Vec<u64>,
    wall: Duration,
    cpu_ns: u64,
    server_cpu_ns: u64,
}

/// Per-request latencies (ns) and the wall time of `requests` requests by
/// `tasks` tasks, each on its own fresh session; checks every counter.
async fn run(app: &Router, requests: usize, tasks: usize, server_pid: Option<u32>) -> Run {
    let per_task = requests.div_ceil(tasks);
    let mut sessions = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (_, cookie, body) = request(app, None).await;
        assert_eq!(body, "1");
        sessions.push(cookie);
    }
    let server_cpu = || server_pid.map_or(0, |pid| cpu_ns(&pid.to_string()));
    let (cpu_before, server_before) = (cpu_ns("self"), server_cpu());
    let start = Instant::now();
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|cookie| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                let mut cookie = cookie;
                let mut last = String::new();
                for _ in 0..per_task {
                    let (took, next, body) = request(&app, Some(&cookie)).await;
                    latencies.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    cookie = next;
                    last = body;
                }
                assert_eq!(last, (per_task + 1).to_string(), "a save was lost");
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(per_task * tasks);
    for handle in handles {
        all.extend(handle.await.expect("task"));
    }
    Run {
        latencies_ns: all,
        wall: start.elapsed(),
        cpu_ns: cpu_ns("self").saturating_sub(cpu_before),
        server_cpu_ns: server_cpu().saturating_sub(server_before),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn p50_us(latencies: &mut [u64]) -> f64 {
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)] // nanoseconds far below 2^52
    let ns = latencies[latencies.len() / 2] as f64;
    ns / 1_000.0
}

/// One contestant's figures over the rounds.
#[derive(Default)]
struct Figures {
    p50_us: Vec<f64>,
    requests_per_s: Vec<f64>,
    /// Its p50 over ours, per round.
    p50_ratio: Vec<f64>,
    /// Its requests per second over ours, per round.
    rate_ratio: Vec<f64>,
    /// This process's CPU time per request (µs), per round.
    cpu_us: Vec<f64>,
    /// The Redis server's CPU time per request (µs), per round.
    server_cpu_us: Vec<f64>,
}

/// Runs the rounds for one group at one concurrency; the first contestant
/// is "ours" for the ratios.
async fn rounds(
    group: &[Contestant],
    requests: usize,
    tasks: usize,
    rounds: usize,
    server_pid: Option<u32>,
) -> Vec<Figures> {
    for c in group {
        run(&c.app, WARMUP_REQUESTS.max(tasks), tasks, server_pid).await;
    }
    let mut figures: Vec<Figures> = group.iter().map(|_| Figures::default()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..group.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut p50s = vec![0.0; group.len()];
        let mut rates = vec![0.0; group.len()];
        for &i in &order {
            let mut run = run(&group[i].app, requests, tasks, server_pid).await;
            #[allow(clippy::cast_precision_loss)] // counts and nanoseconds far below 2^52
            let (rate, cpu_us, server_cpu_us) = {
                let n = run.latencies_ns.len() as f64;
                (
                    n / run.wall.as_secs_f64(),
                    run.cpu_ns as f64 / n / 1_000.0,
                    run.server_cpu_ns as f64 / n / 1_000.0,
                )
            };
            figures[i].cpu_us.push(cpu_us);
            figures[i].server_cpu_us.push(server_cpu_us);
            p50s[i] = p50_us(&mut run.latencies_ns);
            rates[i] = rate;
            figures[i].p50_us.push(p50s[i]);
            figures[i].requests_per_s.push(rate);
        }
        for (i, f) in figures.iter_mut().enumerate() {
            f.p50_ratio.push(p50s[i] / p50s[0]);
            f.rate_ratio.push(rates[i] / rates[0]);
        }
        eprintln!("  round {}/{rounds}: {:?}", round + 1, p50s);
    }
    figures
}

fn table(out: &mut String, title: &str, group: &[Contestant], figures: &mut [Figures], server: bool) {
    writeln!(out, "\n### {title}\n").unwrap();
    writeln!(
        out,
        "| store | p50 µs per request (median; range over rounds) | requests/s (median) | p50 / first row | requests/s / first row | CPU µs per request, this process (median){} |",
        if server { " | CPU µs per request, redis-server (median)" } else { "" }
    )
    .unwrap();
    writeln!(
        out,
        "| --- | --- | --- | --- | --- | ---{} |",
        if server { " | ---" } else { "" }
    )
    .unwrap();
    for (c, f) in group.iter().zip(figures.iter_mut()) {
        let (lo, hi) = (
            f.p50_us.iter().copied().fold(f64::MAX, f64::min),
            f.p50_us.iter().copied().fold(0.0, f64::max),
        );
        let server_cpu = if server {
            format!(" | {:.1}", median(&mut f.server_cpu_us))
        } else {
            String::new()
        };
        writeln!(
            out,
            "| {} | {:.1} ({lo:.1}-{hi:.1}) | {:.0} | {:.2} | {:.2} | {:.1}{server_cpu} |",
            c.name,
            median(&mut f.p50_us),
            median(&mut f.requests_per_s),
            median(&mut f.p50_ratio),
            median(&mut f.rate_ratio),
            median(&mut f.cpu_us),
        )
        .unwrap();
    }
}

/// The server's CPU per command over the whole Redis group (`INFO
/// commandstats`): where a request's server time goes, ours and theirs.
fn server_cost(out: &mut String, server: &support::Server) {
    writeln!(
        out,
        "\n### Server CPU per command over the Redis runs (`INFO commandstats`)\n"
    )
    .unwrap();
    writeln!(out, "| command | calls | µs per call |").unwrap();
    writeln!(out, "| --- | --- | --- |").unwrap();
    let stats = server.cli(&["INFO", "commandstats"]);
    for line in stats.lines() {
        let Some((name, fields)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("?")
        };
        writeln!(
            out,
            "| {name} | {} | {} |",
            field("calls"),
            field("usec_per_call")
        )
        .unwrap();
    }
    writeln!(out, "\nOurs: `HMGET` is the fixed `load` (peek), `evalsha` the sliding `load` (the get script) and every `save` (the put script); theirs: `GET` and `SET ... EXAT`.").unwrap();
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l[l.find(':').map_or(0, |i| i + 2)..].to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map_or_else(
            |_| "redis-server missing".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), shared with other work and noisy; load average at start {}; {redis}; commit {commit}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = String::new();
    writeln!(
        out,
        "# tower-sessions stores: one load and one save per request\n"
    )
    .unwrap();
    writeln!(out, "Machine: {}.\n", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo run --release -p session-tower --features peers --example tower_bench -- --requests {} --redis-requests {} --concurrency {} --rounds {}{}`\n",
        args.requests,
        args.redis_requests,
        args.concurrency.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        args.rounds,
        if args.no_redis { " --no-redis" } else { "" }
    )
    .unwrap();
    writeln!(out, "Each request: `SessionManagerLayer` parses the cookie, the handler loads the session and writes a counter back, the layer saves it and sets the cookie; in process (`tower::ServiceExt::oneshot`, no socket), a 2-thread Tokio runtime, mimalloc. Paired, interleaved rounds (the order reverses every round); medians over rounds. Ratios are against the first row of each table. CPU per request: the CPU time of every thread of this process (and of redis-server), from `/proc/<pid>/task/*/schedstat`, over a run's requests; the process holds all contestants (idle engines' clock threads included).").unwrap();

    runtime.block_on(async {
        let group = in_process();
        for &tasks in &args.concurrency {
            eprintln!("in process, {tasks} in flight");
            let mut figures = rounds(&group, args.requests, tasks, args.rounds, None).await;
            table(
                &mut out,
                &format!(
                    "In process, {tasks} in flight ({} requests per run)",
                    args.requests
                ),
                &group,
                &mut figures,
                false,
            );
        }
        if args.no_redis {
            return;
        }
        let server = support::Server::standalone();
        let group = on_redis(&server.url()).await;
        for &tasks in &args.concurrency {
            eprintln!("redis, {tasks} in flight");
            let mut figures = rounds(&group, args.redis_requests, tasks, args.rounds, server.pid()).await;
            table(
                &mut out,
                &format!(
                    "One local Redis server, {tasks} in flight ({} requests per run)",
                    args.redis_requests
                ),
                &group,
                &mut figures,
                true,
            );
        }
        server_cost(&mut out, &server);
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&args.out, &out).expect("write the report");
    print!("{out}");
}
