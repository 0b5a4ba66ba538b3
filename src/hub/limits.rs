//! What one publisher may send a channel: frame size, frame rate and bit
//! rate, measured in media time (a publisher sending a recording faster than
//! real time is not over a cap its stream is within), and the channel's own
//! rules on multitrack and picture height. Sans-IO: fed the publisher's
//! events, it says when a cap or rule is broken.

use crate::media::{IngestEvent, TIMEBASE, TrackKind, VideoEvent, VideoParams};
use crate::registry::{Multitrack, Policy};
use std::collections::VecDeque;

/// The caps from config; `None` is no cap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IngestLimits {
    pub max_bitrate_bps: Option<u64>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub max_frame_rate: Option<f64>,
}

/// What a channel's policy says about what its publisher sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelRules {
    pub multitrack: Multitrack,
    /// The tallest video track accepted, in lines.
    pub max_height: Option<u32>,
}

impl ChannelRules {
    pub fn of(policy: &Policy) -> Self {
        ChannelRules {
            multitrack: policy.multitrack,
            max_height: policy.max_height,
        }
    }
}

impl IngestLimits {
    pub const NONE: IngestLimits = IngestLimits {
        max_bitrate_bps: None,
        max_width: None,
        max_height: None,
        max_frame_rate: None,
    };
}

/// Which cap a publisher broke, and by how much.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OverLimit {
    #[error("{bps} b/s over the last {window_s} s of media, above the cap of {cap} b/s")]
    Bitrate { bps: u64, cap: u64, window_s: u64 },
    #[error("frame size {width}x{height} above the cap of {max_width}x{max_height}")]
    FrameSize {
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    #[error("{fps:.1} frames/s above the cap of {cap}")]
    FrameRate { fps: f64, cap: f64 },
    #[error("video track {track} is {height} lines tall, above the channel's maximum of {max}")]
    Height { track: u8, height: u32, max: u32 },
    #[error("video track {track}: this channel does not take multitrack publishes")]
    MultitrackDenied { track: u8 },
    #[error("one video track: this channel requires a multitrack publish")]
    MultitrackRequired,
}

impl OverLimit {
    /// Label for the `reason` of refusal metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            OverLimit::Bitrate { .. } => "bitrate",
            OverLimit::FrameSize { .. } => "frame_size",
            OverLimit::FrameRate { .. } => "frame_rate",
            OverLimit::Height { .. } => "max_height",
            OverLimit::MultitrackDenied { .. } => "multitrack_denied",
            OverLimit::MultitrackRequired => "multitrack_required",
        }
    }
}

/// Media seconds a rate is averaged over: several GOPs, so a keyframe's
/// burst of bytes does not read as a bit rate.
const WINDOW_S: u64 = 4;
/// A rate over a cap by less than this share is taken for jitter in
/// timestamps (FLV's milliseconds round every frame's duration).
const TOLERANCE: f64 = 1.1;

/// One publisher's measurements.
pub struct Meter {
    limits: IngestLimits,
    /// Video frames and bytes (video and audio) in the window, by dts.
    frames: VecDeque<(i64, usize)>,
    bytes: u64,
    audio: VecDeque<(i64, usize)>,
    /// Further video tracks' bytes: they count towards the bit rate, not the frame rate.
    tracks: VecDeque<(i64, usize)>,
    rules: ChannelRules,
    /// A further video track was announced.
    multitrack: bool,
}

impl Meter {
    pub fn new(limits: IngestLimits, rules: ChannelRules) -> Self {
        Meter {
            limits,
            frames: VecDeque::new(),
            bytes: 0,
            audio: VecDeque::new(),
            tracks: VecDeque::new(),
            rules,
            multitrack: false,
        }
    }

    /// Takes one event; an error when it breaks a cap or a rule.
    pub fn check(&mut self, event: &IngestEvent) -> Result<(), OverLimit> {
        match event {
            IngestEvent::VideoConfig(p) => self.video_config(0, p),
            IngestEvent::AudioConfig(_) => Ok(()),
            IngestEvent::Track { id, event } => {
                if self.rules.multitrack == Multitrack::Deny {
                    return Err(OverLimit::MultitrackDenied { track: *id });
                }
                self.multitrack = true;
                match event {
                    VideoEvent::Config(p) => self.video_config(*id, p),
                    VideoEvent::Packet(p) => self.count(None, p.dts, p.data.len()),
                }
            }
            IngestEvent::Packet(p) => {
                // Multitrack publishers announce every track before the first frame.
                if p.track == TrackKind::Video
                    && self.rules.multitrack == Multitrack::Require
                    && !self.multitrack
                {
                    return Err(OverLimit::MultitrackRequired);
                }
                self.count(Some(p.track), p.dts, p.data.len())
            }
        }
    }

    /// The channel's own rules, read when its publisher was admitted.
    pub fn set_rules(&mut self, rules: ChannelRules) {
        self.rules = rules;
    }

    fn video_config(&self, track: u8, p: &VideoParams) -> Result<(), OverLimit> {
        let (max_width, max_height) = (
            self.limits.max_width.unwrap_or(u32::MAX),
            self.limits.max_height.unwrap_or(u32::MAX),
        );
        if p.width > max_width || p.height > max_height {
            return Err(OverLimit::FrameSize {
                width: p.width,
                height: p.height,
                max_width,
                max_height,
            });
        }
        match self.rules.max_height {
            Some(max) if p.height > max => Err(OverLimit::Height {
                track,
                height: p.height,
                max,
            }),
            _ => Ok(()),
        }
    }

    /// One packet of `kind` (`None`: a further video track) in the rate window.
    fn count(&mut self, kind: Option<TrackKind>, dts: i64, len: usize) -> Result<(), OverLimit> {
        let window = i64::from(TIMEBASE) * WINDOW_S as i64;
        let q = match kind {
            Some(TrackKind::Video) => &mut self.frames,
            Some(TrackKind::Audio) => &mut self.audio,
            None => &mut self.tracks,
        };
        // Timestamps that go back start the window afresh: a new
        // timeline, not a burst.
        if q.back().is_some_and(|&(t, _)| dts < t) {
            for (_, n) in q.drain(..) {
                self.bytes -= n as u64;
            }
        }
        q.push_back((dts, len));
        self.bytes += len as u64;
        for q in [&mut self.frames, &mut self.audio, &mut self.tracks] {
            while q.len() > 1 && q.back().map_or(0, |b| b.0) - q[0].0 > window {
                if let Some((_, n)) = q.pop_front() {
                    self.bytes -= n as u64;
                }
            }
        }
        self.rates()
    }

    fn rates(&self) -> Result<(), OverLimit> {
        // Rates are judged on video's clock once a whole window is in.
        let (Some(first), Some(last)) = (self.frames.front(), self.frames.back()) else {
            return Ok(());
        };
        let span = last.0 - first.0;
        if span < i64::from(TIMEBASE) * WINDOW_S as i64 * 3 / 4 {
            return Ok(());
        }
        let secs = span as f64 / f64::from(TIMEBASE);
        if let Some(cap) = self.limits.max_frame_rate {
            let fps = (self.frames.len() - 1) as f64 / secs;
            if fps > cap * TOLERANCE {
                return Err(OverLimit::FrameRate { fps, cap });
            }
        }
        if let Some(cap) = self.limits.max_bitrate_bps {
            let bps = (self.bytes as f64 * 8.0 / secs) as u64;
            if bps as f64 > cap as f64 * TOLERANCE {
                return Err(OverLimit::Bitrate {
                    bps,
                    cap,
                    window_s: WINDOW_S,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Packet;
    use crate::package::testmedia::sized_video_params;
    use bytes::Bytes;

    fn video(dts: i64, bytes: usize) -> IngestEvent {
        IngestEvent::Packet(Packet {
            track: TrackKind::Video,
            dts,
            pts: dts,
            keyframe: false,
            data: Bytes::from(vec![0u8; bytes]),
        })
    }

    fn config(width: u32, height: u32) -> IngestEvent {
        IngestEvent::VideoConfig(sized_video_params(width, height))
    }

    /// `seconds` of 30 fps video at `bps`, from dts `start`.
    fn feed(m: &mut Meter, start: i64, seconds: u32, bps: u64) -> Result<(), OverLimit> {
        let frame = (bps / 8 / 30) as usize;
        (0..seconds as i64 * 30).try_for_each(|i| m.check(&video(start + i * 3000, frame)))
    }

    #[test]
    fn a_stream_within_its_caps_passes_and_one_above_is_cut_within_a_window() {
        let limits = IngestLimits {
            max_bitrate_bps: Some(6_000_000),
            max_width: Some(1920),
            max_height: Some(1080),
            max_frame_rate: Some(60.0),
        };
        let mut m = Meter::new(limits, ChannelRules::default());
        assert_eq!(m.check(&config(1920, 1080)), Ok(()));
        assert_eq!(feed(&mut m, 0, 60, 6_000_000), Ok(()));
        let mut m = Meter::new(limits, ChannelRules::default());
        let err = feed(&mut m, 0, 60, 20_000_000).expect_err("over the cap");
        assert_eq!(err.reason(), "bitrate");
        assert_eq!(
            m.check(&config(3840, 2160)).map_err(|e| e.reason()),
            Err("frame_size")
        );
    }

    #[test]
    fn frame_rate_is_counted_in_media_time_and_a_timeline_restart_is_no_burst() {
        let limits = IngestLimits {
            max_frame_rate: Some(30.0),
            ..IngestLimits::NONE
        };
        let mut m = Meter::new(limits, ChannelRules::default());
        assert_eq!(feed(&mut m, 0, 10, 1_000_000), Ok(()));
        // The publisher's clock starts again at zero.
        assert_eq!(feed(&mut m, 0, 10, 1_000_000), Ok(()));
        let mut m = Meter::new(limits, ChannelRules::default());
        let fast = (0..600).try_for_each(|i| m.check(&video(i * 1500, 100)));
        assert_eq!(fast.map_err(|e| e.reason()), Err("frame_rate"));
    }

    fn track(event: IngestEvent) -> IngestEvent {
        let event = match event {
            IngestEvent::VideoConfig(p) => VideoEvent::Config(p),
            IngestEvent::Packet(p) => VideoEvent::Packet(p),
            other => panic!("not video: {other:?}"),
        };
        IngestEvent::Track { id: 1, event }
    }

    #[test]
    fn channel_rules_on_multitrack_and_height() {
        let rules = |multitrack, max_height| ChannelRules {
            multitrack,
            max_height,
        };
        let mut m = Meter::new(IngestLimits::NONE, rules(Multitrack::Deny, None));
        assert_eq!(m.check(&config(1280, 720)), Ok(()));
        let err = m.check(&track(config(640, 360))).expect_err("denied");
        assert_eq!(err.reason(), "multitrack_denied");

        let mut m = Meter::new(IngestLimits::NONE, rules(Multitrack::Require, None));
        assert_eq!(m.check(&config(1280, 720)), Ok(()));
        let err = m.check(&video(0, 100)).expect_err("required");
        assert_eq!(err.reason(), "multitrack_required");
        let mut m = Meter::new(IngestLimits::NONE, rules(Multitrack::Require, None));
        assert_eq!(m.check(&track(config(640, 360))), Ok(()));
        assert_eq!(m.check(&video(0, 100)), Ok(()));

        let mut m = Meter::new(IngestLimits::NONE, rules(Multitrack::Allow, Some(720)));
        assert_eq!(m.check(&config(1280, 720)), Ok(()));
        let err = m.check(&track(config(1920, 1080))).expect_err("too tall");
        assert_eq!(
            err.to_string(),
            "video track 1 is 1080 lines tall, above the channel's maximum of 720"
        );
    }

    #[test]
    fn further_tracks_count_towards_the_bit_rate_not_the_frame_rate() {
        let limits = IngestLimits {
            max_bitrate_bps: Some(3_000_000),
            max_frame_rate: Some(30.0),
            ..IngestLimits::NONE
        };
        let mut m = Meter::new(limits, ChannelRules::default());
        let over = (0..300).try_for_each(|i| {
            m.check(&video(i * 3000, 5000))?;
            m.check(&track(video(i * 3000, 10_000)))
        });
        assert_eq!(over.map_err(|e| e.reason()), Err("bitrate"));
    }
}
