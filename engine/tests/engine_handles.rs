//! `Engine` is a cheap handle: clones share the sessions, the last one to
//! drop stops the threads and flushes the log, and it prints with `Debug`.

use session_engine::{Config, Durability, Engine, SessionStore, Timeout};

#[test]
fn clones_share_sessions_and_the_last_drop_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .shards(2)
            .data_dir(dir.path())
            .durability(Durability::Never)
    };
    let engine = Engine::open(config()).unwrap();
    let clone = engine.clone();
    let id = engine.create(b"shared", Timeout::Never).unwrap();
    assert_eq!(clone.get(&id).unwrap().metadata(), b"shared");
    drop(engine);
    // The clone keeps working after the original is gone...
    let late = clone.create(b"late", Timeout::Never).unwrap();
    let again = clone.clone();
    drop(clone);
    assert!(again.contains(&late));
    // ...and the last drop flushes (Durability::Never writes only then).
    drop(again);
    let reopened = Engine::open(config()).unwrap();
    assert_eq!(reopened.len(), 2);
    assert_eq!(reopened.peek(&late).unwrap().metadata(), b"late");
}

#[test]
fn close_flushes_while_other_handles_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .shards(1)
        .data_dir(dir.path())
        .durability(Durability::Never);
    let engine = Engine::open(config.clone()).unwrap();
    let other = engine.clone();
    let id = engine.create(b"before close", Timeout::Never).unwrap();
    engine.close().unwrap();
    assert_eq!(other.get(&id).unwrap().metadata(), b"before close");
    other.update(&id, |_| b"after close".to_vec()).unwrap();
    drop(other);
    let reopened = Engine::open(config).unwrap();
    assert_eq!(reopened.peek(&id).unwrap().metadata(), b"after close");
}

#[test]
fn debug_names_the_engine_and_its_shape() {
    let engine = Engine::open(Config::default().shards(4)).unwrap();
    engine.create(b"x", Timeout::Never).unwrap();
    let text = format!("{engine:?}");
    assert!(text.starts_with("Engine {"), "{text}");
    assert!(
        text.contains("shards: 4") && text.contains("sessions: 1"),
        "{text}"
    );
}

/// Generic code takes a store by reference as readily as by value.
#[test]
fn a_reference_to_a_store_is_a_store() {
    async fn count<S: SessionStore>(store: S) -> usize {
        store.len().await.unwrap()
    }
    let engine = Engine::open(Config::default()).unwrap();
    engine.create(b"x", Timeout::Never).unwrap();
    let n = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(count(&engine));
    assert_eq!(n, 1);
}

/// A background thread that cannot be started (the process is out of
/// threads) fails the open with `Error::Io`, after stopping the threads it
/// did start: they held the engine, and with it the data directory's lock,
/// so a second open got `DirectoryLocked`. (The open panicked.)
#[test]
fn a_thread_that_cannot_start_fails_the_open_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .shards(4)
            .data_dir(dir.path())
            .durability(Durability::Always)
    };
    // Sweeper, compactor, three flusher helpers and the flusher.
    for nth in 0..6 {
        let failed = Engine::open(config().debug_fail_thread_spawn(nth));
        match failed {
            Err(session_engine::Error::Io { context, source }) => {
                assert!(context.contains("background threads"), "{context}");
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("thread {nth}: {other:?}"),
        }
        let engine = Engine::open(config()).expect("nothing left holding the directory");
        engine.create(b"x", Timeout::Never).unwrap();
        engine.close().unwrap();
    }
    // Past the last thread: nothing fails.
    Engine::open(config().debug_fail_thread_spawn(6))
        .unwrap()
        .close()
        .unwrap();
}

/// A listener on the sweeper thread that closes the engine (through a
/// handle of its own), then goes on working: the sweeper's thread cannot
/// join itself, and the last handle's drop, on another thread, returned
/// without waiting for it, which still held the engine, its data
/// directory's lock included. A reopen right after found the directory
/// locked. The drop now waits for that thread as for the others.
#[test]
fn the_last_drop_waits_for_a_sweeper_whose_listener_closed_the_engine() {
    use std::sync::{mpsc, Arc, Mutex, OnceLock};
    let dir = tempfile::tempdir().unwrap();
    let weak: Arc<OnceLock<session_engine::WeakEngine>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(Some(tx));
    let config = Config::default()
        .shards(1)
        .data_dir(dir.path())
        .durability(Durability::Never)
        .sweep_interval(std::time::Duration::from_millis(10))
        .listener({
            let weak = Arc::clone(&weak);
            move |_, _| {
                let Some(tx) = tx.lock().unwrap().take() else {
                    return;
                };
                if let Some(engine) = weak.get().and_then(session_engine::WeakEngine::upgrade) {
                    engine.close().unwrap();
                }
                tx.send(()).unwrap();
                // Still at work on the sweeper's thread.
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        });
    let engine = Engine::open(config.clone()).unwrap();
    weak.set(engine.downgrade()).unwrap();
    engine.create(b"x", Timeout::from_ms(1)).unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the listener ran");
    drop(engine);
    let reopened = Engine::open(config.listener(|_, _| {}));
    assert!(reopened.is_ok(), "{:?}", reopened.err());
}
