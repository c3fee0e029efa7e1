//! Simulated time and a simulated backend, so that schedule tests are exact
//! and never sleep.

#![allow(dead_code)] // each test file uses its own part

pub mod cli;

use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use loadgen::client::{drive, ClientPlan, ClientState, Work};
use loadgen::clock::{block_on_ready, Lost, Time};
use loadgen::collect::{ClientSummary, Collected, Collector, CollectorPlan, Msg, Recorder};
use loadgen::hist::{Hist, OpHists};
use loadgen::mix::{KeyDist, KeySampler, Mix, Op};
use loadgen::schedule::{Pace, Side, Slices};
use session_engine::{Cursor, Metadata, Page, Result, Session, SessionId, SessionStore, Timeout};

/// A clock that moves only when the backend works or the client waits.
#[derive(Clone, Default)]
pub struct SimTime(pub Arc<AtomicU64>);

impl Time for SimTime {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn wait_until(&self, t_ns: u64) -> impl Future<Output = ()> + Send {
        self.0.fetch_max(t_ns, Ordering::SeqCst);
        ready(())
    }
}

/// A backend where every operation takes `service_ns` of simulated time,
/// except operation number `stall_at`, which takes `stall_ns` more.
pub struct SimStore {
    pub time: SimTime,
    pub service_ns: u64,
    pub stall_at: u64,
    pub stall_ns: u64,
    pub issued: AtomicU64,
    /// Service time of every operation, as a backend-side (naive) measurement would see it.
    pub service: parking_lot::Mutex<Hist>,
}

impl SimStore {
    pub fn new(time: SimTime, service_ns: u64, stall_at: u64, stall_ns: u64) -> Self {
        Self {
            time,
            service_ns,
            stall_at,
            stall_ns,
            issued: AtomicU64::new(0),
            service: parking_lot::Mutex::new(loadgen::hist::new_hist()),
        }
    }

    fn work(&self) {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let cost = self.service_ns + if n == self.stall_at { self.stall_ns } else { 0 };
        self.time.0.fetch_add(cost, Ordering::SeqCst);
        self.service.lock().record(cost).unwrap();
    }

    fn session(id: SessionId) -> Session {
        Session::new(id, Metadata::from(b"m"), 0, 0, Timeout::Never)
    }
}

impl SessionStore for SimStore {
    fn create(&self, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        self.work();
        ready(Ok(SessionId::from_bytes([1; 16])))
    }
    fn insert(&self, _id: SessionId, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Ok(()))
    }
    fn put(&self, _id: SessionId, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }
    fn rotate(&self, _id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        ready(Ok(SessionId::from_bytes([2; 16])))
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
        ready(Err(session_engine::Error::NotFound))
    }
    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        self.work();
        ready(Ok(Self::session(*id)))
    }
    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        self.work();
        ready(Ok(Self::session(*id)))
    }
    fn update<F>(&self, id: &SessionId, _f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        self.work();
        ready(Ok(Self::session(*id)))
    }
    fn touch(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Ok(()))
    }
    fn delete(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Ok(()))
    }
    fn set_ttl(&self, _id: &SessionId, _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Ok(()))
    }
    fn set_lifetime(&self, _id: &SessionId, _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.work();
        ready(Ok(()))
    }
    fn contains(&self, _id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(true))
    }
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(1))
    }
    fn list(&self, _c: Cursor, _l: usize) -> impl Future<Output = Result<Page>> + Send {
        self.work();
        ready(Ok(Page::new(Vec::new(), None)))
    }
    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

/// Runs one client against `store` on simulated time; returns the merged
/// histograms (no warm-up) and the client's summary.
pub fn run_sim(store: &SimStore, pace: Pace, end_ns: u64, ops_max: u64) -> (OpHists, ClientSummary) {
    run_sim_measured_from(store, pace, end_ns, ops_max, 0)
}

/// [`run_sim`] whose operations intended before `measured_from_ns` are
/// the warm-up's (they count toward no `ops_max`).
pub fn run_sim_measured_from(
    store: &SimStore,
    pace: Pace,
    end_ns: u64,
    ops_max: u64,
    measured_from_ns: u64,
) -> (OpHists, ClientSummary) {
    let population: Arc<[SessionId]> = (0..100u8).map(|i| SessionId::from_bytes([i; 16])).collect();
    let slices = Slices::backend_only(0, 100_000_000);
    let plan = ClientPlan {
        start_ns: 0,
        end_ns,
        ops_max,
        measured_from_ns,
        pace,
        work: Work::Point {
            mix: "get=1".parse::<Mix>().unwrap().table(),
            keys: KeySampler::new(KeyDist::Uniform, population.len()),
        },
        side: Side::Backend,
        slices,
    };
    let mut state = ClientState::new(1, population, 16, Timeout::Never);
    let mut out = run_client(store, &store.time, &plan, &mut state);
    let [backend, _] = std::mem::take(&mut out.tallies);
    (backend.all, out.summaries[0])
}

/// Runs one client of `plan` on simulated time and collects what it sent.
pub fn run_client<S: SessionStore>(
    store: &S,
    time: &SimTime,
    plan: &ClientPlan,
    state: &mut ClientState,
) -> Collected {
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let (stx, srx) = crossbeam_channel::bounded(4);
    let mut recorder = Recorder::new(0, tx, srx);
    let mut summary = block_on_ready(drive(store, time, plan, state, &mut recorder));
    // As `workers.rs` sets it: where the client stopped bounds the slices
    // the collector closes empty.
    summary.end_ns = time.now_ns();
    recorder.finish(summary, Lost::default());
    let mut collector = Collector::new(
        CollectorPlan {
            sides: vec![plan.side],
            slices: plan.slices,
            warmup_slices: 0,
            end_ns: plan.end_ns,
            interval_ns: plan.slices.slice_ns,
            started_at: SystemTime::UNIX_EPOCH,
            comment: "sim".into(),
        },
        stx,
    );
    for msg in rx.try_iter() {
        collector.accept(msg);
    }
    assert!(collector.finished());
    collector.finish()
}

/// The `get` histogram of a simulated run.
pub fn gets(h: &OpHists) -> &Hist {
    h.get(Op::Get)
}
