//! The conversions ecosystems need: `i128` ids as `tower-sessions` keeps
//! them (same text), UUIDs, and serde forms (features `serde` and `uuid`;
//! the test command runs this file with `--features serde,uuid`).

use session_engine::SessionId;

#[test]
fn an_i128_id_round_trips_and_prints_as_tower_sessions_prints_it() {
    for n in [
        0i128,
        1,
        -1,
        i128::MAX,
        i128::MIN,
        0x0123_4567_89ab_cdef_0011_2233_4455_6677,
    ] {
        let id = SessionId::from(n);
        assert_eq!(i128::from(id), n);
        // tower-sessions: URL_SAFE_NO_PAD.encode(id.0.to_le_bytes()).
        use base64::Engine as _;
        let theirs = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_le_bytes());
        assert_eq!(id.to_string(), theirs);
        assert_eq!(theirs.parse::<SessionId>().unwrap(), id);
    }
}

#[cfg(feature = "uuid")]
#[test]
fn a_uuid_is_the_same_sixteen_bytes() {
    let u = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let id = SessionId::from(u);
    assert_eq!(id.to_bytes(), *u.as_bytes());
    assert_eq!(uuid::Uuid::from(id), u);
}

#[cfg(feature = "serde")]
#[test]
fn serde_forms_are_the_text_forms() {
    use session_engine::{Cursor, Stats, Timeout};
    let id = SessionId::from_bytes([0xfb; 16]);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{id}\""));
    assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
    let bad = serde_json::from_str::<SessionId>("\"not an id\"").unwrap_err();
    assert!(bad.to_string().contains("22"), "{bad}");

    assert_eq!(serde_json::to_string(&Timeout::from_secs(2)).unwrap(), "2000");
    assert_eq!(serde_json::to_string(&Timeout::Never).unwrap(), "\"never\"");
    assert_eq!(
        serde_json::from_str::<Timeout>("\"never\"").unwrap(),
        Timeout::Never
    );
    // `null` was never: a field left out of a config (or misspelt) read as
    // "sessions never expire", and `Some(Never)` came back `None`.
    assert!(serde_json::from_str::<Timeout>("null").is_err());
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Cfg {
        timeout: Timeout,
    }
    let missing = serde_json::from_str::<Cfg>("{}").unwrap_err().to_string();
    assert!(missing.contains("missing field"), "{missing}");
    assert!(serde_json::from_str::<Cfg>(r#"{"timeout": null}"#).is_err());
    for t in [None, Some(Timeout::Never), Some(Timeout::from_ms(7))] {
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(
            serde_json::from_str::<Option<Timeout>>(&text).unwrap(),
            t,
            "{text}"
        );
    }
    // Numbers as text, as query strings and environment variables carry them.
    assert_eq!(
        serde_json::from_str::<Timeout>("\"1500\"").unwrap(),
        Timeout::from_ms(1500)
    );
    for bad in ["\"forever\"", "-5", "1.5", "\"\"", "\"+5\"", "\"0\"", "\" 5\""] {
        assert!(serde_json::from_str::<Timeout>(bad).is_err(), "{bad}");
    }
    assert_eq!(
        serde_json::from_str::<Timeout>("1500").unwrap(),
        Timeout::from_ms(1500)
    );
    assert!(serde_json::from_str::<Timeout>("0").is_err());

    let cursor = Cursor::new(3, 77);
    assert_eq!(serde_json::to_string(&cursor).unwrap(), "\"3.77\"");
    assert_eq!(serde_json::from_str::<Cursor>("\"3.77\"").unwrap(), cursor);
    assert!(serde_json::from_str::<Cursor>("\"3-77\"").is_err());
    let topic_cursor = session_engine::TopicCursor::START;
    let text = serde_json::to_string(&topic_cursor).unwrap();
    assert_eq!(
        serde_json::from_str::<session_engine::TopicCursor>(&text).unwrap(),
        topic_cursor
    );
    assert!(serde_json::from_str::<session_engine::TopicCursor>("\"xyz\"").is_err());
    // A hostile cursor's error shows a bounded part of it, not all of it.
    let huge = "9".repeat(1 << 20);
    let err = huge.parse::<Cursor>().unwrap_err().to_string();
    assert!(err.len() < 300, "{} bytes of error", err.len());
    let err = huge
        .parse::<session_engine::TopicCursor>()
        .unwrap_err()
        .to_string();
    assert!(err.len() < 300, "{} bytes of error", err.len());

    let stats = Stats::default();
    let back: Stats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
    assert_eq!(back, stats);
}
