//! Feeds arbitrary bytes to the log's record decoder: it must never panic,
//! and whatever it accepts must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::log_format::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Decoded::Record(record, len) = decode(data) {
        assert!(len <= data.len());
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(&again[..], &data[..len], "decode/encode round trip");
    }
});
