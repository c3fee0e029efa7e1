//! Scaling out: a new, empty master joins the cluster and slots are
//! migrated to it key by key. While a slot migrates, a key already moved
//! gets `ASK <slot> <new master>` from the old master, and the new master
//! is in no client's slot map yet (it serves no slot until the migration of
//! its first slot ends). The store reaches it all the same.

mod support;

use std::time::Duration;

use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::{Cluster, Server};

const TTL: Timeout = Timeout::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_to_a_master_not_yet_in_the_slot_map_is_followed() {
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("scale-out")),
    )
    .await
    .expect("connect");
    let from = cluster.master_of(firsts[0]).expect("first master");
    let mut ids: Vec<SessionId> = Vec::new();
    let moved = loop {
        let id = store.create(b"moving", TTL).await.expect("create");
        ids.push(id);
        if u32::from(store.slot(&id)) < firsts[1] {
            break id;
        }
    };

    let new = Server::cluster_node(60_000);
    let port = new.port.to_string();
    assert_eq!(
        cluster.nodes[0]
            .cli(&["CLUSTER", "MEET", support::HOST, &port])
            .trim(),
        "OK"
    );
    let new_id = new.cli(&["CLUSTER", "MYID"]).trim().to_owned();
    support::wait_for("the new master known to all", Duration::from_secs(30), || {
        cluster.nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.starts_with(&new_id) && !l.contains("handshake") && l.contains("connected"))
        }) && new.cli(&["CLUSTER", "NODES"]).lines().count() == 7
            && new.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
    });
    let from_id = cluster.nodes[from].cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let slot = store.slot(&moved).to_string();
    let key = store.key(&moved);
    let ok = |reply: String| assert_eq!(reply.trim(), "OK", "resharding step");
    ok(new.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
    ok(cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &new_id]));
    ok(cluster.nodes[from].cli(&["MIGRATE", support::HOST, &port, "", "0", "5000", "KEYS", &key]));

    support::assert_moved_session_serves(&store, &moved, &ids).await;
}
