//! Many tasks updating one session through one store, and through several
//! stores (separate connections, as separate app servers would): every
//! increment is in, none lost, none applied twice.

mod support;

use std::sync::Arc;

use session_engine::Timeout;
use session_redis::{RedisConfig, RedisStore};

const TASKS: usize = 64;
const INCREMENTS: usize = 25;

fn counter(meta: &[u8]) -> usize {
    std::str::from_utf8(meta).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_on_one_session_lose_no_update() {
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("conc"));
    // Four stores: four connections racing, besides the tasks sharing each.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            RedisStore::connect(config.clone()).await.expect("connect"),
        ));
    }
    let id = stores[0]
        .create(b"0", Timeout::from_secs(60))
        .await
        .expect("create");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&stores[t % stores.len()]);
        tasks.spawn(async move {
            for _ in 0..INCREMENTS {
                store
                    .update(&id, |m| (counter(m) + 1).to_string().into_bytes())
                    .await
                    .expect("update");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    let total = counter(stores[1].get(&id).await.expect("get").metadata());
    assert_eq!(total, TASKS * INCREMENTS);
    let conflicts: u64 = stores.iter().map(|s| s.stats().update_conflicts).sum();
    println!("{TASKS} tasks x {INCREMENTS} increments on one session: {conflicts} lost races, all retried");
    assert!(conflicts > 0, "the test did race");
}
