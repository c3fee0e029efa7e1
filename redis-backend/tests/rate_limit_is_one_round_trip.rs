//! `rate_limit` checks and charges a session's token bucket in one script,
//! one request (counted at a proxy): allowed with the tokens left, then
//! limited with the wait until the next token, then allowed again after
//! that wait; a re-shape caps the tokens; it is not activity. A charge
//! whose reply was lost is resent and not charged twice, and a resend that
//! cannot tell reports `OutcomeUnknown` without charging. The script's
//! integer arithmetic, made deterministic by a clock that went back:
//! `retry_after` rounded up to the millisecond, a re-shape capping the
//! tokens. Bad buckets are typed errors.

mod support;

use std::time::{Duration, Instant};

use session_engine::{Bucket, Error, RateDecision, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

const TTL: Timeout = Timeout::from_secs(600);

/// Three tokens, one a second: the tokens a few milliseconds refill are
/// thousandths, so whole-token counts below are exact unless a sequence
/// takes a second, which [`exact_or_stalled`] checks.
const SLOW: Bucket = Bucket {
    capacity: 3,
    refill_per_sec: 1,
};

/// Runs `sequence` until one run takes under half a second (at most three
/// tries): the whole-token counts it asserts hold only if less than a
/// token refilled meanwhile. The sequence says whether its checks held, and
/// hands back what the caller continues with.
async fn exact_or_stalled<F, Fut, T>(mut sequence: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
{
    for _ in 0..3 {
        let started = Instant::now();
        let (ok, value) = sequence().await;
        if started.elapsed() < Duration::from_millis(500) {
            assert!(ok, "the sequence's checks failed");
            return value;
        }
        println!("stalled ({:?}); again", started.elapsed());
    }
    panic!("three runs each took over half a second: the machine is too busy to judge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_is_one_request_and_decides_allowed_or_retry_after() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store =
        RedisStore::connect(RedisConfig::standalone(proxy.url()).key_prefix(support::unique_prefix("rate")))
            .await
            .expect("connect");

    let (id, before, retry_after) = exact_or_stalled(|| async {
        let id = store.create(b"", TTL).await.unwrap();
        let before = store.peek(&id).await.unwrap();
        let mut decisions = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..4 {
            let sent = proxy.client_reads();
            decisions.push(store.rate_limit(&id, SLOW, 1).await.expect("rate_limit"));
            reads.push(proxy.client_reads() - sent);
        }
        assert_eq!(reads, [1, 1, 1, 1], "one request per check");
        let allowed = |remaining| RateDecision::Allowed { remaining };
        let retry_after = match decisions[3] {
            RateDecision::Limited { retry_after } => retry_after,
            RateDecision::Allowed { .. } => Duration::ZERO,
        };
        let ok = decisions[..3] == [allowed(2), allowed(1), allowed(0)] && !retry_after.is_zero();
        if !ok {
            println!("{decisions:?}");
        }
        (ok, (id, before, retry_after))
    })
    .await;
    // From here the bucket refills (the peek below included).
    let waiting = Instant::now();
    // Almost a whole token (1 s) short: the few ms since the first charge
    // refilled a few thousandths.
    assert!(
        retry_after > Duration::from_millis(500) && retry_after <= Duration::from_secs(1),
        "{retry_after:?}"
    );
    // Not activity.
    let after = store.peek(&id).await.unwrap();
    assert_eq!(after.last_access_ms(), before.last_access_ms());
    // After the wait it names, a token is there (and one more for each
    // whole second a stall of the machine added to the wait).
    tokio::time::sleep(retry_after).await;
    let decision = store.rate_limit(&id, SLOW, 1).await.unwrap();
    let extra = waiting.elapsed().saturating_sub(retry_after).as_secs_f64();
    assert!(
        matches!(decision, RateDecision::Allowed { remaining } if f64::from(remaining) <= (extra + 0.05).floor()),
        "{decision:?} after waiting {extra:.3} s more than {retry_after:?}"
    );

    exact_or_stalled(|| async {
        // Re-shaping caps the tokens; a cost of 0 charges nothing; a larger
        // bucket does not make tokens appear.
        let id = store.create(b"", TTL).await.unwrap();
        let one = Bucket {
            capacity: 1,
            refill_per_sec: 1,
        };
        let big = Bucket {
            capacity: 100,
            refill_per_sec: 1,
        };
        let got = [
            store.rate_limit(&id, SLOW, 1).await.unwrap(), // 2 left
            store.rate_limit(&id, one, 0).await.unwrap(),  // capped at 1
            store.rate_limit(&id, big, 1).await.unwrap(),  // 0 left
            store.rate_limit(&id, big, 1).await.unwrap(),
        ];
        let allowed = |remaining| RateDecision::Allowed { remaining };
        let ok = got[..3] == [allowed(2), allowed(1), allowed(0)]
            && matches!(got[3], RateDecision::Limited { .. });
        if !ok {
            println!("{got:?}");
        }
        (ok, ())
    })
    .await;

    // Bad input: typed, nothing sent.
    let id = store.create(b"", TTL).await.unwrap();
    let sent = proxy.client_reads();
    for (bucket, cost) in [
        (
            Bucket {
                capacity: 0,
                refill_per_sec: 1,
            },
            0,
        ),
        (
            Bucket {
                capacity: 1,
                refill_per_sec: 0,
            },
            0,
        ),
        (SLOW, 4),
    ] {
        assert!(
            matches!(
                store.rate_limit(&id, bucket, cost).await,
                Err(Error::InvalidArgument { .. })
            ),
            "{bucket:?} cost {cost}"
        );
    }
    assert_eq!(proxy.client_reads(), sent, "nothing sent");
    let missing = session_engine::SessionId::random().unwrap();
    assert!(matches!(
        store.rate_limit(&missing, SLOW, 1).await,
        Err(Error::NotFound)
    ));
    // An expired session is not found either (and gets no bucket).
    let short = store.create(b"", Timeout::from_ms(1)).await.unwrap();
    while store.contains(&short).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        store.rate_limit(&short, SLOW, 1).await,
        Err(Error::NotFound)
    ));
    assert_eq!(server.cli(&["EXISTS", &store.key(&short)]).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_reply_was_lost_is_not_charged_twice() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::unique_prefix("rate-lost"))
            .request_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    let (code, sha) = session_redis::script_source("rate_limit").expect("the script");
    let ten = Bucket {
        capacity: 10,
        refill_per_sec: 1,
    };
    exact_or_stalled(|| async {
        let id = store.create(b"", TTL).await.unwrap();
        proxy.lose_reply(&sha);
        let first = store.rate_limit(&id, ten, 1).await.expect("resent");
        assert!(proxy.fault_fired());
        let second = store.rate_limit(&id, ten, 1).await.unwrap();
        let ok = first == RateDecision::Allowed { remaining: 9 }
            && second == RateDecision::Allowed { remaining: 8 };
        if !ok {
            println!("{first:?} {second:?}");
        }
        (ok, ())
    })
    .await;
    assert!(store.stats().resends >= 1);

    // The script as the store resends it: its own token is the bucket's
    // last charge (reported, not charged again); another's is doubt
    // (nothing charged).
    let id = store.create(b"", TTL).await.unwrap();
    let key = store.key(&id);
    let eval =
        |token: &str, resend: &str| server.cli(&["EVAL", &code, "1", &key, "10", "1", "1", token, resend]);
    assert_eq!(eval("t1", "0").split_whitespace().collect::<Vec<_>>(), ["1", "9"]);
    assert_eq!(
        eval("t1", "1").split_whitespace().collect::<Vec<_>>(),
        ["1", "9"],
        "t1 was the last charge"
    );
    assert_eq!(eval("t2", "0").split_whitespace().collect::<Vec<_>>(), ["1", "8"]);
    assert_eq!(eval("t1", "1").trim(), "3", "t2 came after: doubt");
    assert_eq!(
        eval("t3", "1").trim(),
        "3",
        "a resend that never charged cannot know it either"
    );
    // Nothing was charged by the resends: 8 left, so the next charge leaves 7.
    assert_eq!(eval("t4", "0").split_whitespace().collect::<Vec<_>>(), ["1", "7"]);
    // The arithmetic, made deterministic by a bucket stamped in the future
    // (a clock that went back: nothing refills, and the bucket goes on
    // from the server's clock: keeping the later stamp froze the bucket
    // until the clock passed it, while `retry_after` counted from now).
    let far = "99999999999999";
    let stamp = |tokens_milli: &str, capacity: &str, refill: &str| {
        let out = server.cli(&[
            "HSET",
            &key,
            "bk",
            tokens_milli,
            "bt",
            far,
            "bc",
            capacity,
            "br",
            refill,
        ]);
        assert!(out.trim().parse::<u32>().is_ok(), "{out}");
    };
    let charge = |capacity: &str, refill: &str, cost: &str, token: &str| {
        server
            .cli(&["EVAL", &code, "1", &key, capacity, refill, cost, token, "0"])
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let server_ms = || -> u64 {
        let time = server.cli(&["TIME"]);
        let mut parts = time.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        let (secs, micros) = (parts.next().unwrap(), parts.next().unwrap());
        secs * 1000 + micros / 1000
    };
    let stamped = || -> u64 { server.cli(&["HGET", &key, "bt"]).trim().parse().unwrap() };
    stamp("0", "3", "1");
    assert_eq!(
        charge("3", "1", "1", "a"),
        ["2", "1000"],
        "a whole token at 1/s: 1000 ms"
    );
    // Limited, same shape: the bucket goes on from this clock all the
    // same (the later stamp kept would refill nothing until the clock
    // passed it, each retry limited again while told to wait a second).
    let (at, now) = (stamped(), server_ms());
    assert!(
        at <= now,
        "a limited call kept the later stamp {at} (server at {now}): the bucket stays empty until then"
    );
    stamp("500", "3", "3");
    assert_eq!(
        charge("3", "3", "1", "b"),
        ["2", "167"],
        "500 thousandths at 3/s: 166.7 ms, rounded up"
    );
    stamp("999", "3", "1000000");
    assert_eq!(charge("3", "1000000", "1", "c"), ["2", "1"], "at least 1 ms");
    stamp("9000", "10", "1");
    assert_eq!(
        charge("5", "1", "1", "d"),
        ["1", "4"],
        "capped at the new capacity, then charged"
    );
    let (at, now) = (stamped(), server_ms());
    assert!(
        at <= now,
        "the bucket kept the later stamp {at} (server at {now}): it refills nothing until then"
    );
    assert_eq!(
        server
            .cli(&["HMGET", &key, "bk", "bc"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["4000", "5"]
    );
    // The bucket's fields, beside the session's.
    let fields = server.cli(&["HGETALL", &key]);
    for field in ["bk", "bt", "bw", "bc", "br"] {
        assert!(fields.lines().any(|l| l == field), "{field} in {fields}");
    }
}
