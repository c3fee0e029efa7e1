//! A listing tells a restarted or promoted master by its `run_id` (`INFO
//! server`): a `SCAN` cursor means nothing on another process, whose hash
//! seed orders the keys anew. A user the server refuses `INFO` (an ACL
//! with `-info`, or `-@dangerous`) got no mark at all, and a page resumed
//! on a restarted master skipped sessions that existed the whole time,
//! with no error. Such a listing now fails with a reason that names
//! `INFO`; either way, no session goes missing without an error.

mod support;

use std::collections::HashSet;

use session_engine::{Cursor, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};

const SESSIONS: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_without_info_fails_rather_than_skipping_sessions() {
    support::require_redis();
    let mut server = support::Server::standalone();
    let prefix = support::unique_prefix("noinfo");
    let store = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(prefix.clone()))
        .await
        .expect("connect");
    let mut all = HashSet::new();
    for _ in 0..SESSIONS {
        all.insert(
            store
                .create(b"x", Timeout::from_secs(3600))
                .await
                .expect("create"),
        );
    }
    let no_info = [
        "ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info",
    ];
    assert!(server.cli(&no_info).contains("OK"));
    let url = format!("redis://noinfo:pw@{}", server.addr());
    let restricted = RedisStore::connect(RedisConfig::standalone(url).key_prefix(prefix))
        .await
        .expect("connect as noinfo");
    let first = match restricted.list(Cursor::START, 100).await {
        Err(e) => {
            let reason = e.to_string();
            assert!(
                reason.contains("INFO"),
                "the refusal does not name INFO: {reason}"
            );
            return;
        }
        Ok(page) => page,
    };
    // Listed on: the master restarts between two pages (its data kept).
    let mut seen: HashSet<SessionId> = first.sessions.iter().map(session_engine::Session::id).collect();
    let mut cursor = first.next.expect("more pages");
    assert!(server.cli(&["SAVE"]).contains("OK"));
    server.kill9();
    server.restart();
    assert!(server.cli(&no_info).contains("OK"));
    for _ in 0..10_000 {
        let page = restricted
            .list(cursor, 100)
            .await
            .expect("list after the restart");
        seen.extend(page.sessions.iter().map(session_engine::Session::id));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let missing = all.difference(&seen).count();
    assert_eq!(
        missing, 0,
        "{missing} of {SESSIONS} sessions skipped without an error"
    );
}
