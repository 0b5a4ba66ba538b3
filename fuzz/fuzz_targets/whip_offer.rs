//! Fuzzes the body of a WHIP POST: `rungs::ingest::whip::check_offer` (the codec check), then,
//! for offers it accepts, str0m's SDP parser and offer/answer through `negotiate`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::ingest::whip::{OfferError, check_offer, negotiate};
use std::net::SocketAddr;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    // The HTTP handler refuses bodies that are not UTF-8 before either parser sees them.
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    match check_offer(sdp) {
        Ok(_) => {
            let host: SocketAddr = ([127, 0, 0, 1], 8189).into();
            if let Ok((_, answer)) = negotiate(sdp, &[host], Instant::now()) {
                // An answer always carries our candidate and one H.264 mapping.
                assert!(answer.contains("127.0.0.1 8189 typ host"), "{answer}");
                assert!(answer.contains("H264/90000"), "{answer}");
            }
        }
        Err(OfferError::Malformed(why)) => {
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
        Err(_) => {}
    }
});
