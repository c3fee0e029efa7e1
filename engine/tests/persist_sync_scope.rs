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

/// `config` opened, or `None` if the scope is refused because the temp
/// dir is not on ext4 (the one file system it accepts; this machine's is):
/// then the refusal is what is checked.
fn open_on_ext4(config: Config) -> Option<Engine> {
    match Engine::open(config) {
        Ok(engine) => Some(engine),
        Err(Error::InvalidConfig(why)) if why.contains("not ext4") => {
            eprintln!("the temp dir is not on ext4, so SyncScope::FileSystem is refused: {why}");
            None
        }
        Err(other) => panic!("{other}"),
    }
}

/// [`open_on_ext4`] of 4 shards in `Always` mode with `SyncScope::FileSystem`,
/// shared with the writers' tasks.
fn four_shards_on_ext4(dir: &std::path::Path) -> Option<Arc<Engine>> {
    open_on_ext4(file_system_config(dir, 4)).map(Arc::new)
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
    let Some(engine) = open_on_ext4(file_system_config(dir.path(), shards)) else {
        return;
    };
    let engine = Arc::new(engine);
    let outcomes = async_creates(&engine, 64, 30);
    let acked: HashMap<SessionId, Vec<u8>> = outcomes
        .into_iter()
        .map(|(meta, outcome)| (outcome.unwrap(), meta))
        .collect();
    assert_eq!(acked.len(), 64 * 30);
    let stats = engine.stats();
    let syncs = stats.log_syncs;
    assert!(
        stats.log_syncs_by_file_system > 0,
        "no round synced its logs with a syncfs: {stats:?}"
    );
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
    let Some(engine) = four_shards_on_ext4(dir.path()) else {
        return;
    };
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

/// A `syncfs` that fails (a writeback error somewhere on the file system:
/// the kernel reports it once, and it may concern any log's pages) fails
/// its round's writers and every later write of every log on that file
/// system, those that sync on their own included: a log that was not in
/// the failed round must not acknowledge a write through its own sync,
/// which would not hear of the error again.
#[test]
fn a_failed_syncfs_fails_every_log_on_its_file_system() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = four_shards_on_ext4(dir.path()) else {
        return;
    };
    // Ids of each shard: the async writers write to shards 0 and 1 only,
    // so shards 2 and 3 are in no round that fails.
    let mut by_shard: Vec<Vec<SessionId>> = vec![Vec::new(); 4];
    while by_shard.iter().any(|ids| ids.len() < 128) {
        let id = SessionId::random().unwrap();
        by_shard[engine.debug_shard_of(&id)].push(id);
    }
    let before = engine.create(b"before", Timeout::Never).unwrap();
    engine.debug_fail_file_system_syncs();
    let writers: Vec<SessionId> = by_shard[0].iter().chain(&by_shard[1]).copied().collect();
    let outcomes: Vec<(SessionId, Result<(), Error>)> = two_threads().block_on(async {
        let tasks: Vec<_> = writers
            .chunks(4)
            .map(|ids| {
                let (engine, ids) = (Arc::clone(&engine), ids.to_vec());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for id in ids {
                        let outcome = SessionStore::insert(&*engine, id, b"async", Timeout::Never).await;
                        outcomes.push((id, outcome));
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
    });
    let mut unknown = std::collections::HashSet::new();
    for (id, outcome) in &outcomes {
        match outcome {
            // A round with one busy log syncs it alone, before any
            // `syncfs` has failed.
            Ok(()) => {}
            Err(Error::OutcomeUnknown { reason }) => {
                assert!(reason.contains("syncfs"), "{reason}");
                unknown.insert(*id);
            }
            Err(Error::WritesRefused { reason }) => assert!(reason.contains("syncfs"), "{reason}"),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(!unknown.is_empty(), "no writer heard of the failed syncfs");
    // Shards 2 and 3 refuse too, though no round of theirs failed: a
    // blocking writer syncs its log on its own, and that sync would not
    // hear of the error the failed `syncfs` took.
    for id in by_shard[2].iter().chain(&by_shard[3]).take(16) {
        match engine.insert(*id, b"blocking", Timeout::Never) {
            Err(Error::OutcomeUnknown { reason }) => {
                assert!(reason.contains("syncfs"), "{reason}");
                unknown.insert(*id);
            }
            Err(Error::WritesRefused { reason }) => assert!(reason.contains("syncfs"), "{reason}"),
            other => panic!("a write to a log outside the failed round: {other:?}"),
        }
    }
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 4)).unwrap();
    assert_eq!(engine.peek(&before).unwrap().metadata(), b"before");
    for (id, outcome) in &outcomes {
        if outcome.is_ok() {
            assert_eq!(engine.peek(id).unwrap().metadata(), b"async");
        }
    }
    for session in engine.list_all() {
        let acked = outcomes.iter().any(|(id, o)| *id == session.id() && o.is_ok());
        assert!(
            session.id() == before || acked || unknown.contains(&session.id()),
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
    let Some(engine) = four_shards_on_ext4(dir.path()) else {
        return;
    };
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
    let Some(engine) = open_on_ext4(config()) else {
        return;
    };
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

/// Everything under `dir`: each file's path and bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A file system the scope refuses is refused before the open changes the
/// directory: an open that would rewrite it (here a reshard; a `Repair`
/// or an upgrade alike) leaves every file as it was, and the open after
/// it, without the scope, still reports the rewrite it does.
#[test]
fn a_file_system_the_scope_refuses_is_refused_before_the_directory_changes() {
    let shm = std::path::Path::new("/dev/shm");
    let Ok(dir) = tempfile::tempdir_in(shm) else {
        eprintln!("no /dev/shm here: nothing to check");
        return;
    };
    let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
    let ids: Vec<SessionId> = (0..50u32)
        .map(|i| engine.create(&i.to_le_bytes(), Timeout::from_secs(3600)).unwrap())
        .collect();
    drop(engine);
    let before = files_under(dir.path());
    match Engine::open(file_system_config(dir.path(), 4)) {
        Err(Error::InvalidConfig(why)) if why.contains("not ext4") => {}
        Err(other) => panic!("{other}"),
        Ok(_) => {
            eprintln!("/dev/shm is on ext4 here: nothing to check");
            return;
        }
    }
    assert!(
        files_under(dir.path()) == before,
        "the refused open changed the directory"
    );
    let engine = Engine::open(support::always_config(dir.path(), 4)).unwrap();
    assert_eq!(engine.recovery_report().unwrap().reshard, Some((2, 4)));
    for (i, id) in (0..50u32).zip(&ids) {
        assert_eq!(engine.peek(id).unwrap().metadata(), i.to_le_bytes());
    }
}
