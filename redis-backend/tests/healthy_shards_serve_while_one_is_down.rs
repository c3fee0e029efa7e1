//! A shard whose master and replica are both gone does not take the others
//! down: with `cluster-require-full-coverage no` (the recipe in `redis-backend/README.md` and
//! the test cluster), every node keeps serving the slots it has, so the
//! store serves every session on the healthy shards — reads and writes —
//! while the lost shard's operations fail with typed errors. (With Redis' default, `yes`, every node answers
//! `CLUSTERDOWN` for every key as soon as one slot is uncovered: every
//! operation on every shard fails.)
//!
//! The healthy shards are read and written through a store with a 10 s
//! request budget (a loaded test machine can stall a request past the
//! default 1 s; how soon a request ends is `one_budget_per_operation`'s to
//! show); the rest through one with the default budget, connected to the
//! same cluster the same way, so that the lost shard's operations fail
//! quickly.

mod support;

use std::time::Duration;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::Cluster;

const NODE_TIMEOUT_MS: u64 = 1_000;
const SESSIONS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_shards_serve_while_one_shard_is_down() {
    let mut cluster = Cluster::start(NODE_TIMEOUT_MS);
    let firsts = cluster.first_slots();
    let config = RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("down"));
    let store = RedisStore::connect(config.clone()).await.expect("connect");
    let patient = RedisStore::connect(config.request_timeout(Duration::from_secs(10)))
        .await
        .expect("connect");
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        ids.push(
            patient
                .create(i.to_string().as_bytes(), Timeout::from_secs(600))
                .await
                .expect("create"),
        );
    }
    let shard_of = |id: &SessionId| {
        let slot = u32::from(store.slot(id));
        *firsts.iter().rev().find(|f| **f <= slot).unwrap()
    };

    // Lose one shard entirely: its master and its replica.
    let lost_slot = firsts[1];
    let master = cluster.master_of(lost_slot).expect("a master");
    let replica = cluster.replica_of(master).expect("a replica");
    cluster.nodes[replica].kill9();
    cluster.nodes[master].kill9();
    // Until the others mark the master failed they still serve; after it,
    // the coverage setting decides. Wait for that event.
    let dead_port = cluster.nodes[master].port;
    tokio::task::block_in_place(|| {
        support::wait_for("the lost master flagged fail", Duration::from_secs(30), || {
            cluster
                .node_lines()
                .iter()
                .any(|l| l.port == dead_port && l.flags.split(',').any(|f| f == "fail"))
        })
    });

    let (healthy, lost): (Vec<SessionId>, Vec<SessionId>) =
        ids.iter().partition(|id| shard_of(id) != lost_slot);
    assert!(!healthy.is_empty() && !lost.is_empty());
    // Every healthy session, read and written, twice over.
    for round in 0..2 {
        for id in &healthy {
            let session = patient
                .get(id)
                .await
                .unwrap_or_else(|e| panic!("round {round}: healthy session {id} unreadable: {e}"));
            patient
                .update(id, |m| [m, b"+"].concat())
                .await
                .unwrap_or_else(|e| panic!("round {round}: healthy session {id} not writable: {e}"));
            assert!(!session.metadata().is_empty());
        }
    }
    // New sessions land on healthy shards or fail with a typed error.
    let mut created = 0;
    for _ in 0..12 {
        match store.create(b"new", Timeout::from_secs(600)).await {
            Ok(id) => {
                assert_ne!(shard_of(&id), lost_slot, "created on the lost shard");
                created += 1;
            }
            Err(Error::Unavailable { .. } | Error::TimedOut { .. } | Error::OutcomeUnknown { .. }) => {}
            Err(e) => panic!("create: {e:?}"),
        }
    }
    assert!(
        created >= 1,
        "none of 12 creates landed on the two healthy shards"
    );
    // The lost shard: typed errors (that they come within the request
    // timeout is `one_budget_per_operation`'s to show; here the limit only
    // stops a request that would hang).
    for id in lost.iter().take(3) {
        let r = tokio::time::timeout(Duration::from_secs(60), store.get(id))
            .await
            .expect("a get on the lost shard hung");
        assert!(
            matches!(r, Err(Error::Unavailable { .. } | Error::TimedOut { .. })),
            "lost shard: {r:?}"
        );
    }
    // Replication figures never come from another node under the lost
    // master's name (the cluster client sends a command for a master it
    // is not connected to to any node): they fail, or leave it out.
    let dead = format!("127.0.0.1:{dead_port}");
    for _ in 0..10 {
        let lag = tokio::time::timeout(Duration::from_secs(60), store.replication_lag())
            .await
            .expect("replication_lag hung");
        if let Ok(lag) = lag {
            assert!(
                lag.masters.iter().all(|m| m.master != dead),
                "figures under the lost master's name: {lag:?}"
            );
        }
    }
}
