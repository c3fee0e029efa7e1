//! `SyncScope::FileSystem`: rounds that sync several logs make one
//! `syncfs` of their file system instead of a sync of each. Every
//! acknowledged write survives a reopen; a failed or panicking sync in such
//! a round reaches each of its waiters as an error, not a hang, and the
//! logs refuse writes from then on; the `Interval` flush goes the same way;
//! and the scope is refused where it would sync nothing.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::{Config, Durability, Engine, Error, SessionId, SessionStore, SyncScope, Timeout};

fn file_system_config(dir: &std::path::Path, shards: usize) -> Config {
    support::always_config(dir, shards).sync_scope(SyncScope::FileSystem)
}

fn two_threads() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `tasks` tasks each creating `writes_each` sessions through the async
/// trait: every outcome, with the metadata it wrote.
fn async_creates(
    engine: &Arc<Engine>,
    tasks: usize,
    writes_each: usize,
) -> Vec<(Vec<u8>, Result<SessionId, Error>)> {
    two_threads().block_on(async {
        let tasks: Vec<_> = (0..tasks)
            .map(|t| {
                let engine = Arc::clone(engine);
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for i in 0..writes_each {
                        let meta = format!("task {t} write {i}").into_bytes();
                        let outcome = SessionStore::create(&*engine, &meta, Timeout::from_secs(3600)).await;
                        outcomes.push((meta, outcome));
                    }
                    outcomes
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

#[test]
fn async_writers_over_many_logs_share_file_system_syncs_and_every_ack_survives() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let shards = 8;
    let engine = Arc::new(Engine::open(file_system_config(dir.path(), shards)).unwrap());
    let outcomes = async_creates(&engine, 64, 30);
    let acked: HashMap<SessionId, Vec<u8>> = outcomes
        .into_iter()
        .map(|(meta, outcome)| (outcome.unwrap(), meta))
        .collect();
    assert_eq!(acked.len(), 64 * 30);
    let syncs = engine.stats().log_syncs;
    assert!(syncs > 0);
    assert!(
        syncs < acked.len() as u64,
        "{syncs} log syncs for {} writes: no write shared a sync",
        acked.len()
    );
    drop(engine);
    let engine = Engine::open(file_system_config(dir.path(), shards)).unwrap();
    assert_eq!(engine.len(), acked.len());
    for (id, meta) in &acked {
        assert_eq!(engine.peek(id).unwrap().metadata(), &meta[..]);
    }
}

/// Every sync of a round fails (the test hook fails each log's part of a
/// `syncfs` round as a failing disk would): its async writers learn that
/// their outcome is unknown (or that writes are refused), none is
/// acknowledged, none waits forever, and what was refused is not there
/// after a reopen.
#[test]
fn a_failed_file_system_round_reaches_every_waiter() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(file_system_config(dir.path(), 4)).unwrap());
    let before = engine.create(b"before", Timeout::Never).unwrap();
    engine.debug_fail_syncs();
    let outcomes = async_creates(&engine, 32, 2);
    let mut unknown = std::collections::HashSet::new();
    for (meta, outcome) in &outcomes {
        match outcome {
            Ok(_) => panic!("a create was acknowledged although every sync fails"),
            Err(Error::OutcomeUnknown { .. }) => {
                unknown.insert(meta.clone());
            }
            Err(Error::WritesRefused { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(!unknown.is_empty(), "the failed round is reported to its writers");
    let err = engine.create(b"after", Timeout::Never).unwrap_err();
    assert!(matches!(err, Error::WritesRefused { .. }), "{err}");
    assert!(engine.get(&before).is_ok(), "reads go on");
    drop(engine);
    let engine = Engine::open(file_system_config(dir.path(), 4)).unwrap();
    assert_eq!(engine.peek(&before).unwrap().metadata(), b"before");
    for session in engine.list_all() {
        assert!(
            session.id() == before || unknown.contains(session.metadata()),
            "a refused write came back: {:?}",
            String::from_utf8_lossy(session.metadata())
        );
    }
}

/// A panic in a log's part of a `syncfs` round fails that round's writers
/// instead of leaving them waiting (the log's `flushing` set forever).
#[test]
fn a_panicking_file_system_round_fails_its_writers_instead_of_hanging_them() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(file_system_config(dir.path(), 4)).unwrap());
    engine.debug_panic_syncs();
    for (_, outcome) in async_creates(&engine, 16, 2) {
        match outcome {
            Ok(_) => panic!("a create was acknowledged although every sync panics"),
            Err(Error::OutcomeUnknown { reason } | Error::WritesRefused { reason }) => {
                assert!(reason.contains("panicked"), "{reason}");
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}

/// The `Interval` flush syncs the file system once for every log: the
/// logs' syncs are counted, and what was written is there after a reopen.
#[test]
fn the_interval_flush_syncs_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .shards(4)
            .data_dir(dir.path())
            .durability(Durability::Interval(Duration::from_millis(5)))
            .sync_scope(SyncScope::FileSystem)
            .segment_size_bytes(256 * 1024)
    };
    let engine = Engine::open(config()).unwrap();
    let ids: Vec<_> = (0..200u32)
        .map(|i| engine.create(&i.to_le_bytes(), Timeout::from_secs(3600)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.stats().log_syncs < 2 {
        assert!(
            Instant::now() < deadline,
            "no log was synced by the interval flush"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.close().unwrap();
    let engine = Engine::open(config()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            engine.peek(id).unwrap().metadata(),
            u32::try_from(i).unwrap().to_le_bytes()
        );
    }
}

#[test]
fn the_file_system_scope_is_refused_where_nothing_is_synced() {
    let in_memory = Engine::open(Config::default().sync_scope(SyncScope::FileSystem)).unwrap_err();
    assert!(
        matches!(&in_memory, Error::InvalidConfig(m) if m.contains("sync_scope") && m.contains("no data_dir")),
        "{in_memory}"
    );
    let dir = tempfile::tempdir().unwrap();
    let never = Engine::open(
        Config::default()
            .data_dir(dir.path())
            .durability(Durability::Never)
            .sync_scope(SyncScope::FileSystem),
    )
    .unwrap_err();
    assert!(
        matches!(&never, Error::InvalidConfig(m) if m.contains("sync_scope") && m.contains("Never")),
        "{never}"
    );
    // Nothing was created by the refused open.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
