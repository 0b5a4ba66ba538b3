//! Fuzzes `rungs::ingest::rtmp::flv::parse_video_tag`: arbitrary RTMP video message bodies (FLV VIDEODATA).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::ingest::rtmp::flv::{FlvError, VideoTag, parse_video_tag};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    match parse_video_tag(body.clone()) {
        Ok(VideoTag::SequenceHeader(payload)) => {
            // Zero-copy: the record is the body after the 5-byte AVCVIDEOPACKET header.
            assert_eq!(payload, body.slice(5..));
        }
        Ok(VideoTag::Frame {
            composition_time_ms,
            data: payload,
            ..
        }) => {
            assert_eq!(payload, body.slice(5..));
            // CompositionTime is an SI24.
            assert!((-(1 << 23)..(1 << 23)).contains(&composition_time_ms));
        }
        Ok(VideoTag::EndOfSequence | VideoTag::Command) => {}
        // Checked in depth by the enhanced_tags target.
        Ok(VideoTag::Enhanced(_)) => assert_ne!(data[0] & 0x80, 0),
        Err(e) => check_error(&e, data.len()),
    }
});

fn check_error(e: &FlvError, len: usize) {
    if let FlvError::Truncated { need, have, .. } = e {
        assert!(need > have, "{e}");
        assert_eq!(*have, len, "{e}");
    }
    // Peer bytes (a FourCC) never reach a log line unescaped.
    let line = e.to_string();
    assert!(!line.chars().any(char::is_control), "{line:?}");
}
