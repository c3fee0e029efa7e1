//! A store connected on one runtime serves callers on others: worker threads
//! each with their own current-thread runtime (time driver only, no I/O
//! driver), as the load generator runs its clients.

mod support;

use std::time::Duration;

use session_engine::Timeout;
use session_redis::{RedisConfig, RedisStore};

fn exercise(store: &RedisStore, threads: usize) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("worker runtime");
                rt.block_on(async {
                    let id = store
                        .create(&[u8::try_from(t).unwrap()], Timeout::from_secs(60))
                        .await
                        .expect("create");
                    for _ in 0..50 {
                        store.get(&id).await.expect("get");
                        store.update(&id, |m| [m, b"+"].concat()).await.expect("update");
                    }
                    assert_eq!(store.peek(&id).await.expect("peek").metadata().len(), 51);
                    let page = store
                        .list(session_engine::Cursor::START, 100)
                        .await
                        .expect("list");
                    assert!(!page.sessions.is_empty());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                });
            });
        }
    });
}

#[test]
fn a_store_serves_callers_on_other_runtimes() {
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("home runtime");

    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("foreign"));
    let store = home
        .block_on(RedisStore::connect(config))
        .expect("connect standalone");
    exercise(&store, 4);
    assert_eq!(home.block_on(store.len()).unwrap(), 4);

    let cluster = support::Cluster::start(1_000);
    let config = RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("foreign"));
    let store = home
        .block_on(RedisStore::connect(config))
        .expect("connect cluster");
    exercise(&store, 4);
    assert_eq!(home.block_on(store.len()).unwrap(), 4);
}
