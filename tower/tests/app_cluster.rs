//! The example app on a real 6-node Redis Cluster (3 masters, 3 replicas),
//! given as `redis-cluster://` with two of its nodes: the same end-to-end
//! run as on the engine, and a killed and restarted app process that finds
//! its sessions in the cluster. One cluster start (the slow part).

mod support;

use support::redis::Cluster;
use support::{login_counter_cycle_logout, session_survives_restart, App};

/// Node timeout of the test cluster (no failover happens here).
const NODE_TIMEOUT_MS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_end_to_end_on_a_cluster_and_outlive_the_app() {
    let cluster = Cluster::start(NODE_TIMEOUT_MS);
    let nodes: Vec<String> = cluster.nodes.iter().take(2).map(|n| n.addr()).collect();
    let store = format!("redis-cluster://{}", nodes.join(","));
    let mut app = App::start(&["--store", &store]);
    let browser = login_counter_cycle_logout(&app).await;
    app.restart_after_kill();
    session_survives_restart(&app, &browser).await;
}
