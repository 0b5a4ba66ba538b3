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
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::config::GpuMode;
use crate::gpu::device::Gpu;
use crate::gpu::probe::Probe;
use crate::media::VideoParams;
use crate::metrics::METRICS;

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
        let ext = avcc_extension(&p.avcc);
        Self {
            profile_idc: p.profile_idc,
            chroma_format_idc: ext.map(|e| e.0),
            bit_depth: ext.map(|e| e.1),
            width: p.width,
            height: p.height,
        }
    }

    /// Why NVDEC cannot decode this stream, if it cannot.
    pub fn nvdec_refusal(&self) -> Option<SoftwareDecode> {
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
            SoftwareDecode::Profile { profile_idc } => write!(
                f,
                "NVDEC does not decode H.264 profile {profile_idc} ({})",
                profile_name(*profile_idc)
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

fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        44 => "CAVLC 4:4:4 Intra",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        83 | 86 => "Scalable",
        118 | 128 | 134 | 135 | 138 | 139 => "Multiview",
        _ => "unknown",
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

/// The GPUs a node shares among its channels and what each carries.
#[derive(Debug)]
pub struct GpuPool {
    mode: GpuMode,
    machine: MachineFacts,
    loads: Mutex<Vec<DeviceLoad>>,
}

impl GpuPool {
    pub fn new(mode: GpuMode, machine: MachineFacts) -> Arc<Self> {
        let loads = vec![DeviceLoad::default(); machine.devices.len()];
        let pool = Self {
            mode,
            machine,
            loads: Mutex::new(Vec::new()),
        };
        // Every device shows in the session gauges from the start, at 0.
        for (pos, l) in loads.iter().enumerate() {
            pool.export(pos, l);
        }
        *pool.lock() = loads;
        Arc::new(pool)
    }

    pub fn machine(&self) -> &MachineFacts {
        &self.machine
    }

    /// Each device's load, in `machine().devices` order.
    pub fn loads(&self) -> Vec<DeviceLoad> {
        self.lock().clone()
    }

    /// What a new channel would get now, without taking anything.
    pub fn preview(&self, stream: &StreamFacts, rungs: usize) -> ChannelPlan {
        plan(self.mode, &self.machine, &self.lock(), stream, rungs)
    }

    /// Plans a new channel and takes its share of the chosen GPU (a channel,
    /// an NVDEC session, NVENC sessions) until the assignment is dropped.
    pub fn assign(self: &Arc<Self>, stream: &StreamFacts, rungs: usize) -> Assignment {
        let mut loads = self.lock();
        let plan = plan(self.mode, &self.machine, &loads, stream, rungs);
        let pos = plan
            .device
            .and_then(|d| self.machine.devices.iter().position(|f| f.index == d));
        let held = Held {
            channel: pos.is_some(),
            nvdec: plan.decode == DecodeBackend::Nvdec,
            nvenc: plan.nvenc_rungs(),
        };
        if let Some(p) = pos {
            let l = &mut loads[p];
            l.channels += 1;
            l.nvdec_sessions += usize::from(held.nvdec);
            l.nvenc_sessions += held.nvenc;
            self.export(p, l);
        }
        drop(loads);
        Assignment {
            plan,
            pool: Some(self.clone()),
            pos,
            held,
        }
    }

    /// Records a device's memory in use, as measured by the caller.
    pub fn set_memory_used(&self, index: usize, bytes: u64) {
        let Some(p) = self.machine.devices.iter().position(|d| d.index == index) else {
            return;
        };
        self.lock()[p].memory_used_bytes = bytes;
        METRICS
            .gpu_memory_used
            .with_label_values(&[&index.to_string()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn release(&self, pos: usize, channel: bool, nvdec: bool, nvenc: usize) {
        let mut loads = self.lock();
        let l = &mut loads[pos];
        l.channels -= usize::from(channel).min(l.channels);
        l.nvdec_sessions -= usize::from(nvdec).min(l.nvdec_sessions);
        l.nvenc_sessions -= nvenc.min(l.nvenc_sessions);
        self.export(pos, l);
    }

    fn export(&self, pos: usize, l: &DeviceLoad) {
        let device = self.machine.devices[pos].index.to_string();
        for (kind, n) in [("nvdec", l.nvdec_sessions), ("nvenc", l.nvenc_sessions)] {
            METRICS
                .gpu_sessions
                .with_label_values(&[&device, kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<DeviceLoad>> {
        // The loads are plain counters: a panic elsewhere cannot leave them
        // half-written in a way that matters more than losing them.
        self.loads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Held {
    channel: bool,
    nvdec: bool,
    nvenc: usize,
}

/// One channel's plan and its share of a GPU, given back when dropped.
/// The pipeline reports here what did not open, so that the plan, the
/// session counts and the fallback metrics stay true.
#[derive(Debug)]
pub struct Assignment {
    plan: ChannelPlan,
    pool: Option<Arc<GpuPool>>,
    pos: Option<usize>,
    held: Held,
}

impl Assignment {
    /// A plan with no GPU behind it (no pool: a CPU-only node).
    pub fn without_gpu(plan: ChannelPlan) -> Self {
        Self {
            plan,
            pool: None,
            pos: None,
            held: Held::default(),
        }
    }

    pub fn plan(&self) -> &ChannelPlan {
        &self.plan
    }

    /// Counts, in the fallback metrics, what the plan already sends to the
    /// CPU although a GPU was chosen (a profile NVDEC refuses, a GPU without
    /// NVENC, the session limit). Call once, when the channel starts.
    pub fn count_planned_fallbacks(&self) {
        if let DecodeBackend::Software(why) = &self.plan.decode
            && why.is_fallback()
        {
            METRICS
                .decode_backend_fallbacks
                .with_label_values(&[why.reason()])
                .inc();
        }
        for r in &self.plan.rungs {
            if let EncodeBackend::X264(why) = r
                && why.is_fallback()
            {
                METRICS
                    .encode_backend_fallbacks
                    .with_label_values(&[why.reason()])
                    .inc();
            }
        }
    }

    /// Rung `rung`'s NVENC encoder did not open: libx264 takes it, its
    /// session is given back and the fallback counted. Returns the reason.
    pub fn rung_open_failed(&mut self, rung: usize, why: impl Into<String>) -> Option<X264Reason> {
        let reason = self.plan.fallback_on_open_failure(rung, why)?.clone();
        METRICS
            .encode_backend_fallbacks
            .with_label_values(&[reason.reason()])
            .inc();
        if let (Some(pool), Some(pos)) = (&self.pool, self.pos)
            && self.held.nvenc > 0
        {
            self.held.nvenc -= 1;
            pool.release(pos, false, false, 1);
        }
        Some(reason)
    }

    /// The kernels cannot serve this channel (no opened GPU behind the
    /// plan's device, or a source the scaler cannot take): scaling and
    /// quality run on the CPU.
    pub fn kernels_unavailable(&mut self) {
        self.plan.scale = Stage::Cpu;
        self.plan.quality = Stage::Cpu;
    }

    /// The NVDEC decoder did not open or refused the stream: software
    /// decode, its session given back, the fallback counted.
    pub fn decode_failed(&mut self, why: SoftwareDecode) -> Option<SoftwareDecode> {
        let reason = self.plan.fallback_on_decode_failure(why)?.clone();
        METRICS
            .decode_backend_fallbacks
            .with_label_values(&[reason.reason()])
            .inc();
        if let (Some(pool), Some(pos)) = (&self.pool, self.pos)
            && self.held.nvdec
        {
            self.held.nvdec = false;
            pool.release(pos, false, true, 0);
        }
        Some(reason)
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        if let (Some(pool), Some(pos)) = (&self.pool, self.pos) {
            let h = self.held;
            pool.release(pos, h.channel, h.nvdec, h.nvenc);
        }
    }
}

/// The node's GPUs: the shared pool and, for each device opened at start,
/// its context and kernels. A device the pool knows but that has no `Gpu`
/// here (facts injected in tests) runs its CUDA stages on the CPU.
#[derive(Debug)]
pub struct GpuRuntime {
    pub pool: Arc<GpuPool>,
    gpus: Vec<Arc<Gpu>>,
}

impl GpuRuntime {
    pub fn new(pool: Arc<GpuPool>, gpus: Vec<Arc<Gpu>>) -> Arc<Self> {
        Arc::new(Self { pool, gpus })
    }

    /// The opened device with this CUDA ordinal.
    pub fn gpu(&self, index: usize) -> Option<&Arc<Gpu>> {
        self.gpus.iter().find(|g| g.index == index)
    }

    pub fn gpus(&self) -> &[Arc<Gpu>] {
        &self.gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn device(index: usize, name: &str, nvdec: bool, nvenc: bool) -> DeviceFacts {
        DeviceFacts {
            index,
            name: name.into(),
            memory_bytes: 80 * GIB,
            nvdec,
            nvenc,
            nvenc_session_limit: nvenc_session_limit(name),
        }
    }

    fn machine(devices: Vec<DeviceFacts>) -> MachineFacts {
        MachineFacts {
            no_gpu: None,
            devices,
            kernels: true,
        }
    }

    fn h100(index: usize) -> DeviceFacts {
        device(index, "NVIDIA H100 80GB HBM3", true, false)
    }

    fn hd(profile_idc: u8) -> StreamFacts {
        StreamFacts {
            profile_idc,
            chroma_format_idc: Some(1),
            bit_depth: Some(8),
            width: 1920,
            height: 1080,
        }
    }

    #[test]
    fn h100_decodes_on_nvdec_scales_on_cuda_and_encodes_every_rung_with_x264() {
        let p = plan(GpuMode::Auto, &machine(vec![h100(0)]), &[], &hd(100), 4);
        assert_eq!(p.device, Some(0));
        assert_eq!(p.decode, DecodeBackend::Nvdec);
        assert_eq!((p.scale, p.quality), (Stage::Cuda, Stage::Cuda));
        assert_eq!(p.rungs, vec![EncodeBackend::X264(X264Reason::NoNvenc); 4]);
        assert_eq!(
            p.to_string(),
            "GPU 0: decode nvdec, scale cuda, quality cuda, encode x264 x4 (the GPU has no NVENC)"
        );
    }

    #[test]
    fn nvenc_takes_rungs_until_the_session_limit_then_x264_says_why() {
        let l4 = DeviceFacts {
            nvenc_session_limit: Some(3),
            ..device(0, "NVIDIA L4", true, true)
        };
        let m = machine(vec![l4]);
        let p = plan(GpuMode::Auto, &m, &[], &hd(100), 4);
        let limit = EncodeBackend::X264(X264Reason::SessionLimit { limit: 3 });
        assert_eq!(
            p.rungs,
            [
                EncodeBackend::Nvenc,
                EncodeBackend::Nvenc,
                EncodeBackend::Nvenc,
                limit.clone()
            ]
        );
        assert_eq!(p.nvenc_rungs(), 3);
        assert!(
            p.to_string()
                .contains("nvenc x3, x264 (the GPU's 3 NVENC sessions are in use)")
        );
        // Sessions held by other channels count.
        let busy = DeviceLoad {
            nvenc_sessions: 2,
            ..DeviceLoad::default()
        };
        let p = plan(GpuMode::Auto, &m, &[busy], &hd(100), 3);
        assert_eq!(p.rungs, [EncodeBackend::Nvenc, limit.clone(), limit]);
        // A T4-like GPU (no driver limit known) takes every rung.
        let t4 = machine(vec![device(0, "Tesla T4", true, true)]);
        let p = plan(GpuMode::Auto, &t4, &[], &hd(77), 6);
        assert_eq!(p.rungs, vec![EncodeBackend::Nvenc; 6]);
        // GeForce drivers limit sessions.
        assert_eq!(
            nvenc_session_limit("NVIDIA GeForce RTX 4090"),
            Some(GEFORCE_NVENC_SESSIONS)
        );
        assert_eq!(nvenc_session_limit("NVIDIA H100 80GB HBM3"), None);
    }

    #[test]
    fn the_pool_counts_sessions_across_channels_and_gives_them_back() {
        let l4 = DeviceFacts {
            nvenc_session_limit: Some(4),
            ..device(0, "NVIDIA L4", true, true)
        };
        let pool = GpuPool::new(GpuMode::Auto, machine(vec![l4]));
        let a = pool.assign(&hd(100), 3);
        assert_eq!(a.plan().nvenc_rungs(), 3);
        let mut b = pool.assign(&hd(100), 3);
        assert_eq!(b.plan().nvenc_rungs(), 1, "{}", b.plan());
        assert_eq!(
            pool.loads()[0],
            DeviceLoad {
                channels: 2,
                nvdec_sessions: 2,
                nvenc_sessions: 4,
                memory_used_bytes: 0
            }
        );
        // b's NVENC rung does not open: its session comes back, x264 takes it.
        let why = b
            .rung_open_failed(0, "Cannot load libcuda.so.1")
            .expect("was nvenc");
        assert_eq!(why.reason(), "open_failed");
        assert_eq!(b.plan().rungs[0], EncodeBackend::X264(why));
        assert!(b.rung_open_failed(0, "again").is_none(), "already x264");
        assert_eq!(pool.loads()[0].nvenc_sessions, 3);
        let why = b.decode_failed(SoftwareDecode::OpenFailed("no device".into()));
        assert_eq!(why.map(|w| w.reason()), Some("open_failed"));
        assert_eq!(pool.loads()[0].nvdec_sessions, 1);
        drop(a);
        drop(b);
        assert_eq!(pool.loads()[0], DeviceLoad::default());
    }

    #[test]
    fn two_gpus_take_new_channels_alternately_by_load() {
        let pool = GpuPool::new(GpuMode::Auto, machine(vec![h100(0), h100(1)]));
        let a = pool.assign(&hd(100), 4);
        let b = pool.assign(&hd(100), 4);
        let c = pool.assign(&hd(100), 4);
        let devices: Vec<_> = [&a, &b, &c].iter().map(|x| x.plan().device).collect();
        assert_eq!(devices, [Some(0), Some(1), Some(0)]);
        // GPU 0 now carries two channels: the next goes to GPU 1, then, with
        // both at two, to the one with more free memory.
        drop(a);
        drop(c);
        let d = pool.assign(&hd(100), 4);
        assert_eq!(d.plan().device, Some(0), "GPU 0 is empty again");
        pool.set_memory_used(0, 40 * GIB);
        pool.set_memory_used(1, 10 * GIB);
        // 1 channel each: the one with more free memory wins.
        let e = pool.assign(&hd(100), 4);
        assert_eq!(e.plan().device, Some(1));
        let f = pool.assign(&hd(100), 4);
        assert_eq!(f.plan().device, Some(0), "fewest channels first");
        drop((b, d, e, f));
        assert_eq!(pool.loads().iter().map(|l| l.channels).sum::<usize>(), 0);
    }

    #[test]
    fn high_10_and_other_profiles_nvdec_refuses_decode_in_software() {
        let m = machine(vec![h100(0)]);
        for (profile, reason) in [
            (110, "profile"),
            (122, "profile"),
            (244, "profile"),
            (88, "profile"),
        ] {
            let p = plan(GpuMode::Auto, &m, &[], &hd(profile), 2);
            let DecodeBackend::Software(why) = &p.decode else {
                panic!("profile {profile}: {p}");
            };
            assert_eq!(why.reason(), reason);
            assert!(why.is_fallback());
            // The rest of the GPU plan stands.
            assert_eq!((p.device, p.scale), (Some(0), Stage::Cuda));
        }
        let p = plan(GpuMode::Auto, &m, &[], &hd(110), 2);
        assert!(
            p.to_string()
                .contains("(NVDEC does not decode H.264 profile 110 (High 10))"),
            "{p}"
        );
        // High profile flagged 4:2:2 or 10-bit by its record.
        let s = StreamFacts {
            chroma_format_idc: Some(2),
            ..hd(100)
        };
        assert_eq!(s.nvdec_refusal().map(|w| w.reason()), Some("chroma"));
        let s = StreamFacts {
            bit_depth: Some(10),
            ..hd(100)
        };
        assert_eq!(s.nvdec_refusal().map(|w| w.reason()), Some("bit_depth"));
        assert_eq!(hd(66).nvdec_refusal(), None);
        assert_eq!(hd(77).nvdec_refusal(), None);
    }

    #[test]
    fn sizes_outside_nvdecs_limits_decode_in_software() {
        let m = machine(vec![h100(0)]);
        for (w, h) in [(7680, 4320), (4112, 2160), (32, 32), (64, 8)] {
            let s = StreamFacts {
                width: w,
                height: h,
                ..hd(100)
            };
            let p = plan(GpuMode::Auto, &m, &[], &s, 2);
            assert_eq!(
                p.decode,
                DecodeBackend::Software(SoftwareDecode::Size {
                    width: w,
                    height: h
                }),
                "{w}x{h}"
            );
        }
        for (w, h) in [(4096, 4096), (48, 16), (3840, 2160)] {
            let s = StreamFacts {
                width: w,
                height: h,
                ..hd(100)
            };
            assert_eq!(s.nvdec_refusal(), None, "{w}x{h}");
        }
    }

    #[test]
    fn gpu_off_and_no_driver_are_cpu_everywhere_and_not_fallbacks() {
        let m = machine(vec![device(0, "NVIDIA L4", true, true)]);
        let p = plan(GpuMode::Off, &m, &[], &hd(100), 3);
        assert_eq!(
            p,
            ChannelPlan::cpu(3, SoftwareDecode::GpuOff, X264Reason::GpuOff)
        );
        assert_eq!(
            p.to_string(),
            "CPU (gpu.enabled = \"off\"): decode cpu, scale cpu, quality cpu, encode x264 x3"
        );
        let none = MachineFacts::cpu_only("no CUDA driver (libcuda.so.1 not found)");
        for mode in [GpuMode::Auto, GpuMode::On] {
            let p = plan(mode, &none, &[], &hd(100), 3);
            assert_eq!(p.device, None);
            assert_eq!((p.scale, p.quality), (Stage::Cpu, Stage::Cpu));
            let DecodeBackend::Software(why) = &p.decode else {
                panic!("{p}")
            };
            assert!(!why.is_fallback());
            assert!(why.to_string().contains("libcuda.so.1"), "{why}");
            assert_eq!(p.rungs, vec![EncodeBackend::X264(X264Reason::NoGpu); 3]);
        }
        // A CPU-only pool hands out plans and holds nothing.
        let pool = GpuPool::new(GpuMode::Auto, none);
        let a = pool.assign(&hd(100), 2);
        assert_eq!(a.plan().device, None);
        assert!(pool.loads().is_empty());
    }

    #[test]
    fn without_kernels_nvdec_and_nvenc_still_serve_and_the_cpu_scales() {
        let mut m = machine(vec![device(3, "NVIDIA L4", true, true)]);
        m.kernels = false;
        let p = plan(GpuMode::Auto, &m, &[], &hd(100), 2);
        assert_eq!(p.device, Some(3));
        assert_eq!(p.decode, DecodeBackend::Nvdec);
        assert_eq!((p.scale, p.quality), (Stage::Cpu, Stage::Cpu));
        assert_eq!(p.rungs, vec![EncodeBackend::Nvenc; 2]);
        let mut no_nvdec = machine(vec![device(0, "X", false, false)]);
        no_nvdec.kernels = true;
        let p = plan(GpuMode::Auto, &no_nvdec, &[], &hd(100), 1);
        assert_eq!(p.decode, DecodeBackend::Software(SoftwareDecode::NoNvdec));
    }

    #[test]
    fn fallback_transitions_change_only_what_was_on_the_gpu() {
        let mut p = plan(
            GpuMode::Auto,
            &machine(vec![device(0, "Tesla T4", true, true)]),
            &[],
            &hd(100),
            2,
        );
        assert!(p.fallback_on_open_failure(5, "x").is_none(), "no such rung");
        let why = p
            .fallback_on_open_failure(1, "Cannot load libcuda.so.1")
            .cloned();
        assert_eq!(
            why,
            Some(X264Reason::OpenFailed("Cannot load libcuda.so.1".into()))
        );
        assert_eq!(p.rungs[0], EncodeBackend::Nvenc);
        assert_eq!(p.nvenc_rungs(), 1);
        let why = p
            .fallback_on_decode_failure(SoftwareDecode::DecodeFailed("P010".into()))
            .cloned();
        assert_eq!(why.map(|w| w.reason()), Some("decode_failed"));
        assert!(
            p.fallback_on_decode_failure(SoftwareDecode::OpenFailed("again".into()))
                .is_none()
        );
        assert!(
            p.to_string()
                .contains("decode cpu (NVDEC refused the stream: P010)"),
            "{p}"
        );
    }

    #[test]
    fn chroma_and_bit_depth_come_from_the_avcc_extension() {
        // A 640x360 High-profile record as x264 writes it, with the extension:
        // 4:2:0, 8-bit.
        let mut avcc = vec![
            1, 100, 0, 30, 0xff, 0xe1, 0, 4, 0x67, 100, 0, 30, 1, 0, 2, 0x68, 0xee,
        ];
        let params = |avcc: &[u8]| VideoParams {
            avcc: bytes::Bytes::copy_from_slice(avcc),
            width: 640,
            height: 360,
            profile_idc: avcc[1],
            constraint_flags: 0,
            level_idc: 30,
            nal_length_size: 4,
        };
        let s = StreamFacts::from_params(&params(&avcc));
        assert_eq!(
            (s.chroma_format_idc, s.bit_depth),
            (None, None),
            "no extension"
        );
        avcc.extend([0xfc | 1, 0xf8, 0xf8, 0]);
        let s = StreamFacts::from_params(&params(&avcc));
        assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(1), Some(8)));
        avcc[1] = 110;
        let n = avcc.len();
        avcc[n - 4] = 0xfc | 2;
        avcc[n - 3] = 0xf8 | 2;
        let s = StreamFacts::from_params(&params(&avcc));
        assert_eq!((s.chroma_format_idc, s.bit_depth), (Some(2), Some(10)));
        assert_eq!(s.profile_idc, 110);
    }

    #[test]
    fn planned_fallbacks_are_counted_once_per_reason() {
        let m = machine(vec![h100(0)]);
        let pool = GpuPool::new(GpuMode::Auto, m);
        let before = |r: &str| {
            METRICS
                .encode_backend_fallbacks
                .with_label_values(&[r])
                .get()
        };
        let dec = |r: &str| {
            METRICS
                .decode_backend_fallbacks
                .with_label_values(&[r])
                .get()
        };
        let (enc0, dec0) = (before("no_nvenc"), dec("profile"));
        let a = pool.assign(&hd(110), 3);
        a.count_planned_fallbacks();
        // Other tests may count too; at least ours are there.
        assert!(before("no_nvenc") >= enc0 + 3);
        assert!(dec("profile") > dec0);
        let off = Assignment::without_gpu(ChannelPlan::cpu(
            2,
            SoftwareDecode::GpuOff,
            X264Reason::GpuOff,
        ));
        let gpu_off = before("gpu_off");
        off.count_planned_fallbacks();
        assert_eq!(before("gpu_off"), gpu_off, "not a fallback");
    }
}
