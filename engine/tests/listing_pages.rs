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

/// A cursor naming a slot past the end of its shard's table (no page of
/// this engine ends there: it was forged, or damaged in transit) is an
/// `InvalidCursor`, not a page that quietly leaves the shard out.
#[test]
fn a_cursor_past_its_shards_table_is_refused() {
    let engine = Engine::open(Config::default().shards(1).initial_capacity(100)).unwrap();
    for _ in 0..10 {
        engine.create(b"m", Timeout::Never).unwrap();
    }
    // A cursor this engine gave, its slot (the position's low half) moved
    // past the end.
    let given = engine.list(Cursor::START, 1).unwrap().next.expect("more pages");
    let forged = Cursor::new(given.part(), given.position() | u64::from(u32::MAX));
    let err = engine.list(forged, 100).unwrap_err();
    assert!(
        matches!(err, session_engine::Error::InvalidCursor { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("slot"), "{err}");
    // One of another run's (its mark, the position's top 16 bits, differs).
    let other = Cursor::new(given.part(), given.position() ^ 1 << 48);
    let err = engine
        .list(other, 100)
        .map(|page| page.sessions.len())
        .unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");
    // Its table's size or its run forged (the bits of `part` above the
    // shard's) to what no page's end holds: in another generation of the
    // table, the position would resume past the shard's end and leave it
    // out.
    let other_generation = given.position() ^ 1 << 32;
    let (shard, size, run) = (
        given.part() & 0x3FF,
        given.part() & 31 << 10,
        given.part() & !0x7FFF,
    );
    let forged = [
        (shard, other_generation),                              // no table size
        (shard | 2 << 10 | run, other_generation),              // 4 slots
        (shard | size | 0x1FFFE << 15, other_generation),       // a run longer than the slot
        (given.part(), other_generation | u64::from(u32::MAX)), // a slot past the table
    ];
    for (part, position) in forged {
        let err = engine.list(Cursor::new(part, position), 100).unwrap_err();
        assert!(err.to_string().contains("no page's end"), "{part:#x}: {err}");
    }
    assert_eq!(engine.list(Cursor::START, 100).unwrap().sessions.len(), 10);
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

/// A topic most sessions follow (a bitmap of entries in each shard, where a
/// topic few follow is a hash set): its listing holds exactly its live
/// subscribers through unsubscribes, deletes, expiry, rotation and a
/// thinning that turns the sets back into hash sets.
#[test]
fn a_topic_most_sessions_follow_lists_exactly_its_live_subscribers() {
    use session_engine::{ManualClock, TopicCursor};

    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::default().shards(2).clock(clock.clock()).without_sweeper()).unwrap();
    let listed = |engine: &Engine| -> HashSet<_> {
        let mut out = HashSet::new();
        let mut cursor = TopicCursor::START;
        loop {
            let page = engine.subscribers("hot", cursor, 333).unwrap();
            for id in page.ids {
                assert!(out.insert(id), "listed twice");
            }
            match page.next {
                Some(next) => cursor = next,
                None => return out,
            }
        }
    };
    let ids: Vec<_> = (0..3_000u32)
        .map(|n| {
            let timeout = if n % 11 == 0 {
                Timeout::from_ms(50)
            } else {
                Timeout::Never
            };
            engine.create(b"m", timeout).unwrap()
        })
        .collect();
    let mut live: HashSet<_> = HashSet::new();
    for (n, id) in ids.iter().enumerate() {
        if n % 10 != 9 {
            assert!(engine.subscribe(id, "hot").unwrap());
            live.insert(*id);
        }
        engine.subscribe(id, &format!("own-{n}")).unwrap();
    }
    assert_eq!(listed(&engine), live);
    engine.debug_check_invariants();
    for (n, id) in ids.iter().enumerate() {
        if n % 3 == 0 {
            let was = live.remove(id);
            assert_eq!(engine.unsubscribe(id, "hot").unwrap(), was);
        } else if n % 5 == 0 {
            engine.delete(id).unwrap();
            live.remove(id);
        } else if n % 7 == 0 {
            engine.rotate(id).unwrap();
            live.remove(id);
        }
    }
    assert_eq!(listed(&engine), live);
    clock.advance_ms(51);
    live.retain(|id| engine.peek(id).is_ok());
    assert_eq!(listed(&engine), live);
    // Down to a few: the sets are sparse again.
    let few: Vec<_> = live.iter().copied().take(5).collect();
    for id in live.clone() {
        if !few.contains(&id) {
            assert!(engine.unsubscribe(&id, "hot").unwrap());
            live.remove(&id);
        }
    }
    assert_eq!(listed(&engine), live);
    engine.debug_check_invariants();
    for id in &few {
        assert!(engine.subscribe(id, "hot").is_ok());
    }
    assert_eq!(listed(&engine), live);
}

/// A cursor from before a restart names a slot of a table that is gone:
/// the reopened engine lays its sessions out anew (another shard count, or
/// the same count with tables sized and filled afresh), so resuming at that
/// slot would leave out every session before it. It is an `InvalidCursor`,
/// with the same shard count and with another; a listing started after the
/// reopen pages through everything.
#[test]
fn a_cursor_from_before_a_restart_is_refused() {
    for reopened_shards in [2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let config = |shards| {
            Config::default()
                .data_dir(dir.path())
                .shards(shards)
                .without_sweeper()
        };
        let cursor = {
            let engine = Engine::open(config(2)).unwrap();
            for _ in 0..5_000 {
                engine.create(b"m", Timeout::Never).unwrap();
            }
            engine
                .list(Cursor::START, 1_000)
                .unwrap()
                .next
                .expect("more pages")
        };
        // A run's mark is 16 random bits: the reopened run draws the old
        // one's again once in 65,535 opens, so a third open settles it.
        let err = (0..3)
            .find_map(|_| {
                let engine = Engine::open(config(reopened_shards)).unwrap();
                engine.list(cursor, 1_000).err()
            })
            .expect("three runs in a row drew the first run's mark");
        assert!(
            matches!(err, session_engine::Error::InvalidCursor { .. }),
            "{reopened_shards} shards: {err:?}"
        );
        assert!(err.to_string().contains("restart"), "{err}");
        let engine = Engine::open(config(reopened_shards)).unwrap();
        assert_eq!(engine.list_all().len(), 5_000);
    }
}

/// A listing goes on through rebuilds of its shard's table at the same
/// size (tombstones took the room: churn at a steady count), resuming where
/// it stood rather than at the shard's start: each such rebuild used to
/// start the shard again, so a listing paged slowly through a shard whose
/// sessions churn (an admin page of a few hundred a request) never ended.
/// Every session present throughout is listed; a few may repeat (those a
/// rebuild moved back across the page boundary).
#[test]
fn a_listing_goes_on_through_rebuilds_of_its_table_at_the_same_size() {
    let engine = Engine::open(Config::default().shards(1).without_sweeper()).unwrap();
    let stable: HashSet<_> = (0..3_000)
        .map(|_| engine.create(b"s", Timeout::Never).unwrap())
        .collect();
    let mut seen = HashSet::new();
    let mut listed = 0;
    let mut cursor = Cursor::START;
    let mut pages = 0;
    loop {
        let page = engine.list(cursor, 200).unwrap();
        listed += page.sessions.len();
        seen.extend(page.sessions.iter().map(|s| s.id()));
        pages += 1;
        assert!(
            pages <= 30,
            "the listing does not end: {listed} listed in {pages} pages"
        );
        // Between pages, churn at a steady count until the table rebuilds
        // (at the same size: the count stays where it is).
        let rebuilds = engine.stats().rehashes_total;
        for churned in 0.. {
            if engine.stats().rehashes_total > rebuilds {
                break;
            }
            assert!(
                churned < 1_000_000,
                "no rebuild after a million creates and deletes"
            );
            let id = engine.create(b"c", Timeout::Never).unwrap();
            engine.delete(&id).unwrap();
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert!(
        stable.is_subset(&seen),
        "{} never listed",
        stable.difference(&seen).count()
    );
    assert!(
        listed < 3_000 + pages * 50,
        "{listed} listed for 3,000 sessions in {pages} pages: most repeated"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The same through many small tables, whose runs of non-empty slots
    /// often wrap around the end: between pages of random sizes, random
    /// churn, rebuilding the table (at the same size) or not; every session
    /// present throughout is listed. (A page smaller than the run it ends
    /// in may not get past that run while every page meets a rebuild: the
    /// churn stops after 2,000 pages, and the listing then ends.)
    #[test]
    fn sessions_present_throughout_are_listed_through_rebuilds(
        steps in proptest::collection::vec((1usize..12, 0usize..60), 1..40),
    ) {
        let engine = Engine::open(Config::default().shards(1).without_sweeper()).unwrap();
        let stable: HashSet<_> = (0..40).map(|_| engine.create(b"s", Timeout::Never).unwrap()).collect();
        let mut churn: Vec<_> = (0..20).map(|_| engine.create(b"c", Timeout::Never).unwrap()).collect();
        let mut seen = HashSet::new();
        let mut cursor = Cursor::START;
        for page in 0.. {
            let (limit, mut changes) = steps[page % steps.len()];
            if page >= 2_000 {
                changes = 0;
            }
            let listed = engine.list(cursor, limit).unwrap();
            seen.extend(listed.sessions.iter().map(|s| s.id()));
            for k in 0..changes {
                if k % 2 == 0 {
                    churn.push(engine.create(b"c", Timeout::Never).unwrap());
                } else if let Some(id) = churn.pop() {
                    engine.delete(&id).unwrap();
                }
            }
            match listed.next {
                Some(next) => cursor = next,
                None => break,
            }
            proptest::prop_assert!(page < 100_000, "the listing does not end without churn");
        }
        proptest::prop_assert!(stable.is_subset(&seen), "{} never listed", stable.difference(&seen).count());
    }
}
