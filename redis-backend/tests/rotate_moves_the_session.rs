//! `rotate` moves a session to a fresh id atomically: the old id is gone,
//! the new one holds the same metadata, creation time and timeout, its last
//! access now; `NotFound` without a live session; updates racing it are
//! either carried over or find the session gone (none lost once
//! acknowledged); a rotation whose reply was lost is not done twice. On a
//! cluster the new id lands in the old one's slot (a script may only touch
//! one slot's keys), so the cluster preset's rotations go through.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

/// Long enough for the server's millisecond clock to move on.
const TICK: Duration = Duration::from_millis(5);

async fn rotations_move_sessions(store: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    let old = store
        .create(b"alice", Timeout::from_secs(600))
        .await
        .expect("create");
    let before = store.peek(&old).await.unwrap();
    tokio::time::sleep(TICK).await;
    let new = store.rotate(&old).await.expect("rotate");
    assert_ne!(new, old);
    assert_eq!(store.slot(&new), store.slot(&old), "same slot");
    assert!(
        matches!(store.peek(&old).await, Err(Error::NotFound)),
        "old id gone"
    );
    assert!(!store.contains(&old).await.unwrap());
    let after = store.peek(&new).await.expect("new id holds the session");
    assert_eq!(after.id(), new);
    assert_eq!(after.metadata(), b"alice");
    assert_eq!(after.created_ms(), before.created_ms());
    assert_eq!(after.timeout(), before.timeout());
    assert!(
        after.last_access_ms() > before.last_access_ms(),
        "a rotation is activity"
    );
    // The key expires at the session's deadline (`PEXPIRETIME`, absolute:
    // a relative `PTTL` window would also count a stall before the check).
    let at: i64 = server(&["PEXPIRETIME", &store.key(&new)]).trim().parse().unwrap();
    let deadline = i64::try_from(after.last_access_ms() + 600_000).unwrap();
    assert!(
        (at - deadline).abs() <= 2,
        "the new key expires at {at}, the session's deadline is {deadline}"
    );
    assert_eq!(server(&["EXISTS", &store.key(&old)]).trim(), "0");
    // The store's slot is the server's.
    let keyslot = server(&["CLUSTER", "KEYSLOT", &store.key(&new)]);
    if !keyslot.contains("ERR") {
        assert_eq!(keyslot.trim(), store.slot(&new).to_string());
    }
    // The new id works for everything; rotating again moves it on.
    store
        .update(&new, |m| [m, b"+1"].concat())
        .await
        .expect("update new");
    let newer = store.rotate(&new).await.expect("rotate again");
    assert_eq!(store.get(&newer).await.unwrap().metadata(), b"alice+1");
    assert!(matches!(store.rotate(&new).await, Err(Error::NotFound)));
    assert!(matches!(store.rotate(&old).await, Err(Error::NotFound)));
    assert!(matches!(
        store.rotate(&SessionId::random().unwrap()).await,
        Err(Error::NotFound)
    ));

    // "Never" stays never.
    let forever = store.create(b"f", Timeout::Never).await.unwrap();
    let moved = store.rotate(&forever).await.unwrap();
    assert_eq!(store.peek(&moved).await.unwrap().timeout(), Timeout::Never);
    assert_eq!(server(&["PTTL", &store.key(&moved)]).trim(), "-1");

    // Ids on many slots: each lands in its own slot.
    for _ in 0..50 {
        let id = store.create(b"s", Timeout::from_secs(60)).await.unwrap();
        let moved = store.rotate(&id).await.expect("rotate");
        assert_eq!(store.slot(&moved), store.slot(&id));
        store.delete(&moved).await.unwrap();
    }
}

/// Writers increment a counter in the session while it is rotated: each
/// increment acknowledged is in the rotated session (it committed before
/// the rotation, which carried it over); after the rotation the old id
/// answers `NotFound`.
async fn updates_racing_a_rotation_are_carried_over_or_refused(store: &RedisStore) {
    const WRITERS: usize = 8;
    let old = store.create(b"0", Timeout::from_secs(600)).await.unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, acknowledged) = (store.clone(), Arc::clone(&acknowledged));
        writers.spawn(async move {
            loop {
                let r = store
                    .update(&old, |m| {
                        let n: u64 = std::str::from_utf8(m).unwrap().parse().unwrap();
                        (n + 1).to_string().into_bytes()
                    })
                    .await;
                match r {
                    Ok(_) => acknowledged.fetch_add(1, Ordering::Relaxed),
                    Err(Error::NotFound) => return,
                    Err(Error::Contended { .. }) => continue,
                    Err(e) => panic!("update during a rotation: {e:?}"),
                };
            }
        });
    }
    // Let the writers get going, then rotate under them.
    while acknowledged.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let new = store.rotate(&old).await.expect("rotate under updates");
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let counter: u64 = std::str::from_utf8(store.peek(&new).await.unwrap().metadata())
        .unwrap()
        .parse()
        .unwrap();
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    println!("{acknowledged} updates acknowledged before the rotation; counter {counter}");
    assert_eq!(
        counter, acknowledged,
        "every acknowledged update carried over, none after"
    );
    assert!(matches!(store.peek(&old).await, Err(Error::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_on_one_server() {
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("rotate"));
    let store = RedisStore::connect(config).await.expect("connect");
    rotations_move_sessions(&store, &|args| server.cli(args)).await;
    updates_racing_a_rotation_are_carried_over_or_refused(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_moves_the_session_on_a_cluster() {
    let cluster = support::Cluster::start(1_000);
    let config = support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("rotate"));
    let store = RedisStore::connect(config).await.expect("connect");
    let port = cluster.nodes[0].port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rotations_move_sessions(&store, &cli).await;
    updates_racing_a_rotation_are_carried_over_or_refused(&store).await;
    assert_eq!(store.stats().replication_shortfalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_reply_was_lost_is_not_done_twice() {
    let server = support::Server::standalone();
    let front = Proxy::start(server.port).await;
    let prefix = support::unique_prefix("rotate-lost");
    let config = RedisConfig::standalone(front.url())
        .key_prefix(prefix.clone())
        .request_timeout(Duration::from_secs(5));
    let store = RedisStore::connect(config).await.expect("connect");
    let (code, sha) = session_redis::script_source("rotate").expect("rotate script");

    // The rotation applies, its reply is lost, the store resends: the
    // resend finds its token on the new key and reports that id.
    let old = store.create(b"bob", Timeout::from_secs(600)).await.unwrap();
    front.lose_reply(&sha);
    let new = store.rotate(&old).await.expect("rotate, resent");
    assert!(front.fault_fired(), "the reply was lost");
    assert!(store.stats().resends >= 1);
    assert_eq!(store.peek(&new).await.unwrap().metadata(), b"bob");
    assert!(matches!(store.peek(&old).await, Err(Error::NotFound)));
    assert_eq!(store.len().await.unwrap(), 1, "one session: not rotated twice");

    // The script itself, as a resend would run it after someone who knew
    // the old id inserted it again meanwhile: the rotation is reported done
    // and the new session is left alone.
    let (again, next) = (SessionId::random().unwrap(), SessionId::random().unwrap());
    store
        .insert(again, b"carol", Timeout::from_secs(600))
        .await
        .unwrap();
    let rotate =
        |token: &str| server.cli(&["EVAL", &code, "2", &store.key(&again), &store.key(&next), token]);
    assert_eq!(rotate("t1").trim(), "1", "rotated");
    store
        .insert(again, b"mallory", Timeout::from_secs(600))
        .await
        .unwrap();
    assert_eq!(rotate("t1").trim(), "1", "the resend reports it done");
    assert_eq!(
        store.peek(&again).await.unwrap().metadata(),
        b"mallory",
        "not moved"
    );
    assert_eq!(store.peek(&next).await.unwrap().metadata(), b"carol");
    // Another rotation onto a taken id changes nothing.
    assert_eq!(rotate("t2").trim(), "2", "the new id is taken");
    assert_eq!(store.peek(&again).await.unwrap().metadata(), b"mallory");
    assert_eq!(store.peek(&next).await.unwrap().metadata(), b"carol");
}
