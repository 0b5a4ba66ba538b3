//! Hand-built AMF0 connect commands, with and without the Enhanced RTMP v2 properties.

use super::*;

fn connect(properties: Vec<(&str, Amf0Value)>) -> Vec<u8> {
    let object = properties
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    rml_amf0::serialize(&vec![
        Amf0Value::Utf8String("connect".into()),
        Amf0Value::Number(1.0),
        Amf0Value::Object(object),
    ])
    .expect("serializable")
}

fn legacy() -> Vec<(&'static str, Amf0Value)> {
    vec![
        ("app", Amf0Value::Utf8String("live".into())),
        ("type", Amf0Value::Utf8String("nonprivate".into())),
        (
            "tcUrl",
            Amf0Value::Utf8String("rtmp://localhost/live".into()),
        ),
    ]
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::Utf8String(v.into())
}

#[test]
fn legacy_connect_announces_nothing() {
    let caps = parse_connect(&connect(legacy())).expect("parses");
    assert_eq!(caps, PublisherCaps::default());
    assert!(!caps.reconnect());
}

#[test]
fn enhanced_connect_as_ffmpeg_and_obs_send_it() {
    let mut props = legacy();
    props.push((
        "fourCcList",
        Amf0Value::StrictArray(vec![s("av01"), s("hvc1"), s("avc1")]),
    ));
    props.push((
        "videoFourCcInfoMap",
        Amf0Value::Object(
            [
                ("hvc1".to_owned(), Amf0Value::Number(6.0)),
                ("*".to_owned(), Amf0Value::Number(4.0)),
            ]
            .into(),
        ),
    ));
    props.push((
        "audioFourCcInfoMap",
        Amf0Value::Object([("mp4a".to_owned(), Amf0Value::Number(2.0))].into()),
    ));
    props.push((
        "capsEx",
        Amf0Value::Number(f64::from(caps_ex::RECONNECT | caps_ex::MOD_EX)),
    ));
    let caps = parse_connect(&connect(props)).expect("parses");
    assert_eq!(caps.fourcc_list, ["av01", "hvc1", "avc1"]);
    assert_eq!(caps.video_fourcc_info.get("hvc1"), Some(&6));
    assert_eq!(caps.video_fourcc_info.get("*"), Some(&4));
    assert_eq!(caps.audio_fourcc_info.get("mp4a"), Some(&2));
    assert_eq!(caps.caps_ex, 0x05);
    assert!(caps.reconnect());
}

#[test]
fn an_ecma_array_info_map_is_read_like_an_object() {
    // FFmpeg writes the info maps as ECMA arrays (marker 0x08, a count, then properties).
    let mut bytes =
        rml_amf0::serialize(&vec![s("connect"), Amf0Value::Number(1.0)]).expect("serializable");
    bytes.push(0x03); // command object
    bytes.extend_from_slice(&18u16.to_be_bytes());
    bytes.extend_from_slice(b"videoFourCcInfoMap");
    bytes.extend_from_slice(&[0x08, 0, 0, 0, 1]);
    bytes.extend_from_slice(&4u16.to_be_bytes());
    bytes.extend_from_slice(b"avc1");
    bytes.push(0x00);
    bytes.extend_from_slice(&1f64.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0x09]); // end of the ECMA array
    bytes.extend_from_slice(&[0, 0, 0x09]); // end of the command object
    let caps = parse_connect(&bytes).expect("parses");
    assert_eq!(caps.video_fourcc_info.get("avc1"), Some(&1));
}

#[test]
fn wrong_types_and_values_are_named() {
    let cases: Vec<(&str, Amf0Value, &str)> = vec![
        ("capsEx", s("1"), "capsEx is a string, expected a number"),
        ("capsEx", Amf0Value::Number(1.5), "capsEx is 1.5"),
        ("capsEx", Amf0Value::Number(-1.0), "capsEx is -1"),
        ("capsEx", Amf0Value::Number(f64::NAN), "capsEx is NaN"),
        ("fourCcList", s("avc1"), "fourCcList is a string"),
        (
            "fourCcList",
            Amf0Value::StrictArray(vec![s("avc1"), Amf0Value::Null]),
            "fourCcList[1] is null, expected a string",
        ),
        (
            "videoFourCcInfoMap",
            Amf0Value::Object([("hvc1".to_owned(), s("x"))].into()),
            "videoFourCcInfoMap.\"hvc1\" is a string",
        ),
        (
            "audioFourCcInfoMap",
            Amf0Value::Number(1.0),
            "audioFourCcInfoMap is a number, expected an object",
        ),
    ];
    for (name, value, want) in cases {
        let mut props = legacy();
        props.push((name, value));
        let e = parse_connect(&connect(props)).expect_err(name);
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
}

#[test]
fn malformed_bytes_are_errors_not_panics() {
    let good = connect(vec![("capsEx", Amf0Value::Number(1.0))]);
    // Every truncation of a good connect, and garbage.
    for cut in 0..good.len() {
        let _ = parse_connect(&good[..cut]);
    }
    assert!(matches!(
        parse_connect(&[0x02, 0x00]),
        Err(ConnectError::Malformed { .. })
    ));
    assert!(matches!(
        parse_connect(&[0x07, 0x00]),
        Err(ConnectError::Malformed { offset: 1, .. })
    ));
    let deep: Vec<u8> = std::iter::repeat_n([0x0a, 0, 0, 0, 1], 10_000)
        .flatten()
        .collect();
    assert_eq!(parse_connect(&deep), Err(ConnectError::TooDeep));
    let not_connect =
        rml_amf0::serialize(&vec![s("publish"), Amf0Value::Number(1.0), Amf0Value::Null])
            .expect("serializable");
    assert_eq!(
        parse_connect(&not_connect),
        Err(ConnectError::NotConnect {
            found: "\"publish\"".into()
        })
    );
    let no_object =
        rml_amf0::serialize(&vec![s("connect"), Amf0Value::Number(1.0), Amf0Value::Null])
            .expect("serializable");
    assert!(
        parse_connect(&no_object)
            .expect_err("null command object")
            .to_string()
            .contains("command object is null")
    );
}

/// rml_rtmp's connect `_result` and two later messages on its chunk stream, as its
/// serializer writes them, read back by a peer's deserializer after the rewrite.
#[test]
fn rewritten_result_and_the_headers_after_it_read_back() {
    use bytes::Bytes;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    let message = |ts: u32, values: Vec<Amf0Value>| MessagePayload {
        timestamp: RtmpTimestamp::new(ts),
        type_id: 20,
        message_stream_id: 0,
        data: Bytes::from(rml_amf0::serialize(&values).expect("serializable")),
    };
    let result = message(
        10,
        vec![
            s("_result"),
            Amf0Value::Number(1.0),
            Amf0Value::Object([("fmsVer".to_owned(), s("FMS/3,0,1,1233"))].into()),
            Amf0Value::Object([("code".to_owned(), s("NetConnection.Connect.Success"))].into()),
        ],
    );
    // Same length and type as the `_result`: rml_rtmp writes a type 2 header (another
    // delta), then a type 3 (the same delta again).
    let same_length = |ts| {
        let mut m = message(ts, vec![]);
        m.data = Bytes::from(vec![0x05; result.data.len()]);
        m
    };
    // rml_rtmp's server session sets 4096 before it answers anything.
    let mut serializer = ChunkSerializer::new();
    serializer
        .set_max_chunk_size(4096, RtmpTimestamp::new(0))
        .expect("chunk size");
    let mut wire = Vec::new();
    let first = serializer
        .serialize(&result, false, false)
        .expect("serializes");
    let (rewritten, patch) = enhanced_result(&first.bytes, 4096).expect("rewritable");
    wire.extend_from_slice(&rewritten);
    let second = serializer
        .serialize(&same_length(25), false, false)
        .expect("serializes");
    assert_eq!(second.bytes[0] >> 6, 2, "rml_rtmp compresses to type 2");
    let fixed = patch.fix(&second.bytes).expect("same chunk stream");
    wire.extend_from_slice(fixed.as_deref().expect("rewritten"));
    let third = serializer
        .serialize(&same_length(40), false, false)
        .expect("serializes");
    assert_eq!(third.bytes[0] >> 6, 3);
    wire.extend_from_slice(&third.bytes);

    let mut peer = ChunkDeserializer::new();
    peer.set_max_chunk_size(4096).expect("chunk size");
    let mut read = Vec::new();
    let mut input: &[u8] = &wire;
    while let Some(m) = peer.get_next_message(input).expect("peer reads") {
        read.push(m);
        input = &[];
    }
    assert_eq!(read.len(), 3);
    let values = rml_amf0::deserialize(&mut Cursor::new(&read[0].data[..])).expect("amf");
    let Amf0Value::Object(object) = &values[2] else {
        panic!("command object");
    };
    assert_eq!(
        object.get("capsEx"),
        // Reconnect 0x01 | Multitrack 0x02 | ModEx 0x04.
        Some(&Amf0Value::Number(7.0))
    );
    assert_eq!(object.get("fmsVer"), Some(&s("FMS/3,0,1,1233")));
    assert_eq!(
        object.get("fourCcList"),
        Some(&Amf0Value::StrictArray(vec![
            s("avc1"),
            s("hvc1"),
            s("av01")
        ]))
    );
    for (m, ts) in read[1..].iter().zip([25, 40]) {
        assert_eq!(m.data.len(), result.data.len());
        assert_eq!(m.timestamp.value, ts);
        assert_eq!(m.type_id, 20);
    }

    // A type 3 header right after the `_result` (same delta too) becomes type 1 as well.
    let fmt3 = [0xc0 | (first.bytes[0] & 0x3f), 0xaa];
    let fixed = patch
        .fix(&fmt3)
        .expect("same chunk stream")
        .expect("rewritten");
    assert_eq!(fixed[0] >> 6, 1);
    assert_eq!(&fixed[1..4], &first.bytes[1..4]);
    assert_eq!(fixed[fixed.len() - 1], 0xaa);
    // Other chunk streams wait; a type 1 header needs nothing.
    assert_eq!(patch.fix(&[0x02]), None);
    assert_eq!(patch.fix(&[0x40 | (first.bytes[0] & 0x3f)]), Some(None));
}

#[test]
fn a_result_of_another_shape_is_left_to_rml_rtmp() {
    assert!(enhanced_result(&[], 4096).is_none());
    assert!(enhanced_result(&[0x46; 40], 4096).is_none());
}
