//! The per-session state cases ([`SessionState`]): subscriptions, the topic
//! fan-out, rate limits. Each takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::limits::{LIST_PAGE_MAX, TOPICS_PER_SESSION_MAX, TOPIC_LEN_MAX};
use session_engine::{Bucket, Error, RateDecision, SessionId, SessionState, Timeout, TopicCursor};

use crate::{Case, SuiteOptions, Verdict};

const LONG: Timeout = Timeout::from_secs(600);

macro_rules! state_case_list {
    ($($name:ident),* $(,)?) => {
        pub(crate) fn all<S: SessionState + 'static>() -> Vec<(&'static str, Case<S>)> {
            vec![$((stringify!($name), (|s, o| Box::pin($name::<S>(s, o))) as Case<S>)),*]
        }
    };
}

state_case_list!(
    subscribe_unsubscribe_and_topics,
    subscribers_page_every_live_subscriber_once,
    state_goes_with_a_deleted_session,
    state_goes_with_an_expired_session,
    rotate_starts_the_new_id_with_no_state,
    put_over_a_live_session_keeps_its_state,
    state_calls_are_not_activity,
    rate_limit_allows_then_limits_with_retry_after,
    a_reshaped_bucket_caps_its_tokens,
    state_bad_input_and_limits_are_typed_errors,
    a_state_future_never_polled_changes_nothing,
);

fn ok<T>(what: &str, r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?} ({e})"),
    }
}

#[allow(clippy::needless_pass_by_value)]
fn not_found<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::NotFound)),
        "{what}: expected NotFound, got {r:?}"
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every live subscriber of `topic`, page by page (`limit` a page); also
/// how many pages it took. Panics on a repeated id, and on ids out of
/// `SessionId`'s order (the documented order of a listing, within a page
/// and across pages, on every backend).
async fn all_subscribers<S: SessionState>(s: &S, topic: &str, limit: usize) -> (HashSet<SessionId>, usize) {
    let mut seen = HashSet::new();
    let mut last: Option<SessionId> = None;
    let mut cursor = TopicCursor::START;
    let mut pages = 0;
    loop {
        let page = ok("subscribers", s.subscribers(topic, cursor, limit).await);
        pages += 1;
        assert!(
            page.ids.len() <= limit,
            "a page of {} over its limit {limit}",
            page.ids.len()
        );
        for id in page.ids {
            assert!(seen.insert(id), "{id} listed twice for {topic:?}");
            if let Some(last) = last {
                assert!(
                    last < id,
                    "{id} listed after {last} for {topic:?}: not in id order (page {pages})"
                );
            }
            last = Some(id);
        }
        match page.next {
            // The cursor's text form round-trips (HTTP APIs pass it along).
            Some(next) => cursor = next.to_string().parse().expect("cursor text"),
            None => return (seen, pages),
        }
        assert!(pages < 10_000, "the listing of {topic:?} never ends");
    }
}

fn bucket(capacity: u32, refill_per_sec: u32) -> Bucket {
    Bucket {
        capacity,
        refill_per_sec,
    }
}

async fn subscribe_unsubscribe_and_topics<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let a = ok("create", s.create(b"a", LONG).await);
    let b = ok("create", s.create(b"b", LONG).await);
    assert!(ok("subscribe", s.subscribe(&a, "file:///x").await), "new topic");
    assert!(
        !ok("subscribe again", s.subscribe(&a, "file:///x").await),
        "already there"
    );
    assert!(ok("subscribe", s.subscribe(&a, "file:///y").await));
    assert!(ok("subscribe b", s.subscribe(&b, "file:///x").await));
    assert_eq!(
        sorted(ok("topics", s.topics(&a).await)),
        vec!["file:///x".to_owned(), "file:///y".to_owned()]
    );
    assert!(ok("unsubscribe", s.unsubscribe(&a, "file:///x").await));
    assert!(!ok("unsubscribe again", s.unsubscribe(&a, "file:///x").await));
    assert!(!ok("unsubscribe never", s.unsubscribe(&a, "file:///never").await));
    assert_eq!(ok("topics", s.topics(&a).await), vec!["file:///y".to_owned()]);
    // Sessions are isolated: b kept its subscription.
    assert_eq!(ok("topics b", s.topics(&b).await), vec!["file:///x".to_owned()]);
    let (of_x, _) = all_subscribers(&*s, "file:///x", 10).await;
    assert_eq!(of_x, HashSet::from([b]));
    // Topics are exact text: case and Unicode are kept.
    assert!(ok("unicode", s.subscribe(&a, "résumé/Ä").await));
    assert!(ok("case", s.subscribe(&a, "RÉSUMÉ/ä").await));
    assert_eq!(ok("topics", s.topics(&a).await).len(), 3);
    assert!(ok("unsubscribe y", s.unsubscribe(&a, "file:///y").await));
    let (of_y, _) = all_subscribers(&*s, "file:///y", 10).await;
    assert!(of_y.is_empty(), "nobody subscribes to y any more");
    Verdict::Pass
}

async fn subscribers_page_every_live_subscriber_once<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let mut t = HashSet::new();
    let mut u = HashSet::new();
    for n in 0..40 {
        let id = ok("create", s.create(b"", LONG).await);
        if n % 4 != 3 {
            assert!(ok("subscribe t", s.subscribe(&id, "topic/t").await));
            t.insert(id);
        }
        if n % 5 == 0 {
            assert!(ok("subscribe u", s.subscribe(&id, "topic/u").await));
            u.insert(id);
        }
    }
    for limit in [1, 7, 30, LIST_PAGE_MAX] {
        let (got, pages) = all_subscribers(&*s, "topic/t", limit).await;
        assert_eq!(got, t, "subscribers of t in pages of {limit}");
        if limit < t.len() {
            assert!(pages > 1, "{} subscribers in one page of {limit}", t.len());
        }
    }
    let (got, _) = all_subscribers(&*s, "topic/u", 3).await;
    assert_eq!(got, u);
    let page = ok(
        "unknown topic",
        s.subscribers("topic/none", TopicCursor::START, 10).await,
    );
    assert!(page.ids.is_empty() && page.next.is_none(), "{page:?}");
    // A session deleted while a listing is under way is not listed after.
    let (first, gone) = {
        let page = ok("page", s.subscribers("topic/t", TopicCursor::START, 5).await);
        let gone = *t
            .iter()
            .find(|id| !page.ids.contains(id))
            .expect("more than a page");
        (page, gone)
    };
    ok("delete", s.delete(&gone).await);
    let mut rest = HashSet::new();
    let mut cursor = first.next.expect("a next page");
    loop {
        let page = ok("subscribers", s.subscribers("topic/t", cursor, 5).await);
        rest.extend(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert!(!rest.contains(&gone), "a deleted session was listed");
    assert_eq!(rest.len() + first.ids.len(), t.len() - 1);
    Verdict::Pass
}

async fn state_goes_with_a_deleted_session<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    let other = ok("create", s.create(b"", LONG).await);
    ok("subscribe", s.subscribe(&id, "news").await);
    ok("subscribe other", s.subscribe(&other, "news").await);
    let shape = bucket(2, 1);
    ok("charge", s.rate_limit(&id, shape, 2).await);
    ok("delete", s.delete(&id).await);
    let (subs, _) = all_subscribers(&*s, "news", 10).await;
    assert_eq!(subs, HashSet::from([other]), "the deleted session left the topic");
    not_found("topics", s.topics(&id).await);
    not_found("subscribe", s.subscribe(&id, "news").await);
    not_found("unsubscribe", s.unsubscribe(&id, "news").await);
    not_found("rate_limit", s.rate_limit(&id, shape, 1).await);
    // A new session under the same id starts clean: no topics, a full bucket.
    ok("insert again", s.insert(id, b"", LONG).await);
    assert!(ok("topics", s.topics(&id).await).is_empty());
    assert_eq!(
        ok("rate_limit", s.rate_limit(&id, shape, 2).await),
        RateDecision::Allowed { remaining: 0 }
    );
    let (subs, _) = all_subscribers(&*s, "news", 10).await;
    assert_eq!(subs, HashSet::from([other]));
    Verdict::Pass
}

async fn state_goes_with_an_expired_session<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let long = ok("create", s.create(b"", LONG).await);
    ok("subscribe", s.subscribe(&long, "feed").await);
    // Within its life, or the case proves nothing (a stall, tried again).
    let life = Duration::from_millis(150);
    let created_at = Instant::now();
    let short = ok("create", s.create(b"", Timeout::After(life)).await);
    alive!("subscribe", s.subscribe(&short, "feed").await, created_at, life);
    alive!(
        "charge",
        s.rate_limit(&short, bucket(1, 1), 1).await,
        created_at,
        life
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    caught_up!(s, "state_goes_with_an_expired_session");
    // Not returned once expired, before and after the backend reclaims it.
    let (subs, _) = all_subscribers(&*s, "feed", 10).await;
    assert_eq!(subs, HashSet::from([long]), "an expired subscriber was listed");
    ok("cleanup", s.cleanup_expired().await);
    let (subs, _) = all_subscribers(&*s, "feed", 10).await;
    assert_eq!(subs, HashSet::from([long]));
    not_found("topics of the expired session", s.topics(&short).await);
    not_found("subscribe", s.subscribe(&short, "feed").await);
    ok("insert again", s.insert(short, b"", LONG).await);
    assert!(ok("topics", s.topics(&short).await).is_empty(), "state came back");
    assert_eq!(
        ok("rate_limit", s.rate_limit(&short, bucket(1, 1), 1).await),
        RateDecision::Allowed { remaining: 0 },
        "the bucket came back"
    );
    Verdict::Pass
}

/// As for `SessionStore`: a state call does nothing until its future is
/// first polled.
async fn a_state_future_never_polled_changes_nothing<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    ok("subscribe", s.subscribe(&id, "kept").await);
    let shape = bucket(2, 1);
    drop(s.subscribe(&id, "never"));
    drop(s.unsubscribe(&id, "kept"));
    drop(s.rate_limit(&id, shape, 2));
    assert_eq!(
        ok("topics", s.topics(&id).await),
        vec!["kept".to_owned()],
        "a subscribe or unsubscribe never polled changed the topics"
    );
    assert_eq!(
        ok("rate_limit", s.rate_limit(&id, shape, 2).await),
        RateDecision::Allowed { remaining: 0 },
        "a rate_limit never polled took tokens"
    );
    Verdict::Pass
}

async fn rotate_starts_the_new_id_with_no_state<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let old = ok("create", s.create(b"m", LONG).await);
    ok("subscribe", s.subscribe(&old, "room/1").await);
    let shape = bucket(3, 1);
    ok("charge", s.rate_limit(&old, shape, 3).await);
    let new = ok("rotate", s.rotate(&old).await);
    assert!(
        ok("topics", s.topics(&new).await).is_empty(),
        "topics moved with rotate"
    );
    not_found("topics of the old id", s.topics(&old).await);
    let (subs, _) = all_subscribers(&*s, "room/1", 10).await;
    assert!(subs.is_empty(), "{subs:?} still listed after rotate");
    assert_eq!(
        ok("rate_limit", s.rate_limit(&new, shape, 3).await),
        RateDecision::Allowed { remaining: 0 },
        "the new id starts with a full bucket"
    );
    Verdict::Pass
}

async fn put_over_a_live_session_keeps_its_state<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"v1", LONG).await);
    ok("subscribe", s.subscribe(&id, "doc").await);
    ok("put", s.put(id, b"v2", LONG).await);
    assert_eq!(ok("topics", s.topics(&id).await), vec!["doc".to_owned()]);
    let (subs, _) = all_subscribers(&*s, "doc", 10).await;
    assert_eq!(subs, HashSet::from([id]));
    ok("update", s.update(&id, |_| b"v3".to_vec()).await);
    ok("set_ttl", s.set_ttl(&id, Timeout::from_secs(900)).await);
    assert_eq!(ok("topics", s.topics(&id).await), vec!["doc".to_owned()]);
    Verdict::Pass
}

async fn state_calls_are_not_activity<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    let before = ok("peek", s.peek(&id).await).last_access_ms();
    tokio::time::sleep(Duration::from_millis(25)).await;
    // The clock has moved: on one that stood still, a call that counted
    // as activity would leave the same time.
    clock_past!(s, "state calls", before);
    ok("subscribe", s.subscribe(&id, "t").await);
    ok("topics", s.topics(&id).await);
    ok("subscribers", s.subscribers("t", TopicCursor::START, 5).await);
    ok("rate_limit", s.rate_limit(&id, bucket(5, 5), 1).await);
    ok("unsubscribe", s.unsubscribe(&id, "t").await);
    assert_eq!(
        ok("peek", s.peek(&id).await).last_access_ms(),
        before,
        "a state call slid the deadline"
    );
    Verdict::Pass
}

async fn rate_limit_allows_then_limits_with_retry_after<S: SessionState>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    let other = ok("create", s.create(b"", LONG).await);
    let shape = bucket(3, 1);
    let start = Instant::now();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(ok("rate_limit", s.rate_limit(&id, shape, 1).await));
    }
    let two = ok("rate_limit", s.rate_limit(&id, shape, 2).await);
    if start.elapsed() >= Duration::from_millis(500) {
        return Verdict::Stalled(format!(
            "five checks took {} ms at a refill of one token a second",
            start.elapsed().as_millis()
        ));
    }
    assert_eq!(
        got[..3],
        [
            RateDecision::Allowed { remaining: 2 },
            RateDecision::Allowed { remaining: 1 },
            RateDecision::Allowed { remaining: 0 }
        ]
    );
    let RateDecision::Limited { retry_after } = got[3] else {
        panic!("a fourth token at once: {:?}", got[3]);
    };
    assert!(
        retry_after > Duration::from_millis(400) && retry_after <= Duration::from_secs(1),
        "one token at 1/s: retry after {retry_after:?}"
    );
    let RateDecision::Limited { retry_after: two } = two else {
        panic!("two tokens at once: {two:?}");
    };
    assert!(
        two > Duration::from_millis(1400) && two <= Duration::from_secs(2),
        "two tokens at 1/s: retry after {two:?}"
    );
    // Buckets are per session.
    assert_eq!(
        ok("other", s.rate_limit(&other, shape, 3).await),
        RateDecision::Allowed { remaining: 0 }
    );
    // A zero charge only looks.
    assert!(matches!(
        ok("zero", s.rate_limit(&id, shape, 0).await),
        RateDecision::Allowed { .. }
    ));
    // The bucket refills: after the wait it gives a token again.
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    caught_up!(s, "rate_limit_allows_then_limits_with_retry_after");
    assert!(
        matches!(
            ok("after the wait", s.rate_limit(&id, shape, 1).await),
            RateDecision::Allowed { .. }
        ),
        "no token after waiting retry_after"
    );
    Verdict::Pass
}

async fn a_reshaped_bucket_caps_its_tokens<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    assert_eq!(
        ok("big", s.rate_limit(&id, bucket(10, 1), 1).await),
        RateDecision::Allowed { remaining: 9 }
    );
    // Same bucket, smaller shape: the 9 tokens are capped at 3, one taken.
    assert_eq!(
        ok("small", s.rate_limit(&id, bucket(3, 1), 1).await),
        RateDecision::Allowed { remaining: 2 }
    );
    // Growing again does not invent tokens.
    assert_eq!(
        ok("big again", s.rate_limit(&id, bucket(10, 1), 1).await),
        RateDecision::Allowed { remaining: 1 }
    );
    Verdict::Pass
}

async fn state_bad_input_and_limits_are_typed_errors<S: SessionState>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    let missing = SessionId::random().expect("entropy");
    for r in [
        s.subscribe(&id, "").await,
        s.unsubscribe(&id, "").await,
        s.subscribers("", TopicCursor::START, 1).await.map(|_| true),
    ] {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "empty topic: {r:?}"
        );
    }
    let long = "x".repeat(TOPIC_LEN_MAX + 1);
    let r = s.subscribe(&id, &long).await;
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "long topic: {r:?}");
    assert!(ok("longest", s.subscribe(&id, &"x".repeat(TOPIC_LEN_MAX)).await));
    for limit in [0, LIST_PAGE_MAX + 1] {
        let r = s.subscribers("t", TopicCursor::START, limit).await;
        assert!(
            matches!(r, Err(Error::InvalidPageSize { .. })),
            "limit {limit}: {r:?}"
        );
    }
    for (shape, cost) in [(bucket(0, 1), 0), (bucket(1, 0), 1), (bucket(2, 1), 3)] {
        let r = s.rate_limit(&id, shape, cost).await;
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{shape:?} cost {cost}: {r:?}"
        );
    }
    for n in 1..TOPICS_PER_SESSION_MAX {
        assert!(ok("subscribe", s.subscribe(&id, &format!("t/{n}")).await));
    }
    let r = s.subscribe(&id, "one too many").await;
    assert!(
        matches!(r, Err(Error::LimitExceeded { .. })),
        "topic past the limit: {r:?}"
    );
    assert_eq!(ok("topics", s.topics(&id).await).len(), TOPICS_PER_SESSION_MAX);
    // At the limit, subscribing again to a held topic is no error.
    assert!(!ok("again", s.subscribe(&id, "t/1").await));
    let (subs, _) = all_subscribers(&*s, "one too many", 5).await;
    assert!(subs.is_empty(), "a refused subscribe was indexed");
    not_found("subscribe", s.subscribe(&missing, "t").await);
    not_found("unsubscribe", s.unsubscribe(&missing, "t").await);
    not_found("topics", s.topics(&missing).await);
    not_found("rate_limit", s.rate_limit(&missing, bucket(1, 1), 1).await);
    Verdict::Pass
}
