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

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

/// A session whose cap has passed when a script meets its key (at the
/// cap's own millisecond Redis still keeps the key; here the creation time
/// is moved back behind the store's back) is expired, as on the engine:
/// every operation finds it gone and deletes the key, nothing stretches
/// the cap, and a `put` stores a new session (it kept the old creation
/// time, deleted the key at once and reported success: a lost write).
async fn met_past_the_cap(capped: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    let hour = Timeout::from_secs(3600);
    let late = || async move {
        let id = capped.create(b"late", hour).await.unwrap();
        let c = capped.peek(&id).await.unwrap().created_ms();
        let earlier = (c - 6_000).to_string();
        assert_eq!(server(&["HSET", &capped.key(&id), "c", &earlier]).trim(), "0");
        id
    };
    let gone = |what: &str, r: Result<(), Error>| assert!(matches!(r, Err(Error::NotFound)), "{what}: {r:?}");
    let id = late().await;
    gone("touch", capped.touch(&id).await);
    assert_eq!(
        server(&["EXISTS", &capped.key(&id)]).trim(),
        "0",
        "deleted, not re-armed"
    );
    let id = late().await;
    gone("get", capped.get(&id).await.map(drop));
    let id = late().await;
    gone("get_many", capped.get_many(&[id]).await.remove(0).map(drop));
    let id = late().await;
    gone("update", capped.update(&id, |m| m.to_vec()).await.map(drop));
    let id = late().await;
    gone("set_ttl", capped.set_ttl(&id, hour).await);
    let id = late().await;
    gone("set_lifetime", capped.set_lifetime(&id, Timeout::Never).await);
    let id = late().await;
    gone("rotate", capped.rotate(&id).await.map(drop));
    let id = late().await;
    assert!(
        matches!(capped.insert(id, b"again", hour).await, Ok(())),
        "an insert finds the id free"
    );
    let id = late().await;
    capped.put(id, b"put", hour).await.unwrap();
    let s = capped.peek(&id).await.expect("the put's session is there");
    assert_eq!(s.metadata(), b"put");
    assert!(
        s.expires_at_ms() > Some(s.created_ms() + 4_000),
        "a new session, a new cap: {s:?}"
    );
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

    // Per session: set, then lift.
    plain
        .set_lifetime(&uncapped, Timeout::from_secs(2))
        .await
        .unwrap();
    let s = plain.peek(&uncapped).await.unwrap();
    assert_eq!(s.lifetime(), Timeout::from_secs(2));
    assert!((1..=2_000).contains(&pttl(server, plain, &uncapped)));
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
