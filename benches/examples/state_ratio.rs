//! Per-session state against `touch`, interleaved: on a shared 2-core
//! machine a criterion group per operation measures each at a different
//! load, so their ratio drifts by 2x between runs. Here each round times a
//! block of every operation back to back on the same engine (100K sessions,
//! 200-byte metadata, in memory, one thread, scattered ids), and the report
//! gives per-operation medians over the rounds and the median of the
//! per-round ratios to `touch`. Timers are timed at two scales: 100K live
//! (10 on each of 10K sessions, cancelled by token and by handle) and 1M
//! live (10 on every session, an arm, a cancel by handle and a cancel by
//! token timed apart).
//!
//! `cargo run --release -p session-engine-benches --example state_ratio -- [ROUNDS] [SESSIONS]`
//!
//! With the default 100K sessions the sessions' blocks and table (about
//! 30 MB) are as large as this machine's L3 cache, which it shares with
//! whatever runs on the other core: how much of them stays cached, and so
//! every ratio, moves with that. 1M sessions (`-- 31 1000000`) puts every
//! operation's lookups in memory, whatever else runs.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use session_engine::{Bucket, Config, Engine, SessionId, Timeout, TopicCursor};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sessions by default; the second argument sets another count.
const SESSIONS: usize = 100_000;
const BLOCK: usize = 100_000;
/// Sessions the 1M-timer block arms its timers on (10 each).
const TIMER_SESSIONS: usize = 100_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `n` operations on scattered ids; ns per operation.
fn per_op(ids: &[SessionId], n: usize, seed: u64, mut op: impl FnMut(&SessionId)) -> f64 {
    let mut x = seed | 1;
    let started = Instant::now();
    for _ in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_possible_truncation)]
        let i = (x >> 33) as usize % ids.len();
        op(&ids[i]);
    }
    #[allow(clippy::cast_precision_loss)]
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    ns
}

#[allow(clippy::too_many_lines)]
fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(31);
    let sessions: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(SESSIONS)
        .max(TIMER_SESSIONS);
    let engine = Engine::open(Config::default().initial_capacity(sessions)).unwrap();
    let meta = vec![7u8; 200];
    let ids: Vec<SessionId> = (0..sessions)
        .map(|_| engine.create(&meta, Timeout::from_secs(3600)).unwrap())
        .collect();
    let bucket = Bucket {
        capacity: 1_000_000,
        refill_per_sec: 1_000_000,
    };
    for id in ids.iter().step_by(sessions / 10_000) {
        engine.subscribe(id, "resource://hot").unwrap();
    }
    let names = [
        "touch (ns)",
        "rate_limit (ns)",
        "subscribe (ns)",
        "unsubscribe (ns)",
        "arm+cancel per timer, 10 a session (ns)",
        "arm+cancel by handle, 10 a session (ns)",
        "arm, 1M live, 10 a session (ns)",
        "cancel by handle, 1M live (ns)",
        "cancel by token, 1M live (ns)",
        "fan-out of 10K subscribers (us)",
        "fan-out of 10K after a change (us)",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let mut handles = Vec::with_capacity(1_000_000);
    for round in 0..rounds {
        let seed = round as u64 * 0x9E37_79B9;
        // Untimed: the 1M-timer block of the round before left the caches
        // cold, and `touch` comes first.
        per_op(&ids, BLOCK, !seed, |id| engine.touch(id).unwrap());
        let touch = per_op(&ids, BLOCK, seed, |id| engine.touch(id).unwrap());
        let rate = per_op(&ids, BLOCK, seed, |id| {
            std::hint::black_box(engine.rate_limit(id, bucket, 1).unwrap());
        });
        let sub = per_op(&ids, BLOCK / 2, seed, |id| {
            engine.subscribe(id, "resource://bench").unwrap();
        });
        let unsub = per_op(&ids, BLOCK / 2, seed, |id| {
            engine.unsubscribe(id, "resource://bench").unwrap();
        });
        // 100K timers: 10 per session over 10K sessions, armed then cancelled.
        let timer_ids = &ids[(round * 997) % (sessions - 10_000)..][..10_000];
        let started = Instant::now();
        for token in 0..10 {
            for id in timer_ids {
                engine.arm_timer(id, token, Duration::from_secs(5)).unwrap();
            }
        }
        for token in 0..10 {
            for id in timer_ids {
                assert!(engine.cancel_timer(id, token).unwrap());
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let timer = started.elapsed().as_nanos() as f64 / 100_000.0;
        // The same, cancelled through the handles `arm_timer` returned.
        let started = Instant::now();
        for token in 0..10 {
            for id in timer_ids {
                handles.push(engine.arm_timer(id, token, Duration::from_secs(5)).unwrap());
            }
        }
        for handle in handles.drain(..) {
            assert!(engine.cancel_timer_handle(handle));
        }
        #[allow(clippy::cast_precision_loss)]
        let by_handle = started.elapsed().as_nanos() as f64 / 100_000.0;
        // 1M timers live at once (the scale): 10 on every session,
        // armed in scattered order, then cancelled through their handles.
        let started = Instant::now();
        for token in 0..10 {
            for id in &ids[..TIMER_SESSIONS] {
                handles.push(engine.arm_timer(id, token, Duration::from_secs(5)).unwrap());
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let arm_1m = started.elapsed().as_nanos() as f64 / handles.len() as f64;
        let started = Instant::now();
        for &handle in &handles {
            assert!(engine.cancel_timer_handle(handle));
        }
        #[allow(clippy::cast_precision_loss)]
        let cancel_1m = started.elapsed().as_nanos() as f64 / handles.len() as f64;
        handles.clear();
        // The same 1M again (untimed), cancelled by token: a lookup of the
        // session and a scan of its ten timers each.
        for token in 0..10 {
            for id in &ids[..TIMER_SESSIONS] {
                engine.arm_timer(id, token, Duration::from_secs(5)).unwrap();
            }
        }
        let started = Instant::now();
        for token in 0..10 {
            for id in &ids[..TIMER_SESSIONS] {
                assert!(engine.cancel_timer(id, token).unwrap());
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let cancel_token_1m = started.elapsed().as_nanos() as f64 / (10 * TIMER_SESSIONS) as f64;
        // One page of the hot topic's 10K subscribers, in µs.
        let fan_out = || {
            let started = Instant::now();
            let page = engine
                .subscribers("resource://hot", TopicCursor::START, 10_000)
                .unwrap();
            assert_eq!(page.ids.len(), 10_000);
            #[allow(clippy::cast_precision_loss)]
            let us = started.elapsed().as_nanos() as f64 / 1000.0;
            us
        };
        let fanout = fan_out();
        // One subscriber comes and goes: the next listing starts on a set
        // that changed, so it sorts the topic's subscribers first.
        let outsider = &ids[1];
        assert!(engine.subscribe(outsider, "resource://hot").unwrap());
        assert!(engine.unsubscribe(outsider, "resource://hot").unwrap());
        let fanout_changed = fan_out();
        for (s, v) in samples.iter_mut().zip([
            touch,
            rate,
            sub,
            unsub,
            timer,
            by_handle,
            arm_1m,
            cancel_1m,
            cancel_token_1m,
            fanout,
            fanout_changed,
        ]) {
            s.push(v);
        }
        for (r, v) in ratios.iter_mut().zip([rate, sub, unsub, timer, by_handle]) {
            r.push(v / touch);
        }
    }
    println!("{rounds} rounds, {sessions} sessions; medians over the rounds:");
    for (name, s) in names.iter().zip(&mut samples) {
        println!("  {name:<40} {:>9.1}", median(s));
    }
    println!("median of the per-round ratios to touch:");
    for (name, r) in names[1..6].iter().zip(&mut ratios) {
        let name = name.split(" (").next().unwrap_or(name);
        println!("  {name:<40} {:>9.2}x", median(r));
    }
}
