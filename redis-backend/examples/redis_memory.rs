//! What a session costs a Redis server, by metadata size, for capacity
//! planning: bytes per session (`used_memory` over the sessions created) and
//! the server's CPU per `create` and per `put` of an existing session
//! (`INFO commandstats`), with the server's default hash settings and with
//! `hash-max-listpack-value` raised above the metadata's size.
//!
//! A session is a hash (`redis-backend/README.md`, "Stored form"). Redis
//! keeps a small hash as one compact listpack, but only while every field
//! value is at most `hash-max-listpack-value` bytes (64 by default); a
//! session whose metadata is longer becomes a hash table of separately
//! allocated fields. This program measures what that costs.
//!
//! ```text
//! cargo run --release -p session-redis --example redis_memory -- [--sessions 20000] [--repeats 5] [--out results/redis]
//! ```
//!
//! Starts its own `redis-server` on a free loopback port (no persistence) and
//! writes `memory.md` under `--out`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;

use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

/// Sessions created and written at once.
const IN_FLIGHT: usize = 64;
/// Metadata sizes measured, bytes.
const SIZES: [usize; 4] = [32, 64, 200, 1000];
/// `hash-max-listpack-value` settings measured: Redis' default, then one
/// above every size measured.
const LISTPACK_VALUES: [usize; 2] = [64, 1024];

/// One field of an `INFO` section, or of a `commandstats` line.
fn info_field(port: u16, section: &str, line_prefix: &str, field: &str) -> f64 {
    let reply = support::raw_command(port, &["INFO", section]).expect("INFO");
    reply
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| {
            l[line_prefix.len()..]
                .split(',')
                .find_map(|kv| kv.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn used_memory(port: u16) -> f64 {
    info_field(port, "memory", "used_memory:", "")
}

/// Server µs per `EVALSHA` since the last `CONFIG RESETSTAT`.
fn script_us_per_call(port: u16) -> f64 {
    info_field(port, "commandstats", "cmdstat_evalsha:", "usec_per_call=")
}

fn reset_stats(port: u16) {
    support::raw_command(port, &["CONFIG", "RESETSTAT"]).expect("CONFIG RESETSTAT");
}

/// The encoding Redis chose for a session's hash.
fn encoding(store: &RedisStore, port: u16, id: &SessionId) -> String {
    let reply = support::raw_command(port, &["OBJECT", "ENCODING", &store.key(id)]).expect("OBJECT ENCODING");
    // A bulk reply: `$<len>`, then the name.
    reply.lines().last().unwrap_or_default().trim().to_owned()
}

struct Sample {
    bytes: f64,
    create_us: f64,
    put_us: f64,
    encoding: String,
}

async fn measure(store: &Arc<RedisStore>, port: u16, size: usize, sessions: usize) -> Sample {
    support::raw_command(port, &["FLUSHALL", "SYNC"]).expect("FLUSHALL");
    let metadata: Arc<[u8]> = vec![b'm'; size].into();
    let timeout = Timeout::from_secs(30 * 60);
    let before = used_memory(port);
    reset_stats(port);
    let mut ids = Vec::with_capacity(sessions);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(IN_FLIGHT) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in chunk {
            let (store, metadata) = (Arc::clone(store), Arc::clone(&metadata));
            tasks.spawn(async move { store.create(&metadata, timeout).await.expect("create") });
        }
        while let Some(id) = tasks.join_next().await {
            ids.push(id.expect("create task"));
        }
    }
    let create_us = script_us_per_call(port);
    #[allow(clippy::cast_precision_loss)] // a count of sessions
    let bytes = (used_memory(port) - before) / sessions as f64;
    reset_stats(port);
    for chunk in ids.chunks(IN_FLIGHT) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let (store, metadata, id) = (Arc::clone(store), Arc::clone(&metadata), *id);
            tasks.spawn(async move { store.put(id, &metadata, timeout).await.expect("put") });
        }
        while tasks.join_next().await.is_some() {}
    }
    Sample {
        bytes,
        create_us,
        put_us: script_us_per_call(port),
        encoding: encoding(store, port, &ids[0]),
    }
}

fn main() {
    let args = common::parse_args("--sessions", 20_000, 5);
    let server = support::Server::standalone();
    let port = server.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(
        rt.block_on(RedisStore::connect(RedisConfig::standalone(server.url())))
            .expect("connect"),
    );
    // samples[listpack][size] over the repeats; the settings alternate
    // within each repeat, so both see the same stretch of the machine.
    let mut samples: Vec<Vec<Vec<Sample>>> = LISTPACK_VALUES
        .iter()
        .map(|_| SIZES.iter().map(|_| Vec::new()).collect())
        .collect();
    // Unreported: loads the scripts, warms the connection and the server.
    rt.block_on(measure(&store, port, SIZES[0], args.count));
    for repeat in 0..args.repeats {
        for (s, &size) in SIZES.iter().enumerate() {
            for (l, &value) in LISTPACK_VALUES.iter().enumerate() {
                support::raw_command(
                    port,
                    &["CONFIG", "SET", "hash-max-listpack-value", &value.to_string()],
                )
                .expect("CONFIG SET");
                let sample = rt.block_on(measure(&store, port, size, args.count));
                eprintln!(
                    "repeat {repeat}: {size} B, listpack-value {value}: {:.0} B/session, create {:.2} µs, put {:.2} µs ({})",
                    sample.bytes, sample.create_us, sample.put_us, sample.encoding
                );
                samples[l][s].push(sample);
            }
        }
    }

    let mut out = String::new();
    writeln!(out, "# What a session costs a Redis server\n").unwrap();
    writeln!(
        out,
        "Command: `cargo run --release -p session-redis --example redis_memory -- --sessions {} --repeats {}`  ",
        args.count, args.repeats
    )
    .unwrap();
    writeln!(
        out,
        "Commit: `{}`; {}  ",
        common::output("git", &["rev-parse", "--short", "HEAD"]),
        common::machine_line(),
    )
    .unwrap();
    writeln!(
        out,
        "One server this program started (no persistence); {} sessions created per measure, {IN_FLIGHT} requests in flight, \
         with a 30-minute timeout, then each replaced once with `put`. Bytes per session: the server's `used_memory` after \
         the creates less before, over the sessions. Server µs: `INFO commandstats`' `usec_per_call` of `EVALSHA` over the \
         creates (the insert script) and over the puts (the put script). Medians of {} repeats, min–max in brackets; \
         the two settings alternate within each repeat.\n",
        args.count, args.repeats
    )
    .unwrap();
    writeln!(
        out,
        "| metadata bytes | `hash-max-listpack-value` | hash encoding | bytes per session | server µs per create | server µs per put |"
    )
    .unwrap();
    writeln!(out, "| ---: | ---: | --- | ---: | ---: | ---: |").unwrap();
    for (s, &size) in SIZES.iter().enumerate() {
        for (l, &value) in LISTPACK_VALUES.iter().enumerate() {
            let v = &samples[l][s];
            let bytes: Vec<f64> = v.iter().map(|x| x.bytes).collect();
            let create: Vec<f64> = v.iter().map(|x| x.create_us).collect();
            let put: Vec<f64> = v.iter().map(|x| x.put_us).collect();
            let default = if value == 64 { " (default)" } else { "" };
            writeln!(
                out,
                "| {size} | {value}{default} | {} | {:.0} ({}) | {:.2} ({}) | {:.2} ({}) |",
                v[0].encoding,
                common::median(bytes.clone()),
                common::range(&bytes, 0),
                common::median(create.clone()),
                common::range(&create, 2),
                common::median(put.clone()),
                common::range(&put, 2),
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(&args.out).expect("--out directory");
    let path = args.out.join("memory.md");
    std::fs::write(&path, &out).expect("write memory.md");
    print!("{out}");
    eprintln!("wrote {}", path.display());
}
