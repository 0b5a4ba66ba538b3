//! Fuzzes `rungs::ingest::rtmp::flv::parse_audio_tag`: arbitrary RTMP audio message bodies (FLV AUDIODATA).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::ingest::rtmp::flv::{AudioTag, FlvError, parse_audio_tag};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    match parse_audio_tag(body.clone()) {
        // Zero-copy: the payload is the body after SoundFormat/flags and AACPacketType.
        Ok(AudioTag::SequenceHeader(payload) | AudioTag::Frame(payload)) => {
            assert_eq!(payload, body.slice(2..));
        }
        // Checked in depth by the enhanced_tags target.
        Ok(AudioTag::Enhanced(_)) => assert_eq!(data[0] >> 4, 9),
        Err(e) => {
            if let FlvError::Truncated { need, have, .. } = &e {
                assert!(need > have, "{e}");
                assert_eq!(*have, data.len(), "{e}");
            }
            // Peer bytes (a FourCC) never reach a log line unescaped.
            let line = e.to_string();
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
});
