//! One rung's quality check on a thread of its own: it decodes what the
//! rung's encoder made and scores the sampled frames against copies of
//! their inputs (PSNR and SSIM, on the GPU where the rung has the quality
//! kernels).
//!
//! Decoding and scoring a sampled GOP costs a CPU encoder thread about as
//! much again as encoding it; done inline, a sampled GOP made a 720p encoder
//! on a busy machine fall far enough behind that the next GOP was dropped
//! from the stream. Here the encoder only copies its sampled inputs and
//! hands its packets over. Live, nothing waits on the check: when its queue
//! is full the rest of that GOP goes unscored, and the thread runs at a
//! lower priority than the encoders. Offline, every sample is scored.

use crate::media::Packet;
use crate::metrics::METRICS;
use crate::transcode::decode::{DecodedFrame, VideoDecoder};
use crate::transcode::frame::{Frame, FramePool};
use crate::transcode::quality::cuda::GpuQuality;
use crate::transcode::quality::{self, FrameMse, PsnrMean, Ssim, SsimMean};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::VecDeque;
use std::thread::JoinHandle;

/// Inputs queued for the check: about four seconds of a 30 fps rung's
/// packets and sampled copies.
const QUEUE: usize = 256;
/// Pictures out of the check decoder.
const DECODED: usize = 8;

enum Input {
    /// A copy of a sampled input frame, with its pts.
    Reference(Frame),
    /// Every packet the encoder made, in decode order.
    Packet(Packet),
}

/// What the whole run scored, when the check ends.
pub(super) type Means = (PsnrMean, SsimMean);

/// The encoder thread's handle on its check.
pub(super) struct Check {
    tx: Option<Sender<Input>>,
    thread: Option<JoinHandle<Means>>,
    live: bool,
    /// A packet did not fit in the queue: the check decoder cannot use the
    /// rest of its GOP, so nothing is sent up to the next keyframe.
    lost: bool,
}

impl Check {
    /// Starts the check thread of one rung. `decoder` decodes the rung's
    /// output; `meter` scores on the GPU, `None` on the CPU.
    pub fn start(
        channel: &str,
        rung: &str,
        decoder: VideoDecoder,
        decoded: FramePool,
        meter: Option<GpuQuality>,
        live: bool,
    ) -> std::io::Result<Check> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let mut thread = CheckThread {
            channel: channel.to_string(),
            rung: rung.to_string(),
            decoder,
            pool: decoded,
            meter,
            references: VecDeque::new(),
            checking: false,
            decoded: Vec::new(),
            psnr: PsnrMean::default(),
            ssim: SsimMean::default(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("chk-{rung}"))
            .spawn(move || {
                super::nice::lower_priority();
                thread.run(rx)
            })?;
        Ok(Check {
            tx: Some(tx),
            thread: Some(handle),
            live,
            lost: false,
        })
    }

    /// Capacity for copies of sampled frames, shared with the check thread
    /// (each copy returns to the pool once scored or passed over).
    pub fn decoded_pool(
        size: crate::transcode::frame::Size,
    ) -> Result<FramePool, crate::transcode::frame::FrameError> {
        FramePool::new(size, DECODED)
    }

    /// A copy of a sampled input frame.
    pub fn reference(&mut self, frame: Frame) {
        // A reference that does not fit only leaves its frame unscored.
        let _ = self.send(Input::Reference(frame));
    }

    /// A packet of the rung's output.
    pub fn packet(&mut self, packet: &Packet) {
        if self.lost && !packet.keyframe {
            return;
        }
        self.lost = !self.send(Input::Packet(packet.clone()));
    }

    fn send(&mut self, input: Input) -> bool {
        let Some(tx) = &self.tx else { return false };
        if self.live {
            match tx.try_send(input) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => false,
            }
        } else {
            tx.send(input).is_ok()
        }
    }

    /// Ends the check once it has scored what it was given.
    pub fn finish(&mut self) -> Option<Means> {
        self.tx = None;
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.finish();
    }
}

struct CheckThread {
    channel: String,
    rung: String,
    decoder: VideoDecoder,
    pool: FramePool,
    meter: Option<GpuQuality>,
    /// Copies of sampled frames not yet matched with their decoded picture,
    /// in pts order.
    references: VecDeque<Frame>,
    /// The GOP coming in is a sampled one.
    checking: bool,
    decoded: Vec<DecodedFrame>,
    psnr: PsnrMean,
    ssim: SsimMean,
}

impl CheckThread {
    fn run(&mut self, rx: Receiver<Input>) -> Means {
        for input in rx {
            match input {
                Input::Reference(frame) => self.references.push_back(frame),
                Input::Packet(packet) => self.check(&packet),
            }
        }
        (
            std::mem::take(&mut self.psnr),
            std::mem::take(&mut self.ssim),
        )
    }

    /// Decodes one packet of the rung's output and scores its picture when
    /// it is a sample.
    fn check(&mut self, packet: &Packet) {
        let refs = &self.references;
        let is_sample = |pts: i64| refs.iter().any(|r| r.pts() == pts);
        if packet.keyframe {
            // A sampled GOP's IDR has its copy unless the queue was full;
            // then the GOP goes unchecked.
            self.checking = is_sample(packet.pts);
        }
        if !self.checking {
            return;
        }
        // Every reference picture goes through the decoder, sampled or not,
        // to keep the reference chain intact; a non-reference one only when
        // it is a sample (nothing else will ever read it).
        self.decoder.skip_non_reference(!is_sample(packet.pts));
        let mut decoded = std::mem::take(&mut self.decoded);
        // Only the samples are copied out of the decoder.
        let mut keep = is_sample;
        if self
            .decoder
            .decode_kept(packet, &self.pool, &mut decoded, &mut keep)
            .is_err()
        {
            decoded.clear();
        }
        for d in decoded.drain(..) {
            let pts = d.frame.pts();
            while self.references.front().is_some_and(|r| r.pts() < pts) {
                self.references.pop_front();
            }
            if let Some(r) = self.references.front()
                && r.pts() == pts
            {
                let on_gpu = self.meter.as_mut().and_then(|m| {
                    m.measure(&[(r, &d.frame)])
                        .map_err(|e| {
                            tracing::debug!(channel = %self.channel, rung = %self.rung, error = %e,
                                "GPU quality failed; measuring this frame on the CPU");
                        })
                        .ok()
                        .and_then(|v| v.into_iter().next())
                        .map(|(mse, ssim)| (mse, Some(ssim)))
                });
                let scored = on_gpu.or_else(|| {
                    let mse = FrameMse::new(r, &d.frame).ok()?;
                    Some((mse, quality::ssim(r, &d.frame).ok()))
                });
                if let Some((mse, ssim)) = scored {
                    self.score(mse, ssim);
                }
                self.references.pop_front();
            }
        }
        self.decoded = decoded;
    }

    fn score(&mut self, mse: FrameMse, ssim: Option<Ssim>) {
        let labels = [self.channel.as_str(), self.rung.as_str()];
        METRICS
            .rung_psnr
            .with_label_values(&labels)
            .set(mse.psnr().average);
        self.psnr.add(mse);
        if let Some(s) = ssim {
            METRICS.rung_ssim.with_label_values(&labels).set(s.all);
            self.ssim.add(s);
        }
    }
}
