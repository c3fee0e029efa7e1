//! A delete that finds its session already expired is the backend doing its
//! job (Redis expires keys on its own clock); the loadgen must not count it
//! as an error. Gone before its timeout ran out, it is one: a lost session.

mod support;

use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use loadgen::client::{ClientPlan, ClientState, Work};
use loadgen::mix::{KeyDist, KeySampler, Mix, Op};
use loadgen::schedule::{Pace, Side, Slices};
use session_engine::{Cursor, Error, Page, Result, Session, SessionId, SessionStore, Timeout};
use support::{run_client, SimTime};

/// Every operation takes `service_ns` of simulated time; every delete finds
/// its session gone.
struct ForgetfulStore {
    time: SimTime,
    service_ns: u64,
    next: AtomicU64,
}

impl ForgetfulStore {
    fn work(&self) {
        self.time.0.fetch_add(self.service_ns, Ordering::SeqCst);
    }
}

impl SessionStore for ForgetfulStore {
    fn create(&self, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        self.work();
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        ready(Ok(SessionId::from_bytes((u128::from(n) + 1).to_le_bytes())))
    }
    fn insert(&self, _id: SessionId, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }
    fn put(&self, _id: SessionId, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }
    fn rotate(&self, _id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        ready(Err(Error::NotFound))
    }
    fn try_update<F, E>(
        &self,
        _id: &SessionId,
        _f: F,
    ) -> impl Future<Output = Result<std::result::Result<session_engine::Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<session_engine::Op, E> + Send,
        E: Send,
    {
        ready(Err(Error::NotFound))
    }
    fn get(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }
    fn peek(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }
    fn update<F>(&self, _id: &SessionId, _f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        ready(Err(Error::NotFound))
    }
    fn touch(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Err(Error::NotFound))
    }
    fn delete(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Err(Error::NotFound))
    }
    fn set_ttl(&self, _id: &SessionId, _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Err(Error::NotFound))
    }
    fn set_lifetime(&self, _id: &SessionId, _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Err(Error::NotFound))
    }
    fn contains(&self, _id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(false))
    }
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
    fn list(&self, _c: Cursor, _l: usize) -> impl Future<Output = Result<Page>> + Send {
        ready(Ok(Page::new(Vec::new(), None)))
    }
    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

/// (deletes issued, deletes counted as errors) for create/delete churn with
/// this service time and churn timeout.
fn delete_errors(service_ns: u64, churn_timeout: Timeout) -> (u64, u64) {
    let time = SimTime::default();
    let store = ForgetfulStore {
        time: time.clone(),
        service_ns,
        next: AtomicU64::new(0),
    };
    let population: Arc<[SessionId]> = (1..=4u128)
        .map(|n| SessionId::from_bytes(n.to_le_bytes()))
        .collect();
    let plan = ClientPlan {
        start_ns: 0,
        end_ns: u64::MAX / 4,
        ops_max: 400,
        measured_from_ns: 0,
        pace: Pace::Closed,
        work: Work::Point {
            mix: "create=1,delete=1".parse::<Mix>().unwrap().table(),
            keys: KeySampler::new(KeyDist::Uniform, population.len()),
        },
        side: Side::Backend,
        slices: Slices::backend_only(0, u64::MAX / 8),
    };
    let mut state = ClientState::new(7, population, 16, churn_timeout);
    let out = run_client(&store, &time, &plan, &mut state);
    let all = &out.tallies[0].all;
    (all.get(Op::Delete).len(), all.errors[Op::Delete.index()])
}
#[test]
fn gone_after_its_timeout_is_expiry_not_an_error() {
    // Each operation takes 2 ms; the sessions time out after 1 ms.
    let (deletes, errors) = delete_errors(2_000_000, Timeout::from_ms(1));
    assert!(deletes > 50, "only {deletes} deletes issued");
    assert_eq!(
        errors, 0,
        "{errors} of {deletes} deletes of expired sessions counted as errors"
    );
}

#[test]
fn gone_before_its_timeout_is_an_error() {
    // Each operation takes 2 ms; the sessions should live for a minute.
    let (deletes, errors) = delete_errors(2_000_000, Timeout::from_secs(60));
    assert!(deletes > 50, "only {deletes} deletes issued");
    assert_eq!(
        errors, deletes,
        "a session lost before its timeout must count as an error"
    );
}

#[test]
fn gone_in_the_last_quarter_of_its_timeout_is_expiry() {
    // Each operation takes 2 ms; a session deleted right after its create is
    // found gone 4 ms after the create was issued, with a 5 ms timeout: an
    // engine whose clock lagged when it stamped the session (its clock
    // thread waited for a CPU) expires it that early.
    let (deletes, errors) = delete_errors(2_000_000, Timeout::from_ms(5));
    assert!(deletes > 50, "only {deletes} deletes issued");
    assert_eq!(errors, 0, "{errors} of {deletes} deletes counted as errors");
}
