//! Feeds arbitrary bytes to the stored record's decoder (`session_tower::fuzz`):
//! it may refuse them but never panic, and a record it accepts must survive
//! being written and read again. The bytes after the 9-byte header are also
//! read as a map by rmp-serde: the hand-written decoder must accept exactly
//! what rmp-serde accepts, with the same values (records written before it
//! replaced rmp-serde stay readable), but for maps nested deeper than its
//! bound (128 levels; rmp-serde reads 1,023), which it refuses.
//!
//! ```text
//! cargo +nightly fuzz run --fuzz-dir tower/fuzz decode_record
//! ```
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = session_tower::fuzz::decode_record(data);
    let map = data.get(9..).unwrap_or_default();
    let theirs = rmp_serde::from_slice::<HashMap<String, serde_json::Value>>(map).ok();
    let ours = session_tower::fuzz::decode_map(map);
    match (&ours, &theirs) {
        (None, Some(theirs)) if session_tower::fuzz::nested_past_the_bound(theirs) => {}
        _ => assert_eq!(ours, theirs),
    }
});
