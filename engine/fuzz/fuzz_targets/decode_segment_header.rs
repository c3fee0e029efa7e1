//! Feeds arbitrary bytes to the segment header decoder: it must never panic,
//! and a header it accepts must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::log_format::segment_header_round_trip;

fuzz_target!(|data: &[u8]| {
    if let Some(again) = segment_header_round_trip(data) {
        assert_eq!(&again[..], &data[..again.len()], "decode/encode round trip");
    }
});
