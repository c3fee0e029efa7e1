//! On Redis, `delete_expired` sweeps the topic indexes, which can fail (a
//! master that does not answer). tower-sessions' `continuously_delete_expired`
//! ends its loop for good on the first error, so the adapter logs such a
//! failure instead of returning it: one frozen server must not end the
//! deletion task for the life of the process.

mod support;

use std::time::Duration;

use session_redis::{RedisConfig, RedisStore};
use session_tower::TowerStore;
use tower_sessions_core::session_store::ExpiredDeletion;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sweep_does_not_end_the_deletion_task() {
    let server = support::redis::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::redis::unique_prefix("tower-sweep"))
            // Each failing sweep waits it out; the healthy steps must fit
            // in it on a busy machine.
            .request_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("connect");
    let tower = TowerStore::new(store.clone());
    tower.delete_expired().await.expect("a healthy sweep");

    server.freeze();
    assert!(
        store.cleanup_expired().await.is_err(),
        "the store's sweep fails while its server is frozen"
    );
    tower
        .delete_expired()
        .await
        .expect("a failed sweep is logged, not returned");
    let task = tokio::spawn(tower.continuously_delete_expired(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!task.is_finished(), "the deletion task ended: {:?}", task.await);
    task.abort();
    server.resume();
}
