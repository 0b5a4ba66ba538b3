//! PART-TARGET: chosen once per playlist from the configured part duration
//! and the source's frame duration, and how many frames go in a part.
//!
//! Pure arithmetic on 90 kHz ticks. Must never change a PART-TARGET once a
//! playlist advertised it: Apple's player refuses a playlist whose
//! PART-TARGET changes between reloads.

use crate::media::TIMEBASE;
use std::time::Duration;

/// Slack added to `n` frames when choosing PART-TARGET.
///
/// RTMP carries milliseconds, so a run of n frames measures up to 1 ms longer
/// than n true frame durations, and the probe's average frame duration is
/// itself off by a fraction of a millisecond per frame. 2 ms covers both, so
/// a part of n frames never exceeds the target.
pub const JITTER_PAD: Duration = Duration::from_millis(2);

/// Frames the probe wants before it trusts its frame duration...
const PROBE_FRAMES: u32 = 10;
/// ...unless this much media has gone by (low frame rates).
const PROBE_SPAN_TICKS: i64 = TIMEBASE as i64 / 2;
/// Used when the timestamps say nothing sensible (all equal, or absurd).
const FALLBACK_FRAME_TICKS: f64 = TIMEBASE as f64 / 30.0;

/// Measures the source's frame duration from the first video timestamps.
#[derive(Debug, Default, Clone)]
pub struct FrameProbe {
    first: Option<i64>,
    last: i64,
    frames: u32,
    /// Steps between consecutive decode timestamps.
    steps: Vec<i64>,
}

impl FrameProbe {
    /// Feeds one video decode timestamp (90 kHz ticks).
    pub fn push(&mut self, dts: i64) {
        if self.first.is_none() {
            self.first = Some(dts);
        } else {
            self.steps.push(dts - self.last);
        }
        self.last = dts;
        self.frames += 1;
    }

    /// The average frame duration in ticks, once enough frames were seen.
    pub fn frame_ticks(&self) -> Option<f64> {
        let first = self.first?;
        let span = self.last - first;
        if self.frames >= PROBE_FRAMES || (self.frames >= 2 && span >= PROBE_SPAN_TICKS) {
            Some(self.estimate())
        } else {
            None
        }
    }

    /// The best estimate now, however few frames were seen: the mean step,
    /// leaving out steps far from the median. A publisher that drops a frame
    /// (a WebRTC encoder under load) makes one step twice as long; counted,
    /// it would set PART-TARGET for a frame rate the stream does not have,
    /// and every part after would miss the 85% rule. The mean of the rest
    /// keeps RTMP's millisecond rounding (33, 33, 34 ms) exact.
    pub fn estimate(&self) -> f64 {
        let mut steps = self.steps.clone();
        steps.sort_unstable();
        let Some(&median) = steps.get(steps.len() / 2) else {
            return FALLBACK_FRAME_TICKS;
        };
        let typical: Vec<i64> = steps
            .into_iter()
            .filter(|&s| 2 * s > median && 2 * s <= 3 * median)
            .collect();
        if typical.is_empty() {
            return FALLBACK_FRAME_TICKS;
        }
        let avg = typical.iter().sum::<i64>() as f64 / typical.len() as f64;
        // Below 1 ms or above 1 s per frame the timestamps are broken, not the rate.
        if (90.0..=f64::from(TIMEBASE)).contains(&avg) {
            avg
        } else {
            FALLBACK_FRAME_TICKS
        }
    }
}

/// PART-TARGET for a new playlist: a whole number of frames closest to the
/// configured target, plus [`JITTER_PAD`], in whole milliseconds.
///
/// Whole frames matter because RFC 8216bis 4.4.4.9 says "The duration of a
/// Partial Segment MUST be less than or equal to the Part Target Duration"
/// and "The duration of each Partial Segment MUST be at least 85% of the Part
/// Target Duration" (except INDEPENDENT and final parts): a target that is
/// not a multiple of the frame duration leaves parts either too long or too
/// short. Whole milliseconds keep the printed value exact.
pub fn choose_part_target(configured: Duration, frame_ticks: f64) -> Duration {
    let frame_ms = frame_ticks * 1000.0 / f64::from(TIMEBASE);
    let wanted_ms = configured.as_secs_f64() * 1000.0;
    let n = (wanted_ms / frame_ms).round().max(1.0);
    let pad_ms = JITTER_PAD.as_secs_f64() * 1000.0;
    let ms = (n * frame_ms + pad_ms).ceil();
    Duration::from_millis(ms as u64)
}

/// Frames per part under an already advertised PART-TARGET: as many as fit
/// with [`JITTER_PAD`] to spare, at least one.
pub fn frames_per_part(part_target: Duration, frame_ticks: f64) -> u32 {
    let frame_ms = frame_ticks * 1000.0 / f64::from(TIMEBASE);
    let usable_ms = part_target.saturating_sub(JITTER_PAD).as_secs_f64() * 1000.0;
    let n = (usable_ms / frame_ms + 1e-9).floor();
    n.clamp(1.0, f64::from(u16::MAX)) as u32
}

/// `d` in ticks of `timescale`, rounded down so a limit stays a limit.
pub fn ticks(d: Duration, timescale: u32) -> u64 {
    let t = d.as_nanos() * u128::from(timescale) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// `t` ticks of `timescale` as a duration, to the nanosecond.
pub fn duration(t: u64, timescale: u32) -> Duration {
    let ns = u128::from(t) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Millisecond timestamps, as RTMP delivers them, of frames at `num/den` fps.
    fn rtmp_dts(i: i64, num: i64, den: i64) -> i64 {
        (i * 1000 * den / num) * 90
    }

    fn probe(num: i64, den: i64) -> f64 {
        let mut p = FrameProbe::default();
        for i in 0..10 {
            p.push(rtmp_dts(i, num, den));
        }
        p.frame_ticks().expect("ten frames are enough")
    }

    #[test]
    fn part_target_is_whole_frames_plus_pad() {
        let cases = [
            // fps as a fraction, expected frames per part
            ((30, 1), 6),
            ((30_000, 1001), 6),
            ((25, 1), 5),
            ((60, 1), 12),
            ((20, 1), 4),
        ];
        for ((num, den), frames) in cases {
            let f = probe(num, den);
            let pt = choose_part_target(Duration::from_millis(200), f);
            assert_eq!(frames_per_part(pt, f), frames, "{num}/{den} fps");
            // Every run of `frames` RTMP timestamps fits under the target.
            for start in 0..200 {
                let span = rtmp_dts(start + frames as i64, num, den) - rtmp_dts(start, num, den);
                assert!(
                    span as u64 <= ticks(pt, TIMEBASE),
                    "{num}/{den}: {span} > {pt:?}"
                );
                assert!(span as f64 >= 0.85 * ticks(pt, TIMEBASE) as f64);
            }
        }
    }

    #[test]
    fn an_advertised_target_survives_a_new_frame_rate() {
        let pt = choose_part_target(Duration::from_millis(200), probe(30, 1));
        assert_eq!(pt, Duration::from_millis(202));
        assert_eq!(frames_per_part(pt, probe(25, 1)), 5);
        assert_eq!(frames_per_part(pt, probe(60, 1)), 12);
        assert_eq!(frames_per_part(pt, probe(30_000, 1001)), 6);
    }

    #[test]
    fn low_frame_rates_get_one_frame_parts() {
        let f = f64::from(TIMEBASE); // 1 fps
        let pt = choose_part_target(Duration::from_millis(200), f);
        assert_eq!(pt, Duration::from_millis(1002));
        assert_eq!(frames_per_part(pt, f), 1);
    }

    #[test]
    fn a_dropped_frame_does_not_change_the_measured_rate() {
        // 20 fps from a WebRTC encoder that dropped the fourth picture.
        let mut p = FrameProbe::default();
        for i in (0..11).filter(|&i| i != 3) {
            p.push(i * 4500);
        }
        assert_eq!(p.frame_ticks(), Some(4500.0));
        assert_eq!(
            choose_part_target(Duration::from_millis(200), 4500.0),
            Duration::from_millis(202)
        );
    }

    #[test]
    fn probe_waits_for_enough_frames_and_rejects_nonsense() {
        let mut p = FrameProbe::default();
        p.push(0);
        p.push(3000);
        assert_eq!(p.frame_ticks(), None);
        let mut same = FrameProbe::default();
        for _ in 0..10 {
            same.push(42);
        }
        assert_eq!(same.frame_ticks(), Some(3000.0));
    }
}
