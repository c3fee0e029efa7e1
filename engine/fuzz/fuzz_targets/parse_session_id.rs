//! Feeds arbitrary text to the session id parser (ids arrive in cookies and
//! URLs): it must never panic, and an id it accepts must print back to the
//! same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_engine::SessionId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<SessionId>() {
        assert_eq!(id.to_string(), text, "parse/print round trip");
    }
});
