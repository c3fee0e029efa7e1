//! Every bound of the crate, with its reason.

/// Fresh ids drawn for one `create` whose record's own id is taken, before
/// it gives up. Two random 128-bit ids collide with odds of about 2^-64 among
/// 2^32 live sessions, so a second draw already means a bug or a broken
/// random source; a few more cost nothing and keep the loop bounded.
pub(crate) const ID_TRIES_MAX: usize = 8;

/// Arrays and maps nested in a stored record, the record's map counted:
/// serde_json's own recursion limit when it parses text (128), so any
/// session value that came in as JSON fits. The decoder and the encoder
/// recurse once per level, and a record is decoded on every load on a
/// tokio worker's thread (2 MiB of stack): at this depth an unoptimised
/// build decodes in under 384 KiB of it (`msgpack.rs`'s tests run both
/// directions on a 2 MiB thread), where 1,023 levels (rmp-serde's bound,
/// this crate's before) overflowed it and aborted the process, whether the
/// record was hostile or the application's own.
///
/// Records are written only by this crate's encoder (`record::encode`,
/// `save` and `create`; a `cycle_id` moves the bytes as they are), which
/// refuses a deeper map with `Error::Encode`, so every record written reads
/// back. A record nested deeper (written by hand, or by a build of this
/// crate from before the bound was lowered) is refused with
/// `Error::Decode`, not read.
pub(crate) const NESTING_DEPTH_MAX: usize = 128;

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
