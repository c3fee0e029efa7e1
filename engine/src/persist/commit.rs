//! Group commit: the writers of one shard's log share its syncs.
//!
//! A write is durable once its shard's log is synced past the write's end
//! position (bytes appended since open). In `Always` mode the writer waits
//! for that in `wait_durable` (a thread) or `poll_durable` (an async task):
//!
//! 1. The first waiter without a sync in progress becomes the leader: it
//!    takes the log's unsynced ranges (under the log's writer mutex,
//!    briefly) and syncs them (`msync(MS_SYNC)`) with no lock held.
//! 2. The leader then wakes exactly the waiters its sync covered, and hands
//!    leadership to the oldest waiter it did not cover, which starts the
//!    next sync at once. Nobody is woken to find its record still unsynced,
//!    and waiters never queue on a mutex to be released one by one (with 64
//!    writers on two cores those wake-ups, not the device, were the
//!    bottleneck).
//! 3. An async writer waits in the same queue with a task waker instead of a
//!    parked thread; it cannot lead a sync (that would block its executor),
//!    so when none is under way it asks the engine's flusher thread for one,
//!    and a leader that leaves async writers uncovered with nobody to hand
//!    over to asks the same.
//!
//! Each shard's log has its own group commit, so the leaders of different
//! shards sync at the same time. The syncs async writers wait for run on
//! the engine's flusher threads in rounds shared by every log
//! (`background.rs`): in a round, up to `limits::FLUSHER_THREADS_MAX`
//! threads sync their share of the logs at the same time (the kernel
//! merges device flushes that arrive while one is under way), and writes
//! that arrive meanwhile wait for the next round together. Before a round
//! the flusher gathers the async writers the last one woke
//! (`FlushRequests::gather`, at most that round's length). A thread that
//! syncs several logs in a row (the `Interval` flush, a flusher's share)
//! first starts every log's writeback (`ShardLog::hint_writeback`) so that
//! each sync finds its pages on their way. Under `SyncScope::FileSystem`
//! a round of several logs (and the `Interval` flush) makes one `syncfs`
//! of their file system instead of a sync of each (`flush_all`), on one
//! flusher thread; a failed `syncfs` fails every later sync of every log
//! on that file system (`FileSystem`), since the kernel reports its error
//! once, and to no log's own sync.
//!
//! A failed sync leaves the page cache in an unknown state (fsyncgate): the
//! log refuses every later write (`Error::WritesRefused`), and the writers
//! whose records it held get `Error::OutcomeUnknown` from the caller.
//!
//! Lock order: the log's writer mutex is never held while the commit's mutex
//! is, and no thread waits holding either.

use std::fs::File;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::appender::{ShardLog, Unsynced};
use crate::error::{Error, Result};

/// One log's group commit.
pub(crate) struct GroupCommit {
    log: Arc<ShardLog>,
    state: Mutex<State>,
    /// The engine's flusher thread (`Always` mode), which runs the syncs
    /// async writers wait for.
    flusher: OnceLock<Arc<FlushRequests>>,
    /// The file system a round of several logs' syncs syncs whole in
    /// place of each log's own (`SyncScope::FileSystem`), or none.
    file_system: Option<Arc<FileSystem>>,
    /// This log's successful syncs made by a `syncfs` (`Stats`).
    file_system_syncs: AtomicU64,
}

/// A file system the logs are on, opened for `syncfs`
/// (`SyncScope::FileSystem`): one per file system, shared by its logs.
pub(crate) struct FileSystem {
    /// A directory on it, opened when the engine opened: `syncfs` reports
    /// through it the writeback errors met on the file system, whichever
    /// file's (Linux 5.17 and later, the journal's and the device flush's
    /// included; the file system's older errors were taken at open).
    dir: File,
    device: u64,
    /// Why a `syncfs` failed: the kernel reports a writeback error to this
    /// directory once, and the pages it concerns may be any log's, in that
    /// round or not, so every later sync of every log on this file system
    /// fails too (each refuses writes from then on).
    failed: OnceLock<String>,
    /// Test hook: every `syncfs` fails (`Engine::debug_fail_file_system_syncs`).
    fail_syncs: AtomicBool,
}

/// `statfs`' type of ext4 (and of ext2 and ext3, which the ext4 driver
/// runs): its `syncfs` ends with a flush of the device's write cache,
/// journal or not.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;

impl FileSystem {
    /// The file system `dir` is on, if it is one whose `syncfs` makes what
    /// was written back durable (ext4; `InvalidConfig` naming the type
    /// otherwise). Its older writeback errors are taken by a first `syncfs`
    /// now, at open before recovery: they are no later round's. One met
    /// while recovery writes (a rewrite of the layout) is reported by
    /// recovery's own syncs, and by the first round's `syncfs` too, which
    /// then refuses writes: the safe side.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let context = |e: io::Error| super::directory::io(format!("opening {} for syncfs", dir.display()))(e);
        let file = File::open(dir).map_err(context)?;
        let device = rustix::fs::fstat(&file).map_err(|e| context(e.into()))?.st_dev;
        let kind = rustix::fs::fstatfs(&file).map_err(|e| context(e.into()))?.f_type;
        #[allow(clippy::cast_sign_loss, clippy::unnecessary_cast)]
        let kind = kind as u64;
        if kind != EXT4_SUPER_MAGIC {
            return Err(Error::InvalidConfig(format!(
                "sync_scope = FileSystem: {} is on a file system of type {kind:#x}, not ext4; a syncfs of \
                 another file system may leave what it wrote in the device's write cache (XFS, for one, \
                 flushes it only when its log has work); leave sync_scope unset",
                dir.display()
            )));
        }
        let _ = rustix::fs::syncfs(&file);
        Ok(Self {
            dir: file,
            device,
            failed: OnceLock::new(),
            fail_syncs: AtomicBool::new(false),
        })
    }

    /// Its device number: two directories with the same one are on the
    /// same file system.
    pub(crate) fn device(&self) -> u64 {
        self.device
    }

    /// Writes back every dirty page of every file on it, commits its
    /// journal and flushes the device (`syncfs`); the logs' appends are
    /// among them. Once one has failed, every later one fails with it.
    fn sync(&self) -> io::Result<()> {
        if let Some(reason) = self.failed.get() {
            return Err(io::Error::other(reason.clone()));
        }
        let synced = if self.fail_syncs.load(Ordering::Relaxed) {
            Err(io::Error::other(
                "injected syncfs failure (debug_fail_file_system_syncs)",
            ))
        } else {
            rustix::fs::syncfs(&self.dir).map_err(io::Error::from)
        };
        if let Err(e) = &synced {
            let _ = self
                .failed
                .set(format!("an earlier syncfs of this file system failed: {e}"));
        }
        synced
    }

    /// The first `syncfs` failure, if any.
    fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Makes every later `syncfs` fail (tests of the failure path).
    pub(crate) fn fail_syncs(&self) {
        self.fail_syncs.store(true, Ordering::Relaxed);
    }
}

struct State {
    /// The log's position synced so far.
    durable: u64,
    /// Why the last sync failed (async writers read it).
    failure: Option<String>,
    /// A leader is syncing (or has been handed the next sync).
    flushing: bool,
    /// Threads waiting for a sync to cover their position, oldest first.
    waiters: Vec<Arc<Waiter>>,
    /// Async writers waiting likewise.
    async_waiters: Vec<Arc<AsyncWaiter>>,
    /// Successful syncs since open.
    syncs: u64,
}

/// One writer parked in `wait_durable`.
struct Waiter {
    position: u64,
    thread: Thread,
    /// `WAITING` until the leader sets one of the others (then unparks).
    state: AtomicU8,
}

const WAITING: u8 = 0;
/// A sync covered the position.
const DONE: u8 = 1;
/// The waiter now leads the next sync (`flushing` stays set for it).
const LEAD: u8 = 2;
/// The sync failed: look again (and meet the refusal).
const RETRY: u8 = 3;

impl Waiter {
    fn wake(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.thread.unpark();
    }

    /// Parks until a leader decides; tolerates spurious unparks.
    fn wait(&self) -> u8 {
        loop {
            match self.state.load(Ordering::Acquire) {
                WAITING => thread::park(),
                decided => return decided,
            }
        }
    }
}

/// One async writer waiting in `poll_durable`: woken through its task's
/// waker instead of a parked thread.
pub(crate) struct AsyncWaiter {
    position: u64,
    waker: Mutex<Waker>,
    /// `WAITING` until a leader sets `DONE` or `RETRY` (then wakes it).
    state: AtomicU8,
}

impl AsyncWaiter {
    /// Sets the decision and wakes the task. A waker that panics (its
    /// executor's bug) is caught here: unwound, it ended the thread that
    /// ran the sync (the flusher, which every later async write waits for)
    /// and left the waiters after this one unwoken. Its own task was told
    /// as far as the engine can tell it: the decision is set.
    fn wake(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        let waker = self.waker.lock();
        // The panic hook has reported it.
        let _ = catch_unwind(AssertUnwindSafe(|| waker.wake_by_ref()));
    }
}

/// Wakes the engine's flusher thread (`Always` mode). Async writers cannot
/// run a sync themselves (it would block their executor's thread), so when
/// one waits and no sync is under way, it asks this thread for one.
///
/// It also counts the async writers that rounds wake and that start
/// waiting, so that the flusher can gather a round's writers before it
/// starts the next (`gather`).
#[derive(Default)]
pub(crate) struct FlushRequests {
    state: Mutex<FlushState>,
    wake: Condvar,
}

#[derive(Default)]
struct FlushState {
    requested: bool,
    stopped: bool,
    /// Async writers woken by syncs since the flusher last gathered: how
    /// many it waits to see waiting again.
    woken: u64,
    /// Async writers that started waiting since the flusher last gathered.
    arrived: u64,
    /// While the flusher gathers: the arrivals it waits for (0: none).
    want: u64,
}

impl FlushRequests {
    pub(crate) fn request(&self) {
        let mut state = self.state.lock();
        if !state.requested {
            state.requested = true;
            self.wake.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }

    /// An async writer started waiting for a sync (`poll_durable`).
    fn arrived(&self) {
        let mut state = self.state.lock();
        state.arrived += 1;
        if state.want > 0 && state.arrived >= state.want {
            state.want = 0;
            self.wake.notify_one();
        }
    }

    /// A sync woke `n` async writers (their writes are durable).
    fn woke(&self, n: u64) {
        self.state.lock().woken += n;
    }

    /// Holds the next round back until as many async writers wait as the
    /// syncs since the last call woke, or `max` has passed, or a stop.
    /// Writers a round woke mostly write again at once, but need their
    /// executor's time to get there: a round started without them covers
    /// only the few that came meanwhile, and they wait for the round
    /// after. With a lone writer (one woken) it does not wait at all.
    /// Returns at once if `max` is zero or enough already wait.
    pub(crate) fn gather(&self, max: Duration) {
        let mut state = self.state.lock();
        let want = std::mem::take(&mut state.woken);
        if want > 1 && state.arrived < want && !max.is_zero() {
            state.want = want;
            let deadline = Instant::now() + max;
            while state.want > 0 && !state.stopped {
                if self.wake.wait_until(&mut state, deadline).timed_out() {
                    break;
                }
            }
            state.want = 0;
        }
        state.arrived = 0;
    }

    /// Blocks until a request (true) or a stop (false).
    pub(crate) fn next(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                return false;
            }
            if std::mem::take(&mut state.requested) {
                return true;
            }
            self.wake.wait(&mut state);
        }
    }
}

impl GroupCommit {
    /// The group commit of `log`; with a `file_system`, rounds that sync
    /// several logs sync it whole instead (`flush_all`).
    pub(crate) fn new(log: Arc<ShardLog>, file_system: Option<Arc<FileSystem>>) -> Self {
        Self {
            file_system,
            file_system_syncs: AtomicU64::new(0),
            log,
            state: Mutex::new(State {
                durable: 0,
                failure: None,
                flushing: false,
                waiters: Vec::new(),
                async_waiters: Vec::new(),
                syncs: 0,
            }),
            flusher: OnceLock::new(),
        }
    }

    /// The log this commit syncs.
    pub(crate) fn log(&self) -> &ShardLog {
        &self.log
    }

    /// Blocks until the log is durable up to `position`.
    pub(crate) fn wait_durable(&self, position: u64) -> Result<()> {
        loop {
            let mut state = self.state.lock();
            if state.durable >= position {
                return Ok(());
            }
            if state.flushing {
                let waiter = Arc::new(Waiter {
                    position,
                    thread: thread::current(),
                    state: AtomicU8::new(WAITING),
                });
                state.waiters.push(Arc::clone(&waiter));
                drop(state);
                match waiter.wait() {
                    DONE => return Ok(()),
                    LEAD => return self.lead(),
                    _ => continue,
                }
            }
            state.flushing = true;
            drop(state);
            return self.lead();
        }
    }

    /// Syncs everything appended so far unless a sync is already running
    /// (the `Interval` thread's entry point, and `close`'s).
    pub(crate) fn flush(&self) -> Result<()> {
        if !self.try_lead() {
            return Ok(());
        }
        self.lead()
    }

    /// Becomes the leader of the next sync unless a sync is running
    /// (then false): sets `flushing`, which the caller's `finish` clears
    /// or hands on.
    fn try_lead(&self) -> bool {
        let mut state = self.state.lock();
        !std::mem::replace(&mut state.flushing, true)
    }

    /// Syncs everything appended so far; a sync under way is waited for
    /// (its failure is this call's) and what it did not cover synced after.
    pub(crate) fn flush_waiting(&self) -> Result<()> {
        // No sync covers `u64::MAX`: this waiter is handed the lead, after
        // the sync under way, unless that sync fails (then it meets the
        // failure when it looks again).
        self.wait_durable(u64::MAX)
    }

    /// Runs one sync as the leader (`flushing` is set for the caller), then
    /// wakes the waiters it covered and hands the next sync to the oldest
    /// one it did not. Everything appended before the call is covered on
    /// success.
    fn lead(&self) -> Result<()> {
        let synced = self.unwound(|| {
            // A failed `syncfs` may have concerned this log's pages: its own
            // sync would not hear of it again.
            if let Some(reason) = self.file_system.as_deref().and_then(FileSystem::failure) {
                return Err(self
                    .log
                    .file_system_sync_failed(&io::Error::other(reason.to_owned())));
            }
            let unsynced = self.log.take_unsynced()?;
            let upto = self.log.sync(&unsynced)?;
            Ok((upto, !unsynced.is_empty()))
        });
        self.finish(synced)
    }

    /// Runs a leader's step. A panic in it (a bug, or a `tracing`
    /// subscriber's in a failure path) would leave `flushing` set and every
    /// waiter of this log waiting forever: it fails the sync instead, like
    /// an I/O error (the log refuses writes from then on).
    fn unwound<T>(&self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        catch_unwind(AssertUnwindSafe(step))
            .unwrap_or_else(|panic| Err(self.log.refuse_after_panic(panic_message(panic.as_ref()))))
    }

    /// Ends a leader's sync (`synced`: the position it made durable and
    /// whether it synced anything, or its failure): wakes the waiters it
    /// covered and hands the next sync to the oldest one it did not.
    fn finish(&self, synced: Result<(u64, bool)>) -> Result<()> {
        let mut state = self.state.lock();
        let waiters = std::mem::take(&mut state.waiters);
        let async_waiters = std::mem::take(&mut state.async_waiters);
        let mut wake = Vec::with_capacity(waiters.len());
        let mut wake_async = Vec::with_capacity(async_waiters.len());
        let mut next_leader = None;
        match &synced {
            Ok((upto, synced_some)) => {
                // Counted when it synced something (records, or a
                // compaction's `SEAL`): a step with nothing to sync (an
                // `Interval` flush of an idle log, a close) synced nothing.
                if *synced_some {
                    state.syncs += 1;
                }
                state.durable = state.durable.max(*upto);
                let durable = state.durable;
                for w in waiters {
                    if w.position <= durable {
                        wake.push((w, DONE));
                    } else if next_leader.is_none() {
                        next_leader = Some(w);
                    } else {
                        state.waiters.push(w);
                    }
                }
                for w in async_waiters {
                    if w.position <= durable {
                        wake_async.push((w, DONE));
                    } else {
                        state.async_waiters.push(w);
                    }
                }
            }
            // Everyone looks again and meets the refusal themselves.
            Err(e) => {
                state.failure = Some(e.to_string());
                wake.extend(waiters.into_iter().map(|w| (w, RETRY)));
                wake_async.extend(async_waiters.into_iter().map(|w| (w, RETRY)));
            }
        }
        // `flushing` stays set when leadership passes on; async writers left
        // uncovered with no thread to lead for them get the flusher thread.
        state.flushing = next_leader.is_some();
        let ask_flusher = next_leader.is_none() && !state.async_waiters.is_empty();
        drop(state);
        if let Some(w) = next_leader {
            w.wake(LEAD);
        }
        for (w, to) in wake {
            w.wake(to);
        }
        let woken_async = wake_async.len();
        for (w, to) in wake_async {
            w.wake(to);
        }
        if let (Some(flusher), 1..) = (self.flusher.get(), woken_async) {
            flusher.woke(woken_async as u64);
        }
        if ask_flusher {
            self.request_flush();
        }
        synced.map(|_| ())
    }

    /// Connects the commit to the engine's flusher thread (`Always` mode).
    pub(crate) fn set_flusher(&self, flusher: Arc<FlushRequests>) {
        let _ = self.flusher.set(flusher);
    }

    fn request_flush(&self) {
        if let Some(flusher) = self.flusher.get() {
            flusher.request();
        }
    }

    /// True if async writers wait for a sync (the flusher thread's test).
    pub(crate) fn has_async_waiters(&self) -> bool {
        !self.state.lock().async_waiters.is_empty()
    }

    /// The async counterpart of `wait_durable`: ready once the log is
    /// durable up to `position`; until then `waiter` holds this writer's
    /// place in the queue and the task's waker. Never blocks on I/O: a sync
    /// is run by a leader already under way, or by the flusher thread.
    pub(crate) fn poll_durable(
        &self,
        position: u64,
        waiter: &mut Option<Arc<AsyncWaiter>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        if let Some(w) = waiter {
            match w.state.load(Ordering::Acquire) {
                DONE => return Poll::Ready(Ok(())),
                WAITING => {
                    let mut waker = w.waker.lock();
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                    drop(waker);
                    // A leader that decided before the new waker was stored
                    // woke the old one: look again.
                    match w.state.load(Ordering::Acquire) {
                        WAITING => return Poll::Pending,
                        DONE => return Poll::Ready(Ok(())),
                        _ => {}
                    }
                }
                _ => {}
            }
            // `RETRY`: the sync failed; register afresh to meet the failure.
            *waiter = None;
        }
        let mut state = self.state.lock();
        if state.durable >= position {
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = &state.failure {
            return Poll::Ready(Err(Error::WritesRefused {
                reason: reason.clone(),
            }));
        }
        let w = Arc::new(AsyncWaiter {
            position,
            waker: Mutex::new(cx.waker().clone()),
            state: AtomicU8::new(WAITING),
        });
        state.async_waiters.push(Arc::clone(&w));
        let ask_flusher = !state.flushing;
        drop(state);
        *waiter = Some(w);
        if let Some(flusher) = self.flusher.get() {
            flusher.arrived();
        }
        if ask_flusher {
            self.request_flush();
        }
        Poll::Pending
    }

    /// The log position every sync so far has made durable.
    pub(crate) fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Successful syncs since open.
    pub(crate) fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Of those, the ones a `syncfs` of the log's file system made.
    pub(crate) fn file_system_syncs(&self) -> u64 {
        self.file_system_syncs.load(Ordering::Relaxed)
    }

    /// The file system a round syncs for this log, if any (`SyncScope::FileSystem`).
    pub(crate) fn file_system(&self) -> Option<&FileSystem> {
        self.file_system.as_deref()
    }
}

/// The text of a panic's payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Syncs several logs in a row (the `Interval` flush, `close`, the flusher
/// thread): starts every log's writeback first, so that each sync finds its
/// pages on their way. The first error, after trying every log.
///
/// Logs given a file system (`SyncScope::FileSystem`) are synced with one
/// `syncfs` of it instead, when there are several of them
/// ([`flush_file_systems`]).
pub(crate) fn flush_all<'a>(commits: impl Iterator<Item = &'a GroupCommit> + Clone) -> Result<()> {
    if commits
        .clone()
        .filter(|c| c.file_system.is_some())
        .nth(1)
        .is_some()
    {
        let own = flush_each(
            commits.clone().filter(|c| c.file_system.is_none()),
            GroupCommit::flush,
        );
        let whole = flush_file_systems(commits.filter(|c| c.file_system.is_some()));
        return own.and(whole);
    }
    flush_each(commits, GroupCommit::flush)
}

/// Syncs the logs `commits` with one `syncfs` of each file system they are
/// on (`SyncScope::FileSystem`; each has one), instead of a sync of each
/// log: one writeback and device flush for them all. A log whose sync
/// is under way is left to its leader, as in [`GroupCommit::flush`]. Each
/// log's leader step runs as in `lead`: its unsynced ranges are taken (and
/// their pages released), then the file system is synced, then its waiters
/// are told; a failed `syncfs` fails the round's logs now and every other
/// log on that file system at its next sync (each refuses writes from then
/// on: what reached the disk is unknown). The first error, after every log
/// is told.
fn flush_file_systems<'a>(commits: impl Iterator<Item = &'a GroupCommit>) -> Result<()> {
    let led: Vec<(&GroupCommit, &Arc<FileSystem>, Result<Unsynced>)> = commits
        .filter_map(|c| Some((c, c.file_system.as_ref()?)))
        .filter(|(c, _)| c.try_lead())
        .map(|(c, fs)| {
            let taken = c.unwound(|| {
                let unsynced = c.log.take_unsynced()?;
                c.log.prepare_file_system_sync(&unsynced)?;
                Ok(unsynced)
            });
            (c, fs, taken)
        })
        .collect();
    // One sync per file system that a log with unsynced bytes is on.
    let mut synced: Vec<(&Arc<FileSystem>, io::Result<()>)> = Vec::new();
    for (_, fs, taken) in &led {
        let behind = taken.as_ref().is_ok_and(|unsynced| !unsynced.is_empty());
        if behind && !synced.iter().any(|(done, _)| Arc::ptr_eq(done, fs)) {
            let result = catch_unwind(AssertUnwindSafe(|| fs.sync()))
                .unwrap_or_else(|_| Err(io::Error::other("syncfs panicked")));
            synced.push((fs, result));
        }
    }
    let mut first_error = None;
    for (c, fs, taken) in led {
        let outcome = taken.and_then(|unsynced| {
            if unsynced.is_empty() {
                // Nothing since its last sync: durable as it is.
                return Ok((unsynced.upto(), false));
            }
            let (_, result) = synced
                .iter()
                .find(|(done, _)| Arc::ptr_eq(done, fs))
                .expect("synced above: its log has unsynced bytes");
            match result {
                Ok(()) => Ok((unsynced.upto(), true)),
                Err(e) => c.unwound(|| Err(c.log.file_system_sync_failed(e))),
            }
        });
        let by_file_system = matches!(outcome, Ok((_, true)));
        if let Err(e) = c.finish(outcome) {
            first_error.get_or_insert(e);
        }
        // After `finish` counted it in `syncs`, and read before them
        // (`Core::stats`): never seen above them.
        if by_file_system {
            c.file_system_syncs.fetch_add(1, Ordering::Relaxed);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `flush_all`, waiting on each log for a sync under way and then syncing
/// what it did not cover (`GroupCommit::flush_waiting`): `close`'s flush.
pub(crate) fn flush_all_waiting<'a>(commits: impl Iterator<Item = &'a GroupCommit> + Clone) -> Result<()> {
    flush_each(commits, GroupCommit::flush_waiting)
}

fn flush_each<'a>(
    commits: impl Iterator<Item = &'a GroupCommit> + Clone,
    flush: impl Fn(&GroupCommit) -> Result<()>,
) -> Result<()> {
    for commit in commits.clone() {
        commit.log().hint_writeback();
    }
    let mut first_error = None;
    for commit in commits {
        if let Err(e) = flush(commit) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flusher waits for as many writers as the last round woke, and
    /// no longer: it goes on once they are back, at `max` without them,
    /// at once after a lone writer, and on a stop.
    #[test]
    fn gather_waits_for_the_writers_a_round_woke() {
        // Far longer than any of these waits should take: a call that
        // waited for it instead of returning is caught.
        let long = Duration::from_secs(60);
        let returns_at_once = |requests: &FlushRequests| {
            let started = Instant::now();
            requests.gather(long);
            assert!(started.elapsed() < long / 2, "it waited for its max");
        };
        let requests = Arc::new(FlushRequests::default());
        // They come back while it waits: it returns before its max.
        requests.woke(3);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(5));
                    requests.arrived();
                }
            });
            returns_at_once(&requests);
        });
        // None come back: it waits `max`, then goes on.
        requests.woke(2);
        let started = Instant::now();
        requests.gather(Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(20), "it did not wait");
        // The woken count was taken: the next gather does not wait, nor
        // after a lone writer, nor when enough already wait.
        returns_at_once(&requests);
        requests.woke(1);
        returns_at_once(&requests);
        requests.woke(2);
        requests.arrived();
        requests.arrived();
        returns_at_once(&requests);
        // A stop ends a wait.
        requests.woke(5);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                requests.stop();
            });
            returns_at_once(&requests);
        });
    }
}
