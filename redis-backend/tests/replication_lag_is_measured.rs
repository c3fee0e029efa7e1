//! `RedisStore::replication_lag` reads each master's offset and its
//! replicas': 0 once a replica has acknowledged everything, and at least
//! the bytes written since its link stopped while it is stopped (the
//! replica's link goes through a proxy the test freezes: the master still
//! counts it connected, but no acknowledgement comes back). A server
//! without replicas has no lag to report. The counters and the lag read as
//! one OpenMetrics exposition.

mod support;

use std::time::Duration;

use session_engine::Timeout;
use session_redis::{RedisConfig, RedisStore, ReplicationLag};
use support::proxy::Proxy;
use support::Server;

/// Only for failing: every wait here ends as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

async fn lag_until(store: &RedisStore, what: &str, done: impl Fn(&ReplicationLag) -> bool) -> ReplicationLag {
    let start = std::time::Instant::now();
    loop {
        let lag = store.replication_lag().await.expect("replication_lag");
        if done(&lag) {
            return lag;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_zero_when_synced_and_grows_while_the_link_is_stopped() {
    support::require_redis();
    let master = Server::standalone();
    let link = Proxy::start(master.port).await;
    let replica = tokio::task::block_in_place(|| Server::replica_of(link.port()));
    tokio::task::block_in_place(|| {
        support::wait_for("the replica in sync", PATIENCE, || {
            replica.info_field("replication", "master_link_status").as_deref() == Some("up")
        })
    });
    let config = RedisConfig::standalone(master.url()).key_prefix(support::unique_prefix("lag"));
    let store = RedisStore::connect(config).await.expect("connect");
    for _ in 0..10 {
        store.create(&[7; 100], Timeout::from_secs(600)).await.unwrap();
    }

    // Synced: the replica acknowledges everything (about once a second).
    let synced = lag_until(&store, "lag 0", |l| l.lag_bytes_max() == Some(0)).await;
    assert_eq!(synced.masters.len(), 1);
    let m = &synced.masters[0];
    assert_eq!(m.master, format!("127.0.0.1:{}", master.port));
    assert_eq!(m.replicas.len(), 1);
    assert_eq!(m.replicas[0].state, "online");
    assert_eq!(m.replicas[0].address, format!("127.0.0.1:{}", replica.port));
    assert!(m.offset_bytes > 1_000, "10 writes of 100 bytes: {m:?}");
    assert_eq!(m.replicas[0].offset_bytes, m.offset_bytes);

    // The link stops: the writes since are the lag, at least their bytes.
    link.wedge();
    let before = m.offset_bytes;
    for _ in 0..20 {
        store.create(&[8; 1_024], Timeout::from_secs(600)).await.unwrap();
    }
    let behind = lag_until(&store, "the writes in the lag", |l| {
        l.masters[0].lag_bytes().is_some_and(|lag| lag >= 20 * 1_024)
    })
    .await;
    let m = &behind.masters[0];
    assert!(m.offset_bytes >= before + 20 * 1_024, "{m:?}");
    assert_eq!(m.lag_bytes(), Some(m.offset_bytes - m.replicas[0].offset_bytes));

    // One exposition: the counters' families, the lag's, one EOF.
    let mut text = String::new();
    store
        .stats()
        .write_openmetrics_families(&mut text, "session_redis")
        .unwrap();
    behind.write_openmetrics(&mut text, "session_redis").unwrap();
    let lag_line = format!(
        "session_redis_replication_lag_bytes{{master=\"127.0.0.1:{}\"}} {}\n",
        master.port,
        m.lag_bytes().unwrap()
    );
    assert!(text.contains(&lag_line), "{text}");
    assert!(text.contains("# TYPE session_redis_resends counter\n"), "{text}");
    assert!(text.contains("\nsession_redis_resends_total "), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_replicas_has_no_lag() {
    support::require_redis();
    let server = Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("no-lag"));
    let store = RedisStore::connect(config).await.expect("connect");
    store.create(b"x", Timeout::from_secs(60)).await.unwrap();
    let lag = store.replication_lag().await.unwrap();
    assert_eq!(lag.masters.len(), 1);
    assert!(lag.masters[0].replicas.is_empty());
    assert_eq!(lag.lag_bytes_max(), None);
}
