//! Per-session state on the embedded engine (issue 19's targets), at 100K
//! live sessions of 200-byte metadata, one thread, in memory:
//!
//! - `touch` (the reference), `rate_limit` (check and charge one token) and
//!   `subscribe+unsubscribe` (one pair) on scattered sessions: target, each
//!   within 2x a `touch` (the pair: within 2x two touches);
//! - `fanout/10k`: listing all 10K subscribers of one topic (one page of
//!   10,000): target under 5 ms;
//! - `timers/arm+cancel-1M/*`: 1M timers armed then cancelled, 10 per
//!   session over 100K sessions and 100 per session over 10K, reported per
//!   timer (an arm plus a cancel): target under 200 ns; `/by-handle`
//!   cancels through the handles arming returned.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use session_engine::{Bucket, Config, Engine, SessionId, Timeout, TopicCursor};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SESSIONS: usize = 100_000;

fn engine() -> (Engine, Vec<SessionId>) {
    let engine = Engine::open(Config::default().initial_capacity(SESSIONS)).unwrap();
    let meta = vec![7u8; 200];
    let ids = (0..SESSIONS)
        .map(|_| engine.create(&meta, Timeout::from_secs(3600)).unwrap())
        .collect();
    (engine, ids)
}

/// Scattered ids, as the ops bench walks them.
fn walk(ids: &[SessionId], iters: u64, mut op: impl FnMut(&SessionId)) -> Duration {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let started = Instant::now();
    for _ in 0..iters {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_possible_truncation)]
        let i = (x >> 33) as usize % ids.len();
        op(&ids[i]);
    }
    started.elapsed()
}

fn ops(c: &mut Criterion) {
    let (engine, ids) = engine();
    let bucket = Bucket {
        capacity: 1_000_000,
        refill_per_sec: 1_000_000,
    };
    let mut group = c.benchmark_group("state/1t");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("touch", |b| {
        b.iter_custom(|iters| walk(&ids, iters, |id| engine.touch(id).unwrap()));
    });
    group.bench_function("rate_limit", |b| {
        b.iter_custom(|iters| {
            walk(&ids, iters, |id| {
                std::hint::black_box(engine.rate_limit(id, bucket, 1).unwrap());
            })
        });
    });
    group.bench_function("subscribe+unsubscribe", |b| {
        b.iter_custom(|iters| {
            walk(&ids, iters, |id| {
                assert!(engine.subscribe(id, "resource://bench/topic").unwrap());
                assert!(engine.unsubscribe(id, "resource://bench/topic").unwrap());
            })
        });
    });
    // After sessions hold state (the buckets above), the cost a touch and
    // a delete-free read path see is unchanged; touch again for the record.
    group.bench_function("touch-after-state", |b| {
        b.iter_custom(|iters| walk(&ids, iters, |id| engine.touch(id).unwrap()));
    });
    group.finish();

    // Fan-out: 10K of the sessions subscribe to one topic.
    for id in ids.iter().step_by(SESSIONS / 10_000) {
        engine.subscribe(id, "resource://hot").unwrap();
    }
    let mut group = c.benchmark_group("fanout");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("10k", |b| {
        b.iter(|| {
            let page = engine
                .subscribers("resource://hot", TopicCursor::START, 10_000)
                .unwrap();
            assert_eq!(page.ids.len(), 10_000);
            std::hint::black_box(page);
        });
    });
    group.finish();

    // Timers: 1M armed, then all cancelled: 10 per session over all 100K
    // sessions (a few pending requests each), and 100 per session over 10K.
    let mut group = c.benchmark_group("timers");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(1_000_000))
        .measurement_time(Duration::from_secs(10));
    for (name, per_session) in [
        ("arm+cancel-1M/10-per-session", 10u64),
        ("arm+cancel-1M/100-per-session", 100),
    ] {
        #[allow(clippy::cast_possible_truncation)]
        let timer_ids = &ids[..(1_000_000 / per_session) as usize];
        group.bench_function(name, |b| {
            b.iter(|| {
                for token in 0..per_session {
                    for id in timer_ids {
                        engine.arm_timer(id, token, Duration::from_secs(5)).unwrap();
                    }
                }
                for token in 0..per_session {
                    for id in timer_ids {
                        assert!(engine.cancel_timer(id, token).unwrap());
                    }
                }
            });
        });
        // The same timers cancelled through the handles arming returned.
        let mut handles = Vec::with_capacity(1_000_000);
        group.bench_function(format!("{name}/by-handle"), |b| {
            b.iter(|| {
                for token in 0..per_session {
                    for id in timer_ids {
                        handles.push(engine.arm_timer(id, token, Duration::from_secs(5)).unwrap());
                    }
                }
                for handle in handles.drain(..) {
                    assert!(engine.cancel_timer_handle(handle));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
