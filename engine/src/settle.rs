//! Durability settling: a write applied in memory and appended to its
//! shard's log is acknowledged, with `Durability::Always`, only once its log
//! is durable up to the write's position. The blocking API waits in place
//! (`Core::settle`); the async one awaits a `Settle` future that never
//! blocks its thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::core::Core;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::persist::{AsyncWaiter, GroupCommit};

/// A change that, in `Always` mode, is acknowledged only once the log of
/// `shard` is durable up to `position`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) shard: usize,
    pub(crate) position: u64,
}

/// Errors a write call answers from what it found in memory, which may be
/// another caller's change not durable yet (see `Core::found`): a session
/// absent or present, or holding the most topics it may (counting a
/// subscribe a crash could still lose).
///
/// Out of line, as the error paths that call it: inlined there, its
/// comparison of a bound's name changed how the compiler laid out the
/// calls' success paths.
#[inline(never)]
fn found_in_memory(e: &Error) -> bool {
    match e {
        Error::NotFound | Error::AlreadyExists => true,
        Error::LimitExceeded { what, .. } => *what == crate::per_session::SESSION_FULL_OF_TOPICS,
        _ => false,
    }
}

/// A failed sync leaves the change applied in memory and in the log but of
/// unknown durability; later writes are refused. (By value: it is a
/// `map_err` argument.)
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn outcome_unknown(e: Error) -> Error {
    Error::OutcomeUnknown {
        reason: format!("the change is applied but its sync failed: {e}"),
    }
}

impl Core {
    /// Blocks until `pending` is durable (group commit, `persist/commit.rs`).
    #[inline]
    pub(crate) fn settle(&self, pending: Option<Pending>) -> Result<()> {
        let Some(p) = pending else { return Ok(()) };
        self.commits[p.shard]
            .wait_durable(p.position)
            .map_err(outcome_unknown)
    }

    /// A write call's error, once what an answer found in memory depends
    /// on is durable ([`found`](Self::found)): `NotFound`,
    /// `AlreadyExists` and a session's full count of topics after that
    /// wait, `OutcomeUnknown` if it fails; any other error as it is. Out of line: the calls' success paths stay as
    /// they were.
    #[cold]
    #[inline(never)]
    pub(crate) fn found_error(&self, id: &SessionId, e: Error) -> Error {
        if found_in_memory(&e) {
            if let Err(unknown) = self.settle(self.found(id)) {
                return unknown;
            }
        }
        e
    }

    /// [`settle_later`](Self::settle_later) for a write call on `id`
    /// that may answer from what it found in memory: its error waits as
    /// [`found_error`](Self::found_error)'s does, in the future.
    #[inline]
    pub(crate) fn settle_found_later<T>(
        &self,
        id: &SessionId,
        outcome: Result<(T, Option<Pending>)>,
    ) -> Settle<T> {
        match outcome {
            Err(e) => self.found_error_later(id, e),
            ok => self.settle_later(ok),
        }
    }

    /// `settle_found_later`'s error path, out of line (as `found_error`).
    #[cold]
    #[inline(never)]
    fn found_error_later<T>(&self, id: &SessionId, e: Error) -> Settle<T> {
        match self.found(id).filter(|_| found_in_memory(&e)) {
            Some(p) => Settle::outcome_after(Err(e), Arc::clone(&self.commits[p.shard]), p.position),
            None => Settle::ready(Err(e)),
        }
    }

    /// Turns a write's outcome into a future that completes once the write
    /// is durable (at once unless the durability is `Always`), without
    /// blocking the thread that polls it.
    pub(crate) fn settle_later<T>(&self, outcome: Result<(T, Option<Pending>)>) -> Settle<T> {
        match outcome {
            Err(e) => Settle::ready(Err(e)),
            Ok((value, None)) => Settle::ready(Ok(value)),
            Ok((value, Some(p))) => Settle::after(value, Arc::clone(&self.commits[p.shard]), p.position),
        }
    }
}

/// A write's outcome, delivered once the write is durable: at once unless the
/// engine's durability is `Always`, else when a flush covers the write's log
/// position (see `GroupCommit::poll_durable`).
pub(crate) struct Settle<T> {
    outcome: Option<Result<T>>,
    wait: Option<Wait>,
}

struct Wait {
    commit: Arc<GroupCommit>,
    position: u64,
    waiter: Option<Arc<AsyncWaiter>>,
}

impl<T> Settle<T> {
    pub(crate) fn ready(outcome: Result<T>) -> Self {
        Self {
            outcome: Some(outcome),
            wait: None,
        }
    }

    fn after(value: T, commit: Arc<GroupCommit>, position: u64) -> Self {
        Self::outcome_after(Ok(value), commit, position)
    }

    fn outcome_after(outcome: Result<T>, commit: Arc<GroupCommit>, position: u64) -> Self {
        Self {
            outcome: Some(outcome),
            wait: Some(Wait {
                commit,
                position,
                waiter: None,
            }),
        }
    }
}

// The outcome is never pinned (it is moved out whole when ready), so the
// future may move whatever `T` is.
impl<T> Unpin for Settle<T> {}

impl<T> Future for Settle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            match wait.commit.poll_durable(wait.position, &mut wait.waiter, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => this.wait = None,
                Poll::Ready(Err(e)) => {
                    this.wait = None;
                    this.outcome = None;
                    return Poll::Ready(Err(outcome_unknown(e)));
                }
            }
        }
        Poll::Ready(this.outcome.take().expect("Settle polled after it completed"))
    }
}
