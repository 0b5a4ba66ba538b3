//! Enhanced RTMP v2 capability negotiation: reads what a publisher announces in its
//! `connect` command object (`fourCcList`, `videoFourCcInfoMap`, `audioFourCcInfoMap`,
//! `capsEx`). Sans-IO: it takes the bytes of one AMF0 command message and never sees a
//! socket. It must never panic on peer bytes: the message is scanned with the guard's bounded
//! AMF0 walk before rml_amf0 (which recurses without limit) decodes it.
//!
//! rml_rtmp 0.8's `ConnectionRequested` event carries only the application name, so the
//! session takes the raw message from the guard, which sees every message before rml_rtmp.
//!
//! The answer goes the other way: rml_rtmp writes the connect `_result` with a fixed command
//! object, so [`enhanced_result`] rewrites that packet with rungs's own capabilities, and
//! [`HeaderPatch`] keeps the chunk headers rml_rtmp writes after it valid for the peer.

use super::guard::amf::{AmfProblem, scan_amf0};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use std::collections::HashMap;
use std::io::Cursor;

/// `capsEx` bits (Enhanced RTMP v2, "Enhancing NetConnection connect Command", enum
/// CapsExMask).
pub mod caps_ex {
    /// Can reconnect when sent `NetConnection.Connect.ReconnectRequest`.
    pub const RECONNECT: u8 = 0x01;
    /// Multitrack audio/video.
    pub const MULTITRACK: u8 = 0x02;
    /// Can parse ModEx signals.
    pub const MOD_EX: u8 = 0x04;
    /// Nanosecond timestamp offsets in ModEx.
    pub const TIMESTAMP_NANO_OFFSET: u8 = 0x08;
}

/// FourCCs rungs ingests (the `fourCcList` of its answer).
pub const SERVER_FOURCCS: [&str; 3] = ["avc1", "hvc1", "av01"];
/// Reconnect: rungs sends `NetConnection.Connect.ReconnectRequest` when the operator asks
/// (`reconnect.rs`), to a publisher that announced Reconnect itself. Multitrack: further
/// video tracks become rungs (`hub/tracks.rs`). ModEx: it reads ModEx packets (and applies
/// their nanosecond offset). Not TimestampNanoOffset as a capability of its own: the offset
/// comes inside ModEx, which is what it announces.
pub const SERVER_CAPS_EX: u8 = caps_ex::RECONNECT | caps_ex::MULTITRACK | caps_ex::MOD_EX;
/// FourCcInfoMask (Enhanced RTMP v2): CanDecode 0x01 | CanForward 0x04. rungs decodes each
/// FourCC for its ladder and forwards it as the source rung.
const SERVER_FOURCC_INFO: f64 = 5.0;

/// What a publisher announced in its `connect`. A legacy publisher announces nothing: every
/// field is empty and `caps_ex` is 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherCaps {
    /// `fourCcList`: the FourCCs it can send ("*" for any), in its order.
    pub fourcc_list: Vec<String>,
    /// `videoFourCcInfoMap`: FourCC (or "*") to FourCcInfoMask (CanDecode 0x01,
    /// CanEncode 0x02, CanForward 0x04).
    pub video_fourcc_info: HashMap<String, u8>,
    /// `audioFourCcInfoMap`, as `video_fourcc_info`.
    pub audio_fourcc_info: HashMap<String, u8>,
    /// `capsEx`: the [`caps_ex`] bits.
    pub caps_ex: u8,
}

impl PublisherCaps {
    /// Whether the publisher said it reconnects on `NetConnection.Connect.ReconnectRequest`.
    pub fn reconnect(&self) -> bool {
        self.caps_ex & caps_ex::RECONNECT != 0
    }

    /// Whether it announced anything of Enhanced RTMP v2 in its connect: only such a
    /// publisher gets rungs's capabilities in the `_result`, a legacy one gets rml_rtmp's
    /// answer byte for byte.
    pub fn is_enhanced(&self) -> bool {
        !self.fourcc_list.is_empty()
            || !self.video_fourcc_info.is_empty()
            || !self.audio_fourcc_info.is_empty()
            || self.caps_ex != 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnectError {
    #[error("connect command: malformed AMF0 at byte {offset}: {why}")]
    Malformed { offset: usize, why: &'static str },
    #[error("connect command: AMF0 nests too deep")]
    TooDeep,
    #[error("connect command: AMF0: {0}")]
    Amf(String),
    #[error("not a connect command (first value {found})")]
    NotConnect { found: String },
    #[error("connect command: {what} is {found}, expected {expected}")]
    WrongType {
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("connect command: {what} is {value}, expected an integer in 0..=255")]
    OutOfRange { what: String, value: f64 },
}

/// Reads the capabilities from an AMF0 `connect` command message (name, transaction id,
/// command object, ...). Properties other than the four Enhanced RTMP ones are ignored; a
/// connect without them gives the empty [`PublisherCaps`].
pub fn parse_connect(data: &[u8]) -> Result<PublisherCaps, ConnectError> {
    scan_amf0(data).map_err(|p| match p {
        AmfProblem::TooDeep => ConnectError::TooDeep,
        AmfProblem::Malformed { offset, why } => ConnectError::Malformed { offset, why },
    })?;
    // The scan above bounds the nesting, so rml_amf0's recursion is bounded too.
    let values = rml_amf0::deserialize(&mut Cursor::new(data))
        .map_err(|e| ConnectError::Amf(e.to_string()))?;
    let mut values = values.into_iter();
    match values.next() {
        Some(Amf0Value::Utf8String(name)) if name == "connect" => {}
        Some(Amf0Value::Utf8String(name)) => {
            return Err(ConnectError::NotConnect {
                found: format!("{name:?}"),
            });
        }
        other => {
            return Err(ConnectError::NotConnect {
                found: other.as_ref().map_or("none", type_name).to_owned(),
            });
        }
    }
    // RTMP spec 7.2.1.1: transaction id (always 1), then the command object.
    let object = match values.nth(1) {
        Some(Amf0Value::Object(properties)) => properties,
        other => {
            return Err(ConnectError::WrongType {
                what: "command object".into(),
                expected: "an object",
                found: other.as_ref().map_or("missing", type_name),
            });
        }
    };
    let mut caps = PublisherCaps::default();
    if let Some(list) = object.get("fourCcList") {
        let Amf0Value::StrictArray(items) = list else {
            return Err(wrong_type("fourCcList", "a strict array", list));
        };
        for (i, item) in items.iter().enumerate() {
            let Amf0Value::Utf8String(fourcc) = item else {
                return Err(wrong_type(&format!("fourCcList[{i}]"), "a string", item));
            };
            caps.fourcc_list.push(fourcc.clone());
        }
    }
    caps.video_fourcc_info = info_map(&object, "videoFourCcInfoMap")?;
    caps.audio_fourcc_info = info_map(&object, "audioFourCcInfoMap")?;
    if let Some(value) = object.get("capsEx") {
        caps.caps_ex = small_int("capsEx", value)?;
    }
    Ok(caps)
}

/// Rewrites rml_rtmp's connect `_result` packet (one chunk with a type 0 or 1 header) with rungs's `fourCcList`,
/// `videoFourCcInfoMap` and `capsEx` added to its command object. `None` when the packet is
/// not of that shape or the answer would not fit one chunk of `chunk_size`: the caller
/// then sends rml_rtmp's answer unchanged.
///
/// Enhanced RTMP v2 ("Enhancing NetConnection connect Command"): the server answers the
/// connect with the same properties, saying what it supports, in the `_result`'s command
/// object.
pub fn enhanced_result(packet: &[u8], chunk_size: usize) -> Option<(Vec<u8>, HeaderPatch)> {
    let first = *packet.first()?;
    let (csid, fmt) = (first & 0x3f, first >> 6);
    // rml_rtmp writes the `_result` with a type 0 header, or type 1 after its onBWDone on
    // the same chunk stream (RTMP spec 5.3.1.2.1-2: 11- and 7-byte message headers, both
    // starting with the timestamp field and the length).
    let header_len = match fmt {
        0 => 12,
        1 => 8,
        _ => return None,
    };
    let header = packet.get(..header_len)?;
    let timestamp_field = u24(&header[1..4]);
    let length = u24(&header[4..7]);
    // One-byte basic header (chunk stream 2-63), no extended timestamp, one chunk.
    if csid < 2 || timestamp_field == 0xff_ffff || packet.len() != header_len + length as usize {
        return None;
    }
    let mut values = rml_amf0::deserialize(&mut Cursor::new(&packet[header_len..])).ok()?;
    let Some(Amf0Value::Object(object)) = values.get_mut(2) else {
        return None;
    };
    object.insert(
        "fourCcList".into(),
        Amf0Value::StrictArray(
            SERVER_FOURCCS
                .iter()
                .map(|f| Amf0Value::Utf8String((*f).into()))
                .collect(),
        ),
    );
    object.insert(
        "videoFourCcInfoMap".into(),
        Amf0Value::Object(
            SERVER_FOURCCS
                .iter()
                .map(|f| ((*f).into(), Amf0Value::Number(SERVER_FOURCC_INFO)))
                .collect(),
        ),
    );
    object.insert(
        "capsEx".into(),
        Amf0Value::Number(f64::from(SERVER_CAPS_EX)),
    );
    let payload = rml_amf0::serialize(&values).ok()?;
    if payload.len() > chunk_size {
        return None;
    }
    let mut out = Vec::with_capacity(header_len + payload.len());
    out.extend_from_slice(&header[..4]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&header[7..]);
    out.extend_from_slice(&payload);
    let patch = HeaderPatch {
        csid,
        length,
        type_id: header[7],
        timestamp_field,
    };
    Some((out, patch))
}

/// rml_rtmp's serializer compresses the next header on the `_result`'s chunk stream against
/// the `_result` it wrote, not the one the peer received: they differ in length only. A type
/// 1 (or type 0) header carries the length and puts both back in step; a type 2 or 3 header
/// (same length and type as the previous message, RTMP spec 5.3.1.2.3-4) is rewritten to
/// type 1 with the length rml_rtmp meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPatch {
    csid: u8,
    length: u32,
    type_id: u8,
    timestamp_field: u32,
}

impl HeaderPatch {
    /// Looks at the next packet rml_rtmp writes; returns `None` while the patch is still
    /// needed (a packet on another chunk stream), else the packet to send in place of this
    /// one (`Some(None)`: unchanged), after which the patch is done.
    pub fn fix(&self, packet: &[u8]) -> Option<Option<Vec<u8>>> {
        let first = *packet.first()?;
        if first & 0x3f != self.csid {
            return None;
        }
        let (delta, rest) = match first >> 6 {
            0 | 1 => return Some(None),
            // Type 2: the 3-byte timestamp delta, then (extended timestamp and) payload.
            2 => (packet.get(1..4)?, packet.get(4..)?),
            // Type 3 at a message start: the delta is the previous timestamp field.
            _ => (&self.timestamp_field.to_be_bytes()[1..], &packet[1..]),
        };
        let mut out = Vec::with_capacity(packet.len() + 7);
        out.push(0x40 | self.csid);
        out.extend_from_slice(delta);
        out.extend_from_slice(&self.length.to_be_bytes()[1..]);
        out.push(self.type_id);
        out.extend_from_slice(rest);
        Some(Some(out))
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn info_map(
    object: &HashMap<String, Amf0Value>,
    name: &str,
) -> Result<HashMap<String, u8>, ConnectError> {
    let Some(value) = object.get(name) else {
        return Ok(HashMap::new());
    };
    // rml_amf0 decodes both an object and an ECMA array (what FFmpeg writes) as Object.
    let Amf0Value::Object(entries) = value else {
        return Err(wrong_type(name, "an object", value));
    };
    // The key is the peer's: escaped, so that the error stays one clean log line.
    entries
        .iter()
        .map(|(fourcc, mask)| {
            Ok((
                fourcc.clone(),
                small_int(&format!("{name}.{fourcc:?}"), mask)?,
            ))
        })
        .collect()
}

fn small_int(what: &str, value: &Amf0Value) -> Result<u8, ConnectError> {
    let Amf0Value::Number(n) = value else {
        return Err(wrong_type(what, "a number", value));
    };
    if n.fract() != 0.0 || !(0.0..=255.0).contains(n) {
        return Err(ConnectError::OutOfRange {
            what: what.to_owned(),
            value: *n,
        });
    }
    Ok(*n as u8)
}

fn wrong_type(what: &str, expected: &'static str, found: &Amf0Value) -> ConnectError {
    ConnectError::WrongType {
        what: what.to_owned(),
        expected,
        found: type_name(found),
    }
}

fn type_name(value: &Amf0Value) -> &'static str {
    match value {
        Amf0Value::Number(_) => "a number",
        Amf0Value::Boolean(_) => "a boolean",
        Amf0Value::Utf8String(_) => "a string",
        Amf0Value::Object(_) => "an object",
        Amf0Value::StrictArray(_) => "a strict array",
        Amf0Value::Null => "null",
        Amf0Value::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests;
