//! The shared behaviour suite, and its per-session state cases, against
//! one real `redis-server`.

mod support;

use session_redis::{RedisConfig, RedisStore};
use session_testkit::{run_state_suite, run_suite, SuiteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_redis_passes_the_suite() {
    let server = support::Server::standalone();
    let url = server.url();
    let options = SuiteOptions {
        native_expiry: true,
        ..SuiteOptions::default()
    };
    run_suite("redis standalone", options, || {
        let config = RedisConfig::standalone(url.clone()).key_prefix(support::unique_prefix("suite"));
        async move { RedisStore::connect(config).await.expect("connect") }
    })
    .await;
    run_state_suite("redis standalone", options, || {
        let config = RedisConfig::standalone(url.clone()).key_prefix(support::unique_prefix("state"));
        async move { RedisStore::connect(config).await.expect("connect") }
    })
    .await;
    drop(server);
}
