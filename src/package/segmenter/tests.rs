//! Segmenter cuts driven by synthetic sources: RTMP millisecond timestamps at
//! common frame rates, several GOP lengths, B-frames.

use super::*;
use crate::media::TIMEBASE;
use crate::package::plan::{FrameProbe, choose_part_target, frames_per_part, ticks};
use std::time::Duration;

/// A synthetic video source: RTMP-style millisecond timestamps.
#[derive(Clone, Copy)]
struct Source {
    fps_num: i64,
    fps_den: i64,
    /// Frames between keyframes; 0 means only the first frame is one.
    gop: i64,
    /// B-frames make pts differ from dts; decode order stays monotonic.
    bframes: bool,
    frames: i64,
    /// Every n-th frame (keyframes aside) never arrives, as an encoder under
    /// load drops them; 0 drops none.
    drop_every: i64,
    /// With `drop_every`: how many frames each drop loses (a publisher's
    /// freeze after packet loss when more than a part's worth).
    drop_run: i64,
}

struct Frame {
    dts: i64,
    cts: i32,
    keyframe: bool,
}

impl Source {
    fn frames(&self) -> Vec<Frame> {
        (0..self.frames)
            .filter(|&i| {
                let keyframe = i == 0 || (self.gop > 0 && i % self.gop == 0);
                keyframe
                    || self.drop_every == 0
                    || i % self.drop_every < self.drop_every - self.drop_run
            })
            .map(|i| {
                let ms = i * 1000 * self.fps_den / self.fps_num;
                let keyframe = i == 0 || (self.gop > 0 && i % self.gop == 0);
                // IBBP-like reordering: a constant 2-frame delay on pts, as
                // an encoder with B-frames produces in decode order.
                let cts = if self.bframes {
                    (2 * 1000 * self.fps_den / self.fps_num * 90) as i32
                } else {
                    0
                };
                Frame {
                    dts: ms * 90,
                    cts,
                    keyframe,
                }
            })
            .collect()
    }
}

const SEGMENT_TARGET: Duration = Duration::from_secs(2);
const TARGET_DURATION: u64 = 2;

struct Run {
    part_target: u64,
    events: Vec<Event>,
    frames: usize,
}

/// Drives a segmenter the way the packager does: probe the frame rate, then
/// push each frame once the next one tells its duration, peeking at whether
/// the next one is a keyframe; at the end reuse the last duration and cut.
fn run(src: Source) -> Run {
    let frames = src.frames();
    let mut probe = FrameProbe::default();
    for f in frames.iter().take(10) {
        probe.push(f.dts);
    }
    let frame_ticks = probe
        .frame_ticks()
        .expect("sources are longer than the probe");
    let pt = choose_part_target(Duration::from_millis(200), frame_ticks);
    let part_target = ticks(pt, TIMEBASE);
    let rules = Rules {
        part_target,
        samples_per_part: frames_per_part(pt, frame_ticks),
        cuts: CutPolicy::Keyframes {
            min: ticks(SEGMENT_TARGET, TIMEBASE) - part_target,
            max: ticks(Duration::from_millis(2450), TIMEBASE),
        },
    };
    let mut seg = Segmenter::new(rules, 0, 0);
    let now = Instant::now();
    let mut events = Vec::new();
    let mut last_dur = 0;
    for (i, f) in frames.iter().enumerate() {
        let next = frames.get(i + 1);
        let duration = next.map_or(last_dur, |n| (n.dts - f.dts) as u32);
        last_dur = duration;
        let sample = Sample {
            dts: f.dts as u64,
            duration,
            cts: f.cts,
            keyframe: f.keyframe,
            data: Bytes::from(vec![i as u8]),
        };
        events.extend(seg.push(sample, now, next.map(|n| n.keyframe)));
    }
    let end = seg.end();
    events.extend(seg.cut(end, seg.msn() + 1));
    Run {
        part_target,
        events,
        frames: frames.len(),
    }
}

struct Seg {
    msn: u64,
    start: u64,
    end: u64,
    independent: bool,
    parts: Vec<Part>,
}

fn segments(events: &[Event]) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::new();
    for e in events {
        match e {
            Event::SegmentStart {
                msn,
                dts,
                independent,
            } => out.push(Seg {
                msn: *msn,
                start: *dts,
                end: *dts,
                independent: *independent,
                parts: Vec::new(),
            }),
            Event::Part(p) => {
                let s = out.last_mut().expect("parts follow a segment start");
                assert_eq!(p.msn, s.msn);
                assert_eq!(p.index as usize, s.parts.len());
                s.parts.push(p.clone());
            }
            Event::SegmentEnd { msn, end_dts, .. } => {
                let s = out.last_mut().expect("an end follows a start");
                assert_eq!(*msn, s.msn);
                s.end = *end_dts;
            }
        }
    }
    out
}

/// The RFC 8216bis and Apple rules every run must keep.
fn check(src: Source, want_keyframe_starts: bool) -> Vec<Seg> {
    let run = run(src);
    let segs = segments(&run.events);
    let mut next_dts = 0;
    let mut seen = 0;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.msn, i as u64, "media sequence numbers are consecutive");
        let extinf = (s.end - s.start) as f64 / f64::from(TIMEBASE);
        // RFC 8216bis 4.4.3.1: "The EXTINF duration of each Media Segment in
        // the Playlist file, when rounded to the nearest integer, MUST be
        // less than or equal to the Target Duration".
        assert!(
            extinf.round() as u64 <= TARGET_DURATION,
            "segment {i} lasts {extinf}"
        );
        for (j, p) in s.parts.iter().enumerate() {
            assert!(
                p.duration <= run.part_target,
                "part {i}.{j} {} > {}",
                p.duration,
                run.part_target
            );
            let last = j + 1 == s.parts.len();
            // The one case no cut can keep whole: the last frame before a
            // segment's keyframe came late and fits no part with the frames
            // before it. Lending it would move the keyframe, which starts
            // the segment at its own time in every rendition.
            let before_late_final = j + 2 == s.parts.len()
                && s.parts[j + 1].samples.len() == 1
                && p.duration + s.parts[j + 1].duration > run.part_target;
            if !last && !p.independent && !before_late_final {
                assert!(
                    p.duration as f64 >= 0.85 * run.part_target as f64,
                    "part {i}.{j} is {} of {} (the segment's parts: {:?})",
                    p.duration,
                    run.part_target,
                    s.parts
                        .iter()
                        .map(|p| (p.duration, p.samples.len()))
                        .collect::<Vec<_>>()
                );
            }
            // A freeze that ends at a keyframe cannot lend it time (that
            // would move the segment's start): the frame before it gets a
            // part and the rest of the freeze stays a hole.
            let frame = 90_000 * src.fps_den as u64 / src.fps_num as u64;
            let freeze = (src.drop_run as u64 + 1) * frame;
            if j == 0 && p.independent && src.drop_run > 1 && freeze > run.part_target {
                assert!(
                    (next_dts..next_dts + freeze).contains(&p.dts),
                    "segment {i} starts {} after the last part ended",
                    p.dts as i64 - next_dts as i64
                );
            } else {
                assert_eq!(p.dts, next_dts, "tfdt continues the previous part");
            }
            next_dts = p.dts + p.duration;
            let sum: u64 = p.samples.iter().map(|s| u64::from(s.duration)).sum();
            assert_eq!(sum, p.duration);
            assert_eq!(p.independent, p.samples[0].keyframe);
            seen += p.samples.len();
        }
        assert_eq!(s.independent, s.parts[0].independent);
        let is_last = i + 1 == segs.len();
        if want_keyframe_starts && !is_last {
            assert!(s.independent, "segment {i} starts at a keyframe");
        }
    }
    assert_eq!(seen, run.frames, "every frame lands in exactly one part");
    segs
}

fn src(fps_num: i64, fps_den: i64, gop_secs: f64) -> Source {
    let fps = fps_num as f64 / fps_den as f64;
    Source {
        fps_num,
        fps_den,
        gop: (gop_secs * fps).round() as i64,
        bframes: false,
        frames: (20.0 * fps) as i64,
        drop_every: 0,
        drop_run: 1,
    }
}

#[test]
fn thirty_fps_with_millisecond_jitter_two_second_gop() {
    let segs = check(src(30, 1, 2.0), true);
    // Two-second GOPs give two-second segments of ten 6-frame parts.
    assert!(
        segs[..segs.len() - 1]
            .iter()
            .all(|s| s.parts.len() == 10 && s.end - s.start == 180_000)
    );
}

#[test]
fn ntsc_and_pal_and_high_and_low_rates() {
    for (num, den) in [(30_000, 1001), (25, 1), (60, 1), (20, 1)] {
        for gop in [2.0, 1.0] {
            check(src(num, den, gop), true);
        }
    }
}

#[test]
fn short_gop_cuts_at_the_first_keyframe_past_the_minimum() {
    // Keyframes every 0.8 s: 1.6 s is below 2 s - PART-TARGET, 2.4 s is not.
    let segs = check(src(30, 1, 0.8), true);
    let first = &segs[0];
    assert_eq!(first.end - first.start, 216_000);
}

#[test]
fn long_gop_forces_cuts_at_part_boundaries() {
    for (num, den) in [(30, 1), (30_000, 1001), (25, 1), (60, 1), (20, 1)] {
        let segs = check(src(num, den, 4.0), false);
        // A forced cut lands on a whole part and the next segment does not
        // claim to be independent.
        assert!(segs.iter().any(|s| !s.independent));
        for s in &segs[..segs.len() - 1] {
            let d = (s.end - s.start) as f64 / 90_000.0;
            assert!((1.8..2.45).contains(&d), "{num}/{den}: {d}");
        }
    }
}

#[test]
fn b_frames_keep_their_composition_offsets() {
    let mut s = src(30, 1, 2.0);
    s.bframes = true;
    let segs = check(s, true);
    let expected: i32 = 2 * 1000 / 30 * 90;
    assert!(
        segs.iter()
            .flat_map(|s| &s.parts)
            .flat_map(|p| &p.samples)
            .all(|s| s.cts == expected)
    );
}

#[test]
fn dropped_frames_never_leave_a_part_short_or_a_hole() {
    // A WebRTC encoder at 20 fps drops frames under load: a part of four
    // 50 ms frames then meets a 100 ms one. Every phase of the drop against
    // the part boundary is covered by the prime period.
    for (fps, drop_every) in [(20, 7), (20, 11), (20, 13), (30, 7), (30, 11)] {
        let mut s = src(fps, 1, 2.0);
        s.drop_every = drop_every;
        check(s, true);
    }
}

#[test]
fn a_freeze_longer_than_a_part_leaves_no_short_part_or_hole() {
    // 150-400 ms without a frame, mid-GOP, at every phase against the parts.
    for (fps, drop_every, drop_run) in [
        (20, 13, 3),
        (20, 17, 5),
        (20, 19, 7),
        (30, 17, 9),
        (30, 23, 5),
    ] {
        let mut s = src(fps, 1, 2.0);
        s.drop_every = drop_every;
        s.drop_run = drop_run;
        check(s, true);
    }
}

#[test]
fn a_stall_fills_its_part_lends_three_parts_and_leaves_the_rest_a_hole() {
    let rules = Rules {
        part_target: 18_180,
        samples_per_part: 6,
        cuts: CutPolicy::Keyframes {
            min: 161_820,
            max: 220_500,
        },
    };
    let mut seg = Segmenter::new(rules, 7, 0);
    let now = Instant::now();
    let sample = |dts: u64, duration: u32, keyframe| Sample {
        dts,
        duration,
        cts: 0,
        keyframe,
        data: Bytes::new(),
    };
    let mut ev = seg.push(sample(0, 3000, true), now, Some(false));
    // A one-second hole after the second frame, then frames every 3000.
    ev.extend(seg.push(sample(3000, 90_000, false), now, Some(false)));
    for dts in [93_000, 96_000, 99_000, 102_000] {
        ev.extend(seg.push(sample(dts, 3000, false), now, Some(false)));
    }
    ev.extend(seg.push(sample(105_000, 3000, false), now, None));
    ev.extend(seg.cut(108_000, 8));
    let placed: Vec<(u64, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Part(p) => Some((p.dts, p.duration)),
            _ => None,
        })
        .collect();
    // The long frame fills the first part (no part under 85%) and lends
    // three parts' time: the frames after it start that much early, each
    // shown for a part until the loan is paid back, and the rest of the
    // second is a hole.
    let loan = 3 * 18_180;
    assert_eq!(
        placed,
        [
            (0, 18_180),
            (93_000 - loan, 18_180),
            (93_000 - loan + 18_180, 18_180),
            (93_000 - loan + 2 * 18_180, 18_180),
            (93_000, 15_000),
        ]
    );
    assert_eq!(seg.msn(), 8);
}

#[test]
fn external_cuts_and_gap_segments() {
    let rules = Rules {
        part_target: 9696, // 202 ms at 48 kHz
        samples_per_part: 9,
        cuts: CutPolicy::External,
    };
    let mut seg = Segmenter::new(rules, 3, 0);
    let now = Instant::now();
    let mut ev = Vec::new();
    for i in 0..20u64 {
        let s = Sample {
            dts: i * 1024,
            duration: 1024,
            cts: 0,
            keyframe: true,
            data: Bytes::new(),
        };
        ev.extend(seg.push(s, now, None));
    }
    ev.extend(seg.cut(20 * 1024, 4));
    // Nothing arrives for segment 4: it still ends, as a gap.
    ev.extend(seg.cut(40 * 1024, 5));
    let segs = segments(&ev);
    assert_eq!(segs.len(), 2);
    assert_eq!(
        segs[0]
            .parts
            .iter()
            .map(|p| p.samples.len())
            .collect::<Vec<_>>(),
        [9, 9, 2]
    );
    assert!(
        segs[0]
            .parts
            .iter()
            .all(|p| p.independent && p.duration <= 9696)
    );
    assert!(matches!(
        ev.last(),
        Some(Event::SegmentEnd {
            msn: 4,
            start_dts: 20_480,
            end_dts: 40_960,
            gap: true,
            ..
        })
    ));
    assert_eq!(seg.msn(), 5);
}
