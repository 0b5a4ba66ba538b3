//! Pre-screens the post-handshake RTMP chunk stream before rml_rtmp's `ServerSession` parses
//! it, refusing what would make that library panic, overflow the stack or grow without bound.
//! Sans-IO; it never alters the bytes, it only says yes or no. It must never hand rml_rtmp,
//! not even its own copy of the chunk deserializer, bytes that make it panic.
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

/// Bytes the peer may send without completing an RTMP message. A message's length field is
/// 24 bits (16 MiB); real encoders send video frames well under 8 MiB, and this bound also
/// caps what each deserializer holds for a connection.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// AMF0 commands and data messages from publishers are a few hundred bytes (onMetaData a few
/// KB).
pub const MAX_AMF_MESSAGE_BYTES: usize = 64 << 10;
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

/// AMF0 markers (AMF0 spec 2.1), as rml_amf0 0.3 accepts them.
const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;

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
        }
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
                let mut data = &message.data[..];
                // rml_rtmp decodes "AMF3" commands as AMF0 after dropping a leading 0x00
                // (Flash clients mislabel AMF0 this way); scan what it will decode.
                if type_id == TYPE_AMF3_COMMAND && data.first() == Some(&0) {
                    data = &data[1..];
                }
                if data.len() > MAX_AMF_MESSAGE_BYTES {
                    return Err(GuardError::AmfTooLarge {
                        type_id,
                        len: data.len(),
                    });
                }
                let scan = scan_amf0(data).map_err(|e| e.into_error(type_id))?;
                if matches!(type_id, TYPE_AMF0_COMMAND | TYPE_AMF3_COMMAND) {
                    self.on_command(&scan)?;
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

/// What a scan of an AMF0 value sequence found.
#[derive(Debug, PartialEq, Eq)]
struct AmfScan<'a> {
    /// Top-level values, as rml_amf0's `deserialize` would return them.
    values: usize,
    /// The first top-level value when it is a string (a command or data handler name).
    first_string: Option<&'a [u8]>,
}

enum AmfProblem {
    TooDeep,
    Malformed { offset: usize, why: &'static str },
}

impl AmfProblem {
    fn into_error(self, type_id: u8) -> GuardError {
        match self {
            AmfProblem::TooDeep => GuardError::AmfTooDeep { type_id },
            AmfProblem::Malformed { offset, why } => GuardError::AmfMalformed {
                type_id,
                offset,
                why,
            },
        }
    }
}

enum Frame {
    /// Inside an object or ECMA array: properties until an empty name and OBJECT_END.
    Object,
    /// Inside a strict array: this many values left (or until OBJECT_END / end of data).
    Array { left: u32 },
}

/// Walks an AMF0 value sequence iteratively, following rml_amf0 0.3's grammar (including its
/// leniency: a string or property name cut by the end of the data is accepted). Where this
/// walk accepts, rml_amf0's recursion is no deeper than the depth checked here; where it is
/// stricter, the message was malformed anyway.
fn scan_amf0(data: &[u8]) -> Result<AmfScan<'_>, AmfProblem> {
    let mut r = Cursor { data, pos: 0 };
    let mut stack: Vec<Frame> = Vec::new();
    let mut values = 0usize;
    let mut first_string = None;
    loop {
        let marker = match stack.last_mut() {
            None => match r.next() {
                None | Some(OBJECT_END) => break,
                Some(m) => {
                    values += 1;
                    m
                }
            },
            Some(Frame::Object) => {
                let name_len = r.u16("property name length")?;
                if name_len == 0 {
                    if r.next() != Some(OBJECT_END) {
                        return Err(r.malformed("empty property name without object end"));
                    }
                    stack.pop();
                    continue;
                }
                r.skip_lenient(usize::from(name_len));
                match r.next() {
                    None | Some(OBJECT_END) => return Err(r.malformed("property without value")),
                    Some(m) => m,
                }
            }
            Some(Frame::Array { left }) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                match r.next() {
                    None | Some(OBJECT_END) => {
                        stack.pop();
                        continue;
                    }
                    Some(m) => m,
                }
            }
        };
        let top_level = stack.is_empty();
        match marker {
            NUMBER => r.skip_strict(8, "number")?,
            BOOLEAN => r.skip_strict(1, "boolean")?,
            STRING => {
                let len = r.u16("string length")?;
                let s = r.skip_lenient(usize::from(len));
                if top_level && values == 1 {
                    first_string = Some(s);
                }
            }
            NULL | UNDEFINED => {}
            OBJECT => stack.push(Frame::Object),
            ECMA_ARRAY => {
                r.skip_strict(4, "ECMA array count")?;
                stack.push(Frame::Object);
            }
            STRICT_ARRAY => {
                let left = r.u32("strict array count")?;
                stack.push(Frame::Array { left });
            }
            _ => return Err(r.malformed("marker rml_amf0 does not decode")),
        }
        if stack.len() > MAX_AMF_DEPTH {
            return Err(AmfProblem::TooDeep);
        }
    }
    Ok(AmfScan {
        values,
        first_string,
    })
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, why: &'static str) -> AmfProblem {
        AmfProblem::Malformed {
            offset: self.pos,
            why,
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied()?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], AmfProblem> {
        let end = self.pos.saturating_add(n);
        let s = self.data.get(self.pos..end).ok_or(AmfProblem::Malformed {
            offset: self.pos,
            why: what,
        })?;
        self.pos = end;
        Ok(s)
    }

    fn skip_strict(&mut self, n: usize, what: &'static str) -> Result<(), AmfProblem> {
        self.take(n, what).map(|_| ())
    }

    /// Like `Read::read` into a buffer of `n`: takes what is there, up to `n`.
    fn skip_lenient(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.data.len());
        let s = &self.data[self.pos.min(end)..end];
        self.pos = end;
        s
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, AmfProblem> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, AmfProblem> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
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
        let mut g = Guard::new();
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
        let mut g = Guard::new();
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
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
        0x08, 0x00, 0x00, 0x00, 0x00, //
        0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb,
        0xbb,
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
}
