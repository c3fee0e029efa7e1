//! What `rotate` costs: drawing the new id in the old one's hash slot (the
//! store's way, one draw bent into the slot, against drawing until one lands
//! there, and against a plain id), then one rotation against one `touch`
//! (both one script round trip) on one server and a cluster this program
//! starts itself, as the tests do.
//!
//! ```text
//! cargo run --release -p session-redis --example rotate_cost -- [--ops 2000] [--repeats 9] [--out results/redis]
//! ```
//!
//! Writes `rotate.md` under `--out`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

/// A small deterministic sequence of slots to aim at.
fn slot(i: usize) -> u16 {
    u16::try_from(i.wrapping_mul(7_919) % 16_384).expect("below 16384")
}

/// Nanoseconds per id of each way to draw one, per round.
fn draws(repeats: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64, f64) {
    // The first call builds the slot-shift table.
    let t = Instant::now();
    black_box(session_redis::random_id_in_slot(0));
    let first_us = t.elapsed().as_secs_f64() * 1e6;
    let (mut ours, mut brute, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut brute_draws = 0u64;
    let mut brute_ids = 0u64;
    for _ in 0..repeats {
        let n = 100_000;
        let t = Instant::now();
        for i in 0..n {
            black_box(session_redis::random_id_in_slot(slot(i)).expect("an id"));
        }
        ours.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);

        let n = 200;
        let t = Instant::now();
        for i in 0..n {
            let target = slot(i);
            loop {
                brute_draws += 1;
                let id = SessionId::random().expect("random");
                if session_redis::id_slot(&id) == target {
                    black_box(id);
                    break;
                }
            }
        }
        brute_ids += n as u64;
        brute.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);

        let n = 100_000;
        let t = Instant::now();
        for _ in 0..n {
            black_box(SessionId::random().expect("random"));
        }
        plain.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    (
        ours,
        brute,
        plain,
        first_us,
        brute_draws as f64 / brute_ids as f64,
    )
}

/// p50 latency in µs of `ops` touches and of `ops` rotations (of one
/// session, rotated on and on), in turn, per round.
async fn round_trips(store: &RedisStore, ops: usize, repeats: usize) -> (Vec<f64>, Vec<f64>) {
    let mut id = store
        .create(&[b'm'; 100], Timeout::from_secs(600))
        .await
        .expect("create");
    let (mut touches, mut rotations) = (Vec::new(), Vec::new());
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for round in 0..repeats {
        let mut touch = Vec::with_capacity(ops);
        let mut rotate = Vec::with_capacity(ops);
        for half in 0..2 {
            if (half == 0) == (round % 2 == 0) {
                for _ in 0..ops {
                    let t = Instant::now();
                    store.touch(&id).await.expect("touch");
                    touch.push(t.elapsed().as_secs_f64() * 1e6);
                }
            } else {
                for _ in 0..ops {
                    let t = Instant::now();
                    id = store.rotate(&id).await.expect("rotate");
                    rotate.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        touches.push(p50(touch));
        rotations.push(p50(rotate));
    }
    (touches, rotations)
}

fn main() {
    let args = common::parse_args("--ops", 2_000, 9);
    support::require_redis();
    let mut out = String::new();
    let started = Instant::now();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load();

    let (ours, brute, plain, first_us, brute_per_id) = draws(args.repeats);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = support::Server::standalone();
    let cluster = support::Cluster::start(1_000);
    let (standalone, clustered) = rt.block_on(async {
        let one = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix("rot:"))
            .await
            .expect("connect");
        let many = RedisStore::connect(RedisConfig::cluster(cluster.urls()).key_prefix("rot:"))
            .await
            .expect("connect");
        (
            round_trips(&one, args.count, args.repeats).await,
            round_trips(&many, args.count, args.repeats).await,
        )
    });

    let _ = writeln!(out, "# Redis backend: what `rotate` costs\n");
    let _ = writeln!(
        out,
        "Command: `cargo run --release -p session-redis --example rotate_cost -- --ops {} --repeats {}`  ",
        args.count, args.repeats
    );
    let _ = writeln!(out, "{}  ", common::machine_line());
    let _ = writeln!(
        out,
        "Load average before / after: {} / {}. Wall time {:.0} s. Medians over {} rounds (min–max).\n",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        started.elapsed().as_secs_f64(),
        args.repeats,
    );
    let _ = writeln!(
        out,
        "## Drawing the new id in the old one's slot (CPU, one thread)\n"
    );
    let _ = writeln!(out, "| way | ns per id | draws per id | entropy |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let _ = writeln!(
        out,
        "| the store's: one draw bent into the slot (`keys::random_id_in_slot`) | {:.0} ({}) | 4 on average | 114 bits, uniform over the slot's ids |",
        common::median(ours.clone()),
        common::range(&ours, 0)
    );
    let _ = writeln!(
        out,
        "| drawing until an id lands in the slot | {:.0} ({}) | {brute_per_id:.0} measured | 114 bits, uniform over the slot's ids |",
        common::median(brute.clone()),
        common::range(&brute, 0)
    );
    let _ = writeln!(
        out,
        "| a plain id, no slot (`SessionId::random`, buffered OS CSPRNG) | {:.0} ({}) | 1 | 128 bits |",
        common::median(plain.clone()),
        common::range(&plain, 0)
    );
    let _ = writeln!(
        out,
        "\nThe first call builds the table of slot shifts (64 KiB): {first_us:.0} µs, once per process.\n"
    );
    let _ = writeln!(
        out,
        "## One rotation against one `touch` (1 in flight, loopback, `Replication::Async`)\n"
    );
    let _ = writeln!(out, "Both are one script round trip; `rotate` adds the draw, a second key, copies the core fields (`HMGET`, `DEL`, `HSET`), and sets its mark beside the old key (`SET ... PX`, for a resend after a lost reply). p50 µs per round, then its median over the rounds; {} of each per round, in turn.\n", args.count);
    let _ = writeln!(
        out,
        "| deployment | touch p50 µs | rotate p50 µs | rotate / touch |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (name, (touch, rotate)) in [
        ("standalone", standalone),
        ("cluster (3 masters + 3 replicas)", clustered),
    ] {
        let ratios: Vec<f64> = rotate.iter().zip(&touch).map(|(r, t)| r / t).collect();
        let _ = writeln!(
            out,
            "| {name} | {:.0} ({}) | {:.0} ({}) | **{:.2}** ({}) |",
            common::median(touch.clone()),
            common::range(&touch, 0),
            common::median(rotate.clone()),
            common::range(&rotate, 0),
            common::median(ratios.clone()),
            common::range(&ratios, 2),
        );
    }
    print!("{out}");
    std::fs::create_dir_all(&args.out).expect("out dir");
    std::fs::write(args.out.join("rotate.md"), &out).expect("write rotate.md");
    eprintln!("wrote {}", args.out.join("rotate.md").display());
}
