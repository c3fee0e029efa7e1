//! An absolute lifetime cap (issue 18, as the engine's `Config::max_lifetime`
//! and `Engine::set_lifetime`): `RedisConfig::max_lifetime` gives every new
//! session one, `RedisStore::set_lifetime` sets or lifts it per session.
//! Every activity arms the key's TTL at the earlier of the inactivity
//! deadline and the cap, so a session expires at its cap however active it
//! is; `put` of a new id gets the cap, a replace and a rotation keep it; a
//! cap already passed ends the session. Against one server and the cluster
//! preset.

mod support;

use std::time::Duration;

use session_engine::{Bucket, Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

/// A session whose cap has passed when a script meets its key (at the
/// cap's own millisecond Redis still keeps the key; here the creation time
/// is moved back behind the store's back) is expired, as on the engine:
/// every operation finds it gone and deletes the key, nothing stretches
/// the cap, and a `put` stores a new session (it kept the old creation
/// time, deleted the key at once and reported success: a lost write).
async fn met_past_the_cap(capped: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    met_expired(capped, server, &["c"], 6_000).await;
}

/// Creates sessions (an hour's timeout) whose `fields` are moved `back_ms`
/// into the past behind the store's back, so that a script meets each one
/// expired while Redis still keeps its key; every operation must find it
/// gone, and `insert` and `put` store a new session.
async fn met_expired(store: &RedisStore, server: &dyn Fn(&[&str]) -> String, fields: &[&str], back_ms: u64) {
    let hour = Timeout::from_secs(3600);
    let late = || async move {
        let id = store.create(b"late", hour).await.unwrap();
        let key = store.key(&id);
        for field in fields {
            let was: u64 = server(&["HGET", &key, field]).trim().parse().unwrap();
            let earlier = (was - back_ms).to_string();
            assert_eq!(server(&["HSET", &key, field, &earlier]).trim(), "0");
        }
        id
    };
    let gone = |what: &str, r: Result<(), Error>| assert!(matches!(r, Err(Error::NotFound)), "{what}: {r:?}");
    let id = late().await;
    gone("touch", store.touch(&id).await);
    assert_eq!(
        server(&["EXISTS", &store.key(&id)]).trim(),
        "0",
        "deleted, not re-armed"
    );
    let id = late().await;
    gone("get", store.get(&id).await.map(drop));
    let id = late().await;
    gone("get_many", store.get_many(&[id]).await.remove(0).map(drop));
    let id = late().await;
    gone("update", store.update(&id, |m| m.to_vec()).await.map(drop));
    let id = late().await;
    gone("set_ttl", store.set_ttl(&id, hour).await);
    let id = late().await;
    gone("set_lifetime", store.set_lifetime(&id, Timeout::Never).await);
    let id = late().await;
    gone("rotate", store.rotate(&id).await.map(drop));
    // The per-session state's writes answer for no expired session either
    // (they answered "subscribed" and "allowed", and left an index entry).
    let id = late().await;
    gone("subscribe", store.subscribe(&id, "topic").await.map(drop));
    assert_eq!(
        server(&["EXISTS", &store.key(&id)]).trim(),
        "0",
        "subscribe deleted it"
    );
    let id = late().await;
    gone("unsubscribe", store.unsubscribe(&id, "topic").await.map(drop));
    let id = late().await;
    let bucket = Bucket {
        capacity: 5,
        refill_per_sec: 1,
    };
    gone("rate_limit", store.rate_limit(&id, bucket, 1).await.map(drop));
    let id = late().await;
    assert!(
        matches!(store.insert(id, b"again", hour).await, Ok(())),
        "an insert finds the id free"
    );
    let id = late().await;
    let before = server(&["HGET", &store.key(&id), "c"])
        .trim()
        .parse::<u64>()
        .unwrap();
    store.put(id, b"put", hour).await.unwrap();
    let s = store.peek(&id).await.expect("the put's session is there");
    assert_eq!(s.metadata(), b"put");
    assert!(s.created_ms() > before, "a new session: {s:?}");
}

/// A session whose inactivity deadline has come is expired too, though
/// Redis keeps its key through that millisecond (here its last access is
/// moved back an hour and a second; its creation time with it, so that a
/// new session shows): every operation finds it gone (a `get` or `touch`
/// at that millisecond slid it back to life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_idle_deadline_is_gone_to_every_operation() {
    let server = support::Server::standalone();
    let store =
        RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("idle")))
            .await
            .unwrap();
    met_expired(&store, &|args| server.cli(args), &["a", "c"], 3_601_000).await;
}

/// PTTL of the session's key, ms (-1: no TTL).
fn pttl(server: &dyn Fn(&[&str]) -> String, store: &RedisStore, id: &SessionId) -> i64 {
    let out = server(&["PTTL", &store.key(id)]);
    out.trim().parse().unwrap_or_else(|_| panic!("PTTL: {out:?}"))
}

async fn caps(capped: &RedisStore, plain: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    let hour = Timeout::from_secs(3600);
    let cap = Timeout::from_secs(5);

    // A new session gets the configured cap: its TTL is the cap's, not the
    // hour's, and stays within it through every kind of activity.
    let id = capped.create(b"m", hour).await.unwrap();
    let created = capped.peek(&id).await.unwrap();
    assert_eq!(created.lifetime(), cap);
    assert_eq!(created.expires_at_ms(), Some(created.created_ms() + 5_000));
    assert!((1..=5_000).contains(&pttl(server, capped, &id)));
    capped.get(&id).await.unwrap();
    capped.touch(&id).await.unwrap();
    capped.update(&id, |m| [m, b"+"].concat()).await.unwrap();
    capped.set_ttl(&id, Timeout::from_secs(7200)).await.unwrap();
    let after = capped.get_many(&[id]).await.remove(0).unwrap();
    assert_eq!(after.lifetime(), cap);
    assert!(
        (1..=5_000).contains(&pttl(server, capped, &id)),
        "activity never arms past the cap"
    );
    // No inactivity timeout at all: the cap still ends it.
    capped.set_ttl(&id, Timeout::Never).await.unwrap();
    assert!((1..=5_000).contains(&pttl(server, capped, &id)), "not PERSIST");
    // A rotation keeps the cap and the creation time.
    let moved = capped.rotate(&id).await.unwrap();
    let rotated = capped.peek(&moved).await.unwrap();
    assert_eq!(
        (rotated.lifetime(), rotated.created_ms()),
        (cap, created.created_ms())
    );
    assert!((1..=5_000).contains(&pttl(server, capped, &moved)));

    met_past_the_cap(capped, server).await;

    // put: a new id gets the cap; a replace keeps the session's.
    let fresh = SessionId::random().unwrap();
    capped.put(fresh, b"new", hour).await.unwrap();
    assert_eq!(capped.peek(&fresh).await.unwrap().lifetime(), cap);
    let uncapped = plain.create(b"m", hour).await.unwrap();
    capped.put(uncapped, b"replaced", hour).await.unwrap();
    assert_eq!(
        capped.peek(&uncapped).await.unwrap().lifetime(),
        Timeout::Never,
        "a replace keeps the session's (no) cap"
    );
    assert!(pttl(server, capped, &uncapped) > 3_000_000);

    // Per session: set, then lift. The cap counts from the session's
    // creation, a few round trips ago: a minute, so that no stall of the
    // machine meanwhile has it passed already.
    plain
        .set_lifetime(&uncapped, Timeout::from_secs(60))
        .await
        .unwrap();
    let s = plain.peek(&uncapped).await.unwrap();
    assert_eq!(s.lifetime(), Timeout::from_secs(60));
    assert!((1..=60_000).contains(&pttl(server, plain, &uncapped)));
    plain.set_lifetime(&uncapped, Timeout::Never).await.unwrap();
    assert_eq!(plain.peek(&uncapped).await.unwrap().lifetime(), Timeout::Never);
    assert!(pttl(server, plain, &uncapped) > 3_000_000, "back to the hour");
    // A cap that has passed ends the session at once.
    tokio::time::sleep(Duration::from_millis(5)).await;
    plain.set_lifetime(&uncapped, Timeout::from_ms(1)).await.unwrap();
    assert!(matches!(plain.peek(&uncapped).await, Err(Error::NotFound)));
    let missing = SessionId::random().unwrap();
    assert!(matches!(
        plain.set_lifetime(&missing, Timeout::from_secs(1)).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        plain.set_lifetime(&missing, Timeout::from_ms(0)).await,
        Err(Error::InvalidTimeout { .. })
    ));

    // Expiry at the cap while active: a 300 ms cap, a `get` every 20 ms.
    // Every `get` that finds it comes before the cap (server clock; at the
    // cap's own millisecond, where Redis still keeps the key, the script
    // finds it expired); then it is gone.
    let short = plain.create(b"busy", hour).await.unwrap();
    plain.set_lifetime(&short, Timeout::from_ms(300)).await.unwrap();
    let mut found = 0;
    for _ in 0..1_000 {
        match plain.get(&short).await {
            Ok(s) => {
                assert!(s.last_access_ms() < s.created_ms() + 300, "{s:?}");
                found += 1;
            }
            Err(Error::NotFound) => break,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found >= 1);
    assert!(
        !plain.contains(&short).await.unwrap(),
        "expired at its cap though active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_server() {
    let server = support::Server::standalone();
    let prefix = support::unique_prefix("lifetime");
    let capped = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(prefix.clone())
            .max_lifetime(Timeout::from_secs(5)),
    )
    .await
    .unwrap();
    let plain = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(prefix))
        .await
        .unwrap();
    caps(&capped, &plain, &|args| server.cli(args)).await;

    // A cap of 0 ms is no cap: refused at connect.
    match RedisStore::connect(RedisConfig::standalone(server.url()).max_lifetime(Timeout::from_ms(0))).await {
        Err(Error::InvalidConfig(why)) => assert!(why.contains("max_lifetime"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_with_the_cluster_preset() {
    let cluster = support::Cluster::start(1_000);
    let prefix = support::unique_prefix("lifetime");
    let capped = RedisStore::connect(
        support::cluster_preset(cluster.urls())
            .key_prefix(prefix.clone())
            .max_lifetime(Timeout::from_secs(5)),
    )
    .await
    .unwrap();
    let plain = RedisStore::connect(support::cluster_preset(cluster.urls()).key_prefix(prefix))
        .await
        .unwrap();
    let node = &cluster.nodes[0];
    let cli = |args: &[&str]| {
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        node.cli(&with_redirects)
    };
    caps(&capped, &plain, &cli).await;
    assert_eq!(
        capped.stats().replication_shortfalls + plain.stats().replication_shortfalls,
        0
    );
}

/// A session stored before lifetime caps existed has no `l` field ("no
/// cap"): every operation serves it. (The scripts' replies carry the
/// missing field as Redis' nil, `false` in Lua, which keeps the reply's
/// length: a Lua `nil` there would cut it short and fail the decode.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_before_caps_is_served() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("pre-cap")),
    )
    .await
    .unwrap();
    let hour = Timeout::from_secs(3600);
    let old = || async {
        let id = store.create(b"old", hour).await.unwrap();
        assert_eq!(server.cli(&["HDEL", &store.key(&id), "l"]).trim(), "1");
        id
    };
    let id = old().await;
    assert_eq!(store.peek(&id).await.unwrap().lifetime(), Timeout::Never);
    assert_eq!(store.get(&id).await.unwrap().metadata(), b"old");
    assert_eq!(
        store.get_many(&[id]).await.remove(0).unwrap().lifetime(),
        Timeout::Never
    );
    let updated = store.update(&id, |m| [m, b"+1"].concat()).await.unwrap();
    assert_eq!(
        (updated.metadata(), updated.lifetime()),
        (&b"old+1"[..], Timeout::Never)
    );
    store.touch(&id).await.unwrap();
    store.set_ttl(&id, hour).await.unwrap();
    let moved = store.rotate(&id).await.unwrap();
    assert_eq!(store.peek(&moved).await.unwrap().metadata(), b"old+1");

    // A contended update: the version moved between the read and the
    // commit, and the commit's "moved on" reply carries the session.
    let id = old().await;
    let mut runs = 0;
    let updated = store
        .update(&id, |m| {
            runs += 1;
            if runs == 1 {
                assert!(!server
                    .cli(&["HINCRBY", &store.key(&id), "v", "1"])
                    .trim()
                    .is_empty());
            }
            [m, b"+2"].concat()
        })
        .await
        .unwrap();
    assert_eq!(updated.metadata(), b"old+2");
    assert!(runs >= 2, "the version moved once");
    let deleted = store
        .try_update(&id, |_| Ok::<_, ()>(session_engine::Op::Delete))
        .await
        .unwrap();
    assert!(deleted.is_ok());
    assert!(!store.contains(&id).await.unwrap());
}

/// A configured cap past 2^31 - 1 ms is kept in whole seconds, rounded up,
/// as the engine keeps it and as `set_lifetime` stores one: the key's TTL
/// and the session's reported expiry agree. The configured cap used to be
/// stored exact while the session reported it rounded, so the key expired
/// up to 999 ms before the store said it would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_configured_cap_is_kept_as_the_engine_keeps_it() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("long-cap"))
            .max_lifetime(Timeout::from_ms(2_147_483_648)),
    )
    .await
    .unwrap();
    let id = store.create(b"m", Timeout::Never).await.unwrap();
    let stored = server.cli(&["HGET", &store.key(&id), "l"]);
    assert_eq!(stored.trim(), "2147484000", "rounded up to whole seconds");
    let session = store.peek(&id).await.unwrap();
    assert_eq!(session.lifetime(), Timeout::from_ms(2_147_484_000));
    let expire_at = server.cli(&["PEXPIRETIME", &store.key(&id)]);
    assert_eq!(
        expire_at.trim().parse::<u64>().unwrap(),
        session.expires_at_ms().expect("capped"),
        "the key expires when the session says it does"
    );
}
