//! Media units shared by every stage: encoded packets, codec parameters and the node timebase.

pub mod aac;
pub mod annexb;
pub mod av1;
pub mod h264;
pub mod hevc;

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The node's one timebase for packet timestamps: 90 kHz ticks, as in MPEG systems.
pub const TIMEBASE: u32 = 90_000;

/// Converts milliseconds (the RTMP/FLV clock) to node ticks.
pub fn ms_to_ticks(ms: i64) -> i64 {
    ms * i64::from(TIMEBASE) / 1000
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

/// The video codec of a track, with what its codec string needs beyond [`VideoParams`]'
/// common fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264: the configuration record is an AVCDecoderConfigurationRecord (`avcC`).
    Avc,
    /// H.265: the configuration record is an HEVCDecoderConfigurationRecord (`hvcC`).
    Hevc(hevc::HevcProfile),
    /// AV1: the configuration record is an AV1CodecConfigurationRecord (`av1C`).
    Av1(av1::Av1Profile),
}

impl VideoCodec {
    /// The codec's common name, for log lines and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            VideoCodec::Avc => "H.264",
            VideoCodec::Hevc(_) => "HEVC",
            VideoCodec::Av1(_) => "AV1",
        }
    }

    /// The codec as APIs name it: `h264`, `hevc`, `av1`.
    pub fn id(&self) -> &'static str {
        match self {
            VideoCodec::Avc => "h264",
            VideoCodec::Hevc(_) => "hevc",
            VideoCodec::Av1(_) => "av1",
        }
    }
}

/// Video decoder configuration as the publisher sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoParams {
    pub codec: VideoCodec,
    /// The codec's decoder configuration record (ISO/IEC 14496-15 `avcC` or `hvcC`, or the
    /// AV1 `av1C`), as carried in the FLV sequence header and written verbatim into the
    /// sample entry.
    pub avcc: Bytes,
    pub width: u32,
    pub height: u32,
    /// H.264 `profile_idc`, HEVC `general_profile_idc`, AV1 `seq_profile`.
    pub profile_idc: u8,
    /// H.264 constraint_set flags; 0 for the other codecs.
    pub constraint_flags: u8,
    /// H.264 `level_idc`, HEVC `general_level_idc`, AV1 `seq_level_idx`.
    pub level_idc: u8,
    /// Bytes in each NAL unit length prefix of the samples (1, 2 or 4); AV1 samples are
    /// OBUs with sizes of their own, and this is 0.
    pub nal_length_size: u8,
}

impl VideoParams {
    /// RFC 6381 codec string: `avc1.PPCCLL`, or as [`hevc::HevcProfile::codec_string`] and
    /// [`av1::Av1Profile::codec_string`] write it.
    pub fn codec_string(&self) -> String {
        match &self.codec {
            VideoCodec::Avc => format!(
                "avc1.{:02x}{:02x}{:02x}",
                self.profile_idc, self.constraint_flags, self.level_idc
            ),
            VideoCodec::Hevc(p) => p.codec_string(),
            VideoCodec::Av1(p) => p.codec_string(),
        }
    }

    /// The profile's name in its codec's specification (`High`, `Main 10`).
    pub fn profile_name(&self) -> &'static str {
        match self.codec {
            VideoCodec::Avc => h264::profile_name(self.profile_idc),
            VideoCodec::Hevc(_) => hevc::profile_name(self.profile_idc),
            VideoCodec::Av1(_) => av1::profile_name(self.profile_idc),
        }
    }

    /// The level as its codec's specification writes it (`3.1`, `1b`).
    pub fn level_name(&self) -> String {
        match self.codec {
            VideoCodec::Avc => h264::level_name(self.level_idc),
            VideoCodec::Hevc(_) => hevc::level_name(self.level_idc),
            VideoCodec::Av1(_) => av1::level_name(self.level_idc),
        }
    }
}

/// AAC decoder configuration as the publisher sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    /// AudioSpecificConfig (ISO/IEC 14496-3), written verbatim into `esds`.
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
    /// PCM samples per AAC frame (1024, or 960 for the rare short-frame mode).
    pub samples_per_frame: u32,
}

impl AudioParams {
    /// RFC 6381 codec string, `mp4a.40.N`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// One encoded access unit (video) or one raw AAC frame (audio).
#[derive(Clone, Debug)]
pub struct Packet {
    pub track: TrackKind,
    /// Decode timestamp in [`TIMEBASE`] ticks.
    pub dts: i64,
    /// Presentation timestamp in [`TIMEBASE`] ticks.
    pub pts: i64,
    pub keyframe: bool,
    /// Video: NAL units each prefixed by a big-endian length of
    /// `VideoParams::nal_length_size` bytes (the FLV and ISO-BMFF sample form).
    /// Audio: one raw AAC frame without ADTS header.
    pub data: Bytes,
}

/// When ingest received something, read once at the socket: the wall clock
/// (for EXT-X-PROGRAM-DATE-TIME) and the monotonic clock (for latencies).
/// Everything downstream takes its time from here, never from a clock of
/// its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub wall: SystemTime,
    pub at: Instant,
}

impl Arrival {
    /// The present: for sockets, and for drivers standing in for one.
    pub fn now() -> Self {
        Arrival {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }
}

/// What an ingest session hands to its channel, in order.
#[derive(Clone, Debug)]
pub enum IngestEvent {
    /// New or changed video configuration; applies to the packets after it.
    VideoConfig(Arc<VideoParams>),
    /// New or changed audio configuration; applies to the packets after it.
    AudioConfig(Arc<AudioParams>),
    Packet(Packet),
    /// A further video track of a multitrack publish: Enhanced RTMP track `id`, never 0.
    /// Track 0, the one every publisher sends, travels as the events above.
    Track {
        id: u8,
        event: VideoEvent,
    },
}

/// One event of a video rendition other than the source: a transcoded rung's encoder
/// output, or a publisher's further track.
#[derive(Clone, Debug)]
pub enum VideoEvent {
    /// The configuration; applies to the packets after it.
    Config(Arc<VideoParams>),
    /// One access unit. `keyframe` marks IDRs; dts and pts are on the source packets'
    /// clock.
    Packet(Packet),
}

/// Errors from parsing codec configuration and bitstreams.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
}
