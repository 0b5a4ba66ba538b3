//! The node's share of its GPUs: which channels each carries, the NVDEC and
//! NVENC sessions open on it and its memory in use, handed out as
//! [`Assignment`]s that give their sessions back when dropped.

use std::sync::{Arc, Mutex, MutexGuard};

use super::*;
use crate::gpu::GpuMode;
use crate::gpu::device::Gpu;
use crate::metrics::METRICS;

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

    /// Each device's load, in the order of the machine's devices.
    pub fn loads(&self) -> Vec<DeviceLoad> {
        self.lock().clone()
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

    /// Rung `rung`'s NVENC encoder reads the CUDA scaler's pictures in device memory (same
    /// session, another input): the plan says so. Returns whether it was on NVENC.
    pub fn rung_nvenc_from_device(&mut self, rung: usize) -> bool {
        self.plan.nvenc_from_device(rung)
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
