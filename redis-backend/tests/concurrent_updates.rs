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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_never_lands_on_a_session_inserted_again_under_its_id() {
    // The update reads m0; while its closure runs, the session is deleted
    // and its id inserted again with m1. The commit must see a different
    // session (ABA) and rerun the closure on m1.
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("aba"));
    let store = Arc::new(RedisStore::connect(config).await.expect("connect"));
    let id = session_engine::SessionId::from_bytes([0xAB; 16]);
    store
        .insert(id, b"m0", Timeout::from_secs(60))
        .await
        .expect("insert");
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let updater = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut first = true;
            store
                .update(&id, move |m| {
                    if std::mem::take(&mut first) {
                        read_tx.send(()).unwrap();
                        go_rx.lock().unwrap().recv().unwrap();
                    }
                    [m, b"+f"].concat()
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || read_rx.recv().unwrap())
        .await
        .unwrap();
    store.delete(&id).await.expect("delete");
    store
        .insert(id, b"m1", Timeout::from_secs(60))
        .await
        .expect("insert again");
    go_tx.send(()).unwrap();
    let updated = updater.await.unwrap().expect("update");
    assert_eq!(updated.metadata(), b"m1+f");
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"m1+f");
}
