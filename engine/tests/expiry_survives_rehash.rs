//! Table growth and tombstone rehashes move entries to new buckets; the
//! timer wheel is relinked each time, so every session still expires exactly
//! at its deadline, no earlier and no later.

use std::collections::HashMap;

use session_engine::{Config, Engine, ManualClock, SessionId, Timeout};

#[test]
fn deadlines_hold_across_growth_and_churn() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().shards(1).without_sweeper().clock(clock.clock())).unwrap();
    let mut deadlines: HashMap<SessionId, u64> = HashMap::new();
    // Growth: N sessions with deadlines spread over every wheel level; the
    // table doubles many times on the way, and ends just under its limit
    // (24,576 entries of 32,768 slots).
    const N: usize = 24_000;
    for i in 0..N as u64 {
        let timeout_ms = 1_000 + (i * 7_919) % 5_000_000;
        let id = engine
            .create(&i.to_le_bytes(), Timeout::from_ms(timeout_ms))
            .unwrap();
        deadlines.insert(id, clock.now_ms() + timeout_ms);
        if i % 1_000 == 0 {
            clock.advance_ms(1);
        }
    }
    let after_growth = engine.stats().rehashes_total;
    assert!(after_growth > 0, "filling the table grew it");
    // Churn: delete and create at a constant population. A removal whose
    // next slot is taken leaves a tombstone (the others are emptied at
    // once), and so near the limit these take the table over it: it
    // rebuilds with every deadline in it.
    for round in 0..4u64 {
        let ids: Vec<SessionId> = deadlines.keys().copied().collect();
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            engine.delete(id).unwrap();
            deadlines.remove(id);
            let timeout_ms = 1_000 + (n as u64 * 104_729 + round) % 5_000_000;
            let id = engine.create(b"new", Timeout::from_ms(timeout_ms)).unwrap();
            deadlines.insert(id, clock.now_ms() + timeout_ms);
        }
    }
    engine.debug_check_invariants();
    let rehashes = engine.stats().rehashes_total;
    assert!(
        rehashes > after_growth,
        "churn at a constant population near the limit rebuilt the table: {after_growth} rebuilds after filling, {rehashes} after churn"
    );
    // Walk time forward in uneven steps; at each step exactly the due ones go.
    let mut sorted: Vec<u64> = deadlines.values().copied().collect();
    sorted.sort_unstable();
    let mut now = clock.now_ms();
    let end = *sorted.last().unwrap();
    let mut step = 1;
    while now < end {
        now = (now + step).min(end);
        step = step * 3 % 7_777 + 1;
        clock.advance_ms(now - clock.now_ms());
        let due_total = sorted.partition_point(|&d| d <= now);
        let expired_so_far = N - engine.len() + engine.cleanup_expired();
        assert_eq!(expired_so_far, due_total, "at {now}");
    }
    assert_eq!(engine.len(), 0);
    engine.debug_check_invariants();
}
