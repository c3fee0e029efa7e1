//! Every bound of the crate, with its reason.

/// Fresh ids drawn for one `create` whose record's own id is taken, before
/// it gives up. Two random 128-bit ids collide with odds of about 2^-64 among
/// 2^32 live sessions, so a second draw already means a bug or a broken
/// random source; a few more cost nothing and keep the loop bounded.
pub(crate) const ID_TRIES_MAX: usize = 8;

/// Arrays and maps nested in a stored record, the record's map counted:
/// what `rmp-serde` 1.3 reads (its depth counter starts at 1024 and fails
/// on reaching 0), so that every record it could read, ours reads, and no
/// deeper: each level is one stack frame of the decoder, as it was one (or
/// more) of rmp-serde's.
pub(crate) const NESTING_DEPTH_MAX: usize = 1023;

/// Items (array elements, entries of the record's map) a decode reserves
/// room for at once before reading them: a record's own lengths are not
/// trusted further (they may claim 2^32 items), and genuine arrays this long
/// are rare; a longer one grows as it is read. 4,096 items are 128 KiB of
/// `serde_json::Value`s.
pub(crate) const RESERVED_ITEMS_MAX: usize = 4096;

/// The largest encode buffer a thread keeps for its next save (see
/// `record::Encoded`): a record of the default 64 KiB metadata limit fits,
/// so the common case allocates nothing; a thread holds at most this much
/// once a save has ended on it.
pub(crate) const ENCODE_BUFFER_KEPT_BYTES_MAX: usize = 64 * 1024;
