//! Many tasks updating one session through one store, and through several
//! stores (separate connections, as separate app servers would): every
//! increment is in, none lost, none applied twice.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_engine::{Error, Timeout};
use session_redis::{RedisConfig, RedisStore};

const TASKS: usize = 64;
const INCREMENTS: usize = 25;

fn counter(meta: &[u8]) -> usize {
    std::str::from_utf8(meta).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_on_one_session_lose_no_update() {
    let server = support::Server::standalone();
    // Every update must get through: a budget far beyond what 64 writers of
    // one session need on a slow machine (the default 1 s, one budget for
    // all of an update's races, can run out: see the next test).
    let config = RedisConfig::standalone(server.url())
        .key_prefix(support::unique_prefix("conc"))
        .request_timeout(Duration::from_secs(30));
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
async fn updates_out_of_time_under_contention_say_contended_and_are_not_in() {
    // A budget short enough that some of 64 racing writers run out of it:
    // those must report `Contended` (nothing applied) — or, if the budget
    // ran out during a round trip, `TimedOut`/`OutcomeUnknown` (maybe
    // applied) — and the counter must hold exactly the acknowledged
    // increments plus at most the doubtful ones.
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("conc-short"));
    let store =
        Arc::new(support::connect_short(config.clone().request_timeout(Duration::from_millis(150))).await);
    // Creating the session and reading the total are not what the short
    // budget is for: a store with a long one does them.
    let steady = RedisStore::connect(config.request_timeout(Duration::from_secs(10)))
        .await
        .expect("connect");
    let id = steady.create(b"0", Timeout::from_secs(60)).await.expect("create");
    let (ok, contended, doubtful) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (store, ok, contended, doubtful) = (
            Arc::clone(&store),
            Arc::clone(&ok),
            Arc::clone(&contended),
            Arc::clone(&doubtful),
        );
        tasks.spawn(async move {
            for _ in 0..INCREMENTS {
                match store
                    .update(&id, |m| (counter(m) + 1).to_string().into_bytes())
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(Error::Contended { .. }) => contended.fetch_add(1, Ordering::Relaxed),
                    Err(Error::TimedOut { .. } | Error::OutcomeUnknown { .. }) => {
                        doubtful.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("update: {e:?}"),
                };
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    let (ok, contended, doubtful) = (
        ok.load(Ordering::Relaxed),
        contended.load(Ordering::Relaxed),
        doubtful.load(Ordering::Relaxed),
    );
    let total = counter(steady.get(&id).await.expect("get").metadata()) as u64;
    println!("short budget: {ok} acknowledged, {contended} contended, {doubtful} doubtful; counter {total}");
    assert!(
        total >= ok && total <= ok + doubtful,
        "counter {total}: {ok} acknowledged, {doubtful} doubtful, {contended} contended (not in)"
    );
    // The case the test is for happened (about 140 of 1,600 here).
    assert!(
        contended > 0,
        "no writer ran out of its budget: nothing was tested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_never_lands_on_a_session_inserted_again_under_its_id() {
    // The update reads m0; while its closure runs, the session is deleted
    // and its id inserted again with m1. The commit must see a different
    // session (ABA) and rerun the closure on m1.
    let server = support::Server::standalone();
    // A long budget: the update's own includes the wait for the delete and
    // the insert below, and a loaded machine may stall between them.
    let config = RedisConfig::standalone(server.url())
        .key_prefix(support::unique_prefix("aba"))
        .request_timeout(Duration::from_secs(10));
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
