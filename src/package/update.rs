//! The packager's output: one change to a presentation's renditions, as
//! the live store and VOD consume it.

use super::ledger::RenditionInfo;
use super::metadata::DateRange;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One change from the packager. A batch is applied atomically: RFC 8216bis
/// 6.2.1: "Changes to the Playlist file MUST be made atomically from the
/// point of view of the clients".
#[derive(Clone, Debug)]
pub(crate) enum Update {
    /// A publisher's media starts flowing. `new_playlist`: the previous
    /// playlist ended (or there was none), so this one starts afresh at
    /// `next_msn` with a newly chosen PART-TARGET.
    StreamStart {
        sid: String,
        part_target: Duration,
        new_playlist: bool,
        next_msn: u64,
    },
    /// A rendition's (new) init segment; creates the rendition on first use.
    Init {
        rendition: Arc<str>,
        info: RenditionInfo,
        uri: String,
        bytes: Bytes,
    },
    SegmentStart {
        rendition: Arc<str>,
        msn: u64,
        discontinuity: bool,
        program_date_time: SystemTime,
        map_uri: String,
    },
    Part {
        rendition: Arc<str>,
        msn: u64,
        duration: Duration,
        independent: bool,
        bytes: Bytes,
    },
    SegmentEnd {
        rendition: Arc<str>,
        msn: u64,
        duration: Duration,
        gap: bool,
        samples: u32,
    },
    /// A transcoded rung the packager will produce: listed in the
    /// multivariant playlist (at its declared bit rate) before its first
    /// segment exists. `rank` orders variants: the source is 0, rungs follow
    /// top down. Creates the rendition on first use.
    Declare {
        rendition: Arc<str>,
        width: u32,
        height: u32,
        bitrate_bps: u64,
        rank: u32,
    },
    /// The rendition is no longer produced (the ladder was re-planned
    /// without it): left out of the multivariant playlist and reports.
    Retire { rendition: Arc<str> },
    /// Timed metadata carried by the next [`Update::Part`] of the
    /// rendition: listed as EXT-X-DATERANGE while segment `msn` is.
    DateRange {
        rendition: Arc<str>,
        msn: u64,
        range: Arc<DateRange>,
    },
    /// The publisher went away; no part is coming until the next stream.
    Pause,
    /// The presentation ended: every playlist gets EXT-X-ENDLIST.
    End,
}
