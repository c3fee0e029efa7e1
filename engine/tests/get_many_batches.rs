//! `get_many` and `get_many_with` against what happens while a batch runs:
//! a closure that writes (the batch must see its writes), a clock that
//! moves (a batch does not judge its later sessions by the time it
//! started at).

use session_engine::{Config, Engine, ManualClock, SessionId, Timeout};

fn engine(clock: &ManualClock, initial_capacity: usize) -> Engine {
    Engine::open(
        Config::default()
            .shards(1)
            .initial_capacity(initial_capacity)
            .without_sweeper()
            .clock(clock.clock()),
    )
    .unwrap()
}

/// A session the closure inserts is found by a later lookup of the same
/// batch, though the inserts rebuilt the shard's table: the batch looked
/// in the table it had started its lookups in and answered `NotFound`.
#[test]
fn a_batch_finds_what_its_closure_inserted_across_a_table_rebuild() {
    let clock = ManualClock::new(1_000);
    let engine = engine(&clock, 16);
    let first = engine.create(b"first", Timeout::from_secs(60)).unwrap();
    let later = SessionId::from_bytes([42; 16]);
    let got = engine.get_many_with(&[first, later], |s| {
        if s.id() == first {
            // Enough sessions to rebuild the table a few times over.
            for _ in 0..1_000 {
                engine.create(b"filler", Timeout::from_secs(60)).unwrap();
            }
            engine.insert(later, b"later", Timeout::from_secs(60)).unwrap();
        }
        s.metadata().to_vec()
    });
    assert_eq!(got[0].as_deref().unwrap(), b"first");
    assert_eq!(
        got[1]
            .as_deref()
            .expect("the batch missed a session inserted before its lookup"),
        b"later"
    );
}

/// The same across a rebuild when the id held an expired session: the
/// closure's insert replaces it in the new table, while the table the
/// batch started in still holds the expired block, and the lookup stopped
/// at it (`NotFound` for a session inserted before it).
#[test]
fn a_batch_finds_what_its_closure_inserted_over_an_expired_session_across_a_rebuild() {
    let clock = ManualClock::new(1_000);
    let engine = engine(&clock, 16);
    let later = SessionId::from_bytes([42; 16]);
    engine.insert(later, b"old", Timeout::from_ms(100)).unwrap();
    let first = engine.create(b"first", Timeout::from_secs(60)).unwrap();
    clock.advance_ms(200); // `later` expired, not swept (no sweeper)
    let got = engine.get_many_with(&[first, later], |s| {
        if s.id() == first {
            for _ in 0..1_000 {
                engine.create(b"filler", Timeout::from_secs(60)).unwrap();
            }
            engine.insert(later, b"new", Timeout::from_secs(60)).unwrap();
        }
        s.metadata().to_vec()
    });
    assert_eq!(got[0].as_deref().unwrap(), b"first");
    assert_eq!(
        got[1]
            .as_deref()
            .expect("the batch missed a session inserted over an expired one before its lookup"),
        b"new"
    );
}

/// A batch longer than one chunk reads the clock again for each chunk: a
/// session whose deadline passed while earlier chunks were served is not
/// returned (and slid back to life) as of the time the batch started.
#[test]
fn a_long_batch_judges_each_chunk_at_its_own_time() {
    let clock = ManualClock::new(1_000);
    let engine = engine(&clock, 1_024);
    let first: Vec<SessionId> = (0..64)
        .map(|_| engine.create(b"long", Timeout::from_secs(60)).unwrap())
        .collect();
    let short = engine.create(b"short", Timeout::from_ms(100)).unwrap();
    clock.advance_ms(99);
    let mut ids = first.clone();
    ids.push(short);
    let got = engine.get_many_with(&ids, |s| {
        if s.id() == first[0] {
            clock.advance_ms(2); // past `short`'s deadline, 1,100
        }
    });
    assert!(got[..64].iter().all(Result::is_ok));
    assert!(
        got[64].as_ref().unwrap_err().is_not_found(),
        "a session was returned 1 ms past its deadline"
    );
    assert!(engine.peek(&short).unwrap_err().is_not_found());
}
