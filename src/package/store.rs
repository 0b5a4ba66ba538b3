//! The part store: one channel's playlists, init segments, parts and
//! segments in RAM, shared by the packaging thread (writes) and HTTP
//! handlers (reads, blocking reloads).
//!
//! Owns the live window and when media leaves it. Must never hold its lock
//! across an await, never let a waiter poll (they await a watch), and never
//! keep more than the playlist window plus a small margin.

mod join;
mod read;

pub use read::{MediaFile, PlaylistRequest, StoreError};

use join::{dsn_elsewhere, gap_fill, push_gaps, rendition_or_new};

use super::PackageConfig;
pub use super::ledger::RenditionInfo;
use super::ledger::{Entry, SegmentStats};
use super::names;
use super::playlist::{MediaPlaylist, OpenSegment, Part, Segment, SegmentHead};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Segments whose media stays downloadable after leaving the playlist.
/// RFC 8216bis 6.2.2: a removed segment must stay available until "the time
/// at which it first appeared in the Playlist plus the segment's
/// Availability Duration" (its duration plus the playlist's).
const SEGMENT_MARGIN: usize = 3;
/// Init segments kept per rendition; older ones serve no listed segment.
const INITS_KEPT: usize = 4;

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
    /// The publisher went away; no part is coming until the next stream.
    Pause,
    /// The presentation ended: every playlist gets EXT-X-ENDLIST.
    End,
}

#[derive(Debug)]
struct Stored {
    sid: String,
    parts: Vec<Bytes>,
    /// Part bytes were released; the whole segment may remain.
    parts_dropped: bool,
    whole: Option<Bytes>,
}

#[derive(Debug)]
struct Rendition {
    entry: Entry,
    /// `info` comes from an init segment of the current geometry (a declared
    /// rung knows its codecs only once its encoder's configuration arrives).
    configured: bool,
    playlist: MediaPlaylist,
    inits: VecDeque<(String, Bytes)>,
    media: BTreeMap<u64, Stored>,
}

#[derive(Debug)]
struct Inner {
    renditions: Vec<Rendition>,
    /// The stream producing now; `None` between publishers and after the end.
    sid: Option<String>,
    part_target: Duration,
    /// EXT-X-DISCONTINUITY-SEQUENCE a rendition created now starts with.
    dseq_base: u64,
}

impl Rendition {
    fn new(name: Arc<str>, info: RenditionInfo, playlist: MediaPlaylist) -> Self {
        Rendition {
            entry: Entry::new(name, info),
            configured: false,
            playlist,
            inits: VecDeque::new(),
            media: BTreeMap::new(),
        }
    }
}

impl Inner {
    fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| &*r.entry.name == name)
    }

    fn rendition_mut(&mut self, name: &str) -> Option<&mut Rendition> {
        self.renditions.iter_mut().find(|r| &*r.entry.name == name)
    }
}

/// One channel's packaged media, shared between its packager and HTTP.
#[derive(Debug)]
pub struct ChannelStore {
    channel_id: String,
    cfg: PackageConfig,
    inner: Mutex<Inner>,
    /// Bumped after every batch of updates; waiters await its change.
    version: watch::Sender<u64>,
}

impl ChannelStore {
    pub fn new(channel_id: &str, cfg: &PackageConfig) -> Arc<Self> {
        let cfg = cfg.sanitized();
        Arc::new(ChannelStore {
            channel_id: channel_id.to_owned(),
            inner: Mutex::new(Inner {
                renditions: Vec::new(),
                sid: None,
                part_target: cfg.part_target,
                dseq_base: 0,
            }),
            cfg,
            version: watch::Sender::new(0),
        })
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// Names of the renditions the current (or last) stream produced.
    pub fn renditions(&self) -> Vec<String> {
        self.lock()
            .renditions
            .iter()
            .filter(|r| r.entry.active)
            .map(|r| r.entry.name.to_string())
            .collect()
    }

    /// Whether any rendition ever published a part or segment: a stream that
    /// never did has nothing for players to wait for.
    pub fn has_media(&self) -> bool {
        self.lock().renditions.iter().any(|r| {
            !r.playlist.segments.is_empty()
                || r.playlist
                    .open
                    .as_ref()
                    .is_some_and(|o| !o.parts.is_empty())
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while applying updates leaves a half-applied batch; serving
        // it is still better than taking every HTTP request down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target_duration(&self) -> u32 {
        self.cfg.target_duration()
    }

    /// Applies one batch from the packager and wakes every waiter once.
    pub(crate) fn apply(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for u in updates {
                self.apply_one(&mut inner, u);
            }
            let sid = inner.sid.clone();
            for r in &mut inner.renditions {
                let pl = &mut r.playlist;
                // RFC 8216bis 6.2.6: "A hinted resource MUST be available for
                // request when its EXT-X-PRELOAD-HINT tag is added": only a
                // producing stream hints, and the part routes hold the
                // request until the part exists.
                pl.preload_hint = match (&sid, r.entry.active && !pl.ended) {
                    (Some(sid), true) => {
                        let next = pl.open.as_ref().map_or(0, |o| o.parts.len() as u32);
                        Some(names::part(sid, pl.next_msn(), next))
                    }
                    _ => None,
                };
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn apply_one(&self, inner: &mut Inner, u: Update) {
        match u {
            Update::StreamStart {
                sid,
                part_target,
                new_playlist,
                next_msn,
            } => {
                inner.sid = Some(sid);
                if new_playlist {
                    self.new_playlists(inner, part_target, next_msn);
                }
            }
            Update::Init {
                rendition,
                info,
                uri,
                bytes,
            } => {
                let r = rendition_or_new(inner, rendition, &info, self.target_duration());
                r.entry.active = true;
                r.configured = true;
                r.entry.info = info;
                r.inits.push_back((uri, bytes));
                while r.inits.len() > INITS_KEPT {
                    r.inits.pop_front();
                }
            }
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
                };
                self.start_segment(inner, &rendition, head);
            }
            Update::Part {
                rendition,
                msn,
                duration,
                independent,
                bytes,
            } => {
                if let Some(r) = inner.rendition_mut(&rendition) {
                    add_part(r, msn, duration, independent, bytes);
                }
            }
            Update::SegmentEnd {
                rendition,
                msn,
                duration,
                gap,
                samples,
            } => {
                if let Some(r) = inner.rendition_mut(&rendition) {
                    self.end_segment(r, msn, duration, gap, samples);
                }
            }
            Update::Declare {
                rendition,
                width,
                height,
                bitrate_bps,
                rank,
            } => self.declare(inner, rendition, (width, height), bitrate_bps, rank),
            Update::Retire { rendition } => {
                if let Some(r) = inner.rendition_mut(&rendition) {
                    r.entry.active = false;
                    r.playlist.open = None;
                }
            }
            Update::Pause => inner.sid = None,
            Update::End => {
                inner.sid = None;
                for r in inner.renditions.iter_mut().filter(|r| r.entry.active) {
                    r.playlist.open = None;
                    r.playlist.ended = true;
                }
            }
        }
    }

    /// A stream that starts a new playlist (the previous one ended, or
    /// there was none): every rendition starts afresh at `next_msn`.
    fn new_playlists(&self, inner: &mut Inner, part_target: Duration, next_msn: u64) {
        inner.part_target = part_target;
        // One sequence for every rendition: players pair renditions'
        // segments by it. A playlist that replaces one clients may have seen
        // counts on from it; a rung declared before any media starts where
        // the source does.
        let seen = inner.renditions.iter().any(|r| {
            let p = &r.playlist;
            p.ended || p.open.is_some() || !p.segments.is_empty()
        });
        let newest = inner
            .renditions
            .iter()
            .map(|r| r.playlist.discontinuity_sequence);
        let dseq = newest.max().map_or(0, |d| d + u64::from(seen));
        inner.dseq_base = dseq;
        let td = self.target_duration();
        for r in &mut inner.renditions {
            r.entry.active = false;
            r.playlist = MediaPlaylist::new(td, part_target, next_msn);
            r.playlist.discontinuity_sequence = dseq;
            r.entry.stats.clear();
        }
    }

    /// Opens segment `head.msn` of `rendition`, listing the segments it
    /// skipped as gaps.
    fn start_segment(&self, inner: &mut Inner, rendition: &str, head: SegmentHead) {
        let Some(sid) = inner.sid.clone() else { return };
        let (td, window) = (self.target_duration(), self.cfg.playlist_segments);
        let Some(i) = inner
            .renditions
            .iter()
            .position(|r| &*r.entry.name == rendition)
        else {
            return;
        };
        let msn = head.msn;
        let pl = &inner.renditions[i].playlist;
        let next = pl.next_msn();
        let fresh = pl.segments.is_empty() && pl.open.is_none();
        if !fresh && msn < next {
            tracing::warn!(channel = %self.channel_id, %rendition, msn, next, "a segment that is already listed; ignored");
            return;
        }
        let missing = if fresh || msn == next {
            Vec::new()
        } else {
            gap_fill(inner, next, msn, window, td)
        };
        if fresh {
            // A rendition that joins late (or a fresh playlist) starts at
            // whatever MSN the channel is at, counting discontinuities as the
            // renditions already there do.
            let dsn = dsn_elsewhere(inner, i, msn);
            let pl = &mut inner.renditions[i].playlist;
            pl.media_sequence = msn;
            if let Some(d) = dsn {
                pl.discontinuity_sequence = d.saturating_sub(u64::from(head.discontinuity));
            }
        }
        let r = &mut inner.renditions[i];
        if !missing.is_empty() {
            tracing::warn!(channel = %self.channel_id, %rendition, from = next, to = msn, "segments never produced are listed as gaps");
            r.playlist.open = None;
            push_gaps(r, missing, &head.map_uri, head.program_date_time, window);
        }
        r.playlist.open = Some(OpenSegment {
            head,
            parts: Vec::new(),
        });
        r.media.insert(
            msn,
            Stored {
                sid,
                parts: Vec::new(),
                parts_dropped: false,
                whole: None,
            },
        );
    }

    /// A rung the packager will produce, listed at its declared bit rate
    /// until it is measured.
    fn declare(
        &self,
        inner: &mut Inner,
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
        let r = rendition_or_new(inner, rendition, &info, self.target_duration());
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

    fn end_segment(
        &self,
        r: &mut Rendition,
        msn: u64,
        duration: Duration,
        gap: bool,
        samples: u32,
    ) {
        if r.playlist.open.as_ref().is_none_or(|o| o.head.msn != msn) {
            return;
        }
        let Some(open) = r.playlist.open.take() else {
            return;
        };
        let Some(stored) = r.media.get_mut(&msn) else {
            return;
        };
        let len = stored.parts.iter().map(Bytes::len).sum();
        let mut whole = BytesMut::with_capacity(len);
        for p in &stored.parts {
            whole.extend_from_slice(p);
        }
        stored.whole = (!gap).then(|| whole.freeze());
        r.entry.stats.push_back(SegmentStats {
            bytes: len,
            duration,
            samples,
            independent: open.parts.first().is_some_and(|p| p.independent),
            gap,
        });
        let pl = &mut r.playlist;
        pl.segments.push(Segment {
            uri: names::segment(&stored.sid, msn),
            head: open.head,
            duration,
            gap,
            parts: open.parts,
        });
        // RFC 8216bis 6.2.2: the media sequence "MUST be incremented by 1 for
        // every Media Segment that is removed", and "If the server removes an
        // EXT-X-DISCONTINUITY tag [...] it MUST increment the value of the
        // EXT-X-DISCONTINUITY-SEQUENCE tag".
        while pl.segments.len() > self.cfg.playlist_segments {
            let gone = pl.segments.remove(0);
            pl.media_sequence += 1;
            if gone.head.discontinuity {
                pl.discontinuity_sequence += 1;
            }
        }
        while r.entry.stats.len() > self.cfg.playlist_segments {
            r.entry.stats.pop_front();
        }
        // Count-based, not MSN-based: after a new playlist starts, the old
        // stream's tail must stay downloadable for players finishing it.
        while r.media.len() > self.cfg.playlist_segments + SEGMENT_MARGIN + 1 {
            r.media.pop_first();
        }
        let keep_parts = self.parts_kept();
        let complete: Vec<u64> = r
            .media
            .iter()
            .filter(|(_, s)| s.whole.is_some())
            .map(|(m, _)| *m)
            .collect();
        for m in complete.iter().rev().skip(keep_parts) {
            if let Some(s) = r.media.get_mut(m) {
                s.parts = Vec::new();
                s.parts_dropped = true;
            }
        }
    }

    /// Complete segments whose parts stay downloadable. RFC 8216bis 6.2.2:
    /// "EXT-X-PART tags SHOULD be removed from the Playlist after they are
    /// greater than three Target Durations from the end of the Playlist.
    /// Clients MUST be able to download the Partial Segment for at least
    /// three Target Durations after the EXT-X-PART tag is removed".
    fn parts_kept(&self) -> usize {
        let six_targets = 6_000 * u128::from(self.target_duration());
        let segs = six_targets.div_ceil(self.cfg.segment_target.as_millis().max(1));
        usize::try_from(segs)
            .unwrap_or(usize::MAX)
            .saturating_add(2)
    }
}

/// Part `msn`.N of the open segment, if `msn` is the one open.
fn add_part(r: &mut Rendition, msn: u64, duration: Duration, independent: bool, bytes: Bytes) {
    let (Some(open), Some(stored)) = (r.playlist.open.as_mut(), r.media.get_mut(&msn)) else {
        return;
    };
    if open.head.msn != msn {
        return;
    }
    let index = open.parts.len() as u32;
    open.parts.push(Part {
        uri: names::part(&stored.sid, msn, index),
        duration,
        independent,
    });
    stored.parts.push(bytes);
}

#[cfg(test)]
mod tests;
