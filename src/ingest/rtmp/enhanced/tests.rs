//! Hand-built Enhanced RTMP v2 tags, laid out as the spec's pseudocode reads them.

use super::*;

fn video(b: &[u8]) -> Result<ExVideoTag, FlvError> {
    parse_video_tag(Bytes::copy_from_slice(b))
}

fn audio(b: &[u8]) -> Result<ExAudioTag, FlvError> {
    parse_audio_tag(Bytes::copy_from_slice(b))
}

fn tracks(tag: ExVideoTag) -> (bool, u32, Option<Multitrack>, Vec<VideoTrack>) {
    match tag {
        ExVideoTag::Tracks {
            keyframe,
            timestamp_offset_ns,
            multitrack,
            tracks,
        } => (keyframe, timestamp_offset_ns, multitrack, tracks),
        ExVideoTag::Command(c) => panic!("command {c}, tracks expected"),
    }
}

fn frames(data: &'static [u8], cts: i32) -> VideoPacket {
    VideoPacket::CodedFrames {
        composition_time_ms: cts,
        data: Bytes::from_static(data),
    }
}

#[test]
fn hevc_sequence_start_and_frames() {
    // Key | SequenceStart, 'hvc1', record.
    let (key, ns, mt, t) = tracks(video(b"\x90hvc1\x01\x02").expect("start"));
    assert!(key && ns == 0 && mt.is_none());
    assert_eq!(
        t,
        vec![VideoTrack {
            track_id: 0,
            fourcc: VideoFourCc::Hevc,
            packet: VideoPacket::SequenceStart(Bytes::from_static(b"\x01\x02")),
        }]
    );
    // Inter | CodedFrames: HEVC has an SI24 composition time (-40 here).
    let (key, _, _, t) = tracks(video(b"\xa1hvc1\xff\xff\xd8\0\0\0\x01\x26").expect("frames"));
    assert!(!key);
    assert_eq!(t[0].packet, frames(b"\0\0\0\x01\x26", -40));
    // CodedFramesX: no composition time.
    let (_, _, _, t) = tracks(video(b"\x93hvc1\0\0\0\x01").expect("frames x"));
    assert_eq!(t[0].packet, frames(b"\0\0\0\x01", 0));
}

#[test]
fn av1_frames_have_no_composition_time() {
    let (key, _, _, t) = tracks(video(b"\x91av01\x12\0\x0a").expect("av1"));
    assert!(key);
    assert_eq!(t[0].fourcc, VideoFourCc::Av1);
    assert_eq!(t[0].packet, frames(b"\x12\0\x0a", 0));
    let (_, _, _, t) = tracks(video(b"\x92vp09").expect("vp9 end"));
    assert_eq!(
        (t[0].fourcc, &t[0].packet),
        (VideoFourCc::Vp9, &VideoPacket::SequenceEnd)
    );
    let (_, _, _, t) = tracks(video(b"\x90abcd").expect("unknown fourcc parses"));
    assert_eq!(t[0].fourcc, VideoFourCc::Other(*b"abcd"));
}

#[test]
fn command_metadata_and_mpeg2ts_start() {
    assert_eq!(video(b"\xd1\x01").ok(), Some(ExVideoTag::Command(1)));
    // Metadata with FrameType Command is still metadata (the spec's exception).
    let (_, _, _, t) = tracks(video(b"\xd4hvc1\x02\x00\x09colorInfo").expect("metadata"));
    assert_eq!(
        t[0].packet,
        VideoPacket::Metadata(Bytes::from_static(b"\x02\x00\x09colorInfo"))
    );
    let (_, _, _, t) = tracks(video(b"\x95av01\x80").expect("ts start"));
    assert_eq!(
        t[0].packet,
        VideoPacket::Mpeg2TsSequenceStart(Bytes::from_static(b"\x80"))
    );
}

#[test]
fn mod_ex_timestamp_offset_nano() {
    // ModEx, modExDataSize-1 = 2 (3 bytes: 999999 ns), ModExType 0 | CodedFrames, 'hvc1'.
    let (_, ns, _, t) = tracks(video(b"\x97\x02\x0f\x42\x3f\x01hvc1\0\0\0\xaa").expect("modex"));
    assert_eq!(ns, 999_999);
    assert_eq!(t[0].packet, frames(b"\xaa", 0));
    // A reserved ModExType (1) is skipped by its size; chained ModEx works.
    let (_, ns, _, _) = tracks(video(b"\x97\x00\xee\x17\x02\x00\x00\x07\x03av01").expect("chain"));
    assert_eq!(ns, 7);
    // 256-byte data: UI8 255 then UI16 size - 1.
    let mut long = vec![0x97, 0xff, 0x01, 0x00];
    long.extend(std::iter::repeat_n(0, 257));
    long.extend(b"\x03av01");
    let (_, ns, _, _) = tracks(video(&long).expect("long modex"));
    assert_eq!(ns, 0);
    // TimestampOffsetNano with fewer than 3 bytes: names the size field's offset.
    match video(b"\x97\x00\x05\x01hvc1") {
        Err(FlvError::Invalid { offset: 1, why, .. }) => assert!(why.contains("ModEx"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn multitrack_one_track() {
    // Multitrack, OneTrack | CodedFramesX, 'hvc1', track id 2, body.
    let (_, _, mt, t) = tracks(video(b"\x96\x03hvc1\x02\xab\xcd").expect("one track"));
    assert_eq!(mt, Some(Multitrack::OneTrack));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].track_id, 2);
    assert_eq!(t[0].packet, frames(b"\xab\xcd", 0));
}

#[test]
fn multitrack_many_tracks_same_and_many_codecs() {
    // ManyTracks | CodedFrames, 'avc1'; track 0 (size 4: cts 0 + 1 byte), track 1 (size 5).
    let (key, _, mt, t) = tracks(
        video(b"\x96\x11avc1\x00\x00\x00\x04\0\0\0\xa0\x01\x00\x00\x05\0\0\x28\xb0\xb1")
            .expect("many tracks"),
    );
    assert!(key);
    assert_eq!(mt, Some(Multitrack::ManyTracks));
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].track_id, &t[0].packet), (0, &frames(b"\xa0", 0)));
    assert_eq!((t[1].track_id, &t[1].packet), (1, &frames(b"\xb0\xb1", 40)));
    // ManyTracksManyCodecs | SequenceStart: each track names its FourCC.
    let (_, _, mt, t) = tracks(
        video(b"\x96\x20hvc1\x00\x00\x00\x01\xaaav01\x01\x00\x00\x02\xbb\xcc")
            .expect("many codecs"),
    );
    assert_eq!(mt, Some(Multitrack::ManyTracksManyCodecs));
    assert_eq!(
        t.iter().map(|t| (t.track_id, t.fourcc)).collect::<Vec<_>>(),
        vec![(0, VideoFourCc::Hevc), (1, VideoFourCc::Av1)]
    );
    assert_eq!(
        t[1].packet,
        VideoPacket::SequenceStart(Bytes::from_static(b"\xbb\xcc"))
    );
}

#[test]
fn truncated_names_what_is_needed() {
    assert!(matches!(
        video(b""),
        Err(FlvError::Truncated {
            need: 1,
            have: 0,
            ..
        })
    ));
    assert!(matches!(
        video(b"\x90hv"),
        Err(FlvError::Truncated {
            need: 5,
            have: 3,
            ..
        })
    ));
    assert!(matches!(
        video(b"\xd1"),
        Err(FlvError::Truncated { need: 2, .. })
    ));
    // CodedFrames for HEVC without its composition time.
    assert!(matches!(
        video(b"\x91hvc1\0\0"),
        Err(FlvError::Truncated {
            need: 8,
            have: 7,
            ..
        })
    ));
    // ModEx data longer than the body.
    assert!(matches!(
        video(b"\x97\x05\0"),
        Err(FlvError::Truncated { need: 8, .. })
    ));
    // A track whose UI24 size runs past the body.
    assert!(matches!(
        video(b"\x96\x11avc1\x00\x00\x00\x09\0"),
        Err(FlvError::Truncated {
            need: 19,
            have: 11,
            ..
        })
    ));
    // A complete track (by its UI24 size) too short for its composition time is invalid,
    // not truncated: more bytes would not help.
    match video(b"\x96\x11hvc1\x00\x00\x00\x01\xaa\x01\x00\x00\x03\0\0\0") {
        Err(FlvError::Invalid {
            offset: 10, why, ..
        }) => assert!(why.contains("track 0"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Second track's header cut.
    assert!(matches!(
        video(b"\x96\x13avc1\x00\x00\x00\x01\xaa\x01\x00"),
        Err(FlvError::Truncated { .. })
    ));
}

#[test]
fn invalid_names_field_and_offset() {
    let why = |r: Result<ExVideoTag, FlvError>, at: usize| match r {
        Err(FlvError::Invalid { offset, why, .. }) if offset == at => why,
        other => panic!("Invalid at {at} expected, got {other:?}"),
    };
    assert!(why(video(b"\x81hvc1"), 0).contains("VideoFrameType 0"));
    assert!(why(video(b"\x98hvc1"), 0).contains("VideoPacketType 8"));
    assert!(why(video(b"\x96\x31hvc1\x00"), 1).contains("AvMultitrackType 3"));
    assert!(why(video(b"\x96\x06hvc1\x00"), 1).contains("inside a Multitrack"));
    assert!(why(video(b"\x11\0\0\0\0"), 0).contains("IsExHeader"));
}

#[test]
fn audio_ex_header() {
    // SequenceStart 'mp4a' with an AudioSpecificConfig.
    let a = audio(b"\x90mp4a\x12\x10").expect("aac start");
    assert_eq!(
        a.tracks,
        vec![AudioTrack {
            track_id: 0,
            fourcc: *b"mp4a",
            packet: AudioPacket::SequenceStart(Bytes::from_static(b"\x12\x10")),
        }]
    );
    let a = audio(b"\x91Opus\xfc\xff").expect("opus frame");
    assert_eq!(
        a.tracks[0].packet,
        AudioPacket::CodedFrames(Bytes::from_static(b"\xfc\xff"))
    );
    let a = audio(b"\x94Opus\x01\x02\x00\x01").expect("multichannel");
    assert_eq!(
        a.tracks[0].packet,
        AudioPacket::MultichannelConfig {
            order: 1,
            channels: 2
        }
    );
    // ModEx, then Multitrack ManyTracks | CodedFrames, 'mp4a', two tracks.
    let a = audio(b"\x97\x02\0\0\x05\x05\x11mp4a\x00\x00\x00\x01\xaa\x01\x00\x00\x01\xbb")
        .expect("multitrack audio");
    assert_eq!(a.timestamp_offset_ns, 5);
    assert_eq!(a.multitrack, Some(Multitrack::ManyTracks));
    assert_eq!(a.tracks.len(), 2);
    assert!(matches!(
        audio(b"\x94Opus\x01"),
        Err(FlvError::Truncated { need: 7, .. })
    ));
    assert!(matches!(
        audio(b"\x93Opus"),
        Err(FlvError::Invalid { offset: 0, .. })
    ));
    assert!(matches!(
        audio(b"\xaf\x01"),
        Err(FlvError::Invalid { offset: 0, .. })
    ));
}
