//! Enhanced RTMP v2 video tags through a session: FourCC codecs, ModEx offsets, multitrack
//! tracks and the codecs refused by name.

use super::*;

#[test]
fn enhanced_rtmp_hevc_with_nano_offset() {
    use crate::media::hevc::tests::{X265_MAIN_320X180, hex};
    let mut pair = Pair::publishing("k");
    // Key | SequenceStart, 'hvc1', hvcC.
    let mut start = b"\x90hvc1".to_vec();
    start.extend_from_slice(&hex(X265_MAIN_320X180));
    let events = pair.video(Bytes::from(start), 0);
    let [SessionEvent::Media(IngestEvent::VideoConfig(v))] = &events[..] else {
        panic!("expected VideoConfig, got {events:?}");
    };
    assert_eq!((v.width, v.height), (320, 180));
    assert_eq!(v.codec_string(), "hvc1.1.6.L60.90");
    // ModEx TimestampOffsetNano 500000 ns (45 ticks) | CodedFrames, 'hvc1', cts 40 ms, one
    // IDR_W_RADL NAL.
    let frame = b"\x97\x02\x07\xa1\x20\x01hvc1\x00\x00\x28\0\0\0\x02\x26\x01";
    let events = pair.video(Bytes::from_static(frame), 10);
    let p = packet(&events);
    assert!(p.keyframe);
    assert_eq!((p.dts, p.pts), (10 * 90 + 45, 50 * 90 + 45));
    assert_eq!(&p.data[..], b"\0\0\0\x02\x26\x01");
    // AV1 frames after an HEVC configuration end the session.
    let bytes = pair_video_bytes(&mut pair, b"\x91av01\x12\x00", 20);
    let err = pair.server.feed(&bytes).expect_err("mismatch");
    assert!(matches!(err, RtmpError::Sample { .. }), "{err}");
}

#[test]
fn enhanced_rtmp_other_codecs_are_refused_by_name() {
    let mut pair = Pair::publishing("k");
    let bytes = pair_video_bytes(&mut pair, b"\x90vp09\x01", 0);
    let err = pair.server.feed(&bytes).expect_err("vp9");
    assert!(err.unsupported_codec().expect("named").contains("'vp09'"));

    let mut pair = Pair::publishing("k");
    let r = pair
        .client
        .publish_audio_data(
            Bytes::from_static(b"\x90Opus\x01"),
            RtmpTimestamp::new(0),
            false,
        )
        .expect("client");
    let ClientSessionResult::OutboundResponse(p) = r else {
        panic!("packet expected");
    };
    let err = pair.server.feed(&p.bytes).expect_err("opus");
    assert!(err.unsupported_codec().expect("named").contains("'Opus'"));
}

/// One track of a multitrack video tag as FFmpeg 9's FLV muxer writes a further track
/// (OneTrack, FourCC `avc1`): `packet` 0 sequence start, 3 coded frames without a
/// composition time.
fn one_track_tag(track: u8, packet: u8, keyframe: bool, body: &[u8]) -> Bytes {
    let frame = if keyframe { 0x10 } else { 0x20 };
    let mut v = vec![0x80 | frame | 6, packet];
    v.extend_from_slice(b"avc1");
    v.push(track);
    v.extend_from_slice(body);
    Bytes::from(v)
}

#[test]
fn multitrack_video_gives_each_further_track_its_own_events() {
    let mut pair = Pair::publishing("k");
    pair.video(avc_sequence_header(AVCC_720P), 0);
    let events = pair.video(one_track_tag(1, 0, true, AVCC_720P), 0);
    let [
        SessionEvent::Media(IngestEvent::Track {
            id: 1,
            event: VideoEvent::Config(p),
        }),
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!((p.width, p.height), (1280, 720));
    let events = pair.video(one_track_tag(1, 3, true, &[0, 0, 0, 2, 0x65, 0x88]), 33);
    let [
        SessionEvent::Media(IngestEvent::Track {
            id: 1,
            event: VideoEvent::Packet(pkt),
        }),
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert!(pkt.keyframe);
    assert_eq!((pkt.dts, pkt.pts), (33 * 90, 33 * 90));
    // Track 0 stays the legacy events, and a track's frames before its configuration are
    // counted, not passed on.
    let events = pair.video(avc_frame(true, 0, &[&[0x65, 0x88]]), 66);
    assert!(matches!(
        events.as_slice(),
        [SessionEvent::Media(IngestEvent::Packet(_))]
    ));
    assert!(
        pair.video(one_track_tag(2, 3, true, &[0, 0, 0, 2, 0x65, 0x88]), 66)
            .is_empty()
    );

    // A ninth track is refused by name.
    let mut pair = Pair::publishing("k");
    for id in 0..8 {
        pair.video(one_track_tag(id, 0, true, AVCC_720P), 0);
    }
    let bytes = pair_video_bytes(&mut pair, b"\x96\x00avc1\x08\x01", 0);
    let err = pair.server.feed(&bytes).expect_err("ninth track");
    assert!(
        err.unsupported_codec()
            .expect("named")
            .contains("more than 8 tracks")
    );
}

/// The client's bytes for one video message, not yet fed to the server.
fn pair_video_bytes(pair: &mut Pair, body: &'static [u8], ts: u32) -> Vec<u8> {
    let r = pair
        .client
        .publish_video_data(Bytes::from_static(body), RtmpTimestamp::new(ts), false)
        .expect("client");
    let ClientSessionResult::OutboundResponse(p) = r else {
        panic!("packet expected");
    };
    p.bytes
}
