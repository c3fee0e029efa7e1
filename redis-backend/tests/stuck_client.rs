//! The stuck-client detector: when every request on the store's client
//! fails for `stuck_after` while a fresh client finds the server serving,
//! the store swaps in a fresh client by itself — again and again, never
//! before `stuck_after`. A request that starts a rebuild is not held past
//! its own budget by it. And when the server is really gone, it does not
//! churn: requests fail with typed errors, no client is rebuilt, and service
//! resumes when the server does.
//!
//! The loops below run until an event (service back, an error seen); their
//! time limits only stop a test that would otherwise hang, far beyond what
//! the behaviour takes. Set-up and final reads go through a second store
//! with a long budget, straight to the server: a loaded machine can stall
//! longer than the short budget under test.

mod support;

use std::time::{Duration, Instant};

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
const STUCK_AFTER: Duration = Duration::from_millis(600);
/// How long a loop waiting for an event may run before the test calls it
/// hung.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// A store straight to `url` with `prefix` and a long budget, for the
/// steps a test does not check the short budget on.
async fn steady_store(url: String, prefix: &str) -> RedisStore {
    RedisStore::connect(
        RedisConfig::standalone(url)
            .key_prefix(prefix)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect the steady store")
}

/// A session created through [`steady_store`] (set-up, whose budget is
/// not what a test checks).
async fn created_steadily(url: String, prefix: &str) -> SessionId {
    steady_store(url, prefix)
        .await
        .create(b"x", Timeout::Never)
        .await
        .expect("create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_client_is_replaced_and_service_resumes_each_time() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let prefix = support::unique_prefix("stuck");
    let config = RedisConfig::standalone(proxy.url())
        .key_prefix(prefix.clone())
        .request_timeout(REQUEST_TIMEOUT)
        .stuck_after(STUCK_AFTER);
    let store = support::connect_short(config).await;
    let steady = steady_store(server.url(), &prefix).await;
    let id = steady
        .create(b"0", Timeout::from_secs(600))
        .await
        .expect("create");

    for round in 1..=3u64 {
        proxy.wedge();
        let wedged_at = Instant::now();
        let mut saw_timeout = false;
        let recovered = loop {
            match store.update(&id, |m| [m, b"+"].concat()).await {
                Ok(_) => break wedged_at.elapsed(),
                Err(Error::TimedOut { after_ms }) => {
                    assert_eq!(after_ms, 200);
                    saw_timeout = true;
                }
                Err(Error::OutcomeUnknown { .. } | Error::Unavailable { .. }) => {}
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
            assert!(wedged_at.elapsed() < HANG_LIMIT, "round {round}: never recovered");
        };
        assert!(saw_timeout, "round {round}: the wedge showed as timeouts");
        assert_eq!(
            store.stats().client_rebuilds,
            round,
            "round {round}: one rebuild per wedge"
        );
        // Not before `stuck_after` of failures (how soon after is the
        // machine's business: it is printed, not judged).
        assert!(
            recovered >= STUCK_AFTER,
            "round {round}: rebuilt after {recovered:?}, before {STUCK_AFTER:?} of failures"
        );
        println!("wedge {round}: serving again after {} ms", recovered.as_millis());
    }
    // Every update that returned Ok is in (others may be too: OutcomeUnknown).
    let meta = steady.get(&id).await.expect("get").metadata().to_vec();
    assert!(meta.len() >= 4, "{meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_never_holds_a_request_past_its_deadline() {
    // A server that accepts and never answers: every request times out, and
    // each rebuild (due after `stuck_after` of failures) tries a fresh
    // client that hangs for its connect timeout, 30 s. A request that
    // waited for that rebuild would take 30 s; one that waits only within
    // its own budget takes 0.2 s. The bound below sits far from both.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    const HELD_MAX: Duration = Duration::from_secs(10);
    const STUCK_AFTER_HERE: Duration = Duration::from_millis(300);
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let prefix = support::unique_prefix("deadline");
    let config = RedisConfig::standalone(proxy.url())
        .key_prefix(prefix.clone())
        .request_timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .stuck_after(STUCK_AFTER_HERE);
    let store = support::connect_short(config).await;
    let id = created_steadily(server.url(), &prefix).await;
    proxy.black_hole();
    let black_holed = Instant::now();
    let connections = proxy.connections_accepted();
    let mut longest = Duration::ZERO;
    let mut after_rebuild_began = 0;
    // Until three requests have run while a rebuild was under way: a fresh
    // client has connected to the proxy (and hangs there), and the failures
    // have lasted long enough for the detector to have started it.
    while after_rebuild_began < 3 {
        let rebuilding =
            proxy.connections_accepted() > connections && black_holed.elapsed() > STUCK_AFTER_HERE * 2;
        let started = Instant::now();
        let result = store.get(&id).await;
        assert!(
            matches!(result, Err(Error::TimedOut { .. } | Error::Unavailable { .. })),
            "{result:?}"
        );
        longest = longest.max(started.elapsed());
        assert!(
            longest < HELD_MAX,
            "a request was held {longest:?}, past its {REQUEST_TIMEOUT:?} budget: it waited for the rebuild"
        );
        after_rebuild_began += usize::from(rebuilding);
    }
    assert_eq!(
        store.stats().client_rebuilds,
        0,
        "nothing answers: nothing to swap in"
    );
    println!("longest request while rebuilding: {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_gives_typed_errors_without_rebuilds_and_service_resumes() {
    let mut server = support::Server::standalone();
    let prefix = support::unique_prefix("dead");
    let config = RedisConfig::standalone(server.url())
        .key_prefix(prefix.clone())
        .request_timeout(REQUEST_TIMEOUT)
        .stuck_after(STUCK_AFTER);
    let store = support::connect_short(config).await;
    let id = created_steadily(server.url(), &prefix).await;

    server.kill9();
    let down_since = Instant::now();
    while down_since.elapsed() < STUCK_AFTER * 2 {
        match store.get(&id).await {
            Err(Error::Unavailable { .. } | Error::TimedOut { .. }) => {}
            other => panic!("server down: expected Unavailable or TimedOut, got {other:?}"),
        }
        match store.touch(&id).await {
            Err(Error::Unavailable { .. } | Error::TimedOut { .. } | Error::OutcomeUnknown { .. }) => {}
            other => panic!("server down: touch gave {other:?}"),
        }
    }
    assert_eq!(
        store.stats().client_rebuilds,
        0,
        "no fresh client works, so none is swapped in"
    );

    server.restart();
    let back = Instant::now();
    loop {
        // Data is gone (no persistence): NotFound is the server answering.
        match store.get(&id).await {
            Err(Error::NotFound) => break,
            Ok(s) => panic!("a restarted server without persistence has nothing: {s:?}"),
            Err(_) => assert!(back.elapsed() < HANG_LIMIT, "no service after restart"),
        }
    }
    // Writes work again (a try that the machine stalled past the short
    // budget is tried again).
    loop {
        match store.create(b"y", Timeout::Never).await {
            Ok(_) => break,
            Err(e @ (Error::TimedOut { .. } | Error::OutcomeUnknown { .. } | Error::Unavailable { .. })) => {
                assert!(back.elapsed() < HANG_LIMIT, "writes never worked again: {e:?}");
            }
            Err(e) => panic!("a write after the restart: {e:?}"),
        }
    }
    let connect = RedisStore::connect(RedisConfig::standalone("redis://127.0.0.1:1")).await;
    assert!(matches!(connect, Err(Error::Unavailable { .. })), "{connect:?}");
}
