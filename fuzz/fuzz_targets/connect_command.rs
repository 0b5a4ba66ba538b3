//! Fuzzes `rungs::ingest::rtmp::connect::parse_connect`: the input is the AMF0 body of a
//! `connect` command message, as the guard hands it over.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::ingest::rtmp::connect::{ConnectError, parse_connect};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_connect(data) {
        if let ConnectError::Malformed { offset, .. } = &e {
            assert!(*offset <= data.len(), "{e}");
        }
        // Property names and FourCC keys are the peer's: escaped in the message.
        let line = e.to_string();
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
});
