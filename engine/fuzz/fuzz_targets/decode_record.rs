//! Feeds arbitrary bytes to the log's record decoder (the first 8 bytes are
//! the salt): it must never panic, and whatever it accepts must encode back
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::log_format::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let salt = u64::from_le_bytes(data[..8].try_into().unwrap());
    let data = &data[8..];
    match decode(data, salt) {
        Decoded::Record(record, len) => {
            assert!(len <= data.len());
            let mut again = Vec::new();
            record.encode(salt, &mut again);
            assert_eq!(&again[..], &data[..len], "decode/encode round trip");
        }
        Decoded::Bad { extent: Some(len), .. } => assert!(len <= data.len()),
        _ => {}
    }
});
