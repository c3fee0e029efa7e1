//! `try_update`'s closure decides against the version it saw: `Keep`
//! slides the deadline (`Kept`, the session it saw), `Replace` commits
//! (`Replaced`, the new session), `Delete` removes the session only if no
//! one changed it since (`Deleted`, the session it saw), `Err` changes
//! nothing, not even the last access. A concurrent update makes a
//! `Replace` or `Delete` closure run again on the newer value: a `Delete`
//! never removes a value its closure did not see (a `Keep` slides whatever
//! is there, as the engine's does). A resend after a lost reply does not
//! apply twice.
//! On one server and on a cluster with the cluster preset.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_engine::{Error, Op, SessionId, Timeout, Updated};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

/// Long enough for the server's millisecond clock to move on.
const TICK: Duration = Duration::from_millis(5);

async fn the_four_outcomes(store: &RedisStore) {
    let id = store.create(b"m0", Timeout::from_secs(600)).await.unwrap();
    let start = store.peek(&id).await.unwrap();

    // Err: nothing changes, not even the last access.
    tokio::time::sleep(TICK).await;
    let r = store
        .try_update(&id, |m| {
            assert_eq!(m, b"m0");
            Err::<Op, _>("no")
        })
        .await
        .expect("backend");
    assert_eq!(r, Err("no"));
    assert_eq!(store.peek(&id).await.unwrap(), start, "untouched");

    // Keep: activity only; the session as the closure saw it.
    let r = store.try_update(&id, |_| Ok::<_, ()>(Op::Keep)).await.unwrap();
    let Ok(Updated::Kept(kept)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(kept.metadata(), b"m0");
    assert_eq!(kept.created_ms(), start.created_ms());
    assert!(kept.last_access_ms() > start.last_access_ms(), "Keep is activity");
    assert_eq!(store.peek(&id).await.unwrap(), kept);

    // Replace: as update.
    tokio::time::sleep(TICK).await;
    let r = store
        .try_update(&id, |m| Ok::<_, ()>(Op::Replace([m, b"+r"].concat())))
        .await
        .unwrap();
    let Ok(Updated::Replaced(replaced)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(replaced.metadata(), b"m0+r");
    assert_eq!(replaced.created_ms(), start.created_ms());
    assert!(replaced.last_access_ms() > kept.last_access_ms());
    assert_eq!(store.peek(&id).await.unwrap(), replaced);

    // Too large a replacement: refused, nothing changed.
    let big = vec![b'x'; 1 << 20];
    let r = store
        .try_update(&id, |_| Ok::<_, ()>(Op::Replace(big.clone())))
        .await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "{r:?}");
    assert_eq!(store.peek(&id).await.unwrap(), replaced);

    // Delete: gone; the session as the closure saw it.
    let r = store.try_update(&id, |_| Ok::<_, ()>(Op::Delete)).await.unwrap();
    let Ok(Updated::Deleted(deleted)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(deleted, replaced);
    assert!(matches!(store.peek(&id).await, Err(Error::NotFound)));

    // No session: NotFound, the closure never runs.
    let r = store
        .try_update(&id, |_| -> Result<Op, ()> { panic!("ran on a missing session") })
        .await;
    assert!(matches!(r, Err(Error::NotFound)), "{r:?}");
}

/// Runs `try_update` whose closure, on its first call, waits while the
/// test updates the session to `m1`; the closure decides `first` then,
/// `again` on every later call. Returns the result and what the closure saw.
async fn race(
    store: &RedisStore,
    first: Op,
    again: fn(&[u8]) -> Result<Op, &'static str>,
) -> (Result<Updated, &'static str>, Vec<Vec<u8>>, SessionId) {
    let id = store.create(b"m0", Timeout::from_secs(600)).await.unwrap();
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let (store, seen) = (store.clone(), Arc::clone(&seen));
        let mut first = Some(first);
        tokio::spawn(async move {
            store
                .try_update(&id, move |m| {
                    seen.lock().unwrap().push(m.to_vec());
                    match first.take() {
                        Some(op) => {
                            read_tx.send(()).unwrap();
                            go_rx.lock().unwrap().recv().unwrap();
                            Ok(op)
                        }
                        None => again(m),
                    }
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || read_rx.recv().unwrap())
        .await
        .unwrap();
    store
        .update(&id, |_| b"m1".to_vec())
        .await
        .expect("the concurrent update");
    go_tx.send(()).unwrap();
    let r = task.await.unwrap().expect("backend");
    let seen = seen.lock().unwrap().clone();
    (r, seen, id)
}

async fn a_closure_runs_again_after_a_concurrent_update(store: &RedisStore) {
    let twice = vec![b"m0".to_vec(), b"m1".to_vec()];

    // Delete loses to the update: the closure runs again on m1 and gives
    // up; m1 stays.
    let (r, seen, id) = race(store, Op::Delete, |_| Err("changed")).await;
    assert_eq!(r, Err("changed"));
    assert_eq!(seen, twice);
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"m1", "not deleted");

    // ... or deletes what it now sees.
    let (r, seen, id) = race(store, Op::Delete, |_| Ok(Op::Delete)).await;
    let Ok(Updated::Deleted(deleted)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(deleted.metadata(), b"m1", "the session it saw the second time");
    assert_eq!(seen, twice);
    assert!(matches!(store.peek(&id).await, Err(Error::NotFound)));

    // Replace loses too and builds on m1 (nothing lost).
    let (r, seen, id) = race(store, Op::Replace(b"m0+r".to_vec()), |m| {
        Ok(Op::Replace([m, b"+r"].concat()))
    })
    .await;
    let Ok(Updated::Replaced(replaced)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(replaced.metadata(), b"m1+r");
    assert_eq!(seen, twice);
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"m1+r");

    // Keep loses too: decided on m0, which is gone, it is decided again on
    // m1 (the slide stands), as the engine's keep; the keep on m1 stands.
    let (r, seen, id) = race(store, Op::Keep, |_| Ok(Op::Keep)).await;
    let Ok(Updated::Kept(kept)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(kept.metadata(), b"m1");
    assert_eq!(seen, twice);
    let now = store.peek(&id).await.unwrap();
    assert_eq!(now.metadata(), b"m1");
    assert_eq!(now.last_access_ms(), kept.last_access_ms(), "slid by the keep");
    assert!(store.stats().update_conflicts >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_update_on_one_server() {
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("try"));
    let store = RedisStore::connect(config).await.expect("connect");
    the_four_outcomes(&store).await;
    a_closure_runs_again_after_a_concurrent_update(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_update_on_a_cluster() {
    let cluster = support::Cluster::start(1_000);
    let config = support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("try"));
    let store = RedisStore::connect(config).await.expect("connect");
    the_four_outcomes(&store).await;
    a_closure_runs_again_after_a_concurrent_update(&store).await;
    assert_eq!(store.stats().replication_shortfalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_update_whose_reply_was_lost_applies_once() {
    let server = support::Server::standalone();
    let front = Proxy::start(server.port).await;
    let config = RedisConfig::standalone(front.url())
        .key_prefix(support::unique_prefix("try-lost"))
        .request_timeout(Duration::from_secs(5));
    let store = RedisStore::connect(config).await.expect("connect");
    let sha = session_redis::script_source("commit").expect("commit script").1;
    let id = store.create(b"n", Timeout::from_secs(600)).await.unwrap();

    // Replace, reply lost: the resend finds its token; applied once.
    front.lose_reply(&sha);
    let r = store
        .try_update(&id, |m| Ok::<_, ()>(Op::Replace([m, b"+1"].concat())))
        .await
        .unwrap();
    assert!(front.fault_fired());
    let Ok(Updated::Replaced(replaced)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(replaced.metadata(), b"n+1");
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"n+1");

    // Keep, reply lost: resent (a read), Kept.
    front.lose_reply(&sha);
    let r = store.try_update(&id, |_| Ok::<_, ()>(Op::Keep)).await.unwrap();
    assert!(front.fault_fired());
    assert!(
        matches!(r, Ok(Updated::Kept(ref s)) if s.metadata() == b"n+1"),
        "{r:?}"
    );

    // Delete, reply lost: the resend finds the session gone, which counts
    // as this delete's (as `delete` after a doubtful try).
    front.lose_reply(&sha);
    let r = store.try_update(&id, |_| Ok::<_, ()>(Op::Delete)).await.unwrap();
    assert!(front.fault_fired());
    assert!(
        matches!(r, Ok(Updated::Deleted(ref s)) if s.metadata() == b"n+1"),
        "{r:?}"
    );
    assert!(matches!(store.peek(&id).await, Err(Error::NotFound)));
    assert!(store.stats().resends >= 3);
}
