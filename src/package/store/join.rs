//! How renditions that join late or skip segments are numbered: a new
//! rendition, a rung that starts after the source, a rung that left the
//! ladder and came back.
//!
//! Owns keeping every rendition's media sequence and discontinuity
//! sequence numbers those of the channel. Must never renumber a segment a
//! client may already have seen.

use super::{Inner, Rendition, RenditionInfo};
use crate::package::playlist::{MediaPlaylist, Segment, SegmentHead};
use crate::package::{ledger, names};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lists `durations` as gap segments after the rendition's last one.
pub(super) fn push_gaps(
    r: &mut Rendition,
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
            },
            uri: names::segment("gap", msn),
            duration,
            gap: true,
            parts: Vec::new(),
        });
        date += duration;
    }
    while pl.segments.len() > window {
        let gone = pl.segments.remove(0);
        pl.media_sequence += 1;
        if gone.head.discontinuity {
            pl.discontinuity_sequence += 1;
        }
    }
}

/// The rendition called `name`, created with `info` if it is new.
pub(super) fn rendition_or_new<'a>(
    inner: &'a mut Inner,
    name: Arc<str>,
    info: &RenditionInfo,
    td: u32,
) -> &'a mut Rendition {
    let i = match inner.renditions.iter().position(|r| r.entry.name == name) {
        Some(i) => i,
        None => {
            let mut playlist = MediaPlaylist::new(td, inner.part_target, 0);
            playlist.discontinuity_sequence = inner.dseq_base;
            inner
                .renditions
                .push(Rendition::new(name, info.clone(), playlist));
            inner.renditions.len() - 1
        }
    };
    &mut inner.renditions[i]
}

/// The Discontinuity Sequence Number of segment `msn` in a rendition other
/// than `except` that lists it: RFC 8216bis 6.2.2, "the value of the
/// EXT-X-DISCONTINUITY-SEQUENCE tag plus the number of EXT-X-DISCONTINUITY
/// tags in the Playlist preceding the URI line of the segment" (its own
/// tag included).
pub(super) fn dsn_elsewhere(inner: &Inner, except: usize, msn: u64) -> Option<u64> {
    inner
        .renditions
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

/// (MSN, duration) of the segments `from..to` that a rendition skipped, at
/// most a window's worth (older ones are out of view anyway).
pub(super) fn gap_fill(
    inner: &Inner,
    from: u64,
    to: u64,
    window: usize,
    td: u32,
) -> Vec<(u64, Duration)> {
    let from = from.max(to.saturating_sub(window as u64));
    let listed = |msn| {
        inner
            .renditions
            .iter()
            .find_map(|o| o.playlist.segment(msn).map(|s| s.duration))
    };
    ledger::gaps(from..to, listed, td)
}
