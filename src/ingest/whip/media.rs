//! The media thread of one WHIP session: WebRTC frames in, the hub's ingest
//! events out. It turns Annex B access units into samples and parameter
//! sets into decoder configurations, transcodes Opus to AAC and places both
//! tracks on the node timeline. It owns the session's hub `Publisher`, so
//! the publish ends when this thread does. It never touches a socket.

use super::timing::{AUDIO_RATE, AvClock, SenderClock};
use crate::hub::{Cut, Publisher};
use crate::logging::LogBudget;
use crate::media::annexb::{self, NAL_AUD, NAL_PPS, NAL_SPS};
use crate::media::{Arrival, IngestEvent, Packet, TIMEBASE, TrackKind, VideoParams, h264};
use crate::transcode::audio::{AacFrame, OpusToAac};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

/// One depacketized frame handed over by the session.
pub struct MediaMsg {
    pub track: TrackKind,
    /// Extended RTP time: 90 kHz for video, 48 kHz for audio.
    pub rtp: u64,
    pub data: Arc<[u8]>,
    pub arrival: Arrival,
    /// The track's latest RTCP sender report.
    pub sender: Option<SenderClock>,
}

/// Bad parameter sets come with every keyframe of a broken encoder.
static BAD_PARAMETER_SETS: LogBudget = LogBudget::new(10, Duration::from_secs(10));

/// What one H.264 access unit gives the hub.
#[derive(Debug)]
pub struct VideoAu {
    /// A new decoder configuration: the access unit carries parameter sets
    /// that differ from the last ones (announce it before the sample).
    pub config: Option<VideoParams>,
    /// The sample, unless there is nothing to decode (no configuration yet,
    /// or no slice left).
    pub sample: Option<VideoSample>,
}

#[derive(Debug)]
pub struct VideoSample {
    /// It holds an IDR slice.
    pub keyframe: bool,
    /// NAL units with 4-byte big-endian lengths, as the avcC built from
    /// Annex B declares; no parameter sets, no access unit delimiters.
    pub data: Bytes,
}

/// Turns the Annex B access units str0m depacketizes (4-byte start codes; a
/// keyframe comes as SPS, PPS, IDR together) into decoder configurations and
/// length-prefixed samples. Sans-IO: it knows no clock and no publisher.
pub struct AnnexBVideo {
    channel: String,
    /// The avcC last announced, to spot new parameter sets.
    avcc: Option<Bytes>,
    sample: BytesMut,
}

impl AnnexBVideo {
    /// `channel` names the log lines.
    pub fn new(channel: String) -> Self {
        AnnexBVideo {
            channel,
            avcc: None,
            sample: BytesMut::new(),
        }
    }

    pub fn push(&mut self, au: &[u8]) -> VideoAu {
        let config = self.parameter_sets(au);
        if self.avcc.is_none() {
            // Frames before the first SPS/PPS cannot be decoded by anyone.
            return VideoAu {
                config,
                sample: None,
            };
        }
        let keyframe = annexb::annexb_nals(au).any(|n| annexb::nal_type(n) == annexb::NAL_IDR);
        self.sample.clear();
        // Parameter sets travel in the avcC, and access unit delimiters mean
        // nothing in a sample (ISO/IEC 14496-15 5.3.2).
        let kept = annexb::annexb_to_length_prefixed(au, &mut self.sample, |nal| {
            !matches!(annexb::nal_type(nal), NAL_SPS | NAL_PPS | NAL_AUD)
        });
        let sample = match kept {
            Ok(n) if n > 0 => Some(VideoSample {
                keyframe,
                data: self.sample.split().freeze(),
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(channel = %self.channel, error = %e, "whip: unusable access unit");
                None
            }
        };
        VideoAu { config, sample }
    }

    /// New decoder configuration when this access unit carries parameter
    /// sets different from the last ones.
    fn parameter_sets(&mut self, au: &[u8]) -> Option<VideoParams> {
        let has_sps = annexb::annexb_nals(au).any(|n| annexb::nal_type(n) == NAL_SPS);
        if !has_sps {
            return None;
        }
        let avcc = match annexb::avc_config_from_annexb(au) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(channel = %self.channel, error = %e, "whip: parameter sets ignored");
                return None;
            }
        };
        if self.avcc.as_ref() == Some(&avcc) {
            return None;
        }
        match h264::parse_avc_config(avcc.clone()) {
            Ok(params) => {
                tracing::info!(channel = %self.channel, width = params.width, height = params.height,
                    codec = %params.codec_string(), "whip: video configuration");
                self.avcc = Some(avcc);
                Some(params)
            }
            Err(e) => {
                if let Some(held) = BAD_PARAMETER_SETS.admit_now() {
                    tracing::warn!(channel = %self.channel, error = %e, held_back = held, "whip: bad parameter sets ignored");
                }
                None
            }
        }
    }
}

/// Converts one session's frames and hands them to its publisher.
pub struct MediaThread {
    channel: String,
    publisher: Publisher,
    clock: AvClock,
    video: AnnexBVideo,
    audio: Option<OpusToAac>,
    aac: Vec<AacFrame>,
    /// Audio errors are logged once per kind, not per 20 ms packet.
    audio_errors: u64,
}

impl MediaThread {
    /// `audio_bps`: the AAC bitrate when the session carries audio.
    pub fn new(channel: String, publisher: Publisher, audio_bps: Option<u64>) -> Self {
        let audio = audio_bps.and_then(|bps| match OpusToAac::new(bps) {
            Ok(t) => {
                // A publisher cut this early finds out at its first frame.
                let _ = publisher.send(IngestEvent::AudioConfig(t.params().clone()), Arrival::now());
                Some(t)
            }
            Err(e) => {
                tracing::error!(channel = %channel, error = %e, "whip: no AAC encoder; the stream goes on without audio");
                None
            }
        });
        MediaThread {
            video: AnnexBVideo::new(channel.clone()),
            channel,
            publisher,
            clock: AvClock::default(),
            audio,
            aac: Vec::new(),
            audio_errors: 0,
        }
    }

    /// Runs until the session drops its sender, then flushes; or until the
    /// hub cuts the publisher: the session's next frame then finds no
    /// receiver and the session ends.
    pub fn run(mut self, rx: crossbeam_channel::Receiver<MediaMsg>) {
        let mut last = None;
        for m in rx {
            last = Some(m.arrival);
            match (m.track, m.sender) {
                (TrackKind::Video, Some(sr)) => self.clock.video_report(sr),
                (TrackKind::Audio, Some(sr)) => self.clock.audio_report(sr),
                (_, None) => {}
            }
            let sent = match m.track {
                TrackKind::Video => self.video(m.rtp, &m.data, m.arrival),
                TrackKind::Audio => self.audio(m.rtp, &m.data, m.arrival),
            };
            if let Err(cut) = sent {
                tracing::info!(channel = %self.channel, reason = cut.reason(), "whip: publisher cut off, ending the session");
                return;
            }
        }
        // What the encoder still holds came with the last datagram.
        if let (Some(mut a), Some(arrival)) = (self.audio.take(), last) {
            let mut out = std::mem::take(&mut self.aac);
            if a.flush(&mut out).is_ok() {
                let _ = self.send_aac(&mut out, arrival);
            }
        }
        tracing::debug!(channel = %self.channel, audio_errors = self.audio_errors, "whip: media thread done");
    }

    fn video(&mut self, rtp: u64, au: &[u8], arrival: Arrival) -> Result<(), Cut> {
        let VideoAu { config, sample } = self.video.push(au);
        if let Some(params) = config {
            self.publisher
                .send(IngestEvent::VideoConfig(Arc::new(params)), arrival)?;
        }
        let Some(VideoSample { keyframe, data }) = sample else {
            return Ok(());
        };
        if !self.clock.started() && !keyframe {
            return Ok(());
        }
        let t = self.clock.video(rtp, arrival.at);
        // WebRTC H.264 has no B-frames (RFC 6184 carries no decode time and
        // browsers send constrained baseline): decode time is presentation time.
        self.publisher.send(
            IngestEvent::Packet(Packet {
                track: TrackKind::Video,
                dts: t,
                pts: t,
                keyframe,
                data,
            }),
            arrival,
        )
    }

    fn audio(&mut self, rtp: u64, opus: &[u8], arrival: Arrival) -> Result<(), Cut> {
        if opus.is_empty() {
            return Ok(());
        }
        let Some(ticks) = self.clock.audio(rtp, arrival.at) else {
            return Ok(());
        };
        let Some(tx) = &mut self.audio else {
            return Ok(());
        };
        let pts = ticks * AUDIO_RATE as i64 / i64::from(TIMEBASE);
        let mut out = std::mem::take(&mut self.aac);
        if let Err(e) = tx.push(opus, pts, &mut out) {
            self.audio_errors += 1;
            if self.audio_errors == 1 {
                tracing::warn!(channel = %self.channel, error = %e, "whip: Opus packet dropped");
            }
        }
        let sent = self.send_aac(&mut out, arrival);
        self.aac = out;
        sent
    }

    fn send_aac(&mut self, frames: &mut Vec<AacFrame>, arrival: Arrival) -> Result<(), Cut> {
        for f in frames.drain(..) {
            let t = f.pts * i64::from(TIMEBASE) / AUDIO_RATE as i64;
            if t < 0 {
                continue;
            }
            self.publisher.send(
                IngestEvent::Packet(Packet {
                    track: TrackKind::Audio,
                    dts: t,
                    pts: t,
                    keyframe: true,
                    data: f.data,
                }),
                arrival,
            )?;
        }
        Ok(())
    }
}
