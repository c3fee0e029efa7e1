//! A failed sync (a disk returning `EIO`) in `Always` mode: the writers that
//! were waiting on it learn that their outcome is unknown, none hangs, later
//! writes are refused instead of pretending, reads go on, and the directory
//! still recovers everything acknowledged before the failure. A sync that
//! panics is met the same way.

use std::collections::HashSet;
use std::sync::Mutex;

mod support;

use session_engine::{Engine, Error, Timeout};

const WRITERS: usize = 16;

#[test]
fn a_failed_sync_is_reported_and_then_writes_are_refused() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let timeout = Timeout::from_secs(3600);
    let (acked, unknown) = {
        let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
        let acked: Vec<_> = (0..50u32)
            .map(|i| engine.create(&i.to_le_bytes(), timeout).unwrap())
            .collect();

        engine.debug_fail_syncs();
        let unknown = Mutex::new(HashSet::new());
        let refused = Mutex::new(0usize);
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (engine, unknown, refused) = (&engine, &unknown, &refused);
                s.spawn(move || {
                    for i in 0..4u32 {
                        let meta = format!("writer {w} write {i}");
                        match engine.create(meta.as_bytes(), timeout) {
                            Ok(_) => panic!("a create was acknowledged although every sync fails"),
                            // Applied in memory, durability unknown: it shows.
                            Err(Error::OutcomeUnknown { reason }) => {
                                assert!(reason.contains("sync"), "{reason}");
                                unknown.lock().unwrap().insert(meta);
                            }
                            // Refused before anything changed.
                            Err(Error::WritesRefused { reason }) => {
                                assert!(reason.contains("injected sync failure"), "{reason}");
                                *refused.lock().unwrap() += 1;
                            }
                            Err(other) => panic!("unexpected error: {other}"),
                        }
                    }
                });
            }
        });
        let unknown = unknown.into_inner().unwrap();
        let refused = refused.into_inner().unwrap();
        assert!(
            !unknown.is_empty(),
            "the first failed sync is reported to its writers"
        );
        assert_eq!(unknown.len() + refused, WRITERS * 4);

        // Memory shows exactly the writes whose outcome is unknown.
        assert_eq!(engine.len(), acked.len() + unknown.len());
        // Later writes are refused and change nothing; reads go on.
        let err = engine.create(b"after", timeout).unwrap_err();
        assert!(matches!(err, Error::WritesRefused { .. }), "{err}");
        let err = engine.delete(&acked[0]).unwrap_err();
        assert!(matches!(err, Error::WritesRefused { .. }), "{err}");
        assert_eq!(engine.len(), acked.len() + unknown.len());
        for (i, id) in acked.iter().enumerate() {
            let i = u32::try_from(i).unwrap();
            assert_eq!(engine.get(id).unwrap().metadata(), i.to_le_bytes());
        }
        (acked, unknown)
    };

    // The process "restarts": everything acknowledged is there, and nothing
    // but the writes whose outcome was unknown beside it (a refused write
    // left no record).
    let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
    assert_recovered(&engine, &acked, |meta| {
        unknown.contains(&String::from_utf8_lossy(meta).into_owned())
    });
}

/// Every acknowledged session (metadata: its index) is there after the
/// reopen, and every other session held is one whose outcome was unknown.
fn assert_recovered(engine: &Engine, acked: &[session_engine::SessionId], unknown: impl Fn(&[u8]) -> bool) {
    for (i, id) in acked.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        assert_eq!(engine.peek(id).unwrap().metadata(), i.to_le_bytes());
    }
    let acked: HashSet<_> = acked.iter().copied().collect();
    for session in engine.list_all() {
        assert!(
            acked.contains(&session.id()) || unknown(session.metadata()),
            "a session no write acknowledged nor left unknown came back: {:?}",
            String::from_utf8_lossy(session.metadata())
        );
    }
}

/// A sync that panics (a bug, or a `tracing` subscriber panicking in the
/// failure path) is met like a failed one: its waiters, blocking and async,
/// learn that their outcome is unknown, later writes are refused, and no
/// writer waits forever for a sync that will never end.
#[test]
fn a_panicking_sync_fails_its_writers_instead_of_hanging_them() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let timeout = Timeout::from_secs(3600);
    let engine = std::sync::Arc::new(Engine::open(support::always_config(dir.path(), 2)).unwrap());
    let acked: Vec<_> = (0..20u32)
        .map(|i| engine.create(&i.to_le_bytes(), timeout).unwrap())
        .collect();
    engine.debug_panic_syncs();
    let outcome = |result: Result<session_engine::SessionId, Error>| match result {
        Ok(_) => panic!("a create was acknowledged although every sync panics"),
        Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains("panicked"), "{reason}"),
        Err(Error::WritesRefused { reason }) => assert!(reason.contains("panicked"), "{reason}"),
        Err(other) => panic!("unexpected error: {other}"),
    };
    std::thread::scope(|s| {
        for w in 0..4 {
            let engine = &engine;
            s.spawn(move || {
                for i in 0..4u32 {
                    outcome(engine.create(format!("writer {w} write {i}").as_bytes(), timeout));
                }
            });
        }
        // Async writers wait on the flusher thread's syncs.
        let engine = std::sync::Arc::clone(&engine);
        s.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|t| {
                        let engine = std::sync::Arc::clone(&engine);
                        tokio::spawn(async move {
                            let meta = format!("task {t}");
                            session_engine::SessionStore::create(&*engine, meta.as_bytes(), timeout).await
                        })
                    })
                    .collect();
                for task in tasks {
                    outcome(task.await.unwrap());
                }
            });
        });
    });
    let err = engine.create(b"after", timeout).unwrap_err();
    assert!(matches!(err, Error::WritesRefused { .. }), "{err}");
    for (i, id) in acked.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        assert_eq!(engine.get(id).unwrap().metadata(), i.to_le_bytes());
    }
    drop(engine);
    let engine = Engine::open(support::always_config(dir.path(), 2)).unwrap();
    // Only the writers' and tasks' creates had an unknown outcome.
    assert_recovered(&engine, &acked, |meta| {
        meta.starts_with(b"writer ") || meta.starts_with(b"task ")
    });
}

/// `close` while a writer's sync is under way (and failing): the final
/// flush waits for that sync and reports its failure. It returned `Ok` at
/// once, as if the log were durable, whenever a sync was running.
#[test]
fn close_during_a_failing_sync_reports_the_failure() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    engine.debug_fail_syncs();
    let (appended, wait) = std::sync::mpsc::channel();
    engine.debug_after_next_append(0, move || appended.send(()).unwrap());
    let writer = engine.clone();
    let write = std::thread::spawn(move || writer.create(b"w", Timeout::Never));
    // Once the record is in the log, its sync is under way or due (the
    // close's own flush, or a later one, fails the same way). A close
    // before the append found nothing to sync and rightly said `Ok`.
    wait.recv().unwrap();
    let closed = engine.close();
    assert!(
        matches!(closed, Err(Error::Io { .. } | Error::WritesRefused { .. })),
        "close reported {closed:?} for a log whose sync failed"
    );
    assert!(matches!(
        write.join().unwrap(),
        Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
    ));
}

/// A subscribe (or unsubscribe) that finds the session already so answers
/// only once the record that made it so is durable: after that record's
/// sync failed, the no-op repeat is not acknowledged as if it were.
#[test]
fn a_repeated_subscribe_is_not_acknowledged_before_the_first_is_durable() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let id = engine.create(b"s", Timeout::Never).unwrap();
    engine.subscribe(&id, "kept").unwrap();
    engine.debug_fail_syncs();
    assert!(matches!(
        engine.subscribe(&id, "t"),
        Err(Error::OutcomeUnknown { .. })
    ));
    let again = engine.subscribe(&id, "t");
    assert!(
        matches!(
            again,
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
        ),
        "a repeat of a subscribe whose record was never synced answered {again:?}"
    );
    let again = engine.unsubscribe(&id, "never");
    assert!(
        matches!(
            again,
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
        ),
        "an unsubscribe that changes nothing answered {again:?} while the log holds an unsynced subscribe"
    );
    let again = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(session_engine::SessionState::subscribe(&engine, &id, "t"));
    assert!(
        matches!(
            again,
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
        ),
        "the async repeat answered {again:?}"
    );
}

/// A subscribe refused because the session holds the most topics it may
/// answers only once the subscribes it counted are durable: the count may
/// hold another caller's subscribe whose sync then fails (a crash would
/// lose it), and the refusal was read from memory. It came back at once,
/// `LimitExceeded`, though after a restart the session might have room.
#[test]
fn a_session_full_of_topics_is_answered_once_they_are_durable() {
    use session_engine::limits::TOPICS_PER_SESSION_MAX;
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let id = engine.create(b"s", Timeout::Never).unwrap();
    for t in 0..TOPICS_PER_SESSION_MAX - 1 {
        engine.subscribe(&id, &format!("t{t}")).unwrap();
    }
    engine.debug_fail_syncs();
    // The last room, taken by a subscribe whose sync fails.
    assert!(matches!(
        engine.subscribe(&id, "last"),
        Err(Error::OutcomeUnknown { .. })
    ));
    let full = engine.subscribe(&id, "one more");
    assert!(
        matches!(
            full,
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
        ),
        "a session full of topics, one of them never synced, answered {full:?}"
    );
    let full = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(session_engine::SessionState::subscribe(&engine, &id, "one more"));
    assert!(
        matches!(
            full,
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })
        ),
        "the async call answered {full:?}"
    );
}

/// Under `Always`, a write call that answers from what is in memory —
/// `AlreadyExists`, `NotFound`, `Kept` or the closure's own error — answers
/// once the log is durable up to everything appended by then: what it
/// found may be another caller's change that is not durable yet (here one
/// whose sync failed, which a crash would lose), and a caller reading
/// `AlreadyExists` after its own insert came back in doubt would take its
/// session for stored. Each such answer is an error about durability
/// instead, the same as the write's own caller got.
#[test]
fn an_answer_found_in_memory_waits_for_what_made_it_so() {
    use session_engine::{Op, SessionStore};
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (
        engine.create(b"a", Timeout::Never).unwrap(),
        engine.create(b"b", Timeout::Never).unwrap(),
    );
    let doubt = |what: &str, r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. })),
            "{what} answered {r:?} while the change it found was never durable"
        );
    };
    engine.debug_fail_syncs();
    let x = session_engine::SessionId::from_bytes([9; 16]);
    doubt("the first insert", engine.insert(x, b"x", Timeout::Never));
    doubt("a second insert", engine.insert(x, b"x", Timeout::Never));
    doubt(
        "a second insert through the trait",
        runtime.block_on(SessionStore::insert(&engine, x, b"x", Timeout::Never)),
    );
    doubt("the first delete", engine.delete(&a).map(drop));
    doubt("a second delete", engine.delete(&a).map(drop));
    doubt(
        "a second delete through the trait",
        runtime.block_on(SessionStore::delete(&engine, &a)),
    );
    doubt("an update of it", engine.update(&a, |_| b"u".to_vec()).map(drop));
    doubt("a rotation of it", engine.rotate(&a).map(drop));
    doubt("a new timeout for it", engine.set_ttl(&a, Timeout::from_secs(5)));
    doubt("a subscribe of it", engine.subscribe(&a, "t").map(drop));
    doubt(
        "the first update",
        engine.update(&b, |_| b"v2".to_vec()).map(drop),
    );
    let keep = |m: &[u8]| {
        if m == b"v2" {
            Ok(Op::Keep)
        } else {
            Err("not v2")
        }
    };
    doubt("a Keep of it", engine.try_update(&b, keep).map(drop));
    doubt(
        "a Keep of it through the trait",
        runtime
            .block_on(SessionStore::try_update(&engine, &b, keep))
            .map(drop),
    );
    let decline = |_: &[u8]| Err::<Op, _>("declined");
    doubt("a closure's refusal", engine.try_update(&b, decline).map(drop));
}

/// When the note that tells the next open to read a failed log from the
/// disk cannot be written either (the disk is full, or its file system
/// failed too), the refusal says so: the note's failure was dropped
/// silently, and a restart in the same boot read pages the disk may never
/// have got, with nothing to warn of it. (The test moves the shard's
/// directory away and puts a file in its place, so the note's creation
/// fails; the log's open files are not disturbed.)
#[test]
fn a_failed_sync_whose_note_cannot_be_written_says_so() {
    let _watchdog = support::Watchdog::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(support::always_config(dir.path(), 1)).unwrap();
    engine.create(b"before", Timeout::from_secs(3600)).unwrap();
    let shard_dirs: Vec<_> = support::segments_under(dir.path())
        .into_iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    assert_eq!(shard_dirs.len(), 1, "{shard_dirs:?}");
    let shard = &shard_dirs[0];
    let moved = shard.with_file_name("moved-away");
    std::fs::rename(shard, &moved).unwrap();
    std::fs::write(shard, b"not a directory").unwrap();
    engine.debug_fail_syncs();
    let err = engine.create(b"unknown", Timeout::from_secs(3600)).unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
    let refused = engine.create(b"refused", Timeout::from_secs(3600)).unwrap_err();
    let Error::WritesRefused { reason } = &refused else {
        panic!("{refused}");
    };
    assert!(
        reason.contains("note"),
        "the refusal does not say the note is missing: {reason}"
    );
    assert!(reason.contains("reboot"), "{reason}");
    drop(engine);
    std::fs::remove_file(shard).unwrap();
    std::fs::rename(&moved, shard).unwrap();
}
