//! What a live channel tells an operator about itself: the ingest as
//! received, whether its media arrives as fast as the wall clock, its
//! rungs, and how many players read its playlists.
//!
//! Pure bookkeeping: the channel core feeds it media with the arrival
//! stamped at the socket, and health is judged against a `now` the caller
//! passes, so a stalled publisher (no input at all) reads as starving. It
//! never reads a clock and never keeps a client's address.

use crate::media::{AudioParams, Packet, TIMEBASE, TrackKind, VideoParams};
use crate::transcode::backend::ChannelPlan;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// Media and wall time are compared over this much of the latest ingest.
pub const CLOCK_WINDOW: Duration = Duration::from_secs(5);
/// Less ingest than this says nothing yet: health is `unknown`.
pub const WARMUP: Duration = Duration::from_secs(3);
/// A connected publisher silent for longer is starving the stream.
pub const STALL: Duration = Duration::from_secs(2);
/// Media advancing slower than this share of wall time starves players.
pub const MIN_REALTIME: f64 = 0.9;
/// Players counted are those that asked for a playlist this recently.
pub const VIEWER_WINDOW: Duration = Duration::from_secs(10);
/// Distinct addresses remembered per channel; beyond, new ones go uncounted.
const MAX_VIEWERS: usize = 100_000;
/// One clock sample per this much wall time bounds the window's size.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A media time jump this far back (or forward) is a new timeline, not
/// a slow or fast publisher.
const JUMP_BACK: i64 = TIMEBASE as i64;
const JUMP_AHEAD: i64 = 10 * TIMEBASE as i64;

/// Ingest as received: the codec parameters the publisher sent, and the
/// frame and bit rates measured on what arrived.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestInfo {
    /// `rtmp` or `whip`.
    pub protocol: &'static str,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    /// Audio and video together, per second of media.
    pub bitrate_bps: Option<u64>,
    /// A multitrack publish's video tracks beyond track 0 (which `video` describes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackInfo>,
}

/// One further video track of a multitrack publish.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackInfo {
    /// The Enhanced RTMP track id.
    pub id: u8,
    #[serde(flatten)]
    pub video: VideoInfo,
    /// Per second of media, measured.
    pub bitrate_bps: Option<u64>,
    /// The rung it is passed through as.
    pub rendition: Option<String>,
    /// Why it is not (or no longer) a rung.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VideoInfo {
    /// `h264`, `hevc`, `av1`.
    pub codec: &'static str,
    /// RFC 6381, as the playlists carry it (`avc1.64001e`).
    pub codec_string: String,
    pub profile: &'static str,
    pub level: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second of media, measured.
    pub frame_rate: Option<f64>,
}

impl VideoInfo {
    pub fn new(p: &VideoParams) -> Self {
        VideoInfo {
            codec: p.codec.id(),
            codec_string: p.codec_string(),
            profile: p.profile_name(),
            level: p.level_name(),
            width: p.width,
            height: p.height,
            frame_rate: None,
        }
    }

    /// `h264 640x360 High 3.0`, for an event's detail.
    pub fn describe(&self) -> String {
        format!(
            "{} {}x{} {} {}",
            self.codec, self.width, self.height, self.profile, self.level
        )
    }

    /// The same stream format, whatever was measured.
    pub fn same_format(&self, other: &VideoInfo) -> bool {
        (
            self.codec,
            self.width,
            self.height,
            self.profile,
            &self.level,
        ) == (
            other.codec,
            other.width,
            other.height,
            other.profile,
            &other.level,
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AudioInfo {
    pub codec: &'static str,
    pub profile: &'static str,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AudioInfo {
    pub fn new(p: &AudioParams) -> Self {
        AudioInfo {
            codec: "aac",
            profile: match p.object_type {
                2 => "LC",
                5 => "HE",
                29 => "HEv2",
                _ => "other",
            },
            sample_rate: p.sample_rate,
            channels: p.channels,
        }
    }

    /// `aac LC 48000 Hz 2 ch`, for an event's detail.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} Hz {} ch",
            self.codec, self.profile, self.sample_rate, self.channels
        )
    }
}

/// How ingest media time advances against the wall clock, over the last
/// [`CLOCK_WINDOW`] of arrivals.
#[derive(Debug, Default)]
pub struct IngestClock {
    samples: VecDeque<Sample>,
    /// The furthest decode time seen: audio and video share the timebase,
    /// and interleave a little out of order.
    media: Option<i64>,
    frames: u64,
    bytes: u64,
    last_arrival: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    media: i64,
    frames: u64,
    bytes: u64,
}

/// What the clock measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClockReading {
    /// Wall time the measurement covers (at most [`CLOCK_WINDOW`]).
    pub span: Duration,
    /// Media seconds per wall second.
    pub realtime: Option<f64>,
    pub frame_rate: Option<f64>,
    pub bitrate_bps: Option<u64>,
    /// When the latest media arrived.
    pub last_arrival: Option<Instant>,
}

impl IngestClock {
    /// One packet, arrived at `at`.
    pub fn packet(&mut self, at: Instant, p: &Packet) {
        if let Some(m) = self.media
            && (p.dts < m - JUMP_BACK || p.dts > m + JUMP_AHEAD)
        {
            self.restart();
        }
        self.media = Some(self.media.map_or(p.dts, |m| m.max(p.dts)));
        if p.track == TrackKind::Video {
            self.frames += 1;
        }
        self.bytes += p.data.len() as u64;
        self.last_arrival = Some(at);
        if self
            .samples
            .back()
            .is_some_and(|s| at.saturating_duration_since(s.at) < SAMPLE_EVERY)
        {
            return;
        }
        self.samples.push_back(Sample {
            at,
            media: self.media.unwrap_or(p.dts),
            frames: self.frames,
            bytes: self.bytes,
        });
        // Keep one sample at or before the window's start, so that the
        // window spans all of it.
        while self
            .samples
            .get(1)
            .is_some_and(|s| at.saturating_duration_since(s.at) >= CLOCK_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// A new timeline (another publish session): the old one says
    /// nothing about the new one's pace.
    pub fn restart(&mut self) {
        self.samples.clear();
        self.media = None;
    }

    pub fn reading(&self) -> ClockReading {
        let mut r = ClockReading {
            last_arrival: self.last_arrival,
            ..ClockReading::default()
        };
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return r;
        };
        r.span = last.at.saturating_duration_since(first.at);
        let media = (last.media - first.media) as f64 / f64::from(TIMEBASE);
        if r.span > Duration::ZERO {
            r.realtime = Some(media / r.span.as_secs_f64());
        }
        if media > 0.0 {
            r.frame_rate = Some((last.frames - first.frames) as f64 / media);
            r.bitrate_bps = Some(((last.bytes - first.bytes) as f64 * 8.0 / media) as u64);
        }
        r
    }
}

/// Whether players get media as fast as they play it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    /// Ingest runs below real time, or a connected publisher went silent.
    Starving,
    /// No publisher, or too little ingest yet to tell.
    Unknown,
}

/// Where a channel's stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// A publisher is connected.
    Live,
    /// The publisher left; the stream waits its grace period for it.
    Reconnecting,
    /// The stream ended (its playlists linger a while).
    Offline,
}

/// One rendition of the stream's video and what makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RungInfo {
    pub name: String,
    /// `passthrough`, `libx264`, `h264_nvenc`; `None` until the rung's
    /// encoder is open.
    pub encoder: Option<&'static str>,
    /// Where its pictures are scaled (`cpu`, `cuda`); `None` for the source.
    pub backend: Option<&'static str>,
}

impl RungInfo {
    pub fn source() -> Self {
        RungInfo {
            name: "source".to_string(),
            encoder: Some("passthrough"),
            backend: None,
        }
    }
}

/// The source, then the ladder's rungs: each named with the index of its transcoded rung
/// in `plan` (whose encoders they get), or `None` for a publisher's track passed through.
pub fn rungs_of(ladder: &[(String, Option<usize>)], plan: Option<&ChannelPlan>) -> Vec<RungInfo> {
    let mut out = vec![RungInfo::source()];
    for (name, planned) in ladder {
        let Some(i) = *planned else {
            out.push(RungInfo {
                name: name.clone(),
                encoder: Some("passthrough"),
                backend: None,
            });
            continue;
        };
        let encoder = plan.and_then(|p| p.rungs.get(i)).map(|e| match e.name() {
            "nvenc" => "h264_nvenc",
            _ => "libx264",
        });
        out.push(RungInfo {
            name: name.clone(),
            encoder,
            backend: plan.map(|p| p.scale.name()),
        });
    }
    out
}

/// A channel's state as its core last reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamStatus {
    pub state: StreamState,
    /// When the connected publisher joined; `None` without one.
    pub publisher_since: Option<Instant>,
    /// When the stream's first media arrived.
    pub started: Option<SystemTime>,
    pub ingest: IngestInfo,
    pub clock: ClockReading,
    pub rungs: Vec<RungInfo>,
}

impl StreamStatus {
    /// Healthy while media arrives at least [`MIN_REALTIME`] as fast as
    /// the wall clock runs; judged at `now`, so a publisher that stopped
    /// sending altogether turns starving after [`STALL`].
    pub fn health(&self, now: Instant) -> Health {
        let Some(joined) = self.publisher_since else {
            return Health::Unknown;
        };
        let heard = self.clock.last_arrival.map_or(joined, |t| t.max(joined));
        if now.saturating_duration_since(heard) > STALL {
            return Health::Starving;
        }
        // A reading from before this publisher joined is about another one.
        let fresh = self.clock.last_arrival.is_some_and(|t| t >= joined);
        match self.clock.realtime {
            _ if !fresh || self.clock.span < WARMUP => Health::Unknown,
            Some(r) if r < MIN_REALTIME => Health::Starving,
            Some(_) => Health::Healthy,
            None => Health::Unknown,
        }
    }
}

/// Distinct players that read a channel's playlists lately, by address.
/// Addresses are kept only as keyed hashes (the key is random per
/// process), so neither memory nor an answer reveals one.
#[derive(Debug, Default)]
pub struct Viewers {
    seen: HashMap<u64, Instant>,
    key: RandomState,
    next_prune: Option<Instant>,
}

impl Viewers {
    /// A playlist request from `addr` at `now`.
    pub fn note(&mut self, addr: IpAddr, now: Instant) {
        if self.next_prune.is_none_or(|t| now >= t) || self.seen.len() >= MAX_VIEWERS {
            self.seen
                .retain(|_, t| now.saturating_duration_since(*t) < VIEWER_WINDOW);
            self.next_prune = Some(now + VIEWER_WINDOW);
        }
        let h = self.key.hash_one(addr);
        if self.seen.len() < MAX_VIEWERS || self.seen.contains_key(&h) {
            self.seen.insert(h, now);
        }
    }

    /// Addresses that asked within [`VIEWER_WINDOW`] before `now`.
    pub fn count(&self, now: Instant) -> usize {
        self.seen
            .values()
            .filter(|t| now.saturating_duration_since(**t) < VIEWER_WINDOW)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(ms: i64) -> Packet {
        Packet {
            track: TrackKind::Video,
            dts: ms * 90,
            pts: ms * 90,
            keyframe: false,
            data: Bytes::from_static(&[0; 1000]),
        }
    }

    /// A publisher sending 30 fps whose media advances `pace` seconds per
    /// wall second, for `secs` wall seconds from `t0`.
    fn feed(clock: &mut IngestClock, t0: Instant, pace: f64, secs: u64) -> Instant {
        let mut at = t0;
        for i in 0..secs * 30 {
            let wall_ms = i * 1000 / 30;
            at = t0 + Duration::from_millis(wall_ms);
            clock.packet(at, &video((wall_ms as f64 * pace) as i64));
        }
        at
    }

    fn status(clock: &IngestClock, joined: Instant) -> StreamStatus {
        StreamStatus {
            state: StreamState::Live,
            publisher_since: Some(joined),
            started: None,
            ingest: IngestInfo::default(),
            clock: clock.reading(),
            rungs: vec![RungInfo::source()],
        }
    }

    #[test]
    fn real_time_ingest_is_healthy_after_warmup() {
        let t0 = Instant::now();
        let mut clock = IngestClock::default();
        let early = feed(&mut clock, t0, 1.0, 2);
        assert_eq!(status(&clock, t0).health(early), Health::Unknown);
        let mut clock = IngestClock::default();
        let last = feed(&mut clock, t0, 1.0, 8);
        let s = status(&clock, t0);
        assert_eq!(s.health(last), Health::Healthy);
        let r = s.clock;
        assert!(r.span >= CLOCK_WINDOW && r.span < CLOCK_WINDOW + SAMPLE_EVERY);
        assert!((r.realtime.unwrap_or(0.0) - 1.0).abs() < 0.02, "{r:?}");
        assert!((r.frame_rate.unwrap_or(0.0) - 30.0).abs() < 0.5, "{r:?}");
        let kbps = r.bitrate_bps.unwrap_or(0) / 1000;
        assert!((235..=245).contains(&kbps), "30 fps of 1000 bytes: {r:?}");
    }

    #[test]
    fn slow_or_silent_ingest_is_starving() {
        let t0 = Instant::now();
        let mut clock = IngestClock::default();
        let last = feed(&mut clock, t0, 0.5, 8);
        let s = status(&clock, t0);
        assert_eq!(s.health(last), Health::Starving);
        let mut clock = IngestClock::default();
        let last = feed(&mut clock, t0, 1.0, 8);
        let s = status(&clock, t0);
        assert_eq!(s.health(last + STALL), Health::Healthy);
        assert_eq!(
            s.health(last + STALL + Duration::from_millis(1)),
            Health::Starving
        );
        // Connected, nothing ever sent.
        let idle = status(&IngestClock::default(), t0);
        assert_eq!(idle.health(t0 + Duration::from_secs(1)), Health::Unknown);
        assert_eq!(idle.health(t0 + Duration::from_secs(3)), Health::Starving);
        let gone = StreamStatus {
            publisher_since: None,
            ..status(&clock, t0)
        };
        assert_eq!(gone.health(last), Health::Unknown);
    }

    #[test]
    fn a_new_timeline_or_publisher_starts_the_measure_afresh() {
        let t0 = Instant::now();
        let mut clock = IngestClock::default();
        let last = feed(&mut clock, t0, 1.0, 8);
        // Media time restarts at 0 (a reconnecting encoder): not a
        // slow publisher.
        let mut at = last;
        for i in 0..30 {
            at = last + Duration::from_millis(i * 33);
            clock.packet(at, &video(i as i64 * 33));
        }
        let r = clock.reading();
        assert!(r.span < Duration::from_secs(2), "{r:?}");
        // A publisher that joined after the last reading is judged on its own.
        let s = status(&clock, at + Duration::from_millis(1));
        assert_eq!(s.health(at + Duration::from_millis(500)), Health::Unknown);
    }

    #[test]
    fn viewers_are_distinct_recent_addresses() {
        let t0 = Instant::now();
        let mut v = Viewers::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        v.note(a, t0);
        v.note(a, t0 + Duration::from_secs(1));
        v.note(b, t0 + Duration::from_secs(2));
        assert_eq!(v.count(t0 + Duration::from_secs(3)), 2);
        assert_eq!(v.count(t0 + Duration::from_secs(11)), 1);
        v.note(b, t0 + Duration::from_secs(25));
        assert_eq!(v.count(t0 + Duration::from_secs(25)), 1);
        assert_eq!(v.seen.len(), 1, "stale addresses are pruned");
    }

    #[test]
    fn codec_names_for_an_operator() {
        let v = VideoInfo::new(&crate::package::testmedia::video_params(320));
        assert_eq!(v.describe(), "h264 320x240 High 1.3");
        assert_eq!((v.codec, v.codec_string.as_str()), ("h264", "avc1.64000d"));
        let a = AudioInfo::new(&crate::package::testmedia::audio_params());
        assert_eq!(a.describe(), "aac LC 44100 Hz 2 ch");
    }
}
