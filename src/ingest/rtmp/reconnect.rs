//! Enhanced RTMP v2 "Reconnect Request": the `onStatus` command that asks a publisher to
//! reconnect (to the same server, or to the `tcUrl` it names) and publish again. Sans-IO: it
//! writes the bytes of one RTMP message and never sees a socket or a session.
//!
//! It owns the message's wire form only. Who may be asked (a publisher that announced capsEx
//! Reconnect, while it publishes) is the session's decision; it must never be written on a
//! chunk stream rml_rtmp writes on, whose headers rml_rtmp compresses against its own.

use rml_rtmp::rml_amf0::{self, Amf0SerializationError, Amf0Value};
use std::collections::HashMap;

/// The `code` of the info object. Enhanced RTMP v2, "Reconnect Request": "To reconnect code
/// MUST be set to NetConnection.Connect.ReconnectRequest".
pub const CODE: &str = "NetConnection.Connect.ReconnectRequest";
/// Its `level`: "To reconnect the level MUST be set to status."
pub const LEVEL: &str = "status";
/// What the person at the encoder reads (the spec's `description` is optional and free).
pub const DESCRIPTION: &str = "the server asks the publisher to reconnect and publish again";
/// rml_rtmp 0.8's serializer picks chunk streams 2 to 6 by message type (2: protocol control,
/// 3: data, 4: video, 5: audio, 6: commands). A chunk stream of our own, always opened with a
/// type 0 header, cannot disturb the header compression of those.
pub const CHUNK_STREAM: u8 = 7;
/// The longest `tcUrl` rungs sends: a URL, not a payload.
pub const MAX_TC_URL: usize = 1024;
/// RTMP spec 7.1: command messages in AMF0.
const AMF0_COMMAND: u8 = 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReconnectError {
    #[error("tcUrl is empty")]
    EmptyTcUrl,
    #[error("tcUrl is {len} bytes; at most {MAX_TC_URL} are allowed")]
    TcUrlTooLong { len: usize },
    #[error("tcUrl contains a space or a control character at byte {offset}")]
    TcUrlCharacter { offset: usize },
    #[error(
        "tcUrl must be an rtmp:// or rtmps:// URL, or a reference starting with / (//host/app, /app)"
    )]
    TcUrlForm,
    #[error("writing the onStatus command: {0}")]
    Amf0(String),
}

impl From<Amf0SerializationError> for ReconnectError {
    fn from(e: Amf0SerializationError) -> Self {
        ReconnectError::Amf0(e.to_string())
    }
}

/// Checks a `tcUrl` to send. The spec's table: "Absolute or relative URI reference of the
/// server to which to reconnect. [...] A relative URI reference should be resolved relative to
/// the tcUrl for the current connection", with examples `rtmp://foo.mydomain.com:1935/app`,
/// `//192.0.2.0/app` and `/app`: those forms are taken, and nothing a publisher would read as
/// more than one token.
pub fn check_tc_url(tc_url: &str) -> Result<(), ReconnectError> {
    if tc_url.is_empty() {
        return Err(ReconnectError::EmptyTcUrl);
    }
    if tc_url.len() > MAX_TC_URL {
        return Err(ReconnectError::TcUrlTooLong { len: tc_url.len() });
    }
    if let Some(offset) = tc_url
        .bytes()
        .position(|b| b.is_ascii_control() || b.is_ascii_whitespace())
    {
        return Err(ReconnectError::TcUrlCharacter { offset });
    }
    let lower = tc_url.get(..8).unwrap_or(tc_url).to_ascii_lowercase();
    let absolute = lower.starts_with("rtmp://") || lower.starts_with("rtmps://");
    if !absolute && !tc_url.starts_with('/') {
        return Err(ReconnectError::TcUrlForm);
    }
    Ok(())
}

/// The AMF0 body of the command. Enhanced RTMP v2, "Server to client, NetConnection onStatus
/// command": command name `onStatus`, "Transaction ID set to 0. (i.e., no response needed)",
/// command object null ("There is no command object for onStatus command"), then the info
/// object.
pub fn command(tc_url: Option<&str>) -> Result<Vec<u8>, ReconnectError> {
    let mut info: HashMap<String, Amf0Value> = [
        ("level", LEVEL),
        ("code", CODE),
        ("description", DESCRIPTION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Amf0Value::Utf8String(v.to_owned())))
    .collect();
    // "If the server aims to remap the client, it MUST set the tcUrl property in the Info
    // Object." Absent, the publisher reconnects to the tcUrl it connected with.
    if let Some(url) = tc_url {
        check_tc_url(url)?;
        info.insert("tcUrl".into(), Amf0Value::Utf8String(url.to_owned()));
    }
    Ok(rml_amf0::serialize(&vec![
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(info),
    ])?)
}

/// The whole request as RTMP chunks of at most `chunk_size` payload bytes (the size rungs
/// announced to the peer) on [`CHUNK_STREAM`], message stream 0 (the NetConnection's).
pub fn request(tc_url: Option<&str>, chunk_size: usize) -> Result<Vec<u8>, ReconnectError> {
    Ok(chunks(&command(tc_url)?, chunk_size.max(1)))
}

/// RTMP spec 5.3.1: the first chunk with a type 0 header (basic header, timestamp 0, length,
/// type id, message stream id 0 little-endian), each further chunk with a type 3 header.
fn chunks(payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12 + payload.len() / chunk_size);
    out.push(CHUNK_STREAM);
    out.extend_from_slice(&[0, 0, 0]);
    // `command` writes about a kilobyte at most (MAX_TC_URL), far below the 24-bit limit.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(AMF0_COMMAND);
    out.extend_from_slice(&0u32.to_le_bytes());
    for (i, slice) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.push(0xc0 | CHUNK_STREAM);
        }
        out.extend_from_slice(slice);
    }
    out
}
