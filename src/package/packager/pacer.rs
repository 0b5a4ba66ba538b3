//! Paces a rendition's short final part: holds it (with its segment's end
//! and whatever that rendition publishes next) until one PART-TARGET after
//! the rendition's previous part, so parts never come faster than players
//! expect them.
//!
//! Why: a segment can end with a part of one or two frames (a publisher's
//! keyframe arrives when it arrives). Published at once, the final part and
//! the segment's EXTINF follow the part before them within tens of
//! milliseconds. hls.js 1.7 marks a whole segment buffered when a part of it
//! finishes buffering after the playlist update that completed the segment,
//! and then never loads the final part: playback stalled for seconds. Paced,
//! that update comes a part's duration later, as for any other part. The
//! next segment's first part is a whole part of media after the keyframe, so
//! pacing the final part delays nothing after it.
//!
//! Pure: time is the packager's clock (the newest source arrival).

use crate::package::Update;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A final part shorter than this share of PART-TARGET is paced.
const SHORT_PERCENT: u32 = 50;

#[derive(Debug, Default)]
struct Lane {
    /// When the rendition's last part was published.
    last_part: Option<Instant>,
    /// Updates held in order, and when they may go.
    held: Vec<Update>,
    until: Option<Instant>,
}

/// Per-rendition pacing of short final parts.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    part_target: Option<Duration>,
    lanes: HashMap<Arc<str>, Lane>,
}

impl Pacer {
    /// What of `batch` (and of what was held) may be published at `now`;
    /// `None` publishes everything (no live stream paces anything).
    pub fn admit(&mut self, now: Option<Instant>, batch: Vec<Update>) -> Vec<Update> {
        let Some(now) = now else {
            let mut out = self.flush();
            out.extend(batch);
            return out;
        };
        let mut out = Vec::new();
        for lane in self.lanes.values_mut() {
            if lane.until.is_some_and(|u| u <= now) {
                lane.until = None;
                out.append(&mut lane.held);
            }
        }
        let mut rest: VecDeque<Update> = batch.into();
        while let Some(u) = rest.pop_front() {
            let Some(rendition) = rendition(&u) else {
                // Stream-wide updates keep their place after everything
                // before them.
                out.extend(self.flush());
                if let Update::StreamStart { part_target, .. } = &u {
                    self.part_target = Some(*part_target);
                }
                out.push(u);
                continue;
            };
            let target = self.part_target;
            let lane = self.lanes.entry(rendition.clone()).or_default();
            if lane.until.is_some() {
                lane.held.push(u);
                continue;
            }
            if let Update::Part { duration, .. } = &u {
                let final_part = rest
                    .iter()
                    .find(|n| rendition_of(n, rendition))
                    .is_some_and(|n| matches!(n, Update::SegmentEnd { .. }));
                let short = target.is_some_and(|t| *duration * 100 < t * SHORT_PERCENT);
                let due = lane.last_part.zip(target).map(|(at, t)| at + t);
                if let Some(due) = due.filter(|&d| final_part && short && d > now) {
                    lane.until = Some(due);
                    lane.last_part = Some(due);
                    lane.held.push(u);
                    continue;
                }
                lane.last_part = Some(now);
            }
            out.push(u);
        }
        out
    }

    /// Everything held, in order per rendition.
    pub fn flush(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        for lane in self.lanes.values_mut() {
            lane.until = None;
            out.append(&mut lane.held);
        }
        out
    }
}

/// The rendition an update belongs to; `None` for stream-wide ones.
fn rendition(u: &Update) -> Option<&Arc<str>> {
    match u {
        Update::Init { rendition, .. }
        | Update::SegmentStart { rendition, .. }
        | Update::Part { rendition, .. }
        | Update::SegmentEnd { rendition, .. }
        | Update::Declare { rendition, .. }
        | Update::DateRange { rendition, .. }
        | Update::Retire { rendition } => Some(rendition),
        Update::StreamStart { .. } | Update::Pause | Update::End => None,
    }
}

fn rendition_of(u: &Update, name: &Arc<str>) -> bool {
    rendition(u).is_some_and(|r| r == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn part(r: &Arc<str>, msn: u64, ms: u64) -> Update {
        Update::Part {
            rendition: r.clone(),
            msn,
            duration: Duration::from_millis(ms),
            independent: false,
            bytes: Bytes::new(),
        }
    }

    fn end(r: &Arc<str>, msn: u64) -> Update {
        Update::SegmentEnd {
            rendition: r.clone(),
            msn,
            duration: Duration::from_secs(2),
            gap: false,
            samples: 40,
        }
    }

    fn start() -> Update {
        Update::StreamStart {
            sid: "s".into(),
            part_target: Duration::from_millis(200),
            new_playlist: true,
            next_msn: 0,
        }
    }

    fn parts(out: &[Update]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(|u| match u {
                Update::Part { msn, duration, .. } => Some((*msn, duration.as_millis() as u64)),
                Update::SegmentEnd { msn, .. } => Some((*msn, 0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_short_final_part_waits_one_part_target_after_the_last_part() {
        let v: Arc<str> = Arc::from("source");
        let a: Arc<str> = Arc::from("audio");
        let t0 = Instant::now();
        let ms = |m: u64| Some(t0 + Duration::from_millis(m));
        let mut p = Pacer::default();
        assert_eq!(p.admit(ms(0), vec![start(), part(&v, 0, 200)]).len(), 2);
        // 50 ms later the keyframe ends the segment with a 50 ms part:
        // held, with the segment's end; audio is not held back.
        let out = p.admit(ms(50), vec![part(&v, 0, 50), end(&v, 0), part(&a, 0, 192)]);
        assert_eq!(parts(&out), [(0, 192)]);
        assert!(p.admit(ms(150), Vec::new()).is_empty());
        // Due one PART-TARGET after the previous part, in order, with what
        // the rendition made meanwhile.
        let out = p.admit(ms(210), vec![part(&v, 1, 200)]);
        assert_eq!(parts(&out), [(0, 50), (0, 0), (1, 200)]);
        // A whole final part, or one already due, goes at once.
        let out = p.admit(ms(600), vec![part(&v, 1, 180), end(&v, 1)]);
        assert_eq!(parts(&out), [(1, 180), (1, 0)]);
    }

    #[test]
    fn the_end_of_a_stream_publishes_what_was_held() {
        let v: Arc<str> = Arc::from("source");
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.admit(Some(t0), vec![start(), part(&v, 0, 200)]);
        let out = p.admit(Some(t0), vec![part(&v, 0, 40), end(&v, 0)]);
        assert!(out.is_empty());
        let out = p.admit(Some(t0), vec![Update::End]);
        assert_eq!(parts(&out), [(0, 40), (0, 0)]);
        assert!(matches!(out.last(), Some(Update::End)));
        // No live stream: nothing is paced.
        p.admit(None, vec![part(&v, 0, 200)]);
        assert_eq!(
            parts(&p.admit(None, vec![part(&v, 0, 40), end(&v, 0)])).len(),
            2
        );
    }
}
