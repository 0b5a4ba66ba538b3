//! One rung's encoder thread: frames in from the decode stage, encoded
//! packets out, and the sampled quality of what it encoded.
//!
//! Quality is measured by decoding the rung's own output (libx264 in FFmpeg
//! 5.1 reports no per-frame error sums), one whole GOP in `quality_every_gops`:
//! a decoder can start at an IDR, so the GOPs in between cost nothing, and
//! every frame of a sampled GOP is scored, so the late frames of a GOP count
//! as much as the IDR. This thread only copies the sampled inputs; the
//! decoding and scoring run on the rung's check thread ([`super::check`]).
//!
//! The decode stage decides at each GOP's first frame whether this rung
//! takes the GOP (live: only when its queue is nearly empty), so a rung
//! loses whole GOPs, never part of one.
//!
//! The encoder (libx264 or NVENC) is opened by the decode stage, which
//! knows the channel's backend plan and falls back; on a GPU channel the
//! PSNR and SSIM of the samples come from the quality kernels. An NVENC rung
//! behind the CUDA scaler takes its pictures in device memory ([`RungPicture::Device`],
//! from the encoder's own CUDA frames); only a sampled GOP's are copied to the host, for
//! the check.

use super::check::Check;
use super::{Output, Pace, PipelineConfig};
use crate::media::{Arrival, Packet, TrackKind};
use crate::metrics::METRICS;
use crate::transcode::decode::{DecodeError, VideoDecoder};
use crate::transcode::encode::nvenc::{
    CudaFrames, CudaPicture, CudaPictureError, NvencCudaEncoder, PictureDownload,
};
use crate::transcode::encode::{
    EncodeError, EncodedPacket, EncoderSettings, FrameRate, VideoEncoder,
};
use crate::transcode::frame::{Frame, FrameError, FramePool, Plane, Size};
use crate::transcode::ladder::Rung;
use crate::transcode::quality::cuda::GpuQuality;
use crate::transcode::quality::{Psnr, Ssim};
use crate::transcode::scale::cuda::{RungOutput, Target};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Instant;

/// Why one rung's encoder could not start.
#[derive(Debug, thiserror::Error)]
pub enum RungError {
    #[error("encoder: {0}")]
    Encoder(#[from] EncodeError),
    #[error("quality check decoder: {0}")]
    Checker(#[source] DecodeError),
    #[error("frame pool: {0}")]
    Pool(#[from] FrameError),
    #[error("{0}")]
    DevicePicture(#[from] CudaPictureError),
    #[error("encoder thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A rung admits a GOP only when at most this many frames wait for it, or a
/// third of its queue if that is more. An encoder that keeps up drains its
/// queue within a frame or two, but on a busy machine the scheduler can hold
/// it back for a few hundred milliseconds: dropping a whole GOP (a gap of
/// seconds for viewers) for that would be far worse than the delay. The
/// rest of the queue takes what a GOP adds while the encoder catches up, so
/// the decode stage does not block on it.
const ADMIT_DEPTH: usize = 4;
/// Copies of sampled input frames kept while the encoder and its check decoder
/// catch up with them: more than the encoder's delay (lookahead + B-frames),
/// or later frames of a sampled GOP go unscored.
const REFERENCES: usize = 16;
/// Frames an encoder holds at most (lookahead, B-frames, threads).
const MAX_TIMES: usize = 64;

pub(super) struct EncJob {
    pub picture: RungPicture,
    pub force_idr: bool,
    pub arrival: Arrival,
}

/// One rung's scaled picture on its way to the encoder.
pub(super) enum RungPicture {
    /// In host memory: libx264, or NVENC with its own upload.
    Host(Frame),
    /// In device memory, from the rung's NVENC frames: the CUDA scaler fills it there.
    Device(CudaPicture),
}

impl RungPicture {
    fn pts(&self) -> i64 {
        match self {
            RungPicture::Host(f) => f.pts(),
            RungPicture::Device(p) => p.pts(),
        }
    }
}

// SAFETY: a device picture comes from the rung's NVENC frames, made (`NvencCudaEncoder::new`)
// on the CUDA scaler's GPU through FFmpeg's CUDA device on its primary context; its planes
// are YUV 4:2:0 of its size at their pitches, and a picture taken from the pool is this
// value's alone (NVENC holds only pictures sent to it, which it releases when done).
unsafe impl RungOutput for RungPicture {
    fn picture_size(&self) -> Size {
        match self {
            RungPicture::Host(f) => f.size(),
            RungPicture::Device(p) => p.size(),
        }
    }

    fn target(&mut self) -> Target<'_> {
        match self {
            RungPicture::Host(f) => Target::Host(f),
            RungPicture::Device(p) => Target::Device(p.planes()),
        }
    }

    fn set_picture_pts(&mut self, pts: i64) {
        match self {
            RungPicture::Host(f) => f.set_pts(pts),
            RungPicture::Device(p) => p.set_pts(pts),
        }
    }
}

/// Where a rung's pictures come from: a pool of host frames, or its NVENC's CUDA frames.
enum Pictures {
    Host(FramePool),
    Device(CudaFrames),
}

/// The decode stage's handle on one rung.
pub(super) struct RungWorker {
    channel: String,
    name: String,
    pictures: Pictures,
    tx: Option<Sender<EncJob>>,
    thread: Option<JoinHandle<()>>,
    admitted: bool,
    /// Frames queued at most for a GOP to be admitted.
    admit_depth: usize,
    /// Target of the scaler while this rung skips a GOP.
    scratch: Option<RungPicture>,
}

/// Quality of one rung over the whole run, sent when its encoder finishes.
#[derive(Clone, Debug, Default)]
pub struct RungSummary {
    pub frames: u64,
    pub bytes: u64,
    pub psnr: Option<Psnr>,
    pub ssim: Option<Ssim>,
    /// The encode backend that ran (`x264`, `nvenc`).
    pub backend: &'static str,
}

/// The settings of one rung's encoder, whatever the backend.
pub(super) fn rung_settings(rung: &Rung, rate: FrameRate, cfg: &PipelineConfig) -> EncoderSettings {
    let mut settings =
        EncoderSettings::live(rung.size.width, rung.size.height, rate, rung.bitrate_bps);
    settings.preset = cfg.encoder.preset.clone();
    settings.low_latency = cfg.encoder.low_latency;
    settings.threads = cfg.encoder.threads;
    settings
}

/// An opened encoder for one rung, and what measures its quality samples.
pub(super) struct RungEncoder {
    pub encoder: RungCodec,
    /// `rungs_rung_*` metrics' `backend` label.
    pub backend: &'static str,
    /// The quality kernels; `None`: the CPU meter.
    pub meter: Option<GpuQuality>,
}

/// A rung's encoder, by what it is fed.
pub(super) enum RungCodec {
    /// Host frames: libx264, or NVENC with its own upload.
    Host(Box<dyn VideoEncoder>),
    /// NVENC reading [`RungPicture::Device`]s of its own frames.
    Device(Box<NvencCudaEncoder>),
}

impl RungCodec {
    fn params(&self) -> &std::sync::Arc<crate::media::VideoParams> {
        match self {
            RungCodec::Host(e) => e.params(),
            RungCodec::Device(e) => e.params(),
        }
    }

    fn encode(
        &mut self,
        picture: RungPicture,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<(), EncodeError> {
        match (self, picture) {
            (RungCodec::Host(e), RungPicture::Host(f)) => e.encode(&f, force_idr, out),
            (RungCodec::Device(e), RungPicture::Device(p)) => e.encode(p, force_idr, out),
            // A worker takes its pictures from where its encoder reads them (`Pictures`
            // follows `RungCodec` in `RungWorker::start`).
            _ => unreachable!("a rung's pictures come from where its encoder reads them"),
        }
    }

    fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        match self {
            RungCodec::Host(e) => e.flush(out),
            RungCodec::Device(e) => e.flush(out),
        }
    }
}

/// One live rung in `rungs_rungs_by_backend`, for as long as it is held.
struct BackendGauge(&'static str);

impl BackendGauge {
    fn new(backend: &'static str) -> Self {
        METRICS.rungs_by_backend.with_label_values(&[backend]).inc();
        Self(backend)
    }
}

impl Drop for BackendGauge {
    fn drop(&mut self) {
        METRICS.rungs_by_backend.with_label_values(&[self.0]).dec();
    }
}

impl RungWorker {
    /// `yields`: this encoder runs at a lower priority (offline, every rung
    /// but the largest).
    pub fn start(
        channel: &str,
        index: usize,
        rung: &Rung,
        encoder: RungEncoder,
        cfg: &PipelineConfig,
        out: Sender<Output>,
        yields: bool,
    ) -> Result<Self, RungError> {
        let RungEncoder {
            encoder,
            backend,
            meter,
        } = encoder;
        let gauge = BackendGauge::new(backend);
        let check = if cfg.quality_every_gops > 0 {
            let decoder = VideoDecoder::new(encoder.params(), 1).map_err(RungError::Checker)?;
            let decoded = Check::decoded_pool(rung.size)?;
            let live = cfg.pace == Pace::Live;
            Some(
                Check::start(channel, &rung.name, decoder, decoded, meter, live)
                    .map_err(RungError::Spawn)?,
            )
        } else {
            None
        };
        let queue = cfg.queue_frames.max(2);
        let pictures = match &encoder {
            // Queue + the frame being encoded + the one being scaled + scratch.
            RungCodec::Host(_) => Pictures::Host(FramePool::new(rung.size, queue + 3)?),
            // As many, bounded by the queue the same way; NVENC's own holds come on top.
            RungCodec::Device(e) => Pictures::Device(e.frames().clone()),
        };
        let refs = FramePool::new(rung.size, REFERENCES)?;
        let _ = out.send(Output::Config {
            rung: index,
            params: encoder.params().clone(),
        });
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let mut thread = EncoderThread {
            channel: channel.to_string(),
            name: rung.name.clone(),
            index,
            encoder,
            backend,
            _gauge: gauge,
            check,
            every_gops: u64::from(cfg.quality_every_gops),
            gops: 0,
            sampling: false,
            refs,
            download: None,
            times: VecDeque::with_capacity(MAX_TIMES),
            packets: Vec::new(),
            out,
            output_lost: false,
            summary: RungSummary {
                backend,
                ..RungSummary::default()
            },
            gop: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("enc-{}", rung.name))
            .spawn(move || {
                if yields {
                    super::nice::lower_priority();
                }
                thread.run(rx)
            })
            .map_err(RungError::Spawn)?;
        Ok(RungWorker {
            channel: channel.to_string(),
            name: rung.name.clone(),
            pictures,
            tx: Some(tx),
            thread: Some(handle),
            admitted: true,
            admit_depth: ADMIT_DEPTH.max(queue / 3),
            scratch: None,
        })
    }

    /// Decides whether this rung takes the GOP that starts now.
    pub fn admit_gop(&mut self, live: bool) {
        let depth = self.tx.as_ref().map_or(0, |t| t.len());
        METRICS
            .rung_queue_frames
            .with_label_values(&[&self.channel, &self.name])
            .set(depth as i64);
        let admit = !live || depth <= self.admit_depth;
        if !admit && self.admitted {
            tracing::warn!(channel = %self.channel, rung = %self.name, queued = depth,
                "encoder behind; dropping a GOP");
        }
        if !admit {
            METRICS
                .rung_dropped_gops
                .with_label_values(&[&self.channel, &self.name])
                .inc();
        }
        self.admitted = admit;
    }

    /// A picture for the scaler to fill for this rung.
    pub fn picture(&mut self) -> Result<RungPicture, RungError> {
        if !self.admitted
            && let Some(p) = self.scratch.take()
        {
            return Ok(p);
        }
        Ok(match &self.pictures {
            Pictures::Host(pool) => RungPicture::Host(pool.get()?),
            Pictures::Device(frames) => RungPicture::Device(frames.picture()?),
        })
    }

    /// Queues a scaled picture, or keeps it as scratch when the GOP was dropped.
    pub fn send(&mut self, job: EncJob) {
        if !self.admitted {
            self.scratch = Some(job.picture);
            return;
        }
        if let Some(tx) = &self.tx {
            // Blocking is bounded: a GOP is only admitted to a nearly empty queue.
            let _ = tx.send(job);
        }
    }

    /// Tells the encoder that no more frames come: it starts flushing.
    pub fn end_input(&mut self) {
        self.tx = None;
    }

    /// Flushes the encoder and waits for its last packets to be sent. End
    /// every rung's input first, so that they all flush at once.
    pub fn finish(mut self) {
        self.end_input();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct EncoderThread {
    channel: String,
    name: String,
    index: usize,
    encoder: RungCodec,
    backend: &'static str,
    /// Counts this rung in `rungs_rungs_by_backend` until the thread ends.
    _gauge: BackendGauge,
    /// Decodes and scores this rung's quality samples.
    check: Option<Check>,
    every_gops: u64,
    /// GOPs this rung has started.
    gops: u64,
    /// The GOP going into the encoder is a sampled one.
    sampling: bool,
    /// Copies of sampled input frames, until the check has scored them.
    refs: FramePool,
    /// Brings a sampled picture of a rung fed from device memory to the host: made for
    /// the first one.
    download: Option<PictureDownload>,
    /// (pts, arrival of its source packet) of frames inside the encoder.
    times: VecDeque<(i64, Arrival)>,
    packets: Vec<EncodedPacket>,
    out: Sender<Output>,
    /// A packet found the live output queue full: the rest of its GOP is
    /// dropped (a decoder cannot use it), up to the next keyframe.
    output_lost: bool,
    summary: RungSummary,
    /// (pts of the GOP's IDR, encode seconds spent on it so far).
    gop: Option<(i64, f64)>,
}

impl EncoderThread {
    fn run(&mut self, rx: Receiver<EncJob>) {
        for job in rx {
            self.encode(job);
        }
        let started = Instant::now();
        let mut packets = std::mem::take(&mut self.packets);
        if let Err(e) = self.encoder.flush(&mut packets) {
            tracing::warn!(channel = %self.channel, rung = %self.name, error = %e, "encoder flush failed");
        }
        self.account(started, 0);
        self.emit(&mut packets);
        self.packets = packets;
        if let Some((psnr, ssim)) = self.check.as_mut().and_then(Check::finish) {
            self.summary.psnr = psnr.psnr();
            self.summary.ssim = ssim.ssim();
        }
        let _ = self.out.send(Output::Summary {
            rung: self.index,
            summary: self.summary.clone(),
        });
    }

    fn encode(&mut self, job: EncJob) {
        let pts = job.picture.pts();
        if self.times.len() >= MAX_TIMES {
            self.times.pop_front();
        }
        self.times.push_back((pts, job.arrival));
        self.sample(&job.picture, job.force_idr);
        if job.force_idr {
            if let Some((start, secs)) = self.gop.take() {
                let media = (pts - start) as f64 / f64::from(crate::media::TIMEBASE);
                if media > 0.0 {
                    METRICS
                        .rung_realtime_ratio
                        .with_label_values(&[&self.channel, &self.name])
                        .set(secs / media);
                }
            }
            self.gop = Some((pts, 0.0));
        }
        let started = Instant::now();
        let mut packets = std::mem::take(&mut self.packets);
        if let Err(e) = self
            .encoder
            .encode(job.picture, job.force_idr, &mut packets)
        {
            tracing::warn!(channel = %self.channel, rung = %self.name, error = %e, "frame did not encode");
        }
        self.account(started, 1);
        self.emit(&mut packets);
        self.packets = packets;
    }

    fn account(&mut self, started: Instant, frames: u64) {
        let secs = started.elapsed().as_secs_f64();
        if let Some(g) = &mut self.gop {
            g.1 += secs;
        }
        let labels = [self.channel.as_str(), self.name.as_str(), self.backend];
        METRICS
            .rung_encode_seconds
            .with_label_values(&labels)
            .inc_by(secs);
        METRICS
            .rung_frames
            .with_label_values(&labels)
            .inc_by(frames);
    }

    /// Keeps a copy of each input picture of a sampled GOP to compare with what
    /// the encoder made of it.
    fn sample(&mut self, picture: &RungPicture, gop_start: bool) {
        if gop_start || self.summary.frames == 0 {
            // From the second GOP on: the first is the encoder's warm-up
            // (first IDR, lookahead filling), the worst moment to add the
            // check's decoding and scoring to this thread.
            self.sampling = self.check.is_some()
                && (self.gops + self.every_gops - 1).is_multiple_of(self.every_gops);
            self.gops += 1;
        }
        self.summary.frames += 1;
        if !self.sampling {
            return;
        }
        let Ok(mut copy) = self.refs.get() else {
            // All references are still waiting for their decoded frames.
            return;
        };
        let copied = match picture {
            RungPicture::Host(frame) => {
                let planes = Plane::ALL.map(|p| (frame.plane(p), frame.stride(p)));
                copy.set_pts(frame.pts());
                copy.copy_from_planes(planes).is_ok()
            }
            RungPicture::Device(p) => self
                .download
                .get_or_insert_with(|| PictureDownload::new(p.size()))
                .copy(p, &mut copy)
                .map_err(|e| {
                    tracing::debug!(channel = %self.channel, rung = %self.name, error = %e,
                        "sampled picture not copied to the host; not scored");
                })
                .is_ok(),
        };
        if copied && let Some(check) = &mut self.check {
            check.reference(copy);
        }
    }

    fn emit(&mut self, packets: &mut Vec<EncodedPacket>) {
        for p in packets.drain(..) {
            // Packets only come out of frames that went in.
            let Some(arrival) = self.times_of(p.pts) else {
                continue;
            };
            METRICS
                .transcode_latency
                .with_label_values(&[&self.channel, &self.name])
                .observe(arrival.at.elapsed().as_secs_f64());
            self.summary.bytes += p.data.len() as u64;
            let packet = Packet {
                track: TrackKind::Video,
                dts: p.dts,
                pts: p.pts,
                keyframe: p.keyframe,
                data: p.data,
            };
            if let Some(check) = &mut self.check {
                check.packet(&packet);
            }
            if self.output_lost && !packet.keyframe {
                continue;
            }
            let out = Output::Packet {
                rung: self.index,
                packet,
                arrival,
            };
            self.output_lost = match self.out.try_send(out) {
                Ok(()) => false,
                Err(TrySendError::Full(_)) => {
                    if !self.output_lost {
                        tracing::warn!(channel = %self.channel, rung = %self.name,
                            "channel thread behind; this rung's packets dropped to its next keyframe");
                        METRICS
                            .rung_dropped_gops
                            .with_label_values(&[&self.channel, &self.name])
                            .inc();
                    }
                    true
                }
                // The pipeline is being dropped: nobody reads on.
                Err(TrySendError::Disconnected(_)) => false,
            };
        }
    }

    /// The arrival of the frame with `pts`. An encoder never makes a pts
    /// it was not given; should one be missing anyway (the table is
    /// bounded), the oldest frame's is the nearest.
    fn times_of(&mut self, pts: i64) -> Option<Arrival> {
        let i = self
            .times
            .iter()
            .position(|t| t.0 == pts)
            .unwrap_or_default();
        // Output is in decode order; with B-frames an earlier pts can still
        // be inside the encoder, so only this entry goes.
        self.times.remove(i).map(|(_, arrival)| arrival)
    }
}
