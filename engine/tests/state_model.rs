//! Random sequences of subscriptions, rate limits, timers, session
//! writes and removals and clock advances, checked against a plain
//! reference model under a manual clock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use session_engine::{
    Bucket, Config, Engine, Error, ManualClock, RateDecision, SessionId, Timeout, TimerHandle, TopicCursor,
};

const SLOTS: usize = 4;
const TOPICS: [&str; 3] = ["a", "b/c", "d"];
const TIMEOUT_MS: u64 = 400;
const SHAPES: [Bucket; 2] = [
    Bucket {
        capacity: 3,
        refill_per_sec: 10,
    },
    Bucket {
        capacity: 1,
        refill_per_sec: 1,
    },
];

/// A token bucket in the plainest terms: fractional tokens, refilled by
/// elapsed time, capped, re-shaped by capping.
#[derive(Clone, Debug)]
struct ModelBucket {
    shape: Bucket,
    /// Thousandths of a token.
    milli: u64,
    at: u64,
}

#[derive(Clone, Debug)]
struct ModelSession {
    id: SessionId,
    last: u64,
    topics: BTreeSet<&'static str>,
    bucket: Option<ModelBucket>,
    /// token -> deadline.
    timers: HashMap<u64, u64>,
    /// token -> the handle its arming returned (kept after the timer ends,
    /// so a stale handle is told from a live one).
    handles: HashMap<u64, TimerHandle>,
}

impl ModelSession {
    fn live(&self, now: u64) -> bool {
        self.last + TIMEOUT_MS > now
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Delete(usize),
    Rotate(usize),
    Touch(usize),
    /// A write that replaces the session's block (`put` or `update`):
    /// its state stays.
    Write(usize, bool),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Topics(usize),
    Subscribers(usize, usize),
    RateLimit(usize, usize, u32),
    Arm(usize, u64, u64),
    Cancel(usize, u64),
    /// Cancels by one of the handles given so far (an index into them).
    CancelHandle(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => slot.clone().prop_map(Op::Create),
        1 => slot.clone().prop_map(Op::Delete),
        1 => slot.clone().prop_map(Op::Rotate),
        1 => slot.clone().prop_map(Op::Touch),
        2 => (slot.clone(), any::<bool>()).prop_map(|(s, put)| Op::Write(s, put)),
        3 => (slot.clone(), 0..TOPICS.len()).prop_map(|(s, t)| Op::Subscribe(s, t)),
        2 => (slot.clone(), 0..TOPICS.len()).prop_map(|(s, t)| Op::Unsubscribe(s, t)),
        1 => slot.clone().prop_map(Op::Topics),
        2 => (0..TOPICS.len(), 1..4usize).prop_map(|(t, l)| Op::Subscribers(t, l)),
        3 => (slot.clone(), 0..SHAPES.len(), 0..3u32).prop_map(|(s, b, c)| Op::RateLimit(s, b, c)),
        3 => (slot.clone(), 0..3u64, 0..300u64).prop_map(|(s, t, a)| Op::Arm(s, t, a)),
        1 => (slot.clone(), 0..3u64).prop_map(|(s, t)| Op::Cancel(s, t)),
        2 => (0..64usize).prop_map(Op::CancelHandle),
        3 => (0..250u64).prop_map(Op::Advance),
    ]
}

fn model_charge(b: &mut ModelBucket, shape: Bucket, cost: u32, now: u64) -> RateDecision {
    let refilled = b.milli + (now - b.at) * u64::from(b.shape.refill_per_sec);
    b.milli = refilled.min(u64::from(b.shape.capacity) * 1000);
    b.at = now;
    b.shape = shape;
    b.milli = b.milli.min(u64::from(shape.capacity) * 1000);
    let need = u64::from(cost) * 1000;
    if b.milli >= need {
        b.milli -= need;
        RateDecision::Allowed {
            remaining: u32::try_from(b.milli / 1000).unwrap(),
        }
    } else {
        RateDecision::Limited {
            retry_after: Duration::from_millis((need - b.milli).div_ceil(u64::from(shape.refill_per_sec))),
        }
    }
}

fn run(ops: &[Op]) {
    let clock = ManualClock::new(10_000);
    let fired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&fired);
    let engine = Engine::open(
        Config::default()
            .shards(2)
            .clock(clock.clock())
            .without_sweeper()
            .timer_listener(move |id, token| sink.lock().unwrap().push((*id, token))),
    )
    .unwrap();
    let timeout = Timeout::from_ms(TIMEOUT_MS);
    let mut model: [Option<ModelSession>; SLOTS] = Default::default();
    let mut ids = Vec::new(); // every id ever used, for not-found checks
    let mut given: Vec<TimerHandle> = Vec::new(); // every timer handle returned
    for op in ops {
        let now = clock.now_ms();
        // Sessions the model sees expired are gone for every operation.
        let live = |m: &Option<ModelSession>| m.as_ref().filter(|s| s.live(now)).map(|s| s.id);
        match *op {
            Op::Create(slot) => {
                if live(&model[slot]).is_none() {
                    let id = engine.create(b"", timeout).unwrap();
                    ids.push(id);
                    model[slot] = Some(ModelSession {
                        id,
                        last: now,
                        topics: BTreeSet::new(),
                        bucket: None,
                        timers: HashMap::new(),
                        handles: HashMap::new(),
                    });
                }
            }
            Op::Delete(slot) => match live(&model[slot]) {
                Some(id) => {
                    engine.delete(&id).unwrap();
                    model[slot] = None;
                }
                None => {
                    if let Some(s) = &model[slot] {
                        assert!(matches!(engine.delete(&s.id), Err(Error::NotFound)));
                    }
                }
            },
            Op::Rotate(slot) => {
                if let Some(id) = live(&model[slot]) {
                    let new = engine.rotate(&id).unwrap();
                    ids.push(new);
                    model[slot] = Some(ModelSession {
                        id: new,
                        last: now,
                        topics: BTreeSet::new(),
                        bucket: None,
                        timers: HashMap::new(),
                        handles: HashMap::new(),
                    });
                }
            }
            Op::Touch(slot) => {
                if let Some(id) = live(&model[slot]) {
                    engine.touch(&id).unwrap();
                    model[slot].as_mut().unwrap().last = now;
                }
            }
            Op::Write(slot, put) => {
                if let Some(id) = live(&model[slot]) {
                    if put {
                        engine.put(id, b"put", timeout).unwrap();
                    } else {
                        engine.update(&id, |m| [m, b"+"].concat()).unwrap();
                    }
                    model[slot].as_mut().unwrap().last = now;
                }
            }
            Op::Subscribe(slot, t) => match live(&model[slot]) {
                Some(id) => {
                    let added = engine.subscribe(&id, TOPICS[t]).unwrap();
                    assert_eq!(added, model[slot].as_mut().unwrap().topics.insert(TOPICS[t]));
                }
                None => {
                    if let Some(s) = &model[slot] {
                        assert!(matches!(engine.subscribe(&s.id, TOPICS[t]), Err(Error::NotFound)));
                    }
                }
            },
            Op::Unsubscribe(slot, t) => {
                if let Some(id) = live(&model[slot]) {
                    let removed = engine.unsubscribe(&id, TOPICS[t]).unwrap();
                    assert_eq!(removed, model[slot].as_mut().unwrap().topics.remove(TOPICS[t]));
                }
            }
            Op::Topics(slot) => match live(&model[slot]) {
                Some(id) => {
                    let got: BTreeSet<String> = engine.topics(&id).unwrap().into_iter().collect();
                    let want: BTreeSet<String> = model[slot]
                        .as_ref()
                        .unwrap()
                        .topics
                        .iter()
                        .map(|t| (*t).to_owned())
                        .collect();
                    assert_eq!(got, want);
                }
                None => {
                    if let Some(s) = &model[slot] {
                        assert!(matches!(engine.topics(&s.id), Err(Error::NotFound)));
                    }
                }
            },
            Op::Subscribers(t, limit) => {
                let want: HashSet<SessionId> = model
                    .iter()
                    .flatten()
                    .filter(|s| s.live(now) && s.topics.contains(TOPICS[t]))
                    .map(|s| s.id)
                    .collect();
                let mut got = HashSet::new();
                let mut cursor = TopicCursor::START;
                loop {
                    let page = engine.subscribers(TOPICS[t], cursor, limit).unwrap();
                    for id in page.ids {
                        assert!(got.insert(id), "listed twice");
                    }
                    match page.next {
                        Some(next) => cursor = next,
                        None => break,
                    }
                }
                assert_eq!(got, want, "subscribers of {}", TOPICS[t]);
            }
            Op::RateLimit(slot, b, cost) => {
                if let Some(id) = live(&model[slot]) {
                    let shape = SHAPES[b];
                    let cost = cost.min(shape.capacity);
                    let got = engine.rate_limit(&id, shape, cost).unwrap();
                    let s = model[slot].as_mut().unwrap();
                    let bucket = s.bucket.get_or_insert(ModelBucket {
                        shape,
                        milli: u64::from(shape.capacity) * 1000,
                        at: now,
                    });
                    assert_eq!(got, model_charge(bucket, shape, cost, now));
                }
            }
            Op::Arm(slot, token, after) => {
                if let Some(id) = live(&model[slot]) {
                    let handle = engine
                        .arm_timer(&id, token, Duration::from_millis(after))
                        .unwrap();
                    let s = model[slot].as_mut().unwrap();
                    // A timer fires at the first sweep at or after its deadline, at
                    // least a millisecond after it was armed.
                    if s.timers.insert(token, now + after.max(1)).is_some() {
                        assert_eq!(s.handles[&token], handle, "re-arming keeps the handle");
                    }
                    s.handles.insert(token, handle);
                    given.push(handle);
                }
            }
            Op::Cancel(slot, token) => {
                if let Some(id) = live(&model[slot]) {
                    let had = model[slot].as_mut().unwrap().timers.remove(&token).is_some();
                    assert_eq!(engine.cancel_timer(&id, token).unwrap(), had);
                }
            }
            Op::CancelHandle(k) => {
                if let Some(&handle) = given.get(k % given.len().max(1)) {
                    // Armed: some live session holds a timer under this handle.
                    let mut want = false;
                    for s in model.iter_mut().flatten() {
                        let token = s.handles.iter().find(|(_, h)| **h == handle).map(|(t, _)| *t);
                        if let Some(token) = token {
                            want |= s.timers.remove(&token).is_some();
                        }
                    }
                    assert_eq!(engine.cancel_timer_handle(handle), want, "{handle:?}");
                }
            }
            Op::Advance(ms) => {
                clock.advance_ms(ms);
                let now = clock.now_ms();
                engine.cleanup_expired();
                let mut want = Vec::new();
                for m in &mut model {
                    match m {
                        Some(s) if s.live(now) => {
                            s.timers.retain(|&token, &mut deadline| {
                                if deadline <= now {
                                    want.push((s.id, token));
                                    false
                                } else {
                                    true
                                }
                            });
                        }
                        // Expired: gone with its state, timers silent.
                        _ => *m = None,
                    }
                }
                want.sort();
                let mut got = std::mem::take(&mut *fired.lock().unwrap());
                got.sort();
                assert_eq!(got, want, "timers fired at {now}");
            }
        }
        engine.debug_check_invariants();
    }
    // Whatever the model holds no longer, the engine holds no state for.
    let timers: usize = model.iter().flatten().map(|s| s.timers.len()).sum();
    assert_eq!(engine.state_counts().0, timers, "timers armed");
    drop(ids);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn state_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }
}
