//! Keeps audio segments on video's boundaries: holds audio frames until
//! video has passed them and interleaves video's cuts in timeline order.
//!
//! An audio segment starts with the first frame that starts at or after
//! video's cut, never before it. Players place an audio segment where the
//! video segment of the same media sequence number starts (hls.js aligns
//! renditions by MSN at the live edge) and take its end from EXTINF: audio
//! starting before video would end, to the player, after its last frame, and
//! the player would look for the next audio part inside a segment it has
//! already loaded and stop loading audio.
//!
//! Pure: times are 90 kHz timeline ticks handed in by the packager. Must
//! never release a frame before it knows which segment the frame belongs to,
//! and never reorder cuts.

use std::collections::VecDeque;

/// What the audio segmenter should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Release<T> {
    /// Package this frame (timeline time, payload).
    Frame(u64, T),
    /// End the audio segment here; the next one is `next_msn`.
    Cut { at: u64, next_msn: u64 },
}

/// Audio frames waiting for video, and video cuts waiting for audio.
#[derive(Debug)]
pub struct AudioAligner<T> {
    frames: VecDeque<(u64, T)>,
    cuts: VecDeque<(u64, u64)>,
    /// Frames starting before this belong to a closed segment.
    closed_until: u64,
    max_frames: usize,
    /// A cut this far behind video is applied even with no audio past it,
    /// so a publisher that stops sending audio does not stall the audio
    /// playlist forever (its segments become gaps).
    max_lag: u64,
}

impl<T> AudioAligner<T> {
    /// `start`: timeline time where the first audio segment may begin.
    pub fn new(start: u64, max_frames: usize, max_lag: u64) -> Self {
        AudioAligner {
            frames: VecDeque::new(),
            cuts: VecDeque::new(),
            closed_until: start,
            max_frames,
            max_lag,
        }
    }

    /// Holds one frame. Returns how many old frames were dropped to stay
    /// within bounds, or that this frame was too late to place.
    pub fn hold(&mut self, t: u64, item: T) -> usize {
        if t < self.closed_until {
            return 1;
        }
        self.frames.push_back((t, item));
        let mut dropped = 0;
        while self.frames.len() > self.max_frames {
            self.frames.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Video ended a segment at `at`; the next one is `next_msn`.
    pub fn video_cut(&mut self, at: u64, next_msn: u64) {
        self.cuts.push_back((at, next_msn));
    }

    /// Everything that can be placed now that video reached `video_edge`:
    /// no later video cut can land before it (one can land on it).
    pub fn release(&mut self, video_edge: u64) -> Vec<Release<T>> {
        let mut out = Vec::new();
        while let Some(&(t, _)) = self.frames.front() {
            if t >= video_edge {
                break;
            }
            // A cut at the frame's own start goes before it.
            self.cuts_before(t + 1, &mut out);
            if let Some((t, item)) = self.frames.pop_front() {
                out.push(Release::Frame(t, item));
            }
        }
        let lag_edge = video_edge.saturating_sub(self.max_lag);
        self.cuts_before(lag_edge.saturating_add(1), &mut out);
        out
    }

    /// At the end of a stream: everything up to `video_end`, then every
    /// pending cut. Frames after `video_end` stay held.
    pub fn flush(&mut self, video_end: u64) -> Vec<Release<T>> {
        let mut out = self.release(video_end);
        self.cuts_before(u64::MAX, &mut out);
        out
    }

    fn cuts_before(&mut self, t: u64, out: &mut Vec<Release<T>>) {
        while let Some(&(at, next_msn)) = self.cuts.front() {
            if at >= t {
                break;
            }
            self.cuts.pop_front();
            self.closed_until = self.closed_until.max(at);
            out.push(Release::Cut { at, next_msn });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::segmenter::{CutPolicy, Event, Rules, Sample, Segmenter};
    use bytes::Bytes;
    use std::time::Instant;

    /// AAC at 44.1 kHz: 1024-sample frames, 2089.8 ticks of 90 kHz.
    fn aac_times(n: u64) -> Vec<u64> {
        (0..n).map(|i| i * 1024 * 90_000 / 44_100).collect()
    }

    #[test]
    fn frames_wait_for_video_and_cuts_land_between_them() {
        let mut a = AudioAligner::new(0, 1000, 180_000);
        for (i, t) in aac_times(100).into_iter().enumerate() {
            assert_eq!(a.hold(t, i), 0);
        }
        // Video has reached 1 s and cut at 0.5 s.
        a.video_cut(45_000, 1);
        let out = a.release(90_000);
        let cut_pos = out
            .iter()
            .position(|r| {
                matches!(
                    r,
                    Release::Cut {
                        at: 45_000,
                        next_msn: 1
                    }
                )
            })
            .expect("the cut was released");
        // The cut falls before the first frame that starts at or after 0.5 s.
        match (&out[cut_pos - 1], &out[cut_pos + 1]) {
            (Release::Frame(before, _), Release::Frame(after, _)) => {
                assert!(*before < 45_000 && *after >= 45_000 && after - before <= 2090);
            }
            other => panic!("unexpected neighbours {other:?}"),
        }
        let Some(Release::Frame(last, _)) = out.last() else {
            panic!("frames released")
        };
        assert!(*last < 90_000);
        // A frame that arrives after its segment closed is refused.
        assert_eq!(a.hold(10_000, 999), 1);
    }

    #[test]
    fn a_silent_publisher_still_lets_audio_segments_end() {
        let mut a: AudioAligner<()> = AudioAligner::new(0, 1000, 180_000);
        a.video_cut(180_000, 1);
        assert!(a.release(300_000).is_empty());
        assert_eq!(
            a.release(360_000),
            vec![Release::Cut {
                at: 180_000,
                next_msn: 1
            }]
        );
    }

    #[test]
    fn audio_and_video_segments_cover_the_same_time() {
        // Video cuts every 2 s; audio follows through the aligner.
        let rules = Rules {
            part_target: 8908, // 202 ms at 44.1 kHz
            samples_per_part: 8,
            cuts: CutPolicy::External,
        };
        let mut seg = Segmenter::new(rules, 0, 0);
        let mut a = AudioAligner::new(0, 10_000, 180_000);
        let now = Instant::now();
        let mut events = Vec::new();
        let mut next_ts = 0u64;
        let mut next_cut = 1u64;
        for (i, t) in aac_times(44_100 * 10 / 1024).into_iter().enumerate() {
            a.hold(t, i);
            // Video runs 50 ms ahead of audio in arrival, as RTMP interleaves.
            let edge = t + 4500;
            if edge >= next_cut * 180_000 {
                a.video_cut(next_cut * 180_000, next_cut);
                next_cut += 1;
            }
            for r in a.release(edge) {
                match r {
                    Release::Frame(_, _) => {
                        let s = Sample {
                            dts: next_ts,
                            duration: 1024,
                            cts: 0,
                            keyframe: true,
                            data: Bytes::new(),
                        };
                        next_ts += 1024;
                        events.extend(seg.push(s, now, None));
                    }
                    Release::Cut { at, next_msn } => {
                        events.extend(seg.cut(at * 441 / 900, next_msn));
                    }
                }
            }
        }
        let mut ends = Vec::new();
        for e in &events {
            if let Event::SegmentEnd {
                msn, end_dts, gap, ..
            } = e
            {
                assert!(!gap);
                ends.push((*msn, *end_dts));
            }
        }
        assert_eq!(ends.len(), 4);
        for (k, (msn, end)) in ends.into_iter().enumerate() {
            assert_eq!(msn, k as u64, "audio MSNs follow video's");
            let video_end = (k as u64 + 1) * 88_200;
            assert!(
                end >= video_end && end - video_end < 1024,
                "segment {k} ends at {end}, video at {video_end}: never before it, within a frame"
            );
        }
    }
}
