//! Fuzzes `rungs::ingest::rtmp::enhanced::{parse_video_tag, parse_audio_tag}`: the input is one
//! tag body, parsed once as video with IsExHeader forced on byte 0 and once as audio with
//! SoundFormat forced to ExHeader (9), so that no input is spent on legacy tags.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::ingest::rtmp::enhanced::{
    AudioPacket, ExVideoTag, VideoPacket, parse_audio_tag, parse_video_tag,
};
use rungs::ingest::rtmp::flv::FlvError;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut video = vec![first | 0x80];
    video.extend_from_slice(rest);
    let body = Bytes::from(video);
    match parse_video_tag(body.clone()) {
        Ok(ExVideoTag::Command(_)) => {}
        Ok(ExVideoTag::Tracks {
            tracks, multitrack, ..
        }) => {
            assert!(multitrack.is_some() || tracks.len() == 1);
            for t in tracks {
                match t.packet {
                    VideoPacket::SequenceStart(b)
                    | VideoPacket::Metadata(b)
                    | VideoPacket::Mpeg2TsSequenceStart(b)
                    | VideoPacket::CodedFrames { data: b, .. } => inside(&b, &body),
                    VideoPacket::SequenceEnd => {}
                }
            }
        }
        Err(e) => check_error(&e, body.len()),
    }
    let mut audio = vec![(first & 0x0f) | 0x90];
    audio.extend_from_slice(rest);
    let body = Bytes::from(audio);
    match parse_audio_tag(body.clone()) {
        Ok(tag) => {
            assert!(tag.multitrack.is_some() || tag.tracks.len() == 1);
            for t in tag.tracks {
                match t.packet {
                    AudioPacket::SequenceStart(b) | AudioPacket::CodedFrames(b) => {
                        inside(&b, &body)
                    }
                    AudioPacket::SequenceEnd | AudioPacket::MultichannelConfig { .. } => {}
                }
            }
        }
        Err(e) => check_error(&e, body.len()),
    }
});

/// Zero-copy: every payload is a slice of the message.
fn inside(payload: &Bytes, body: &Bytes) {
    let start = body.as_ptr() as usize;
    let p = payload.as_ptr() as usize;
    assert!(payload.is_empty() || (p >= start && p + payload.len() <= start + body.len()));
}

fn check_error(e: &FlvError, len: usize) {
    if let FlvError::Truncated { need, have, .. } = e {
        assert!(need > have, "{e}");
        assert_eq!(*have, len, "{e}");
    }
    if let FlvError::Invalid { offset, .. } = e {
        assert!(*offset < len, "{e}");
    }
    let line = e.to_string();
    assert!(!line.chars().any(char::is_control), "{line:?}");
}
