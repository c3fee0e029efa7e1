//! Bad input gets a typed error naming the limit, and changes nothing.

use std::time::Duration;

use session_engine::{limits, Config, Cursor, Durability, Engine, Error, ManualClock, SessionId, Timeout};

fn engine() -> Engine {
    Engine::open(
        Config::default()
            .without_sweeper()
            .sessions_max(3)
            .metadata_bytes_max(16),
    )
    .unwrap()
}

#[test]
fn oversized_metadata_is_rejected_without_a_trace() {
    let engine = engine();
    let err = engine.create(&[0; 17], Timeout::Never).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { len: 17, max: 16 }));
    assert!(err.to_string().contains("metadata_bytes_max"), "{err}");
    assert_eq!(engine.len(), 0);

    let id = engine.create(b"ok", Timeout::Never).unwrap();
    let err = engine.update(&id, |_| vec![1; 17]).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }));
    assert_eq!(engine.peek(&id).unwrap().metadata(), b"ok");
}

#[test]
fn capacity_is_enforced_and_frees_on_delete_and_expiry() {
    let clock = ManualClock::new(0);
    let engine = Engine::open(
        Config::default()
            .without_sweeper()
            .sessions_max(3)
            .clock(clock.clock()),
    )
    .unwrap();
    let a = engine.create(b"", Timeout::Never).unwrap();
    engine.create(b"", Timeout::from_ms(5)).unwrap();
    engine.create(b"", Timeout::Never).unwrap();
    let err = engine.create(b"", Timeout::Never).unwrap_err();
    assert!(matches!(err, Error::CapacityExceeded { sessions_max: 3 }));
    assert!(err.to_string().contains("sessions_max"));
    assert_eq!(engine.len(), 3);
    engine.delete(&a).unwrap();
    engine.create(b"", Timeout::Never).unwrap();
    // At capacity, an expired session is reclaimed to make room.
    clock.advance_ms(5);
    engine.create(b"", Timeout::Never).unwrap();
    assert_eq!(engine.len(), 3);
}

#[test]
fn invalid_timeouts_are_rejected() {
    let engine = engine();
    for bad in [
        Timeout::from_ms(0),
        Timeout::from_ms(limits::TIMEOUT_MS_MAX + 1),
        Timeout::After(std::time::Duration::MAX),
    ] {
        let err = engine.create(b"", bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidTimeout { max_ms, .. } if max_ms == limits::TIMEOUT_MS_MAX),
            "{err}"
        );
    }
    assert_eq!(engine.len(), 0);
    let id = engine
        .create(b"", Timeout::from_ms(limits::TIMEOUT_MS_MAX))
        .unwrap();
    assert!(matches!(
        engine.set_ttl(&id, Timeout::from_ms(0)),
        Err(Error::InvalidTimeout { .. })
    ));
    // Sub-millisecond timeouts round up rather than becoming zero.
    assert_eq!(
        Timeout::After(std::time::Duration::from_nanos(1)).as_ms(),
        Some(1)
    );
}

#[test]
fn duplicate_ids_are_never_overwritten() {
    let engine = engine();
    let id = SessionId::from_bytes([7; 16]);
    engine.insert(id, b"first", Timeout::Never).unwrap();
    assert!(matches!(
        engine.insert(id, b"second", Timeout::Never),
        Err(Error::AlreadyExists)
    ));
    assert_eq!(engine.get(&id).unwrap().metadata(), b"first");
    assert_eq!(engine.len(), 1);
}

#[test]
fn unknown_and_malformed_ids() {
    let engine = engine();
    let unknown = SessionId::random().unwrap();
    assert!(matches!(engine.get(&unknown), Err(Error::NotFound)));
    assert!(matches!(engine.delete(&unknown), Err(Error::NotFound)));
    let err: Error = "not-an-id".parse::<SessionId>().unwrap_err().into();
    assert!(err.to_string().contains("expected 22 characters"), "{err}");
}

#[test]
fn bad_pages_and_cursors() {
    let engine = engine();
    assert!(matches!(
        engine.list(Cursor::START, 0),
        Err(Error::InvalidPageSize { .. })
    ));
    assert!(matches!(
        engine.list(Cursor::START, limits::LIST_PAGE_MAX + 1),
        Err(Error::InvalidPageSize { .. })
    ));
    assert!(matches!(
        engine.list(Cursor::new(4096, 0), 10),
        Err(Error::InvalidCursor { .. })
    ));
    assert!("garbage".parse::<Cursor>().is_err());
    let c = Cursor::new(3, 77);
    assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
    // One spelling per cursor: `3.77` only (a cache or signature keyed on
    // the text would otherwise see one cursor as several).
    for other in ["+3.77", "3.+77", "03.77", "3.077", " 3.77", "3.77 "] {
        assert!(other.parse::<Cursor>().is_err(), "{other}");
    }
    assert_eq!("0.0".parse::<Cursor>().unwrap(), Cursor::START);
    let topic: session_engine::TopicCursor = "ff".parse().unwrap();
    assert_eq!(topic.to_string(), "ff");
    for other in ["FF", "+ff", "0ff", "0x0ff"] {
        assert!(other.parse::<session_engine::TopicCursor>().is_err(), "{other}");
    }
    assert!("0".parse::<session_engine::TopicCursor>().is_ok());
}

#[test]
fn bad_configs_name_the_setting() {
    for (config, word) in [
        (Config::default().shards(3), "shards"),
        (Config::default().shards(0), "shards"),
        (Config::default().sessions_max(0), "sessions_max"),
        (
            Config::default().metadata_bytes_max(usize::MAX),
            "metadata_bytes_max",
        ),
        (
            Config::default().sweep_interval(std::time::Duration::ZERO),
            "sweep_interval",
        ),
        (
            Config::default().default_timeout(Timeout::from_ms(0)),
            "default_timeout",
        ),
        (
            Config::default().sessions_max(1_000).initial_capacity(1_001),
            "initial_capacity",
        ),
    ] {
        let err = Engine::open(config).expect_err("rejected");
        assert!(matches!(err, Error::InvalidConfig(_)));
        assert!(err.to_string().contains(word), "{err}");
    }
}

/// A durability asked for without a data directory is refused: the engine
/// would keep nothing on disk, and a caller who set `Always` would believe
/// every acknowledged write durable (it opened in memory, silently). With
/// a data directory, or without asking for a durability, it opens.
#[test]
fn a_durability_without_a_data_dir_is_refused() {
    for durability in [
        Durability::Always,
        Durability::Never,
        Durability::Interval(Duration::from_secs(1)),
    ] {
        let err = Engine::open(Config::default().durability(durability)).expect_err("refused");
        assert!(
            matches!(&err, Error::InvalidConfig(why) if why.contains("durability") && why.contains("data_dir")),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        Engine::open(Config::default().durability(durability).data_dir(dir.path())).expect("with a data dir");
    }
    Engine::open(Config::default()).expect("in memory");
}

/// A segment too small for the largest record is refused when there is a
/// log to write (naming both settings); an in-memory engine has no
/// segments and opens.
#[test]
fn a_segment_smaller_than_the_largest_record_is_refused_with_persistence() {
    let config = Config::default()
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(64 * 1024);
    Engine::open(config.clone()).expect("in memory, segments do not matter");
    let dir = tempfile::tempdir().unwrap();
    let err = Engine::open(config.data_dir(dir.path())).expect_err("refused");
    assert!(
        matches!(&err, Error::InvalidConfig(why) if why.contains("largest record") && why.contains("metadata_bytes_max")),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
