//! Every bound of the crate, with its reason.

/// Fresh ids drawn for one `create` before it
/// gives up. Two random 128-bit ids collide with odds of about 2^-64 among
/// 2^32 live sessions, so a second draw already means a bug or a broken
/// random source; a few more cost nothing and keep the loop bounded.
pub(crate) const ID_TRIES_MAX: usize = 8;
