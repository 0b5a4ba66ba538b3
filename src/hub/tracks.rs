//! The further video tracks of a multitrack publish (Enhanced RTMP v2, the broadcaster's own
//! ladder): which become rungs passed through as sent, whether their keyframes line up with
//! the source's, and the ladder they make together with the transcoded rungs.
//!
//! Sans-IO and clock-free, owned by the channel core. Must never keep a track in the ladder
//! once one of its frames sits where the source has a keyframe without being one: players
//! switch renditions at segment boundaries, which are the source's keyframes, and a rung
//! that cannot start a segment there is one they cannot switch to.

use super::status::{TrackInfo, VideoInfo};
use crate::media::{Packet, TIMEBASE, VideoParams};
use crate::package::RungDecl;
use crate::registry::TrackUse;
use crate::transcode::ladder::Rung;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Presentation times this close (90 kHz ticks) are the same instant: FLV carries
/// milliseconds, and every track of one encoder is stamped from the same clock.
const SAME_TIME: i64 = 90;
/// Source keyframes remembered for the alignment check: several GOPs, far more than the
/// interleaving of a multitrack publisher's tracks ever spans.
const SOURCE_KEYS: usize = 8;
/// Frames of each track remembered for the alignment check: seconds of video.
const RECENT: usize = 240;
/// Media time a track's rates are measured over.
const RATE_WINDOW: i64 = TIMEBASE as i64 * 4;

/// Where a rung of the composed ladder comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The pipeline's transcoded rung at this index of its plan.
    Planned(usize),
    /// The publisher's track with this id, passed through.
    Track(u8),
}

/// One rung of the composed ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub decl: RungDecl,
    pub slot: Slot,
}

/// What becomes of one track packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Package it as rung `index` of the composed ladder.
    Forward(usize),
    /// Not a rung (ignored, dropped, or not configured yet).
    Ignore,
    /// This frame showed the track misaligned: it left the ladder.
    Dropped(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Rung,
    /// Never a rung, and why.
    Ignored(&'static str),
    /// Left the ladder, and why.
    Dropped(String),
}

#[derive(Debug)]
struct Track {
    params: Arc<VideoParams>,
    state: State,
    /// Announced by the current publish session.
    current: bool,
    /// (pts, keyframe) of its latest frames, in decode order.
    recent: VecDeque<(i64, bool)>,
    /// (dts, bytes) over the last [`RATE_WINDOW`].
    rate: VecDeque<(i64, usize)>,
}

impl Track {
    fn name(&self) -> String {
        format!("{}p", self.params.height)
    }

    fn meter(&mut self, p: &Packet) {
        if self.rate.back().is_some_and(|&(t, _)| p.dts < t) {
            self.rate.clear();
        }
        self.rate.push_back((p.dts, p.data.len()));
        while self.rate.len() > 1
            && self.rate.back().map_or(0, |b| b.0) - self.rate[0].0 > RATE_WINDOW
        {
            self.rate.pop_front();
        }
    }

    /// Frames per second and bits per second over the window, once it spans a second.
    fn rates(&self) -> Option<(f64, u64)> {
        let (first, last) = (self.rate.front()?, self.rate.back()?);
        let span = (last.0 - first.0) as f64 / f64::from(TIMEBASE);
        if span < 1.0 {
            return None;
        }
        // The last frame's bytes fall outside the span its predecessors cover.
        let bytes: usize = self
            .rate
            .iter()
            .take(self.rate.len() - 1)
            .map(|r| r.1)
            .sum();
        let fps = (self.rate.len() - 1) as f64 / span;
        Some((
            (fps * 100.0).round() / 100.0,
            (bytes as f64 * 8.0 / span) as u64,
        ))
    }

    /// Why this frame shows the track cannot follow the source's cuts at `key`, if it does.
    fn misses(&self, key: i64, pts: i64, keyframe: bool, prev: Option<i64>) -> Option<String> {
        if keyframe {
            return None;
        }
        if (pts - key).abs() <= SAME_TIME {
            return Some(format!(
                "its frame at pts {pts} is not a keyframe where the source's is"
            ));
        }
        // Decode order runs through an IDR, never around it: a track stepping over the
        // source keyframe's time has no frame there at all.
        match prev {
            Some(prev) if prev < key - SAME_TIME && pts > key + SAME_TIME => Some(format!(
                "it has no frame at the source keyframe's pts {key}"
            )),
            _ => None,
        }
    }
}

/// A channel's further video tracks and the ladder they share with the transcoded rungs.
#[derive(Debug)]
pub(crate) struct Tracks {
    use_: TrackUse,
    tracks: BTreeMap<u8, Track>,
    /// Presentation times of the source's latest keyframes.
    source_keys: VecDeque<i64>,
    /// The pipeline's latest plan.
    plan: Vec<Rung>,
    ladder: Vec<Entry>,
}

impl Tracks {
    pub fn new(use_: TrackUse) -> Self {
        Tracks {
            use_,
            tracks: BTreeMap::new(),
            source_keys: VecDeque::new(),
            plan: Vec::new(),
            ladder: Vec::new(),
        }
    }

    /// Whether the channel transcodes at all: a passthrough-only channel's rungs are the
    /// publisher's tracks.
    pub fn transcodes(&self) -> bool {
        self.use_ != TrackUse::PassthroughOnly
    }

    /// Heights of the ladder the pipeline must not make: tracks stand in for them.
    pub fn covered_heights(&self) -> Vec<u32> {
        match self.use_ {
            TrackUse::Fill => self
                .tracks
                .values()
                .filter(|t| t.state == State::Rung)
                .map(|t| t.params.height)
                .collect(),
            TrackUse::PassthroughOnly | TrackUse::Transcode => Vec::new(),
        }
    }

    /// A track's configuration; true when the ladder changed.
    pub fn config(&mut self, id: u8, params: Arc<VideoParams>) -> bool {
        if let Some(t) = self.tracks.get_mut(&id) {
            let renamed = t.params.height != params.height;
            t.params = params;
            t.current = true;
            return renamed && t.state == State::Rung;
        }
        let state = if self.use_ == TrackUse::Transcode {
            State::Ignored("the channel transcodes its ladder from track 0")
        } else if self.plan.iter().any(|r| r.size.height == params.height) {
            // A track announced after the pipeline planned: its height is being
            // transcoded already, and one name cannot be two rungs.
            State::Ignored("the ladder already transcodes a rung of its height")
        } else if self
            .tracks
            .values()
            .any(|t| t.state == State::Rung && t.params.height == params.height)
        {
            State::Ignored("another track has its height")
        } else {
            State::Rung
        };
        let joins = state == State::Rung;
        if let State::Ignored(why) = &state {
            tracing::info!(
                track = id,
                height = params.height,
                why,
                "multitrack: track not used"
            );
        }
        self.tracks.insert(
            id,
            Track {
                params,
                state,
                current: true,
                recent: VecDeque::new(),
                rate: VecDeque::new(),
            },
        );
        joins
    }

    /// The pipeline's plan for the current source.
    pub fn set_plan(&mut self, plan: Vec<Rung>) {
        self.plan = plan;
    }

    /// The composed ladder, top down: the transcoded rungs and the tracks that are rungs.
    /// Indexes of [`Verdict::Forward`] and [`Self::index_of_planned`] refer to the latest.
    pub fn compose(&mut self) -> Vec<RungDecl> {
        let planned = self.plan.iter().enumerate().map(|(i, r)| Entry {
            decl: RungDecl {
                name: r.name.clone(),
                width: r.size.width,
                height: r.size.height,
                bitrate_bps: r.bitrate_bps,
            },
            slot: Slot::Planned(i),
        });
        let tracks = self
            .tracks
            .iter()
            .filter(|(_, t)| t.state == State::Rung)
            .map(|(&id, t)| Entry {
                decl: RungDecl {
                    name: t.name(),
                    width: t.params.width,
                    height: t.params.height,
                    // Listed only once it has segments, whose bit rate is measured.
                    bitrate_bps: t.rates().map_or(0, |r| r.1),
                },
                slot: Slot::Track(id),
            });
        let mut ladder: Vec<Entry> = tracks.chain(planned).collect();
        ladder.sort_by_key(|e| std::cmp::Reverse(e.decl.height));
        self.ladder = ladder;
        self.ladder.iter().map(|e| e.decl.clone()).collect()
    }

    pub fn ladder(&self) -> &[Entry] {
        &self.ladder
    }

    /// Where track `id` is in the composed ladder.
    pub fn index_of_track(&self, id: u8) -> Option<usize> {
        self.ladder.iter().position(|e| e.slot == Slot::Track(id))
    }

    /// Where the pipeline's rung `i` is in the composed ladder.
    pub fn index_of_planned(&self, i: usize) -> Option<usize> {
        self.ladder.iter().position(|e| e.slot == Slot::Planned(i))
    }

    /// The source sent a keyframe presented at `pts`: every track that has a frame there
    /// that is not one, or steps over it, leaves the ladder. Returns those, with why.
    pub fn source_keyframe(&mut self, pts: i64) -> Vec<(u8, String)> {
        self.source_keys.push_back(pts);
        if self.source_keys.len() > SOURCE_KEYS {
            self.source_keys.pop_front();
        }
        let mut dropped = Vec::new();
        for (&id, t) in &mut self.tracks {
            if t.state != State::Rung {
                continue;
            }
            let mut prev = None;
            let why = t.recent.iter().find_map(|&(p, key)| {
                let why = t.misses(pts, p, key, prev);
                prev = Some(p);
                why
            });
            if let Some(why) = why {
                t.state = State::Dropped(why.clone());
                dropped.push((id, why));
            }
        }
        dropped
    }

    /// One frame of track `id`.
    pub fn packet(&mut self, id: u8, p: &Packet) -> Verdict {
        let Some(t) = self.tracks.get_mut(&id) else {
            return Verdict::Ignore;
        };
        t.meter(p);
        if t.state != State::Rung {
            return Verdict::Ignore;
        }
        let prev = t.recent.back().map(|f| f.0);
        t.recent.push_back((p.pts, p.keyframe));
        if t.recent.len() > RECENT {
            t.recent.pop_front();
        }
        let why = self
            .source_keys
            .iter()
            .find_map(|&key| t.misses(key, p.pts, p.keyframe, prev));
        if let Some(why) = why {
            t.state = State::Dropped(why.clone());
            return Verdict::Dropped(why);
        }
        match self.index_of_track(id) {
            Some(i) => Verdict::Forward(i),
            None => Verdict::Ignore,
        }
    }

    /// A new publish session (a reconnect): it announces its tracks afresh. Until
    /// [`Self::settle`], the last session's stay, so that a rung the new session sends
    /// again keeps its playlist.
    pub fn rejoin(&mut self) {
        self.source_keys.clear();
        for t in self.tracks.values_mut() {
            t.current = false;
            t.recent.clear();
            t.rate.clear();
        }
    }

    /// The session's first frame came, after every track it announces: tracks of an earlier
    /// session it did not announce go. True when the ladder changed.
    pub fn settle(&mut self) -> bool {
        let before = self.tracks.len();
        self.tracks.retain(|_, t| t.current);
        self.tracks.len() != before
    }

    /// Each track as received, and what became of it.
    pub fn infos(&self) -> Vec<TrackInfo> {
        self.tracks
            .iter()
            .map(|(&id, t)| {
                let rates = t.rates();
                let mut video = VideoInfo::new(&t.params);
                video.frame_rate = rates.map(|r| r.0);
                let (rendition, reason) = match &t.state {
                    State::Rung => (Some(t.name()), None),
                    State::Ignored(why) => (None, Some((*why).to_string())),
                    State::Dropped(why) => (None, Some(format!("dropped: {why}"))),
                };
                TrackInfo {
                    id,
                    video,
                    bitrate_bps: rates.map(|r| r.1),
                    rendition,
                    reason,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
