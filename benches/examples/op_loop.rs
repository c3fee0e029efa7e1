//! A fixed loop of one operation kind against one contender, for counting
//! instructions under valgrind (`scripts/instructions.sh`): populate 100K
//! sessions, then run `OPS` operations on uniformly chosen live sessions in
//! `run_ops`, the only function counted.
//!
//! `cargo run --release -p session-engine-benches --example op_loop -- CONTENDER OP OPS`
//! with OP one of `get`, `peek`, `touch`, `update`, `replace`, `none` (populate only).
#![forbid(unsafe_code)]

use session_engine::ManualClock;
use session_engine_benches::{
    contender, engine_on, mixed_ops, populate, Contender, Keys, MixOp, METADATA_BYTES, SESSIONS,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .expect("CONTENDER (engine, engine-manual-clock, engine-precise-clock, mutex-map, dashmap, moka)");
    let op = args.next().expect("OP (get, peek, touch, update, replace, none)");
    let ops: usize = args.next().and_then(|n| n.parse().ok()).expect("OPS");
    // Under valgrind the TSC clock may fall back to `clock_gettime`:
    // `engine-manual-clock` takes the clock out of the count.
    let manual = ManualClock::new(1_700_000_000_000);
    let c = if name == "engine-manual-clock" {
        engine_on(manual.clock())
    } else {
        contender(&name)
    };
    let mut ids = populate(&*c, SESSIONS);
    // The clock moves past the sessions' creation before the loop
    // (uncounted), so that a loop's first `get` or `touch` of a session
    // slides its deadline, as a live server's reads do: on a clock that
    // never moved, `get` was counted as a `peek` and `touch` as a
    // `contains`. The manual clock moves a millisecond; the ticking one is
    // given time to tick (under valgrind its thread runs when this one
    // sleeps).
    manual.advance(std::time::Duration::from_millis(1));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let keys: Vec<usize> = mixed_ops(SESSIONS, ops, Keys::Uniform, 7)
        .into_iter()
        .map(|op| match op {
            MixOp::Get(k) | MixOp::Update(k) | MixOp::Replace(k) => k as usize,
        })
        .collect();
    run_ops(&*c, &op, &keys, &mut ids);
    std::hint::black_box(&ids);
}

/// The measured loop, out of line so that callgrind can count it alone
/// (`--toggle-collect=*run_ops*`): populate, key generation and the
/// engine's background thread stay out of the count.
#[inline(never)]
fn run_ops(c: &dyn Contender, op: &str, keys: &[usize], ids: &mut [session_engine::SessionId]) {
    let metadata = [0xCD_u8; METADATA_BYTES];
    for &k in keys {
        match op {
            "get" => assert!(c.get(&ids[k])),
            "peek" => assert!(c.peek(&ids[k])),
            "touch" => assert!(c.touch(&ids[k])),
            "update" => assert!(c.update(&ids[k])),
            "replace" => {
                assert!(c.delete(&ids[k]));
                ids[k] = c.create(&metadata);
            }
            "none" => {}
            other => panic!("unknown op {other}"),
        }
    }
}
