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

/// NVDEC's H.264 limits, the same for every GPU generation since Maxwell
/// (NVIDIA Video Codec SDK, "NVDEC Video Decoder API Programming Guide",
/// table "Hardware video decoder capabilities"): 48x16 up to 4096x4096.
pub const NVDEC_H264_MIN: (u32, u32) = (48, 16);
pub const NVDEC_H264_MAX: (u32, u32) = (4096, 4096);

/// H.264 profiles NVDEC decodes (8-bit 4:2:0 only): Constrained Baseline and
/// Baseline (66), Main (77), High (100). Extended (88, data partitioning),
/// High 10 (110), High 4:2:2 (122), High 4:4:4 (244), CAVLC 4:4:4 (44) and
/// the SVC/MVC profiles are not.
const NVDEC_PROFILES: [u8; 3] = [66, 77, 100];

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
    /// From the stream's configuration record. Chroma format and bit depth
    /// come from the avcC's high-profile extension (ISO/IEC 14496-15
    /// 5.3.3.1.2) when the writer included it; the profile alone already
    /// rules out the 10-bit, 4:2:2 and 4:4:4 profiles.
    pub fn from_params(p: &VideoParams) -> Self {
        let ext = match p.codec {
            VideoCodec::Avc => avcc_extension(&p.avcc),
            VideoCodec::Hevc(_) | VideoCodec::Av1(_) => None,
        };
        Self {
            codec: p.codec,
            profile_idc: p.profile_idc,
            chroma_format_idc: ext.map(|e| e.0),
            bit_depth: ext.map(|e| e.1),
            width: p.width,
            height: p.height,
        }
    }

    /// Why NVDEC cannot decode this stream, if it cannot.
    pub fn nvdec_refusal(&self) -> Option<SoftwareDecode> {
        // NVDEC's limits below are H.264's; other codecs have not been tried on a GPU yet.
        if self.codec != VideoCodec::Avc {
            return Some(SoftwareDecode::Codec {
                codec: self.codec.name(),
            });
        }
        if !NVDEC_PROFILES.contains(&self.profile_idc) {
            return Some(SoftwareDecode::Profile {
                profile_idc: self.profile_idc,
            });
        }
        if let Some(c) = self.chroma_format_idc.filter(|&c| c != 1) {
            return Some(SoftwareDecode::Chroma {
                chroma_format_idc: c,
            });
        }
        if let Some(b) = self.bit_depth.filter(|&b| b != 8) {
            return Some(SoftwareDecode::BitDepth { bits: b });
        }
        let (min, max) = (NVDEC_H264_MIN, NVDEC_H264_MAX);
        let (w, h) = (self.width, self.height);
        if w < min.0 || h < min.1 || w > max.0 || h > max.1 {
            return Some(SoftwareDecode::Size {
                width: w,
                height: h,
            });
        }
        None
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
    /// A source codec the node decodes in software only.
    Codec {
        codec: &'static str,
    },
    Profile {
        profile_idc: u8,
    },
    Chroma {
        chroma_format_idc: u8,
    },
    BitDepth {
        bits: u8,
    },
    /// Outside NVDEC's H.264 limits.
    Size {
        width: u32,
        height: u32,
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
            SoftwareDecode::Codec { codec } => {
                write!(
                    f,
                    "{codec} sources are decoded in software (NVDEC: H.264 only so far)"
                )
            }
            SoftwareDecode::Profile { profile_idc } => write!(
                f,
                "NVDEC does not decode H.264 profile {profile_idc} ({})",
                crate::media::h264::profile_name(*profile_idc)
            ),
            SoftwareDecode::Chroma { chroma_format_idc } => write!(
                f,
                "NVDEC decodes only 4:2:0, the stream has chroma_format_idc {chroma_format_idc}"
            ),
            SoftwareDecode::BitDepth { bits } => {
                write!(
                    f,
                    "NVDEC decodes only 8-bit H.264, the stream is {bits}-bit"
                )
            }
            SoftwareDecode::Size { width, height } => write!(
                f,
                "{width}x{height} is outside NVDEC's H.264 limits ({}x{}..{}x{})",
                NVDEC_H264_MIN.0, NVDEC_H264_MIN.1, NVDEC_H264_MAX.0, NVDEC_H264_MAX.1
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
    Nvenc,
    X264(X264Reason),
}

impl EncodeBackend {
    /// The `backend` label of the rung metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EncodeBackend::Nvenc => "nvenc",
            EncodeBackend::X264(_) => "x264",
        }
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
        if *slot != EncodeBackend::Nvenc {
            return None;
        }
        *slot = EncodeBackend::X264(X264Reason::OpenFailed(why.into()));
        match slot {
            EncodeBackend::X264(reason) => Some(reason),
            EncodeBackend::Nvenc => None,
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
        self.rungs
            .iter()
            .filter(|r| **r == EncodeBackend::Nvenc)
            .count()
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
            if let EncodeBackend::X264(why) = &self.rungs[i]
                && why.is_fallback()
            {
                write!(f, " ({why})")?;
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
/// has it and the stream is within its limits; the kernels scale and
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
    let decode = match stream.nvdec_refusal() {
        _ if !device.nvdec => DecodeBackend::Software(SoftwareDecode::NoNvdec),
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
