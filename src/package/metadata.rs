//! Timed metadata: an ID3 payload placed at one media time in every
//! rendition, as an `emsg` box before the `moof` of the part that holds
//! that time, and as an EXT-X-DATERANGE in every rendition's playlist.
//!
//! Owns the ID3v2.4 and `emsg` bytes, the date range model, and the board
//! of events waiting for each rendition's part. Pure and sans-IO: times are
//! timeline ticks handed in, never a clock; must never hold more than a few
//! events per channel.

use super::fmp4::Fmp4Error;
use crate::media::TIMEBASE;
use bytes::Bytes;
use mp4_atom::{Emsg, EmsgTimestamp, Encode as _};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest payload an event may carry, in bytes.
pub const MAX_PAYLOAD: usize = 1024;
/// AOM "Carriage of ID3 Timed Metadata in the Common Media Application
/// Format": "the scheme_id_uri field of the emsg box MUST be set to
/// https://aomedia.org/emsg/ID3".
pub const ID3_SCHEME: &str = "https://aomedia.org/emsg/ID3";
/// The PRIV frame's owner identifier for byte payloads.
pub const PRIV_OWNER: &str = "rungs";
/// EXT-X-DATERANGE CLASS of every range this node writes.
pub const DATERANGE_CLASS: &str = "rungs.metadata";
/// Events accepted but not yet in any part: one part's worth comes at most
/// five a second, so more than this means parts stopped coming.
pub const MAX_PENDING: usize = 8;
/// Events kept for renditions that lag the source (transcoded rungs reach a
/// time later than the source does).
const MAX_KEPT: usize = 64;
/// A rendition whose parts are already this far past an event's time when
/// it first sees it (it joined late) does not carry it.
const LATE_TICKS: u64 = 2 * TIMEBASE as u64;
/// An event is forgotten once any rendition is this far past it.
const RETAIN_TICKS: u64 = 30 * TIMEBASE as u64;

/// What an event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Text: an ID3 TXXX frame (UTF-8, empty description).
    Text(String),
    /// Bytes: an ID3 PRIV frame owned by [`PRIV_OWNER`].
    Bytes(Vec<u8>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(t) => t.len(),
            Payload::Bytes(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One timed metadata event as placed: its id, payload, time and date.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedMetadata {
    /// `emsg` id; the date range's ID is `rungs-<id>`.
    pub id: u32,
    pub payload: Payload,
    /// Known duration, if the caller gave one.
    pub duration: Option<Duration>,
    /// Timeline time (90 kHz ticks) it is placed at.
    pub at: u64,
    /// The program date time of `at`: EXT-X-DATERANGE START-DATE.
    pub date: SystemTime,
}

impl TimedMetadata {
    /// The EXT-X-DATERANGE ID.
    pub fn daterange_id(&self) -> String {
        format!("rungs-{}", self.id)
    }

    /// `at` in seconds.
    pub fn media_time(&self) -> Duration {
        super::plan::duration(self.at, TIMEBASE)
    }
}

/// Writes an ID3v2.4 tag with one frame: TXXX for text, PRIV for bytes.
pub fn id3(payload: &Payload) -> Vec<u8> {
    let (frame_id, body): (&[u8; 4], Vec<u8>) = match payload {
        Payload::Text(text) => {
            // ID3v2.4 4.2.6: encoding byte ($03 = UTF-8), description
            // (empty, terminated), then the value.
            let mut b = Vec::with_capacity(text.len() + 2);
            b.extend_from_slice(&[0x03, 0x00]);
            b.extend_from_slice(text.as_bytes());
            (b"TXXX", b)
        }
        Payload::Bytes(bytes) => {
            // ID3v2.4 4.27: owner identifier (terminated), then the data.
            let mut b = Vec::with_capacity(bytes.len() + PRIV_OWNER.len() + 1);
            b.extend_from_slice(PRIV_OWNER.as_bytes());
            b.push(0);
            b.extend_from_slice(bytes);
            (b"PRIV", b)
        }
    };
    let frame_len = 10 + body.len();
    let mut out = Vec::with_capacity(10 + frame_len);
    // Header: "ID3", version 4.0, no flags, synchsafe size of what follows.
    out.extend_from_slice(b"ID3\x04\x00\x00");
    out.extend_from_slice(&synchsafe(frame_len));
    out.extend_from_slice(frame_id);
    // ID3v2.4 4.1: frame sizes are synchsafe too (v2.3's were not).
    out.extend_from_slice(&synchsafe(body.len()));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&body);
    out
}

/// A 28-bit size as four 7-bit bytes. Payloads are capped far below 2^28.
fn synchsafe(n: usize) -> [u8; 4] {
    let n = n.min(0x0FFF_FFFF) as u32;
    [
        ((n >> 21) & 0x7F) as u8,
        ((n >> 14) & 0x7F) as u8,
        ((n >> 7) & 0x7F) as u8,
        (n & 0x7F) as u8,
    ]
}

/// The `emsg` box (version 1) carrying `ev`'s ID3 tag at
/// `presentation_time` in a track of `timescale`.
pub fn emsg(
    ev: &TimedMetadata,
    timescale: u32,
    presentation_time: u64,
) -> Result<Bytes, Fmp4Error> {
    // ISO/IEC 23009-1 5.10.3.3.4: event_duration 0xFFFFFFFF is "unknown".
    let event_duration = ev.duration.map_or(u32::MAX, |d| {
        let ticks = d.as_secs_f64() * f64::from(timescale);
        ticks.round().clamp(0.0, f64::from(u32::MAX - 1)) as u32
    });
    let b = Emsg {
        timescale,
        presentation_time: EmsgTimestamp::Absolute(presentation_time),
        event_duration,
        id: ev.id,
        scheme_id_uri: ID3_SCHEME.to_owned(),
        // The AOM spec: "the value field [...] SHALL be set to an empty string".
        value: String::new(),
        message_data: id3(&ev.payload),
    };
    let mut buf = Vec::with_capacity(64 + MAX_PAYLOAD);
    b.encode(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// An EXT-X-DATERANGE as a playlist lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub id: String,
    pub start: SystemTime,
    pub duration: Option<Duration>,
    pub payload: Payload,
}

impl DateRange {
    pub fn of(ev: &TimedMetadata) -> Self {
        DateRange {
            id: ev.daterange_id(),
            start: ev.date,
            duration: ev.duration,
            payload: ev.payload.clone(),
        }
    }
}

/// Why an event was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataRefusal {
    #[error("the channel is not producing media (no publisher, or no video yet)")]
    NotLive,
    #[error("payload is {0} bytes; at most 1024 are allowed")]
    TooLarge(usize),
    #[error("too many events waiting for the next part")]
    Backlog,
}

/// Where an accepted event was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub id: u32,
    /// Media time on the channel timeline (tfdt scale), in seconds.
    pub media_time: Duration,
    pub date: SystemTime,
}

/// An event and the renditions that carry it already.
#[derive(Debug)]
struct Entry {
    ev: Arc<TimedMetadata>,
    done: Vec<Arc<str>>,
}

/// Events waiting for each rendition's next part.
#[derive(Debug, Default)]
pub(crate) struct Board {
    entries: VecDeque<Entry>,
    next_id: u32,
    /// Timeline end of the newest part any rendition published.
    newest: u64,
}

impl Board {
    /// A fresh id for the next event.
    pub fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Takes `ev` for every rendition's part that reaches its time.
    pub fn add(&mut self, ev: TimedMetadata) -> Result<(), MetadataRefusal> {
        let pending = self.entries.iter().filter(|e| e.done.is_empty()).count();
        if pending >= MAX_PENDING {
            return Err(MetadataRefusal::Backlog);
        }
        if self.entries.len() >= MAX_KEPT {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            ev: Arc::new(ev),
            done: Vec::new(),
        });
        Ok(())
    }

    /// The events `rendition`'s part `[start, end)` (track ticks at
    /// `timescale`) carries, each with its presentation time in the
    /// track's ticks; they are marked carried for that rendition.
    pub fn take(
        &mut self,
        rendition: &Arc<str>,
        timescale: u32,
        start: u64,
        end: u64,
    ) -> Vec<(Arc<TimedMetadata>, u64)> {
        let end_timeline = to_timeline(end, timescale);
        self.newest = self.newest.max(end_timeline);
        let newest = self.newest;
        self.entries
            .retain(|e| e.ev.at.saturating_add(RETAIN_TICKS) >= newest);
        let late = to_track(LATE_TICKS, timescale);
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.done.iter().any(|r| r == rendition) {
                continue;
            }
            let at = to_track(e.ev.at, timescale);
            if at >= end {
                continue;
            }
            e.done.push(rendition.clone());
            if at.saturating_add(late) < start {
                // The rendition joined after this event's time had passed.
                continue;
            }
            // Never before the part's own start: an event box describes
            // its chunk's media onwards, and a rendition that reaches the
            // time late (a part of one rung ends just past it) carries it
            // at the first instant it can.
            out.push((e.ev.clone(), at.max(start)));
        }
        out
    }
}

fn to_track(t: u64, rate: u32) -> u64 {
    let v = u128::from(t) * u128::from(rate) / u128::from(TIMEBASE);
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn to_timeline(t: u64, rate: u32) -> u64 {
    let v = u128::from(t) * u128::from(TIMEBASE) / u128::from(rate.max(1));
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
