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
use crate::persist::{AsyncWaiter, GroupCommit};

/// A change that, in `Always` mode, is acknowledged only once the log of
/// `shard` is durable up to `position`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) shard: usize,
    pub(crate) position: u64,
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
        Self {
            outcome: Some(Ok(value)),
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
