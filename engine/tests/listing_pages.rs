//! Listing pages through 100K+ sessions one shard at a time, each exactly once.

use std::collections::HashSet;

use session_engine::{Config, Cursor, Engine, Timeout};

#[test]
fn pages_through_every_session_exactly_once() {
    let engine = Engine::open(Config::default().shards(8).without_sweeper()).unwrap();
    let n = 120_000;
    let ids: HashSet<_> = (0..n)
        .map(|_| engine.create(b"m", Timeout::Never).unwrap())
        .collect();
    let mut seen = HashSet::new();
    let mut cursor = Cursor::START;
    let mut pages = 0;
    loop {
        let page = engine.list(cursor, 7_000).unwrap();
        assert!(page.sessions.len() <= 7_000);
        for s in &page.sessions {
            assert!(seen.insert(s.id()), "listed twice");
        }
        pages += 1;
        // Cursors survive a round trip through text (e.g. an HTTP query).
        match page.next {
            Some(next) => cursor = next.to_string().parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(pages >= n / 7_000);
}

#[test]
fn sessions_present_throughout_are_listed_despite_churn() {
    let engine = Engine::open(Config::default().shards(4).without_sweeper()).unwrap();
    let stable: Vec<_> = (0..5_000)
        .map(|_| engine.create(b"s", Timeout::Never).unwrap())
        .collect();
    let mut churn: Vec<_> = (0..5_000)
        .map(|_| engine.create(b"c", Timeout::Never).unwrap())
        .collect();
    let mut seen = HashSet::new();
    let mut cursor = Cursor::START;
    loop {
        let page = engine.list(cursor, 500).unwrap();
        seen.extend(page.sessions.iter().map(|s| s.id()));
        // Between pages, delete some and create others.
        for _ in 0..100 {
            if let Some(id) = churn.pop() {
                engine.delete(&id).unwrap();
            }
            engine.create(b"n", Timeout::Never).unwrap();
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert!(stable.iter().all(|id| seen.contains(id)));
}
