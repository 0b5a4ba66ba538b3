//! The guard against the inputs that break rml_rtmp, chunk by chunk and byte by byte.

use super::amf::*;
use super::*;
use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;

fn chunks(type_id: u8, data: Vec<u8>) -> Vec<u8> {
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id,
        message_stream_id: 0,
        data: Bytes::from(data),
    };
    ChunkSerializer::new()
        .serialize(&payload, false, false)
        .expect("serializable test message")
        .bytes
}

/// A guard after the publish was accepted: the media limits apply.
fn publishing() -> Guard {
    let mut g = Guard::new();
    g.authenticated();
    g
}

fn amf(values: &[Amf0Value]) -> Vec<u8> {
    rml_amf0::serialize(&values.to_vec()).expect("serializable AMF")
}

#[test]
fn scan_agrees_with_rml_amf0_on_real_commands() {
    let mut props = HashMap::new();
    props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    props.insert(
        "nested".to_string(),
        Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::Null]),
    );
    let data = amf(&[
        Amf0Value::Utf8String("connect".into()),
        Amf0Value::Number(1.0),
        Amf0Value::Object(props),
        Amf0Value::Boolean(true),
    ]);
    let scan = scan_amf0(&data).ok().expect("well-formed");
    assert_eq!(scan.values, 4);
    assert_eq!(scan.first_string, Some(b"connect".as_slice()));
}

#[test]
fn deep_nesting_is_refused_before_rml_recurses() {
    // 100k nested objects: rml_amf0 would recurse 300k frames deep.
    let mut data = vec![STRING, 0, 1, b'x', NUMBER, 0, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..100_000 {
        data.extend_from_slice(&[OBJECT, 0, 1, b'a']);
    }
    let mut g = Guard::new();
    assert!(matches!(
        g.check(&chunks(TYPE_AMF0_COMMAND, data[..60_000].to_vec())),
        Err(GuardError::AmfTooDeep { type_id: 20 })
    ));
    let mut g = publishing();
    assert!(matches!(
        g.check(&chunks(TYPE_AMF0_COMMAND, data)),
        Err(GuardError::AmfTooLarge { .. })
    ));
    let mut arrays = vec![];
    for _ in 0..20 {
        arrays.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
    }
    assert!(matches!(scan_amf0(&arrays), Err(AmfProblem::TooDeep)));
}

#[test]
fn short_commands_and_set_data_frame_are_refused() {
    let two = amf(&[
        Amf0Value::Utf8String("connect".into()),
        Amf0Value::Number(1.0),
    ]);
    assert!(matches!(
        Guard::new().check(&chunks(TYPE_AMF0_COMMAND, two)),
        Err(GuardError::CommandTooShort { values: 2 })
    ));
    let sdf = amf(&[
        Amf0Value::Utf8String("@setDataFrame".into()),
        Amf0Value::Utf8String("onMetaData".into()),
    ]);
    assert!(matches!(
        Guard::new().check(&chunks(TYPE_AMF0_DATA, sdf)),
        Err(GuardError::SetDataFrameTooShort { values: 2 })
    ));
}

#[test]
fn create_stream_is_capped() {
    let cmd = amf(&[
        Amf0Value::Utf8String("createStream".into()),
        Amf0Value::Number(2.0),
        Amf0Value::Null,
    ]);
    let mut ser = ChunkSerializer::new();
    let mut g = Guard::new();
    let mut result = Ok(());
    for _ in 0..=MAX_CREATE_STREAM {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: TYPE_AMF0_COMMAND,
            message_stream_id: 0,
            data: Bytes::from(cmd.clone()),
        };
        let bytes = ser
            .serialize(&payload, false, false)
            .expect("serializable")
            .bytes;
        result = g.check(&bytes);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(GuardError::TooManyCommands { .. })));
}

#[test]
fn a_message_that_never_completes_is_cut_off() {
    // Type 0 header announcing a 16 MiB video message, then a stream of payload bytes.
    let mut g = publishing();
    let header = [0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
    assert!(g.check(&header).is_ok());
    let block = vec![0u8; 128];
    assert!(
        g.check(&block).is_ok(),
        "first chunk's payload follows its header"
    );
    let mut result = Ok(());
    for _ in 0..(MAX_PENDING_BYTES / 128 + 2) {
        // A type 3 header continues the message on chunk stream 4.
        result = g.check(&[0xc4]).and_then(|()| g.check(&block));
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(GuardError::NoProgress { .. })));
}

/// Fuzzing find (fuzz/README.md): a 256-byte message on chunk stream 3 cut after its
/// first 128-byte chunk, then a whole 16-byte message on chunk stream 4.
const INTERLEAVED: &[u8] = &[
    0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, //
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00, //
    0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb,
];
/// Fuzzing find: a 4-byte message, then a type 1 chunk with timestamp delta 0xFFFFFF and
/// extended timestamp 0.
const EXTENDED_DELTA_ZERO: &[u8] = &[
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x01, //
    0xaa, 0xaa, 0xaa, 0xaa, //
    0x43, 0xff, 0xff, 0xff, 0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, //
    0xbb, 0xbb, 0xbb, 0xbb,
];

/// Feeds `bytes` whole, then cut after every byte, and in reads of 7 bytes; all three
/// must end alike. Returns the result of feeding it whole.
fn check_all_cuts(bytes: &[u8]) -> Result<(), GuardError> {
    let whole = Guard::new().check(bytes);
    for n in [1, 7] {
        let mut g = Guard::new();
        let cut = bytes.chunks(n).try_for_each(|b| g.check(b));
        assert_eq!(
            format!("{cut:?}"),
            format!("{whole:?}"),
            "reads of {n} bytes"
        );
    }
    whole
}

/// Pins that rml_rtmp 0.8 itself panics on these inputs with overflow checks on (as in
/// the dev profile): if an upgrade fixes it, the refusals can go.
#[cfg(debug_assertions)]
#[test]
fn rml_rtmp_0_8_panics_on_the_fuzz_finds() {
    for bytes in [INTERLEAVED, EXTENDED_DELTA_ZERO] {
        let panicked = std::panic::catch_unwind(|| {
            let mut d = ChunkDeserializer::new();
            let mut input = bytes;
            while let Ok(Some(_)) = d.get_next_message(input) {
                input = &[];
            }
        })
        .is_err();
        assert!(panicked);
    }
}

#[test]
fn a_message_interleaved_into_an_incomplete_one_is_refused() {
    let result = check_all_cuts(INTERLEAVED);
    assert!(
        matches!(
            result,
            Err(GuardError::Interleaved {
                fmt: 0,
                csid: 4,
                offset: 140,
                incomplete_csid: 3,
                length: 256,
                received: 128,
            })
        ),
        "{result:?}"
    );
    // Refused as soon as the header is complete, before rml_rtmp reads any of it.
    let mut g = Guard::new();
    assert!(g.check(&INTERLEAVED[..151]).is_ok());
    assert!(g.check(&INTERLEAVED[151..152]).is_err());

    // A type 1 header on the incomplete message's own chunk stream starts a new message.
    let mut bytes = INTERLEAVED[..140].to_vec();
    bytes.extend([0x43, 0, 0, 0, 0, 0x01, 0x00, 0x08]);
    assert!(matches!(
        check_all_cuts(&bytes),
        Err(GuardError::Interleaved {
            fmt: 1,
            csid: 3,
            ..
        })
    ));
    // The type 3 continuation of the message is what rml_rtmp expects.
    let mut bytes = INTERLEAVED[..140].to_vec();
    bytes.push(0xc3);
    bytes.extend([0xcc; 128]);
    bytes.extend(&INTERLEAVED[140..]);
    assert!(check_all_cuts(&bytes).is_ok());
}

#[test]
fn an_extended_timestamp_delta_below_0xffffff_is_refused() {
    let result = check_all_cuts(EXTENDED_DELTA_ZERO);
    assert!(
        matches!(
            result,
            Err(GuardError::ExtendedTimestamp {
                fmt: 1,
                csid: 3,
                offset: 16,
                extended: 0,
            })
        ),
        "{result:?}"
    );
    // Type 2, and a type 3 chunk starting a message after a header whose field was
    // 0xFFFFFF, are read the same way.
    let type_2 = [
        &EXTENDED_DELTA_ZERO[..16],
        &[0x83, 0xff, 0xff, 0xff, 0, 0, 0, 5],
    ]
    .concat();
    assert!(matches!(
        check_all_cuts(&type_2),
        Err(GuardError::ExtendedTimestamp {
            fmt: 2,
            extended: 5,
            ..
        })
    ));
    let type_0 = [0x03, 0xff, 0xff, 0xff, 0, 0, 4, 8, 0, 0, 0, 0, 1, 0, 0, 0];
    let type_3 = [&type_0[..], &[0xaa; 4], &[0xc3, 0, 0xff, 0xff, 0xfe]].concat();
    assert!(matches!(
        check_all_cuts(&type_3),
        Err(GuardError::ExtendedTimestamp {
            fmt: 3,
            offset: 20,
            extended: 0xff_fffe,
            ..
        })
    ));
    // A type 0 extended timestamp is absolute, and deltas of 0xFFFFFF and more are fine.
    let mut ok = [&type_0[..], &[0xaa; 4]].concat();
    ok.extend([
        0x43, 0xff, 0xff, 0xff, 0, 0, 4, 8, 0, 0xff, 0xff, 0xff, 0xbb, 0xbb, 0xbb,
    ]);
    ok.extend([0xbb, 0xc3, 1, 0, 0, 0, 0xcc, 0xcc, 0xcc, 0xcc]);
    ok.extend([0x03, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]);
    assert!(check_all_cuts(&ok).is_ok());
}

#[test]
fn continuation_chunks_with_extended_timestamps_and_chunk_size_changes_pass() {
    fn message(ser: &mut ChunkSerializer, type_id: u8, ms: u32, len: usize) -> Vec<u8> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(ms),
            type_id,
            message_stream_id: 1,
            data: Bytes::from(vec![type_id; len]),
        };
        ser.serialize(&payload, false, false)
            .expect("serializable")
            .bytes
    }
    // Video (type 9) and audio (8) on their own chunk streams, with messages of several
    // chunks, timestamps past 0xFFFFFF (type 0 and type 1-3 extended timestamps) and a
    // chunk size change.
    let mut ser = ChunkSerializer::new();
    let mut all = [
        message(&mut ser, 9, 0, 1000),
        message(&mut ser, 8, 0, 10),
        message(&mut ser, 9, 0x100_0000, 300),
        message(&mut ser, 9, 0x200_0000, 300),
        message(&mut ser, 8, 0x200_0000, 10),
        message(&mut ser, 9, 0x200_0040, 129),
    ]
    .concat();
    let size = ser
        .set_max_chunk_size(4096, RtmpTimestamp::new(0))
        .expect("chunk size");
    all.extend(size.bytes);
    all.extend(message(&mut ser, 9, 0x200_0080, 5000));
    all.extend(message(&mut ser, 9, 0x200_00c0, 0));
    all.extend(message(&mut ser, 8, 0x200_00c0, 4096));
    assert!(check_all_cuts(&all).is_ok());
    let mut g = Guard::new();
    g.check(&all).expect("accepted");
    assert_eq!((g.stage, g.pending, g.chunk_size), (Stage::Header, 0, 4096));
}

#[test]
fn a_type_1_chunk_on_a_new_chunk_stream_is_refused() {
    assert!(matches!(
        Guard::new().check(&[0x02, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0x45]),
        Err(GuardError::NoPreviousChunk {
            fmt: 1,
            csid: 5,
            offset: 12,
        })
    ));
}

#[test]
fn two_and_three_byte_basic_headers() {
    // Chunk stream ids 64 + 6 and 64 + 0x0102.
    let bytes = [
        &[0x00, 6, 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0xaa][..],
        &[0x01, 2, 1, 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0xbb],
        &[0xc0, 6, 0xaa, 0xc1, 2, 1, 0xbb],
    ]
    .concat();
    assert!(check_all_cuts(&bytes).is_ok());
    let mut streams = HashMap::new();
    streams.insert(
        322,
        StreamHeader {
            message_length: 7,
            timestamp_field: 0,
        },
    );
    assert_eq!(
        read_chunk_header(&[0xc1, 2, 1], &streams),
        HeaderRead::Complete(ChunkHeader {
            fmt: 3,
            csid: 322,
            len: 3,
            message_length: 7,
            timestamp_field: 0,
            extended_timestamp: None,
        })
    );
    assert_eq!(
        read_chunk_header(&[0xc1, 2], &streams),
        HeaderRead::Incomplete
    );
}

#[test]
fn zero_chunk_size_is_refused() {
    assert!(matches!(
        Guard::new().check(&chunks(TYPE_SET_CHUNK_SIZE, vec![0, 0, 0, 0])),
        Err(GuardError::ChunkSize { .. })
    ));
}

#[test]
fn before_the_publish_a_large_declared_message_is_refused_at_its_header() {
    // A type 0 header on chunk stream 3 declaring a 16 MiB AMF0 command: refused before a
    // payload byte is buffered, with the offset of the header (after a small command).
    let small = chunks(
        TYPE_AMF0_COMMAND,
        amf(&[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Null,
        ]),
    );
    let header = [
        0x03,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        TYPE_AMF0_COMMAND,
        0,
        0,
        0,
        0,
    ];
    let bytes = [&small[..], &header].concat();
    let err = check_all_cuts(&bytes).expect_err("refused");
    assert!(
        matches!(
            err,
            GuardError::UnauthenticatedMessageTooLarge {
                fmt: 0,
                csid: 3,
                length: 0xff_ffff,
                offset,
            } if offset == small.len() as u64
        ),
        "{err:?}"
    );
    assert_eq!(err.limit(), Some("message_too_large"));
    assert!(err.to_string().contains("chunk stream 3"), "{err}");
    // The largest message allowed passes (its payload is not AMF: a type 8 message).
    let mut g = Guard::new();
    let at_limit = chunks(8, vec![0; MAX_UNAUTHENTICATED_MESSAGE_BYTES as usize]);
    g.check(&at_limit).expect("at the limit");
    let over = chunks(8, vec![0; MAX_UNAUTHENTICATED_MESSAGE_BYTES as usize + 1]);
    assert!(matches!(
        Guard::new().check(&over),
        Err(GuardError::UnauthenticatedMessageTooLarge { .. })
    ));
    // Once the publish is accepted, media may be as large as before.
    publishing().check(&over).expect("media after the publish");
}

#[test]
fn before_the_publish_only_a_few_chunk_streams_may_be_opened() {
    // One-byte messages (type 8) on chunk streams 2, 3, ...: the ninth id is refused.
    let message = |csid: u8| [csid, 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0xaa];
    let mut g = Guard::new();
    let mut offset = 0u64;
    for csid in 2..2 + MAX_UNAUTHENTICATED_CHUNK_STREAMS as u8 {
        g.check(&message(csid)).expect("within the limit");
        offset += 13;
    }
    // Ids already open stay usable.
    g.check(&message(2)).expect("an open chunk stream");
    offset += 13;
    let err = g.check(&message(40)).expect_err("one too many");
    assert!(
        matches!(err, GuardError::UnauthenticatedChunkStreams { csid: 40, offset: o } if o == offset),
        "{err:?}"
    );
    assert_eq!(err.limit(), Some("too_many_chunk_streams"));
    let mut g = publishing();
    for csid in 2..60 {
        g.check(&message(csid))
            .expect("media chunk streams after the publish");
    }
}
