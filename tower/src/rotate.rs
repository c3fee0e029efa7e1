//! [`cycle_id`]: tower-sessions' id rotation through the engine's `rotate`.
//!
//! `Session::cycle_id` cannot reach a store's rotate by itself. It gives the
//! record a fresh random id, forgets the session's id, calls
//! `store.delete(old)` at once, and leaves the rest to the next save: the
//! middleware's save at the end of the request sees no id and calls
//! `store.create(record)`. The store is told "delete `old`" and, later and
//! separately, "create this record under a new id"; nothing links the two
//! calls, and the delete alone is also what `Session::delete` and
//! `Session::flush` (logout) send, which must delete. So a store can only
//! delete at the first call and insert at the second.
//!
//! [`cycle_id`] links them: it runs `Session::cycle_id` and then
//! `Session::save` inside one task-local scope that names the old id. In
//! that scope [`TowerStore`](crate::TowerStore)'s `delete(old)` rotates
//! instead (the old id is gone and the new one holds the data, in one
//! step), and the `create` that follows takes the rotated id instead of
//! inserting. Outside the scope both calls do what they always do.

use std::cell::RefCell;

use session_engine::SessionId;
use tower_sessions_core::session::{Error, Session};

use crate::id::to_session_id;

tokio::task_local! {
    static ROTATION: RefCell<Rotation>;
}

/// Where one [`cycle_id`] call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotation {
    /// `delete(old)` has not come yet.
    Pending { old: SessionId },
    /// A store's `delete(old)` claimed the rotation and is rotating (a
    /// `CachingSessionStore` sends the delete to its cache and its backend
    /// at once: the other one deletes).
    Claimed,
    /// The store rotated `old` to `new`; `create` has not come yet.
    Rotated { new: SessionId },
    /// `create` took the new id, or there was nothing to rotate.
    Done,
}

/// Changes the session's id the way `Session::cycle_id` does (call it after
/// a login, against session fixation), but through the store's atomic
/// rotate when the session's store is a [`TowerStore`](crate::TowerStore):
/// the old id stops working and the new one holds the data in one step, and
/// the session is saved under its new id before this returns (the
/// middleware saves it once more at the end of the request, as after any
/// change). One exception, which this crate's `save` (an upsert, as
/// tower-sessions' `MemoryStore`'s) allows: a concurrent request on the
/// old id that loaded it before the rotation and saves afterwards (with
/// `with_always_save`, or after a change) stores it again under the old
/// id.
///
/// With any other store it is `Session::cycle_id` followed by
/// `Session::save`.
///
/// # Errors
/// What `Session::cycle_id` or `Session::save` return: the store's error.
pub async fn cycle_id(session: &Session) -> Result<(), Error> {
    let Some(old) = session.id() else {
        // No stored session: nothing to move, just a new id at save.
        return session.cycle_id().await;
    };
    let rotation = RefCell::new(Rotation::Pending {
        old: to_session_id(old),
    });
    ROTATION
        .scope(rotation, async {
            session.cycle_id().await?;
            // Nothing was stored under the old id (an id naming no session,
            // or one expired) and the session holds nothing: the
            // middleware stores nothing then and drops the cookie, as
            // after `Session::cycle_id` alone. A save here would store an
            // empty session under a new id for any such request.
            if !rotated_copy_waits() && session.is_empty().await {
                return Ok(());
            }
            session.save().await
        })
        .await
}

/// True if the store rotated the session and its `create` has not taken
/// the new id yet (the save must come, or the copy waits unknown).
fn rotated_copy_waits() -> bool {
    ROTATION
        .try_with(|r| matches!(*r.borrow(), Rotation::Rotated { .. }))
        .unwrap_or(false)
}

/// True if a [`cycle_id`] in this task is waiting for `delete(id)`, and
/// claims it: the store then rotates `id` instead of deleting it and
/// reports the new id to [`rotated`] (`None`: the session was gone, there
/// was nothing to rotate). Claimed once: a second store's `delete(id)` in
/// the same call (a `CachingSessionStore`'s) deletes, and its `create`
/// then stores the record under the id the first one rotated to.
pub(crate) fn claims_delete(id: SessionId) -> bool {
    ROTATION
        .try_with(|r| {
            let mut r = r.borrow_mut();
            let claimed = *r == Rotation::Pending { old: id };
            if claimed {
                *r = Rotation::Claimed;
            }
            claimed
        })
        .unwrap_or(false)
}

/// Records the outcome of the rotation [`claims_delete`] claimed.
pub(crate) fn rotated(new: Option<SessionId>) {
    let _ = ROTATION.try_with(|r| {
        let mut r = r.borrow_mut();
        debug_assert!(
            matches!(*r, Rotation::Claimed),
            "a rotation reported that was not claimed: {r:?}"
        );
        *r = new.map_or(Rotation::Done, |new| Rotation::Rotated { new });
    });
}

/// The id a `create` in this task must take instead of inserting a fresh
/// one: the session was already rotated to it. Taken once.
pub(crate) fn take_rotated() -> Option<SessionId> {
    ROTATION
        .try_with(|r| {
            let mut r = r.borrow_mut();
            match *r {
                Rotation::Rotated { new } => {
                    *r = Rotation::Done;
                    Some(new)
                }
                _ => None,
            }
        })
        .ok()
        .flatten()
}
