//! The client loop: what one client does, operation after operation:
//! wait for the intended start, issue, measure, record.
//!
//! **Open loop** (a target rate): operation `i` of a client is *intended* to
//! start at `start + offset + i × period`, whatever happened before. Latency
//! is `completion − intended`, so time spent queued behind a slow operation
//! counts against every operation that should have started meanwhile (no
//! coordinated omission: a 100 ms stall shows as 100 ms, 99 ms, 98 ms ... for
//! the operations scheduled during it, not as one slow sample). A client that
//! falls behind works off its backlog back to back; past the scheduled end
//! plus [`BACKLOG_GRACE_NS`] it stops and counts the rest as unsent.
//!
//! **Closed loop** (`rate = "max"`): each operation starts when the previous
//! one returns; latency is the service time (plus the loop's own few
//! nanoseconds), and the figure that matters is throughput.
//!
//! Either way the loop reads the clock once per operation: the completion
//! time of one operation is the reference for the next.
//!
//! The loop is an `async fn` generic over the [`SessionStore`] and a [`Time`]
//! source. The embedded engine returns ready futures, so a worker thread runs
//! it with [`block_on_ready`](crate::clock::block_on_ready) (one poll, no executor) and [`SpinTime`](crate::clock::SpinTime); a
//! remote backend runs many clients per thread on a current-thread tokio
//! runtime with [`TokioTime`](crate::clock::TokioTime); tests drive it with simulated time.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use session_engine::{Cursor, Error, SessionId, SessionStore, Timeout};

use crate::clock::Time;
use crate::collect::{ClientSummary, Recorder};
use crate::limits::{BACKLOG_GRACE_NS, CHURN_EXPIRY_SLACK_SHARE, CHURN_REMEMBERED_MAX};
use crate::mix::{KeySampler, MixTable, Op};
use crate::schedule::{Pace, Side, Slices};

/// What a client does.
#[derive(Clone, Debug)]
pub enum Work {
    /// Point operations drawn from a mix over the live population.
    Point {
        /// The mix.
        mix: MixTable,
        /// Key chooser over the population.
        keys: KeySampler,
    },
    /// One list page per operation, continuing where the last one stopped.
    List {
        /// Sessions per page.
        page: usize,
    },
}

/// One client's plan for one load phase.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Start of the load on the run's clock.
    pub start_ns: u64,
    /// Scheduled end of the load on the run's clock.
    pub end_ns: u64,
    /// Stop after this many measured operations (`u64::MAX`: no limit).
    pub ops_max: u64,
    /// End of the warm-up on the run's clock: operations intended before it
    /// count toward no `ops_max`, so that however fast a sitting runs
    /// through the warm-up, it measures as many.
    pub measured_from_ns: u64,
    /// Pacing.
    pub pace: Pace,
    /// What it does.
    pub work: Work,
    /// The side this client loads: it issues only the operations intended
    /// in that side's slices.
    pub side: Side,
    /// Which side owns each slice.
    pub slices: Slices,
}

/// A client's mutable state: its generator, its churn sessions, its cursor.
pub struct ClientState {
    rng: SmallRng,
    population: Arc<[SessionId]>,
    /// Sessions this client created, each with the earliest time (client
    /// clock, ns) at which the backend may have expired it.
    churn: VecDeque<(SessionId, u64)>,
    churn_timeout: Timeout,
    metadata: Vec<u8>,
    cursor: Cursor,
    stamp: u8,
}

impl ClientState {
    /// State for one client.
    #[must_use]
    pub fn new(
        seed: u64,
        population: Arc<[SessionId]>,
        metadata_bytes: usize,
        churn_timeout: Timeout,
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let metadata = (0..metadata_bytes).map(|_| rng.random()).collect();
        Self {
            rng,
            population,
            churn: VecDeque::new(),
            churn_timeout,
            metadata,
            cursor: Cursor::START,
            stamp: 0,
        }
    }
}

/// Runs one client's load and returns its counts; every measured operation
/// goes to `recorder`, in the slice its intended start falls in.
pub async fn drive<S: SessionStore, T: Time>(
    store: &S,
    time: &T,
    plan: &ClientPlan,
    state: &mut ClientState,
    recorder: &mut Recorder,
) -> ClientSummary {
    let mut summary = ClientSummary::default();
    let hard_stop_ns = plan.end_ns.saturating_add(BACKLOG_GRACE_NS);
    let slices = &plan.slices;
    let mut now = time.now_ns();
    let mut i: u64 = 0;
    let mut issued: u64 = 0;
    let mut measured: u64 = 0;
    while measured < plan.ops_max {
        let intended = match plan.pace.intended_ns(i) {
            Some(rel) => plan.start_ns + rel,
            None => now.max(plan.start_ns),
        };
        if intended >= plan.end_ns {
            // The schedule ran out: the client's time went to the end of
            // the measured time, whatever was (not) due in its last slices
            // (unlike a stop at `ops_max`, which ends it where it is).
            summary.end_ns = plan.end_ns;
            break;
        }
        if now >= hard_stop_ns {
            summary.unsent = unsent(plan, i, plan.ops_max - measured);
            break;
        }
        let slice = slices.index_of(intended);
        if slices.side_of(slice) != plan.side {
            let next_ns = slices.start_of(slices.next_of(plan.side, slice));
            if let Some(next) = plan.pace.first_at_or_after(next_ns.saturating_sub(plan.start_ns)) {
                i = next;
            } else {
                // Closed loop: idle through the other side's slice.
                recorder.close(time.take_lost());
                time.wait_until(next_ns).await;
                now = time.now_ns();
            }
            continue;
        }
        if recorder.slice() != Some(slice) {
            recorder.open(slice, time.take_lost());
        }
        if intended > now {
            time.wait_until(intended).await;
        }
        let op = match &plan.work {
            Work::Point { mix, .. } => mix.pick(state.rng.random()),
            Work::List { .. } => Op::List,
        };
        let outcome = execute(store, time, op, plan, state).await;
        now = time.now_ns();
        i += 1;
        issued += 1;
        measured += u64::from(intended >= plan.measured_from_ns);
        match outcome {
            Some(ok) => {
                let in_time = now <= slices.end_of(slice);
                recorder.record(op, now.saturating_sub(intended), ok, in_time);
            }
            None => summary.skipped += 1,
        }
        if T::SHARED {
            time.share().await;
            // Closed loop: the next operation is intended from here, not
            // from before the neighbours' turn.
            now = time.now_ns();
        }
    }
    summary.ops = issued - summary.skipped;
    summary
}

/// Operations of this client's side still due from operation `from` up to
/// the scheduled end (at most `left` measured ones, the warm-up's not
/// counted against it, as `ops_max` does not count them): what a client
/// that gave up never sent.
fn unsent(plan: &ClientPlan, from: u64, left: u64) -> u64 {
    let slices = &plan.slices;
    let mut count = 0;
    let mut measured = 0;
    let mut i = from;
    while measured < left {
        let Some(rel) = plan.pace.intended_ns(i) else {
            return 0; // closed loop: nothing is due
        };
        let intended = plan.start_ns + rel;
        if intended >= plan.end_ns {
            break;
        }
        let slice = slices.index_of(intended);
        if slices.side_of(slice) == plan.side {
            count += 1;
            measured += u64::from(intended >= plan.measured_from_ns);
            i += 1;
        } else {
            let next_ns = slices.start_of(slices.next_of(plan.side, slice));
            i = plan
                .pace
                .first_at_or_after(next_ns.saturating_sub(plan.start_ns))
                .unwrap_or(u64::MAX);
        }
    }
    count
}

/// Issues one operation. `Some(ok)` if it was issued, `None` if there was
/// nothing to do (a delete with no churn session to delete).
///
/// A delete that finds its session gone after the session's timeout has run
/// out is a success: the backend expired it (Redis does so on its own
/// clock), which is the load working as intended, not an error. Gone before
/// then is an error: the backend lost a session.
async fn execute<S: SessionStore, T: Time>(
    store: &S,
    time: &T,
    op: Op,
    plan: &ClientPlan,
    state: &mut ClientState,
) -> Option<bool> {
    let key = |state: &mut ClientState| match &plan.work {
        Work::Point { keys, .. } => state.population[keys.sample(&mut state.rng)],
        Work::List { .. } => state.population[0],
    };
    let ok = match op {
        Op::Get => store.get(&key(state)).await.is_ok(),
        Op::Peek => store.peek(&key(state)).await.is_ok(),
        Op::Touch => store.touch(&key(state)).await.is_ok(),
        Op::Update => {
            let id = key(state);
            state.stamp = state.stamp.wrapping_add(1);
            let stamp = state.stamp;
            store
                .update(&id, move |current| {
                    let mut next = current.to_vec();
                    if let Some(first) = next.first_mut() {
                        *first = stamp;
                    }
                    next
                })
                .await
                .is_ok()
        }
        Op::Create => {
            // The backend stamps the session no earlier than this (by its own
            // clock, which may lag).
            let issued_ns = time.now_ns();
            match store.create(&state.metadata, state.churn_timeout).await {
                Ok(id) => {
                    if state.churn.len() == CHURN_REMEMBERED_MAX {
                        state.churn.pop_front();
                    }
                    // Early by up to a quarter of the timeout: see
                    // CHURN_EXPIRY_SLACK_SHARE.
                    let may_expire_ns = state.churn_timeout.as_ms().map_or(u64::MAX, |ms| {
                        let ms = ms - ms / CHURN_EXPIRY_SLACK_SHARE;
                        issued_ns.saturating_add(ms.saturating_mul(1_000_000))
                    });
                    state.churn.push_back((id, may_expire_ns));
                    true
                }
                Err(_) => false,
            }
        }
        Op::Delete => {
            // The newest churn session: the one least likely to have expired.
            let (id, may_expire_ns) = state.churn.pop_back()?;
            match store.delete(&id).await {
                Ok(()) => true,
                Err(Error::NotFound) => time.now_ns() >= may_expire_ns,
                Err(_) => false,
            }
        }
        Op::List => {
            let Work::List { page } = plan.work else {
                unreachable!("only the lister lists")
            };
            let listed = store.list(state.cursor, page).await;
            state.cursor = listed
                .as_ref()
                .ok()
                .and_then(|page| page.next)
                .unwrap_or(Cursor::START);
            listed.is_ok()
        }
    };
    Some(ok)
}
