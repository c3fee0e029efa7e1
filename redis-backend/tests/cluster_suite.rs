//! The shared behaviour suite and its per-session state cases against a
//! real 6-node Redis Cluster (3 masters,
//! 3 replicas), with the cluster preset (every write waits for one replica),
//! plus what only a cluster shows: listing spans every master, and
//! replication lag is read from each of them.

mod support;

use session_engine::{Cursor, Timeout};
use session_redis::{RedisConfig, RedisStore, Replication};
use session_testkit::{run_state_suite, run_suite, SuiteOptions};

/// Node timeout of the test cluster (short, to keep failovers fast).
const NODE_TIMEOUT_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_suite_and_lists_every_master() {
    let cluster = support::Cluster::start(NODE_TIMEOUT_MS);
    let urls = cluster.urls();
    let options = SuiteOptions {
        native_expiry: true,
        ..SuiteOptions::default()
    };
    run_suite("redis cluster", options, || {
        let config = support::cluster_preset(urls.clone()).key_prefix(support::unique_prefix("suite"));
        async move { RedisStore::connect(config).await.expect("connect") }
    })
    .await;
    run_state_suite("redis cluster", options, || {
        let config = support::cluster_preset(urls.clone()).key_prefix(support::unique_prefix("state"));
        async move { RedisStore::connect(config).await.expect("connect") }
    })
    .await;

    // Listing visits all three masters, naming each by its first slot.
    let config = RedisConfig::cluster(urls.clone())
        .key_prefix(support::unique_prefix("spread"))
        .replication(Replication::Async);
    let store = RedisStore::connect(config).await.expect("connect");
    for i in 0..300u32 {
        store
            .create(&i.to_le_bytes(), Timeout::from_secs(60))
            .await
            .expect("create");
    }
    let mut parts = std::collections::BTreeSet::new();
    let mut listed = 0;
    let mut cursor = Cursor::START;
    loop {
        let page = store.list(cursor, 40).await.expect("list");
        listed += page.sessions.len();
        match page.next {
            Some(next) => {
                // The low 14 bits: the master's first slot (the bits above
                // mark its process).
                parts.insert(next.part() % 16_384);
                cursor = next;
            }
            None => break,
        }
    }
    assert_eq!(listed, 300);
    let firsts: std::collections::BTreeSet<u32> = cluster.first_slots().into_iter().collect();
    assert_eq!(parts, firsts, "cursors name each master by its first slot");
    assert_eq!(store.len().await.unwrap(), 300);
    // The store's own slot computation (its direct per-master routing)
    // agrees with the servers'.
    let page = store.list(Cursor::START, 50).await.expect("list");
    for session in &page.sessions {
        let server_slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &store.key(&session.id())]);
        assert_eq!(server_slot.trim(), store.slot(&session.id()).to_string());
    }
    assert_eq!(store.stats().client_rebuilds, 0);

    // Replication lag: one INFO per master, each master's replica there;
    // once the replicas have acknowledged the writes above, no lag.
    let started = std::time::Instant::now();
    loop {
        let lag = store.replication_lag().await.expect("replication_lag");
        assert_eq!(lag.masters.len(), 3, "{lag:?}");
        assert!(lag.masters.iter().all(|m| m.replicas.len() == 1), "{lag:?}");
        if lag.lag_bytes_max() == Some(0) {
            break;
        }
        // Only for failing: replicas acknowledge about once a second.
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{lag:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
