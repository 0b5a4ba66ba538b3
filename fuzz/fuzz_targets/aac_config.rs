//! Fuzzes `rungs::media::aac::parse_audio_specific_config` (AudioSpecificConfig from an FLV AAC sequence header).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::media::MediaError;
use rungs::media::aac::parse_audio_specific_config;

fuzz_target!(|data: &[u8]| {
    let asc = Bytes::copy_from_slice(data);
    match parse_audio_specific_config(asc.clone()) {
        Ok(p) => {
            assert_eq!(p.asc, asc, "the ASC is carried verbatim");
            assert!(p.object_type != 0, "{p:?}");
            assert!(p.sample_rate > 0, "{p:?}");
            assert!(p.channels > 0, "{p:?}");
            assert!(
                matches!(p.samples_per_frame, 480 | 512 | 960 | 1024),
                "{p:?}"
            );
            let _ = p.codec_string();
        }
        Err(e) => {
            if let MediaError::Truncated { need, have, .. } = &e {
                assert!(need > have, "{e}");
            }
            let _ = e.to_string();
        }
    }
});
