//! A failover is not a wedge: when every request of a store goes to the
//! shard that is failing over, all of them fail until the promotion (over
//! `stuck_after`), yet the client is fine.
//! The stuck-client detector must leave it in place — it replaces the client
//! only if a fresh one works while the current one does not — and the store
//! serves the shard again through the same client.

mod support;

use std::time::{Duration, Instant};

use session_engine::{Error, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::Cluster;

const STUCK_AFTER: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_failing_through_a_failover_do_not_rebuild_the_client() {
    let mut cluster = Cluster::start(1_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("nowedge")),
    )
    .await
    .expect("connect");
    let probe = loop {
        let id = store.create(b"0", Timeout::from_secs(600)).await.expect("create");
        if u32::from(store.slot(&id)) < firsts[1] {
            break id;
        }
    };
    let victim = cluster.master_of(firsts[0]).expect("master");
    let killed = Instant::now();
    cluster.nodes[victim].kill9();
    // Only the failed shard's session: nothing succeeds until the promotion.
    loop {
        // Served: the server answers. (`NotFound` is an answer: with
        // `Async` a session created just before the kill may not have
        // reached the replica.)
        let answered = |r: &Result<(), Error>| matches!(r, Ok(()) | Err(Error::NotFound));
        let read = store.get(&probe).await.map(drop);
        let write = store.update(&probe, <[u8]>::to_vec).await.map(drop);
        if answered(&read) && answered(&write) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no recovery: {read:?} / {write:?}; {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("served again after {:?}", killed.elapsed());
    assert!(killed.elapsed() > STUCK_AFTER, "the case did not arise");
    assert_eq!(store.stats().client_rebuilds, 0, "a failover taken for a wedge");
}
