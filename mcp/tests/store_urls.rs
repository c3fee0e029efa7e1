//! The example's `--store` is a URL: its scheme is read in any case, as
//! every URL's is, and a flag that applies to Redis alone is refused with
//! the embedded engine rather than ignored.

mod support;

use std::time::Duration;

use support::{Client, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_scheme_in_capitals_names_redis() {
    let redis = support::redis::Server::standalone();
    let url = redis.url().replacen("redis://", "REDIS://", 1);
    assert!(url.starts_with("REDIS://"), "{url}");
    let server = Server::start(&["--store", &url]);
    let client = Client::connect(&server.url).await;
    assert_eq!(client.counter().await, 1);
    assert_eq!(client.counter().await, 2);
    let keys: u64 = redis.cli(&["DBSIZE"]).trim().parse().expect("DBSIZE");
    assert!(keys >= 1, "the session is in Redis: {keys} keys");
}

#[test]
fn wait_replicas_is_refused_with_the_engine() {
    let (status, stderr) = support::run_to_exit(
        &["--store", "memory:", "--wait-replicas", "1"],
        Duration::from_secs(30),
    )
    .expect("the example started with a flag it ignores");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("--wait-replicas"), "{stderr}");
}
