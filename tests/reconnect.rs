//! Enhanced RTMP reconnect requests end to end: `POST /api/v1/channels/{id}/reconnect` (and
//! `rungs channel reconnect`) reach a publisher that announced capsEx Reconnect as an
//! `onStatus` `NetConnection.Connect.ReconnectRequest`, with the tcUrl when one is given; a
//! publisher that did not announce it gets nothing and the API says 409. The publisher asked
//! then reconnects, and its stream continues through the grace period.
//!
//! The publishers are written here on rml_rtmp's handshake, AMF0 and chunk code (its
//! `ClientSession` cannot put `capsEx` in its connect): no ffmpeg, a few small messages, so
//! the file runs in a couple of seconds.

mod common;

use common::*;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long any one answer from the node may take.
const WAIT: Duration = Duration::from_secs(5);
const RECONNECT_REQUEST: &str = "NetConnection.Connect.ReconnectRequest";

/// AVCDecoderConfigurationRecord written by FFmpeg 5.1.9 + libx264 for 1280x720 (the one
/// src/ingest/rtmp/session/tests.rs uses).
const AVCC_720P: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50,
    0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83,
    0x19, 0x60, 0x01, 0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
];

/// One RTMP publisher over a real socket.
struct RawPublisher {
    socket: TcpStream,
    to_node: ChunkSerializer,
    from_node: ChunkDeserializer,
    /// Messages read and not yet looked at, as (message stream id, message).
    inbox: Vec<(u32, RtmpMessage)>,
    /// The message stream createStream gave.
    stream_id: u32,
    /// The command object of the connect `_result`.
    connect_result: HashMap<String, Amf0Value>,
}

impl RawPublisher {
    /// Connects (with `capsEx` when given), creates a stream and publishes `key` on it;
    /// returns once the node answered NetStream.Publish.Start.
    fn publish(node: &Node, key: &str, caps_ex: Option<f64>) -> RawPublisher {
        let socket = TcpStream::connect(("127.0.0.1", node.rtmp_port)).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        let mut p = RawPublisher {
            socket,
            to_node: ChunkSerializer::new(),
            from_node: ChunkDeserializer::new(),
            inbox: Vec::new(),
            stream_id: 0,
            connect_result: HashMap::new(),
        };
        p.handshake();

        let mut object: HashMap<String, Amf0Value> = [
            ("app", text("live")),
            ("type", text("nonprivate")),
            ("flashVer", text("FMLE/3.0 (compatible; rungs-test)")),
            (
                "tcUrl",
                text(&format!("rtmp://127.0.0.1:{}/live", node.rtmp_port)),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(caps) = caps_ex {
            object.insert("capsEx".into(), Amf0Value::Number(caps));
        }
        p.command(
            0,
            vec![
                text("connect"),
                Amf0Value::Number(1.0),
                Amf0Value::Object(object),
            ],
        );
        let (_, object, _) = p.wait_command("the connect _result", |name, txn, _| {
            name == "_result" && txn == 1.0
        });
        if let Amf0Value::Object(o) = object {
            p.connect_result = o;
        }

        p.command(
            0,
            vec![
                text("createStream"),
                Amf0Value::Number(2.0),
                Amf0Value::Null,
            ],
        );
        let (_, _, args) = p.wait_command("the createStream _result", |name, txn, _| {
            name == "_result" && txn == 2.0
        });
        let Some(Amf0Value::Number(id)) = args.first() else {
            panic!("createStream _result without a stream id: {args:?}");
        };
        p.stream_id = *id as u32;

        p.command(
            p.stream_id,
            vec![
                text("publish"),
                Amf0Value::Number(3.0),
                Amf0Value::Null,
                text(key),
                text("live"),
            ],
        );
        p.wait_command("NetStream.Publish.Start", |name, _, info| {
            name == "onStatus" && code(info) == Some("NetStream.Publish.Start")
        });
        p
    }

    /// RTMP spec 5.2: C0+C1, S0+S1+S2, C2. What follows S2 in the same read is kept.
    fn handshake(&mut self) {
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
        self.socket.write_all(&c0c1).expect("write c0c1");
        let deadline = Instant::now() + WAIT;
        loop {
            let bytes = self
                .read_some(deadline)
                .expect("the node answers the handshake");
            match handshake.process_bytes(&bytes).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).expect("write");
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).expect("write c2");
                    self.take(&remaining_bytes);
                    return;
                }
            }
        }
    }

    fn command(&mut self, msid: u32, values: Vec<Amf0Value>) {
        let data = rml_amf0::serialize(&values).expect("amf0");
        self.send(MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 20,
            message_stream_id: msid,
            data: data.into(),
        });
    }

    fn video(&mut self, body: Vec<u8>, ts: u32) {
        self.send(MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id: 9,
            message_stream_id: self.stream_id,
            data: body.into(),
        });
    }

    fn send(&mut self, payload: MessagePayload) {
        let packet = self
            .to_node
            .serialize(&payload, false, false)
            .expect("serialize");
        self.socket.write_all(&packet.bytes).expect("write");
    }

    /// Bytes from the node, or `None` once `deadline` passes without any.
    fn read_some(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.read(&mut buf) {
            Ok(0) => panic!("the node closed the connection"),
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Decodes every whole message in `bytes` (and what was buffered) into the inbox.
    fn take(&mut self, mut bytes: &[u8]) {
        while let Some(m) = self.from_node.get_next_message(bytes).expect("chunks") {
            bytes = &[];
            let message = m.to_rtmp_message().expect("message");
            if let RtmpMessage::SetChunkSize { size } = message {
                self.from_node
                    .set_max_chunk_size(size as usize)
                    .expect("chunk size");
            }
            self.inbox.push((m.message_stream_id, message));
        }
    }

    /// Reads until a command matching `want` (name, transaction id, first argument) arrives,
    /// and takes it with everything before it out of the inbox; `None` at `deadline`.
    #[allow(clippy::type_complexity)]
    fn next_command(
        &mut self,
        deadline: Instant,
        want: impl Fn(&str, f64, Option<&Amf0Value>) -> bool,
    ) -> Option<(u32, Amf0Value, Vec<Amf0Value>)> {
        loop {
            let found = self.inbox.iter().position(|(_, m)| {
                matches!(m, RtmpMessage::Amf0Command { command_name, transaction_id, additional_arguments, .. }
                    if want(command_name, *transaction_id, additional_arguments.first()))
            });
            if let Some(i) = found {
                let mut seen: Vec<_> = self.inbox.drain(..=i).collect();
                let Some((
                    msid,
                    RtmpMessage::Amf0Command {
                        command_object,
                        additional_arguments,
                        ..
                    },
                )) = seen.pop()
                else {
                    unreachable!("position() found a command");
                };
                return Some((msid, command_object, additional_arguments));
            }
            let bytes = self.read_some(deadline)?;
            self.take(&bytes);
        }
    }

    fn wait_command(
        &mut self,
        what: &str,
        want: impl Fn(&str, f64, Option<&Amf0Value>) -> bool,
    ) -> (u32, Amf0Value, Vec<Amf0Value>) {
        self.next_command(Instant::now() + WAIT, want)
            .unwrap_or_else(|| panic!("no {what} within {WAIT:?}; read: {:?}", self.inbox))
    }

    /// The info object of the next reconnect request, and its message stream.
    fn reconnect_request(&mut self) -> (u32, HashMap<String, Amf0Value>) {
        let (msid, command_object, args) = self.wait_command(RECONNECT_REQUEST, |name, _, info| {
            name == "onStatus" && code(info) == Some(RECONNECT_REQUEST)
        });
        assert_eq!(command_object, Amf0Value::Null, "no command object");
        let Some(Amf0Value::Object(info)) = args.into_iter().next() else {
            panic!("no info object");
        };
        (msid, info)
    }

    /// Everything the node sent up to its answer to a createStream sent now: the node writes
    /// in order, so a reconnect request handed to this connection before the call would be
    /// among it.
    fn round_trip(&mut self, txn: f64) -> Vec<(u32, RtmpMessage)> {
        self.command(
            0,
            vec![
                text("createStream"),
                Amf0Value::Number(txn),
                Amf0Value::Null,
            ],
        );
        let mut before = std::mem::take(&mut self.inbox);
        loop {
            let bytes = self
                .read_some(Instant::now() + WAIT)
                .unwrap_or_else(|| panic!("no answer to createStream {txn}"));
            self.take(&bytes);
            let done = self.inbox.iter().any(|(_, m)| {
                matches!(m, RtmpMessage::Amf0Command { command_name, transaction_id, .. }
                    if command_name == "_result" && *transaction_id == txn)
            });
            if done {
                before.append(&mut self.inbox);
                return before;
            }
        }
    }
}

fn text(s: &str) -> Amf0Value {
    Amf0Value::Utf8String(s.to_owned())
}

/// The `code` of an onStatus info object.
fn code(info: Option<&Amf0Value>) -> Option<&str> {
    match info {
        Some(Amf0Value::Object(o)) => match o.get("code") {
            Some(Amf0Value::Utf8String(c)) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

fn reconnect(node: &Node, id: &str, body: Option<&str>) -> (u16, Value) {
    let r = node.api(
        "POST",
        &format!("/api/v1/channels/{id}/reconnect"),
        body.map(str::as_bytes),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn avc_sequence_header() -> Vec<u8> {
    let mut v = vec![0x17, 0, 0, 0, 0];
    v.extend_from_slice(AVCC_720P);
    v
}

/// An AVC keyframe tag with one (made-up) IDR NAL unit, length-prefixed as the
/// sequence header says.
fn avc_keyframe() -> Vec<u8> {
    let nal = [0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    let mut v = vec![0x17, 1, 0, 0, 0];
    v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    v.extend_from_slice(&nal);
    v
}

#[test]
fn a_publisher_that_announced_reconnect_is_asked_and_one_that_did_not_is_left_alone() {
    let node = Node::start(NodeConfig::default());
    let enhanced = node.create_channel("enhanced");
    let legacy = node.create_channel("legacy");
    let idle = node.create_channel("idle");

    let mut asked = RawPublisher::publish(&node, &enhanced.stream_key, Some(1.0));
    assert_eq!(
        asked.connect_result.get("capsEx"),
        Some(&Amf0Value::Number(7.0)),
        "the node announces Reconnect|Multitrack|ModEx"
    );
    // Video, so that the stream waits out a grace period when the publisher goes.
    asked.video(avc_sequence_header(), 0);
    asked.video(avc_keyframe(), 0);
    let mut left_alone = RawPublisher::publish(&node, &legacy.stream_key, None);

    // No tcUrl: the publisher comes back where it is.
    let (status, v) = reconnect(&node, &enhanced.id, None);
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["result"], "sent");
    let (msid, info) = asked.reconnect_request();
    assert_eq!(msid, 0, "on the NetConnection's message stream");
    assert_eq!(info.get("level"), Some(&text("status")));
    assert!(!info.contains_key("tcUrl"), "{info:?}");

    // A new server, over the API and over the CLI.
    let (status, v) = reconnect(
        &node,
        &enhanced.id,
        Some(r#"{"tc_url": "rtmp://edge-2.example:1935/live"}"#),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["tc_url"], "rtmp://edge-2.example:1935/live");
    let (_, info) = asked.reconnect_request();
    assert_eq!(
        info.get("tcUrl"),
        Some(&text("rtmp://edge-2.example:1935/live"))
    );
    let admin = format!("127.0.0.1:{}", node.admin_port);
    let printed = node.cli(&[
        "channel",
        "reconnect",
        &enhanced.id,
        "--tc-url",
        "//192.0.2.7/live",
        "--admin-addr",
        &admin,
    ]);
    assert!(
        printed.contains("asked to reconnect to //192.0.2.7/live"),
        "{printed}"
    );
    let (_, info) = asked.reconnect_request();
    assert_eq!(info.get("tcUrl"), Some(&text("//192.0.2.7/live")));

    // The legacy publisher: 409, and nothing on its connection.
    let (status, v) = reconnect(&node, &legacy.id, None);
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["result"], "not_supported");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not announce")),
        "{v}"
    );
    let read = left_alone.round_trip(4.0);
    assert!(
        !read.iter().any(|(_, m)| matches!(m,
            RtmpMessage::Amf0Command { additional_arguments, .. }
                if code(additional_arguments.first()) == Some(RECONNECT_REQUEST))),
        "a legacy publisher was asked: {read:?}"
    );

    // Refusals that never reach a publisher.
    let (status, v) = reconnect(&node, &idle.id, None);
    assert_eq!(
        (status, &v["result"]),
        (409, &Value::from("not_live")),
        "{v}"
    );
    let (status, _) = reconnect(&node, "no-such-channel", None);
    assert_eq!(status, 404);
    let (status, v) = reconnect(&node, &enhanced.id, Some(r#"{"tc_url": "http://x/"}"#));
    assert_eq!(status, 400, "{v}");
    let (status, _) = reconnect(&node, &enhanced.id, Some(r#"{"tcUrl": "/live"}"#));
    assert_eq!(status, 400, "an unknown field");
    let unauthorized = node
        .http
        .request(
            "POST",
            &node.admin_url(&format!("/api/v1/channels/{}/reconnect", enhanced.id)),
            &[],
            None,
        )
        .expect("request");
    assert_eq!(unauthorized.status, 401);

    let m = node.metrics();
    let count = |result: &str| m.sum("rungs_reconnect_requests_total", &[("result", result)]);
    assert_eq!(count("sent"), 3.0);
    assert_eq!(count("not_supported"), 1.0);
    assert_eq!(count("not_live"), 1.0);
    assert_eq!(count("unknown_channel"), 1.0);

    // The publisher does as asked: it hangs up and publishes again, and its stream goes on.
    drop(asked);
    let mut back = RawPublisher::publish(&node, &enhanced.stream_key, Some(1.0));
    back.video(avc_sequence_header(), 0);
    let sessions = || {
        node.api(
            "GET",
            &format!("/api/v1/channels/{}/sessions", enhanced.id),
            None,
        )
        .json()
    };
    let continued = wait_for(WAIT, Duration::from_millis(50), || {
        let v = sessions();
        let events = v["sessions"][0]["events"].as_array().cloned()?;
        events
            .iter()
            .any(|e| e["kind"] == "publisher reconnected")
            .then_some(())
    });
    assert!(
        continued.is_some(),
        "the stream did not continue: {}",
        sessions()
    );
    assert_eq!(
        sessions()["sessions"].as_array().map(Vec::len),
        Some(1),
        "one stream session"
    );
    let log = node.log();
    assert!(
        log.contains("rtmp: asked the publisher to reconnect"),
        "no log line for the request:\n{log}"
    );
    assert!(
        !log.contains(&enhanced.stream_key),
        "stream key in the node log"
    );
}
