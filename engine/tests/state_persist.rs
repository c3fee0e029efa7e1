//! Subscriptions are logged (`SUBSCRIBE`/`UNSUBSCRIBE`) and recovered: they
//! survive a reopen and a compaction (at every crash step), the topics of
//! deleted, rotated and expired sessions do not come back, and a damaged
//! topic record is caught like any other.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

mod support;

use session_engine::{
    CompactionStep, Config, Durability, Engine, Error, ManualClock, RecoveryMode, SessionId, Timeout,
    TopicCursor,
};

fn config(dir: &Path) -> Config {
    Config::default()
        .shards(2)
        .data_dir(dir)
        .durability(Durability::Interval(Duration::from_millis(10)))
        .segment_size_bytes(128 * 1024)
        .without_sweeper()
}

const LONG: Timeout = Timeout::from_secs(3600);

fn subscribers(engine: &Engine, topic: &str) -> HashSet<SessionId> {
    let mut all = HashSet::new();
    let mut cursor = TopicCursor::START;
    loop {
        let page = engine.subscribers(topic, cursor, 3).unwrap();
        for id in page.ids {
            assert!(all.insert(id), "listed twice");
        }
        match page.next {
            Some(next) => cursor = next,
            None => return all,
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Checks every session's topics and every topic's subscribers.
fn check(engine: &Engine, expected: &HashMap<SessionId, HashSet<String>>) {
    let mut by_topic: HashMap<&str, HashSet<SessionId>> = HashMap::new();
    for (id, topics) in expected {
        let mut want: Vec<String> = topics.iter().cloned().collect();
        want.sort();
        assert_eq!(sorted(engine.topics(id).unwrap()), want, "topics of {id}");
        for t in topics {
            by_topic.entry(t).or_default().insert(*id);
        }
    }
    for (topic, ids) in by_topic {
        assert_eq!(subscribers(engine, topic), ids, "subscribers of {topic}");
    }
    engine.debug_check_invariants();
}

#[test]
fn subscriptions_survive_a_reopen_and_removed_sessions_lose_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: HashMap<SessionId, HashSet<String>> = HashMap::new();
    let (deleted, rotated_old, rotated_new);
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        for n in 0..40 {
            let id = engine.create(b"m", LONG).unwrap();
            let mut topics = HashSet::new();
            for t in 0..(n % 4) {
                let topic = format!("res://{t}");
                assert!(engine.subscribe(&id, &topic).unwrap());
                topics.insert(topic);
            }
            if n % 3 == 0 && topics.remove("res://0") {
                assert!(engine.unsubscribe(&id, "res://0").unwrap());
            }
            expected.insert(id, topics);
        }
        deleted = engine.create(b"d", LONG).unwrap();
        engine.subscribe(&deleted, "res://0").unwrap();
        engine.delete(&deleted).unwrap();
        rotated_old = engine.create(b"r", LONG).unwrap();
        engine.subscribe(&rotated_old, "res://1").unwrap();
        rotated_new = engine.rotate(&rotated_old).unwrap();
        expected.insert(rotated_new, HashSet::new());
        // `put` over a live session keeps its topics.
        let put = engine.create(b"p", LONG).unwrap();
        engine.subscribe(&put, "res://put").unwrap();
        engine.put(put, b"p2", LONG).unwrap();
        expected.insert(put, HashSet::from(["res://put".to_owned()]));
        // An id deleted and inserted again starts without the old topics.
        let again = engine.create(b"a", LONG).unwrap();
        engine.subscribe(&again, "res://old").unwrap();
        engine.delete(&again).unwrap();
        engine.insert(again, b"a2", LONG).unwrap();
        engine.subscribe(&again, "res://new").unwrap();
        expected.insert(again, HashSet::from(["res://new".to_owned()]));
        check(&engine, &expected);
        engine.close().unwrap();
    }
    let engine = Engine::open(config(dir.path())).unwrap();
    check(&engine, &expected);
    assert!(matches!(engine.topics(&deleted), Err(Error::NotFound)));
    assert!(matches!(engine.topics(&rotated_old), Err(Error::NotFound)));
    assert!(subscribers(&engine, "res://old").is_empty());
    // And once more, with changes made after the first recovery.
    let some = *expected.keys().next().unwrap();
    engine.subscribe(&some, "res://late").unwrap();
    expected.get_mut(&some).unwrap().insert("res://late".to_owned());
    engine.close().unwrap();
    check(&Engine::open(config(dir.path())).unwrap(), &expected);
}

#[test]
fn an_expired_sessions_topics_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (short, reused, long);
    {
        let engine = Engine::open(config(dir.path()).clock(clock.clock())).unwrap();
        short = engine.create(b"", Timeout::from_ms(500)).unwrap();
        reused = engine.create(b"", Timeout::from_ms(500)).unwrap();
        long = engine.create(b"", LONG).unwrap();
        for id in [&short, &reused, &long] {
            engine.subscribe(id, "feed").unwrap();
        }
        clock.advance_ms(1_000);
        // `reused` is taken again by a new session (never swept: no DELETE
        // record), `short` is left expired in the log.
        engine.insert(reused, b"new", LONG).unwrap();
        assert!(engine.topics(&reused).unwrap().is_empty());
        engine.close().unwrap();
    }
    let engine = Engine::open(config(dir.path()).clock(clock.clock())).unwrap();
    assert!(matches!(engine.topics(&short), Err(Error::NotFound)));
    assert!(
        engine.topics(&reused).unwrap().is_empty(),
        "the old session's topics came back"
    );
    assert_eq!(subscribers(&engine, "feed"), HashSet::from([long]));
    engine.debug_check_invariants();
}

/// Sessions with topics, rewritten many times so that compaction has dead
/// records to drop.
fn churn(engine: &Engine, expected: &mut HashMap<SessionId, HashSet<String>>) {
    for n in 0..200 {
        let id = engine.create(b"v0", LONG).unwrap();
        let topics: HashSet<String> = (0..n % 3).map(|t| format!("topic/{t}")).collect();
        for t in &topics {
            engine.subscribe(&id, t).unwrap();
        }
        expected.insert(id, topics);
    }
    let ids: Vec<SessionId> = expected.keys().copied().collect();
    for round in 0..10u32 {
        for id in &ids {
            let value = format!("{round}-{}", "p".repeat(200)).into_bytes();
            engine.update(id, |_| value.clone()).unwrap();
            // Topic churn too: subscribe and unsubscribe a passing topic.
            engine.subscribe(id, "passing").unwrap();
            engine.unsubscribe(id, "passing").unwrap();
        }
    }
    for id in ids.iter().take(30) {
        engine.delete(id).unwrap();
        expected.remove(id);
    }
}

#[test]
fn subscriptions_survive_compaction_at_every_crash_step() {
    for step in [
        CompactionStep::Sealed,
        CompactionStep::TmpWritten,
        CompactionStep::Renamed,
        CompactionStep::Done,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = HashMap::new();
        {
            let engine = Engine::open(config(dir.path())).unwrap();
            churn(&engine, &mut expected);
            for shard in 0..2 {
                engine.debug_compact(shard, step).unwrap();
            }
            // Changes after the seal land in the new segment and replay
            // over the base.
            let (&first, _) = expected.iter().next().unwrap();
            engine.subscribe(&first, "after/compaction").unwrap();
            expected
                .get_mut(&first)
                .unwrap()
                .insert("after/compaction".to_owned());
            let with_topic = *expected.iter().find(|(_, t)| t.contains("topic/1")).unwrap().0;
            engine.unsubscribe(&with_topic, "topic/1").unwrap();
            expected.get_mut(&with_topic).unwrap().remove("topic/1");
            check(&engine, &expected);
            engine.close().unwrap();
        }
        let engine = Engine::open(config(dir.path())).unwrap();
        assert_eq!(engine.len(), expected.len(), "{step:?}");
        check(&engine, &expected);
        // A completed compaction shrank the log, topics and all.
        if step == CompactionStep::Done {
            let stats = engine.stats();
            assert!(stats.log_bytes < 3 * 128 * 1024, "{stats:?}");
        }
        // Compact again from the recovered state and reopen.
        for shard in 0..2 {
            engine.debug_compact(shard, CompactionStep::Done).unwrap();
        }
        engine.close().unwrap();
        check(&Engine::open(config(dir.path())).unwrap(), &expected);
    }
}

#[test]
fn a_damaged_subscribe_record_is_refused_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, other);
    {
        let engine = Engine::open(config(dir.path()).shards(1)).unwrap();
        victim = engine.create(b"", LONG).unwrap();
        other = engine.create(b"", LONG).unwrap();
        engine.subscribe(&victim, "DAMAGE-ME-topic").unwrap();
        engine.subscribe(&other, "kept-topic").unwrap();
        // Records after it: the damage is in the middle of the log, not a
        // torn tail.
        for _ in 0..20 {
            engine.create(b"after", LONG).unwrap();
        }
        engine.close().unwrap();
    }
    let mut hit = false;
    for file in support::files_under(dir.path()) {
        let mut bytes = std::fs::read(&file).unwrap();
        if let Some(at) = bytes.windows(9).position(|w| w == b"DAMAGE-ME") {
            bytes[at] ^= 0x20;
            std::fs::write(&file, &bytes).unwrap();
            hit = true;
        }
    }
    assert!(hit, "the topic's bytes are in a segment");
    let strict = Engine::open(config(dir.path()).shards(1));
    assert!(matches!(strict, Err(Error::Corrupt { .. })), "{strict:?}");
    let engine = Engine::open(config(dir.path()).shards(1).recovery_mode(RecoveryMode::Repair)).unwrap();
    let report = engine.recovery_report().unwrap();
    assert!(report.corrupt_skipped > 0, "{report:?}");
    assert!(
        engine.topics(&victim).unwrap().is_empty(),
        "the damaged record applied"
    );
    assert_eq!(engine.topics(&other).unwrap(), vec!["kept-topic".to_owned()]);
    assert_eq!(engine.len(), 22);
}

#[test]
fn subscriptions_survive_a_change_of_the_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: HashMap<SessionId, HashSet<String>> = HashMap::new();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        for n in 0..50 {
            let id = engine.create(b"", LONG).unwrap();
            let topics: HashSet<String> = (0..n % 3).map(|t| format!("reshard/{t}")).collect();
            for t in &topics {
                engine.subscribe(&id, t).unwrap();
            }
            expected.insert(id, topics);
        }
        engine.close().unwrap();
    }
    let engine = Engine::open(config(dir.path()).shards(8)).unwrap();
    assert_eq!(engine.recovery_report().unwrap().reshard, Some((2, 8)));
    check(&engine, &expected);
    engine.close().unwrap();
    check(&Engine::open(config(dir.path()).shards(8)).unwrap(), &expected);
}

/// Through the async trait on an `Always` engine (whose futures wait for
/// the group commit), subscribe and unsubscribe complete and their records
/// are in the log when they do: a copy of the directory taken without a
/// close recovers them. (A copy cannot tell synced pages from written ones;
/// the sync itself is `persist_async_always`'s subject.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_subscribe_through_the_trait_is_logged_when_it_completes() {
    use session_engine::{SessionState, SessionStore};
    let dir = tempfile::tempdir().unwrap();
    let always = || config(dir.path()).durability(Durability::Always);
    let id;
    {
        let engine = Engine::open(always()).unwrap();
        let store = &engine;
        id = SessionStore::create(&store, b"", LONG).await.unwrap();
        assert!(SessionState::subscribe(&store, &id, "durable").await.unwrap());
        assert!(SessionState::subscribe(&store, &id, "gone").await.unwrap());
        assert!(SessionState::unsubscribe(&store, &id, "gone").await.unwrap());
        assert_eq!(
            SessionState::topics(&store, &id).await.unwrap(),
            vec!["durable".to_owned()]
        );
        // No close, no final flush.
        std::mem::forget(engine);
    }
    // The forgotten engine still holds the directory's lock: read the logs
    // from a copy, as a restarted process would find them.
    let copy = tempfile::tempdir().unwrap();
    support::copy_dir(dir.path(), copy.path());
    let engine = Engine::open(config(copy.path())).unwrap();
    assert_eq!(engine.topics(&id).unwrap(), vec!["durable".to_owned()]);
}

/// The same through a compaction: the old session subscribes and expires,
/// and a new session takes its id, all after the compaction sealed the log
/// and before it lists the shard. The base then holds the new session
/// (with the creation time of its own `PUT`, which follows in the log), and
/// the old session's `SUBSCRIBE`, replayed over the base, must not land on
/// it.
#[test]
fn an_expired_sessions_topics_do_not_come_back_through_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = config(dir.path()).shards(1).clock(clock.clock());
    let reused;
    {
        let engine = Engine::open(config.clone()).unwrap();
        reused = engine.create(b"old", Timeout::from_ms(500)).unwrap();
        engine
            .debug_compact_with(0, || {
                engine.subscribe(&reused, "feed").unwrap();
                clock.advance_ms(1_000);
                engine.insert(reused, b"new", LONG).unwrap();
            })
            .unwrap();
        assert!(engine.topics(&reused).unwrap().is_empty());
        engine.close().unwrap();
    }
    let engine = Engine::open(config).unwrap();
    assert_eq!(engine.peek(&reused).unwrap().metadata(), b"new");
    assert!(
        engine.topics(&reused).unwrap().is_empty(),
        "the old session's topics came back"
    );
    assert!(subscribers(&engine, "feed").is_empty());
    engine.debug_check_invariants();
}
