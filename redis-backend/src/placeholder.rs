//! TEMPORARY: stand-ins for `session_engine::{Op, Updated}` (issue 18),
//! which the engine side defines on `main`. This module goes when that is
//! merged into this branch; nothing outside the branch may depend on it.

use session_engine::Session;

/// What `try_update`'s closure decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Leave the session as it is (counts as activity).
    Keep,
    /// Replace the metadata.
    Replace(Vec<u8>),
    /// Delete the session.
    Delete,
}

/// What `try_update` did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Updated {
    /// Kept: the session as the closure saw it.
    Kept(Session),
    /// Replaced: the new session.
    Replaced(Session),
    /// Deleted: the session as the closure saw it.
    Deleted(Session),
}
