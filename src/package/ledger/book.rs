//! The ledger's book of one presentation's renditions, live or VOD: each
//! rendition's [`Entry`] and media playlist (segments, parts, numbering,
//! gaps), built from the packager's updates alone.
//!
//! Owns keeping every rendition's media sequence and discontinuity sequence
//! numbers those of the channel, for renditions that join late or skip
//! segments (a new rendition, a rung that starts after the source, a rung
//! that left the ladder and came back). Must never renumber a segment a
//! client may already have seen. The bytes are the caller's: each applied
//! update hands back what it means for them ([`Effect`]).

use super::{Entry, RenditionInfo, SegmentStats, gaps};
use crate::package::Update;
use crate::package::metadata::DateRange;
use crate::package::names;
use crate::package::playlist::{MediaPlaylist, OpenSegment, Part, Segment, SegmentHead};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One rendition in the book, with what the caller keeps beside it (`T`:
/// the live store's bytes in RAM, VOD's file sizes).
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    pub entry: Entry,
    /// `info` comes from an init segment of the current geometry (a declared
    /// rung knows its codecs only once its encoder's configuration arrives).
    pub configured: bool,
    pub playlist: MediaPlaylist,
    /// The open segment's stream and the bytes of its parts so far.
    open_sid: String,
    open_bytes: usize,
    pub held: T,
}

/// What an applied update means for the caller's bytes.
#[derive(Debug)]
pub(crate) enum Effect {
    None,
    /// Rendition `index` has a new init segment.
    Init {
        index: usize,
        uri: String,
        bytes: Bytes,
    },
    /// Rendition `index` opened segment `msn` of stream `sid`.
    Opened {
        index: usize,
        msn: u64,
        sid: String,
    },
    /// A part of the segment rendition `index` has open.
    Part {
        index: usize,
        msn: u64,
        bytes: Bytes,
    },
    /// Rendition `index` listed segment `msn` complete (as `uri`).
    Closed {
        index: usize,
        msn: u64,
        uri: String,
        gap: bool,
    },
}

/// The renditions of one presentation.
#[derive(Debug)]
pub(crate) struct Ledger<T> {
    pub renditions: Vec<Tracked<T>>,
    /// The stream producing now; `None` between publishers and after the end.
    pub sid: Option<String>,
    part_target: Duration,
    /// EXT-X-DISCONTINUITY-SEQUENCE a rendition created now starts with.
    dseq_base: u64,
    target_duration: u32,
    /// Complete segments a playlist lists (live: the window; VOD: all).
    window: usize,
    /// For warnings: the channel, or the VOD.
    label: Arc<str>,
}

impl<T: Default> Ledger<T> {
    /// `part_target` until a stream chooses its own.
    pub fn new(label: &str, target_duration: u32, part_target: Duration, window: usize) -> Self {
        Ledger {
            renditions: Vec::new(),
            sid: None,
            part_target,
            dseq_base: 0,
            target_duration,
            window,
            label: label.into(),
        }
    }

    /// PART-TARGET of the current (or last) playlist.
    pub fn part_target(&self) -> Duration {
        self.part_target
    }

    pub fn rendition(&self, name: &str) -> Option<&Tracked<T>> {
        self.renditions.iter().find(|r| &*r.entry.name == name)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.renditions.iter().position(|r| &*r.entry.name == name)
    }

    /// Applies one update to the book; returns what it means for the bytes.
    pub fn apply(&mut self, u: Update) -> Effect {
        match u {
            Update::StreamStart {
                sid,
                part_target,
                new_playlist,
                next_msn,
            } => {
                self.sid = Some(sid);
                if new_playlist {
                    self.new_playlists(part_target, next_msn);
                }
                Effect::None
            }
            Update::Init {
                rendition,
                info,
                uri,
                bytes,
            } => Effect::Init {
                index: self.init(rendition, info),
                uri,
                bytes,
            },
            Update::SegmentStart {
                rendition,
                msn,
                discontinuity,
                program_date_time,
                map_uri,
            } => {
                let head = SegmentHead {
                    msn,
                    discontinuity,
                    map_uri,
                    program_date_time,
                    date_ranges: Vec::new(),
                };
                self.start_segment(&rendition, head)
            }
            Update::Part {
                rendition,
                msn,
                duration,
                independent,
                bytes,
            } => self.part(&rendition, msn, duration, independent, bytes),
            Update::SegmentEnd {
                rendition,
                msn,
                duration,
                gap,
                samples,
            } => match self.index(&rendition) {
                Some(index) => self.end_segment(index, msn, duration, gap, samples),
                None => Effect::None,
            },
            Update::Declare {
                rendition,
                width,
                height,
                bitrate_bps,
                rank,
            } => {
                self.declare(rendition, (width, height), bitrate_bps, rank);
                Effect::None
            }
            Update::Retire { rendition } => {
                self.retire(&rendition);
                Effect::None
            }
            Update::DateRange {
                rendition,
                msn,
                range,
            } => {
                self.date_range(&rendition, msn, range);
                Effect::None
            }
            Update::Pause => {
                self.sid = None;
                Effect::None
            }
            Update::End => {
                self.end();
                Effect::None
            }
        }
    }

    /// A rendition's (new) init segment: its codecs are known.
    fn init(&mut self, rendition: Arc<str>, info: RenditionInfo) -> usize {
        let index = self.rendition_or_new(rendition, &info);
        let r = &mut self.renditions[index];
        r.entry.active = true;
        r.configured = true;
        r.entry.info = info;
        index
    }

    /// Part `msn`.N of `rendition`'s open segment, if `msn` is the one open.
    fn part(
        &mut self,
        rendition: &str,
        msn: u64,
        duration: Duration,
        independent: bool,
        bytes: Bytes,
    ) -> Effect {
        let Some(index) = self.index(rendition) else {
            return Effect::None;
        };
        let r = &mut self.renditions[index];
        let Some(open) = r.playlist.open.as_mut().filter(|o| o.head.msn == msn) else {
            return Effect::None;
        };
        let part = open.parts.len() as u32;
        open.parts.push(Part {
            uri: names::part(&r.open_sid, msn, part),
            duration,
            independent,
        });
        r.open_bytes += bytes.len();
        Effect::Part { index, msn, bytes }
    }

    /// A date range listed with `rendition`'s open segment `msn`.
    fn date_range(&mut self, rendition: &str, msn: u64, range: Arc<DateRange>) {
        let Some(index) = self.index(rendition) else {
            return;
        };
        let pl = &mut self.renditions[index].playlist;
        if let Some(open) = pl.open.as_mut().filter(|o| o.head.msn == msn) {
            open.head.date_ranges.push(range);
        }
    }

    /// The rendition is no longer produced: its open segment is dropped.
    fn retire(&mut self, rendition: &str) {
        if let Some(i) = self.index(rendition) {
            let r = &mut self.renditions[i];
            r.entry.active = false;
            r.playlist.open = None;
        }
    }

    /// The presentation ended: every playlist is complete.
    fn end(&mut self) {
        self.sid = None;
        for r in self.renditions.iter_mut().filter(|r| r.entry.active) {
            r.playlist.open = None;
            r.playlist.ended = true;
        }
    }

    /// A stream that starts a new playlist (the previous one ended, or
    /// there was none): every rendition starts afresh at `next_msn`.
    fn new_playlists(&mut self, part_target: Duration, next_msn: u64) {
        self.part_target = part_target;
        // One sequence for every rendition: players pair renditions'
        // segments by it. A playlist that replaces one clients may have seen
        // counts on from it; a rung declared before any media starts where
        // the source does.
        let seen = self.renditions.iter().any(|r| {
            let p = &r.playlist;
            p.ended || p.open.is_some() || !p.segments.is_empty()
        });
        let newest = self
            .renditions
            .iter()
            .map(|r| r.playlist.discontinuity_sequence);
        let dseq = newest.max().map_or(0, |d| d + u64::from(seen));
        self.dseq_base = dseq;
        for r in &mut self.renditions {
            r.entry.active = false;
            r.playlist = MediaPlaylist::new(self.target_duration, part_target, next_msn);
            r.playlist.discontinuity_sequence = dseq;
            r.entry.stats.clear();
        }
    }

    /// The index of the rendition called `name`, created with `info` if it
    /// is new.
    fn rendition_or_new(&mut self, name: Arc<str>, info: &RenditionInfo) -> usize {
        if let Some(i) = self.index(&name) {
            return i;
        }
        let mut playlist = MediaPlaylist::new(self.target_duration, self.part_target, 0);
        playlist.discontinuity_sequence = self.dseq_base;
        self.renditions.push(Tracked {
            entry: Entry::new(name, info.clone()),
            configured: false,
            playlist,
            open_sid: String::new(),
            open_bytes: 0,
            held: T::default(),
        });
        self.renditions.len() - 1
    }

    /// A rung the packager will produce, listed at its declared bit rate
    /// until it is measured.
    fn declare(
        &mut self,
        rendition: Arc<str>,
        (width, height): (u32, u32),
        bitrate_bps: u64,
        rank: u32,
    ) {
        let info = RenditionInfo::Video {
            codecs: String::new(),
            width,
            height,
        };
        let i = self.rendition_or_new(rendition, &info);
        let r = &mut self.renditions[i];
        r.entry.declare(rank, bitrate_bps);
        // A new geometry needs the new encoder's codecs before the
        // multivariant playlist can name them.
        let same_size = matches!(&r.entry.info,
            RenditionInfo::Video { width: w, height: h, .. } if (*w, *h) == (width, height));
        if !same_size {
            r.entry.info = info;
            r.configured = false;
        }
    }

    /// Opens segment `head.msn` of `rendition`, listing the segments it
    /// skipped as gaps.
    fn start_segment(&mut self, rendition: &str, head: SegmentHead) -> Effect {
        let Some(sid) = self.sid.clone() else {
            return Effect::None;
        };
        let Some(i) = self.index(rendition) else {
            return Effect::None;
        };
        let msn = head.msn;
        let pl = &self.renditions[i].playlist;
        let next = pl.next_msn();
        let fresh = pl.segments.is_empty() && pl.open.is_none();
        if !fresh && msn < next {
            tracing::warn!(channel = %self.label, %rendition, msn, next, "a segment that is already listed; ignored");
            return Effect::None;
        }
        let missing = if fresh || msn == next {
            Vec::new()
        } else {
            self.gap_fill(next, msn)
        };
        if fresh {
            // A rendition that joins late (or a fresh playlist) starts at
            // whatever MSN the channel is at, counting discontinuities as the
            // renditions already there do.
            let dsn = self.dsn_elsewhere(i, msn);
            let pl = &mut self.renditions[i].playlist;
            pl.media_sequence = msn;
            if let Some(d) = dsn {
                pl.discontinuity_sequence = d.saturating_sub(u64::from(head.discontinuity));
            }
        }
        let window = self.window;
        let r = &mut self.renditions[i];
        if !missing.is_empty() {
            tracing::warn!(channel = %self.label, %rendition, from = next, to = msn, "segments never produced are listed as gaps");
            r.playlist.open = None;
            push_gaps(r, missing, &head.map_uri, head.program_date_time, window);
        }
        r.playlist.open = Some(OpenSegment {
            head,
            parts: Vec::new(),
        });
        r.open_sid.clone_from(&sid);
        r.open_bytes = 0;
        Effect::Opened { index: i, msn, sid }
    }

    /// Lists segment `msn` of rendition `i` complete, if it is the open one.
    fn end_segment(
        &mut self,
        i: usize,
        msn: u64,
        duration: Duration,
        gap: bool,
        samples: u32,
    ) -> Effect {
        let window = self.window;
        let r = &mut self.renditions[i];
        let Some(open) = r.playlist.open.take_if(|o| o.head.msn == msn) else {
            return Effect::None;
        };
        // A gap segment is never loaded (EXT-X-GAP): it names no stream.
        let uri = names::segment(if gap { "gap" } else { &r.open_sid }, msn);
        r.entry.stats.push_back(SegmentStats {
            bytes: r.open_bytes,
            duration,
            samples,
            independent: open.parts.first().is_none_or(|p| p.independent),
            gap,
        });
        r.playlist.segments.push(Segment {
            uri: uri.clone(),
            head: open.head,
            duration,
            gap,
            parts: open.parts,
        });
        trim(r, window);
        Effect::Closed {
            index: i,
            msn,
            uri,
            gap,
        }
    }

    /// The Discontinuity Sequence Number of segment `msn` in a rendition
    /// other than `except` that lists it: RFC 8216bis 6.2.2, "the value of
    /// the EXT-X-DISCONTINUITY-SEQUENCE tag plus the number of
    /// EXT-X-DISCONTINUITY tags in the Playlist preceding the URI line of
    /// the segment" (its own tag included).
    fn dsn_elsewhere(&self, except: usize, msn: u64) -> Option<u64> {
        self.renditions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .map(|(_, r)| &r.playlist)
            .find_map(|pl| {
                let open = pl.open.as_ref().filter(|o| o.head.msn == msn);
                if pl.segment(msn).is_none() && open.is_none() {
                    return None;
                }
                let heads = pl.segments.iter().map(|s| &s.head);
                let tags = heads
                    .chain(open.map(|o| &o.head))
                    .filter(|h| h.msn <= msn && h.discontinuity)
                    .count();
                Some(pl.discontinuity_sequence + tags as u64)
            })
    }

    /// (MSN, duration) of the segments `from..to` that a rendition skipped,
    /// at most a window's worth (older ones are out of view anyway).
    fn gap_fill(&self, from: u64, to: u64) -> Vec<(u64, Duration)> {
        let window = u64::try_from(self.window).unwrap_or(u64::MAX);
        let from = from.max(to.saturating_sub(window));
        let listed = |msn| {
            self.renditions
                .iter()
                .find_map(|o| o.playlist.segment(msn).map(|s| s.duration))
        };
        gaps(from..to, listed, self.target_duration)
    }
}

/// Lists `durations` as gap segments after the rendition's last one.
fn push_gaps<T>(
    r: &mut Tracked<T>,
    durations: Vec<(u64, Duration)>,
    map_uri: &str,
    program_date_time: SystemTime,
    window: usize,
) {
    let pl = &mut r.playlist;
    if let Some(&(first, _)) = durations.first()
        && first > pl.next_msn()
    {
        // Further behind than the window: the old segments are gone
        // from view anyway.
        pl.media_sequence = first;
        pl.segments.clear();
        r.entry.stats.clear();
    }
    let total: Duration = durations.iter().map(|(_, d)| *d).sum();
    let mut date = program_date_time
        .checked_sub(total)
        .unwrap_or(program_date_time);
    for (msn, duration) in durations {
        pl.segments.push(Segment {
            head: SegmentHead {
                msn,
                discontinuity: false,
                map_uri: map_uri.to_owned(),
                program_date_time: date,
                date_ranges: Vec::new(),
            },
            uri: names::segment("gap", msn),
            duration,
            gap: true,
            parts: Vec::new(),
        });
        r.entry.stats.push_back(SegmentStats {
            bytes: 0,
            duration,
            samples: 0,
            independent: true,
            gap: true,
        });
        date += duration;
    }
    trim(r, window);
}

/// IDs kept for RECENTLY-REMOVED-DATERANGES.
const MAX_REMOVED_DATE_RANGES: usize = 64;

/// Keeps the newest `window` segments listed, and their statistics. RFC
/// 8216bis 6.2.2: the media sequence "MUST be incremented by 1 for every
/// Media Segment that is removed", and "If the server removes an
/// EXT-X-DISCONTINUITY tag [...] it MUST increment the value of the
/// EXT-X-DISCONTINUITY-SEQUENCE tag".
fn trim<T>(r: &mut Tracked<T>, window: usize) {
    let pl = &mut r.playlist;
    if pl.segments.len() > window {
        let gone = pl.segments.len() - window;
        for s in pl.segments.drain(..gone) {
            for d in &s.head.date_ranges {
                pl.removed_date_ranges
                    .push_back((d.id.clone(), pl.media_sequence));
            }
            pl.media_sequence += 1;
            if s.head.discontinuity {
                pl.discontinuity_sequence += 1;
            }
        }
    }
    // "Recently": within a window's worth of segments, and a bounded list.
    let horizon = pl
        .media_sequence
        .saturating_sub(u64::try_from(window).unwrap_or(u64::MAX));
    while pl
        .removed_date_ranges
        .front()
        .is_some_and(|(_, at)| *at < horizon)
        || pl.removed_date_ranges.len() > MAX_REMOVED_DATE_RANGES
    {
        pl.removed_date_ranges.pop_front();
    }
    let stats = &mut r.entry.stats;
    stats.drain(..stats.len().saturating_sub(window));
}
