//! Timeouts beyond 32 bits of milliseconds (the engine accepts up to 400
//! days, 3.456 × 10^10 ms) are stored, armed and read back exactly, through
//! every script and decoder that carries one: `create`, `insert`, `put`,
//! `set_ttl`; `get`, `peek`, `list`; `update` and `try_update` (their
//! commit's reply); `rotate` (the TTL it re-arms on the new key). The
//! key's Redis TTL is the timeout (`PTTL`), so Redis expires the session
//! when the engine would. A timeout the engine keeps in whole seconds comes
//! back as the engine keeps it. On one server and on a cluster.

mod support;

use session_engine::limits::{TIMEOUT_EXACT_MS_MAX, TIMEOUT_MS_MAX};
use session_engine::{Cursor, Op, SessionId, Timeout, Updated};
use session_redis::{RedisConfig, RedisStore};

const YEAR_MS: u64 = 365 * 24 * 3_600 * 1_000;

/// The key's TTL in ms is `expected` (less the test's own time: 10 s).
fn assert_pttl(server: &dyn Fn(&[&str]) -> String, store: &RedisStore, id: &SessionId, expected: u64) {
    let pttl: u64 = server(&["PTTL", &store.key(id)]).trim().parse().expect("a TTL");
    assert!(
        pttl <= expected && pttl + 10_000 >= expected,
        "PTTL {pttl} ms, expected {expected}"
    );
}

async fn long_timeouts_round_trip(store: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    let year = Timeout::from_ms(YEAR_MS);
    assert!(YEAR_MS > u64::from(u32::MAX), "the point of the test");

    let id = store.create(b"remember me", year).await.expect("create");
    assert_eq!(store.peek(&id).await.unwrap().timeout(), year, "peek");
    let got = store.get(&id).await.expect("get");
    assert_eq!(got.timeout(), year, "get");
    assert_eq!(got.expires_at_ms(), Some(got.last_access_ms() + YEAR_MS));
    assert_pttl(server, store, &id, YEAR_MS);
    let page = store.list(Cursor::START, 10).await.expect("list");
    assert!(
        page.sessions.iter().any(|s| s.id() == id && s.timeout() == year),
        "list"
    );

    let updated = store.update(&id, |m| [m, b"!"].concat()).await.expect("update");
    assert_eq!(updated.timeout(), year, "update's commit reply");
    let r = store.try_update(&id, |_| Ok::<_, ()>(Op::Keep)).await.unwrap();
    assert!(
        matches!(r, Ok(Updated::Kept(ref s)) if s.timeout() == year),
        "{r:?}"
    );
    let r = store
        .try_update(&id, |_| Ok::<_, ()>(Op::Replace(b"r".to_vec())))
        .await
        .unwrap();
    assert!(
        matches!(r, Ok(Updated::Replaced(ref s)) if s.timeout() == year),
        "{r:?}"
    );
    assert_pttl(server, store, &id, YEAR_MS);

    let rotated = store.rotate(&id).await.expect("rotate");
    assert_eq!(store.peek(&rotated).await.unwrap().timeout(), year, "rotate");
    assert_pttl(server, store, &rotated, YEAR_MS);

    // The longest, through set_ttl and put.
    let max = Timeout::from_ms(TIMEOUT_MS_MAX);
    store.set_ttl(&rotated, max).await.expect("set_ttl 400 days");
    assert_eq!(store.peek(&rotated).await.unwrap().timeout(), max);
    assert_pttl(server, store, &rotated, TIMEOUT_MS_MAX);
    store.put(rotated, b"p", year).await.expect("put");
    assert_eq!(store.peek(&rotated).await.unwrap().timeout(), year, "put");
    assert_pttl(server, store, &rotated, YEAR_MS);

    let chosen = SessionId::random().unwrap();
    store.insert(chosen, b"i", max).await.expect("insert");
    assert_eq!(store.get(&chosen).await.unwrap().timeout(), max, "insert");

    // Above the engine's exact range a timeout is kept in whole seconds
    // (rounded up): Redis keeps what the engine keeps.
    let odd = Timeout::from_ms(TIMEOUT_EXACT_MS_MAX + 1_234);
    let kept_ms = odd.checked_ms().unwrap().unwrap();
    assert_eq!(kept_ms % 1_000, 0, "whole seconds");
    store.set_ttl(&chosen, odd).await.expect("set_ttl");
    assert_eq!(
        store.peek(&chosen).await.unwrap().timeout(),
        Timeout::from_ms(kept_ms)
    );
    assert_pttl(server, store, &chosen, kept_ms);

    // One past the longest is refused before anything is sent.
    let r = store.set_ttl(&chosen, Timeout::from_ms(TIMEOUT_MS_MAX + 1)).await;
    assert!(
        matches!(r, Err(session_engine::Error::InvalidTimeout { .. })),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_timeouts_round_trip_on_one_server() {
    let server = support::Server::standalone();
    let config = RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("long"));
    let store = RedisStore::connect(config).await.expect("connect");
    long_timeouts_round_trip(&store, &|args| server.cli(args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_timeouts_round_trip_on_a_cluster() {
    let cluster = support::Cluster::start(1_000);
    let config = support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("long"));
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
    long_timeouts_round_trip(&store, &cli).await;
}
