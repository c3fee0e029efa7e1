//! `Always` mode through the async trait: a write's future completes once
//! its group commit has made it durable, without blocking the executor's
//! thread, so tasks on one thread share flushes; sync and async writers mix
//! on one log; a failed sync reaches async writers as an error, not a hang.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use session_engine::{Engine, Error, SessionId, SessionStore, Timeout};

const TASKS: usize = 64;
const WRITES_EACH: usize = 10;

fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `TASKS` tasks on `runtime`, each creating `writes_each` sessions through
/// the trait (and updating every `update_every`th); what was acknowledged.
fn acked_writes(
    runtime: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    writes_each: usize,
    update_every: Option<usize>,
) -> HashMap<SessionId, Vec<u8>> {
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let engine = Arc::clone(engine);
                tokio::spawn(async move {
                    let mut mine = HashMap::new();
                    for i in 0..writes_each {
                        let meta = format!("task {t} write {i}").into_bytes();
                        let id = SessionStore::create(&*engine, &meta, Timeout::from_secs(3600))
                            .await
                            .unwrap();
                        let meta = if update_every.is_some_and(|every| i % every == 0) {
                            let s = SessionStore::update(&*engine, &id, |m| [m, b" updated"].concat()).await;
                            s.unwrap().metadata().to_vec()
                        } else {
                            meta
                        };
                        mine.insert(id, meta);
                    }
                    mine
                })
            })
            .collect();
        let mut all = HashMap::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

/// Reopens the directory and finds every acknowledged write there.
fn every_ack_survives(dir: &std::path::Path, shards: usize, acked: &HashMap<SessionId, Vec<u8>>) {
    let engine = Engine::open(support::always_config(dir, shards)).unwrap();
    assert_eq!(engine.len(), acked.len());
    for (id, meta) in acked {
        assert_eq!(engine.peek(id).unwrap().metadata(), &meta[..]);
    }
}

#[test]
fn tasks_on_one_thread_share_flushes_and_every_ack_survives() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(support::always_config(dir.path(), 1)).unwrap());
    // One executor thread: had a write blocked it in its sync, the tasks
    // would run one after another and every write would need a flush.
    let acked = acked_writes(&one_thread(), &engine, WRITES_EACH, Some(3));
    let writes = (TASKS * WRITES_EACH + TASKS * WRITES_EACH.div_ceil(3)) as u64;
    let syncs = engine.stats().log_syncs;
    assert!(syncs > 0);
    assert!(
        syncs * 4 < writes,
        "{syncs} flushes for {writes} writes on one thread: the async writes did not share flushes"
    );
    drop(engine);
    every_ack_survives(dir.path(), 1, &acked);
}

/// 16 logs: more than `FLUSHER_THREADS_MAX` flusher threads, so each
/// thread syncs two logs a round, and rounds run while writers of every
/// log keep arriving. Every acknowledged write is there after a reopen,
/// and the writes still share syncs.
#[test]
fn async_writers_over_many_logs_share_rounds_and_every_ack_survives() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let shards = 16;
    assert!(shards > session_engine::limits::FLUSHER_THREADS_MAX);
    let engine = Arc::new(Engine::open(support::always_config(dir.path(), shards)).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = acked_writes(&runtime, &engine, WRITES_EACH * 3, None);
    let writes = (TASKS * WRITES_EACH * 3) as u64;
    assert_eq!(acked.len() as u64, writes);
    let syncs = engine.stats().log_syncs;
    assert!(syncs > 0);
    assert!(
        syncs < writes,
        "{syncs} syncs for {writes} writes over {shards} logs: no write shared a sync"
    );
    drop(engine);
    every_ack_survives(dir.path(), shards, &acked);
}

#[test]
fn blocking_and_async_writers_mix_on_one_log() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(support::always_config(dir.path(), 1)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let meta = format!("thread {t} write {i}");
                        engine.create(meta.as_bytes(), Timeout::Never).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let from_tasks: Vec<SessionId> = one_thread().block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..20 {
                        let meta = format!("task {t} write {i}");
                        ids.push(
                            SessionStore::create(&*engine, meta.as_bytes(), Timeout::Never)
                                .await
                                .unwrap(),
                        );
                    }
                    // Deletes settle the same way.
                    SessionStore::delete(&*engine, &ids.pop().unwrap()).await.unwrap();
                    ids
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let from_threads: Vec<SessionId> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    drop(engine);

    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    assert_eq!(engine.len(), from_tasks.len() + from_threads.len());
    for id in from_tasks.iter().chain(&from_threads) {
        assert!(engine.contains(id));
    }
}

#[test]
fn a_failed_sync_reaches_async_writers() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(support::always_config(dir.path(), 1)).unwrap());
    let before = one_thread().block_on(async {
        SessionStore::create(&*engine, b"before", Timeout::Never)
            .await
            .unwrap()
    });
    engine.debug_fail_syncs();
    let outcomes: Vec<Result<SessionId, Error>> = one_thread().block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|t| {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    SessionStore::create(&*engine, format!("{t}").as_bytes(), Timeout::Never).await
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    let mut unknown = 0;
    for outcome in &outcomes {
        match outcome {
            Ok(_) => panic!("a create was acknowledged although every sync fails"),
            Err(Error::OutcomeUnknown { .. }) => unknown += 1,
            Err(Error::WritesRefused { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        unknown > 0,
        "the failed sync is reported to the writers that waited on it"
    );
    assert_eq!(engine.len(), 1 + unknown);
    assert!(engine.get(&before).is_ok(), "reads go on");
    // After a restart: the acknowledged write, and at most the writes whose
    // outcome was unknown; a refused one left no record.
    let unknown_tasks: std::collections::HashSet<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Err(Error::OutcomeUnknown { .. })))
        .map(|(t, _)| t.to_string())
        .collect();
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    assert_eq!(engine.peek(&before).unwrap().metadata(), b"before");
    for session in engine.list_all() {
        let meta = String::from_utf8_lossy(session.metadata()).into_owned();
        assert!(
            session.id() == before || unknown_tasks.contains(&meta),
            "a refused write came back: {meta:?}"
        );
    }
}

#[test]
fn a_write_future_dropped_while_waiting_leaves_the_write_applied() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let id = SessionId::from_bytes([7; 16]);
    {
        let mut future = std::pin::pin!(SessionStore::insert(&engine, id, b"abandoned", Timeout::Never));
        let mut cx = Context::from_waker(Waker::noop());
        // The write is applied when the future is made; its first poll may
        // find it synced already, or leave it waiting for a flush.
        let _ = future.as_mut().poll(&mut cx);
    }
    // Dropped (cancelled): the write stays applied, and later writes and
    // their flushes are not held up by the abandoned waiter.
    assert_eq!(engine.peek(&id).unwrap().metadata(), b"abandoned");
    let later = one_thread().block_on(async {
        SessionStore::create(&engine, b"later", Timeout::Never)
            .await
            .unwrap()
    });
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    assert!(engine.contains(&id));
    assert!(engine.contains(&later));
}

/// `close` ends the background chores of the engine, but another clone's
/// async `Always` writes still need the flusher threads that sync for them
/// (a task cannot run a sync itself): they hung after a `close`.
#[test]
fn an_async_write_on_a_clone_after_close_completes() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let other = engine.clone();
    engine.close().unwrap();
    let id = one_thread()
        .block_on(async { SessionStore::create(&other, b"after close", Timeout::Never).await })
        .unwrap();
    drop(other);
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    assert!(engine.contains(&id));
}

/// An executor's waker that panics when a flush wakes it (a bug in the
/// executor) takes down neither the flusher thread nor the writers after
/// it. The wake-up unwound out of the flusher thread and ended it; later
/// async writes then waited for the sweeper's once-a-second sync of the
/// time mark, each (30 in a row here took about 30 s; with the flusher,
/// milliseconds).
#[test]
fn a_waker_that_panics_does_not_stop_the_flusher() {
    use std::future::Future;
    use std::task::{Context, Wake, Waker};

    struct Panicking;
    impl Wake for Panicking {
        fn wake(self: Arc<Self>) {
            panic!("the executor's waker panicked");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let first = SessionId::from_bytes([3; 16]);
    {
        let mut future = std::pin::pin!(SessionStore::insert(
            &engine,
            first,
            b"woken badly",
            Timeout::Never
        ));
        let waker = Waker::from(Arc::new(Panicking));
        let _ = future.as_mut().poll(&mut Context::from_waker(&waker));
        // The flush runs on the flusher thread, which wakes that waker.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let other = engine.clone();
    let writer = std::thread::spawn(move || {
        let written = one_thread().block_on(async {
            let mut ids = Vec::new();
            for _ in 0..30 {
                ids.push(SessionStore::create(&other, b"later", Timeout::Never).await?);
            }
            Ok::<_, Error>(ids)
        });
        let _ = tx.send(written);
    });
    let later = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("30 async writes in a row took over 10 s: no flusher thread syncs for them")
        .unwrap();
    writer.join().unwrap(); // its clone of the engine is dropped
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    assert!(engine.contains(&first));
    assert!(later.iter().all(|id| engine.contains(id)));
}
