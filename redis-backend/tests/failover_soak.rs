//! Failover soak: 20 `kill -9` failovers in a row (`SOAK_FAILOVERS` to
//! change; `SOAK_UPDATERS` for more concurrent writers), the shards in turn,
//! alternating "old master left dead" (restarted only after the next round)
//! and "old master restarted at once", through the same two stores for the
//! whole run: one with the cluster preset (`WAIT` for one replica), one with
//! `Replication::Async`. While the masters die, each store runs its own
//! workers: an updater bumping counters, a creator/deleter churning
//! sessions, and one prober per shard reading a session there.
//!
//! Checked after every failover, for the `WAIT` store: every session whose
//! create or update was acknowledged is there and holds at least its last
//! acknowledged value and at most its last attempted one; every session whose
//! delete was acknowledged is gone; a delete that reported `Unavailable` (not
//! applied) did not apply. For the `Async` store the same is counted (an
//! acknowledged write may be lost there by design: it was not replicated
//! yet) and reported. For both: the victim's shard is served again (a read
//! and a write), no request on the other (healthy)
//! shards fails, and the client is never wedged (no client rebuild).
//!
//! Both stores have a request budget of [`REQUEST_TIMEOUT`] (10 s), not the
//! default 1 s: on a loaded 2-core test machine, busy with the failovers
//! (forks for full resyncs), a read on a healthy shard can wait a second
//! for the machine, which the default budget turned into a failure. A
//! wedged client still fails the test: it shows as client rebuilds, and as
//! requests on a healthy shard that fail (a timeout there means 10 s
//! without an answer). How long healthy shards paused is printed.
//!
//! Measured per failover and printed (also to `target/redis-failover-soak.txt`;
//! summarised in `results/redis/failover.md`): when the replica was
//! promoted, when each store served the victim's shard again, for the
//! healthy shards the failed requests and the longest pause between two
//! successful reads while the failover ran, and the reads per second on a
//! shard left without a replica against a healthy one.

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::{shard_of, Cluster};

const NODE_TIMEOUT_MS: u64 = 1_000;
/// Both stores' request budget: far above any stall of the test machine,
/// so that a failed request on a healthy shard is the client's doing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Failovers in a row, unless `SOAK_FAILOVERS` says otherwise.
const FAILOVERS_DEFAULT: usize = 20;
/// Sessions each store writes before the first kill (the updater's pool).
const SESSIONS: usize = 60;
/// How long the victim's shard may go unserved before the test calls the
/// store stuck. Not a speed target (how soon it recovers is printed, and
/// measured by `redis_bench`): a bound far above any failover's time.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Pauses of a healthy shard this long or longer (the detector's default
/// `stuck_after`) are counted in the summary. Not a verdict: a wedged
/// client shows as rebuilds and as failed requests (each has a budget of
/// [`REQUEST_TIMEOUT`]), while a pause without them is the machine not
/// running the prober, or a reply delayed within the budget.
const LONG_PAUSE: Duration = Duration::from_secs(2);

/// What the test knows of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Created and acknowledged; `acked` is the last acknowledged counter,
    /// `attempted` the highest any attempt may have written.
    Live { acked: u64, attempted: u64 },
    /// A delete is in flight or its outcome is unknown: not checked.
    Doubtful,
    /// The delete was acknowledged.
    Deleted,
    /// An acknowledged write was found lost (reported once, then no longer
    /// checked).
    Lost,
}

#[derive(Default)]
struct Ledger {
    sessions: HashMap<SessionId, State>,
}

type Shared<T> = Arc<Mutex<T>>;

/// One request's outcome, as a prober saw it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    ok: bool,
    timed_out: bool,
}

/// One store under test and what its workers recorded.
struct Subject {
    name: &'static str,
    store: RedisStore,
    strict: bool,
    ledger: Shared<Ledger>,
    /// The updater's sessions (never deleted).
    pool: Vec<SessionId>,
    /// Per shard (by first slot): the prober's session and its samples.
    probes: Vec<(u32, SessionId, Shared<Vec<Sample>>)>,
    /// Acknowledged writes found lost (only the `Async` store may have any).
    lost: Shared<Vec<String>>,
}

fn counter(meta: &[u8]) -> u64 {
    std::str::from_utf8(meta).unwrap().parse().unwrap()
}

/// Increments the counter of a live session; records the outcome.
async fn bump(store: &RedisStore, ledger: &Shared<Ledger>, id: SessionId) -> Result<(), Error> {
    let mut wrote = 0;
    let r = store
        .update(&id, |m| {
            wrote = counter(m) + 1;
            // Recorded before the commit is sent, so that a concurrent check
            // never sees a value above "attempted".
            let mut ledger = ledger.lock().unwrap();
            if let Some(State::Live { attempted, .. }) = ledger.sessions.get_mut(&id) {
                *attempted = (*attempted).max(wrote);
            }
            wrote.to_string().into_bytes()
        })
        .await;
    if let Ok(session) = &r {
        let v = counter(session.metadata());
        assert_eq!(v, wrote, "update returns what it wrote");
        if let Some(State::Live { acked, .. }) = ledger.lock().unwrap().sessions.get_mut(&id) {
            *acked = (*acked).max(v);
        }
    }
    r.map(drop)
}

fn spawn_updater(
    subject: &Subject,
    stop: &Arc<AtomicBool>,
    first: usize,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let (store, ledger, pool, stop) = (
        subject.store.clone(),
        Arc::clone(&subject.ledger),
        subject.pool.clone(),
        Arc::clone(stop),
    );
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        let mut i = first;
        while !stop.load(Ordering::Relaxed) {
            match bump(&store, &ledger, pool[i % pool.len()]).await {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (ok, failed)
    })
}

/// Creates sessions and deletes them again, oldest first, recording each
/// acknowledged create and delete.
fn spawn_churn(subject: &Subject, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    let (store, ledger, stop) = (
        subject.store.clone(),
        Arc::clone(&subject.ledger),
        Arc::clone(stop),
    );
    tokio::spawn(async move {
        let (mut created, mut deleted) = (0, 0);
        let mut alive: std::collections::VecDeque<SessionId> = std::collections::VecDeque::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(id) = store.create(b"0", Timeout::from_secs(3_600)).await {
                ledger.lock().unwrap().sessions.insert(
                    id,
                    State::Live {
                        acked: 0,
                        attempted: 0,
                    },
                );
                alive.push_back(id);
                created += 1;
            }
            if alive.len() > 20 {
                let id = alive.pop_front().unwrap();
                ledger.lock().unwrap().sessions.insert(id, State::Doubtful);
                match store.delete(&id).await {
                    Ok(()) => {
                        ledger.lock().unwrap().sessions.insert(id, State::Deleted);
                        deleted += 1;
                    }
                    // Not applied: still there; try again later.
                    Err(Error::Unavailable { .. }) => {
                        ledger.lock().unwrap().sessions.insert(
                            id,
                            State::Live {
                                acked: 0,
                                attempted: 0,
                            },
                        );
                        alive.push_back(id);
                    }
                    // May or may not be gone: stays Doubtful.
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (created, deleted)
    })
}

fn spawn_probers(subject: &Subject, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    subject
        .probes
        .iter()
        .map(|(_, id, samples)| {
            let (store, id, samples, stop) =
                (subject.store.clone(), *id, Arc::clone(samples), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = store.get(&id).await;
                    let (ok, timed_out) = (r.is_ok(), matches!(r, Err(Error::TimedOut { .. })));
                    samples.lock().unwrap().push(Sample { at, ok, timed_out });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// Reads every session the ledger knows and checks it against what was
/// acknowledged (see the module docs), `CHECKERS` reads at a time.
/// Violations panic for a strict subject and are recorded as lost (once per
/// session) for the other.
async fn check_all(subject: &Subject, round: &str) {
    const CHECKERS: usize = 16;
    let ids: Vec<SessionId> = subject.ledger.lock().unwrap().sessions.keys().copied().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(CHECKERS).max(1)) {
        let (chunk, checker, round) = (chunk.to_vec(), subject.checker(), round.to_owned());
        tasks.spawn(async move {
            for id in chunk {
                checker.check(id, &round).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// What checking needs of a subject, owned (for spawned tasks).
struct Checker {
    name: &'static str,
    store: RedisStore,
    strict: bool,
    ledger: Shared<Ledger>,
    lost: Shared<Vec<String>>,
}

impl Subject {
    fn checker(&self) -> Checker {
        Checker {
            name: self.name,
            store: self.store.clone(),
            strict: self.strict,
            ledger: Arc::clone(&self.ledger),
            lost: Arc::clone(&self.lost),
        }
    }
}

impl Checker {
    async fn check(&self, id: SessionId, round: &str) {
        let before = self.ledger.lock().unwrap().sessions[&id];
        if matches!(before, State::Doubtful | State::Lost) {
            return;
        }
        let read = read_settled(&self.store, &id, round).await;
        let after = self.ledger.lock().unwrap().sessions[&id];
        let problem = match (before, read) {
            (State::Live { acked, .. }, Some(v)) => {
                let attempted = match after {
                    State::Live { attempted, .. } => attempted,
                    _ => u64::MAX,
                };
                (v < acked || v > attempted).then(|| {
                    format!("session {id} holds {v}, acknowledged {acked}, attempted up to {attempted}")
                })
            }
            (State::Live { acked, .. }, None) => {
                // Gone: fine only if a delete started meanwhile.
                (after != State::Doubtful && after != State::Deleted)
                    .then(|| format!("acknowledged session {id} (value {acked}) is gone"))
            }
            (State::Deleted, Some(v)) => Some(format!(
                "session {id} deleted (acknowledged) is back, holding {v}"
            )),
            (State::Deleted, None) | (State::Doubtful | State::Lost, _) => None,
        };
        if let Some(problem) = problem {
            assert!(!self.strict, "{}: {round}: {problem}", self.name);
            self.lost.lock().unwrap().push(format!("{round}: {problem}"));
            self.ledger.lock().unwrap().sessions.insert(id, State::Lost);
        }
    }
}

/// The session's counter, `None` if it does not exist; retries transient
/// errors for up to 30 s (the cluster may still settle; one read may take
/// its whole budget, [`REQUEST_TIMEOUT`]).
async fn read_settled(store: &RedisStore, id: &SessionId, round: &str) -> Option<u64> {
    let since = Instant::now();
    loop {
        match store.peek(id).await {
            Ok(session) => return Some(counter(session.metadata())),
            Err(Error::NotFound) => return None,
            Err(e) => assert!(
                since.elapsed() < Duration::from_secs(30),
                "{round}: session {id} unreadable after recovery: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Healthy-shard figures of one round: failed requests and the longest gap
/// between two successes (or from the kill to the first success) on any
/// shard but the victim's, from `from` to `to`.
fn healthy_figures(
    subject: &Subject,
    victim_slot: u32,
    from: Instant,
    to: Instant,
) -> (usize, usize, Duration) {
    let mut failed = 0;
    let mut timed_out = 0;
    let mut longest = Duration::ZERO;
    for (first, _, samples) in &subject.probes {
        if *first == victim_slot {
            continue;
        }
        let samples = samples.lock().unwrap();
        let mut last_ok = from;
        for s in samples.iter().filter(|s| s.at >= from && s.at <= to) {
            if s.ok {
                longest = longest.max(s.at.saturating_duration_since(last_ok));
                last_ok = s.at;
            } else {
                failed += 1;
                timed_out += usize::from(s.timed_out);
            }
        }
        longest = longest.max(to.saturating_duration_since(last_ok));
    }
    (failed, timed_out, longest)
}

/// Polls a session on the victim's shard (a read and a write) until both
/// succeed; the time since the kill.
async fn served_again(handle: Handle, probe: SessionId, killed_at: Instant) -> Duration {
    let Handle { name, store, ledger } = handle;
    loop {
        let read = store.get(&probe).await;
        let write = bump(&store, &ledger, probe).await;
        let write_ok = matches!(write, Ok(()) | Err(Error::OutcomeUnknown { .. }));
        if read.is_ok() && write_ok {
            return killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < RECOVERY_LIMIT,
            "{name}: no recovery within {RECOVERY_LIMIT:?}: {read:?} / {write:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a spawned task needs of a subject.
struct Handle {
    name: &'static str,
    store: RedisStore,
    ledger: Shared<Ledger>,
}

impl Subject {
    fn handle(&self) -> Handle {
        Handle {
            name: self.name,
            store: self.store.clone(),
            ledger: Arc::clone(&self.ledger),
        }
    }
}

async fn subject(name: &'static str, config: RedisConfig, strict: bool, firsts: &[u32]) -> Subject {
    let store = RedisStore::connect(config).await.expect("connect");
    let ledger: Shared<Ledger> = Arc::default();
    let mut pool = Vec::new();
    let mut unknown = 0;
    for _ in 0..SESSIONS {
        let id = loop {
            match store.create(b"0", Timeout::from_secs(3_600)).await {
                Ok(id) => break id,
                // Set-up on a loaded machine: a replica slower than WAIT's
                // bound leaves a create's outcome unknown (a stray session
                // no check looks at); the soak starts from acknowledged
                // sessions only.
                Err(Error::OutcomeUnknown { .. }) if unknown < SESSIONS => unknown += 1,
                Err(e) => panic!("create: {e:?}"),
            }
        };
        ledger.lock().unwrap().sessions.insert(
            id,
            State::Live {
                acked: 0,
                attempted: 0,
            },
        );
        pool.push(id);
    }
    let probes = firsts
        .iter()
        .map(|first| {
            let id = *pool
                .iter()
                .find(|id| shard_of(firsts, store.slot(id)) == *first)
                .expect("a session on every shard");
            (*first, id, Shared::default())
        })
        .collect();
    Subject {
        name,
        store,
        strict,
        ledger,
        pool,
        probes,
        lost: Shared::default(),
    }
}

/// One round's figures for one store.
struct Figures {
    served_again: Duration,
    healthy_failed: usize,
    healthy_timed_out: usize,
    healthy_pause: Duration,
    rebuilds: u64,
    /// Reads per second the prober got on the victim's shard and on the
    /// healthy shards (per shard), from the victim's recovery to the end of
    /// the round's checks.
    reads_per_s: (f64, f64),
}

/// Successful reads per second on the victim's shard, and per healthy
/// shard, from `from` to `to`.
fn read_rates(subject: &Subject, victim_slot: u32, from: Instant, to: Instant) -> (f64, f64) {
    let secs = to.saturating_duration_since(from).as_secs_f64().max(1e-3);
    let (mut victim, mut healthy, mut healthy_shards) = (0, 0, 0);
    for (first, _, samples) in &subject.probes {
        let ok = samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.ok && s.at >= from && s.at <= to)
            .count();
        if *first == victim_slot {
            victim += ok;
        } else {
            healthy += ok;
            healthy_shards += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    (
        victim as f64 / secs,
        healthy as f64 / f64::from(healthy_shards) / secs,
    )
}

/// One failover's row: when the replica was promoted, whether the old
/// master was restarted at once, and each store's figures.
type Row = (Duration, bool, Vec<Figures>);

/// The next victim: the shards in turn after `last`, a master that has a
/// synced replica to promote.
fn pick_victim(cluster: &Cluster, firsts: &[u32], last: Option<u32>, round: usize) -> u32 {
    let start = last.map_or(0, |l| firsts.iter().position(|f| *f == l).unwrap() + 1);
    (0..firsts.len())
        .map(|i| firsts[(start + i) % firsts.len()])
        .filter(|s| Some(*s) != last)
        .find(|s| {
            cluster
                .master_of(*s)
                .is_some_and(|m| cluster.has_synced_replica(m))
        })
        .unwrap_or_else(|| panic!("round {round}: no master with a synced replica"))
}

/// Kills the master of `victim_slot`, waits until both stores serve its
/// shard again, checks every session, and measures the round.
async fn failover_round(
    cluster: &mut Cluster,
    subjects: &[Subject],
    victim_slot: u32,
    label_round: String,
) -> (String, Duration, Vec<Figures>) {
    let victim = cluster.master_of(victim_slot).unwrap();
    let rebuilds_before: Vec<u64> = subjects.iter().map(|s| s.store.stats().client_rebuilds).collect();
    let killed_at = Instant::now();
    cluster.nodes[victim].kill9();
    let probe_of = |s: &Subject| s.probes.iter().find(|p| p.0 == victim_slot).unwrap().1;
    let pollers = tokio::spawn({
        let (wait, asy) = (subjects[0].handle(), subjects[1].handle());
        let (p0, p1) = (probe_of(&subjects[0]), probe_of(&subjects[1]));
        async move {
            tokio::join!(
                served_again(wait, p0, killed_at),
                served_again(asy, p1, killed_at)
            )
        }
    });
    let promoted =
        tokio::task::block_in_place(|| cluster.wait_promoted(victim_slot, victim, Duration::from_secs(30)));
    let (r0, r1) = pollers.await.expect("pollers");
    let recovered = [r0, r1];
    // The healthy shards' figures cover the failover and half a second of
    // service after it.
    let window_end = Instant::now() + Duration::from_millis(500);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let label = format!(
        "{label_round}: killed the master of slot {victim_slot} (port {})",
        cluster.nodes[victim].port
    );
    let mut figures = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let (healthy_failed, healthy_timed_out, healthy_pause) =
            healthy_figures(s, victim_slot, killed_at, window_end);
        figures.push(Figures {
            served_again: recovered[i],
            healthy_failed,
            healthy_timed_out,
            healthy_pause,
            rebuilds: s.store.stats().client_rebuilds - rebuilds_before[i],
            reads_per_s: (0.0, 0.0),
        });
    }
    for s in subjects {
        check_all(s, &label).await;
    }
    let checked_at = Instant::now();
    for (i, s) in subjects.iter().enumerate() {
        figures[i].reads_per_s = read_rates(s, victim_slot, killed_at + recovered[i], checked_at);
    }
    let mut line = format!("{label}: promoted after {} ms", promoted.as_millis());
    for (s, f) in subjects.iter().zip(&figures) {
        let _ = write!(
            line,
            "; {}: shard served again after {} ms, healthy shards {} failed requests ({} timed out), longest pause {} ms, {} client rebuilds, reads/s after recovery {:.0} on the shard, {:.0} per healthy shard",
            s.name,
            f.served_again.as_millis(),
            f.healthy_failed,
            f.healthy_timed_out,
            f.healthy_pause.as_millis(),
            f.rebuilds,
            f.reads_per_s.0,
            f.reads_per_s.1
        );
    }
    (line, promoted, figures)
}

/// Updates acknowledged and failed, sessions created and deleted, per store.
type Totals = ((u64, u64), (u64, u64));

/// The run's summary per store, and the verdicts that fail the test: a
/// failed request on a healthy shard (each has a budget of
/// [`REQUEST_TIMEOUT`], far beyond a stall of the machine: a timeout there
/// is 10 s without an answer) or a client rebuild. The longest pause of a
/// healthy shard is reported, not judged: a busy machine can pause the
/// prober itself.
fn summarise(
    subjects: &[Subject],
    table: &[Row],
    totals: &[Totals],
    failovers: usize,
) -> (String, Vec<String>) {
    let mut summary = format!("{failovers} failovers (node timeout {NODE_TIMEOUT_MS} ms)\n");
    let promoted: Vec<u128> = table.iter().map(|(p, _, _)| p.as_millis()).collect();
    let _ = writeln!(summary, "replica promoted after: {}", spread(&promoted));
    let mut verdicts = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let served: Vec<u128> = table
            .iter()
            .map(|(_, _, f)| f[i].served_again.as_millis())
            .collect();
        let pauses: Vec<u128> = table
            .iter()
            .map(|(_, _, f)| f[i].healthy_pause.as_millis())
            .collect();
        let failed: usize = table.iter().map(|(_, _, f)| f[i].healthy_failed).sum();
        let timed_out: usize = table.iter().map(|(_, _, f)| f[i].healthy_timed_out).sum();
        let rounds_failed = table.iter().filter(|(_, _, f)| f[i].healthy_failed > 0).count();
        let wedges = table.iter().filter(|(_, _, f)| f[i].rebuilds > 0).count();
        let long_pauses = table
            .iter()
            .filter(|(_, _, f)| f[i].healthy_pause >= LONG_PAUSE)
            .count();
        // Reads on a shard whose old master stayed dead (no replica there).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rates, rounded
        let rates = |pick: fn(&(f64, f64)) -> f64| -> Vec<u128> {
            table
                .iter()
                .filter(|(_, restarted, _)| !restarted)
                .map(|(_, _, f)| pick(&f[i].reads_per_s).round() as u128)
                .collect()
        };
        let (alone, healthy) = (rates(|r| r.0), rates(|r| r.1));
        let ((updated, update_failed), (created, deleted)) = totals[i];
        let checked = s.ledger.lock().unwrap().sessions.len();
        let lost = s.lost.lock().unwrap();
        let _ = writeln!(
            summary,
            "{}: victim shard served again after {}; healthy shards: {failed} failed requests \
             ({timed_out} timed out; in {rounds_failed} of {failovers} failovers), longest pause per \
             failover {} ({long_pauses} of {LONG_PAUSE:?} or more); client rebuilds {wedges} of \
             {failovers} (total {}); {updated} updates acknowledged, {update_failed} failed; \
             {created} sessions created, {deleted} deleted (acknowledged); {checked} sessions checked \
             after every failover; acknowledged writes lost: {}; reads/s on a shard left without \
             replica {} (per healthy shard {})",
            s.name,
            spread(&served),
            spread(&pauses),
            s.store.stats().client_rebuilds,
            lost.len(),
            spread_plain(&alone),
            spread_plain(&healthy),
        );
        if wedges > 0 || failed > 0 {
            verdicts.push(format!(
                "{}: {wedges} client rebuilds, {failed} failed requests on healthy shards \
                 ({timed_out} of them without an answer within {REQUEST_TIMEOUT:?})",
                s.name
            ));
        }
        for l in lost.iter() {
            let _ = writeln!(summary, "  lost ({}): {l}", s.name);
        }
    }
    (summary, verdicts)
}

/// A count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_failover_soak_and_healthy_shards_keep_serving() {
    let failovers = env_count("SOAK_FAILOVERS", FAILOVERS_DEFAULT);
    let mut cluster = Cluster::start(NODE_TIMEOUT_MS);
    let firsts = cluster.first_slots();
    assert_eq!(firsts.len(), 3);
    let wait_config = RedisConfig::multi_node_cluster(cluster.urls())
        .key_prefix(support::unique_prefix("soak-wait"))
        .request_timeout(REQUEST_TIMEOUT);
    let async_config = RedisConfig::cluster(cluster.urls())
        .key_prefix(support::unique_prefix("soak-async"))
        .request_timeout(REQUEST_TIMEOUT);
    let subjects = [
        subject("wait", wait_config, true, &firsts).await,
        subject("async", async_config, false, &firsts).await,
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut probers = Vec::new();
    let updaters = env_count("SOAK_UPDATERS", 1);
    for s in &subjects {
        let updaters: Vec<_> = (0..updaters).map(|u| spawn_updater(s, &stop, u * 7)).collect();
        workers.push((updaters, spawn_churn(s, &stop)));
        probers.extend(spawn_probers(s, &stop));
    }

    let mut report = String::new();
    let mut table: Vec<Row> = Vec::new();
    let mut last_shard: Option<u32> = None;
    // A node left dead in the previous round, restarted after this one.
    let mut left_dead: Option<usize> = None;
    for round in 1..=failovers {
        let restart_now = round % 2 == 0;
        tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
        let victim_slot = pick_victim(&cluster, &firsts, last_shard, round);
        let victim = cluster.master_of(victim_slot).unwrap();
        let how = if restart_now {
            "restarted"
        } else {
            "left dead for a round"
        };
        let (line, promoted, figures) = failover_round(
            &mut cluster,
            &subjects,
            victim_slot,
            format!("round {round} ({how})"),
        )
        .await;
        println!("{line}");
        let _ = writeln!(report, "{line}");
        table.push((promoted, restart_now, figures));

        if let Some(dead) = left_dead.take() {
            cluster.nodes[dead].restart();
        }
        if restart_now {
            cluster.nodes[victim].restart();
        } else {
            left_dead = Some(victim);
        }
        last_shard = Some(victim_slot);
    }
    if let Some(dead) = left_dead.take() {
        cluster.nodes[dead].restart();
    }
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));

    stop.store(true, Ordering::Relaxed);
    let mut totals = Vec::new();
    for (updaters, churn) in workers {
        let mut updates = (0, 0);
        for u in updaters {
            let (ok, failed) = u.await.expect("updater");
            updates = (updates.0 + ok, updates.1 + failed);
        }
        totals.push((updates, churn.await.expect("churn")));
    }
    for p in probers {
        p.await.expect("prober");
    }
    for s in &subjects {
        check_all(s, "end").await;
    }
    let (summary, verdicts) = summarise(&subjects, &table, &totals, failovers);
    print!("{summary}");
    report.push_str(&summary);
    let _ = std::fs::write(support::target_dir().join("redis-failover-soak.txt"), report);
    // Healthy shards keep serving through every failover: not one request
    // there may fail, and the wedge detector must never have had to act.
    assert!(verdicts.is_empty(), "{}", verdicts.join("; "));
}

/// "median (min-max)" of plain numbers.
fn spread_plain(values: &[u128]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (v.first(), v.last()) {
        (Some(min), Some(max)) => format!("median {} ({min}-{max})", v[v.len() / 2]),
        _ => "none".to_owned(),
    }
}

/// "median ms (min-max)".
fn spread(values: &[u128]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (v.first(), v.last()) {
        (Some(min), Some(max)) => format!("median {} ms ({min}-{max} ms)", v[v.len() / 2]),
        _ => "none".to_owned(),
    }
}
