//! Pre-screens the post-handshake RTMP chunk stream before rml_rtmp's `ServerSession` parses
//! it, refusing what would make that library panic, overflow the stack or grow without bound.
//! Sans-IO; it never alters the bytes, it only says yes or no (and keeps a copy of the first
//! `connect` command for the session, whose Enhanced RTMP capabilities rml_rtmp drops: see
//! [`Guard::take_connect`]). It must never hand rml_rtmp, not even its own copy of the chunk
//! deserializer, bytes that make it panic.
//!
//! Why it exists (rml_rtmp 0.8.0 / rml_amf0 0.3.0, read from their sources):
//! - AMF0 values are decoded recursively with no depth limit: a few kilobytes of nested
//!   objects overflow the stack, which aborts the whole process (not catchable).
//! - `amf0_command::deserialize` does `drain(..3)` and `handle_amf0_data_set_data_frame`
//!   indexes `data[0]`/`remove(1)` without checking lengths: short messages panic.
//! - The chunk deserializer keeps one partial payload for all chunk streams, so it cannot
//!   take a chunk of another message before the current one completes (see
//!   [`GuardError::Interleaved`]), and it underflows on an extended timestamp delta below
//!   0xFFFFFF (see [`GuardError::ExtendedTimestamp`]).
//! - Every `createStream` adds an entry to a map that is never pruned.
//! - Each deserializer buffers a message's payload until it completes, up to the 16 MiB its
//!   length field can declare, and keeps a header for every chunk stream id it has seen (up
//!   to 65,599).
//!
//! Until the session accepts a publish, the peer is anyone on the internet: it only sends
//! commands (a few hundred bytes each, on two or three chunk streams), so the guard holds it
//! to [`MAX_UNAUTHENTICATED_MESSAGE_BYTES`] per declared message and
//! [`MAX_UNAUTHENTICATED_CHUNK_STREAMS`] chunk stream ids, refused at the chunk header before
//! a byte of the message is buffered. [`Guard::authenticated`] lifts them to the media limits.
//!
//! The guard reads each chunk header itself (RTMP spec 5.3.1: basic header, message header
//! types 0-3, extended timestamp), the way rml_rtmp's `ChunkDeserializer` reads it, and
//! refuses the two chunk shapes above before any deserializer sees the header's bytes. Then
//! it passes the chunk to its own `ChunkDeserializer`, so it sees each message before the
//! session does. Both deserializers are the same deterministic code fed the same bytes and
//! the same chunk size changes, so they agree on message boundaries; the guard checks that
//! its header reading agrees with them at every message end.

use rml_rtmp::chunk_io::{ChunkDeserializationError, ChunkDeserializer};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use std::collections::HashMap;

pub(super) mod amf;
use amf::{AmfScan, scan_amf0};
use bytes::Bytes;

/// Bytes the peer may send without completing an RTMP message. A message's length field is
/// 24 bits (16 MiB); real encoders send video frames well under 8 MiB, and this bound also
/// caps what each deserializer holds for a connection.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// AMF0 commands and data messages from publishers are a few hundred bytes (onMetaData a few
/// KB).
pub const MAX_AMF_MESSAGE_BYTES: usize = 64 << 10;
/// Largest message a peer may declare before its publish is accepted. Commands before the
/// publish (connect, releaseStream, FCPublish, createStream, publish) are a few hundred bytes;
/// media, the only large messages, comes after it.
pub const MAX_UNAUTHENTICATED_MESSAGE_BYTES: u32 = 64 << 10;
/// Chunk stream ids a peer may use before its publish is accepted. FFmpeg and librtmp (OBS)
/// send their commands on ids 2 and 3 and open the media ones (4-8) after the publish.
pub const MAX_UNAUTHENTICATED_CHUNK_STREAMS: usize = 8;
/// Nesting of AMF0 objects/arrays. A connect command object or onMetaData nests 1-2 deep.
pub const MAX_AMF_DEPTH: usize = 16;
/// AMF0 commands per connection. A publisher sends about ten (connect, releaseStream,
/// FCPublish, createStream, publish, FCUnpublish, deleteStream).
pub const MAX_COMMANDS: u32 = 256;
/// `createStream` per connection: each one is state in the session that is never freed.
pub const MAX_CREATE_STREAM: u32 = 8;

/// RTMP message type ids (RTMP spec 5.4, 7.1).
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_AMF3_DATA: u8 = 15;
const TYPE_AMF3_COMMAND: u8 = 17;
const TYPE_AMF0_DATA: u8 = 18;
const TYPE_AMF0_COMMAND: u8 = 20;

/// RTMP spec 5.3.1.3: "The Extended Timestamp field is used to encode timestamps or
/// timestamp deltas greater than or equal to 16777215 (0xFFFFFF) [...] this field is
/// present in Type 0, 1, or 2 chunks" whose 24-bit timestamp field is 0xFFFFFF. Like
/// rml_rtmp (deserializer.rs:336), a type 3 chunk carries one when the field it inherits is.
const EXTENDED_TIMESTAMP: u32 = 0xff_ffff;
/// Longest chunk header: 3-byte basic header, type 0 message header, extended timestamp.
const MAX_CHUNK_HEADER: usize = 3 + 11 + 4;
/// Chunk size until the peer sends SetChunkSize (RTMP spec 5.4.1; rml_rtmp's initial one).
const INITIAL_CHUNK_SIZE: usize = 128;

/// Chunk offsets (`offset`) count bytes of the chunk stream, from the first byte after the
/// handshake, to the chunk's basic header.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkDeserializationError),
    #[error(
        "type {fmt} chunk on chunk stream {csid} at offset {offset} with no type 0 chunk before it on that stream"
    )]
    NoPreviousChunk { fmt: u8, csid: u32, offset: u64 },
    /// A chunk that is not the next chunk of the incomplete message. RTMP allows messages on
    /// different chunk streams to interleave (spec 5.3.1: "chunks [...] from different
    /// streams" are multiplexed), but rml_rtmp 0.8's `ChunkDeserializer` keeps a single
    /// partial payload for all chunk streams (`current_payload_data`, deserializer.rs:25): it
    /// appends the other message's bytes to the incomplete one (:392), and underflows
    /// `length - current_payload_length` (:371) when the other message is shorter than what
    /// is buffered (a panic with overflow checks on, `capacity overflow` in
    /// `BytesMut::reserve` (:388) without). The same goes for a type 0-2 header, which starts
    /// a new message (spec 5.3.1.2.4: all chunks of a message but the first "SHOULD" be type
    /// 3), on the incomplete message's own chunk stream. FFmpeg and OBS (librtmp) write each
    /// message's chunks back to back, so they never do this.
    #[error(
        "type {fmt} chunk on chunk stream {csid} at offset {offset} before the {length}-byte message on chunk stream {incomplete_csid} completed ({received} bytes received); interleaved messages are not supported"
    )]
    Interleaved {
        fmt: u8,
        csid: u32,
        offset: u64,
        incomplete_csid: u32,
        length: usize,
        received: usize,
    },
    /// A type 1-3 chunk that starts a message with a timestamp delta field of 0xFFFFFF and an
    /// extended timestamp below 0xFFFFFF: against spec 5.3.1.3 (quoted at
    /// `EXTENDED_TIMESTAMP`), and rml_rtmp 0.8 computes `timestamp - MAX_INITIAL_TIMESTAMP`
    /// (deserializer.rs:358), which underflows (a panic with overflow checks on).
    #[error(
        "type {fmt} chunk on chunk stream {csid} at offset {offset}: extended timestamp delta {extended:#x} is below 0xFFFFFF"
    )]
    ExtendedTimestamp {
        fmt: u8,
        csid: u32,
        offset: u64,
        extended: u32,
    },
    /// The guard's header reading and its `ChunkDeserializer` disagree on where a message
    /// ends: a bug in the guard, so the stream cannot be vouched for.
    #[error("chunk guard out of step with the deserializer at chunk offset {offset}")]
    OutOfStep { offset: u64 },
    #[error(
        "{bytes} bytes received without completing an RTMP message (limit {MAX_PENDING_BYTES})"
    )]
    NoProgress { bytes: usize },
    #[error("invalid SetChunkSize message: {why}")]
    ChunkSize { why: String },
    #[error("AMF message type {type_id} of {len} bytes (limit {MAX_AMF_MESSAGE_BYTES})")]
    AmfTooLarge { type_id: u8, len: usize },
    #[error("AMF message type {type_id} nests deeper than {MAX_AMF_DEPTH}")]
    AmfTooDeep { type_id: u8 },
    #[error("malformed AMF0 in message type {type_id} at byte {offset}: {why}")]
    AmfMalformed {
        type_id: u8,
        offset: usize,
        why: &'static str,
    },
    #[error("command message with {values} AMF values, needs name, transaction id and object")]
    CommandTooShort { values: usize },
    #[error("@setDataFrame with {values} AMF values, needs a handler name and the data")]
    SetDataFrameTooShort { values: usize },
    #[error("more than {limit} {what} per connection")]
    TooManyCommands { what: &'static str, limit: u32 },
    /// A chunk header declaring a message longer than
    /// [`MAX_UNAUTHENTICATED_MESSAGE_BYTES`] before the publish is accepted.
    #[error(
        "type {fmt} chunk on chunk stream {csid} at offset {offset} declares a {length}-byte message; the limit before a publish is accepted is {MAX_UNAUTHENTICATED_MESSAGE_BYTES} bytes"
    )]
    UnauthenticatedMessageTooLarge {
        fmt: u8,
        csid: u32,
        offset: u64,
        length: u32,
    },
    /// A chunk on one chunk stream id more than [`MAX_UNAUTHENTICATED_CHUNK_STREAMS`] before
    /// the publish is accepted.
    #[error(
        "chunk on chunk stream {csid} at offset {offset} opens more than {MAX_UNAUTHENTICATED_CHUNK_STREAMS} chunk streams before a publish is accepted"
    )]
    UnauthenticatedChunkStreams { csid: u32, offset: u64 },
}

impl GuardError {
    /// The limit a refusal enforces, as a metric label (`reason`), for the limits on a peer
    /// that has not published yet; `None` for the other refusals.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            GuardError::UnauthenticatedMessageTooLarge { .. } => Some("message_too_large"),
            GuardError::UnauthenticatedChunkStreams { .. } => Some("too_many_chunk_streams"),
            _ => None,
        }
    }
}

pub struct Guard {
    chunks: ChunkDeserializer,
    /// Where the guard is in the chunk stream.
    stage: Stage,
    /// The current chunk header's bytes, while it is incomplete (`header_len` of them).
    header: [u8; MAX_CHUNK_HEADER],
    header_len: usize,
    /// What a type 1-3 header inherits, per chunk stream id.
    streams: HashMap<u32, StreamHeader>,
    /// The message whose chunks are arriving, if it is not complete.
    incomplete: Option<Incomplete>,
    /// The current chunk size, as SetChunkSize messages set it.
    chunk_size: usize,
    /// Bytes of the chunk stream checked so far, and where the current chunk started.
    offset: u64,
    chunk_offset: u64,
    /// Bytes checked since a message last completed.
    pending: usize,
    commands: u32,
    create_streams: u32,
    /// Whether the session accepted a publish: the unauthenticated limits no longer apply.
    authenticated: bool,
    /// The first `connect` command's AMF0 bytes, until the session takes them: rml_rtmp
    /// keeps only the app name of it, and the Enhanced RTMP capabilities are in it too.
    connect: Option<Bytes>,
    seen_connect: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading a chunk header.
    Header,
    /// This many payload bytes of the current chunk are still to come.
    Payload { left: usize },
}

/// What a type 1-3 chunk header takes from the preceding chunk on its chunk stream (RTMP
/// spec 5.3.1.2).
#[derive(Clone, Copy, Debug)]
struct StreamHeader {
    message_length: u32,
    timestamp_field: u32,
}

#[derive(Clone, Copy, Debug)]
struct Incomplete {
    csid: u32,
    length: usize,
    received: usize,
}

/// One chunk header, read as rml_rtmp 0.8's `ChunkDeserializer` reads it.
#[derive(Debug, PartialEq, Eq)]
struct ChunkHeader {
    /// Chunk type (RTMP spec 5.3.1.1 "fmt"): 0 full, 1 no stream id, 2 timestamp delta only,
    /// 3 none.
    fmt: u8,
    csid: u32,
    /// Header bytes, basic header to extended timestamp.
    len: usize,
    message_length: u32,
    /// The 24-bit timestamp (type 0) or timestamp delta (1, 2) field; type 3 inherits it.
    timestamp_field: u32,
    extended_timestamp: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
enum HeaderRead {
    Incomplete,
    /// Type 1-3 chunk on a chunk stream with no earlier header to take values from.
    NoPrevious {
        fmt: u8,
        csid: u32,
    },
    Complete(ChunkHeader),
}

/// Reads the chunk header at the start of `buf` (RTMP spec 5.3.1).
fn read_chunk_header(buf: &[u8], streams: &HashMap<u32, StreamHeader>) -> HeaderRead {
    let Some(&first) = buf.first() else {
        return HeaderRead::Incomplete;
    };
    let fmt = first >> 6;
    // 5.3.1.1: ids 2-63 in one byte; 0: 64 + the second byte; 1: 64 + a 16-bit little-endian
    // value in bytes 2-3.
    let (csid, basic_len) = match (first & 0x3f, buf.get(1), buf.get(2)) {
        (0, Some(&b1), _) => (64 + u32::from(b1), 2),
        (1, Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
        (0 | 1, ..) => return HeaderRead::Incomplete,
        (id, ..) => (u32::from(id), 1),
    };
    let previous = match streams.get(&csid) {
        Some(previous) => *previous,
        // A type 0 header takes nothing from earlier ones.
        None if fmt == 0 => StreamHeader {
            message_length: 0,
            timestamp_field: 0,
        },
        None => return HeaderRead::NoPrevious { fmt, csid },
    };
    // 5.3.1.2.1-4: message headers of 11, 7, 3 and 0 bytes.
    let message_header_len = [11, 7, 3, 0][usize::from(fmt)];
    let Some(message_header) = buf.get(basic_len..basic_len + message_header_len) else {
        return HeaderRead::Incomplete;
    };
    let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let (timestamp_field, message_length) = match fmt {
        0 | 1 => (u24(&message_header[0..3]), u24(&message_header[3..6])),
        2 => (u24(&message_header[0..3]), previous.message_length),
        _ => (previous.timestamp_field, previous.message_length),
    };
    let mut len = basic_len + message_header_len;
    let mut extended_timestamp = None;
    if timestamp_field == EXTENDED_TIMESTAMP {
        let Some(b) = buf.get(len..len + 4) else {
            return HeaderRead::Incomplete;
        };
        extended_timestamp = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        len += 4;
    }
    HeaderRead::Complete(ChunkHeader {
        fmt,
        csid,
        len,
        message_length,
        timestamp_field,
        extended_timestamp,
    })
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    pub fn new() -> Self {
        Guard {
            chunks: ChunkDeserializer::new(),
            stage: Stage::Header,
            header: [0; MAX_CHUNK_HEADER],
            header_len: 0,
            streams: HashMap::new(),
            incomplete: None,
            chunk_size: INITIAL_CHUNK_SIZE,
            offset: 0,
            chunk_offset: 0,
            pending: 0,
            commands: 0,
            create_streams: 0,
            authenticated: false,
            connect: None,
            seen_connect: false,
        }
    }

    /// The session accepted a publish: from the next byte on, the peer may declare messages
    /// of any length and open chunk streams as media needs (the limits of an authenticated
    /// publisher are the media ones: [`MAX_PENDING_BYTES`] and the AMF limits).
    pub fn authenticated(&mut self) {
        self.authenticated = true;
    }

    /// The AMF0 bytes of the first `connect` command, once it has passed the checks (at
    /// most once per connection: rml_rtmp answers only the first connect too).
    pub fn take_connect(&mut self) -> Option<Bytes> {
        self.connect.take()
    }

    /// Checks the next bytes of the chunk stream. They must be exactly the bytes the session
    /// is about to be given, in order. An error means the session must not see them, and is
    /// final: the guard's state after one is unspecified.
    pub fn check(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = match self.stage {
                Stage::Header => self.header_bytes(rest)?,
                Stage::Payload { left } => {
                    let n = left.min(rest.len());
                    let left = left - n;
                    self.stage = if left == 0 {
                        Stage::Header
                    } else {
                        Stage::Payload { left }
                    };
                    self.advance(n);
                    let completes = left == 0 && self.incomplete.is_none();
                    self.deserialize(&rest[..n], completes)?;
                    n
                }
            };
            rest = &rest[used..];
        }
        if self.pending > MAX_PENDING_BYTES {
            return Err(GuardError::NoProgress {
                bytes: self.pending,
            });
        }
        Ok(())
    }

    /// Collects header bytes from `rest`; returns how many it used. Once the header is
    /// complete and acceptable, passes it to the deserializer and moves on to the payload.
    fn header_bytes(&mut self, rest: &[u8]) -> Result<usize, GuardError> {
        if self.header_len == 0 {
            self.chunk_offset = self.offset;
        }
        let had = self.header_len;
        let take = rest.len().min(MAX_CHUNK_HEADER - had);
        self.header[had..had + take].copy_from_slice(&rest[..take]);
        self.header_len += take;
        let header = match read_chunk_header(&self.header[..self.header_len], &self.streams) {
            HeaderRead::Incomplete => {
                self.advance(take);
                return Ok(take);
            }
            HeaderRead::NoPrevious { fmt, csid } => {
                return Err(GuardError::NoPreviousChunk {
                    fmt,
                    csid,
                    offset: self.chunk_offset,
                });
            }
            HeaderRead::Complete(header) => header,
        };
        // A header is at most MAX_CHUNK_HEADER bytes and was incomplete with `had` of them.
        let used = header.len - had;
        self.header_len = 0;
        self.advance(used);
        let payload = self.start_chunk(&header)?;
        let bytes = self.header;
        self.deserialize(
            &bytes[..header.len],
            payload == 0 && self.incomplete.is_none(),
        )?;
        self.stage = if payload == 0 {
            Stage::Header
        } else {
            Stage::Payload { left: payload }
        };
        Ok(used)
    }

    /// Refuses what rml_rtmp cannot take (see the `GuardError` variants), then records the
    /// chunk; returns its payload length.
    fn start_chunk(&mut self, h: &ChunkHeader) -> Result<usize, GuardError> {
        if let Some(m) = self.incomplete
            && (h.fmt != 3 || h.csid != m.csid)
        {
            return Err(GuardError::Interleaved {
                fmt: h.fmt,
                csid: h.csid,
                offset: self.chunk_offset,
                incomplete_csid: m.csid,
                length: m.length,
                received: m.received,
            });
        }
        if !self.authenticated {
            // A type 2-3 header inherits a length that was checked when it was declared.
            if h.message_length > MAX_UNAUTHENTICATED_MESSAGE_BYTES {
                return Err(GuardError::UnauthenticatedMessageTooLarge {
                    fmt: h.fmt,
                    csid: h.csid,
                    offset: self.chunk_offset,
                    length: h.message_length,
                });
            }
            if !self.streams.contains_key(&h.csid)
                && self.streams.len() >= MAX_UNAUTHENTICATED_CHUNK_STREAMS
            {
                return Err(GuardError::UnauthenticatedChunkStreams {
                    csid: h.csid,
                    offset: self.chunk_offset,
                });
            }
        }
        if let Some(extended) = h.extended_timestamp
            && h.fmt != 0
            && self.incomplete.is_none()
            && extended < EXTENDED_TIMESTAMP
        {
            return Err(GuardError::ExtendedTimestamp {
                fmt: h.fmt,
                csid: h.csid,
                offset: self.chunk_offset,
                extended,
            });
        }
        self.streams.insert(
            h.csid,
            StreamHeader {
                message_length: h.message_length,
                timestamp_field: h.timestamp_field,
            },
        );
        // As deserializer.rs:369-374 computes it. A continuation is a type 3 chunk on the
        // incomplete message's stream (checked above), so it has that message's length and
        // `received < length`; and the chunk size cannot have changed since the message's
        // first chunk was cut at it, so `length > chunk_size`.
        let length = h.message_length as usize;
        let received = self.incomplete.map_or(0, |m| m.received);
        let payload = if length > self.chunk_size {
            (length - received).min(self.chunk_size)
        } else {
            length
        };
        let received = received + payload;
        self.incomplete = (received < length).then_some(Incomplete {
            csid: h.csid,
            length,
            received,
        });
        Ok(payload)
    }

    fn advance(&mut self, n: usize) {
        self.offset += n as u64;
        self.pending = self.pending.saturating_add(n);
    }

    /// Passes bytes of the current chunk to the deserializer and inspects the message they
    /// complete. `completes`: whether the guard's header reading says they end a message.
    fn deserialize(&mut self, bytes: &[u8], completes: bool) -> Result<(), GuardError> {
        let message = self.chunks.get_next_message(bytes)?;
        // A chunk ends at most one message, and only at its end.
        if message.is_some() != completes || self.chunks.get_next_message(&[])?.is_some() {
            return Err(GuardError::OutOfStep {
                offset: self.chunk_offset,
            });
        }
        if let Some(message) = message {
            self.pending = 0;
            self.inspect(&message)?;
        }
        Ok(())
    }

    fn inspect(&mut self, message: &MessagePayload) -> Result<(), GuardError> {
        let type_id = message.type_id;
        match type_id {
            TYPE_SET_CHUNK_SIZE => {
                // Mirror what ServerSession does with it, so both parse the next chunk alike.
                match message.to_rtmp_message() {
                    Ok(RtmpMessage::SetChunkSize { size }) if size > 0 => {
                        self.chunks.set_max_chunk_size(size as usize)?;
                        self.chunk_size = size as usize;
                    }
                    // RTMP spec 5.4.1: "The maximum chunk size SHOULD be at least 128 bytes,
                    // and MUST be at least 1 byte." A zero size would stall the parser.
                    Ok(_) => {
                        return Err(GuardError::ChunkSize {
                            why: "size 0".into(),
                        });
                    }
                    Err(e) => {
                        return Err(GuardError::ChunkSize { why: e.to_string() });
                    }
                }
            }
            TYPE_AMF0_COMMAND | TYPE_AMF3_COMMAND | TYPE_AMF0_DATA | TYPE_AMF3_DATA => {
                let mut amf0 = message.data.clone();
                // rml_rtmp decodes "AMF3" commands as AMF0 after dropping a leading 0x00
                // (Flash clients mislabel AMF0 this way); scan what it will decode.
                if type_id == TYPE_AMF3_COMMAND && amf0.first() == Some(&0) {
                    amf0 = amf0.slice(1..);
                }
                let data = &amf0[..];
                if data.len() > MAX_AMF_MESSAGE_BYTES {
                    return Err(GuardError::AmfTooLarge {
                        type_id,
                        len: data.len(),
                    });
                }
                let scan = scan_amf0(data).map_err(|e| e.into_error(type_id))?;
                if matches!(type_id, TYPE_AMF0_COMMAND | TYPE_AMF3_COMMAND) {
                    self.on_command(&scan)?;
                    if scan.first_string == Some(b"connect".as_slice()) && !self.seen_connect {
                        self.seen_connect = true;
                        self.connect = Some(amf0.clone());
                    }
                } else if scan.first_string == Some(b"@setDataFrame".as_slice()) && scan.values < 3
                {
                    return Err(GuardError::SetDataFrameTooShort {
                        values: scan.values,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, scan: &AmfScan<'_>) -> Result<(), GuardError> {
        if scan.values < 3 {
            return Err(GuardError::CommandTooShort {
                values: scan.values,
            });
        }
        self.commands += 1;
        if self.commands > MAX_COMMANDS {
            return Err(GuardError::TooManyCommands {
                what: "commands",
                limit: MAX_COMMANDS,
            });
        }
        if scan.first_string == Some(b"createStream".as_slice()) {
            self.create_streams += 1;
            if self.create_streams > MAX_CREATE_STREAM {
                return Err(GuardError::TooManyCommands {
                    what: "createStream commands",
                    limit: MAX_CREATE_STREAM,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
