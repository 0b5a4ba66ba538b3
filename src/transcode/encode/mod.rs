//! What every video encoder backend shares: settings, encoded packets, errors and the
//! `VideoEncoder` trait the per-rung encode thread drives. Backends live in submodules; this
//! file never touches FFmpeg.

mod lavc;
pub mod nvenc;
pub mod x264;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::media::{MediaError, VideoParams};
use crate::transcode::frame::{Frame, Size};
use crate::transcode::quality::{FrameMse, Psnr};

pub use nvenc::NvencEncoder;
pub use x264::X264Encoder;

pub type Result<T, E = EncodeError> = std::result::Result<T, E>;

/// Frames per second as a fraction, e.g. 30000/1001.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    pub const fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    /// Whole frames per second, rounded up (used for GOP lengths).
    pub fn ceil(self) -> u32 {
        self.num.div_ceil(self.den.max(1))
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// One rung's encoder configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    /// Nominal rate of the input; ratecontrol spends `bitrate_bps` per second of timestamps.
    pub frame_rate: FrameRate,
    pub bitrate_bps: u64,
    /// VBV maximum rate; equal to `bitrate_bps` for constant-bitrate-like live output.
    pub maxrate_bps: u64,
    /// VBV buffer in bits; the smaller, the steadier the bitrate and the lower the quality.
    pub bufsize_bits: u64,
    /// x264 preset name (`ultrafast` .. `placebo`).
    pub preset: String,
    /// Live: no B-frames, a tiny lookahead, one frame in, one packet out (see the x264
    /// backend for the exact options and why). Offline: the preset's defaults.
    pub low_latency: bool,
    /// Encoder threads; 0 lets the encoder choose from the core count.
    pub threads: usize,
    /// Ask the encoder for per-frame PSNR (costs a little CPU). Only reaches
    /// `EncodedPacket::mse` where the FFmpeg build exports it; see there.
    pub psnr: bool,
}

impl EncoderSettings {
    /// Live defaults: maxrate = bitrate, a VBV buffer of two seconds at that rate, `veryfast`,
    /// low latency, automatic threads, PSNR off.
    pub fn live(width: u32, height: u32, frame_rate: FrameRate, bitrate_bps: u64) -> Self {
        Self {
            width,
            height,
            frame_rate,
            bitrate_bps,
            maxrate_bps: bitrate_bps,
            bufsize_bits: bitrate_bps.saturating_mul(2),
            preset: "veryfast".to_owned(),
            low_latency: true,
            threads: 0,
            psnr: false,
        }
    }

    pub fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

/// One encoded access unit, ready for the packager.
#[derive(Clone, Debug)]
pub struct EncodedPacket {
    /// Presentation time in the node's 90 kHz timebase: the input frame's pts.
    pub pts: i64,
    /// Decode time in the same timebase; equals `pts` when the stream has no B-frames.
    pub dts: i64,
    /// An IDR picture: a part or segment may start here.
    pub keyframe: bool,
    /// NAL units with 4-byte big-endian length prefixes; parameter sets are in
    /// [`VideoEncoder::params`], never repeated here.
    pub data: Bytes,
    /// Average quantiser of the frame, when the encoder reports it.
    pub qp: Option<f32>,
    /// Per-plane mean squared error of the reconstructed picture against the input, when
    /// `EncoderSettings::psnr` is set and the backend reports it: feed it to
    /// `quality::PsnrMean` to average like FFmpeg. libx264 through FFmpeg 5.1 (Debian 12)
    /// reports none: that wrapper passes no error sums in its quality stats (later FFmpeg
    /// releases do), so measure with a decode and `quality::FrameMse` instead.
    pub mse: Option<FrameMse>,
}

impl EncodedPacket {
    /// Per-frame PSNR as FFmpeg's `psnr` filter defines it, when the encoder measured it.
    pub fn psnr(&self) -> Option<Psnr> {
        self.mse.map(|m| m.psnr())
    }
}

/// A video encoder for one rung. The pipeline calls it from that rung's own thread.
pub trait VideoEncoder: Send {
    /// Codec parameters of the output (avcC record, size, profile), fixed once open.
    fn params(&self) -> &Arc<VideoParams>;

    /// Encodes one frame, making it an IDR when `force_idr` is set, and appends the packets
    /// that became ready (zero or more: encoders may hold frames back) to `out`.
    fn encode(
        &mut self,
        frame: &Frame,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()>;

    /// Drains the frames still held at the end of the stream. The encoder takes no more
    /// frames after this.
    fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("FFmpeg has no {codec} encoder")]
    NoEncoder { codec: &'static str },
    #[error("invalid {codec} settings for {size}: {why}")]
    Settings {
        codec: &'static str,
        size: Size,
        why: String,
    },
    #[error("cannot open {codec} for {size} with {options}: {source}")]
    Open {
        codec: &'static str,
        size: Size,
        /// The options passed, `key=value` joined by `:`, to reproduce with the CLI.
        options: String,
        source: ffmpeg_next::Error,
    },
    #[error("{codec} gave unusable parameter sets for {size}: {source}")]
    Config {
        codec: &'static str,
        size: Size,
        source: MediaError,
    },
    #[error("{codec} is open for {encoder}, got a {frame} frame at pts {pts}")]
    FrameSize {
        codec: &'static str,
        encoder: Size,
        frame: Size,
        pts: i64,
    },
    #[error("{codec} refused the frame at pts {pts}: {source}")]
    Send {
        codec: &'static str,
        pts: i64,
        source: ffmpeg_next::Error,
    },
    #[error("{codec} failed after the frame at pts {pts}: {source}")]
    Receive {
        codec: &'static str,
        pts: i64,
        source: ffmpeg_next::Error,
    },
    /// The encoder did not open, and why the machine cannot run it at all.
    #[error("{source} ({why})")]
    Unavailable {
        why: &'static str,
        source: Box<EncodeError>,
    },
    #[error("{codec} output after the frame at pts {pts}: {why}")]
    Output {
        codec: &'static str,
        pts: i64,
        why: String,
    },
}
