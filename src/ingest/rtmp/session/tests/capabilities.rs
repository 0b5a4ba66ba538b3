//! The connect's Enhanced RTMP capabilities, read and answered, and reconnect requests on
//! the wire, through a publisher written by hand.

use super::*;

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
