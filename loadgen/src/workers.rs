//! One load phase: start each side's clients on their worker threads (the
//! backend's and, in alternating slices, the reference peer's), collect their
//! histograms, and account the CPU they and the engine's sweeper used.
//!
//! Each side has its own threads: `workers` point-operation threads and a
//! lister. A side's threads idle through the other side's slices, so a
//! backend that stalls holds up its own operations only, never the peer's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::RecvTimeoutError;
use session_engine::{SessionId, Timeout};

use crate::backend::{Backend, LoadClock};
use crate::client::{drive, ClientPlan, ClientState, Work};
use crate::clock::{block_on_ready, SpinTime, Time, TokioTime};
use crate::collect::{ClientSummary, Collected, Collector, CollectorPlan, IntervalPoint, Msg, Recorder};
use crate::hist::OpHists;
use crate::limits::{PREALLOCATED_SETS_MAX, SPARE_SETS_PER_CLIENT, START_LEAD_NS};
use crate::mix::KeySampler;
use crate::peer::PeerStore;
use crate::procfs;
use crate::progress::Progress;
use crate::scenario::Scenario;
use crate::schedule::{Pace, Side, Slices};
use crate::slices::{SideTally, SliceStats, Standing};
use crate::units::Rate;

/// The sweeper thread's name in the engine (`engine.rs`).
pub const SWEEPER_THREAD: &str = "session-sweeper";

/// One load phase: how hard and how long.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Total point-operation rate, or closed loop.
    pub rate: Rate,
    /// Excluded from the figures.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
    /// Stop after this many measured point operations per side (0: no limit).
    pub ops_max: u64,
}

impl Phase {
    /// The scenario's own phase.
    #[must_use]
    pub fn of(scenario: &Scenario) -> Self {
        Self {
            rate: scenario.rate,
            warmup: scenario.warmup.0,
            duration: scenario.duration.0,
            ops_max: scenario.ops_max,
        }
    }
}

/// The live sessions of each side.
#[derive(Clone)]
pub struct Populations {
    /// The backend's.
    pub backend: Arc<[SessionId]>,
    /// The peer's (`None`: no peer in this run).
    pub peer: Option<Arc<[SessionId]>>,
}

/// CPU time of the load, by who used it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CpuUse {
    /// Wall time from the first scheduled operation to the last client's end.
    pub wall_s: f64,
    /// The backend's point-operation worker threads (includes spinning
    /// while waiting for the next scheduled operation in open loop).
    pub workers_s: f64,
    /// The peer's point-operation worker threads.
    pub peer_workers_s: f64,
    /// The listers.
    pub lister_s: f64,
    /// The engine's sweeper thread, if found.
    pub sweeper_s: Option<f64>,
    /// The whole process (10 ms resolution).
    pub process_s: Option<f64>,
}

/// What one side's slices measured.
pub struct SideOutcome {
    /// Its slices, pooled.
    pub tally: SideTally,
    /// Its clients' counts.
    pub summary: ClientSummary,
    /// Seconds of its measured slices that its point clients ran in (all
    /// of them but the idle ones after the clients ended with `--ops`).
    pub active_s: f64,
    /// Point operations per second over its measured slices (those that
    /// completed within their slice).
    pub throughput_ops_per_s: f64,
    /// The same over its undisturbed slices only (`None`: it had none).
    pub quiet_throughput_ops_per_s: Option<f64>,
    /// The share of its measured slices that were judged, of those its
    /// point clients ran in (0 if none): the slices after they ended (with
    /// `--ops`) are idle, so judged however busy the machine was, and
    /// counted in they would make a disturbed run look judged.
    pub judged_share: f64,
    /// Its measured slices after its point clients ended (with `--ops`):
    /// idle, left out of `active_s` and `judged_share`.
    pub idle_after: u64,
    /// Seconds of all its measured slices, idle ones included: the span the
    /// lister (which runs to the end) ran over.
    pub measured_s: f64,
    /// Seconds of its judged slices that its point clients ran in: what a
    /// judged point operation's rate is over.
    pub judged_active_s: f64,
    /// Seconds of all its judged slices: what the judged list rate is over.
    pub judged_s: f64,
}

impl SideOutcome {
    /// `after`: the side's measured slices that started once its point
    /// clients had all ended (see [`slices_after`]); they ran no point
    /// operation, so neither a rate nor the judged share counts them.
    fn of(tally: SideTally, summary: ClientSummary, slice_ns: u64, after: After) -> Self {
        let seconds = Duration::from_nanos(slice_ns).as_secs_f64();
        let quiet_slices = tally.quiet_slices.saturating_sub(after.quiet);
        let active_slices = tally.measured.saturating_sub(after.all);
        let active_s = active_slices as f64 * seconds;
        let quiet_s = quiet_slices as f64 * seconds;
        let judged_share = if active_slices == 0 {
            0.0
        } else {
            tally.judged_slices.saturating_sub(after.judged) as f64 / active_slices as f64
        };
        Self {
            throughput_ops_per_s: tally.in_time_all as f64 / active_s.max(1e-9),
            quiet_throughput_ops_per_s: (quiet_slices > 0).then(|| tally.in_time_quiet as f64 / quiet_s),
            active_s,
            judged_share,
            idle_after: after.all,
            measured_s: tally.measured as f64 * seconds,
            judged_active_s: tally.judged_slices.saturating_sub(after.judged) as f64 * seconds,
            judged_s: tally.judged_slices as f64 * seconds,
            tally,
            summary,
        }
    }
}

/// A side's measured slices after its point clients ended: how many, and
/// of those, how many were undisturbed and how many judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct After {
    all: u64,
    quiet: u64,
    judged: u64,
}

/// What one load phase measured.
pub struct Outcome {
    /// The backend's side.
    pub backend: SideOutcome,
    /// The peer's side, if the run had one.
    pub peer: Option<SideOutcome>,
    /// Every slice.
    pub slices: Vec<SliceStats>,
    /// Slice length, ns.
    pub slice_ns: u64,
    /// The backend's per-interval points.
    pub timeline: Vec<IntervalPoint>,
    /// The `HdrHistogram` interval log.
    pub interval_log: Vec<u8>,
    /// Seconds of the measured window (after the warm-up), both sides.
    pub measured_s: f64,
    /// CPU.
    pub cpu: CpuUse,
    /// False if some worker's CPU time could not be read.
    pub workers_cpu_known: bool,
    /// Steal time the hypervisor reported over the load, all CPUs, ms
    /// (10 ms resolution).
    pub steal_ms: Option<f64>,
    /// Wall-clock start of the load.
    pub started_at: SystemTime,
    /// Warm-up actually excluded (whole intervals).
    pub warmup: Duration,
}

/// How one load phase is laid out in time, ns on the run's clock.
#[derive(Clone, Copy, Debug)]
struct Timing {
    start_ns: u64,
    end_ns: u64,
    warmup_ns: u64,
    interval_ns: u64,
    slices: Slices,
}

impl Timing {
    /// Warm-up in whole intervals; the measured time in whole pairs of
    /// slices, so that both sides get as much of it.
    fn of(scenario: &Scenario, phase: Phase, peer: bool) -> Self {
        let interval_ns = scenario.interval.as_ns();
        let slice_ns = scenario.slice.as_ns();
        let warmup_ns = nanos(phase.warmup).div_ceil(interval_ns) * interval_ns;
        let pair_ns = if peer { 2 * slice_ns } else { slice_ns };
        let measured_ns = nanos(phase.duration).div_ceil(pair_ns).max(1) * pair_ns;
        let start_ns = START_LEAD_NS;
        Self {
            start_ns,
            end_ns: start_ns + warmup_ns + measured_ns,
            warmup_ns,
            interval_ns,
            slices: Slices {
                start_ns,
                slice_ns,
                seed: scenario.seed,
                peer,
            },
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The clients of one side on one worker thread (or the lister).
type Job = (ClientPlan, ClientState, Recorder);

/// What a thread reports when its clients are done.
struct ThreadCpu {
    side: Side,
    point: bool,
    /// `None` where per-thread CPU time cannot be read (no schedstat).
    cpu_ns: Option<u64>,
    end_ns: u64,
}

/// Plans each client of `side`: point clients `first..first + clients`,
/// then the lister (`first + clients`) if the scenario lists.
fn plan_side(
    scenario: &Scenario,
    phase: Phase,
    timing: Timing,
    side: Side,
    population: &Arc<[SessionId]>,
    first: usize,
) -> (Vec<Vec<usize>>, Option<usize>, Vec<ClientPlan>, Vec<ClientState>) {
    let clients = scenario.clients;
    let point_plan = |client: usize| ClientPlan {
        start_ns: timing.start_ns,
        end_ns: timing.end_ns,
        ops_max: if phase.ops_max == 0 {
            u64::MAX
        } else {
            phase.ops_max.div_ceil(clients as u64)
        },
        measured_from_ns: timing.start_ns + timing.warmup_ns,
        pace: match phase.rate {
            Rate::Max => Pace::Closed,
            Rate::PerSec(rate) => {
                let period_ns = 1e9 * clients as f64 / rate;
                Pace::Open {
                    period_ns,
                    offset_ns: period_ns * client as f64 / clients as f64,
                }
            }
        },
        work: Work::Point {
            mix: scenario.mix.table(),
            keys: KeySampler::new(scenario.keys, population.len()),
        },
        side,
        slices: timing.slices,
    };
    let mut plans: Vec<ClientPlan> = (0..clients).map(point_plan).collect();
    let lister = (scenario.list.rate_per_s > 0.0).then(|| {
        plans.push(ClientPlan {
            ops_max: u64::MAX,
            measured_from_ns: timing.start_ns + timing.warmup_ns,
            pace: Pace::Open {
                period_ns: 1e9 / scenario.list.rate_per_s,
                offset_ns: 0.0,
            },
            work: Work::List {
                page: scenario.list.page,
            },
            ..point_plan(0)
        });
        first + clients
    });
    // Both sides draw the same sequence of operations and keys.
    let states = (0..plans.len())
        .map(|client| {
            let seed = scenario
                .seed
                .wrapping_add((client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            ClientState::new(
                seed,
                Arc::clone(population),
                scenario.metadata_bytes,
                Timeout::After(scenario.churn_timeout.0),
            )
        })
        .collect();
    let workers = scenario.workers;
    let mut next = first;
    let threads = (0..workers)
        .map(|w| {
            let share = clients / workers + usize::from(w < clients % workers);
            let ids = (next..next + share).collect();
            next += share;
            ids
        })
        .collect();
    (threads, lister, plans, states)
}

/// Starts one side's threads in `scope`; each returns its CPU when done.
fn spawn_side<'scope, S: Backend>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    store: &Arc<S>,
    side: Side,
    origin: Instant,
    layout: (Vec<Vec<usize>>, Option<usize>, Vec<ClientPlan>, Vec<ClientState>),
    first: usize,
    channels: &(
        crossbeam_channel::Sender<Msg>,
        crossbeam_channel::Receiver<Box<OpHists>>,
    ),
) -> Vec<std::thread::ScopedJoinHandle<'scope, ThreadCpu>> {
    let (threads, lister, plans, states) = layout;
    let mut jobs: Vec<Option<Job>> = plans
        .into_iter()
        .zip(states)
        .enumerate()
        .map(|(i, (plan, state))| {
            let recorder = Recorder::new(first + i, channels.0.clone(), channels.1.clone());
            Some((plan, state, recorder))
        })
        .collect();
    let mut take = |id: usize| jobs[id - first].take().expect("each client once");
    let mut groups: Vec<(String, bool, Vec<Job>)> = threads
        .into_iter()
        .enumerate()
        .map(|(w, ids)| {
            let group = ids.into_iter().map(&mut take).collect();
            (format!("loadgen-{}-{w}", side.name()), true, group)
        })
        .collect();
    if let Some(id) = lister {
        groups.push((format!("loadgen-{}-lister", side.name()), false, vec![take(id)]));
    }
    groups
        .into_iter()
        .map(|(name, point, group)| {
            let store = Arc::clone(store);
            std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    let cpu_before = procfs::thread_cpu_ns();
                    let end_ns = run_clients(&store, origin, group);
                    ThreadCpu {
                        side,
                        point,
                        cpu_ns: procfs::thread_cpu_ns()
                            .zip(cpu_before)
                            .map(|(after, before)| after.saturating_sub(before)),
                        end_ns,
                    }
                })
                .expect("spawning a load thread")
        })
        .collect()
}

/// Runs one load phase: the backend in its slices and, if `peer` is given,
/// the reference peer in the others.
pub fn run<B: Backend>(
    backend: &Arc<B>,
    peer: Option<&Arc<PeerStore>>,
    scenario: &Scenario,
    populations: &Populations,
    phase: Phase,
    progress: Option<&Progress>,
) -> Outcome {
    let timing = Timing::of(scenario, phase, peer.is_some());
    let origin = Instant::now();
    let started_at = SystemTime::now();
    let backend_layout = plan_side(scenario, phase, timing, Side::Backend, &populations.backend, 0);
    let peer_first = backend_layout.2.len();
    let peer_layout = peer.map(|_| {
        let population = populations.peer.as_ref().expect("a peer has a population");
        plan_side(scenario, phase, timing, Side::Peer, population, peer_first)
    });
    let clients = peer_first + peer_layout.as_ref().map_or(0, |l| l.2.len());
    let sides = (0..clients)
        .map(|c| if c < peer_first { Side::Backend } else { Side::Peer })
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    // Every histogram set a client will need, allocated before the load:
    // a set is 1.7 MB, and allocating (or freeing) one at a slice boundary
    // faults in pages on a client's thread and takes the process's memory
    // map lock while the other threads work.
    let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Box<OpHists>>(clients * SPARE_SETS_PER_CLIENT);
    for _ in 0..(clients * SPARE_SETS_PER_CLIENT / 2).min(PREALLOCATED_SETS_MAX) {
        let _ = spare_tx.try_send(Box::default());
    }
    let mut collector = Collector::new(
        CollectorPlan {
            sides,
            slices: timing.slices,
            warmup_slices: timing.warmup_ns / timing.slices.slice_ns,
            end_ns: timing.end_ns,
            interval_ns: timing.interval_ns,
            started_at,
            comment: format!(
                "loadgen {} scenario {} rate {} clients {} warm-up {} of {} intervals, slices of {}",
                env!("CARGO_PKG_VERSION"),
                scenario.name,
                phase.rate,
                scenario.clients,
                Duration::from_nanos(timing.warmup_ns).as_secs_f64(),
                scenario.interval,
                scenario.slice
            ),
        },
        spare_tx,
    );
    let before = Readings::now();
    backend.load_started(&LoadClock {
        origin,
        slices: timing.slices,
        measured_start_ns: timing.start_ns + timing.warmup_ns,
    });
    let channels = (tx, spare_rx);
    let thread_cpu: Vec<ThreadCpu> = std::thread::scope(|scope| {
        let mut handles = spawn_side(
            scope,
            backend,
            Side::Backend,
            origin,
            backend_layout,
            0,
            &channels,
        );
        if let (Some(peer), Some(layout)) = (peer, peer_layout) {
            handles.extend(spawn_side(
                scope,
                peer,
                Side::Peer,
                origin,
                layout,
                peer_first,
                &channels,
            ));
        }
        drop(channels);
        collect(&mut collector, &rx, origin, timing, progress);
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread panicked"))
            .collect()
    });
    let after = Readings::now();
    assemble(collector.finish(), &thread_cpu, timing, before, after, started_at)
}

/// Process-wide counters read around the load, ns.
#[derive(Clone, Copy)]
struct Readings {
    sweeper_cpu: Option<u64>,
    process_cpu: Option<u64>,
    steal: Option<u64>,
}

impl Readings {
    fn now() -> Self {
        Self {
            sweeper_cpu: procfs::named_thread_cpu_ns(SWEEPER_THREAD),
            process_cpu: procfs::process_cpu_ns(),
            steal: procfs::steal_ns(),
        }
    }
}

/// Of `side`'s measured slices, those that start at or after `end_s`
/// (seconds since the load's start: where its point clients had all ended,
/// having issued `ops_max` before the measured time ran out, while a lister
/// went on), and how many of them were undisturbed and judged. Counted in,
/// they would dilute every rate by how early the clients finished (the
/// throughput floor of a tier could then fail or pass by the machine's
/// speed alone), and pad the judged share with idle slices.
fn slices_after(slices: &[SliceStats], side: Side, end_s: f64) -> After {
    slices
        .iter()
        .filter(|s| s.side == side && s.standing != Standing::Warmup && s.start_s >= end_s)
        .fold(After::default(), |a, s| After {
            all: a.all + 1,
            quiet: a.quiet + u64::from(!s.disturbed),
            judged: a.judged + u64::from(s.standing == Standing::Judged),
        })
}

fn assemble(
    collected: Collected,
    thread_cpu: &[ThreadCpu],
    timing: Timing,
    before: Readings,
    after: Readings,
    started_at: SystemTime,
) -> Outcome {
    let ns_to_s = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
    let last_end_ns = thread_cpu
        .iter()
        .filter(|t| t.point)
        .map(|t| t.end_ns)
        .max()
        .unwrap_or(timing.end_ns);
    let cpu_of = |point: bool, side: Option<Side>| {
        ns_to_s(
            thread_cpu
                .iter()
                .filter(|t| t.point == point && side.is_none_or(|s| s == t.side))
                .filter_map(|t| t.cpu_ns)
                .sum(),
        )
    };
    let since = |b: Option<u64>, a: Option<u64>| b.zip(a).map(|(b, a)| a.saturating_sub(b));
    let cpu = CpuUse {
        wall_s: ns_to_s(last_end_ns.saturating_sub(timing.start_ns)),
        workers_s: cpu_of(true, Some(Side::Backend)),
        peer_workers_s: cpu_of(true, Some(Side::Peer)),
        lister_s: cpu_of(false, None),
        sweeper_s: since(before.sweeper_cpu, after.sweeper_cpu).map(ns_to_s),
        process_s: since(before.process_cpu, after.process_cpu).map(ns_to_s),
    };
    let Collected {
        tallies: [backend_tally, peer_tally],
        slices,
        timeline,
        interval_log,
        summaries: [backend_summary, peer_summary],
    } = collected;
    let slice_ns = timing.slices.slice_ns;
    let ended = |side: Side| {
        let end_ns = thread_cpu
            .iter()
            .filter(|t| t.point && t.side == side)
            .map(|t| t.end_ns)
            .max()
            .unwrap_or(timing.end_ns);
        slices_after(&slices, side, ns_to_s(end_ns.saturating_sub(timing.start_ns)))
    };
    let (backend_after, peer_after) = (ended(Side::Backend), ended(Side::Peer));
    Outcome {
        backend: SideOutcome::of(backend_tally, backend_summary, slice_ns, backend_after),
        peer: timing
            .slices
            .peer
            .then(|| SideOutcome::of(peer_tally, peer_summary, slice_ns, peer_after)),
        slices,
        slice_ns,
        timeline,
        interval_log,
        measured_s: ns_to_s(timing.end_ns - timing.start_ns - timing.warmup_ns),
        cpu,
        workers_cpu_known: thread_cpu.iter().all(|t| t.cpu_ns.is_some()),
        steal_ms: since(before.steal, after.steal).map(|ns| ns as f64 / 1e6),
        started_at,
        warmup: Duration::from_nanos(timing.warmup_ns),
    }
}

/// Runs this thread's clients; returns when the last ends (run-clock ns).
fn run_clients<S: Backend>(store: &Arc<S>, origin: Instant, jobs: Vec<Job>) -> u64 {
    if S::READY_FUTURES && jobs.len() == 1 {
        let time = SpinTime::new(origin);
        let (plan, mut state, mut recorder) = jobs.into_iter().next().expect("one job");
        let mut summary = block_on_ready(drive(&**store, &time, &plan, &mut state, &mut recorder));
        summary.end_ns = summary.end_ns.max(time.now_ns());
        let end = summary.end_ns;
        recorder.finish(summary, time.take_lost());
        return end;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("building a current-thread runtime");
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (plan, mut state, mut recorder) in jobs {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let time = TokioTime::new(origin);
                let mut summary = drive(&*store, &time, &plan, &mut state, &mut recorder).await;
                summary.end_ns = summary.end_ns.max(time.now_ns());
                let end = summary.end_ns;
                recorder.finish(summary, time.take_lost());
                end
            }));
        }
        let mut last = 0;
        for task in tasks {
            last = last.max(task.await.expect("a client task panicked"));
        }
        last
    })
}

fn collect(
    collector: &mut Collector,
    rx: &crossbeam_channel::Receiver<Msg>,
    origin: Instant,
    timing: Timing,
    progress: Option<&Progress>,
) {
    let total_ns = timing.end_ns - timing.start_ns;
    if let Some(bar) = progress {
        bar.start_load(total_ns);
    }
    while !collector.finished() {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(msg) => collector.accept(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(bar) = progress {
            let elapsed_ns = nanos(origin.elapsed()).saturating_sub(timing.start_ns);
            bar.update_load(elapsed_ns.min(total_ns), collector.ops_seen, collector.latest());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{ready, Future};
    use std::sync::Mutex;

    /// Answers at once and logs which session each read asked for.
    struct Log(Mutex<Vec<SessionId>>);

    impl session_engine::SessionStore for Log {
        fn create(
            &self,
            _: &[u8],
            _: Timeout,
        ) -> impl Future<Output = session_engine::Result<SessionId>> + Send {
            ready(Err(session_engine::Error::NotFound))
        }
        fn insert(
            &self,
            _: SessionId,
            _: &[u8],
            _: Timeout,
        ) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn put(
            &self,
            _id: SessionId,
            _m: &[u8],
            _t: Timeout,
        ) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn rotate(&self, _id: &SessionId) -> impl Future<Output = session_engine::Result<SessionId>> + Send {
            ready(Err(session_engine::Error::NotFound))
        }
        fn try_update<F, E>(
            &self,
            _id: &SessionId,
            _f: F,
        ) -> impl Future<Output = session_engine::Result<std::result::Result<session_engine::Updated, E>>> + Send
        where
            F: FnMut(&[u8]) -> std::result::Result<session_engine::Op, E> + Send,
            E: Send,
        {
            ready(Err(session_engine::Error::NotFound))
        }
        fn get(
            &self,
            id: &SessionId,
        ) -> impl Future<Output = session_engine::Result<session_engine::Session>> + Send {
            self.0.lock().unwrap().push(*id);
            ready(Err(session_engine::Error::NotFound))
        }
        fn peek(
            &self,
            id: &SessionId,
        ) -> impl Future<Output = session_engine::Result<session_engine::Session>> + Send {
            self.get(id)
        }
        fn update<F>(
            &self,
            id: &SessionId,
            _: F,
        ) -> impl Future<Output = session_engine::Result<session_engine::Session>> + Send
        where
            F: FnMut(&[u8]) -> Vec<u8> + Send,
        {
            self.get(id)
        }
        fn touch(&self, _: &SessionId) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn delete(&self, _: &SessionId) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn set_ttl(
            &self,
            _: &SessionId,
            _: Timeout,
        ) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn set_lifetime(
            &self,
            _: &SessionId,
            _: Timeout,
        ) -> impl Future<Output = session_engine::Result<()>> + Send {
            ready(Ok(()))
        }
        fn contains(&self, _: &SessionId) -> impl Future<Output = session_engine::Result<bool>> + Send {
            ready(Ok(false))
        }
        fn len(&self) -> impl Future<Output = session_engine::Result<usize>> + Send {
            ready(Ok(0))
        }
        fn list(
            &self,
            _: session_engine::Cursor,
            _: usize,
        ) -> impl Future<Output = session_engine::Result<session_engine::Page>> + Send {
            ready(Ok(session_engine::Page::new(Vec::new(), None)))
        }
        fn cleanup_expired(&self) -> impl Future<Output = session_engine::Result<usize>> + Send {
            ready(Ok(0))
        }
    }

    impl Backend for Log {
        const READY_FUTURES: bool = true;
    }

    #[test]
    fn slices_after_the_point_clients_ended_count_toward_no_rate() {
        // Ten measured slices of 100 ms after two of warm-up; the point
        // clients reached `ops_max` 0.65 s in, 100 operations in time a
        // slice until then, while a lister went on. One slice of each part
        // was disturbed.
        const SLICE_NS: u64 = 100_000_000;
        let mut tally = SideTally::default();
        let mut slices = Vec::new();
        for index in 0..12u64 {
            let start_s = index as f64 * 0.1;
            let point = start_s < 0.65;
            let meta = crate::slices::SliceMeta {
                index,
                side: Side::Backend,
                start_s,
                measured: index >= 2,
                in_time: if point { 100 } else { 0 },
                lost: crate::clock::Lost::default(),
                slice_ns: SLICE_NS,
            };
            let mut stats = SliceStats::of(meta, &OpHists::default());
            stats.disturbed = index == 4 || index == 9;
            tally.accept(&stats, &OpHists::default());
            slices.push(stats);
        }
        let after = slices_after(&slices, Side::Backend, 0.65);
        // Slices 7 to 11, of which 9 disturbed (judged all the same: its
        // tally is that of a slice that stays judged).
        assert_eq!(
            after,
            After {
                all: 5,
                quiet: 4,
                judged: 5
            }
        );
        assert_eq!(slices_after(&slices, Side::Peer, 0.65), After::default());
        let outcome = SideOutcome::of(tally, ClientSummary::default(), SLICE_NS, after);
        // 500 in time over slices 2 to 6 (0.5 s); 400 over the four quiet ones.
        assert!(
            (outcome.throughput_ops_per_s - 1_000.0).abs() < 1e-6,
            "{}",
            outcome.throughput_ops_per_s
        );
        let quiet = outcome.quiet_throughput_ops_per_s.expect("quiet slices");
        assert!((quiet - 1_000.0).abs() < 1e-6, "{quiet}");
        assert!((outcome.active_s - 0.5).abs() < 1e-9);
        // Clients that ran to the end leave every slice counted.
        assert_eq!(slices_after(&slices, Side::Backend, 1.2), After::default());
    }

    /// With `--ops` the point clients end early, and the slices after them
    /// are idle: judged, whatever the machine did. Counted in the judged
    /// share, 80 of them made a run whose 20 active slices the machine had
    /// disturbed all but one judged at 81%: a verdict on one slice, where
    /// fewer than a quarter judged is inconclusive.
    #[test]
    fn idle_slices_after_the_point_clients_ended_are_not_judged_share() {
        const SLICE_NS: u64 = 100_000_000;
        let mut tally = SideTally::default();
        let mut slices = Vec::new();
        for index in 0..100u64 {
            let start_s = index as f64 * 0.1;
            let meta = crate::slices::SliceMeta {
                index,
                side: Side::Backend,
                start_s,
                measured: true,
                in_time: if start_s < 2.0 { 100 } else { 0 },
                lost: crate::clock::Lost::default(),
                slice_ns: SLICE_NS,
            };
            let mut stats = SliceStats::of(meta, &OpHists::default());
            if index > 0 && start_s < 2.0 {
                stats.disturbed = true;
                stats.standing = Standing::SetAside;
            }
            tally.accept(&stats, &OpHists::default());
            slices.push(stats);
        }
        assert_eq!(tally.judged_slices, 81);
        let after = slices_after(&slices, Side::Backend, 2.0);
        assert_eq!(after.judged, 80);
        let outcome = SideOutcome::of(tally, ClientSummary::default(), SLICE_NS, after);
        assert!(
            (outcome.judged_share - 1.0 / 20.0).abs() < 1e-9,
            "{}",
            outcome.judged_share
        );
        assert_eq!(outcome.idle_after, 80, "reported beside the share");
        assert!(outcome.judged_share < crate::limits::JUDGED_SHARE_MIN);
        // Rates: point operations over the slices their clients ran in,
        // judged ones over the judged slices among those (one here); the
        // lister's over every slice, as it runs to the end.
        assert!((outcome.active_s - 2.0).abs() < 1e-9, "{}", outcome.active_s);
        assert!(
            (outcome.judged_active_s - 0.1).abs() < 1e-9,
            "{}",
            outcome.judged_active_s
        );
        assert!((outcome.measured_s - 10.0).abs() < 1e-9, "{}", outcome.measured_s);
        assert!((outcome.judged_s - 8.1).abs() < 1e-9, "{}", outcome.judged_s);
    }

    #[test]
    fn clients_sharing_a_thread_take_turns_against_a_store_that_answers_at_once() {
        // Two clients on one thread (tokio tasks), closed loop, 100 reads
        // each, against a store whose futures are always ready: without a
        // yield per operation the first client would issue all its reads
        // before the second issued one. Each client reads only its own
        // session, so the store's log shows whose turn it was.
        let store = Arc::new(Log(Mutex::new(Vec::new())));
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        let (_spare_tx, spare_rx) = crossbeam_channel::bounded::<Box<OpHists>>(8);
        let jobs: Vec<Job> = (0..2u8)
            .map(|client| {
                let own: Arc<[SessionId]> = vec![SessionId::from_bytes([client; 16])].into();
                let plan = ClientPlan {
                    start_ns: 0,
                    end_ns: u64::MAX / 2,
                    ops_max: 100,
                    measured_from_ns: 0,
                    pace: Pace::Closed,
                    work: Work::Point {
                        mix: "get=1".parse::<crate::mix::Mix>().unwrap().table(),
                        keys: KeySampler::new(crate::mix::KeyDist::Uniform, 1),
                    },
                    side: Side::Backend,
                    slices: Slices::backend_only(0, u64::MAX / 4),
                };
                let state = ClientState::new(7, own, 16, Timeout::Never);
                let recorder = Recorder::new(usize::from(client), tx.clone(), spare_rx.clone());
                (plan, state, recorder)
            })
            .collect();
        drop(tx);
        // Two jobs on one thread: the tokio path, whatever the store.
        run_clients(&store, Instant::now(), jobs);
        let log = store.0.lock().unwrap();
        assert_eq!(log.len(), 200);
        let mut longest_turn = 0;
        let mut turn = 0;
        for (i, id) in log.iter().enumerate() {
            turn = if i > 0 && log[i - 1] == *id { turn + 1 } else { 1 };
            longest_turn = longest_turn.max(turn);
        }
        assert!(
            longest_turn <= 2,
            "one client issued {longest_turn} reads in a row while the other waited"
        );
        let done = rx
            .try_iter()
            .filter(|m| matches!(m, Msg::Done { summary, .. } if summary.ops == 100))
            .count();
        assert_eq!(done, 2);
    }
}
