//! Feeds arbitrary bytes, read as a server's reply (RESP2 or RESP3), to
//! every decoder of the Redis backend: the session, flag, commit, replica
//! count, update read, `SCAN`, `CLUSTER SLOTS` and `INFO` decoders. None
//! may panic, and each must keep its promise on what it accepts (a session
//! has the id asked for, a flag is 0 or 1, a topology has one master per
//! slot: see `session_redis::fuzz`).
//!
//! ```text
//! cargo +nightly fuzz run --fuzz-dir redis-backend/fuzz decode_reply
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = session_redis::fuzz::decode_bytes(data);
});
