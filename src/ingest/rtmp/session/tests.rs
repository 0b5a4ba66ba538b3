//! The session against rml_rtmp's own publisher (`ClientSession`), in memory, and against
//! garbage.

use super::*;
use crate::ingest::rtmp::connect::{SERVER_CAPS_EX, caps_ex};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;

/// AVCDecoderConfigurationRecord written by FFmpeg 5.1.9 + libx264 for 1280x720 (see
/// media/h264.rs tests for the command).
const AVCC_720P: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50,
    0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83,
    0x19, 0x60, 0x01, 0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
];
/// AudioSpecificConfig written by FFmpeg 5.1.9's aac encoder, 44.1 kHz stereo.
const ASC_44K_STEREO: &[u8] = &[0x12, 0x10, 0x56, 0xe5, 0x00];

fn avc_sequence_header(record: &[u8]) -> Bytes {
    let mut v = vec![0x17, 0, 0, 0, 0];
    v.extend_from_slice(record);
    Bytes::from(v)
}

fn avc_frame(keyframe: bool, cts_ms: i32, nals: &[&[u8]]) -> Bytes {
    let cts = (cts_ms as u32).to_be_bytes();
    let mut v = vec![
        if keyframe { 0x17 } else { 0x27 },
        1,
        cts[1],
        cts[2],
        cts[3],
    ];
    for nal in nals {
        v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        v.extend_from_slice(nal);
    }
    Bytes::from(v)
}

fn aac_tag(packet_type: u8, data: &[u8]) -> Bytes {
    let mut v = vec![0xaf, packet_type];
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// A server `PublishSession` wired to an rml_rtmp `ClientSession` publisher.
struct Pair {
    server: PublishSession,
    client: ClientSession,
    client_events: Vec<ClientSessionEvent>,
}

impl Pair {
    /// Handshake and session set-up, up to (not including) connect.
    fn new() -> (Pair, Vec<SessionEvent>) {
        let mut server = PublishSession::new();
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
        let s0s1s2 = only_sends(server.feed(&c0c1).expect("server takes c0c1"));
        let HandshakeProcessResult::Completed {
            response_bytes: c2,
            remaining_bytes,
        } = handshake
            .process_bytes(&s0s1s2)
            .expect("client takes s0s1s2")
        else {
            panic!("client handshake should complete on s0s1s2");
        };
        assert!(remaining_bytes.is_empty());
        let (client, client_init) = ClientSession::new(ClientSessionConfig::new()).expect("client");
        let mut pair = Pair {
            server,
            client,
            client_events: Vec::new(),
        };
        let mut events = pair.feed_server(&c2);
        events.extend(pair.client_output(client_init));
        (pair, events)
    }

    /// Connected and publishing `key`, accepted by the caller's decision.
    fn publishing(key: &str) -> Pair {
        let (mut pair, events) = Pair::new();
        assert!(events.is_empty(), "{events:?}");
        let connect = pair.client.request_connection(APP.into()).expect("connect");
        assert!(pair.client_output(vec![connect]).is_empty());
        assert!(
            pair.client_events
                .contains(&ClientSessionEvent::ConnectionRequestAccepted)
        );
        let publish = pair
            .client
            .request_publishing(key.into(), PublishRequestType::Live)
            .expect("publish");
        let events = pair.client_output(vec![publish]);
        let [SessionEvent::PublishRequested { app, stream_key }] = &events[..] else {
            panic!("expected one PublishRequested, got {events:?}");
        };
        assert_eq!((app.as_str(), stream_key.as_str()), (APP, key));
        let accepted = pair.server.accept_publish().expect("accept");
        assert!(pair.deliver(accepted).is_empty());
        assert!(
            pair.client_events
                .contains(&ClientSessionEvent::PublishRequestAccepted)
        );
        pair
    }

    /// Feeds the server, hands its output to the client, and its replies back, until quiet.
    /// Returns the server's non-`Send` events.
    fn feed_server(&mut self, bytes: &[u8]) -> Vec<SessionEvent> {
        let events = self
            .server
            .feed(bytes)
            .expect("server accepts client bytes");
        self.deliver(events)
    }

    fn deliver(&mut self, events: Vec<SessionEvent>) -> Vec<SessionEvent> {
        let mut out = Vec::new();
        for e in events {
            match e {
                SessionEvent::Send(bytes) => {
                    let results = self.client.handle_input(&bytes).expect("client accepts");
                    out.extend(self.client_output(results));
                }
                other => out.push(other),
            }
        }
        out
    }

    fn client_output(&mut self, results: Vec<ClientSessionResult>) -> Vec<SessionEvent> {
        let mut out = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend(self.feed_server(&p.bytes)),
                ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        out
    }

    fn video(&mut self, body: Bytes, ts: u32) -> Vec<SessionEvent> {
        let r = self
            .client
            .publish_video_data(body, RtmpTimestamp::new(ts), false)
            .expect("client publishes video");
        self.client_output(vec![r])
    }

    fn audio(&mut self, body: Bytes, ts: u32) -> Vec<SessionEvent> {
        let r = self
            .client
            .publish_audio_data(body, RtmpTimestamp::new(ts), false)
            .expect("client publishes audio");
        self.client_output(vec![r])
    }
}

fn only_sends(events: Vec<SessionEvent>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        match e {
            SessionEvent::Send(b) => out.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn packet(events: &[SessionEvent]) -> &Packet {
    match events {
        [SessionEvent::Media(IngestEvent::Packet(p))] => p,
        other => panic!("expected one packet, got {other:?}"),
    }
}

#[test]
fn publish_with_avc_and_aac() {
    let mut pair = Pair::publishing("secret-key");

    let mut metadata = StreamMetadata::new();
    metadata.video_width = Some(1280);
    metadata.encoder = Some("test".into());
    let r = pair.client.publish_metadata(&metadata).expect("metadata");
    assert!(
        pair.client_output(vec![r]).is_empty(),
        "metadata is advisory"
    );

    // Media before its sequence header is dropped and counted.
    assert!(pair.video(avc_frame(true, 0, &[&[0x65, 1]]), 0).is_empty());
    assert!(pair.audio(aac_tag(1, &[0x21, 0x10]), 0).is_empty());
    assert_eq!(pair.server.dropped_before_config(), 2);

    let events = pair.video(avc_sequence_header(AVCC_720P), 0);
    let [SessionEvent::Media(IngestEvent::VideoConfig(v))] = &events[..] else {
        panic!("expected VideoConfig, got {events:?}");
    };
    assert_eq!((v.width, v.height, v.nal_length_size), (1280, 720, 4));
    assert_eq!(&v.avcc[..], AVCC_720P);
    // A repeated identical sequence header is not a new configuration.
    assert!(pair.video(avc_sequence_header(AVCC_720P), 0).is_empty());

    let events = pair.audio(aac_tag(0, ASC_44K_STEREO), 0);
    let [SessionEvent::Media(IngestEvent::AudioConfig(a))] = &events[..] else {
        panic!("expected AudioConfig, got {events:?}");
    };
    assert_eq!((a.sample_rate, a.channels), (44100, 2));

    let events = pair.video(avc_frame(true, 67, &[&[0x06, 5], &[0x65, 0x88, 0x80]]), 0);
    let p = packet(&events);
    assert_eq!(p.track, TrackKind::Video);
    assert!(p.keyframe);
    assert_eq!((p.dts, p.pts), (0, 67 * 90));
    assert_eq!(
        &p.data[..],
        &[0, 0, 0, 2, 0x06, 5, 0, 0, 0, 3, 0x65, 0x88, 0x80]
    );

    let events = pair.audio(aac_tag(1, &[0x21, 0x10, 0x04]), 23);
    let p = packet(&events);
    assert_eq!(
        (p.track, p.dts, p.pts),
        (TrackKind::Audio, 23 * 90, 23 * 90)
    );
    assert_eq!(&p.data[..], &[0x21, 0x10, 0x04]);

    let events = pair.video(avc_frame(false, 0, &[&[0x41, 0x9a]]), 33);
    let p = packet(&events);
    assert!(!p.keyframe);
    assert_eq!((p.dts, p.pts), (33 * 90, 33 * 90));

    // A video frame whose NAL lengths do not tile it (Annex B in FLV) ends the session.
    let r = pair
        .client
        .publish_video_data(
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41, 0x9a, 0x21]),
            RtmpTimestamp::new(66),
            false,
        )
        .expect("client");
    let ClientSessionResult::OutboundResponse(bad) = r else {
        panic!("packet expected");
    };
    assert!(matches!(
        pair.server.feed(&bad.bytes),
        Err(RtmpError::Sample {
            timestamp_ms: 66,
            ..
        })
    ));
    assert!(matches!(pair.server.feed(&[]), Err(RtmpError::Closed)));
}

#[test]
fn publish_finished_on_delete_stream() {
    let mut pair = Pair::publishing("k");
    let results = pair.client.stop_publishing().expect("stop");
    let events = pair.client_output(results);
    assert!(
        matches!(&events[..], [SessionEvent::PublishFinished]),
        "{events:?}"
    );
}

#[test]
fn timestamps_extend_across_the_32_bit_wrap() {
    let mut pair = Pair::publishing("k");
    let start = u32::MAX - 40;
    pair.video(avc_sequence_header(AVCC_720P), start);
    let a = packet(&pair.video(avc_frame(true, 0, &[&[0x65]]), start)).dts;
    let b = packet(&pair.video(avc_frame(false, 10, &[&[0x41]]), start.wrapping_add(66))).clone();
    assert_eq!(a, i64::from(start) * 90);
    assert_eq!(b.dts, (i64::from(start) + 66) * 90);
    assert_eq!(b.pts, (i64::from(start) + 76) * 90);
}

#[test]
fn clock_steps_by_the_signed_difference() {
    let mut c = Clock::default();
    assert_eq!(c.extend(100), 100);
    assert_eq!(c.extend(90), 90, "audio slightly behind video");
    assert_eq!(
        c.extend(u32::MAX),
        90 + i64::from(u32::MAX - 90) - (1i64 << 32)
    );
    let mut c = Clock::default();
    c.extend(u32::MAX - 5);
    assert_eq!(c.extend(4), i64::from(u32::MAX) + 5);
    assert_eq!(c.extend(u32::MAX - 1), i64::from(u32::MAX) - 1);
}

#[test]
fn other_application_is_refused() {
    let (mut pair, _) = Pair::new();
    let connect = pair
        .client
        .request_connection("app/other".into())
        .expect("connect");
    let events = pair.client_output(vec![connect]);
    assert!(
        matches!(&events[..], [SessionEvent::ConnectRefused { app }] if app == "app/other"),
        "{events:?}"
    );
    assert!(
        !pair
            .client_events
            .contains(&ClientSessionEvent::ConnectionRequestAccepted)
    );
    assert!(matches!(pair.server.feed(&[0]), Err(RtmpError::Closed)));
}

#[test]
fn refused_publish_answers_the_peer_and_media_never_flows() {
    let (mut pair, _) = Pair::new();
    let connect = pair.client.request_connection(APP.into()).expect("connect");
    pair.client_output(vec![connect]);
    let publish = pair
        .client
        .request_publishing("wrong".into(), PublishRequestType::Live)
        .expect("publish");
    let events = pair.client_output(vec![publish]);
    assert!(matches!(
        &events[..],
        [SessionEvent::PublishRequested { .. }]
    ));
    let refusal = pair
        .server
        .refuse_publish("unknown stream key")
        .expect("refuse");
    assert!(!refusal.is_empty());
    assert!(pair.deliver(refusal).is_empty());
    assert!(
        !pair
            .client_events
            .contains(&ClientSessionEvent::PublishRequestAccepted)
    );
    assert!(matches!(
        pair.server.accept_publish(),
        Err(RtmpError::NoPendingPublish)
    ));
}

#[test]
fn unsupported_codec_ends_the_session_naming_it() {
    let mut pair = Pair::publishing("k");
    // Sorenson H.263 keyframe.
    let r = pair
        .client
        .publish_video_data(
            Bytes::from_static(&[0x12, 0, 0]),
            RtmpTimestamp::new(0),
            false,
        )
        .expect("client");
    let ClientSessionResult::OutboundResponse(p) = r else {
        panic!("packet expected");
    };
    let err = pair.server.feed(&p.bytes).expect_err("unsupported codec");
    assert_eq!(err.unsupported_codec(), Some("Sorenson H.263"));

    let mut pair = Pair::publishing("k");
    let r = pair
        .client
        .publish_audio_data(
            Bytes::from_static(&[0x2f, 0xff]),
            RtmpTimestamp::new(0),
            false,
        )
        .expect("client");
    let ClientSessionResult::OutboundResponse(p) = r else {
        panic!("packet expected");
    };
    let err = pair.server.feed(&p.bytes).expect_err("unsupported codec");
    assert_eq!(err.unsupported_codec(), Some("MP3"));
}

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

#[test]
fn stream_key_is_not_in_debug_output() {
    let e = SessionEvent::PublishRequested {
        app: "live".into(),
        stream_key: "hunter2".into(),
    };
    assert!(!format!("{e:?}").contains("hunter2"));
}

/// xorshift64*: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Server bytes up to an established RTMP session, for a client that writes raw chunks.
fn handshaken() -> PublishSession {
    handshaken_with_initial().0
}

/// `handshaken`, with what the server sent once the handshake completed (window ack size,
/// peer bandwidth, chunk size).
fn handshaken_with_initial() -> (PublishSession, Vec<u8>) {
    let mut server = PublishSession::new();
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
    let s = only_sends(server.feed(&c0c1).expect("c0c1"));
    let Ok(HandshakeProcessResult::Completed { response_bytes, .. }) = handshake.process_bytes(&s)
    else {
        panic!("handshake");
    };
    let initial = only_sends(server.feed(&response_bytes).expect("c2"));
    (server, initial)
}

fn is_media_or_publish(e: &SessionEvent) -> bool {
    matches!(
        e,
        SessionEvent::Media(_) | SessionEvent::PublishRequested { .. }
    )
}

#[test]
fn garbage_never_panics_and_is_refused() {
    let mut rng = Rng(0x5eed_0001);
    let mut errors = 0;
    let iterations = 2000;
    for i in 0..iterations {
        let len = 1 + rng.below(if i % 10 == 0 { 20_000 } else { 2_000 }) as usize;
        let mut data = rng.bytes(len);
        let mut session = if i % 2 == 0 {
            handshaken()
        } else {
            // Mostly not the RTMP version byte; sometimes it is, so C1/C2 garbage goes on.
            if i % 8 != 1 {
                data[0] = data[0].max(4);
            } else {
                data[0] = 3;
            }
            PublishSession::new()
        };
        let mut result = Ok(Vec::new());
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(4096) as usize).min(rest.len());
            result = session.feed(&rest[..n]);
            rest = &rest[n..];
            match &result {
                Err(_) => break,
                Ok(events) => assert!(
                    !events.iter().any(is_media_or_publish),
                    "garbage produced {events:?} (iteration {i})"
                ),
            }
        }
        if i % 2 == 1 && i % 8 != 1 {
            assert!(result.is_err(), "bad version byte accepted (iteration {i})");
        }
        if result.is_err() {
            errors += 1;
        }
    }
    // Garbage that ends mid-message cannot be told from a slow peer: that is what the
    // connection deadline is for. Most garbage is refused outright.
    assert!(
        errors * 10 >= iterations * 7,
        "{errors} errors in {iterations}"
    );
}

#[test]
fn random_messages_never_panic() {
    let mut rng = Rng(0x5eed_0002);
    let mut panics = 0;
    for i in 0..1500 {
        let mut session = handshaken();
        let mut serializer = ChunkSerializer::new();
        let mut send = |session: &mut PublishSession, type_id: u8, stream: u32, data: Vec<u8>| {
            let payload = rml_rtmp::messages::MessagePayload {
                timestamp: RtmpTimestamp::new(0),
                type_id,
                message_stream_id: stream,
                data: Bytes::from(data),
            };
            let bytes = serializer
                .serialize(&payload, false, false)
                .expect("serializable")
                .bytes;
            session.feed(&bytes)
        };
        // A valid connect first, half the time, so later messages reach more code.
        if i % 2 == 0 {
            let mut props = HashMap::new();
            props.insert("app".to_string(), Amf0Value::Utf8String(APP.into()));
            let connect = RtmpMessage::Amf0Command {
                command_name: "connect".into(),
                transaction_id: 1.0,
                command_object: Amf0Value::Object(props),
                additional_arguments: vec![],
            }
            .into_message_payload(RtmpTimestamp::new(0), 0)
            .expect("connect");
            send(&mut session, 20, 0, connect.data.to_vec()).expect("connect accepted");
        }
        for _ in 0..20 {
            let type_id = [1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22][rng.below(13) as usize];
            let mut data = match rng.below(4) {
                // Structured AMF with a random tail or cut, the shapes rml_rtmp trips on.
                0 => {
                    let mut v = rml_amf0::serialize(&vec![
                        Amf0Value::Utf8String(
                            [
                                "publish",
                                "createStream",
                                "@setDataFrame",
                                "play",
                                "deleteStream",
                            ][rng.below(5) as usize]
                                .into(),
                        ),
                        Amf0Value::Number(1.0),
                    ])
                    .expect("amf");
                    let cut = rng.below(v.len() as u64 + 1) as usize;
                    v.truncate(cut);
                    let n = rng.below(40) as usize;
                    v.extend(rng.bytes(n));
                    v
                }
                // FLV-looking media.
                1 => {
                    let mut v = vec![
                        [0x17, 0x27, 0xaf, 0x91][rng.below(4) as usize],
                        rng.below(3) as u8,
                    ];
                    let n = rng.below(200) as usize;
                    v.extend(rng.bytes(n));
                    v
                }
                _ => {
                    let n = rng.below(300) as usize;
                    rng.bytes(n)
                }
            };
            if rng.below(10) == 0 {
                data.clear();
            }
            match send(&mut session, type_id, rng.below(3) as u32, data) {
                Err(RtmpError::LibraryPanic { .. }) => {
                    panics += 1;
                    break;
                }
                Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    // Panics inside rml_rtmp are contained (LibraryPanic) but each one is a shape the
    // guard should have refused first.
    assert_eq!(
        panics, 0,
        "rml_rtmp panicked on inputs the guard let through"
    );
}

#[test]
fn flv_parsers_take_garbage() {
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..20_000 {
        let len = rng.below(64) as usize;
        let body = Bytes::from(rng.bytes(len));
        match flv::parse_video_tag(body.clone()) {
            Ok(VideoTag::Frame { data, .. }) | Ok(VideoTag::SequenceHeader(data)) => {
                assert_eq!(body[0] & 0x8f, 7, "only AVC parses");
                assert_eq!(data.len(), len - 5);
                let _ = h264::parse_avc_config(data);
            }
            Ok(VideoTag::Enhanced(_)) => assert_ne!(body[0] & 0x80, 0),
            Ok(_) => assert_eq!(body[0] & 0x8f, 7),
            Err(_) => {}
        }
        match flv::parse_audio_tag(body.clone()) {
            Ok(AudioTag::SequenceHeader(asc)) => {
                assert_eq!(body[0] >> 4, 10, "only AAC parses");
                let _ = aac::parse_audio_specific_config(asc);
            }
            Ok(AudioTag::Frame(_)) => assert_eq!(body[0] >> 4, 10),
            Ok(AudioTag::Enhanced(_)) => assert_eq!(body[0] >> 4, 9),
            Err(_) => {}
        }
        // Everything that is not AVC, AAC or Enhanced RTMP is an error.
        if len > 0 && body[0] & 0x8f != 7 && body[0] & 0x80 == 0 {
            assert!(flv::parse_video_tag(body.clone()).is_err());
        }
        if len > 0 && !matches!(body[0] >> 4, 9 | 10) {
            assert!(flv::parse_audio_tag(body).is_err());
        }
    }
}

fn raw_message(serializer: &mut ChunkSerializer, type_id: u8, values: &[Amf0Value]) -> Vec<u8> {
    let payload = rml_rtmp::messages::MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id,
        message_stream_id: 0,
        data: Bytes::from(rml_amf0::serialize(&values.to_vec()).expect("amf")),
    };
    serializer
        .serialize(&payload, false, false)
        .expect("serializable")
        .bytes
}

/// Pins why guard.rs exists: if an rml_rtmp upgrade fixes these, the guard can shrink.
#[test]
fn guard_stops_inputs_that_panic_rml_rtmp() {
    let short_command = raw_message(
        &mut ChunkSerializer::new(),
        20,
        &[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
        ],
    );
    let (mut raw, _) = ServerSession::new(ServerSessionConfig::new()).expect("session");
    let unguarded = catch_unwind(AssertUnwindSafe(|| raw.handle_input(&short_command)));
    assert!(
        unguarded.is_err(),
        "rml_rtmp 0.8 panics on a 2-value command"
    );

    let mut session = handshaken();
    assert!(matches!(
        session.feed(&short_command),
        Err(RtmpError::Guard(GuardError::CommandTooShort { values: 2 }))
    ));
}

#[test]
fn interleaved_chunk_streams_end_the_session() {
    // A 300-byte video message's first 128-byte chunk on chunk stream 4, then a complete
    // 100-byte audio message on chunk stream 5: rml_rtmp keeps one partial payload for all
    // chunk streams and would underflow, so the guard refuses it before rml_rtmp sees it.
    let mut session = handshaken();
    let mut bytes = vec![0x04, 0, 0, 0, 0, 0x01, 0x2c, 9, 1, 0, 0, 0];
    bytes.extend([0u8; 128]);
    bytes.extend([0x05, 0, 0, 0, 0, 0, 100, 8, 1, 0, 0, 0]);
    bytes.extend([0u8; 100]);
    let result = session.feed(&bytes).map(|_| ());
    assert!(
        matches!(
            result,
            Err(RtmpError::Guard(GuardError::Interleaved {
                csid: 5,
                incomplete_csid: 4,
                ..
            }))
        ),
        "{result:?}"
    );
    assert!(matches!(session.feed(&[0xc5]), Err(RtmpError::Closed)));
}

#[test]
fn a_large_message_is_refused_before_the_publish_and_taken_after_it() {
    // Before the publish: a 16 MiB command declaration ends the session at its header.
    let mut s = handshaken();
    let header = [0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    let err = s.feed(&header).expect_err("refused");
    assert_eq!(err.limit(), Some("message_too_large"), "{err}");
    assert!(matches!(s.feed(&[]), Err(RtmpError::Closed)));

    // After it: a 200 KB keyframe is media like any other.
    let mut pair = Pair::publishing("secret-key");
    pair.video(avc_sequence_header(AVCC_720P), 0);
    let big = vec![0x88; 200_000];
    let mut nal = vec![0x65];
    nal.extend(&big);
    let events = pair.video(avc_frame(true, 0, &[&nal]), 0);
    assert_eq!(packet(&events).data.len(), 4 + nal.len());
}

#[test]
fn the_connects_enhanced_capabilities_are_recorded() {
    let command = |properties: Vec<(&str, Amf0Value)>| {
        raw_message(
            &mut ChunkSerializer::new(),
            20,
            &[
                Amf0Value::Utf8String("connect".into()),
                Amf0Value::Number(1.0),
                Amf0Value::Object(
                    properties
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
            ],
        )
    };
    let app = ("app", Amf0Value::Utf8String(APP.into()));

    let mut session = handshaken();
    session
        .feed(&command(vec![
            app.clone(),
            ("capsEx", Amf0Value::Number(5.0)),
            (
                "fourCcList",
                Amf0Value::StrictArray(vec![Amf0Value::Utf8String("hvc1".into())]),
            ),
        ]))
        .expect("connect");
    assert!(session.publisher_caps().reconnect());
    assert_eq!(session.publisher_caps().fourcc_list, ["hvc1"]);

    let mut legacy = handshaken();
    legacy.feed(&command(vec![app.clone()])).expect("connect");
    assert!(!legacy.publisher_caps().reconnect());
    assert!(!legacy.publisher_caps().is_enhanced());

    // Capabilities of the wrong type leave a legacy publisher, still connected.
    let mut odd = handshaken();
    let events = odd
        .feed(&command(vec![
            app,
            ("capsEx", Amf0Value::Utf8String("1".into())),
        ]))
        .expect("connect");
    assert!(!odd.publisher_caps().reconnect());
    assert!(!only_sends(events).is_empty(), "the connect is answered");
}

/// An Enhanced publisher reads rungs's capabilities in the connect `_result`, and the
/// createStream `_result` after it on the same chunk stream still reads back.
#[test]
fn an_enhanced_connect_is_answered_with_rungs_capabilities() {
    let (mut session, initial) = handshaken_with_initial();
    let mut client = ChunkSerializer::new();
    let connect = raw_message(
        &mut client,
        20,
        &[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(
                [
                    ("app".to_owned(), Amf0Value::Utf8String(APP.into())),
                    ("capsEx".to_owned(), Amf0Value::Number(1.0)),
                ]
                .into(),
            ),
        ],
    );
    let create_stream = raw_message(
        &mut client,
        20,
        &[
            Amf0Value::Utf8String("createStream".into()),
            Amf0Value::Number(2.0),
            Amf0Value::Null,
        ],
    );
    let mut wire = initial;
    wire.extend(only_sends(session.feed(&connect).expect("connect")));
    wire.extend(only_sends(
        session.feed(&create_stream).expect("createStream"),
    ));

    let mut peer = rml_rtmp::chunk_io::ChunkDeserializer::new();
    let mut commands = Vec::new();
    let mut input: &[u8] = &wire;
    while let Some(m) = peer.get_next_message(input).expect("peer reads") {
        input = &[];
        match m.to_rtmp_message().expect("message") {
            RtmpMessage::SetChunkSize { size } => {
                peer.set_max_chunk_size(size as usize).expect("chunk size");
            }
            RtmpMessage::Amf0Command {
                command_name,
                transaction_id,
                command_object,
                additional_arguments,
            } => commands.push((
                command_name,
                transaction_id,
                command_object,
                additional_arguments,
            )),
            _ => {}
        }
    }
    // rml_rtmp's onBWDone, then the two `_result`s.
    assert_eq!(commands.len(), 3, "{commands:?}");
    let (name, txn, Amf0Value::Object(object), _) = &commands[1] else {
        panic!("connect _result: {:?}", commands[1]);
    };
    assert_eq!((name.as_str(), *txn), ("_result", 1.0));
    assert_eq!(
        object.get("capsEx"),
        Some(&Amf0Value::Number(f64::from(SERVER_CAPS_EX)))
    );
    assert!(object.contains_key("fourCcList"));
    assert!(object.contains_key("fmsVer"), "rml_rtmp's properties stay");
    let (name, txn, _, args) = &commands[2];
    assert_eq!((name.as_str(), *txn), ("_result", 2.0));
    assert_eq!(args, &[Amf0Value::Number(1.0)], "createStream's stream id");
}

/// A publisher written by hand, since rml_rtmp's `ClientSession` cannot put `capsEx` in its
/// connect: its commands go to the session, and what the session sends is read back with
/// rml_rtmp's chunk deserializer, as a publisher reads it.
struct RawPublisher {
    session: PublishSession,
    to_server: ChunkSerializer,
    from_server: rml_rtmp::chunk_io::ChunkDeserializer,
    /// Every message the session sent, as (message stream id, message).
    received: Vec<(u32, RtmpMessage)>,
}

impl RawPublisher {
    /// Handshaken and connected, with `capsEx` in the connect when given.
    fn connected(caps: Option<f64>) -> RawPublisher {
        let (session, initial) = handshaken_with_initial();
        let mut p = RawPublisher {
            session,
            to_server: ChunkSerializer::new(),
            from_server: rml_rtmp::chunk_io::ChunkDeserializer::new(),
            received: Vec::new(),
        };
        p.read(&initial);
        let mut object: HashMap<String, Amf0Value> =
            [("app".to_owned(), Amf0Value::Utf8String(APP.into()))].into();
        if let Some(caps) = caps {
            object.insert("capsEx".into(), Amf0Value::Number(caps));
        }
        let events = p.command(
            0,
            vec![
                Amf0Value::Utf8String("connect".into()),
                Amf0Value::Number(1.0),
                Amf0Value::Object(object),
            ],
        );
        assert!(events.is_empty(), "{events:?}");
        p
    }

    /// `connected`, then createStream and publish on stream 1, accepted.
    fn publishing(caps: Option<f64>) -> RawPublisher {
        let mut p = RawPublisher::connected(caps);
        p.command(
            0,
            vec![
                Amf0Value::Utf8String("createStream".into()),
                Amf0Value::Number(2.0),
                Amf0Value::Null,
            ],
        );
        let events = p.command(
            1,
            vec![
                Amf0Value::Utf8String("publish".into()),
                Amf0Value::Number(3.0),
                Amf0Value::Null,
                Amf0Value::Utf8String("secret-key".into()),
                Amf0Value::Utf8String(APP.into()),
            ],
        );
        assert!(
            matches!(&events[..], [SessionEvent::PublishRequested { .. }]),
            "{events:?}"
        );
        let accepted = only_sends(p.session.accept_publish().expect("accept"));
        p.read(&accepted);
        assert!(
            p.status_codes()
                .contains(&"NetStream.Publish.Start".to_owned())
        );
        p
    }

    /// Sends one AMF0 command on message stream `msid`; returns the session's events other
    /// than sends, which are read as the publisher reads them.
    fn command(&mut self, msid: u32, values: Vec<Amf0Value>) -> Vec<SessionEvent> {
        let payload = rml_rtmp::messages::MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 20,
            message_stream_id: msid,
            data: Bytes::from(rml_amf0::serialize(&values).expect("amf")),
        };
        self.message(payload)
    }

    fn video(&mut self, body: Bytes, ts: u32) -> Vec<SessionEvent> {
        self.message(rml_rtmp::messages::MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id: 9,
            message_stream_id: 1,
            data: body,
        })
    }

    fn message(&mut self, payload: rml_rtmp::messages::MessagePayload) -> Vec<SessionEvent> {
        let bytes = self
            .to_server
            .serialize(&payload, false, false)
            .expect("serializable")
            .bytes;
        let mut others = Vec::new();
        for e in self.session.feed(&bytes).expect("session takes it") {
            match e {
                SessionEvent::Send(b) => self.read(&b),
                other => others.push(other),
            }
        }
        others
    }

    /// Reads bytes from the session as the publisher's chunk deserializer does.
    fn read(&mut self, mut bytes: &[u8]) {
        while let Some(m) = self
            .from_server
            .get_next_message(bytes)
            .expect("the publisher reads what the session sent")
        {
            bytes = &[];
            let message = m.to_rtmp_message().expect("message");
            if let RtmpMessage::SetChunkSize { size } = message {
                self.from_server
                    .set_max_chunk_size(size as usize)
                    .expect("chunk size");
            }
            self.received.push((m.message_stream_id, message));
        }
    }

    /// The info objects of the onStatus commands received so far, with their message stream.
    fn on_status(&self) -> Vec<(u32, HashMap<String, Amf0Value>)> {
        self.received
            .iter()
            .filter_map(|(msid, m)| match m {
                RtmpMessage::Amf0Command {
                    command_name,
                    additional_arguments,
                    ..
                } if command_name == "onStatus" => match additional_arguments.first() {
                    Some(Amf0Value::Object(info)) => Some((*msid, info.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn status_codes(&self) -> Vec<String> {
        self.on_status()
            .into_iter()
            .filter_map(|(_, info)| match info.get("code") {
                Some(Amf0Value::Utf8String(code)) => Some(code.clone()),
                _ => None,
            })
            .collect()
    }
}

fn text(s: &str) -> Amf0Value {
    Amf0Value::Utf8String(s.into())
}

#[test]
fn a_publisher_that_announced_reconnect_is_asked_on_a_chunk_stream_of_its_own() {
    let mut p = RawPublisher::publishing(Some(f64::from(caps_ex::RECONNECT)));
    let before = p.received.len();
    let bytes = p
        .session
        .reconnect_request(None)
        .expect("written")
        .expect("this publisher can be asked");
    // A type 0 header on chunk stream 7: rml_rtmp writes on 2 to 6.
    assert_eq!(bytes[0], reconnect::CHUNK_STREAM);
    p.read(&bytes);
    let [(0, message)] = &p.received[before..] else {
        panic!(
            "one message on the NetConnection's stream 0: {:?}",
            &p.received[before..]
        );
    };
    let RtmpMessage::Amf0Command {
        command_name,
        transaction_id,
        command_object,
        additional_arguments,
    } = message
    else {
        panic!("not a command: {message:?}");
    };
    assert_eq!(command_name, "onStatus");
    assert_eq!(*transaction_id, 0.0, "no response needed");
    assert_eq!(*command_object, Amf0Value::Null);
    let [Amf0Value::Object(info)] = &additional_arguments[..] else {
        panic!("one info object: {additional_arguments:?}");
    };
    assert_eq!(
        info.get("code"),
        Some(&text("NetConnection.Connect.ReconnectRequest"))
    );
    assert_eq!(info.get("level"), Some(&text("status")));
    assert!(info.contains_key("description"));
    assert!(!info.contains_key("tcUrl"), "none given: the current one");

    // With a new server to go to.
    let bytes = p
        .session
        .reconnect_request(Some("rtmp://edge-2.example:1935/live"))
        .expect("written")
        .expect("asked again");
    p.read(&bytes);
    let (_, info) = p.on_status().pop().expect("second request");
    assert_eq!(
        info.get("tcUrl"),
        Some(&text("rtmp://edge-2.example:1935/live"))
    );

    // The session goes on ("SHOULD continue processing messages from the client until the
    // client disconnects"), and rml_rtmp's next answer on its own command chunk stream still
    // reads back after ours.
    let events = p.video(avc_sequence_header(AVCC_720P), 40);
    assert!(
        matches!(
            &events[..],
            [SessionEvent::Media(IngestEvent::VideoConfig(_))]
        ),
        "{events:?}"
    );
    p.command(
        0,
        vec![
            text("createStream"),
            Amf0Value::Number(4.0),
            Amf0Value::Null,
        ],
    );
    assert!(
        matches!(
            p.received.last(),
            Some((_, RtmpMessage::Amf0Command { command_name, transaction_id, .. }))
                if command_name == "_result" && *transaction_id == 4.0
        ),
        "{:?}",
        p.received.last()
    );
}

#[test]
fn only_a_publishing_publisher_that_announced_reconnect_is_asked() {
    // ModEx alone, and no capsEx at all (a legacy publisher).
    for caps in [Some(f64::from(caps_ex::MOD_EX)), None] {
        let p = RawPublisher::publishing(caps);
        assert!(
            p.session
                .reconnect_request(None)
                .expect("no error")
                .is_none(),
            "capsEx {caps:?}"
        );
    }
    let legacy = Pair::publishing("k");
    assert!(legacy.server.reconnect_request(None).expect("ok").is_none());

    // Announced, but not publishing yet.
    let p = RawPublisher::connected(Some(1.0));
    assert!(p.session.reconnect_request(None).expect("ok").is_none());

    // Announced, and its publish finished.
    let mut p = RawPublisher::publishing(Some(1.0));
    let events = p.command(
        1,
        vec![
            text("deleteStream"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::Number(1.0),
        ],
    );
    assert!(
        matches!(&events[..], [SessionEvent::PublishFinished]),
        "{events:?}"
    );
    assert!(p.session.reconnect_request(None).expect("ok").is_none());
}

#[test]
fn a_refused_tc_url_writes_nothing_and_leaves_the_session_as_it_was() {
    let mut p = RawPublisher::publishing(Some(1.0));
    for bad in [
        "",
        "http://x/live",
        "live2",
        "rtmp://a b/live",
        "rtmp://x/\n",
    ] {
        assert!(
            matches!(
                p.session.reconnect_request(Some(bad)),
                Err(RtmpError::Reconnect(_))
            ),
            "{bad:?}"
        );
    }
    let long = format!("rtmp://x/{}", "a".repeat(reconnect::MAX_TC_URL));
    assert!(p.session.reconnect_request(Some(&long)).is_err());
    let bytes = p
        .session
        .reconnect_request(Some("//192.0.2.1/live"))
        .expect("a network-path reference")
        .expect("asked");
    p.read(&bytes);
    assert_eq!(
        p.on_status()
            .pop()
            .map(|(_, info)| info.get("tcUrl").cloned()),
        Some(Some(text("//192.0.2.1/live")))
    );
    let events = p.video(avc_sequence_header(AVCC_720P), 0);
    assert_eq!(events.len(), 1, "media still flows: {events:?}");
}

#[test]
fn a_reconnect_request_longer_than_a_chunk_is_split_with_type_3_headers() {
    let url = format!("rtmp://edge.example/{}", "x".repeat(900));
    let bytes = reconnect::request(Some(&url), 128).expect("written");
    // One type 0 header, then a one-byte type 3 header before every further 128 bytes.
    let payload = bytes.len() - 12;
    let continuations = (payload - 128).div_ceil(129);
    assert_eq!(bytes[12 + 128], 0xc0 | reconnect::CHUNK_STREAM);
    assert_eq!(
        payload - continuations,
        reconnect::command(Some(&url)).expect("amf").len()
    );
    // rml_rtmp's deserializer starts at the RTMP default of 128 bytes a chunk.
    let mut peer = rml_rtmp::chunk_io::ChunkDeserializer::new();
    let m = peer
        .get_next_message(&bytes)
        .expect("reads")
        .expect("one whole message");
    let RtmpMessage::Amf0Command {
        additional_arguments,
        ..
    } = m.to_rtmp_message().expect("command")
    else {
        panic!("not a command");
    };
    let [Amf0Value::Object(info)] = &additional_arguments[..] else {
        panic!("{additional_arguments:?}");
    };
    assert_eq!(info.get("tcUrl"), Some(&text(&url)));
    assert!(peer.get_next_message(&[]).expect("nothing left").is_none());
}

#[test]
fn tc_url_forms() {
    for ok in [
        "rtmp://foo.mydomain.com:1935/realtimeapp",
        "RTMPS://127.0.0.1/realtimeapp",
        "//192.0.2.0/realtimeapp",
        "/realtimeapp",
    ] {
        assert_eq!(reconnect::check_tc_url(ok), Ok(()), "{ok}");
    }
    assert_eq!(reconnect::check_tc_url(""), Err(ReconnectError::EmptyTcUrl));
    assert_eq!(
        reconnect::check_tc_url("rtmp://x/a\tb"),
        Err(ReconnectError::TcUrlCharacter { offset: 10 })
    );
    assert_eq!(
        reconnect::check_tc_url("srt://x/live"),
        Err(ReconnectError::TcUrlForm)
    );
}
