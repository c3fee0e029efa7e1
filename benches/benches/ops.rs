//! Criterion micro-benchmarks of single operations at 100K live sessions
//! (200-byte metadata), engine beside its peers, on 1 and 2 threads; and the
//! timer wheel's cost seen through the engine: scheduling (`set_ttl`), a sweep
//! with nothing due over 100K live sessions, and expiring sessions in bulk.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_engine::{Config, Engine, ManualClock, SessionId, Timeout};
use session_engine_benches::{contender, populate, Contender, METADATA_BYTES, NAMES, SESSIONS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Op = fn(&dyn Contender, &SessionId) -> bool;

const OPS: [(&str, Op); 4] = [
    ("get", |c, id| c.get(id)),
    ("peek", |c, id| c.peek(id)),
    ("touch", |c, id| c.touch(id)),
    ("update", |c, id| c.update(id)),
];

/// Runs `iters` operations split over `threads` threads; returns wall time.
fn timed_threads(
    c: &Arc<dyn Contender>,
    ids: &Arc<Vec<SessionId>>,
    threads: usize,
    iters: u64,
    op: Op,
) -> Duration {
    let per_thread = iters / threads as u64;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (c, ids) = (Arc::clone(c), Arc::clone(ids));
            s.spawn(move || {
                // A cheap LCG walks the ids in a scattered order per thread.
                let mut x = 0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(t as u64 + 1);
                for _ in 0..per_thread {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    #[allow(clippy::cast_possible_truncation)]
                    let i = (x >> 33) as usize % ids.len();
                    std::hint::black_box(op(&*c, &ids[i]));
                }
            });
        }
    });
    started.elapsed()
}

fn ops(cr: &mut Criterion) {
    for (op_name, op) in &OPS {
        for threads in [1usize, 2] {
            let mut group = cr.benchmark_group(format!("{op_name}/{threads}t"));
            group.throughput(Throughput::Elements(1));
            group
                .measurement_time(Duration::from_secs(2))
                .warm_up_time(Duration::from_millis(500));
            for name in NAMES {
                let c: Arc<dyn Contender> = Arc::from(contender(name));
                let ids = Arc::new(populate(&*c, SESSIONS));
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter_custom(|iters| timed_threads(&c, &ids, threads, iters.max(threads as u64), *op));
                });
            }
            group.finish();
        }
    }
    // Create and delete, one thread: create into a 100K population, then
    // delete what was created, in batches so the population stays near 100K.
    let mut group = cr.benchmark_group("create+delete/1t");
    group.throughput(Throughput::Elements(2));
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for name in NAMES {
        let c = contender(name);
        let _base = populate(&*c, SESSIONS);
        let metadata = [3u8; METADATA_BYTES];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut batch = Vec::with_capacity(1024);
                let started = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(1024);
                    for _ in 0..n {
                        batch.push(c.create(&metadata));
                    }
                    for id in batch.drain(..) {
                        c.delete(&id);
                    }
                    left -= n;
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

fn wheel(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("wheel");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(Config::default().without_sweeper().clock(clock.clock())).unwrap();
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|_| {
            engine
                .create(&[0; METADATA_BYTES], Timeout::from_secs(1800))
                .unwrap()
        })
        .collect();
    // Schedule: set_ttl unlinks and re-links the session in its wheel.
    let mut i = 0;
    group.bench_function("schedule (set_ttl)", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            engine
                .set_ttl(&ids[i], Timeout::from_secs(900 + (i as u64 % 1800)))
                .unwrap();
        });
    });
    // Advance with nothing due: cost must not grow with the live sessions.
    group.bench_function("advance 1 ms, 100K live, none due", |b| {
        b.iter(|| {
            clock.advance_ms(1);
            assert_eq!(engine.cleanup_expired(), 0);
        });
    });
    group.finish();

    let mut group = cr.benchmark_group("wheel expire");
    group.throughput(Throughput::Elements(10_000));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("10K due among 100K live", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..10_000 {
                    engine.create(&[0; METADATA_BYTES], Timeout::from_ms(5)).unwrap();
                }
                clock.advance_ms(5);
                let started = Instant::now();
                assert_eq!(engine.cleanup_expired(), 10_000);
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, ops, wheel);
criterion_main!(benches);
