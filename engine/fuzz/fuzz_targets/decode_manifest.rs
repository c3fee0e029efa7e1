//! Feeds arbitrary bytes to the MANIFEST decoder: it must never panic, and a
//! manifest it accepts must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::log_format::manifest_round_trip;

fuzz_target!(|data: &[u8]| {
    if let Some(again) = manifest_round_trip(data) {
        assert_eq!(&again[..], data, "decode/encode round trip");
    }
});
