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

mod capabilities;
mod enhanced;
