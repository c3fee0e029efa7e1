//! The cases. Each takes a fresh, empty store; names say the behaviour.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::limits::{LIST_PAGE_MAX, TIMEOUT_MS_MAX};
use session_engine::{Cursor, Error, Op, SessionId, SessionRef, SessionStore, Timeout, Updated};

use crate::{Case, SuiteOptions, Verdict};

/// A long timeout for sessions that must not expire during a case.
const LONG: Timeout = Timeout::from_secs(600);

/// Slack for clock granularity (whole milliseconds, the sweeper's tick).
const SLACK: Duration = Duration::from_millis(30);
/// How far a backend's clock may sit behind the wall clock for good (the
/// engine's is the wall clock anchored once and advanced by the monotonic
/// one; Redis' is its host's): `caught_up!` allows this much.
const CLOCK_SKEW_MS: u64 = 5;
/// How long `caught_up!` waits for a backend's clock to catch up.
const CATCH_UP_MAX: Duration = Duration::from_secs(5);

macro_rules! case_list {
    ($($name:ident),* $(,)?) => {
        pub(crate) fn all<S: SessionStore + 'static>() -> Vec<(&'static str, Case<S>)> {
            vec![$((stringify!($name), (|s, o| Box::pin($name::<S>(s, o))) as Case<S>)),*]
        }
    };
}

case_list!(
    create_then_get_returns_what_was_stored,
    metadata_is_binary_safe_including_empty,
    ids_are_distinct_and_url_safe,
    insert_uses_the_given_id_and_never_overwrites,
    get_records_activity_and_peek_does_not,
    update_replaces_metadata_and_counts_as_activity,
    update_runs_on_the_latest_value,
    every_operation_on_a_missing_id_is_not_found,
    delete_removes_the_session,
    set_ttl_never_keeps_a_session_past_its_old_deadline,
    set_ttl_finite_after_never_expires_again,
    a_session_expires_after_its_inactivity_timeout,
    activity_slides_the_deadline,
    peek_contains_and_list_do_not_slide_the_deadline,
    list_pages_return_every_session_once,
    list_with_page_size_one_and_max,
    list_leaves_out_expired_sessions,
    len_counts_live_sessions,
    invalid_input_returns_typed_errors_and_stores_nothing,
    values_too_large_change_nothing,
    concurrent_updates_lose_nothing,
    concurrent_creates_and_deletes_keep_len_exact,
    cleanup_expired_reports_and_len_settles,
    put_inserts_then_replaces_keeping_the_creation_time,
    put_checks_its_input_and_changes_nothing,
    rotate_moves_the_session_to_a_fresh_id,
    try_update_keeps_replaces_deletes_or_declines,
    a_keep_on_bytes_that_changed_is_decided_again,
    timeouts_of_a_year_are_kept,
    a_lifetime_cap_ends_an_active_session,
    get_many_answers_each_id_as_get_would,
    borrowing_reads_see_what_get_and_peek_see,
    a_future_never_polled_changes_nothing,
);

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Unwraps, naming the operation in the panic.
fn ok<T>(what: &str, r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?} ({e})"),
    }
}

#[allow(clippy::needless_pass_by_value)] // called on a fresh result, never reused
fn not_found<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::NotFound)),
        "{what}: expected NotFound, got {r:?}"
    );
}

/// For a check that the session must still be alive: `since` is taken just
/// before the last activity was sent, so its deadline is at least
/// `since + timeout`. If the check could only run after that (the machine
/// stalled), its failure proves nothing: report a stall instead.
pub(crate) fn still_alive<T: std::fmt::Debug>(
    what: &str,
    r: &Result<T, Error>,
    since: Instant,
    timeout: Duration,
) -> Option<Verdict> {
    if r.is_ok() {
        return None;
    }
    let elapsed = since.elapsed();
    if elapsed + SLACK >= timeout {
        return Some(Verdict::Stalled(format!(
            "{what}: checked {} ms after the activity, timeout {} ms",
            elapsed.as_millis(),
            timeout.as_millis()
        )));
    }
    panic!(
        "{what}: session should be alive {} ms after activity with a {} ms timeout, got {r:?}",
        elapsed.as_millis(),
        timeout.as_millis()
    );
}

/// `contains` as a result: `false` becomes `NotFound`.
fn present(r: Result<bool, Error>) -> Result<(), Error> {
    r.and_then(|there| if there { Ok(()) } else { Err(Error::NotFound) })
}

/// The backend's clock now, read as the creation stamp of a throwaway
/// session, for a check that a later operation was activity (its stamp is
/// at least this). If the clock has not passed `before` (a stamp taken
/// before a 25 ms sleep), it lagged (the engine's clock thread waited for a
/// CPU) and the check would prove nothing: the case reports a stall.
macro_rules! clock_past {
    ($s:expr, $what:expr, $before:expr) => {{
        let probe = ok("probe create", $s.create(b"probe", LONG).await);
        let now = ok("probe peek", $s.peek(&probe).await).created_ms();
        ok("probe delete", $s.delete(&probe).await);
        if now <= $before {
            return Verdict::Stalled(format!("{}: the backend's clock did not move in 25 ms", $what));
        }
        now
    }};
}

/// See `caught_up!` (`lib.rs`): `Err` with the backend clock's lag, in ms, if it did
/// not catch up in time. Reads the backend's clock as the creation stamp of
/// a throwaway session.
pub(crate) async fn backend_caught_up<S: SessionStore + ?Sized>(s: &S) -> Result<(), u64> {
    let target = now_ms().saturating_sub(CLOCK_SKEW_MS);
    let give_up = Instant::now() + CATCH_UP_MAX;
    loop {
        let probe = ok("probe create", s.create(b"probe", LONG).await);
        let now = ok("probe peek", s.peek(&probe).await).created_ms();
        ok("probe delete", s.delete(&probe).await);
        if now >= target {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(target - now);
        }
        sleep(ms(5)).await;
    }
}

macro_rules! alive {
    ($what:expr, $r:expr, $since:expr, $timeout:expr) => {{
        let r = $r;
        if let Some(v) = $crate::cases::still_alive($what, &r, $since, $timeout) {
            return v;
        }
        r.unwrap()
    }};
}

async fn create_then_get_returns_what_was_stored<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let before = now_ms();
    let id = ok("create", s.create(b"user_id=123", Timeout::from_secs(1800)).await);
    let got = ok("get", s.get(&id).await);
    assert_eq!(got.id(), id);
    assert_eq!(got.metadata(), b"user_id=123");
    assert_eq!(got.timeout(), Timeout::from_secs(1800));
    assert!(got.created_ms() <= got.last_access_ms(), "{got:?}");
    assert!(
        got.created_ms() + 5_000 >= before && got.created_ms() <= now_ms() + 5_000,
        "created_ms {} far from wall time {before}",
        got.created_ms()
    );
    assert_eq!(got.expires_at_ms(), Some(got.last_access_ms() + 1_800_000));
    let peeked = ok("peek", s.peek(&id).await);
    assert_eq!(peeked.metadata(), b"user_id=123");
    assert_eq!(peeked.created_ms(), got.created_ms());
    assert!(ok("contains", s.contains(&id).await));
    Verdict::Pass
}

async fn metadata_is_binary_safe_including_empty<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let id = ok("create", s.create(&all_bytes, LONG).await);
    assert_eq!(ok("get", s.get(&id).await).metadata(), &all_bytes[..]);
    let empty = ok("create empty", s.create(b"", LONG).await);
    assert_eq!(ok("get empty", s.get(&empty).await).metadata(), b"");
    let updated = ok("update to empty", s.update(&id, |_| Vec::new()).await);
    assert_eq!(updated.metadata(), b"");
    assert_eq!(ok("peek", s.peek(&id).await).metadata(), b"");
    Verdict::Pass
}

async fn ids_are_distinct_and_url_safe<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let id = ok("create", s.create(b"x", LONG).await);
        let text = id.to_string();
        assert_eq!(text.len(), session_engine::SESSION_ID_TEXT_LEN);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(seen.insert(id), "duplicate id {id}");
    }
    Verdict::Pass
}

async fn insert_uses_the_given_id_and_never_overwrites<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = SessionId::from_bytes(*b"chosen-by-caller");
    ok("insert", s.insert(id, b"first", LONG).await);
    let again = s.insert(id, b"second", Timeout::from_secs(5)).await;
    assert!(
        matches!(again, Err(Error::AlreadyExists)),
        "second insert: {again:?}"
    );
    let got = ok("get", s.get(&id).await);
    assert_eq!(got.metadata(), b"first", "the original is left untouched");
    assert_eq!(got.timeout(), LONG);
    ok("delete", s.delete(&id).await);
    ok("insert after delete", s.insert(id, b"third", LONG).await);
    assert_eq!(ok("get", s.get(&id).await).metadata(), b"third");
    Verdict::Pass
}

async fn get_records_activity_and_peek_does_not<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"m", LONG).await);
    let first = ok("get", s.get(&id).await);
    sleep(ms(25)).await;
    // The clock has moved past the get before the peek: on a clock that
    // stood still, a peek that counted as activity would leave the same
    // time.
    let clock = clock_past!(s, "peek", first.last_access_ms());
    let peeked = ok("peek", s.peek(&id).await);
    assert_eq!(
        peeked.last_access_ms(),
        first.last_access_ms(),
        "peek is not activity"
    );
    let second = ok("get again", s.get(&id).await);
    assert!(
        second.last_access_ms() >= clock,
        "get is activity: {} then {}",
        first.last_access_ms(),
        second.last_access_ms()
    );
    assert_eq!(second.created_ms(), first.created_ms());
    assert_eq!(
        ok("peek", s.peek(&id).await).last_access_ms(),
        second.last_access_ms()
    );
    sleep(ms(25)).await;
    let clock = clock_past!(s, "touch", second.last_access_ms());
    ok("touch", s.touch(&id).await);
    let after_touch = ok("peek", s.peek(&id).await);
    assert!(after_touch.last_access_ms() >= clock, "touch is activity");
    Verdict::Pass
}

async fn update_replaces_metadata_and_counts_as_activity<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = ok("create", s.create(b"count=1", LONG).await);
    let before = ok("peek", s.peek(&id).await);
    sleep(ms(25)).await;
    let clock = clock_past!(s, "update", before.last_access_ms());
    let mut seen = Vec::new();
    let updated = ok(
        "update",
        s.update(&id, |m| {
            seen = m.to_vec();
            b"count=2".to_vec()
        })
        .await,
    );
    assert_eq!(seen, b"count=1", "the closure sees the current value");
    assert_eq!(updated.id(), id);
    assert_eq!(updated.metadata(), b"count=2");
    assert_eq!(updated.created_ms(), before.created_ms());
    assert_eq!(updated.timeout(), LONG);
    assert!(updated.last_access_ms() >= clock, "update is activity");
    let got = ok("get", s.get(&id).await);
    assert_eq!(got.metadata(), b"count=2");
    Verdict::Pass
}

async fn update_runs_on_the_latest_value<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"", LONG).await);
    for i in 0..20u8 {
        let updated = ok("update", s.update(&id, |m| [m, &[b'a' + i]].concat()).await);
        assert_eq!(updated.metadata().len(), usize::from(i) + 1);
    }
    assert_eq!(ok("get", s.get(&id).await).metadata(), b"abcdefghijklmnopqrst");
    Verdict::Pass
}

async fn every_operation_on_a_missing_id_is_not_found<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = SessionId::from_bytes([0x5a; 16]);
    not_found("get", s.get(&id).await);
    not_found("peek", s.peek(&id).await);
    let mut ran = false;
    not_found(
        "update",
        s.update(&id, |m| {
            ran = true;
            m.to_vec()
        })
        .await,
    );
    assert!(!ran, "update of a missing session must not run the closure");
    not_found("touch", s.touch(&id).await);
    not_found("delete", s.delete(&id).await);
    not_found("set_ttl", s.set_ttl(&id, LONG).await);
    not_found("set_ttl never", s.set_ttl(&id, Timeout::Never).await);
    not_found("set_lifetime", s.set_lifetime(&id, LONG).await);
    not_found("rotate", s.rotate(&id).await);
    let mut ran = false;
    not_found(
        "try_update",
        s.try_update(&id, |_| {
            ran = true;
            Ok::<_, ()>(Op::Keep)
        })
        .await,
    );
    assert!(!ran, "try_update of a missing session must not run the closure");
    assert!(!ok("contains", s.contains(&id).await));
    assert_eq!(ok("len", s.len().await), 0, "nothing was created");
    Verdict::Pass
}

async fn delete_removes_the_session<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"bye", LONG).await);
    let other = ok("create other", s.create(b"stay", LONG).await);
    ok("delete", s.delete(&id).await);
    not_found("get after delete", s.get(&id).await);
    not_found("peek after delete", s.peek(&id).await);
    assert!(!ok("contains", s.contains(&id).await));
    not_found("delete again", s.delete(&id).await);
    assert_eq!(ok("other survives", s.get(&other).await).metadata(), b"stay");
    assert_eq!(ok("len", s.len().await), 1);
    Verdict::Pass
}

async fn set_ttl_never_keeps_a_session_past_its_old_deadline<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let timeout = ms(200);
    let since = Instant::now();
    let id = ok("create", s.create(b"keep", Timeout::After(timeout)).await);
    let r = s.set_ttl(&id, Timeout::Never).await;
    alive!("set_ttl never", r, since, timeout);
    sleep(timeout * 2 + SLACK).await;
    let got = ok("get after the old deadline", s.get(&id).await);
    assert_eq!(got.timeout(), Timeout::Never);
    assert_eq!(got.expires_at_ms(), None);
    assert!(ok("contains", s.contains(&id).await));
    Verdict::Pass
}

async fn set_ttl_finite_after_never_expires_again<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"x", Timeout::Never).await);
    assert_eq!(ok("peek", s.peek(&id).await).timeout(), Timeout::Never);
    let timeout = ms(150);
    let since = Instant::now();
    ok("set_ttl", s.set_ttl(&id, Timeout::After(timeout)).await);
    let got = alive!("peek after set_ttl", s.peek(&id).await, since, timeout);
    assert_eq!(got.timeout(), Timeout::After(timeout));
    assert_eq!(got.expires_at_ms(), Some(got.last_access_ms() + 150));
    sleep(timeout * 2 + SLACK).await;
    caught_up!(s, "set_ttl_finite_after_never_expires_again");
    not_found("get after the new deadline", s.get(&id).await);
    assert!(!ok("contains", s.contains(&id).await));
    Verdict::Pass
}

async fn a_session_expires_after_its_inactivity_timeout<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let short = ok("create short", s.create(b"x", Timeout::from_ms(100)).await);
    let long = ok("create long", s.create(b"y", LONG).await);
    sleep(ms(100) * 3 + SLACK).await;
    caught_up!(s, "a_session_expires_after_its_inactivity_timeout");
    not_found("peek expired", s.peek(&short).await);
    not_found("get expired", s.get(&short).await);
    not_found("touch expired", s.touch(&short).await);
    not_found("update expired", s.update(&short, <[u8]>::to_vec).await);
    not_found("set_ttl expired", s.set_ttl(&short, Timeout::Never).await);
    assert!(!ok("contains expired", s.contains(&short).await));
    ok("the long one lives", s.get(&long).await);
    Verdict::Pass
}

async fn activity_slides_the_deadline<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let timeout = ms(300);
    let mut since = Instant::now();
    let id = ok("create", s.create(b"0", Timeout::After(timeout)).await);
    // Six activities 120 ms apart: 720 ms in all, well past one timeout.
    for round in 0..6u8 {
        sleep(ms(120)).await;
        let next = Instant::now();
        let what = format!("activity {round}");
        match round % 3 {
            0 => drop(alive!(&what, s.get(&id).await, since, timeout)),
            1 => alive!(&what, s.touch(&id).await, since, timeout),
            _ => drop(alive!(
                &what,
                s.update(&id, |_| vec![b'0' + round]).await,
                since,
                timeout
            )),
        }
        since = next;
    }
    alive!("contains", present(s.contains(&id).await), since, timeout);
    let meta = alive!("peek", s.peek(&id).await, since, timeout);
    assert_eq!(meta.metadata(), b"5");
    sleep(timeout * 2 + SLACK).await;
    caught_up!(s, "activity_slides_the_deadline");
    not_found("get after the last deadline", s.get(&id).await);
    Verdict::Pass
}

async fn peek_contains_and_list_do_not_slide_the_deadline<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let timeout = ms(300);
    let since = Instant::now();
    let id = ok("create", s.create(b"x", Timeout::After(timeout)).await);
    // The deadline lies between since + timeout and created + timeout.
    let created = Instant::now();
    for _ in 0..2 {
        sleep(ms(100)).await;
        alive!("peek", s.peek(&id).await, since, timeout);
        alive!("contains", present(s.contains(&id).await), since, timeout);
        let page = ok("list", s.list(Cursor::START, 10).await);
        assert!(page.sessions.len() <= 1);
    }
    // Had peek/contains/list slid it, the deadline would be ~500 ms after
    // creation; check at 450 ms, past the original.
    let until = created + timeout + ms(150);
    sleep(until.saturating_duration_since(Instant::now())).await;
    caught_up!(s, "peek_contains_and_list_do_not_slide_the_deadline");
    not_found("peek after the original deadline", s.peek(&id).await);
    Verdict::Pass
}

async fn list_pages_return_every_session_once<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let mut created = HashMap::new();
    for i in 0..250u32 {
        let meta = i.to_string().into_bytes();
        let id = ok("create", s.create(&meta, LONG).await);
        created.insert(id, meta);
    }
    for limit in [7, 64, 1000] {
        let mut seen: HashMap<SessionId, usize> = HashMap::new();
        let mut cursor = Cursor::START;
        let mut pages = 0;
        loop {
            let page = ok("list", s.list(cursor, limit).await);
            assert!(
                page.sessions.len() <= limit,
                "page of {} > {limit}",
                page.sessions.len()
            );
            for session in &page.sessions {
                assert_eq!(
                    Some(&session.metadata().to_vec()),
                    created.get(&session.id()),
                    "listed metadata"
                );
                *seen.entry(session.id()).or_default() += 1;
            }
            pages += 1;
            assert!(pages < 10_000, "listing does not end");
            match page.next {
                Some(next) => {
                    assert_eq!(
                        next.to_string().parse::<Cursor>().unwrap(),
                        next,
                        "cursor text round-trips"
                    );
                    cursor = next;
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), created.len(), "limit {limit}: every session listed");
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "limit {limit}: listed more than once: {twice:?}"
        );
    }
    Verdict::Pass
}

async fn list_with_page_size_one_and_max<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let empty = ok("list empty", s.list(Cursor::START, 10).await);
    assert!(empty.sessions.is_empty());
    assert!(empty.next.is_none(), "an empty store lists in one page");
    let ids: Vec<SessionId> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(ok("create", s.create(b"p", LONG).await));
        }
        v
    };
    let mut seen = Vec::new();
    let mut cursor = Cursor::START;
    loop {
        let page = ok("list 1", s.list(cursor, 1).await);
        assert!(page.sessions.len() <= 1);
        seen.extend(page.sessions.iter().map(session_engine::Session::id));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    let all = ok("list max", s.list(Cursor::START, LIST_PAGE_MAX).await);
    assert_eq!(all.sessions.len(), 5);
    Verdict::Pass
}

async fn list_leaves_out_expired_sessions<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let mut live = Vec::new();
    for _ in 0..5 {
        ok("create short", s.create(b"short", Timeout::from_ms(100)).await);
        live.push(ok("create never", s.create(b"never", Timeout::Never).await));
    }
    sleep(ms(100) * 3 + SLACK).await;
    caught_up!(s, "list_leaves_out_expired_sessions");
    let page = ok("list", s.list(Cursor::START, 100).await);
    let mut listed: Vec<_> = page.sessions.iter().map(session_engine::Session::id).collect();
    listed.sort();
    live.sort();
    assert_eq!(listed, live, "only live sessions are listed");
    assert!(page.sessions.iter().all(|s| s.metadata() == b"never"));
    Verdict::Pass
}

async fn len_counts_live_sessions<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    assert_eq!(ok("len", s.len().await), 0);
    assert!(ok("is_empty", s.is_empty().await));
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(ok("create", s.create(b"n", LONG).await));
    }
    assert_eq!(ok("len", s.len().await), 10);
    assert!(!ok("is_empty", s.is_empty().await));
    for id in &ids[..3] {
        ok("delete", s.delete(id).await);
    }
    assert_eq!(ok("len", s.len().await), 7);
    Verdict::Pass
}

async fn invalid_input_returns_typed_errors_and_stores_nothing<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let zero = s.create(b"x", Timeout::from_ms(0)).await;
    assert!(
        matches!(zero, Err(Error::InvalidTimeout { timeout_ms: 0, .. })),
        "zero timeout: {zero:?}"
    );
    let huge = s.create(b"x", Timeout::from_ms(TIMEOUT_MS_MAX + 1)).await;
    assert!(
        matches!(huge, Err(Error::InvalidTimeout { .. })),
        "huge timeout: {huge:?}"
    );
    ok(
        "longest finite timeout",
        s.create(b"x", Timeout::from_ms(TIMEOUT_MS_MAX)).await,
    );
    let id = SessionId::from_bytes([3; 16]);
    let bad = s.insert(id, b"x", Timeout::from_ms(0)).await;
    assert!(
        matches!(bad, Err(Error::InvalidTimeout { .. })),
        "insert: {bad:?}"
    );
    assert!(
        !ok("contains", s.contains(&id).await),
        "a rejected insert stores nothing"
    );
    let live = ok("create", s.create(b"x", LONG).await);
    let bad = s.set_ttl(&live, Timeout::from_ms(0)).await;
    assert!(
        matches!(bad, Err(Error::InvalidTimeout { .. })),
        "set_ttl: {bad:?}"
    );
    assert_eq!(ok("peek", s.peek(&live).await).timeout(), LONG, "unchanged");
    for limit in [0, LIST_PAGE_MAX + 1] {
        let r = s.list(Cursor::START, limit).await;
        assert!(
            matches!(r, Err(Error::InvalidPageSize { limit: l, max: LIST_PAGE_MAX }) if l == limit),
            "page size {limit}: {r:?}"
        );
    }
    let r = s.list(Cursor::new(u32::MAX, 0), 10).await;
    assert!(matches!(r, Err(Error::InvalidCursor { .. })), "cursor: {r:?}");
    assert!("nonsense".parse::<Cursor>().is_err());
    assert!("x".parse::<SessionId>().is_err());
    assert_eq!(ok("len", s.len().await), 2);
    Verdict::Pass
}

async fn values_too_large_change_nothing<S: SessionStore>(s: Arc<S>, o: SuiteOptions) -> Verdict {
    let max = o.metadata_bytes_max;
    let too_big = vec![7u8; max + 1];
    let r = s.create(&too_big, LONG).await;
    assert!(
        matches!(r, Err(Error::ValueTooLarge { len, max: m }) if len == max + 1 && m == max),
        "create: {r:?}"
    );
    let id = SessionId::from_bytes([9; 16]);
    let r = s.insert(id, &too_big, LONG).await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "insert: {r:?}");
    assert_eq!(ok("len", s.len().await), 0);
    let at_max = vec![1u8; max];
    let id = ok("create at the limit", s.create(&at_max, LONG).await);
    let r = s.update(&id, |_| too_big.clone()).await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "update: {r:?}");
    assert_eq!(ok("peek", s.peek(&id).await).metadata(), &at_max[..], "unchanged");
    Verdict::Pass
}

async fn concurrent_updates_lose_nothing<S: SessionStore + 'static>(s: Arc<S>, o: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"0", LONG).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..o.writers {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            for _ in 0..o.updates_per_writer {
                ok(
                    "update",
                    s.update(&id, |m| {
                        let n: u64 = std::str::from_utf8(m).unwrap().parse().unwrap();
                        (n + 1).to_string().into_bytes()
                    })
                    .await,
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
    let total = o.writers * o.updates_per_writer;
    let got = ok("get", s.get(&id).await);
    assert_eq!(
        std::str::from_utf8(got.metadata()).unwrap(),
        total.to_string(),
        "{} writers x {} increments",
        o.writers,
        o.updates_per_writer
    );
    Verdict::Pass
}

async fn concurrent_creates_and_deletes_keep_len_exact<S: SessionStore + 'static>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u8 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let mut kept = Vec::new();
            for i in 0..20u8 {
                let id = ok("create", s.create(&[t, i], LONG).await);
                if i % 2 == 0 {
                    ok("delete", s.delete(&id).await);
                } else {
                    kept.push(id);
                }
            }
            kept
        });
    }
    let mut kept = Vec::new();
    while let Some(done) = tasks.join_next().await {
        kept.extend(done.expect("task"));
    }
    assert_eq!(ok("len", s.len().await), kept.len());
    for id in &kept {
        assert!(ok("contains", s.contains(id).await));
    }
    Verdict::Pass
}

async fn cleanup_expired_reports_and_len_settles<S: SessionStore>(s: Arc<S>, o: SuiteOptions) -> Verdict {
    for _ in 0..10 {
        ok("create short", s.create(b"s", Timeout::from_ms(100)).await);
    }
    let keep = ok("create long", s.create(b"l", LONG).await);
    sleep(ms(100) * 3 + SLACK).await;
    caught_up!(s, "cleanup_expired_reports_and_len_settles");
    let reclaimed = ok("cleanup_expired", s.cleanup_expired().await);
    if o.native_expiry {
        assert_eq!(reclaimed, 0, "a natively expiring backend reports 0");
    } else {
        // What the sweeper had not reclaimed yet, this call did: every
        // expired session is gone once it returns.
        assert!(reclaimed <= 10, "reclaimed {reclaimed} of 10");
        assert_eq!(ok("len", s.len().await), 1, "len right after cleanup_expired");
    }
    // Native expiry is lazy on access and sampled in the background; len
    // counts live sessions once the expired are reclaimed or skipped.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let len = ok("len", s.len().await);
        if len == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "len stays {len} after expiry, want 1");
        sleep(ms(50)).await;
        let _ = s.cleanup_expired().await;
    }
    ok("the long one lives", s.get(&keep).await);
    Verdict::Pass
}

async fn put_inserts_then_replaces_keeping_the_creation_time<S: SessionStore>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = SessionId::from_bytes(*b"put-chosen-id-01");
    ok("put new", s.put(id, b"first", LONG).await);
    let first = ok("peek", s.peek(&id).await);
    assert_eq!(first.metadata(), b"first");
    assert_eq!(first.timeout(), LONG);
    assert_eq!(ok("len", s.len().await), 1);
    sleep(ms(25)).await;
    let clock = clock_past!(s, "put", first.last_access_ms());
    ok("put again", s.put(id, b"second", Timeout::from_secs(900)).await);
    let second = ok("peek", s.peek(&id).await);
    assert_eq!(second.metadata(), b"second");
    assert_eq!(second.timeout(), Timeout::from_secs(900), "the new timeout");
    assert_eq!(second.created_ms(), first.created_ms(), "creation time kept");
    assert!(
        second.last_access_ms() >= clock,
        "put is activity: {} then {}",
        first.last_access_ms(),
        second.last_access_ms()
    );
    assert_eq!(ok("len", s.len().await), 1, "replaced, not added");
    ok("delete", s.delete(&id).await);
    ok("put after delete", s.put(id, b"third", LONG).await);
    assert_eq!(ok("get", s.get(&id).await).metadata(), b"third");
    Verdict::Pass
}

async fn put_checks_its_input_and_changes_nothing<S: SessionStore>(s: Arc<S>, o: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"kept", LONG).await);
    let too_large = vec![0u8; o.metadata_bytes_max + 1];
    let r = s.put(id, &too_large, LONG).await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "{r:?}");
    for bad in [Timeout::from_ms(0), Timeout::from_ms(TIMEOUT_MS_MAX + 1)] {
        let r = s.put(id, b"x", bad).await;
        assert!(matches!(r, Err(Error::InvalidTimeout { .. })), "{bad:?}: {r:?}");
    }
    let got = ok("get", s.get(&id).await);
    assert_eq!(got.metadata(), b"kept");
    assert_eq!(got.timeout(), LONG);
    let fresh = SessionId::from_bytes(*b"never-stored-put");
    let r = s.put(fresh, &too_large, LONG).await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "{r:?}");
    not_found("the refused put stored nothing", s.peek(&fresh).await);
    Verdict::Pass
}

async fn rotate_moves_the_session_to_a_fresh_id<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let old = ok("create", s.create(b"user=alice", Timeout::from_secs(900)).await);
    let before = ok("peek", s.peek(&old).await);
    sleep(ms(25)).await;
    let clock = clock_past!(s, "rotate", before.last_access_ms());
    let new = ok("rotate", s.rotate(&old).await);
    assert_ne!(new, old);
    not_found("the old id after rotate", s.get(&old).await);
    assert!(!ok("contains old", s.contains(&old).await));
    let got = ok("peek new", s.peek(&new).await);
    assert_eq!(got.id(), new);
    assert_eq!(got.metadata(), b"user=alice");
    assert_eq!(got.created_ms(), before.created_ms(), "creation time kept");
    assert_eq!(got.timeout(), Timeout::from_secs(900), "timeout kept");
    assert!(got.last_access_ms() >= clock, "rotate is activity");
    assert_eq!(ok("len", s.len().await), 1);
    not_found("rotate of the old id", s.rotate(&old).await);
    let newer = ok("rotate again", s.rotate(&new).await);
    assert!(newer != new && newer != old);
    assert_eq!(ok("get", s.get(&newer).await).metadata(), b"user=alice");
    // A rotated session keeps working: updates and deletes by its new id.
    ok("update", s.update(&newer, |_| b"user=bob".to_vec()).await);
    ok("delete", s.delete(&newer).await);
    assert_eq!(ok("len", s.len().await), 0);
    Verdict::Pass
}

/// A `Keep` decided on bytes that changed before it applied is decided
/// again on the newer ones, as a `Replace` or `Delete` is: a closure that
/// keeps a grant and refuses a revoked one never answers `Kept` with the
/// grant once another writer has revoked it.
async fn a_keep_on_bytes_that_changed_is_decided_again<S: SessionStore + 'static>(
    s: Arc<S>,
    _: SuiteOptions,
) -> Verdict {
    let id = ok("create", s.create(b"granted", LONG).await);
    let mut calls = 0;
    let writer = Arc::clone(&s);
    let r = ok(
        "try_update",
        s.try_update(&id, |m| {
            calls += 1;
            if calls == 1 {
                // Another writer revokes the grant while this closure
                // decides (on a thread and runtime of its own).
                let writer = Arc::clone(&writer);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("the writer's runtime");
                    runtime.block_on(writer.update(&id, |_| b"revoked".to_vec()))
                })
                .join()
                .expect("the writer's thread")
                .expect("the concurrent update");
            }
            if m == b"revoked" {
                Err("revoked")
            } else {
                Ok(Op::Keep)
            }
        })
        .await,
    );
    assert!(
        matches!(r, Err("revoked")),
        "a keep stood on the grant another writer had revoked: {r:?}"
    );
    assert_eq!(calls, 2, "decided again once, on the newer bytes");
    assert_eq!(ok("peek", s.peek(&id).await).metadata(), b"revoked");
    Verdict::Pass
}

async fn try_update_keeps_replaces_deletes_or_declines<S: SessionStore>(
    s: Arc<S>,
    o: SuiteOptions,
) -> Verdict {
    let id = ok("create", s.create(b"tokens=3", LONG).await);
    let created = ok("peek", s.peek(&id).await);
    sleep(ms(25)).await;
    // Declined: nothing changes, nothing slides (the clock has moved).
    let clock = clock_past!(s, "try_update declining", created.last_access_ms());
    let r = ok(
        "try_update declining",
        s.try_update(&id, |m| {
            Err::<Op, _>(format!("no: {}", String::from_utf8_lossy(m)))
        })
        .await,
    );
    assert_eq!(r, Err("no: tokens=3".to_owned()));
    let after = ok("peek", s.peek(&id).await);
    assert_eq!(after.metadata(), b"tokens=3");
    assert_eq!(
        after.last_access_ms(),
        created.last_access_ms(),
        "a refusal is not activity"
    );
    // Kept: the same bytes, the deadline slid.
    let kept = ok(
        "try_update keeping",
        s.try_update(&id, |_| Ok::<_, ()>(Op::Keep)).await,
    );
    let Ok(Updated::Kept(kept)) = kept else {
        panic!("expected Kept, got {kept:?}")
    };
    assert_eq!(kept.metadata(), b"tokens=3");
    let after = ok("peek", s.peek(&id).await);
    assert!(after.last_access_ms() >= clock, "keeping is activity");
    // Replaced, as update.
    let replaced = ok(
        "try_update replacing",
        s.try_update(&id, |m| {
            assert_eq!(m, b"tokens=3");
            Ok::<_, ()>(Op::Replace(b"tokens=2".to_vec()))
        })
        .await,
    );
    let Ok(Updated::Replaced(replaced)) = replaced else {
        panic!("expected Replaced, got {replaced:?}")
    };
    assert_eq!(replaced.metadata(), b"tokens=2");
    assert_eq!(replaced.created_ms(), created.created_ms());
    assert_eq!(ok("get", s.get(&id).await).metadata(), b"tokens=2");
    // Too large: refused, nothing changed.
    let big = vec![1u8; o.metadata_bytes_max + 1];
    let r = s.try_update(&id, |_| Ok::<_, ()>(Op::Replace(big.clone()))).await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })), "{r:?}");
    assert_eq!(ok("get", s.get(&id).await).metadata(), b"tokens=2");
    // Deleted: gone, the session as it was comes back.
    let deleted = ok(
        "try_update deleting",
        s.try_update(&id, |_| Ok::<_, ()>(Op::Delete)).await,
    );
    let Ok(Updated::Deleted(deleted)) = deleted else {
        panic!("expected Deleted, got {deleted:?}")
    };
    assert_eq!(deleted.metadata(), b"tokens=2");
    not_found("get after try_update deleted", s.get(&id).await);
    not_found(
        "try_update of a missing id",
        s.try_update(&id, |_| Ok::<_, ()>(Op::Keep)).await,
    );
    assert_eq!(ok("len", s.len().await), 0);
    Verdict::Pass
}

async fn timeouts_of_a_year_are_kept<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let year = Timeout::from_secs(365 * 24 * 3600);
    let id = ok("create", s.create(b"remember me", year).await);
    let got = ok("get", s.get(&id).await);
    assert_eq!(got.timeout(), year);
    let expires = got.expires_at_ms().expect("finite");
    assert_eq!(expires, got.last_access_ms() + 365 * 24 * 3600 * 1000);
    ok("set_ttl", s.set_ttl(&id, Timeout::from_ms(TIMEOUT_MS_MAX)).await);
    assert_eq!(
        ok("peek", s.peek(&id).await).timeout(),
        Timeout::from_ms(TIMEOUT_MS_MAX)
    );
    ok("put", s.put(id, b"x", year).await);
    assert_eq!(ok("peek", s.peek(&id).await).timeout(), year);
    Verdict::Pass
}

async fn a_lifetime_cap_ends_an_active_session<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let other = ok("create other", s.create(b"free", LONG).await);
    // Every step up to the rotation's peek must come within the cap of the
    // creation: one that found the session gone after a stall that long
    // proves nothing (a stall, tried again).
    let created_at = Instant::now();
    let id = ok("create", s.create(b"capped", LONG).await);
    assert_eq!(ok("peek", s.peek(&id).await).lifetime(), Timeout::Never);
    let cap = ms(400);
    ok("set_lifetime", s.set_lifetime(&id, Timeout::After(cap)).await);
    let got = alive!("get after the cap", s.get(&id).await, created_at, cap);
    assert_eq!(got.lifetime(), Timeout::After(cap));
    assert_eq!(
        got.expires_at_ms(),
        Some(got.created_ms() + 400),
        "the cap comes before the 600 s inactivity deadline"
    );
    // Activity does not carry it past the cap; the cap survives other
    // writes, a rotation included (a login's, which must not lift it).
    alive!(
        "update",
        s.update(&id, |_| b"still capped".to_vec()).await,
        created_at,
        cap
    );
    alive!("set_ttl", s.set_ttl(&id, LONG).await, created_at, cap);
    let id = alive!("rotate", s.rotate(&id).await, created_at, cap);
    let rotated = alive!("peek", s.peek(&id).await, created_at, cap);
    assert_eq!(rotated.lifetime(), Timeout::After(cap));
    assert_eq!(
        (rotated.created_ms(), rotated.expires_at_ms()),
        (got.created_ms(), Some(got.created_ms() + 400)),
        "a rotation keeps the creation time the cap counts from"
    );
    let created = Duration::from_millis(got.created_ms());
    let wake = created + cap + SLACK;
    let now = Duration::from_millis(now_ms());
    sleep(wake.saturating_sub(now)).await;
    caught_up!(s, "a_lifetime_cap_ends_an_active_session");
    not_found("get past the cap", s.get(&id).await);
    not_found("touch past the cap", s.touch(&id).await);
    ok("the uncapped one lives", s.get(&other).await);
    // A cap already passed ends the session at once; lifting a cap keeps it.
    ok(
        "set_lifetime past",
        s.set_lifetime(&other, Timeout::from_ms(1)).await,
    );
    not_found("get after a passed cap", s.get(&other).await);
    let created_at = Instant::now();
    let third = ok("create third", s.create(b"lifted", LONG).await);
    ok("cap", s.set_lifetime(&third, Timeout::After(ms(200))).await);
    alive!(
        "lift",
        s.set_lifetime(&third, Timeout::Never).await,
        created_at,
        ms(200)
    );
    sleep(ms(200) + SLACK).await;
    assert_eq!(ok("get lifted", s.get(&third).await).lifetime(), Timeout::Never);
    not_found(
        "set_lifetime on a gone id",
        s.set_lifetime(&id, Timeout::Never).await,
    );
    Verdict::Pass
}

async fn get_many_answers_each_id_as_get_would<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    assert!(s.get_many(&[]).await.is_empty(), "no ids, no results");
    let mut ids = Vec::new();
    for n in 0..40u8 {
        ids.push(ok("create", s.create(&[n; 3], LONG).await));
    }
    let short = ok("create short", s.create(b"short", Timeout::from_ms(100)).await);
    let deleted = ok("create deleted", s.create(b"gone", LONG).await);
    ok("delete", s.delete(&deleted).await);
    let unknown = SessionId::from_bytes(*b"never-created-id");
    sleep(ms(100) * 3 + SLACK).await;
    caught_up!(s, "get_many_answers_each_id_as_get_would");
    let before = ok("peek", s.peek(&ids[0]).await);
    // Results come in the caller's order, duplicates answered each time,
    // missing and expired ids NotFound beside live ones.
    let mut asked = vec![ids[7], unknown, ids[0], short, ids[39], deleted, ids[7]];
    asked.extend(ids.iter().rev());
    let clock = clock_past!(s, "get_many", before.last_access_ms());
    let got = s.get_many(&asked).await;
    assert_eq!(got.len(), asked.len());
    for (id, result) in asked.iter().zip(&got) {
        if [unknown, short, deleted].contains(id) {
            assert!(matches!(result, Err(Error::NotFound)), "{id}: {result:?}");
            continue;
        }
        let session = result.as_ref().unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert_eq!(session.id(), *id);
        let n = u8::try_from(ids.iter().position(|i| i == id).expect("one of ours")).expect("40 ids");
        assert_eq!(session.metadata(), [n; 3]);
    }
    // As get, it is activity.
    let after = ok("peek after", s.peek(&ids[0]).await);
    assert!(after.last_access_ms() >= clock, "get_many is activity");
    // get_many_with lends the same sessions, calling its closure for the
    // live ones only, in the caller's order, and is activity too.
    let live: Vec<SessionId> = asked
        .iter()
        .copied()
        .filter(|id| ![unknown, short, deleted].contains(id))
        .collect();
    sleep(ms(25)).await;
    let clock = clock_past!(s, "get_many_with", after.last_access_ms());
    let mut lent = Vec::new();
    let with = s
        .get_many_with(&asked, |v| {
            lent.push(v.id());
            (v.metadata().to_vec(), v.last_access_ms())
        })
        .await;
    assert_eq!(lent, live, "the closure ran once per live id, in order");
    assert_eq!(with.len(), asked.len());
    for ((id, result), snapshot) in asked.iter().zip(&with).zip(&got) {
        match (result, snapshot) {
            (Ok((meta, last)), Ok(session)) => {
                assert_eq!(meta, session.metadata(), "{id}");
                assert!(
                    *last >= clock,
                    "{id}: get_many_with is activity: {last} < {clock}"
                );
            }
            (Err(Error::NotFound), Err(Error::NotFound)) => {}
            (result, snapshot) => panic!("{id}: get_many_with {result:?}, get_many {snapshot:?}"),
        }
    }
    Verdict::Pass
}

async fn borrowing_reads_see_what_get_and_peek_see<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"lent\0bytes", LONG).await);
    ok(
        "set_lifetime",
        s.set_lifetime(&id, Timeout::from_secs(7200)).await,
    );
    let seen = |v: SessionRef<'_>| {
        (
            v.id(),
            v.metadata().to_vec(),
            v.created_ms(),
            v.last_access_ms(),
            v.timeout(),
            v.lifetime(),
            v.expires_at_ms(),
            v.to_session(),
        )
    };
    let peeked = ok("peek", s.peek(&id).await);
    sleep(ms(25)).await;
    let clock = clock_past!(s, "peek_with", peeked.last_access_ms());
    // peek_with lends what peek returns and is not activity.
    let (vid, meta, created, last, timeout, lifetime, expires, owned) =
        ok("peek_with", s.peek_with(&id, seen).await);
    assert_eq!(
        (vid, meta.as_slice(), created),
        (id, &b"lent\0bytes"[..], peeked.created_ms())
    );
    assert_eq!(last, peeked.last_access_ms(), "peek_with is not activity");
    assert_eq!((timeout, lifetime), (LONG, Timeout::from_secs(7200)));
    assert_eq!(expires, peeked.expires_at_ms());
    assert_eq!(owned, peeked, "to_session is the snapshot peek returns");
    // get_with is activity, and lends the access time it wrote.
    let (_, meta, _, last, _, _, expires, owned) = ok("get_with", s.get_with(&id, seen).await);
    assert_eq!(meta, b"lent\0bytes");
    assert!(last >= clock, "get_with is activity: {last} < {clock}");
    let after = ok("peek after", s.peek(&id).await);
    assert_eq!(after.last_access_ms(), last);
    assert_eq!(expires, after.expires_at_ms());
    assert_eq!(owned, after);
    // A missing or expired id never reaches the closure.
    let short = ok("create short", s.create(b"short", Timeout::from_ms(50)).await);
    ok("delete", s.delete(&id).await);
    sleep(ms(50) * 3 + SLACK).await;
    caught_up!(s, "borrowing_reads_see_what_get_and_peek_see");
    for gone in [id, short] {
        let called = std::sync::atomic::AtomicBool::new(false);
        let mark = |_: SessionRef<'_>| called.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(s.get_with(&gone, mark).await, Err(Error::NotFound)));
        assert!(matches!(s.peek_with(&gone, mark).await, Err(Error::NotFound)));
        assert!(
            !called.load(std::sync::atomic::Ordering::Relaxed),
            "{gone}: the closure ran"
        );
    }
    Verdict::Pass
}

/// A call's future does nothing until it is polled, on every backend: one
/// built and dropped (a `select!` branch whose precondition is false is
/// still built; a losing branch is dropped) neither writes nor counts as
/// activity.
async fn a_future_never_polled_changes_nothing<S: SessionStore>(s: Arc<S>, _: SuiteOptions) -> Verdict {
    let id = ok("create", s.create(b"kept", LONG).await);
    let before = ok("peek", s.peek(&id).await);
    sleep(ms(25)).await;
    clock_past!(
        s,
        "a_future_never_polled_changes_nothing",
        before.last_access_ms()
    );
    let fresh = SessionId::random().expect("a random id");
    drop(s.create(b"never", LONG));
    drop(s.insert(fresh, b"never", LONG));
    drop(s.put(id, b"never", LONG));
    drop(s.put(fresh, b"never", LONG));
    drop(s.rotate(&id));
    drop(s.update(&id, |_| b"never".to_vec()));
    drop(s.try_update(&id, |_| Ok::<_, ()>(Op::Delete)));
    drop(s.set_ttl(&id, Timeout::from_ms(1)));
    drop(s.set_lifetime(&id, Timeout::from_ms(1)));
    drop(s.get(&id));
    drop(s.get_with(&id, |_| ()));
    drop(s.touch(&id));
    drop(s.get_many(std::slice::from_ref(&id)));
    drop(s.delete(&id));
    let after = ok("peek after", s.peek(&id).await);
    assert_eq!(after, before, "a future never polled changed the session");
    assert!(
        !ok("contains fresh", s.contains(&fresh).await),
        "a future never polled stored a session"
    );
    assert_eq!(
        ok("len", s.len().await),
        1,
        "a future never polled created a session"
    );
    Verdict::Pass
}

fn now_ms() -> u64 {
    session_engine::system_time_to_ms(std::time::SystemTime::now())
}
