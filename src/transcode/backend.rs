//! Which backend each stage of one channel runs on: the device, NVDEC or
//! software decode, CUDA or CPU scaling and quality, NVENC or libx264 per
//! rung. Decided from facts handed in (what the probe found, the config, the
//! load of each GPU, the stream), so that every choice and every fallback is
//! tested with injected answers on a machine without a GPU.
//!
//! Owns the planning and the per-GPU load bookkeeping (channels, NVDEC and
//! NVENC sessions, memory in use). It never calls FFmpeg or CUDA: opening a
//! decoder or an encoder, and learning that it does not open, is the
//! pipeline's job, which reports back through [`Assignment`].

use std::fmt;

use serde::Serialize;

use crate::gpu::GpuMode;
use crate::gpu::probe::Probe;
use crate::media::{VideoCodec, VideoParams};

/// The picture sizes NVDEC decodes a codec at, in luma samples, both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvdecLimits {
    pub min: (u32, u32),
    pub max: (u32, u32),
}

impl fmt::Display for NvdecLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (min, max) = (self.min, self.max);
        write!(f, "{}x{}..{}x{}", min.0, min.1, max.0, max.1)
    }
}

// NVDEC per codec on the GPUs the node runs on (Turing and later): NVIDIA
// Video Codec SDK, "NVDEC Video Decoder API Programming Guide", table
// "Hardware video decoder capabilities" (sizes), and the "NVDEC Application
// Note", table "NVDEC Hardware Capabilities" (which generation has what).

/// H.264, every generation since Maxwell: 48x16 up to 4096x4096 (8192x8192
/// only from Blackwell on).
pub const NVDEC_H264: NvdecLimits = NvdecLimits {
    min: (48, 16),
    max: (4096, 4096),
};

/// HEVC Main and Main 10, 8192x8192 since Pascal: 144x144 up to 8192x8192.
pub const NVDEC_HEVC: NvdecLimits = NvdecLimits {
    min: (144, 144),
    max: (8192, 8192),
};

/// AV1 Main profile (8 and 10 bits, 4:2:0), on the GPUs that have it (see
/// [`nvdec_decodes_av1`]): 128x128 up to 8192x8192.
pub const NVDEC_AV1: NvdecLimits = NvdecLimits {
    min: (128, 128),
    max: (8192, 8192),
};

/// H.264 profiles NVDEC decodes (8-bit 4:2:0 only): Constrained Baseline and
/// Baseline (66), Main (77), High (100). Extended (88, data partitioning),
/// High 10 (110), High 4:2:2 (122), High 4:4:4 (244), CAVLC 4:4:4 (44) and
/// the SVC/MVC profiles are not (High 10 and 4:2:2 only from Blackwell on).
const NVDEC_H264_PROFILES: [u8; 3] = [66, 77, 100];

/// HEVC `general_profile_idc`s NVDEC decodes into surfaces the ladder reads:
/// Main (1) and Main 10 (2). Range Extensions (4: 4:4:4, 4:2:2, 12-bit) give
/// other surfaces or none.
const NVDEC_HEVC_PROFILES: [u8; 2] = [1, 2];

/// AV1 `seq_profile`s NVDEC decodes: Main (0) only; High (1, 4:4:4) and
/// Professional (2, 4:2:2 and 12-bit) are not.
const NVDEC_AV1_PROFILES: [u8; 1] = [0];

/// Whether the NVDEC of a GPU of this compute capability ("major.minor", as
/// the probe reports it) decodes AV1: Ampere GA10x (8.6, 8.7), Ada (8.9) and
/// Blackwell (10.0 on) do; Turing (7.5), GA100 (8.0) and Hopper (9.0) do not,
/// so an H100 or H200 decodes AV1 in software.
pub fn nvdec_decodes_av1(compute_capability: &str) -> bool {
    let Some((major, minor)) = compute_capability.split_once('.') else {
        return false;
    };
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(8), Ok(minor)) => minor >= 6,
        (Ok(major), Ok(_)) => major >= 10,
        _ => false,
    }
}

/// NVENC sessions a GeForce or TITAN driver allows at once (8 since the
/// R550 drivers of 2024; 5, and 3, before). Quadro, RTX professional and
/// datacenter GPUs have no such limit.
pub const GEFORCE_NVENC_SESSIONS: usize = 8;

/// One GPU as the probe saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceFacts {
    /// CUDA device ordinal, as `rungs probe` and `gpu.devices` number them.
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// FFmpeg's cuda hwaccel opened a device for H.264.
    pub nvdec: bool,
    /// Its NVDEC decodes AV1 too ([`nvdec_decodes_av1`]).
    pub nvdec_av1: bool,
    /// h264_nvenc opened.
    pub nvenc: bool,
    /// NVENC sessions the driver allows at once, when it limits them.
    pub nvenc_session_limit: Option<usize>,
}

/// What the machine offers, as far as the plan cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineFacts {
    /// Why there is no GPU at all (no driver, no device, none selected);
    /// `None` when `devices` holds at least one.
    pub no_gpu: Option<String>,
    /// The GPUs `gpu.devices` allows.
    pub devices: Vec<DeviceFacts>,
    /// The CUDA kernels (scale, quality) are compiled and loaded.
    pub kernels: bool,
}

impl MachineFacts {
    /// A machine without a GPU, and why.
    pub fn cpu_only(why: impl Into<String>) -> Self {
        Self {
            no_gpu: Some(why.into()),
            devices: Vec::new(),
            kernels: false,
        }
    }

    /// The probe's answers. NVDEC and NVENC are probed once for the machine
    /// (on the first GPU): every selected device is taken to have them.
    /// `kernels`: whether the kernels were compiled and loaded at start.
    pub fn from_probe(probe: &Probe, kernels: bool) -> Self {
        let devices: Vec<DeviceFacts> = probe
            .devices
            .iter()
            .filter(|d| d.selected)
            .map(|d| DeviceFacts {
                index: d.index,
                name: d.name.clone(),
                memory_bytes: d.memory_bytes,
                nvdec: probe.nvdec.usable,
                nvdec_av1: probe.nvdec.usable && nvdec_decodes_av1(&d.compute_capability),
                nvenc: probe.nvenc.usable,
                nvenc_session_limit: nvenc_session_limit(&d.name),
            })
            .collect();
        let no_gpu = match (&probe.driver, probe.devices.is_empty(), devices.is_empty()) {
            (None, _, _) => Some(format!("no CUDA driver ({})", probe.nvdec.detail)),
            (Some(_), true, _) => Some("the CUDA driver sees no GPU".into()),
            (Some(_), false, true) => Some("gpu.devices selects none of the GPUs".into()),
            _ => None,
        };
        Self {
            no_gpu,
            devices,
            kernels,
        }
    }
}

/// The driver's NVENC session limit for a GPU of this name, when it has one.
pub fn nvenc_session_limit(name: &str) -> Option<usize> {
    let consumer = ["GeForce", "TITAN"].iter().any(|n| name.contains(n));
    consumer.then_some(GEFORCE_NVENC_SESSIONS)
}

/// What one GPU carries now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceLoad {
    pub channels: usize,
    pub nvdec_sessions: usize,
    pub nvenc_sessions: usize,
    pub memory_used_bytes: u64,
}

/// What the plan needs to know of a video stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFacts {
    pub codec: VideoCodec,
    pub profile_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4, when the stream says.
    pub chroma_format_idc: Option<u8>,
    /// Luma bit depth, when the stream says.
    pub bit_depth: Option<u8>,
    pub width: u32,
    pub height: u32,
}

impl StreamFacts {
    /// From the stream's configuration record. For H.264, chroma format and
    /// bit depth come from the avcC's high-profile extension (ISO/IEC
    /// 14496-15 5.3.3.1.2) when the writer included it; the profile alone
    /// already rules out the 10-bit, 4:2:2 and 4:4:4 profiles. hvcC and av1C
    /// always carry both.
    pub fn from_params(p: &VideoParams) -> Self {
        let (chroma_format_idc, bit_depth) = match p.codec {
            VideoCodec::Avc => avcc_extension(&p.avcc).unzip(),
            // HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1.2):
            // chromaFormat is the low 2 bits of byte 16, coded as
            // chroma_format_idc.
            VideoCodec::Hevc(h) => (p.avcc.get(16).map(|b| b & 0b11), Some(h.bit_depth)),
            VideoCodec::Av1(a) => (p.avcc.get(2).map(|&b| av1c_chroma(b)), Some(a.bit_depth)),
        };
        Self {
            codec: p.codec,
            profile_idc: p.profile_idc,
            chroma_format_idc,
            bit_depth,
            width: p.width,
            height: p.height,
        }
    }

    /// Why NVDEC cannot decode this stream, on any GPU, if it cannot.
    pub fn nvdec_refusal(&self) -> Option<SoftwareDecode> {
        let (profiles, depths, limits): (&[u8], &[u8], _) = match self.codec {
            VideoCodec::Avc => (&NVDEC_H264_PROFILES, &[8], NVDEC_H264),
            VideoCodec::Hevc(_) => (&NVDEC_HEVC_PROFILES, &[8, 10], NVDEC_HEVC),
            VideoCodec::Av1(_) => (&NVDEC_AV1_PROFILES, &[8, 10], NVDEC_AV1),
        };
        if !profiles.contains(&self.profile_idc) {
            return Some(SoftwareDecode::Profile {
                codec: self.codec,
                profile_idc: self.profile_idc,
            });
        }
        if let Some(c) = self.chroma_format_idc.filter(|&c| c != 1) {
            return Some(SoftwareDecode::Chroma {
                chroma_format_idc: c,
            });
        }
        if let Some(b) = self.bit_depth.filter(|b| !depths.contains(b)) {
            return Some(SoftwareDecode::BitDepth {
                codec: self.codec.name(),
                bits: b,
            });
        }
        let (w, h) = (self.width, self.height);
        let (min, max) = (limits.min, limits.max);
        if w < min.0 || h < min.1 || w > max.0 || h > max.1 {
            return Some(SoftwareDecode::Size {
                codec: self.codec.name(),
                width: w,
                height: h,
                limits,
            });
        }
        None
    }
}

/// Why NVDEC on `device` cannot decode `stream`, if it cannot: the GPU's own
/// NVDEC first (whether it has one, and AV1), then the stream's limits.
fn nvdec_refusal_on(device: &DeviceFacts, stream: &StreamFacts) -> Option<SoftwareDecode> {
    if !device.nvdec {
        return Some(SoftwareDecode::NoNvdec);
    }
    if matches!(stream.codec, VideoCodec::Av1(_)) && !device.nvdec_av1 {
        return Some(SoftwareDecode::Codec {
            codec: stream.codec.name(),
            gpu: device.name.clone(),
        });
    }
    stream.nvdec_refusal()
}

/// chroma_format_idc from the av1C byte of mono_chrome, chroma_subsampling_x
/// and chroma_subsampling_y (AV1 ISOBMFF binding 2.3.3; AV1 spec 6.4.2
/// gives their meaning): 4:0:0, 4:2:0, 4:2:2 or 4:4:4.
fn av1c_chroma(flags: u8) -> u8 {
    let (mono, x, y) = (flags & 0x10 != 0, flags & 0x08 != 0, flags & 0x04 != 0);
    match (mono, x, y) {
        (true, _, _) => 0,
        (false, true, true) => 1,
        (false, true, false) => 2,
        // 4:4:4, and the subsampling AV1 does not define (vertical only).
        (false, false, _) => 3,
    }
}

/// A codec's name for a profile number, for an operator reading a refusal.
fn profile_name(codec: VideoCodec, profile_idc: u8) -> &'static str {
    match codec {
        VideoCodec::Avc => crate::media::h264::profile_name(profile_idc),
        VideoCodec::Hevc(_) => crate::media::hevc::profile_name(profile_idc),
        // AV1 spec Annex A.2.
        VideoCodec::Av1(_) => match profile_idc {
            0 => "Main",
            1 => "High",
            2 => "Professional",
            _ => "unknown",
        },
    }
}

/// (chroma_format_idc, luma bit depth) from an avcC record's trailing
/// high-profile fields, when present.
fn avcc_extension(avcc: &[u8]) -> Option<(u8, u8)> {
    let profile = *avcc.get(1)?;
    if !matches!(profile, 100 | 110 | 122 | 144) {
        return None;
    }
    // configurationVersion, profile, compatibility, level, lengthSizeMinusOne.
    let mut at = 5;
    let skip_sets = |count: usize, at: &mut usize| -> Option<()> {
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*avcc.get(*at)?, *avcc.get(*at + 1)?]));
            *at += 2 + len;
        }
        Some(())
    };
    let sps = usize::from(*avcc.get(at)? & 0x1f);
    at += 1;
    skip_sets(sps, &mut at)?;
    let pps = usize::from(*avcc.get(at)?);
    at += 1;
    skip_sets(pps, &mut at)?;
    let ext = avcc.get(at..at + 3)?;
    Some((ext[0] & 0b11, (ext[1] & 0b111) + 8))
}

/// A stage that runs either as CUDA kernels or on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Cuda,
    Cpu,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Cuda => "cuda",
            Stage::Cpu => "cpu",
        }
    }
}

/// Why a stream is decoded in software.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SoftwareDecode {
    /// `gpu.enabled = "off"`.
    GpuOff,
    /// No usable GPU on this machine.
    NoGpu(String),
    /// The GPU chosen has no usable NVDEC.
    NoNvdec,
    /// The GPU chosen has NVDEC, but not for this codec (AV1 before GA10x).
    Codec {
        codec: &'static str,
        gpu: String,
    },
    Profile {
        codec: VideoCodec,
        profile_idc: u8,
    },
    Chroma {
        chroma_format_idc: u8,
    },
    BitDepth {
        codec: &'static str,
        bits: u8,
    },
    /// Outside NVDEC's limits for the codec.
    Size {
        codec: &'static str,
        width: u32,
        height: u32,
        limits: NvdecLimits,
    },
    /// FFmpeg could not open the CUDA device or decoder.
    OpenFailed(String),
    /// NVDEC opened, then refused the stream before its first picture.
    DecodeFailed(String),
}

impl SoftwareDecode {
    /// The `reason` label of `rungs_decode_backend_fallbacks_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SoftwareDecode::GpuOff => "gpu_off",
            SoftwareDecode::NoGpu(_) => "no_gpu",
            SoftwareDecode::NoNvdec => "no_nvdec",
            SoftwareDecode::Codec { .. } => "codec",
            SoftwareDecode::Profile { .. } => "profile",
            SoftwareDecode::Chroma { .. } => "chroma",
            SoftwareDecode::BitDepth { .. } => "bit_depth",
            SoftwareDecode::Size { .. } => "size",
            SoftwareDecode::OpenFailed(_) => "open_failed",
            SoftwareDecode::DecodeFailed(_) => "decode_failed",
        }
    }

    /// Whether this is a fallback from a GPU the channel was given (counted
    /// in the metric), rather than a machine or config without one.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, SoftwareDecode::GpuOff | SoftwareDecode::NoGpu(_))
    }
}

impl fmt::Display for SoftwareDecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoftwareDecode::GpuOff => write!(f, "gpu.enabled = \"off\""),
            SoftwareDecode::NoGpu(why) => write!(f, "no GPU: {why}"),
            SoftwareDecode::NoNvdec => write!(f, "the GPU has no usable NVDEC"),
            SoftwareDecode::Codec { codec, gpu } => {
                write!(f, "the NVDEC of {gpu} does not decode {codec}")
            }
            SoftwareDecode::Profile { codec, profile_idc } => write!(
                f,
                "NVDEC does not decode {} profile {profile_idc} ({})",
                codec.name(),
                profile_name(*codec, *profile_idc)
            ),
            SoftwareDecode::Chroma { chroma_format_idc } => write!(
                f,
                "NVDEC decodes only 4:2:0, the stream has chroma_format_idc {chroma_format_idc}"
            ),
            SoftwareDecode::BitDepth { codec, bits } => {
                write!(f, "NVDEC does not decode {bits}-bit {codec}")
            }
            SoftwareDecode::Size {
                codec,
                width,
                height,
                limits,
            } => write!(
                f,
                "{width}x{height} is outside NVDEC's {codec} limits ({limits})"
            ),
            SoftwareDecode::OpenFailed(why) => write!(f, "NVDEC did not open: {why}"),
            SoftwareDecode::DecodeFailed(why) => {
                write!(f, "NVDEC refused the stream: {why}")
            }
        }
    }
}

/// How a stream is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeBackend {
    /// FFmpeg's cuda hwaccel; pictures stay in device memory.
    Nvdec,
    Software(SoftwareDecode),
}

impl DecodeBackend {
    pub fn name(&self) -> &'static str {
        match self {
            DecodeBackend::Nvdec => "nvdec",
            DecodeBackend::Software(_) => "cpu",
        }
    }
}

/// Why a rung is encoded with libx264.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum X264Reason {
    GpuOff,
    NoGpu,
    /// The GPU has no NVENC (H100, H200, A100) or h264_nvenc does not open.
    NoNvenc,
    /// The driver's NVENC session limit is reached on the chosen GPU.
    SessionLimit {
        limit: usize,
    },
    /// h264_nvenc failed to open for this rung.
    OpenFailed(String),
}

impl X264Reason {
    /// The `reason` label of `rungs_encode_backend_fallbacks_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            X264Reason::GpuOff => "gpu_off",
            X264Reason::NoGpu => "no_gpu",
            X264Reason::NoNvenc => "no_nvenc",
            X264Reason::SessionLimit { .. } => "session_limit",
            X264Reason::OpenFailed(_) => "open_failed",
        }
    }

    /// Whether this is a fallback from a GPU the channel was given.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, X264Reason::GpuOff | X264Reason::NoGpu)
    }
}

impl fmt::Display for X264Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            X264Reason::GpuOff => write!(f, "gpu.enabled = \"off\""),
            X264Reason::NoGpu => write!(f, "no GPU"),
            X264Reason::NoNvenc => write!(f, "the GPU has no NVENC"),
            X264Reason::SessionLimit { limit } => {
                write!(f, "the GPU's {limit} NVENC sessions are in use")
            }
            X264Reason::OpenFailed(why) => write!(f, "h264_nvenc did not open: {why}"),
        }
    }
}

/// How one rung is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeBackend {
    /// h264_nvenc, fed the rung's pictures from host memory.
    Nvenc,
    /// h264_nvenc reading the CUDA scaler's pictures where they are, in device memory (a
    /// CUDA frames context): no copy to the host and back. The pipeline's choice, once the
    /// scaler and the encoder are open; the plan says [`EncodeBackend::Nvenc`].
    NvencCuda,
    X264(X264Reason),
}

impl EncodeBackend {
    /// The `backend` label of the rung metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EncodeBackend::Nvenc | EncodeBackend::NvencCuda => "nvenc",
            EncodeBackend::X264(_) => "x264",
        }
    }

    /// An NVENC session, whatever feeds it.
    pub fn is_nvenc(&self) -> bool {
        matches!(self, EncodeBackend::Nvenc | EncodeBackend::NvencCuda)
    }
}

/// The backend of each stage by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StageNames {
    pub decode: &'static str,
    pub scale: &'static str,
    pub encode: &'static str,
    pub quality: &'static str,
}

impl fmt::Display for StageNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decode {}, scale {}, encode {}, quality {}",
            self.decode, self.scale, self.encode, self.quality
        )
    }
}

/// Every stage's backend for one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPlan {
    /// The GPU the channel runs on, by CUDA ordinal; `None`: CPU only.
    pub device: Option<usize>,
    pub decode: DecodeBackend,
    pub scale: Stage,
    pub quality: Stage,
    /// One per rung, in ladder order.
    pub rungs: Vec<EncodeBackend>,
}

impl ChannelPlan {
    /// Everything on the CPU.
    pub fn cpu(rungs: usize, why: SoftwareDecode, x264: X264Reason) -> Self {
        Self {
            device: None,
            decode: DecodeBackend::Software(why),
            scale: Stage::Cpu,
            quality: Stage::Cpu,
            rungs: vec![EncodeBackend::X264(x264); rungs],
        }
    }

    /// Rung `rung`'s NVENC encoder did not open: it goes to libx264. Returns
    /// the new reason, or `None` when the rung was not on NVENC.
    pub fn fallback_on_open_failure(
        &mut self,
        rung: usize,
        why: impl Into<String>,
    ) -> Option<&X264Reason> {
        let slot = self.rungs.get_mut(rung)?;
        if !slot.is_nvenc() {
            return None;
        }
        *slot = EncodeBackend::X264(X264Reason::OpenFailed(why.into()));
        match slot {
            EncodeBackend::X264(reason) => Some(reason),
            EncodeBackend::Nvenc | EncodeBackend::NvencCuda => None,
        }
    }

    /// Rung `rung`'s NVENC encoder reads the CUDA scaler's pictures in device memory.
    /// Returns whether the rung was on NVENC (fed from the host) and now is.
    pub fn nvenc_from_device(&mut self, rung: usize) -> bool {
        match self.rungs.get_mut(rung) {
            Some(slot @ EncodeBackend::Nvenc) => {
                *slot = EncodeBackend::NvencCuda;
                true
            }
            _ => false,
        }
    }

    /// The NVDEC decoder did not open, or refused the stream before its
    /// first picture: software decode. Returns the new reason, or `None`
    /// when the stream was not on NVDEC.
    pub fn fallback_on_decode_failure(&mut self, why: SoftwareDecode) -> Option<&SoftwareDecode> {
        if self.decode != DecodeBackend::Nvdec {
            return None;
        }
        self.decode = DecodeBackend::Software(why);
        match &self.decode {
            DecodeBackend::Software(why) => Some(why),
            DecodeBackend::Nvdec => None,
        }
    }

    /// Each stage's backend by name, the rungs' by the top rung's (what
    /// `rungs probe` prints for a new channel).
    pub fn stages(&self) -> StageNames {
        StageNames {
            decode: self.decode.name(),
            scale: self.scale.name(),
            encode: self.rungs.first().map_or("x264", EncodeBackend::name),
            quality: self.quality.name(),
        }
    }

    pub fn nvenc_rungs(&self) -> usize {
        self.rungs.iter().filter(|r| r.is_nvenc()).count()
    }
}

impl fmt::Display for ChannelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.device, &self.decode) {
            (Some(d), _) => write!(f, "GPU {d}: ")?,
            (None, DecodeBackend::Software(why)) if !why.is_fallback() => {
                write!(f, "CPU ({why}): ")?
            }
            (None, _) => write!(f, "CPU: ")?,
        }
        write!(f, "decode {}", self.decode.name())?;
        if let DecodeBackend::Software(why) = &self.decode
            && why.is_fallback()
        {
            write!(f, " ({why})")?;
        }
        write!(
            f,
            ", scale {}, quality {}, encode",
            self.scale.name(),
            self.quality.name()
        )?;
        // Runs of equal backends read as one: "x264 x4 (the GPU has no NVENC)".
        let mut i = 0;
        while i < self.rungs.len() {
            let same = self.rungs[i..]
                .iter()
                .take_while(|r| **r == self.rungs[i])
                .count();
            write!(
                f,
                "{} {}",
                if i == 0 { "" } else { "," },
                self.rungs[i].name()
            )?;
            if same > 1 {
                write!(f, " x{same}")?;
            }
            match &self.rungs[i] {
                EncodeBackend::X264(why) if why.is_fallback() => write!(f, " ({why})")?,
                EncodeBackend::NvencCuda => write!(f, " (CUDA frames)")?,
                _ => {}
            }
            i += same;
        }
        if self.rungs.is_empty() {
            write!(f, " none")?;
        }
        Ok(())
    }
}

/// The plan for a new channel with `rungs` transcoded rungs. `loads[i]` is
/// the load of `machine.devices[i]` (missing entries read as idle).
///
/// The channel goes to the least loaded GPU: fewest channels, then most
/// free memory, then lowest index. NVDEC decodes the stream when that GPU
/// has it, for the codec (AV1 only from Ampere GA10x on), and the stream is
/// within its limits; the kernels scale and
/// measure when they are loaded; each rung gets NVENC while the GPU has it
/// and sessions are left, libx264 otherwise.
pub fn plan(
    mode: GpuMode,
    machine: &MachineFacts,
    loads: &[DeviceLoad],
    stream: &StreamFacts,
    rungs: usize,
) -> ChannelPlan {
    if mode == GpuMode::Off {
        return ChannelPlan::cpu(rungs, SoftwareDecode::GpuOff, X264Reason::GpuOff);
    }
    let Some(pos) = least_loaded(machine, loads) else {
        let why = machine.no_gpu.clone().unwrap_or_else(|| "no GPU".into());
        return ChannelPlan::cpu(rungs, SoftwareDecode::NoGpu(why), X264Reason::NoGpu);
    };
    let device = &machine.devices[pos];
    let load = loads.get(pos).copied().unwrap_or_default();
    let decode = match nvdec_refusal_on(device, stream) {
        Some(why) => DecodeBackend::Software(why),
        None => DecodeBackend::Nvdec,
    };
    let kernels = if machine.kernels {
        Stage::Cuda
    } else {
        Stage::Cpu
    };
    let mut sessions = load.nvenc_sessions;
    let rungs = (0..rungs)
        .map(|_| {
            if !device.nvenc {
                return EncodeBackend::X264(X264Reason::NoNvenc);
            }
            match device.nvenc_session_limit {
                Some(limit) if sessions >= limit => {
                    EncodeBackend::X264(X264Reason::SessionLimit { limit })
                }
                _ => {
                    sessions += 1;
                    EncodeBackend::Nvenc
                }
            }
        })
        .collect();
    ChannelPlan {
        device: Some(device.index),
        decode,
        scale: kernels,
        quality: kernels,
        rungs,
    }
}

/// Position in `machine.devices` of the GPU a new channel goes to.
fn least_loaded(machine: &MachineFacts, loads: &[DeviceLoad]) -> Option<usize> {
    let load = |i: usize| loads.get(i).copied().unwrap_or_default();
    (0..machine.devices.len()).min_by_key(|&i| {
        let d = &machine.devices[i];
        let l = load(i);
        let free = d.memory_bytes.saturating_sub(l.memory_used_bytes);
        (l.channels, std::cmp::Reverse(free), d.index)
    })
}

mod pool;
pub use pool::{Assignment, GpuPool, GpuRuntime};

#[cfg(test)]
mod tests;
