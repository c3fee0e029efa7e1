//! One load phase against one backend: start the clients on their worker
//! threads, collect their histograms, measure the CPU they and the engine's
//! sweeper used.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::RecvTimeoutError;
use indicatif::ProgressBar;
use session_engine::{SessionId, Timeout};

use crate::backend::Backend;
use crate::client::{drive, ClientPlan, ClientState, Work};
use crate::clock::{block_on_ready, SpinTime, TokioTime};
use crate::hist::{ClientSummary, Collector, IntervalPoint, Msg, OpHists, Recorder};
use crate::limits::START_LEAD_NS;
use crate::procfs;
use crate::scenario::Scenario;
use crate::schedule::Pace;
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
    /// Stop after this many point operations in total, warm-up included (0: no limit).
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

/// CPU time of the load, by who used it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CpuUse {
    /// Wall time from the first scheduled operation to the last client's end.
    pub wall_s: f64,
    /// Point-operation worker threads together (includes spinning while
    /// waiting for the next scheduled operation in open loop).
    pub workers_s: f64,
    /// The lister thread.
    pub lister_s: f64,
    /// The engine's sweeper thread, if found.
    pub sweeper_s: Option<f64>,
    /// The whole process (10 ms resolution).
    pub process_s: Option<f64>,
}

/// What one load phase measured.
pub struct Outcome {
    /// Histograms after the warm-up.
    pub totals: OpHists,
    /// Per-interval points.
    pub timeline: Vec<IntervalPoint>,
    /// The `HdrHistogram` interval log.
    pub interval_log: Vec<u8>,
    /// Counts over all clients.
    pub summary: ClientSummary,
    /// Seconds measured (after the warm-up).
    pub measured_s: f64,
    /// Operations per second after the warm-up, point operations only
    /// (open loop: those completed within the schedule).
    pub throughput_ops_per_s: f64,
    /// Operations of each kind (`Op::index`) the throughput counts.
    pub window_ops: [u64; crate::mix::Op::COUNT],
    /// CPU.
    pub cpu: CpuUse,
    /// False if some worker's CPU time could not be read: `cpu.workers_s`
    /// then undercounts, and nothing per operation is derived from it.
    pub workers_cpu_known: bool,
    /// Wall-clock start of the load.
    pub started_at: SystemTime,
    /// Warm-up actually excluded (whole intervals).
    pub warmup: Duration,
}

impl Outcome {
    /// Point operations (lists left out) the throughput counts.
    #[must_use]
    pub fn window_point_ops(&self) -> u64 {
        point_ops(&self.window_ops)
    }
}

/// The point operations (lists left out) among counts by `Op::index`.
fn point_ops(counts: &[u64; crate::mix::Op::COUNT]) -> u64 {
    crate::mix::Op::ALL
        .iter()
        .filter(|op| **op != crate::mix::Op::List)
        .map(|op| counts[op.index()])
        .sum()
}

struct ThreadCpu {
    point: bool,
    /// `None` where per-thread CPU time cannot be read (no schedstat).
    cpu_ns: Option<u64>,
    end_ns: u64,
}

/// This thread's CPU time since `before`, if both readings exist.
fn cpu_since(before: Option<u64>) -> Option<u64> {
    procfs::thread_cpu_ns()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before))
}

/// Runs one load phase against `store` over `population`.
#[allow(clippy::too_many_lines)] // one linear setup: plans, threads, collection, accounting
pub fn run<B: Backend>(
    store: &Arc<B>,
    scenario: &Scenario,
    population: &Arc<[SessionId]>,
    phase: Phase,
    progress: Option<&ProgressBar>,
) -> Outcome {
    let interval_ns = scenario.interval.as_ns();
    let warmup_intervals = u64::try_from(phase.warmup.as_nanos())
        .unwrap_or(u64::MAX)
        .div_ceil(interval_ns);
    let warmup_ns = warmup_intervals * interval_ns;
    let total_ns = warmup_ns + u64::try_from(phase.duration.as_nanos()).unwrap_or(u64::MAX);
    let churn_timeout = Timeout::After(scenario.churn_timeout.0);
    let clients = scenario.clients;
    let lister = scenario.list.rate_per_s > 0.0;
    let client_count = clients + usize::from(lister);

    let origin = Instant::now();
    let started_at = SystemTime::now();
    let start_ns = START_LEAD_NS;
    let end_ns = start_ns + total_ns;

    let point_plan = |client: usize| {
        let pace = match phase.rate {
            Rate::Max => Pace::Closed,
            Rate::PerSec(rate) => {
                let period_ns = 1e9 * clients as f64 / rate;
                Pace::Open {
                    period_ns,
                    offset_ns: period_ns * client as f64 / clients as f64,
                }
            }
        };
        let ops_max = if phase.ops_max == 0 {
            u64::MAX
        } else {
            phase.ops_max.div_ceil(clients as u64)
        };
        ClientPlan {
            start_ns,
            end_ns,
            ops_max,
            pace,
            work: Work::Point {
                mix: scenario.mix.table(),
                keys: crate::mix::KeySampler::new(scenario.keys, population.len()),
            },
        }
    };
    let list_plan = ClientPlan {
        start_ns,
        end_ns,
        ops_max: u64::MAX,
        pace: Pace::Open {
            period_ns: 1e9 / scenario.list.rate_per_s.max(1e-9),
            offset_ns: 0.0,
        },
        work: Work::List {
            page: scenario.list.page,
        },
    };
    let state = |client: usize| {
        let seed = scenario
            .seed
            .wrapping_add((client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        ClientState::new(
            seed,
            Arc::clone(population),
            scenario.metadata_bytes,
            churn_timeout,
        )
    };

    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Box<OpHists>>(client_count * 2);
    let comment = format!(
        "loadgen {} scenario {} rate {} clients {} warm-up {} intervals of {}",
        env!("CARGO_PKG_VERSION"),
        scenario.name,
        phase.rate,
        clients,
        warmup_intervals,
        scenario.interval
    );
    let mut collector = Collector::new(
        client_count,
        interval_ns,
        warmup_intervals,
        started_at,
        spare_tx,
        &comment,
    );

    if let Rate::PerSec(_) = phase.rate {
        // Open loop: throughput counts what completed within the schedule.
        collector.set_window_end(total_ns.div_ceil(interval_ns));
    }
    let process_before = procfs::process_cpu_ns();
    let sweeper_before = procfs::named_thread_cpu_ns(SWEEPER_THREAD);
    store.load_started(origin + Duration::from_nanos(start_ns));

    let thread_cpu: Vec<ThreadCpu> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let workers = scenario.workers;
        let mut next_client = 0;
        for w in 0..workers {
            let share = clients / workers + usize::from(w < clients % workers);
            let ids: Vec<usize> = (next_client..next_client + share).collect();
            next_client += share;
            let jobs: Vec<_> = ids
                .iter()
                .map(|&c| {
                    let recorder = Recorder::new(c, start_ns, interval_ns, tx.clone(), spare_rx.clone());
                    (point_plan(c), state(c), recorder)
                })
                .collect();
            let store = Arc::clone(store);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-worker-{w}"))
                    .spawn_scoped(scope, move || {
                        let cpu_before = procfs::thread_cpu_ns();
                        let end = run_clients(&store, origin, jobs);
                        ThreadCpu {
                            point: true,
                            cpu_ns: cpu_since(cpu_before),
                            end_ns: end,
                        }
                    })
                    .expect("spawning a worker thread"),
            );
        }
        if lister {
            let recorder = Recorder::new(clients, start_ns, interval_ns, tx.clone(), spare_rx.clone());
            let jobs = vec![(list_plan.clone(), state(clients), recorder)];
            let store = Arc::clone(store);
            handles.push(
                std::thread::Builder::new()
                    .name("loadgen-lister".into())
                    .spawn_scoped(scope, move || {
                        let cpu_before = procfs::thread_cpu_ns();
                        let end = run_clients(&store, origin, jobs);
                        ThreadCpu {
                            point: false,
                            cpu_ns: cpu_since(cpu_before),
                            end_ns: end,
                        }
                    })
                    .expect("spawning the lister thread"),
            );
        }
        drop(tx);
        collect(&mut collector, &rx, origin, start_ns, total_ns, progress);
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread panicked"))
            .collect()
    });

    let sweeper_after = procfs::named_thread_cpu_ns(SWEEPER_THREAD);
    let process_after = procfs::process_cpu_ns();
    let last_end_ns = thread_cpu
        .iter()
        .filter(|t| t.point)
        .map(|t| t.end_ns)
        .max()
        .unwrap_or(end_ns);
    let ns_to_s = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
    let workers_cpu_known = thread_cpu.iter().all(|t| t.cpu_ns.is_some());
    // Open loop: the schedule defines the measured window (operations that
    // complete after it were scheduled inside it); closed loop: until the end.
    let measured_end_ns = match phase.rate {
        Rate::Max => last_end_ns,
        Rate::PerSec(_) => last_end_ns.min(end_ns),
    };
    let measured_s = ns_to_s(measured_end_ns.saturating_sub(start_ns + warmup_ns).max(1));
    // Open loop: only completions inside the window count (a backlog
    // worked off after the schedule ended would overstate the rate held;
    // those operations keep their latency in the histograms).
    let throughput_ops_per_s = point_ops(&collector.window_ops) as f64 / measured_s;
    let cpu = CpuUse {
        wall_s: ns_to_s(last_end_ns.saturating_sub(start_ns)),
        workers_s: ns_to_s(
            thread_cpu
                .iter()
                .filter(|t| t.point)
                .filter_map(|t| t.cpu_ns)
                .sum(),
        ),
        lister_s: ns_to_s(
            thread_cpu
                .iter()
                .filter(|t| !t.point)
                .filter_map(|t| t.cpu_ns)
                .sum(),
        ),
        sweeper_s: sweeper_before
            .zip(sweeper_after)
            .map(|(b, a)| ns_to_s(a.saturating_sub(b))),
        process_s: process_before
            .zip(process_after)
            .map(|(b, a)| ns_to_s(a.saturating_sub(b))),
    };
    Outcome {
        timeline: std::mem::take(&mut collector.timeline),
        interval_log: collector.log().to_vec(),
        summary: collector.summary,
        totals: collector.totals,
        measured_s,
        throughput_ops_per_s,
        window_ops: collector.window_ops,
        cpu,
        workers_cpu_known,
        started_at,
        warmup: Duration::from_nanos(warmup_ns),
    }
}

type Job = (ClientPlan, ClientState, Recorder);

/// Runs this thread's clients; returns when the last ends (run-clock ns).
fn run_clients<B: Backend>(store: &Arc<B>, origin: Instant, jobs: Vec<Job>) -> u64 {
    if B::READY_FUTURES && jobs.len() == 1 {
        let time = SpinTime::new(origin);
        let (plan, mut state, mut recorder) = jobs.into_iter().next().expect("one job");
        let mut summary = block_on_ready(drive(&**store, &time, &plan, &mut state, &mut recorder));
        summary.end_ns = crate::clock::Time::now_ns(&time);
        let end = summary.end_ns;
        recorder.finish(summary);
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
                summary.end_ns = crate::clock::Time::now_ns(&time);
                let end = summary.end_ns;
                recorder.finish(summary);
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
    start_ns: u64,
    total_ns: u64,
    progress: Option<&ProgressBar>,
) {
    if let Some(bar) = progress {
        bar.set_length(total_ns / 1_000_000);
    }
    while !collector.finished() {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(msg) => collector.accept(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(bar) = progress {
            #[allow(clippy::cast_possible_truncation)]
            let elapsed_ns = origin.elapsed().as_nanos() as u64;
            bar.set_position(elapsed_ns.saturating_sub(start_ns).min(total_ns) / 1_000_000);
            bar.set_message(format!("{} ops", collector.ops_seen));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_sharing_a_thread_take_turns_against_a_store_that_answers_at_once() {
        // Two clients on one thread (tokio tasks), closed loop, against the
        // null store, whose futures are always ready: without a yield per
        // operation the first client would run to the end alone.
        let scenario = Scenario::default();
        let population: Arc<[SessionId]> = (0..64u8).map(|n| SessionId::from_bytes([n; 16])).collect();
        let store = Arc::new(crate::backend::NullStore);
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        let (_spare_tx, spare_rx) = crossbeam_channel::bounded::<Box<OpHists>>(8);
        let jobs: Vec<Job> = (0..2)
            .map(|client| {
                let plan = ClientPlan {
                    start_ns: 0,
                    end_ns: 50_000_000,
                    ops_max: u64::MAX,
                    pace: Pace::Closed,
                    work: Work::Point {
                        mix: scenario.mix.table(),
                        keys: crate::mix::KeySampler::new(scenario.keys, population.len()),
                    },
                };
                let state = ClientState::new(
                    7 + client as u64,
                    Arc::clone(&population),
                    16,
                    Timeout::After(Duration::from_secs(60)),
                );
                let recorder = Recorder::new(client, 0, 10_000_000, tx.clone(), spare_rx.clone());
                (plan, state, recorder)
            })
            .collect();
        drop(tx);
        run_clients(&store, Instant::now(), jobs);
        let mut ops = [0u64; 2];
        for msg in rx.try_iter() {
            if let Msg::Done { client, summary } = msg {
                ops[client] = summary.ops;
            }
        }
        assert!(ops.iter().all(|&n| n > 1_000), "operations per client: {ops:?}");
    }
}
