//! Creates 100K sessions, reads, updates and lists them, and prints timings.
//! (`loadgen` is the real load run; this is the embedded API at a glance.)

use std::time::Instant;

use session_engine::{Config, Engine, Timeout};

fn main() -> Result<(), session_engine::Error> {
    const N: usize = 100_000;
    let engine = Engine::open(Config::default())?;
    let metadata = [7u8; 200];

    let started = Instant::now();
    let ids: Vec<_> = (0..N)
        .map(|_| engine.create(&metadata, Timeout::from_secs(1800)))
        .collect::<Result<_, _>>()?;
    report("create", started, N);

    let started = Instant::now();
    for id in &ids {
        engine.get(id)?;
    }
    report("get", started, N);

    let started = Instant::now();
    for id in &ids {
        engine.update(id, |m| {
            let mut v = m.to_vec();
            v[0] = v[0].wrapping_add(1);
            v
        })?;
    }
    report("update", started, N);

    let started = Instant::now();
    let listed = engine.list_all().len();
    println!("list all {listed:>7} sessions: {:>10.2?}", started.elapsed());

    let started = Instant::now();
    for id in &ids {
        engine.delete(id)?;
    }
    report("delete", started, N);
    println!(
        "shards: {}, sessions left: {}",
        engine.shard_count(),
        engine.len()
    );
    Ok(())
}

fn report(op: &str, started: Instant, n: usize) {
    let elapsed = started.elapsed();
    #[allow(clippy::cast_precision_loss)]
    let per_op_ns = elapsed.as_nanos() as f64 / n as f64;
    println!("{op:<8} {n:>7} sessions: {elapsed:>10.2?} ({per_op_ns:>6.0} ns/op, one thread)");
}
