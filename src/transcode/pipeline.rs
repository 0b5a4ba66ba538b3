//! The transcode pipeline of one stream: decode once, scale into the ladder,
//! encode every rung on its own thread, measure what the encoders made.
//!
//! Threads: one decode+scale thread (scaling fans out over rayon) and one
//! encoder thread per rung, joined by crossbeam bounded channels; frames come
//! from per-rung pools, so steady state allocates nothing per frame. Live, a
//! rung admits or drops each GOP whole at its first frame (a rung whose
//! encoder is behind skips a GOP and catches up), and the caller never
//! blocks. Offline, every stage simply waits for the next. It never touches
//! sockets or the packager: results come out as [`Output`]s.
//!
//! Backends come from the channel's plan (`transcode::backend`): NVDEC
//! pictures stay on the GPU and the CUDA kernels scale them there; each
//! libx264 rung is downloaded once, and each NVENC rung stays on the GPU (the
//! scaler copies it into a picture of the encoder's CUDA frames, which NVENC
//! reads where it is). A stage whose GPU backend does not open falls back to
//! the CPU for this stream, with a log line and a metric; an NVENC rung whose
//! CUDA frames cannot be made reads host memory instead, saying so.

mod check;
mod encoder;
mod nice;

use crate::gpu::device::Gpu;
use crate::media::{Arrival, Packet, VideoParams};
use crate::metrics::METRICS;
use crate::transcode::backend::{
    Assignment, ChannelPlan, DecodeBackend, EncodeBackend, GpuRuntime, SoftwareDecode, Stage,
    StreamFacts, X264Reason,
};
use crate::transcode::decode::{DecodeError, Decoded, VideoDecoder};
use crate::transcode::encode::nvenc::NvencCudaEncoder;
use crate::transcode::encode::{EncoderSettings, FrameRate, NvencEncoder, X264Encoder};
use crate::transcode::frame::{Frame, FramePool, Size};
use crate::transcode::ladder::{Ladders, Rung};
use crate::transcode::quality::cuda::GpuQuality;
use crate::transcode::scale::cpu::CpuScaler;
use crate::transcode::scale::{
    GpuScaleError, GpuScaler, Kernel, ScaleError, ScaleOptions, Scaler, Threading,
};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use encoder::{EncJob, RungCodec, RungEncoder, RungPicture, RungWorker, rung_settings};
pub use encoder::{RungError, RungSummary};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;

/// Why a source's rungs could not start, or a picture not be scaled.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("scaler: {0}")]
    Scale(#[from] ScaleError),
    #[error("CUDA scaler: {0}")]
    GpuScale(#[from] GpuScaleError),
    #[error("decoded picture: {0}")]
    Picture(#[from] DecodeError),
    #[error("rung {rung}: {source}")]
    Rung {
        rung: String,
        #[source]
        source: RungError,
    },
}

/// How the pipeline treats a slow stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Never block the caller; rungs drop whole GOPs when behind.
    Live,
    /// Wait: every frame of every rung is encoded.
    Offline,
}

/// Encoder knobs shared by every rung.
#[derive(Clone, Debug)]
pub struct EncoderTuning {
    /// x264 preset.
    pub preset: String,
    /// Short lookahead and no B-frames, so a rung holds only a few frames.
    pub low_latency: bool,
    /// x264 threads per rung (0: x264 decides).
    pub threads: usize,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub ladder: String,
    pub ladders: Arc<Ladders>,
    pub pace: Pace,
    pub encoder: EncoderTuning,
    pub decoder_threads: usize,
    /// The scalers' kernel.
    pub scaler: Kernel,
    /// Frames queued per rung encoder.
    pub queue_frames: usize,
    /// Decode one GOP in this many of each rung's output and measure PSNR/SSIM
    /// on its frames (0: off).
    pub quality_every_gops: u32,
    /// The source frame rate when the container says it; else estimated
    /// from the first two frames.
    pub frame_rate: Option<FrameRate>,
    /// The node's GPUs and their shared load; `None`: CPU backends only.
    pub gpu: Option<Arc<GpuRuntime>>,
    /// Heights of the ladder not to make: the publisher sends them as tracks of its own.
    pub covered: Vec<u32>,
}

/// What the pipeline hands back, in order.
#[derive(Debug)]
pub enum Output {
    /// The ladder for the current source; `rung` indices below refer to it.
    /// Comes again (after the old rungs' last packets) when the source
    /// changes size.
    Plan(Vec<Rung>),
    /// A rung encoder's parameter sets, before its first packet.
    Config {
        rung: usize,
        params: Arc<VideoParams>,
    },
    /// One encoded frame; `keyframe` is an IDR placed on a source keyframe.
    Packet {
        rung: usize,
        packet: Packet,
        /// When ingest received the source frame it was made from.
        arrival: Arrival,
    },
    /// A rung's encoder finished (end of stream or source change).
    Summary { rung: usize, summary: RungSummary },
    /// The backend of every stage for the current source, once its rung
    /// encoders are open, and again when a stage falls back to the CPU.
    Backends(ChannelPlan),
}

enum Input {
    Config(Arc<VideoParams>),
    Packet { packet: Packet, arrival: Arrival },
}

/// Handle on a running pipeline. Dropping it (or [`Pipeline::finish`])
/// flushes every stage.
pub struct Pipeline {
    channel: String,
    pace: Pace,
    input: Option<Sender<Input>>,
    output: Receiver<Output>,
    thread: Option<JoinHandle<()>>,
    /// Live: the input queue overflowed, so the rest of this GOP cannot be
    /// decoded; skip to the next keyframe.
    skipping: bool,
    /// pts of the last packet the decode stage finished (`i64::MIN`: none).
    decoded_pts: Arc<AtomicI64>,
}

/// Live decoder backlog, in media time, past which a GOP is dropped: 1.5 s.
const MAX_BACKLOG_TICKS: i64 = crate::media::TIMEBASE as i64 * 3 / 2;

/// Source packets queued for the decoder: about two GOPs of 1080p60.
const INPUT_QUEUE: usize = 256;
/// Live outputs waiting for the channel thread: about six seconds of a
/// five-rung 30 fps ladder, far beyond the thread's normal lag.
const OUTPUT_QUEUE: usize = 1024;

impl Pipeline {
    pub fn start(channel: &str, cfg: PipelineConfig) -> std::io::Result<Self> {
        let (in_tx, in_rx) = crossbeam_channel::bounded(INPUT_QUEUE);
        // Live, bounded: a channel thread that stops draining costs the
        // rungs their packets (each rung drops to its next keyframe, counted
        // as a dropped GOP), never memory. Offline, unbounded: the writer
        // feeds the input and drains the output on one thread, so a bound
        // could deadlock it, and encoders make output only as fast as that
        // thread feeds them.
        let (out_tx, out_rx) = match cfg.pace {
            Pace::Live => crossbeam_channel::bounded(OUTPUT_QUEUE),
            Pace::Offline => crossbeam_channel::unbounded(),
        };
        let pace = cfg.pace;
        let name = channel.to_string();
        let decoded_pts = Arc::new(AtomicI64::new(i64::MIN));
        let progress = decoded_pts.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dec-{channel}"))
            .spawn(move || DecodeStage::new(name, cfg, out_tx).run(in_rx, &progress))?;
        Ok(Pipeline {
            channel: channel.to_string(),
            pace,
            input: Some(in_tx),
            output: out_rx,
            thread: Some(thread),
            skipping: false,
            decoded_pts,
        })
    }

    /// Results, in order. Drain it regularly.
    pub fn outputs(&self) -> &Receiver<Output> {
        &self.output
    }

    /// A new source configuration. Never dropped: it is rare and the decoder
    /// needs it to make sense of what follows.
    pub fn push_config(&mut self, params: Arc<VideoParams>) {
        if let Some(tx) = &self.input {
            let _ = tx.send(Input::Config(params));
        }
    }

    /// One source video packet.
    pub fn push_packet(&mut self, packet: Packet, arrival: Arrival) {
        let Some(tx) = &self.input else { return };
        if self.skipping {
            if !packet.keyframe {
                return;
            }
            self.skipping = false;
        }
        let keyframe = packet.keyframe;
        if self.pace == Pace::Live && keyframe {
            // A queue counted in packets would let a starved decoder fall
            // seconds behind; in media time the backlog stays bounded, and
            // the choice is made at a keyframe, so the rungs lose whole GOPs.
            let done = self.decoded_pts.load(Ordering::Relaxed);
            // An empty queue means caught up, whatever was skipped before.
            let behind =
                !tx.is_empty() && done != i64::MIN && packet.pts - done > MAX_BACKLOG_TICKS;
            if behind {
                self.skipping = true;
                tracing::warn!(channel = %self.channel, backlog_s = (packet.pts - done) as f64 / f64::from(crate::media::TIMEBASE),
                    "decoder behind; dropping this GOP in every rung");
                METRICS
                    .rung_dropped_gops
                    .with_label_values(&[&self.channel, "*"])
                    .inc();
                return;
            }
        }
        let msg = Input::Packet { packet, arrival };
        match self.pace {
            Pace::Offline => {
                let _ = tx.send(msg);
            }
            Pace::Live => {
                if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
                    // The decoder is more than a queue behind: every rung
                    // loses the rest of this GOP rather than stall ingest.
                    self.skipping = true;
                    tracing::warn!(channel = %self.channel, keyframe, "decoder behind; skipping to the next keyframe");
                    METRICS
                        .rung_dropped_gops
                        .with_label_values(&[&self.channel, "*"])
                        .inc();
                }
            }
        }
    }

    /// Flushes every stage and waits for it, reading what they make
    /// meanwhile: a stage may wait on a full live output queue, so the
    /// caller must not wait on the stage without draining it. Returns
    /// every output not read before.
    pub fn finish(&mut self) -> Vec<Output> {
        self.input = None;
        let Some(thread) = self.thread.take() else {
            return self.output.try_iter().collect();
        };
        // Ends once every stage has let go of its sender.
        let rest = self.output.iter().collect();
        let _ = thread.join();
        rest
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The ladder scaler of one source: the CUDA kernels on a GPU channel, else
/// the CPU's.
enum LadderScaler {
    Cpu(CpuScaler),
    Gpu(Box<GpuScaler>),
}

/// The decode+scale thread's state for one source configuration.
struct Active {
    params: Arc<VideoParams>,
    decoder: VideoDecoder,
    source_pool: FramePool,
    plan: Vec<Rung>,
    scaler: Option<LadderScaler>,
    workers: Vec<RungWorker>,
    /// A frame decoded before the frame rate was known.
    held: Option<Decoded>,
    /// The backends of this source's stages and its share of a GPU.
    assignment: Assignment,
    /// The opened GPU the plan's device is, when the node has it open.
    gpu: Option<Arc<Gpu>>,
    /// Packets given to the NVDEC decoder before its first picture: if NVDEC
    /// refuses the stream, a software decoder takes them over.
    replay: Option<Vec<Packet>>,
}

/// Packets kept for a software decoder while NVDEC has not produced its
/// first picture: NVDEC refuses a stream on its first keyframe, so a GOP or
/// two is plenty.
const MAX_REPLAY: usize = 600;

struct DecodeStage {
    channel: String,
    cfg: PipelineConfig,
    out: Sender<Output>,
    active: Option<Active>,
    params: Option<Arc<VideoParams>>,
    decoded: Vec<Decoded>,
    /// Each rung's picture for the frame being scaled.
    scaled: Vec<RungPicture>,
    /// The same frames as `scaled` while the CPU scaler, which takes host frames only,
    /// fills them.
    scaled_on_cpu: Vec<Frame>,
    /// (pts, arrival) of packets sent to the decoder and not yet seen as
    /// frames; decoders hold a few dozen at most.
    times: std::collections::VecDeque<(i64, Arrival)>,
    /// Warnings a broken source can trigger on every packet.
    warnings: crate::logging::LogBudget,
}

/// Pending (pts, times) entries kept for frames still inside the decoder.
const MAX_TIMES: usize = 128;

/// Records that a stream planned for NVDEC decodes in software, and says why.
fn decode_fallback(channel: &str, assignment: &mut Assignment, why: SoftwareDecode) {
    if let Some(why) = assignment.decode_failed(why) {
        tracing::warn!(channel = %channel, reason = %why, "NVDEC not used for this stream; decoding in software");
    }
}

impl DecodeStage {
    fn new(channel: String, cfg: PipelineConfig, out: Sender<Output>) -> Self {
        DecodeStage {
            channel,
            cfg,
            out,
            active: None,
            params: None,
            decoded: Vec::new(),
            scaled: Vec::new(),
            scaled_on_cpu: Vec::new(),
            times: std::collections::VecDeque::with_capacity(MAX_TIMES),
            warnings: crate::logging::LogBudget::new(5, std::time::Duration::from_secs(10)),
        }
    }

    fn run(mut self, input: Receiver<Input>, progress: &AtomicI64) {
        for msg in input {
            match msg {
                Input::Config(p) => self.configure(p),
                Input::Packet { packet, arrival } => {
                    let pts = packet.pts;
                    self.packet(packet, arrival);
                    progress.store(pts, Ordering::Relaxed);
                }
            }
        }
        self.close();
    }

    /// The backend plan for a source with `rungs` rungs, and its share of a GPU.
    fn assign(&self, params: &VideoParams, rungs: usize) -> (Assignment, Option<Arc<Gpu>>) {
        let facts = StreamFacts::from_params(params);
        let Some(rt) = &self.cfg.gpu else {
            let none = ChannelPlan::cpu(
                rungs,
                SoftwareDecode::NoGpu("the node runs without a GPU".into()),
                X264Reason::NoGpu,
            );
            return (Assignment::without_gpu(none), None);
        };
        let assignment = rt.pool.assign(&facts, rungs);
        assignment.count_planned_fallbacks();
        let gpu = assignment.plan().device.and_then(|d| rt.gpu(d).cloned());
        if let Some(g) = &gpu
            && let Ok(bytes) = g.memory_used()
        {
            rt.pool.set_memory_used(g.index, bytes);
        }
        (assignment, gpu)
    }

    fn configure(&mut self, params: Arc<VideoParams>) {
        if self.params.as_deref() == Some(&*params) {
            return;
        }
        self.close();
        self.params = Some(params.clone());
        let size = Size::new(params.width, params.height);
        let plan = match self.cfg.ladders.plan(&self.cfg.ladder, size) {
            Ok(mut p) => {
                p.retain(|r| !self.cfg.covered.contains(&r.size.height));
                p
            }
            Err(e) => {
                tracing::error!(channel = %self.channel, error = %e, "no ladder; passing the source through only");
                Vec::new()
            }
        };
        let _ = self.out.send(Output::Plan(plan.clone()));
        if plan.is_empty() {
            return;
        }
        let (mut assignment, gpu) = self.assign(&params, plan.len());
        let nvdec = match (&assignment.plan().decode, assignment.plan().device) {
            (DecodeBackend::Nvdec, Some(device)) => {
                match VideoDecoder::new_nvdec(&params, device) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        let why = SoftwareDecode::OpenFailed(e.to_string());
                        decode_fallback(&self.channel, &mut assignment, why);
                        None
                    }
                }
            }
            _ => None,
        };
        let opened = match nvdec {
            Some(d) => Ok(d),
            None => VideoDecoder::new(&params, self.cfg.decoder_threads),
        }
        .and_then(|d| {
            // The decoder holds a few frames and the scaler one.
            let pool = FramePool::new(size, 8 + self.cfg.decoder_threads).map_err(|source| {
                crate::transcode::decode::DecodeError::Frame { pts: 0, source }
            })?;
            Ok((d, pool))
        });
        match opened {
            Ok((decoder, source_pool)) => {
                let replay = decoder.nvdec_device().map(|_| Vec::new());
                self.active = Some(Active {
                    params,
                    decoder,
                    source_pool,
                    plan,
                    scaler: None,
                    workers: Vec::new(),
                    held: None,
                    assignment,
                    gpu,
                    replay,
                });
            }
            Err(e) => {
                tracing::error!(channel = %self.channel, error = %e, "cannot decode the source; rungs stay empty")
            }
        }
    }

    fn packet(&mut self, packet: Packet, arrival: Arrival) {
        let Some(active) = &mut self.active else {
            return;
        };
        if self.times.len() == MAX_TIMES {
            self.times.pop_front();
        }
        self.times.push_back((packet.pts, arrival));
        if let Some(replay) = &mut active.replay {
            if replay.len() < MAX_REPLAY {
                replay.push(packet.clone());
            } else {
                active.replay = None;
            }
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        let result = active
            .decoder
            .decode_pictures(&packet, &active.source_pool, &mut decoded);
        let refused = match result {
            Err(e) if active.decoder.nvdec_device().is_some() && !active.decoder.has_produced() => {
                Some(e)
            }
            Err(e) => {
                if let Some(held) = self.warnings.admit_now() {
                    tracing::warn!(channel = %self.channel, error = %e, held_back = held, "source packet did not decode");
                }
                None
            }
            Ok(()) => None,
        };
        if active.decoder.has_produced() {
            active.replay = None;
        }
        for frame in decoded.drain(..) {
            self.frame(frame);
        }
        self.decoded = decoded;
        if let Some(e) = refused {
            self.nvdec_refused(e);
        }
    }

    /// NVDEC failed before its first picture: the stream is one it does not
    /// take (a profile or size it refuses, no surfaces). A software decoder
    /// takes over from the packets NVDEC was given.
    fn nvdec_refused(&mut self, error: crate::transcode::decode::DecodeError) {
        let Some(active) = &mut self.active else {
            return;
        };
        let why = SoftwareDecode::DecodeFailed(error.to_string());
        decode_fallback(&self.channel, &mut active.assignment, why);
        match VideoDecoder::new(&active.params, self.cfg.decoder_threads) {
            Ok(d) => active.decoder = d,
            Err(e) => {
                tracing::error!(channel = %self.channel, error = %e, "cannot decode the source; rungs stay empty");
                self.active = None;
                return;
            }
        }
        if !active.workers.is_empty() {
            let _ = self
                .out
                .send(Output::Backends(active.assignment.plan().clone()));
        }
        let replay = active.replay.take().unwrap_or_default();
        let mut decoded = std::mem::take(&mut self.decoded);
        for packet in &replay {
            let Some(active) = &mut self.active else {
                return;
            };
            if let Err(e) =
                active
                    .decoder
                    .decode_pictures(packet, &active.source_pool, &mut decoded)
                && let Some(held) = self.warnings.admit_now()
            {
                tracing::warn!(channel = %self.channel, error = %e, held_back = held, "source packet did not decode");
            }
            for frame in decoded.drain(..) {
                self.frame(frame);
            }
        }
        self.decoded = decoded;
    }

    /// The arrival of the packet that carried `pts`. A decoder only makes
    /// frames of packets it was given; should the (bounded) table miss one,
    /// the oldest pending packet's is the nearest.
    fn times_of(&mut self, pts: i64) -> Option<Arrival> {
        while let Some(&(p, arrival)) = self.times.front() {
            if p == pts {
                return Some(arrival);
            }
            // Frames leave the decoder in pts order: anything earlier is gone.
            if p < pts && self.times.len() > 1 {
                self.times.pop_front();
                continue;
            }
            break;
        }
        self.times
            .iter()
            .find(|t| t.0 == pts)
            .or(self.times.front())
            .map(|t| t.1)
    }

    fn frame(&mut self, df: Decoded) {
        let Some(active) = &mut self.active else {
            return;
        };
        if active.workers.is_empty() {
            let rate = match (self.cfg.frame_rate, &active.held) {
                (Some(r), _) => r,
                (None, None) => {
                    active.held = Some(df);
                    return;
                }
                (None, Some(first)) => estimate_rate(first.pts(), df.pts()),
            };
            if let Err(e) = self.start_rungs(rate) {
                tracing::error!(channel = %self.channel, error = %e, "cannot start rung encoders");
                self.active = None;
                return;
            }
            if let Some(first) = self.active.as_mut().and_then(|a| a.held.take()) {
                self.scale_and_send(first);
            }
        }
        self.scale_and_send(df);
    }

    fn start_rungs(&mut self, rate: FrameRate) -> Result<(), PipelineError> {
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        let sizes: Vec<Size> = active.plan.iter().map(|r| r.size).collect();
        let source = active.decoder.size();
        let threading = scale_threading(self.cfg.pace, source, rate);
        let on_gpu = match (&active.gpu, active.assignment.plan().scale) {
            (Some(gpu), Stage::Cuda) => {
                match GpuScaler::with_kernel(gpu.clone(), source, &sizes, self.cfg.scaler) {
                    Ok(s) => Some(LadderScaler::Gpu(Box::new(s))),
                    Err(e) => {
                        tracing::warn!(channel = %self.channel, error = %e, "the CUDA scaler cannot take this source; scaling on the CPU");
                        None
                    }
                }
            }
            _ => None,
        };
        if on_gpu.is_none() {
            // Whatever the plan said (a device injected without kernels, a
            // source the kernels cannot take), the CPU scales and measures.
            active.assignment.kernels_unavailable();
        }
        // NVENC reads the scaler's pictures in device memory when the kernels scale:
        // on that GPU, in the context the scaler's copies write in.
        let scaler_gpu = match &on_gpu {
            Some(LadderScaler::Gpu(_)) => active.gpu.as_ref().map(|g| g.index),
            _ => None,
        };
        let scaler = match on_gpu {
            Some(s) => s,
            None => {
                let options = ScaleOptions {
                    kernel: self.cfg.scaler,
                    ..ScaleOptions::default()
                };
                let scaler = CpuScaler::with_options(source, &sizes, options)?;
                LadderScaler::Cpu(scaler.with_threading(threading))
            }
        };
        active.scaler = Some(scaler);
        let largest = (0..sizes.len()).max_by_key(|&i| sizes[i].area());
        let offline = self.cfg.pace == Pace::Offline;
        let device = active.assignment.plan().device;
        for (i, rung) in active.plan.iter().enumerate() {
            let yields = offline && Some(i) != largest;
            let settings = rung_settings(rung, rate, &self.cfg);
            let nvenc = match active.assignment.plan().rungs[i] {
                EncodeBackend::Nvenc => {
                    let open = NvencOpen {
                        channel: &self.channel,
                        rung: i,
                        name: &rung.name,
                        settings: &settings,
                        device,
                        scaler_gpu,
                    };
                    open.open(&mut active.assignment)
                }
                _ => None,
            };
            let (encoder, backend) = match nvenc {
                Some(e) => (e, "nvenc"),
                None => (
                    RungCodec::Host(Box::new(X264Encoder::new(&settings).map_err(|e| {
                        PipelineError::Rung {
                            rung: rung.name.clone(),
                            source: RungError::Encoder(e),
                        }
                    })?)),
                    "x264",
                ),
            };
            let meter = match (&active.gpu, active.assignment.plan().quality) {
                (Some(gpu), Stage::Cuda) if self.cfg.quality_every_gops > 0 => {
                    GpuQuality::new(gpu.clone(), rung.size, 1)
                        .map_err(|e| {
                            tracing::debug!(channel = %self.channel, rung = %rung.name, error = %e,
                                "quality kernels not usable for this rung; measuring on the CPU");
                        })
                        .ok()
                }
                _ => None,
            };
            let encoder = RungEncoder {
                encoder,
                backend,
                meter,
            };
            let out = self.out.clone();
            let w = RungWorker::start(&self.channel, i, rung, encoder, &self.cfg, out, yields)
                .map_err(|source| PipelineError::Rung {
                    rung: rung.name.clone(),
                    source,
                })?;
            active.workers.push(w);
        }
        let backends = active.assignment.plan().clone();
        tracing::info!(channel = %self.channel, %source, rate = %rate,
            rungs = ?active.plan.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            backends = %backends, "transcoding");
        let _ = self.out.send(Output::Backends(backends));
        Ok(())
    }

    fn scale_and_send(&mut self, df: Decoded) {
        let pts = df.pts();
        let keyframe = df.keyframe();
        let (Some(arrival), Some(active)) = (self.times_of(pts), &mut self.active) else {
            return;
        };
        let Some(scaler) = &mut active.scaler else {
            return;
        };
        let live = self.cfg.pace == Pace::Live;
        // Admission is decided per rung at the GOP's first frame.
        if keyframe {
            for w in &mut active.workers {
                w.admit_gop(live);
            }
        }
        self.scaled.clear();
        for w in &mut active.workers {
            match w.picture() {
                Ok(p) => self.scaled.push(p),
                Err(e) => {
                    tracing::error!(channel = %self.channel, error = %e, "no frame for a rung");
                    return;
                }
            }
        }
        let scaled = match (scaler, df) {
            (LadderScaler::Gpu(s), Decoded::Device(d)) => {
                let (y, uv) = d.planes();
                // SAFETY: `d` is a surface of the NVDEC decoder opened on the
                // plan's device with its primary context, the context of
                // `s`'s GPU (the same device); it stays alive, unchanged,
                // until this call has returned.
                unsafe { s.scale_device(d.format(), y, uv, pts, &mut self.scaled) }
                    .map_err(PipelineError::from)
            }
            (LadderScaler::Gpu(s), Decoded::Host(h)) => s
                .scale_into(&h.frame, &mut self.scaled)
                .map_err(PipelineError::from),
            (LadderScaler::Cpu(s), d) => match d.into_host(&active.source_pool) {
                Ok(h) => scale_on_cpu(s, &h.frame, &mut self.scaled, &mut self.scaled_on_cpu),
                Err(e) => Err(PipelineError::from(e)),
            },
        };
        if let Err(e) = scaled {
            tracing::error!(channel = %self.channel, error = %e, "scaling failed");
            return;
        }
        for (w, picture) in active.workers.iter_mut().zip(self.scaled.drain(..)) {
            w.send(EncJob {
                picture,
                force_idr: keyframe,
                arrival,
            });
        }
    }

    /// Flushes the decoder and every rung encoder of the current source.
    fn close(&mut self) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        let mut decoded = std::mem::take(&mut self.decoded);
        let _ = active
            .decoder
            .flush_pictures(&active.source_pool, &mut decoded);
        self.active = Some(active);
        for frame in decoded.drain(..) {
            self.frame(frame);
        }
        self.decoded = decoded;
        if let Some(mut active) = self.active.take() {
            // All rungs flush their lookahead and B-frames in parallel, not
            // one after the other.
            for w in &mut active.workers {
                w.end_input();
            }
            for w in active.workers {
                w.finish();
            }
        }
    }
}

/// Scales `src` on the CPU into `pictures`, host frames all (only the CUDA scaler feeds
/// NVENC device memory, so a channel scaled on the CPU has no device picture), through
/// `frames`, which the CPU scaler takes.
fn scale_on_cpu(
    scaler: &mut CpuScaler,
    src: &Frame,
    pictures: &mut Vec<RungPicture>,
    frames: &mut Vec<Frame>,
) -> Result<(), PipelineError> {
    frames.clear();
    frames.extend(pictures.drain(..).map(|p| match p {
        RungPicture::Host(f) => f,
        // `start_rungs` opens NVENC on CUDA frames only behind the GPU scaler.
        RungPicture::Device(_) => unreachable!("a device picture for the CPU scaler"),
    }));
    let scaled = scaler.scale(src, frames);
    pictures.extend(frames.drain(..).map(RungPicture::Host));
    Ok(scaled?)
}

/// Opening one NVENC rung: on the CUDA scaler's device pictures where the GPU scaler runs,
/// else (or when its CUDA frames cannot be made) on host frames.
struct NvencOpen<'a> {
    channel: &'a str,
    rung: usize,
    name: &'a str,
    settings: &'a EncoderSettings,
    /// The plan's GPU.
    device: Option<usize>,
    /// The GPU the CUDA scaler runs on; `None`: the CPU scales.
    scaler_gpu: Option<usize>,
}

impl NvencOpen<'_> {
    /// The encoder, with the plan told which input it reads; `None` when NVENC does not
    /// open at all: the rung goes to libx264, its fallback counted.
    fn open(&self, assignment: &mut Assignment) -> Option<RungCodec> {
        let (channel, rung) = (self.channel, self.name);
        let host_because = match self.scaler_gpu {
            Some(gpu) => match NvencCudaEncoder::new(self.settings, gpu) {
                Ok(e) => {
                    assignment.rung_nvenc_from_device(self.rung);
                    tracing::info!(%channel, %rung, gpu, "NVENC reads this rung in device memory (CUDA frames)");
                    return Some(RungCodec::Device(Box::new(e)));
                }
                Err(e) => {
                    tracing::warn!(%channel, %rung, error = %e,
                        "NVENC cannot read CUDA frames; this rung goes through host memory");
                    "its CUDA frames did not open"
                }
            },
            None => "the CPU scales",
        };
        match NvencEncoder::new(self.settings, self.device) {
            Ok(e) => {
                tracing::info!(%channel, %rung, reason = host_because, "NVENC reads this rung from host memory");
                Some(RungCodec::Host(Box::new(e)))
            }
            Err(e) => {
                if let Some(why) = assignment.rung_open_failed(self.rung, e.to_string()) {
                    tracing::warn!(%channel, %rung, reason = %why,
                        "NVENC did not open; this rung runs on libx264");
                }
                None
            }
        }
    }
}

/// Most source pixels per second the decode thread scales by itself when
/// live: 1080p30, and 10% more for a rate estimated from millisecond
/// timestamps (30.3 fps). The standard ladder of a 1080p frame costs about
/// 8.5 ms on one core, which with its decode leaves most of the 33 ms frame
/// interval.
const LIVE_SCALE_ON_CALLER_PX_PER_S: u64 = 1920 * 1080 * 33;

/// Who runs the CPU scaler's rows. Offline, the rung encoders alone keep
/// every core busy, and live so do many channels: spreading each pass over
/// rayon as well adds two thread hand-overs per pass and plane (about a
/// hundred a frame), whose wake-ups and yields cost a node of 4 channels of
/// 720p about 6% of its CPU. Only a live source above 1080p30, which one
/// thread could not decode and scale in real time, is spread.
fn scale_threading(pace: Pace, source: Size, rate: FrameRate) -> Threading {
    let px_per_s = source.area() * u64::from(rate.num) / u64::from(rate.den.max(1));
    match pace {
        Pace::Live if px_per_s > LIVE_SCALE_ON_CALLER_PX_PER_S => Threading::Rayon,
        Pace::Live | Pace::Offline => Threading::Caller,
    }
}

/// Frame rate from two consecutive presentation times (90 kHz ticks), as an
/// exact rational so 29.97 stays 29.97.
fn estimate_rate(a: i64, b: i64) -> FrameRate {
    let delta = (b - a).clamp(1, i64::from(crate::media::TIMEBASE));
    FrameRate::new(crate::media::TIMEBASE, u32::try_from(delta).unwrap_or(3000))
}

#[cfg(test)]
mod tests;
