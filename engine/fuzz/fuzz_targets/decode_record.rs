//! Feeds arbitrary bytes to the log's record decoder (the first 16 bytes are
//! the salts; a first byte of zero reads them as format 2's one salt): it
//! must never panic, and whatever it accepts must encode back to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::log_format::{decode, Decoded, LogSalt};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let header = u64::from_le_bytes(data[..8].try_into().unwrap());
    let payload = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let salt = if data[0] == 0 {
        LogSalt::format_2(header)
    } else {
        LogSalt::new(header, payload)
    };
    let data = &data[16..];
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
