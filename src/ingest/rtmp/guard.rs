//! Pre-screens the post-handshake RTMP chunk stream before rml_rtmp's `ServerSession` parses
//! it, refusing what would make that library panic, overflow the stack or grow without bound.
//! Sans-IO; it never alters the bytes, it only says yes or no.
//!
//! Why it exists (rml_rtmp 0.8.0 / rml_amf0 0.3.0, read from their sources):
//! - AMF0 values are decoded recursively with no depth limit: a few kilobytes of nested
//!   objects overflow the stack, which aborts the whole process (not catchable).
//! - `amf0_command::deserialize` does `drain(..3)` and `handle_amf0_data_set_data_frame`
//!   indexes `data[0]`/`remove(1)` without checking lengths: short messages panic.
//! - The chunk deserializer keeps one partial payload for all chunk streams; an interleaved
//!   shorter message underflows `length - current_payload_length` (a panic in debug builds,
//!   and in release a payload that only grows).
//! - Every `createStream` adds an entry to a map that is never pruned.
//!
//! The guard runs its own `ChunkDeserializer` over the same bytes, so it sees each message
//! before the session does. Both are the same deterministic code fed the same bytes and the
//! same chunk size changes, so they agree on message boundaries.

use rml_rtmp::chunk_io::{ChunkDeserializationError, ChunkDeserializer};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};

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

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkDeserializationError),
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
    /// Bytes fed since a message last completed (counted per `check` call, so an
    /// overestimate by at most one call's input).
    pending: usize,
    commands: u32,
    create_streams: u32,
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
            pending: 0,
            commands: 0,
            create_streams: 0,
        }
    }

    /// Checks the next bytes of the chunk stream. They must be exactly the bytes the session
    /// is about to be given, in order. An error means the session must not see them.
    pub fn check(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        self.pending = self.pending.saturating_add(bytes.len());
        let mut input = bytes;
        while let Some(message) = self.chunks.get_next_message(input)? {
            // The deserializer buffers everything it was given; later calls pass nothing new.
            input = &[];
            self.pending = bytes.len();
            self.inspect(&message)?;
        }
        if self.pending > MAX_PENDING_BYTES {
            return Err(GuardError::NoProgress {
                bytes: self.pending,
            });
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

    #[test]
    fn zero_chunk_size_is_refused() {
        assert!(matches!(
            Guard::new().check(&chunks(TYPE_SET_CHUNK_SIZE, vec![0, 0, 0, 0])),
            Err(GuardError::ChunkSize { .. })
        ));
    }
}
