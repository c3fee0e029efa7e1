//! The embedded engine against the shared behaviour suite: the reference the
//! remote backends are held to.

use std::time::Duration;

use session_engine::{Config, Engine};
use session_testkit::{run_state_suite, run_suite, SuiteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_engine_passes_the_suite() {
    run_suite("engine", SuiteOptions::default(), || async {
        Engine::open(Config::default().sweep_interval(Duration::from_millis(10))).expect("open engine")
    })
    .await;
}

/// The same suite through `AnyStore` (dyn dispatch, boxed closures): the
/// run-time choice of backend keeps every semantic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_behind_any_store_passes_the_suite() {
    run_suite("any-store(engine)", SuiteOptions::default(), || async {
        session_engine::AnyStore::new(
            Engine::open(Config::default().sweep_interval(Duration::from_millis(10))).expect("open engine"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_engine_passes_the_state_suite() {
    run_state_suite("engine", SuiteOptions::default(), || async {
        Engine::open(Config::default().sweep_interval(Duration::from_millis(10))).expect("open engine")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_behind_any_store_passes_the_state_suite() {
    run_state_suite("any-store(engine)", SuiteOptions::default(), || async {
        session_engine::AnyStore::new(
            Engine::open(Config::default().sweep_interval(Duration::from_millis(10))).expect("open engine"),
        )
    })
    .await;
}

/// The state suite on a persisted engine (every subscribe is a log record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_engine_passes_the_state_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_state_suite("engine(persisted)", SuiteOptions::default(), || {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::default()
            .data_dir(dir.path())
            .shards(2)
            .segment_size_bytes(1 << 20)
            .sweep_interval(Duration::from_millis(10));
        dirs.lock().unwrap().push(dir);
        async move { Engine::open(config).expect("open engine") }
    })
    .await;
}

/// A persisted engine under `Always`: each write answers only after its
/// record is synced, and a refusal or a read waits for the log where it may
/// rest on another caller's unsynced write. The suite holds there too.
fn always_config(dirs: &std::sync::Mutex<Vec<tempfile::TempDir>>) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::default()
        .data_dir(dir.path())
        .durability(session_engine::Durability::Always)
        .shards(2)
        .segment_size_bytes(1 << 20)
        .sweep_interval(Duration::from_millis(10));
    dirs.lock().unwrap().push(dir);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_syncing_every_write_passes_the_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_suite("engine(always)", SuiteOptions::default(), || {
        let config = always_config(&dirs);
        async move { Engine::open(config).expect("open engine") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_syncing_every_write_passes_the_state_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_state_suite("engine(always)", SuiteOptions::default(), || {
        let config = always_config(&dirs);
        async move { Engine::open(config).expect("open engine") }
    })
    .await;
}
