//! Fuzzes `rungs::media::h264::count_length_prefixed_nals`: the check on every AVC frame payload a publisher sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::media::MediaError;
use rungs::media::h264::count_length_prefixed_nals;

fuzz_target!(|input: &[u8]| {
    // First byte: the NAL length size the sequence header announced (any value, so invalid
    // ones are exercised too); the rest: the frame payload.
    let Some((&size, data)) = input.split_first() else {
        return;
    };
    match count_length_prefixed_nals(data, size) {
        Ok(n) => {
            assert!(matches!(size, 1 | 2 | 4));
            // Each NAL unit takes its prefix and at least one byte.
            assert!(
                n * (usize::from(size) + 1) <= data.len(),
                "{n} NALs in {} bytes",
                data.len()
            );
            assert_eq!(n == 0, data.is_empty());
        }
        Err(MediaError::Truncated { need, have, .. }) => {
            assert!(need > have);
            assert_eq!(have, data.len());
        }
        Err(MediaError::Invalid { .. }) => {}
    }
});
