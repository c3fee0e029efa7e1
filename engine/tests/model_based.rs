//! Random sequences of every operation and clock advances, checked against a
//! plain `HashMap` model with the same semantics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use session_engine::{Config, Cursor, Engine, Error, ManualClock, RemovalCause, SessionId, Timeout};

#[derive(Clone, Debug)]
struct ModelSession {
    metadata: Vec<u8>,
    created_ms: u64,
    last_ms: u64,
    timeout_ms: Option<u64>,
}

impl ModelSession {
    fn live(&self, now: u64) -> bool {
        self.timeout_ms.is_none_or(|t| self.last_ms + t > now)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create { meta_len: usize, timeout: usize },
    Insert { key: usize, timeout: usize },
    Get(usize),
    Peek(usize),
    Update(usize, u8),
    Touch(usize),
    Delete(usize),
    SetTtl(usize, usize),
    Contains(usize),
    List(usize),
    Advance(usize),
    Cleanup,
}

const TIMEOUTS: [Option<u64>; 6] = [None, Some(1), Some(5), Some(50), Some(1_000), Some(60_000)];
const ADVANCES: [u64; 7] = [0, 1, 3, 10, 100, 1_000, 100_000];

fn timeout(i: usize) -> Timeout {
    TIMEOUTS[i].map_or(Timeout::Never, Timeout::from_ms)
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0usize..64;
    prop_oneof![
        4 => (0usize..300, 0..TIMEOUTS.len()).prop_map(|(meta_len, timeout)| Op::Create { meta_len, timeout }),
        1 => (key.clone(), 0..TIMEOUTS.len()).prop_map(|(key, timeout)| Op::Insert { key, timeout }),
        4 => key.clone().prop_map(Op::Get),
        2 => key.clone().prop_map(Op::Peek),
        3 => (key.clone(), any::<u8>()).prop_map(|(k, b)| Op::Update(k, b)),
        2 => key.clone().prop_map(Op::Touch),
        2 => key.clone().prop_map(Op::Delete),
        1 => (key.clone(), 0..TIMEOUTS.len()).prop_map(|(k, t)| Op::SetTtl(k, t)),
        1 => key.prop_map(Op::Contains),
        1 => (1usize..5).prop_map(Op::List),
        3 => (0..ADVANCES.len()).prop_map(Op::Advance),
        1 => Just(Op::Cleanup),
    ]
}

/// Ids the ops pick from: those created so far, then never-used ones.
fn pick(ids: &[SessionId], key: usize) -> SessionId {
    ids.get(key)
        .copied()
        .unwrap_or_else(|| SessionId::from_bytes([key as u8; 16]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn engine_matches_hashmap_model(shards in prop::sample::select(vec![1usize, 2, 8]), ops in prop::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new(1_700_000_000_000);
        let events: Arc<Mutex<Vec<(SessionId, RemovalCause)>>> = Arc::default();
        let sink = Arc::clone(&events);
        let engine = Engine::open(
            Config::default()
                .shards(shards)
                .without_sweeper()
                .metadata_bytes_max(256)
                .clock(clock.clock())
                .listener(move |s, cause| sink.lock().unwrap().push((s.id(), cause))),
        ).unwrap();
        let mut model: HashMap<SessionId, ModelSession> = HashMap::new();
        let mut ids: Vec<SessionId> = Vec::new();
        // Removal events expected before the next cleanup, in order.
        let mut expected_events: Vec<(SessionId, RemovalCause)> = Vec::new();

        for op in ops {
            let now = clock.now_ms();
            match op {
                Op::Create { meta_len, timeout: t } => {
                    let meta = vec![meta_len as u8; meta_len];
                    let result = engine.create(&meta, timeout(t));
                    if meta_len > 256 {
                        let too_large = matches!(result, Err(Error::ValueTooLarge { len, max: 256 }) if len == meta_len);
                        prop_assert!(too_large);
                    } else {
                        let id = result.unwrap();
                        ids.push(id);
                        model.insert(id, ModelSession { metadata: meta, created_ms: now, last_ms: now, timeout_ms: TIMEOUTS[t] });
                    }
                }
                Op::Insert { key, timeout: t } => {
                    let id = pick(&ids, key);
                    let result = engine.insert(id, b"inserted", timeout(t));
                    match model.get(&id) {
                        Some(s) if s.live(now) => prop_assert!(matches!(result, Err(Error::AlreadyExists))),
                        old => {
                            if old.is_some() {
                                // The expired, unswept holder of the id goes now.
                                expected_events.push((id, RemovalCause::Expired));
                            }
                            result.unwrap();
                            model.insert(id, ModelSession { metadata: b"inserted".to_vec(), created_ms: now, last_ms: now, timeout_ms: TIMEOUTS[t] });
                        }
                    }
                }
                Op::Get(key) => {
                    let id = pick(&ids, key);
                    match model.get_mut(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            s.last_ms = now;
                            let got = engine.get(&id).unwrap();
                            prop_assert_eq!(got.metadata(), &s.metadata[..]);
                            prop_assert_eq!(got.created_ms(), s.created_ms);
                            prop_assert_eq!(got.last_access_ms(), now);
                        }
                        None => prop_assert!(engine.get(&id).unwrap_err().is_not_found()),
                    }
                }
                Op::Peek(key) => {
                    let id = pick(&ids, key);
                    match model.get(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            let got = engine.peek(&id).unwrap();
                            prop_assert_eq!(got.metadata(), &s.metadata[..]);
                            prop_assert_eq!(got.last_access_ms(), s.last_ms);
                            prop_assert_eq!(got.timeout().as_ms(), s.timeout_ms);
                        }
                        None => prop_assert!(engine.peek(&id).unwrap_err().is_not_found()),
                    }
                }
                Op::Touch(key) => {
                    let id = pick(&ids, key);
                    match model.get_mut(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            s.last_ms = now;
                            engine.touch(&id).unwrap();
                        }
                        None => prop_assert!(engine.touch(&id).unwrap_err().is_not_found()),
                    }
                }
                Op::Contains(key) => {
                    let id = pick(&ids, key);
                    let live = model.get(&id).is_some_and(|s| s.live(now));
                    prop_assert_eq!(engine.contains(&id), live);
                }
                Op::Update(key, byte) => {
                    let id = pick(&ids, key);
                    let result = engine.update(&id, |m| { let mut v = m.to_vec(); v.truncate(255); v.push(byte); v });
                    match model.get_mut(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            s.metadata.truncate(255);
                            s.metadata.push(byte);
                            s.last_ms = now;
                            let got = result.unwrap();
                            prop_assert_eq!(got.metadata(), &s.metadata[..]);
                        }
                        None => prop_assert!(result.unwrap_err().is_not_found()),
                    }
                }
                Op::Delete(key) => {
                    let id = pick(&ids, key);
                    let result = engine.delete(&id);
                    match model.get(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            let got = result.unwrap();
                            prop_assert_eq!(got.metadata(), &s.metadata[..]);
                            model.remove(&id);
                            expected_events.push((id, RemovalCause::Deleted));
                        }
                        None => prop_assert!(result.unwrap_err().is_not_found()),
                    }
                }
                Op::SetTtl(key, t) => {
                    let id = pick(&ids, key);
                    let result = engine.set_ttl(&id, timeout(t));
                    match model.get_mut(&id).filter(|s| s.live(now)) {
                        Some(s) => {
                            result.unwrap();
                            s.timeout_ms = TIMEOUTS[t];
                            s.last_ms = now;
                        }
                        None => prop_assert!(result.unwrap_err().is_not_found()),
                    }
                }
                Op::List(page) => {
                    let mut listed = Vec::new();
                    let mut cursor = Cursor::START;
                    loop {
                        let p = engine.list(cursor, page).unwrap();
                        prop_assert!(p.sessions.len() <= page);
                        listed.extend(p.sessions.iter().map(|s| s.id()));
                        match p.next { Some(c) => cursor = c, None => break }
                    }
                    listed.sort();
                    let mut live: Vec<SessionId> = model.iter().filter(|(_, s)| s.live(now)).map(|(&id, _)| id).collect();
                    live.sort();
                    prop_assert_eq!(listed, live);
                }
                Op::Advance(a) => clock.advance_ms(ADVANCES[a]),
                Op::Cleanup => {
                    let mut expired: Vec<SessionId> = model.iter().filter(|(_, s)| !s.live(now)).map(|(&id, _)| id).collect();
                    prop_assert_eq!(engine.cleanup_expired(), expired.len());
                    expired.sort();
                    for id in &expired {
                        model.remove(id);
                    }
                    // Events so far: the deletes and replacements in order, then
                    // this cleanup's expiries in wheel order (compared as a set).
                    let got: Vec<_> = events.lock().unwrap().drain(..).collect();
                    prop_assert!(got.len() >= expected_events.len());
                    prop_assert_eq!(&got[..expected_events.len()], &expected_events[..]);
                    let mut got_expired = got[expected_events.len()..].to_vec();
                    expected_events.clear();
                    got_expired.sort();
                    let want: Vec<_> = expired.iter().map(|&id| (id, RemovalCause::Expired)).collect();
                    prop_assert_eq!(got_expired, want);
                }
            }
            prop_assert_eq!(engine.len(), model.len());
            engine.debug_check_invariants();
        }
        let stats = engine.stats();
        prop_assert_eq!(stats.sessions, model.len());
        let scheduled = model.values().filter(|s| s.timeout_ms.is_some()).count();
        prop_assert_eq!(stats.wheel_entries, scheduled);
    }
}
