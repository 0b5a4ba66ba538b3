//! A bounded, iterative walk over AMF0 values: how the guard learns a
//! message's nesting depth and command name without rml_amf0's unbounded
//! recursion, and what `connect.rs` runs before it lets rml_amf0 decode a connect.

use super::{GuardError, MAX_AMF_DEPTH};

/// AMF0 markers (AMF0 spec 2.1), as rml_amf0 0.3 accepts them.
pub(super) const NUMBER: u8 = 0x00;
pub(super) const BOOLEAN: u8 = 0x01;
pub(super) const STRING: u8 = 0x02;
pub(super) const OBJECT: u8 = 0x03;
pub(super) const NULL: u8 = 0x05;
pub(super) const UNDEFINED: u8 = 0x06;
pub(super) const ECMA_ARRAY: u8 = 0x08;
pub(super) const OBJECT_END: u8 = 0x09;
pub(super) const STRICT_ARRAY: u8 = 0x0a;

/// What a scan of an AMF0 value sequence found.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::ingest::rtmp) struct AmfScan<'a> {
    /// Top-level values, as rml_amf0's `deserialize` would return them.
    pub(super) values: usize,
    /// The first top-level value when it is a string (a command or data handler name).
    pub(super) first_string: Option<&'a [u8]>,
}

pub(in crate::ingest::rtmp) enum AmfProblem {
    TooDeep,
    Malformed { offset: usize, why: &'static str },
}

impl AmfProblem {
    pub(super) fn into_error(self, type_id: u8) -> GuardError {
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
pub(in crate::ingest::rtmp) fn scan_amf0(data: &[u8]) -> Result<AmfScan<'_>, AmfProblem> {
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
