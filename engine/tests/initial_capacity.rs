//! `Config::initial_capacity` sizes every shard's table up front, so a
//! population up to it never waits for a table to grow; without it, the
//! same population makes the tables rebuild as they fill.

use session_engine::{Config, Engine, ManualClock, Timeout};

fn rebuilds_while_creating(config: Config, sessions: usize) -> u64 {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(config.shards(4).without_sweeper().clock(clock.clock())).unwrap();
    for i in 0..sessions as u64 {
        engine.create(&i.to_le_bytes(), Timeout::from_secs(60)).unwrap();
    }
    assert_eq!(engine.len(), sessions);
    engine.debug_check_invariants();
    engine.stats().rehashes_total
}

#[test]
fn a_population_up_to_the_initial_capacity_never_grows_a_table() {
    const N: usize = 50_000;
    assert_eq!(
        rebuilds_while_creating(Config::default().initial_capacity(N), N),
        0
    );
    // The same population without the room: every shard grows many times.
    assert!(rebuilds_while_creating(Config::default(), N) >= 4 * 10);
}

#[test]
fn beyond_the_initial_capacity_tables_grow_as_usual() {
    let rebuilds = rebuilds_while_creating(Config::default().initial_capacity(1_000), 50_000);
    assert!(rebuilds > 0, "{rebuilds}");
}

#[test]
fn a_persistent_engine_gets_the_room_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().data_dir(dir.path()).segment_size_bytes(1 << 20);
    assert_eq!(rebuilds_while_creating(config.initial_capacity(5_000), 5_000), 0);
}

#[test]
fn recovery_sizes_each_table_for_the_sessions_it_restores() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .data_dir(dir.path())
            .segment_size_bytes(1 << 20)
            .shards(4)
            .without_sweeper()
    };
    let engine = Engine::open(config()).unwrap();
    for i in 0..20_000u64 {
        engine.create(&i.to_le_bytes(), Timeout::Never).unwrap();
    }
    assert!(engine.stats().rehashes_total > 0, "filling grew the tables");
    engine.close().unwrap();
    let engine = Engine::open(config()).unwrap();
    assert_eq!(engine.len(), 20_000);
    assert_eq!(engine.stats().rehashes_total, 0, "restoring never grew a table");
    engine.debug_check_invariants();
}
