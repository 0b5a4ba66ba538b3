//! What the source rendition leaves behind for the renditions that follow
//! it: where its recent segments started (MSN, presentation time, date,
//! discontinuity, duration) and where its recent frames went on the channel
//! timeline.
//!
//! Pure bookkeeping, bounded in size. Must never be written by anything but
//! the source's own segmenter events, so a follower can only ever copy the
//! source's decisions, never make its own.

use std::collections::VecDeque;
use std::time::SystemTime;

/// Source segment starts remembered: how far behind the source a rung may
/// fall (or how late a new rung may join) and still be numbered like it.
/// 64 segments are about two minutes at the default target.
const BOUNDARIES_KEPT: usize = 64;
/// Source frames remembered for placing rung frames: more than a minute at
/// 60 fps, far beyond a live encoder's delay (about a second) and an
/// offline one's lookahead.
const FRAMES_KEPT: usize = 4096;
/// A rung frame's pts may differ from its source frame's by this much (90
/// kHz ticks): rescaling through a coarser encoder time base rounds.
const PTS_TOLERANCE: i64 = 90;

/// Where one source segment starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Boundary {
    pub msn: u64,
    /// Timeline presentation time of the source frame that starts it.
    pub pts: u64,
    /// Its EXT-X-PROGRAM-DATE-TIME in the source playlist.
    pub date: SystemTime,
    pub discontinuity: bool,
    /// The source segment's EXTINF in 90 kHz ticks, once it has ended.
    pub duration: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct SourceTrail {
    /// Consecutive MSNs, oldest first.
    boundaries: VecDeque<Boundary>,
    /// (publisher pts, timeline pts) in source decode order.
    frames: VecDeque<(i64, u64)>,
}

impl SourceTrail {
    /// The source started segment `msn` with a frame presented at `pts`.
    pub fn segment_start(&mut self, msn: u64, pts: u64, date: SystemTime, discontinuity: bool) {
        if self.boundaries.back().is_some_and(|b| b.msn + 1 != msn) {
            // Only a new stream renumbers; its trail starts empty. Anything
            // else would let a follower pair the wrong segments.
            self.boundaries.clear();
        }
        self.boundaries.push_back(Boundary {
            msn,
            pts,
            date,
            discontinuity,
            duration: None,
        });
        while self.boundaries.len() > BOUNDARIES_KEPT {
            self.boundaries.pop_front();
        }
    }

    /// The source ended segment `msn` after `duration` ticks.
    pub fn segment_end(&mut self, msn: u64, duration: u64) {
        if let Some(b) = self.boundary_mut(msn) {
            b.duration = Some(duration);
        }
    }

    /// A source frame with publisher pts `publisher` is presented at
    /// timeline time `timeline`.
    pub fn frame(&mut self, publisher: i64, timeline: u64) {
        // A frame decoded after its segment's keyframe but presented before
        // it (an open GOP's leading picture: HEVC RASL/RADL, x265's default)
        // is where the segment's presentation starts, and where a rung,
        // whose IDR the pipeline puts on that first presented frame, cuts.
        if let Some(b) = self.boundaries.back_mut()
            && timeline < b.pts
        {
            b.pts = timeline;
        }
        self.frames.push_back((publisher, timeline));
        while self.frames.len() > FRAMES_KEPT {
            self.frames.pop_front();
        }
    }

    /// Where the source frame with publisher pts `publisher` went. The
    /// newest match wins: a publisher clock that jumped back may repeat
    /// values, and rungs trail the source by about a second, not minutes.
    pub fn timeline_pts(&self, publisher: i64) -> Option<u64> {
        self.frames
            .iter()
            .rev()
            .find(|(p, _)| p.abs_diff(publisher) <= PTS_TOLERANCE.unsigned_abs())
            .map(|&(_, t)| t)
    }

    pub fn boundary(&self, msn: u64) -> Option<&Boundary> {
        let first = self.boundaries.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.boundaries.get(i)
    }

    fn boundary_mut(&mut self, msn: u64) -> Option<&mut Boundary> {
        let first = self.boundaries.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.boundaries.get_mut(i)
    }

    /// The segment that holds presentation time `pts`: the last one that
    /// starts at or before it.
    pub fn segment_at(&self, pts: u64) -> Option<u64> {
        self.boundaries
            .iter()
            .rev()
            .find(|b| b.pts <= pts)
            .map(|b| b.msn)
    }

    /// MSN of the source's newest segment.
    pub fn last_msn(&self) -> Option<u64> {
        self.boundaries.back().map(|b| b.msn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn segments_are_found_by_presentation_time() {
        let mut t = SourceTrail::default();
        assert_eq!(t.segment_at(0), None);
        t.segment_start(5, 1000, UNIX_EPOCH, false);
        t.segment_end(5, 180_000);
        t.segment_start(6, 181_000, UNIX_EPOCH, true);
        assert_eq!(t.segment_at(999), None);
        assert_eq!(t.segment_at(1000), Some(5));
        assert_eq!(t.segment_at(180_999), Some(5));
        assert_eq!(t.segment_at(181_000), Some(6));
        assert_eq!(t.boundary(5).and_then(|b| b.duration), Some(180_000));
        assert_eq!(t.boundary(6).map(|b| b.discontinuity), Some(true));
        assert_eq!(t.boundary(7), None);
        assert_eq!(t.last_msn(), Some(6));
    }

    #[test]
    fn leading_pictures_move_the_segment_start_to_the_first_presented_frame() {
        let mut t = SourceTrail::default();
        t.segment_start(0, 0, UNIX_EPOCH, false);
        t.frame(0, 0);
        t.frame(3000, 3000);
        // The CRA at 9000 starts segment 1; the two pictures decoded after it show first.
        t.segment_start(1, 9000, UNIX_EPOCH, false);
        t.frame(9000, 9000);
        t.frame(6000, 6000);
        t.frame(7500, 7500);
        t.frame(12000, 12000);
        assert_eq!(t.boundary(1).map(|b| b.pts), Some(6000));
        assert_eq!(t.segment_at(5999), Some(0));
        assert_eq!(t.segment_at(6000), Some(1));
        assert_eq!(
            t.boundary(0).map(|b| b.pts),
            Some(0),
            "earlier segments stay"
        );
    }

    #[test]
    fn frames_map_by_pts_newest_first_within_a_millisecond() {
        let mut t = SourceTrail::default();
        t.frame(3000, 10);
        t.frame(6000, 20);
        // The publisher's clock went back: the same pts again, elsewhere.
        t.frame(3000, 30);
        assert_eq!(t.timeline_pts(3000), Some(30));
        assert_eq!(t.timeline_pts(6089), Some(20));
        assert_eq!(t.timeline_pts(6091), None);
        for i in 0..FRAMES_KEPT as i64 {
            t.frame(10_000 + i, 0);
        }
        assert_eq!(t.timeline_pts(6000), None, "bounded");
    }
}
