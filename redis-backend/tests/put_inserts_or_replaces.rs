//! `put` inserts or replaces in one script: a new session is created now;
//! a replaced one keeps its creation time and takes the new metadata and
//! timeout; both count as activity; bad input is refused before anything
//! is sent; an `update` that read the old metadata runs again on the put
//! one; a put whose reply was lost is resent without applying twice. On one server
//! and on a cluster with the cluster preset (every write waits for its
//! replica).

mod support;

use std::sync::Arc;
use std::time::Duration;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

/// Long enough for the server's millisecond clock to move on.
const TICK: Duration = Duration::from_millis(5);

/// The stores' metadata limit.
const METADATA_BYTES_MAX: usize = 4_096;

async fn puts_insert_or_replace(store: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    let id = SessionId::random().unwrap();

    // New: created now, with what was put.
    store
        .put(id, b"first", Timeout::from_secs(60))
        .await
        .expect("put new");
    let first = store.peek(&id).await.expect("peek");
    assert_eq!(first.metadata(), b"first");
    assert_eq!(first.timeout(), Timeout::from_secs(60));
    assert_eq!(
        first.created_ms(),
        first.last_access_ms(),
        "a new session is created now"
    );
    assert_expires_at(server, &store.key(&id), first.last_access_ms() + 60_000);

    // Replace: creation kept, metadata and timeout new, last access now.
    tokio::time::sleep(TICK).await;
    store
        .put(id, b"second", Timeout::from_secs(120))
        .await
        .expect("put replace");
    let second = store.peek(&id).await.expect("peek");
    assert_eq!(second.metadata(), b"second");
    assert_eq!(second.timeout(), Timeout::from_secs(120));
    assert_eq!(
        second.created_ms(),
        first.created_ms(),
        "a replace keeps the creation time"
    );
    assert!(
        second.last_access_ms() > first.last_access_ms(),
        "a put is activity"
    );
    assert_expires_at(server, &store.key(&id), second.last_access_ms() + 120_000);

    // To and from "never".
    store.put(id, b"third", Timeout::Never).await.expect("put never");
    assert_eq!(store.peek(&id).await.unwrap().timeout(), Timeout::Never);
    assert_eq!(server(&["PTTL", &store.key(&id)]).trim(), "-1", "no TTL");
    store
        .put(id, b"fourth", Timeout::from_secs(30))
        .await
        .expect("put timeout again");
    let fourth = store.peek(&id).await.unwrap();
    assert_expires_at(server, &store.key(&id), fourth.last_access_ms() + 30_000);
    assert_eq!(fourth.created_ms(), first.created_ms());

    // Refused before sending: nothing changes.
    let too_big = vec![0u8; METADATA_BYTES_MAX + 1];
    assert!(matches!(
        store.put(id, &too_big, Timeout::from_secs(1)).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        store.put(id, b"x", Timeout::from_ms(0)).await,
        Err(Error::InvalidTimeout { .. })
    ));
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"fourth");

    // A key under the prefix that holds another program's hash is not a
    // session, and a put leaves it alone as an insert does: it wrote the
    // session's fields into that hash and gave it a TTL.
    let foreign = SessionId::random().unwrap();
    let key = store.key(&foreign);
    server(&["HSET", &key, "other", "1"]);
    let inserted = store.insert(foreign, b"x", Timeout::from_secs(60)).await;
    assert!(matches!(inserted, Err(Error::AlreadyExists)), "{inserted:?}");
    match store.put(foreign, b"x", Timeout::from_secs(60)).await {
        Err(Error::Unavailable { reason }) => assert!(reason.contains("not a session"), "{reason}"),
        other => panic!("a put over foreign data: {other:?}"),
    }
    assert_eq!(server(&["HGETALL", &key]).trim(), "other\n1", "untouched");
    assert_eq!(server(&["PTTL", &key]).trim(), "-1", "no TTL given");
    foreign_hashes_are_no_sessions(store, server).await;

    // A put over an update in flight: the update's commit loses its race
    // and its closure runs again, on the put metadata.
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let updater = {
        let (store, seen) = (store.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            store
                .update(&id, move |m| {
                    seen.lock().unwrap().push(m.to_vec());
                    if seen.lock().unwrap().len() == 1 {
                        read_tx.send(()).unwrap();
                        go_rx.lock().unwrap().recv().unwrap();
                    }
                    [m, b"+u"].concat()
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || read_rx.recv().unwrap())
        .await
        .unwrap();
    store
        .put(id, b"put", Timeout::from_secs(60))
        .await
        .expect("put during update");
    go_tx.send(()).unwrap();
    let updated = updater.await.unwrap().expect("update");
    assert_eq!(updated.metadata(), b"put+u");
    assert_eq!(*seen.lock().unwrap(), vec![b"fourth".to_vec(), b"put".to_vec()]);
    assert_eq!(updated.created_ms(), first.created_ms());
}

/// A hash under the prefix without the session's version field (another
/// program's) is no session to any call: each finds none and writes
/// nothing. Those that checked only for a `t` (or an `m`) wrote their
/// fields into it, gave it a TTL (or took its TTL away: `t` = 0), and
/// reported success: `touch`, `subscribe` (whose index then listed the id
/// as a subscriber), `rate_limit`, `set_lifetime`, `set_ttl`, `get`.
async fn foreign_hashes_are_no_sessions(store: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    use session_engine::{Bucket, TopicCursor};
    let bucket = Bucket {
        capacity: 5,
        refill_per_sec: 1,
    };
    for fields in [
        &["t", "60000", "other", "1"][..],
        &["t", "0", "other", "1"],
        &["m", "x", "t", "60000", "c", "1", "a", "1"],
    ] {
        let id = SessionId::random().unwrap();
        let key = store.key(&id);
        let mut hset = vec!["HSET", key.as_str()];
        hset.extend_from_slice(fields);
        server(&hset);
        server(&["PEXPIRE", &key, "600000"]);
        let before = server(&["HGETALL", &key]);
        let found = |call: &str, r: Result<(), Error>| {
            assert!(matches!(r, Err(Error::NotFound)), "{call} over {fields:?}: {r:?}");
        };
        let inserted = store.insert(id, b"x", Timeout::from_secs(60)).await;
        assert!(
            matches!(inserted, Err(Error::AlreadyExists)),
            "insert over {fields:?}: {inserted:?}"
        );
        found("get", store.get(&id).await.map(drop));
        found("touch", store.touch(&id).await);
        found("set_ttl", store.set_ttl(&id, Timeout::from_secs(5)).await);
        found("set_lifetime", store.set_lifetime(&id, Timeout::Never).await);
        found("subscribe", store.subscribe(&id, "foreign").await.map(drop));
        found("unsubscribe", store.unsubscribe(&id, "foreign").await.map(drop));
        found("rate_limit", store.rate_limit(&id, bucket, 1).await.map(drop));
        // Read without a script: no session, or the fields not in a
        // session's form (a typed error naming the prefix).
        let update = store.update(&id, |m| m.to_vec()).await;
        assert!(
            matches!(update, Err(Error::NotFound | Error::Unavailable { .. })),
            "update over {fields:?}: {update:?}"
        );
        found("rotate", store.rotate(&id).await.map(drop));
        let read = store.get_many(&[id]).await;
        assert!(
            matches!(read[..], [Err(Error::NotFound)]),
            "get_many over {fields:?}: {read:?}"
        );
        assert_eq!(server(&["HGETALL", &key]), before, "written into: {fields:?}");
        let ttl: i64 = server(&["PTTL", &key]).trim().parse().unwrap();
        assert!(ttl > 590_000, "its TTL changed: {ttl} ms, {fields:?}");
    }
    let page = store
        .subscribers("foreign", TopicCursor::START, 10)
        .await
        .expect("subscribers");
    assert!(page.ids.is_empty(), "{:?}", page.ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_inserts_or_replaces_on_one_server() {
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url())
        .key_prefix(support::unique_prefix("put"))
        .metadata_bytes_max(METADATA_BYTES_MAX);
    let store = RedisStore::connect(config).await.expect("connect");
    puts_insert_or_replace(&store, &|args| server.cli(args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_inserts_or_replaces_on_a_cluster() {
    let cluster = support::Cluster::start(1_000);
    let config = support::cluster_preset(cluster.urls())
        .key_prefix(support::unique_prefix("put"))
        .metadata_bytes_max(METADATA_BYTES_MAX);
    let store = RedisStore::connect(config).await.expect("connect");
    // `redis-cli -c` follows the key to its master.
    let port = cluster.nodes[0].port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    puts_insert_or_replace(&store, &cli).await;
    assert_eq!(store.stats().replication_shortfalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_reply_was_lost_is_not_applied_twice() {
    let server = support::Server::standalone();
    let front = Proxy::start(server.port).await;
    let config = RedisConfig::standalone(front.url())
        .key_prefix(support::unique_prefix("put-lost"))
        .request_timeout(Duration::from_secs(5));
    let store = RedisStore::connect(config).await.expect("connect");
    let sha = session_redis::script_source("put").expect("put script").1;
    let id = SessionId::random().unwrap();

    // New, reply lost: the resend finds its own token.
    front.lose_reply(&sha);
    store
        .put(id, b"new", Timeout::from_secs(60))
        .await
        .expect("put new, resent");
    assert!(front.fault_fired());
    let created = store.peek(&id).await.unwrap();
    assert_eq!(created.metadata(), b"new");

    // Replace, reply lost: the same.
    tokio::time::sleep(TICK).await;
    front.lose_reply(&sha);
    store
        .put(id, b"replaced", Timeout::from_secs(90))
        .await
        .expect("put replace, resent");
    assert!(front.fault_fired());
    let replaced = store.peek(&id).await.unwrap();
    assert_eq!(replaced.metadata(), b"replaced");
    assert_eq!(replaced.timeout(), Timeout::from_secs(90));
    assert_eq!(replaced.created_ms(), created.created_ms());
    assert!(store.stats().resends >= 2);

    // The script itself, as the store resends it: a resend after an
    // `update` that built on the put's metadata finds the put's token (an
    // update leaves it) and does not apply the put again over the update.
    let (code, _) = session_redis::script_source("put").unwrap();
    let key = store.key(&id);
    let put =
        |metadata: &str, token: &str| server.cli(&["EVAL", &code, "1", &key, metadata, "60000", token, "1"]);
    assert_eq!(put("put-once", "t1").trim(), "1");
    store.update(&id, |m| [m, b"+u"].concat()).await.unwrap();
    assert_eq!(put("put-once", "t1").trim(), "1", "the resend reports it done");
    assert_eq!(
        store.peek(&id).await.unwrap().metadata(),
        b"put-once+u",
        "not applied twice"
    );
    // Another put's token in its place: a resend applies again, as if last.
    assert_eq!(put("other", "t2").trim(), "1");
    assert_eq!(put("put-once", "t1").trim(), "1");
    assert_eq!(store.peek(&id).await.unwrap().metadata(), b"put-once");
    assert_eq!(store.peek(&id).await.unwrap().created_ms(), created.created_ms());
}

/// The key expires when the session's deadline says (`PEXPIRETIME`, an
/// absolute time: no window for the time the check itself takes, which a
/// stall of the machine could stretch past a relative `PTTL` window).
fn assert_expires_at(server: &dyn Fn(&[&str]) -> String, key: &str, deadline_ms: u64) {
    let at: i64 = server(&["PEXPIRETIME", key]).trim().parse().unwrap();
    let deadline = i64::try_from(deadline_ms).unwrap();
    assert!(
        (at - deadline).abs() <= 2,
        "the key expires at {at}, the session's deadline is {deadline}"
    );
}
