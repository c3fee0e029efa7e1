//! `request_timeout` is one budget per operation, all its round trips and
//! resends included: an operation that needs several round trips (`update`:
//! a read, then a commit; a `list` page: a scan, then a fetch) gives up with
//! `TimedOut` when their sum passes the budget, instead of granting each
//! round trip a budget of its own (with which it would succeed).
//!
//! A proxy holds every request for 2 s; the budget is 3 s: one round trip
//! fits (with 1 s to spare, for a machine that stalls), two cannot (4 s at
//! least).

mod support;

use std::time::{Duration, Instant};

use session_engine::{Cursor, Error, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

/// The budget, as a `TimedOut` error reports it.
const BUDGET_MS: u64 = 3_000;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(BUDGET_MS);
const DELAY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_of_several_round_trips_share_one_budget() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let config = RedisConfig::standalone(proxy.url())
        .key_prefix(support::unique_prefix("budget"))
        .request_timeout(REQUEST_TIMEOUT);
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"0", Timeout::from_secs(600)).await.expect("create");
    // Every script the server will run, loaded now (a first EVALSHA costs
    // a second round trip: NOSCRIPT, then EVAL).
    store.get(&id).await.expect("get");
    store.update(&id, |m| m.to_vec()).await.expect("update");

    proxy.delay(DELAY);
    // One round trip: within the budget.
    store.get(&id).await.expect("get: one round trip fits");
    // Two round trips: over it.
    for (op, r, took) in [
        {
            let started = Instant::now();
            let r = store.update(&id, |m| [m, b"+"].concat()).await.map(drop);
            ("update", r, started.elapsed())
        },
        {
            let started = Instant::now();
            let r = store.list(Cursor::START, 10).await.map(drop);
            ("list", r, started.elapsed())
        },
    ] {
        // A read's outcome is never unknown: only a write may have applied.
        let expected = match op {
            "list" => matches!(r, Err(Error::TimedOut { after_ms: BUDGET_MS })),
            _ => matches!(
                r,
                Err(Error::TimedOut { after_ms: BUDGET_MS } | Error::OutcomeUnknown { .. })
            ),
        };
        assert!(
            expected,
            "{op}: two round trips of {DELAY:?} within a budget of {REQUEST_TIMEOUT:?}: {r:?} after {took:?}"
        );
        println!("{op}: {r:?} after {took:?}");
    }
}
