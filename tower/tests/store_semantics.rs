//! `TowerStore` against the embedded engine, in process: what each
//! tower-sessions call does to our sessions (ids, timeouts, sliding, stored
//! form, errors, `cycle_id`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::json;
use session_engine::{Clock, Config, Engine, ManualClock, SessionId, Timeout};
use session_tower::TowerStore;
use time::OffsetDateTime;
use tower_sessions::MemoryStore;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{CachingSessionStore, Error, ExpiredDeletion};
use tower_sessions_core::{Expiry, Session, SessionStore};

/// On the precise clock: these tests compare the engine's deadlines with
/// dates a caller computed from the wall clock, and the default clock's
/// thread, starved of a core for tens of milliseconds, would lag by that
/// much (expiries would seem to drift or slide too little).
fn engine() -> Arc<Engine> {
    Arc::new(Engine::open(Config::default().clock(Clock::precise())).expect("open engine"))
}

fn record(expires_in: time::Duration) -> Record {
    let mut data = HashMap::new();
    data.insert("user".to_owned(), json!("alice"));
    data.insert("n".to_owned(), json!(7));
    Record {
        id: Id::default(),
        data,
        expiry_date: OffsetDateTime::now_utc() + expires_in,
    }
}

fn ours(id: Id) -> SessionId {
    id.to_string().parse().expect("the same text as an engine id")
}

#[tokio::test]
async fn create_keeps_the_callers_id_when_it_is_free() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    let mut r = record(time::Duration::minutes(30));
    let drawn = r.id;
    store.create(&mut r).await.unwrap();
    assert_eq!(r.id, drawn, "the id the caller drew");
    assert_eq!(engine.len(), 1);
    assert!(store.load(&drawn).await.unwrap().is_some());
}

/// `CachingSessionStore` creates in its backend, then in its cache with the
/// backend's id: with this store as the cache, both layers must keep that
/// one id (a cache that drew another gave the cookie an id the backend does
/// not know, and left the backend's copy orphaned).
#[tokio::test]
async fn as_a_caching_stores_cache_it_keeps_the_backends_id() {
    let engine = engine();
    let backend = MemoryStore::default();
    let caching = CachingSessionStore::new(TowerStore::from_arc(Arc::clone(&engine)), backend.clone());
    let mut r = record(time::Duration::minutes(30));
    caching.create(&mut r).await.unwrap();
    assert!(
        backend.load(&r.id).await.unwrap().is_some(),
        "the backend holds the id the caller was given"
    );
    assert!(engine.peek(&ours(r.id)).is_ok(), "and so does the cache");
    assert_eq!(engine.len(), 1);

    r.data.insert("n".to_owned(), json!(8));
    caching.save(&r).await.unwrap();
    assert_eq!(caching.load(&r.id).await.unwrap().unwrap().data["n"], json!(8));
    // Another node's cache (or this one after a restart) finds it in the
    // backend, and is filled with it by a `save` of an id it never created
    // (why `save` inserts: see the logout test below).
    let other_engine = Arc::new(Engine::open(Config::default()).unwrap());
    let other = CachingSessionStore::new(TowerStore::from_arc(Arc::clone(&other_engine)), backend);
    assert_eq!(other.load(&r.id).await.unwrap().unwrap().data["n"], json!(8));
    assert!(other_engine.peek(&ours(r.id)).is_ok(), "the cache is filled");
}

/// `save` is an insert-or-replace, as in tower-sessions' own stores (its
/// contract leaves it open; `CachingSessionStore` fills its cache on a load
/// with a `save` of an id the cache never created, above). So a request
/// that loaded the session before a concurrent logout, and saves after it
/// (it changed the session, or `with_always_save`), writes the session back
/// under the old id: the logout is undone for that cookie. The READMEs say
/// so; this shows it.
#[tokio::test]
async fn a_save_after_a_concurrent_logout_writes_the_session_back() {
    let engine = engine();
    let store = Arc::new(TowerStore::from_arc(Arc::clone(&engine)));
    let expiry = Some(Expiry::OnInactivity(time::Duration::minutes(10)));
    let login = Session::new(None, Arc::clone(&store), expiry);
    login.insert("user", "alice").await.unwrap();
    login.save().await.unwrap();
    let id = login.id().unwrap();

    // Request A, with the cookie, has loaded the session.
    let a = Session::new(Some(id), Arc::clone(&store), expiry);
    assert_eq!(a.get::<String>("user").await.unwrap().as_deref(), Some("alice"));
    // Request B, with the same cookie, logs out.
    let b = Session::new(Some(id), Arc::clone(&store), expiry);
    b.flush().await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), None, "logged out");
    // A changes the session; the middleware saves it at the end of A.
    a.insert("n", 1).await.unwrap();
    a.save().await.unwrap();
    assert_eq!(a.id(), Some(id), "saved, not created: the old id");
    let back = store.load(&id).await.unwrap().expect("written back");
    assert_eq!(back.data["user"], json!("alice"), "the logout is undone");
    assert_eq!(engine.len(), 1);
}

/// What `create` keeping the caller's id means after a logout: the
/// `Session` keeps its record, old id included, after `flush`, so a write
/// in the same request creates the new session under the old id (as with
/// tower-sessions' own stores); `Session::cycle_id` after the `flush` gives
/// it a fresh one (what the docs tell such a handler to do).
#[tokio::test]
async fn a_write_after_flush_reuses_the_old_id_unless_the_id_is_cycled() {
    let engine = engine();
    for cycled in [false, true] {
        let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
        let old = session.id().unwrap();
        session.flush().await.unwrap();
        assert!(engine.peek(&ours(old)).unwrap_err().is_not_found());
        if cycled {
            session.cycle_id().await.unwrap();
        }
        session.insert("flash", "logged out").await.unwrap();
        session.save().await.unwrap();
        let new = session.id().unwrap();
        assert_eq!(new == old, !cycled, "cycled: {cycled}");
        let stored = TowerStore::from_arc(Arc::clone(&engine))
            .load(&new)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.data.get("user"), None, "the logged-out data is gone");
        assert_eq!(stored.data["flash"], json!("logged out"));
    }
}

#[tokio::test]
async fn create_never_overwrites_and_stores_the_expiry_as_timeout() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    // An engine session already holds the id tower-sessions drew: create
    // must not touch it.
    let mut r = record(time::Duration::minutes(30));
    let taken = ours(r.id);
    engine
        .insert(taken, b"someone else's", Timeout::from_secs(60))
        .unwrap();
    store.create(&mut r).await.unwrap();
    assert_ne!(ours(r.id), taken, "another id when the caller's is taken");
    assert_eq!(engine.peek(&taken).unwrap().metadata(), b"someone else's");

    let stored = engine.peek(&ours(r.id)).unwrap();
    let timeout_ms = stored.timeout().as_ms().unwrap();
    assert!(
        (29 * 60 * 1000..=30 * 60 * 1000).contains(&timeout_ms),
        "expiry_date - now became {timeout_ms} ms"
    );
    let loaded = store.load(&r.id).await.unwrap().expect("stored");
    assert_eq!(loaded.id, r.id);
    assert_eq!(loaded.data, r.data);
    let drift = (loaded.expiry_date - r.expiry_date).abs();
    assert!(
        drift < time::Duration::milliseconds(50),
        "expiry moved by {drift}"
    );
}

#[tokio::test]
async fn save_replaces_data_and_timeout_and_deletes_an_expired_record() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    let mut r = record(time::Duration::minutes(30));
    store.create(&mut r).await.unwrap();
    r.data.insert("n".to_owned(), json!(8));
    r.expiry_date = OffsetDateTime::now_utc() + time::Duration::seconds(10);
    store.save(&r).await.unwrap();
    let stored = engine.peek(&ours(r.id)).unwrap();
    assert!(stored.timeout().as_ms().unwrap() <= 10_000);
    assert_eq!(store.load(&r.id).await.unwrap().unwrap().data["n"], json!(8));

    // save of a record never created stores it (insert-or-replace).
    let fresh = record(time::Duration::minutes(5));
    store.save(&fresh).await.unwrap();
    assert!(store.load(&fresh.id).await.unwrap().is_some());

    r.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store.save(&r).await.unwrap();
    assert!(engine.peek(&ours(r.id)).unwrap_err().is_not_found());
    assert_eq!(store.load(&r.id).await.unwrap(), None);
    store
        .delete(&r.id)
        .await
        .expect("deleting an absent session is fine");
}

#[tokio::test]
async fn a_fixed_load_does_not_slide_and_a_sliding_load_does() {
    let engine = engine();
    let fixed = TowerStore::from_arc(Arc::clone(&engine));
    let sliding = TowerStore::from_arc(Arc::clone(&engine)).sliding(true);
    // Long enough that no stall of the machine expires it meanwhile.
    let mut r = record(time::Duration::seconds(60));
    fixed.create(&mut r).await.unwrap();
    let created = engine.peek(&ours(r.id)).unwrap().last_access_ms();

    // 150 ms of the engine's time (its clock's thread may wait for a core:
    // a fixed sleep could end before its clock moved that far).
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while engine.clock().now_ms() < created + 150 {
        assert!(
            std::time::Instant::now() < give_up,
            "the engine's clock stood still"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loaded = fixed.load(&r.id).await.unwrap().unwrap();
    assert_eq!(
        engine.peek(&ours(r.id)).unwrap().last_access_ms(),
        created,
        "peek is no activity"
    );
    assert!((loaded.expiry_date - r.expiry_date).abs() < time::Duration::milliseconds(50));

    let loaded = sliding.load(&r.id).await.unwrap().unwrap();
    let slid = engine.peek(&ours(r.id)).unwrap();
    assert!(slid.last_access_ms() >= created + 150, "get slides");
    let moved = loaded.expiry_date - r.expiry_date;
    assert!(
        moved >= time::Duration::milliseconds(140),
        "expiry_date moved by {moved}"
    );
    assert_eq!(
        record_ms(loaded.expiry_date),
        i128::from(slid.expires_at_ms().unwrap()),
        "the returned date is the store's deadline"
    );
}

fn record_ms(date: OffsetDateTime) -> i128 {
    date.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test]
async fn inactivity_timeout_overrides_the_record_date() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine))
        .inactivity_timeout(Duration::from_secs(90))
        .unwrap();
    let mut r = record(time::Duration::weeks(2)); // Expiry::OnSessionEnd's date
    store.create(&mut r).await.unwrap();
    assert_eq!(
        engine.peek(&ours(r.id)).unwrap().timeout(),
        Timeout::from_secs(90)
    );
    assert!(TowerStore::new(Engine::open(Config::default()).unwrap())
        .inactivity_timeout(Duration::ZERO)
        .is_err());
}

#[tokio::test]
async fn a_date_beyond_the_longest_timeout_gets_the_longest_and_is_reclaimed() {
    // A "remember me for 500 days": stored with the longest timeout the
    // engine has (400 days), so that a session whose cookie is abandoned is
    // still reclaimed by the store's own expiry, never kept for ever.
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine)).sliding(true);
    let mut r = record(time::Duration::days(500));
    store.create(&mut r).await.unwrap();
    let longest = Timeout::from_ms(session_engine::limits::TIMEOUT_MS_MAX);
    assert_eq!(engine.peek(&ours(r.id)).unwrap().timeout(), longest);
    let mut saved = store.load(&r.id).await.unwrap().unwrap();
    let until = saved.expiry_date - OffsetDateTime::now_utc();
    assert!(
        (time::Duration::days(400) - time::Duration::minutes(1)..=time::Duration::days(400)).contains(&until),
        "the loaded record ends when the store's deadline does: in {until}"
    );
    saved.expiry_date = OffsetDateTime::now_utc() + time::Duration::days(5000);
    store.save(&saved).await.unwrap();
    assert_eq!(
        engine.peek(&ours(r.id)).unwrap().timeout(),
        longest,
        "a save clamps too"
    );

    // A session an earlier version stored without a timeout (its date was
    // beyond the longest one) ends by its date: not returned, and goes. The
    // stored form (record.rs): version 1, expiry ms LE, MessagePack map.
    let past = SessionId::random().unwrap();
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&1_000i64.to_le_bytes());
    bytes.push(0x80); // an empty map
    engine.insert(past, &bytes, Timeout::Never).unwrap();
    let id: Id = past.to_string().parse().unwrap();
    assert_eq!(store.load(&id).await.unwrap(), None);
    assert!(engine.peek(&past).unwrap_err().is_not_found());
}

/// Bytes that are not a record this build reads (another application's
/// metadata, a newer format, damage) are no session to the adapter, in
/// either mode: `load` gives `None` (it used to be a `Decode` error, which
/// failed every request carrying the cookie, logins included), a write in
/// that session goes to a new id, and the stored bytes stay as they were.
#[tokio::test]
async fn a_stored_session_that_is_not_a_record_loads_as_none_and_stays() {
    let engine = Arc::new(Engine::open(Config::default().metadata_bytes_max(64)).unwrap());
    let foreign = engine.create(b"user_id=123", Timeout::from_secs(60)).unwrap();
    let id: Id = foreign.to_string().parse().unwrap();
    for sliding in [false, true] {
        let store = TowerStore::from_arc(Arc::clone(&engine)).sliding(sliding);
        assert_eq!(store.load(&id).await.unwrap(), None, "sliding {sliding}");

        // A login on that cookie: an empty session, saved under a new id.
        let session = Session::new(Some(id), Arc::new(store), None);
        assert!(session.get::<String>("user").await.unwrap().is_none());
        session.insert("user", "alice").await.unwrap();
        session.save().await.unwrap();
        let new = session.id().expect("saved");
        assert_ne!(new, id, "sliding {sliding}");
        assert_eq!(
            engine.peek(&foreign).unwrap().metadata(),
            b"user_id=123",
            "the foreign bytes are left as they were"
        );
    }
}

#[tokio::test]
async fn backend_errors_keep_our_message_without_the_id() {
    let engine = Arc::new(Engine::open(Config::default().metadata_bytes_max(64)).unwrap());
    let store = TowerStore::from_arc(Arc::clone(&engine));
    // The message does not hold the session's id: tower-sessions logs it,
    // and an id is the bearer's key to the session (a 4-character prefix
    // tells sessions apart in the logs and gives nothing away).
    let mut big = record(time::Duration::minutes(1));
    big.data.insert("blob".to_owned(), json!("x".repeat(100)));
    match store.create(&mut big).await {
        Err(Error::Backend(message)) => {
            assert!(message.starts_with("create of session "), "{message}");
            assert!(message.contains("exceeds the limit of 64 bytes"), "{message}");
            assert!(!message.contains(&big.id.to_string()), "{message}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

/// Session data nests at most 128 levels (the record's map counted;
/// serde_json's own limit): a record at the bound is saved and loaded on a
/// tokio worker's thread in this unoptimised build; deeper data is an
/// `Encode` error at save, nothing stored, and a stored record nested
/// deeper (1,023 levels, what builds before the bound wrote) is refused at
/// load (no session: the decoder's error is checked in `record.rs`). Either used to overflow the worker's stack and abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn data_nests_at_most_128_levels_on_a_workers_stack() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    // `depth` levels with the record's map.
    let nested = |depth: usize| {
        let mut value = json!(null);
        for _ in 1..depth {
            value = json!([value]);
        }
        value
    };
    let on_a_worker = tokio::spawn(async move {
        let mut at_the_bound = record(time::Duration::minutes(1));
        at_the_bound.data.insert("deep".to_owned(), nested(128));
        store.create(&mut at_the_bound).await.expect("128 levels");
        let loaded = store.load(&at_the_bound.id).await.expect("load").expect("stored");
        assert_eq!(loaded.data, at_the_bound.data);

        let too_deep = |error: Result<(), Error>| match error {
            Err(Error::Encode(message)) => assert!(message.contains("nested deeper than 128"), "{message}"),
            other => panic!("expected Encode, got {other:?}"),
        };
        let mut deeper = record(time::Duration::minutes(1));
        deeper.data.insert("deep".to_owned(), nested(129));
        too_deep(store.create(&mut deeper).await);
        assert!(store.load(&deeper.id).await.expect("load").is_none(), "stored");
        let mut saved = at_the_bound.clone();
        saved.data.insert("deep".to_owned(), nested(129));
        too_deep(store.save(&saved).await);
        let kept = store.load(&at_the_bound.id).await.expect("load").expect("stored");
        assert_eq!(kept.data, at_the_bound.data, "the stored record was replaced");

        // {"k": [[...]]}, 1,023 levels, as a build before the bound stored it.
        let mut bytes = vec![1];
        bytes.extend_from_slice(&4_000_000_000_000_i64.to_le_bytes());
        bytes.extend_from_slice(&[0x81, 0xa1, b'k']);
        bytes.extend(std::iter::repeat_n(0x91, 1_022));
        bytes.push(0xc0);
        let old = SessionId::random().expect("id");
        engine
            .insert(old, &bytes, Timeout::from_secs(60))
            .expect("stored");
        let old: Id = old.to_string().parse().expect("the same text");
        assert_eq!(store.load(&old).await.expect("no error"), None);
    });
    on_a_worker.await.expect("no panic on the worker");
}

#[tokio::test]
async fn delete_expired_reclaims_through_the_store() {
    let engine = Arc::new(Engine::open(Config::default().without_sweeper()).unwrap());
    let store = TowerStore::from_arc(Arc::clone(&engine));
    for _ in 0..5 {
        store
            .create(&mut record(time::Duration::milliseconds(20)))
            .await
            .unwrap();
    }
    assert_eq!(engine.len(), 5);
    // Once the engine's clock is past their deadlines (its thread may wait
    // for a core), one call reclaims them all.
    let created = std::time::Instant::now();
    let due = engine.clock().now_ms() + 20;
    while engine.clock().now_ms() <= due {
        assert!(
            created.elapsed() < Duration::from_secs(10),
            "the engine's clock stood still"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.delete_expired().await.unwrap();
    assert_eq!(engine.len(), 0);
}

/// The engine's sweep is synchronous work over every shard: `delete_expired`
/// runs it on a blocking thread, not on the async runtime's (here the only
/// one, this test's), which would stall every task meanwhile. The engine's
/// listener hears each expiry on the thread that sweeps.
#[tokio::test]
async fn delete_expired_sweeps_off_the_runtimes_thread() {
    let clock = ManualClock::new(1_000_000);
    let sweepers = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&sweepers);
    let config = Config::default()
        .without_sweeper()
        .clock(clock.clock())
        .listener(move |_, _| heard.lock().unwrap().push(std::thread::current().id()));
    let engine = Arc::new(Engine::open(config).unwrap());
    let store = TowerStore::from_arc(Arc::clone(&engine));
    for _ in 0..3 {
        store
            .create(&mut record(time::Duration::minutes(1)))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(120));
    store.delete_expired().await.unwrap();
    assert_eq!(engine.len(), 0, "reclaimed");
    let sweepers = sweepers.lock().unwrap();
    assert_eq!(sweepers.len(), 3, "{sweepers:?}");
    let runtime = std::thread::current().id();
    assert!(
        sweepers.iter().all(|&t| t != runtime),
        "swept on the runtime's thread"
    );
}

/// A session as the middleware would hold it, on `store`, saved once.
async fn saved_session(store: TowerStore<Engine>) -> Session {
    let expiry = Some(Expiry::OnInactivity(time::Duration::minutes(10)));
    let session = Session::new(None, Arc::new(store), expiry);
    session.insert("user", "alice").await.unwrap();
    session.save().await.unwrap();
    session
}

/// An engine that records, at each removal, how many sessions it still
/// holds: a rotation never leaves the session under no id.
fn watched_engine() -> (Arc<Engine>, Arc<Mutex<Vec<usize>>>) {
    let engine_slot: Arc<OnceLock<Weak<Engine>>> = Arc::new(OnceLock::new());
    let held_at_removals = Arc::new(Mutex::new(Vec::new()));
    let (slot, held) = (Arc::clone(&engine_slot), Arc::clone(&held_at_removals));
    let config = Config::default().listener(move |_, _| {
        if let Some(engine) = slot.get().and_then(Weak::upgrade) {
            held.lock().unwrap().push(engine.len());
        }
    });
    let engine = Arc::new(Engine::open(config).unwrap());
    engine_slot.set(Arc::downgrade(&engine)).unwrap();
    (engine, held_at_removals)
}

#[tokio::test]
async fn cycle_id_moves_the_data_and_kills_the_old_id() {
    let (engine, held_at_removals) = watched_engine();
    let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
    let old = session.id().unwrap();
    session.insert("n", 1).await.unwrap(); // changed in this request, not saved

    session_tower::cycle_id(&session).await.unwrap();
    let new = session.id().expect("an id right after cycle_id");
    assert_ne!(new, old);
    assert!(
        engine.peek(&ours(old)).unwrap_err().is_not_found(),
        "the old id is gone"
    );
    assert_eq!(engine.len(), 1, "exactly one session: rotated, not copied");
    let store = TowerStore::from_arc(Arc::clone(&engine));
    let stored = store
        .load(&new)
        .await
        .unwrap()
        .expect("the new id holds the session");
    assert_eq!(stored.data["user"], json!("alice"));
    assert_eq!(
        stored.data["n"],
        json!(1),
        "the request's change is saved with it"
    );
    // The middleware saves again after the handler, under the new id.
    session.save().await.unwrap();
    assert_eq!(session.id(), Some(new));
    assert_eq!(engine.len(), 1);
    let held = held_at_removals.lock().unwrap().clone();
    assert!(
        held.iter().all(|&n| n >= 1),
        "a removal left no session: {held:?}"
    );
}

/// `cycle_id` moves the session: its creation time, and the lifetime cap
/// counted from it, go with it (a login must not lift the cap). Storing the
/// record under a fresh id instead (as one change here did) gave every
/// cycle a new creation time, and so a new cap.
#[tokio::test]
async fn cycle_id_keeps_the_creation_time_and_the_lifetime_cap() {
    let engine = Arc::new(
        Engine::open(
            Config::default()
                .clock(Clock::precise())
                .max_lifetime(Timeout::from_secs(3_600)),
        )
        .unwrap(),
    );
    let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
    let before = engine.peek(&ours(session.id().unwrap())).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    session_tower::cycle_id(&session).await.unwrap();
    let after = engine.peek(&ours(session.id().unwrap())).unwrap();
    assert_eq!(after.created_ms(), before.created_ms(), "created anew");
    assert_eq!(after.lifetime(), Timeout::from_secs(3_600));
    assert_eq!(after.lifetime(), before.lifetime());
}

#[tokio::test]
async fn plain_session_cycle_id_also_kills_the_old_id() {
    let (engine, held_at_removals) = watched_engine();
    let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
    let old = session.id().unwrap();
    session.cycle_id().await.unwrap();
    assert!(
        engine.peek(&ours(old)).unwrap_err().is_not_found(),
        "deleted at once"
    );
    assert_eq!(engine.len(), 0, "until the save, the session is under no id");
    assert_eq!(*held_at_removals.lock().unwrap(), [0], "what cycle_id() avoids");
    session.save().await.unwrap();
    let new = session.id().unwrap();
    assert_ne!(new, old);
    assert_eq!(engine.len(), 1);
    let timeout_ms = engine.peek(&ours(new)).unwrap().timeout().as_ms().unwrap();
    assert!((599_000..=600_000).contains(&timeout_ms), "{timeout_ms} ms");
}

#[tokio::test]
async fn cycle_id_of_a_session_never_stored_just_gives_a_new_id() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    let session = Session::new(None, Arc::new(store), None);
    session.insert("k", "v").await.unwrap();
    session_tower::cycle_id(&session).await.unwrap();
    assert_eq!(
        session.id(),
        None,
        "saved by the middleware later, as with Session::cycle_id"
    );
    session.save().await.unwrap();
    assert_eq!(engine.len(), 1);
}

/// A `cycle_id` whose save fails after the store rotated (here the record
/// grew past the engine's metadata limit in this request) leaves no copy
/// under an id nobody was told: the rotated session is deleted, and the
/// error reaches the caller. (It used to stay until its timeout, holding
/// the user's data, while the middleware's later save created another.)
#[tokio::test]
async fn a_cycle_id_whose_save_fails_leaves_no_orphan() {
    let engine = Arc::new(Engine::open(Config::default().metadata_bytes_max(256)).unwrap());
    let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
    let old = session.id().unwrap();
    session.insert("big", "x".repeat(1_000)).await.unwrap();

    let failed = session_tower::cycle_id(&session).await;
    assert!(failed.is_err(), "the grown record cannot be saved");
    assert!(
        engine.peek(&ours(old)).unwrap_err().is_not_found(),
        "the old id is gone, as cycle_id promises"
    );
    assert_eq!(engine.len(), 0, "no session under an id nobody knows");
}

/// As above, with a record that cannot even be encoded (a value nested
/// deeper than the encoder's 128 levels): the rotated copy goes too (the
/// encode failed before the rotated id was taken, and the copy of the
/// session before this request stayed under an id nobody was given).
#[tokio::test]
async fn a_cycle_id_whose_record_cannot_be_encoded_leaves_no_orphan() {
    let engine = Arc::new(Engine::open(Config::default()).unwrap());
    let session = saved_session(TowerStore::from_arc(Arc::clone(&engine))).await;
    let old = session.id().unwrap();
    let mut deep = serde_json::json!(1);
    for _ in 0..130 {
        deep = serde_json::json!([deep]);
    }
    session.insert("deep", deep).await.unwrap();

    let failed = session_tower::cycle_id(&session).await;
    assert!(failed.is_err(), "the record cannot be encoded");
    assert!(engine.peek(&ours(old)).unwrap_err().is_not_found());
    assert_eq!(engine.len(), 0, "no session under an id nobody knows");
}

/// With an inactivity timeout, a record saved with a date already past (a
/// handler ending the session with `Expiry::AtDateTime` of a past date)
/// is deleted, as without one: it was stored for the timeout again, and a
/// load returned it (for ever, with sliding loads), where tower-sessions
/// requires a load of an expired record to find none.
#[tokio::test]
async fn a_past_date_ends_the_session_with_an_inactivity_timeout_too() {
    for sliding in [false, true] {
        let engine = engine();
        let store = TowerStore::from_arc(Arc::clone(&engine))
            .sliding(sliding)
            .inactivity_timeout(Duration::from_secs(90))
            .unwrap();
        let mut r = record(time::Duration::weeks(2));
        store.create(&mut r).await.unwrap();
        assert!(store.load(&r.id).await.unwrap().is_some());
        r.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        store.save(&r).await.unwrap();
        assert_eq!(store.load(&r.id).await.unwrap(), None, "sliding {sliding}");
        assert!(engine.peek(&ours(r.id)).unwrap_err().is_not_found());
    }
}

/// With an inactivity timeout, a record dated sooner than the timeout (a
/// handler's `Expiry::AtDateTime` in five minutes, for a short-lived
/// step) is stored with what is left to its date: it was stored with the
/// whole timeout, and a load returned it past its date.
#[tokio::test]
async fn a_date_sooner_than_the_inactivity_timeout_bounds_it() {
    for sliding in [false, true] {
        let engine = engine();
        let store = TowerStore::from_arc(Arc::clone(&engine))
            .sliding(sliding)
            .inactivity_timeout(Duration::from_secs(90))
            .unwrap();
        let mut r = record(time::Duration::seconds(5));
        store.create(&mut r).await.unwrap();
        let stored = engine.peek(&ours(r.id)).unwrap().timeout().as_ms().unwrap();
        assert!(stored <= 5_000, "stored with {stored} ms (sliding {sliding})");
        r.expiry_date = OffsetDateTime::now_utc() + time::Duration::milliseconds(50);
        store.save(&r).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.load(&r.id).await.unwrap(), None, "sliding {sliding}");
        // A date further out than the timeout still gets the timeout.
        let mut far = record(time::Duration::weeks(2));
        store.create(&mut far).await.unwrap();
        assert_eq!(
            engine.peek(&ours(far.id)).unwrap().timeout(),
            Timeout::from_secs(90)
        );
    }
}

/// `session_tower::cycle_id` of a cookie's id that names no stored session,
/// with nothing put in the session, stores nothing: as after
/// `Session::cycle_id` alone, the middleware then drops the cookie. It
/// used to save an empty session under a new id for every such request.
/// What the handler writes afterwards is saved under a new id as usual.
#[tokio::test]
async fn cycle_id_of_an_id_naming_nothing_stores_nothing() {
    let engine = engine();
    let store = TowerStore::from_arc(Arc::clone(&engine));
    let named = Id::default();
    let session = Session::new(Some(named), Arc::new(store), None);
    session_tower::cycle_id(&session).await.unwrap();
    assert_eq!(engine.len(), 0, "an empty session was stored");
    assert!(session.is_empty().await, "the middleware drops the cookie");
    session.insert("user", "alice").await.unwrap();
    session.save().await.unwrap();
    let new = session.id().expect("saved under a new id");
    assert_ne!(new, named);
    assert_eq!(engine.len(), 1);
    assert!(engine.peek(&ours(named)).unwrap_err().is_not_found());
}
