//! `rungs transcode`: a file through the live pipeline as fast as it goes,
//! written as an HLS VOD ladder, with a summary of what each rung got.
//!
//! A file is a channel whose publisher is the file and whose store is a
//! directory: it drives the same [`ChannelCore`] (and through it the same
//! packager and pipeline-to-packager path) as a live channel, with media
//! time as its clock, paced by the slowest stage instead of the wall clock,
//! so a figure measured here is what the live node can sustain.

use super::core::{ChannelCore, Input, Joined, Output, Timing};
use super::transcoding::Transcoding;
use crate::media::{Arrival, IngestEvent, Packet, TIMEBASE, TrackKind};
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::vod::{VodError, VodSummary, VodWriter};
use crate::package::{PackageConfig, plan};
use crate::registry::TrackUse;
use crate::transcode::ladder::Rung;
use crate::transcode::pipeline::{Output as RungOutput, Pace, PipelineConfig, RungSummary};
use crate::transcode::source::{FileSource, SourceError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Vod(#[from] VodError),
    #[error("starting the pipeline: {0}")]
    Pipeline(std::io::Error),
}

/// What `--json` prints: one object.
#[derive(Debug, Serialize)]
pub struct Report {
    pub input: String,
    pub output: String,
    pub ladder: String,
    /// Source video frames read.
    pub frames: u64,
    /// Wall seconds for the whole run.
    pub seconds: f64,
    /// `frames / seconds`.
    pub fps: f64,
    /// The backend of each stage, e.g. `GPU 0: decode nvdec, scale cuda,
    /// quality cuda, encode x264 x4 (the GPU has no NVENC)`.
    pub backends: Option<String>,
    /// Source first, rungs top down, audio last.
    pub renditions: Vec<RenditionReport>,
}

#[derive(Debug, Serialize)]
pub struct RenditionReport {
    pub name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Init and segment bytes written.
    pub bytes: u64,
    pub segments: usize,
    pub duration_s: f64,
    /// Achieved bitrate over the whole rendition.
    pub bitrate_bps: u64,
    /// Target bitrate of a transcoded rung.
    pub target_bitrate_bps: Option<u64>,
    /// Mean PSNR of the sampled frames against the scaled input (FFmpeg's
    /// `average`: from the mean MSE over Y, U and V).
    pub psnr_db: Option<f64>,
    /// Mean SSIM (`All`) of the sampled frames.
    pub ssim: Option<f64>,
    pub frames_encoded: Option<u64>,
    /// The encode backend of a transcoded rung (`x264`, `nvenc`).
    pub encoder: Option<&'static str>,
}

pub struct Options<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub pipeline: PipelineConfig,
    pub package: PackageConfig,
    /// Redraw a progress line on stderr.
    pub progress: bool,
    /// Timed metadata to put into the output (emsg boxes), by media time.
    pub metadata: Vec<TimedEvent>,
}

/// One line of a `--metadata` sidecar: `{"at": seconds, "text": "..."}` or
/// `{"at": seconds, "hex": "c0ffee"}`; `at` counts from the file's first
/// video frame.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarLine {
    pub at: f64,
    pub text: Option<String>,
    pub hex: Option<String>,
    pub duration: Option<f64>,
}

/// A timed event of a sidecar file.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedEvent {
    pub at_s: f64,
    pub payload: Payload,
    pub duration: Option<Duration>,
}

/// Parses a sidecar of JSON lines (blank lines and `#` comments skipped),
/// sorted by time.
pub fn parse_sidecar(text: &str) -> Result<Vec<TimedEvent>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let l: SidecarLine =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !l.at.is_finite() || l.at < 0.0 {
            return Err(format!("line {}: `at` must be seconds >= 0", n + 1));
        }
        let payload = match (l.text, l.hex) {
            (Some(t), None) => Payload::Text(t),
            (None, Some(h)) => Payload::Bytes(hex(&h).ok_or(format!("line {}: bad hex", n + 1))?),
            _ => return Err(format!("line {}: give one of `text` or `hex`", n + 1)),
        };
        if payload.len() > crate::package::metadata::MAX_PAYLOAD {
            return Err(format!("line {}: more than 1024 bytes", n + 1));
        }
        let duration = match l.duration {
            Some(d) if d.is_finite() && d >= 0.0 => Some(Duration::from_secs_f64(d)),
            Some(_) => return Err(format!("line {}: bad duration", n + 1)),
            None => None,
        };
        out.push(TimedEvent {
            at_s: l.at,
            payload,
            duration,
        });
    }
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(out)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_start_matches("0x");
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Ladder state gathered from the pipeline's outputs.
#[derive(Default)]
struct Ladder {
    plan: Vec<Rung>,
    summaries: BTreeMap<usize, RungSummary>,
    /// The last backend plan the pipeline reported.
    backends: Option<String>,
}

impl Ladder {
    /// Notes what the report needs; hands on what the packager needs.
    fn note(&mut self, out: RungOutput) -> Option<RungOutput> {
        match out {
            RungOutput::Plan(rungs) => {
                self.plan = rungs.clone();
                Some(RungOutput::Plan(rungs))
            }
            RungOutput::Summary { rung, summary } => {
                self.summaries.insert(rung, summary);
                None
            }
            RungOutput::Backends(plan) => {
                self.backends = Some(plan.to_string());
                None
            }
            other => Some(other),
        }
    }
}

/// The one publish session of a file.
const SESSION: u64 = 1;

/// A file has no arrival times: a packet arrives at its media time (its
/// decode time since the first video packet's), counted from a fixed start,
/// and never before the newest packet read.
struct MediaClock {
    t0: Instant,
    /// Video dts of media time zero.
    origin: Option<i64>,
    /// Media time of the newest source packet, 90 kHz ticks.
    latest: i64,
}

impl MediaClock {
    fn new() -> Self {
        MediaClock {
            t0: Instant::now(),
            origin: None,
            latest: 0,
        }
    }

    /// The arrival of a source event read now.
    fn arrive(&mut self, event: &IngestEvent) -> Arrival {
        if let IngestEvent::Packet(p) = event {
            let t = self.media_time(p);
            self.latest = self.latest.max(t);
        }
        self.at(self.latest)
    }

    fn media_time(&mut self, p: &Packet) -> i64 {
        if self.origin.is_none() && p.track == TrackKind::Video {
            self.origin = Some(p.dts);
        }
        p.dts.saturating_sub(self.origin.unwrap_or(p.dts))
    }

    /// The wall clock only names the stream: VOD playlists carry no
    /// EXT-X-PROGRAM-DATE-TIME.
    fn at(&self, ticks: i64) -> Arrival {
        let d = plan::duration(ticks.max(0).unsigned_abs(), TIMEBASE);
        Arrival {
            wall: UNIX_EPOCH + d,
            at: self.t0 + d,
        }
    }
}

/// A channel with a file for its publisher and a VOD directory for its
/// store.
struct VodChannel {
    core: ChannelCore,
    transcoding: Transcoding,
    writer: VodWriter,
    clock: MediaClock,
    ladder: Ladder,
    /// The core's answer to the last [`Input::Metadata`].
    placed: Option<Result<Placement, MetadataRefusal>>,
}

impl VodChannel {
    /// `template`: the pipeline to transcode with; `None` when the caller
    /// hands rung outputs in itself.
    fn new(
        output: &Path,
        package: PackageConfig,
        template: Option<PipelineConfig>,
    ) -> Result<Self, OfflineError> {
        let writer = VodWriter::new(output, &package)?;
        let transcoding = Transcoding::new("transcode", template);
        // Nothing waits for a publisher to come back, and nobody reads the
        // playlists before the end.
        let timing = Timing {
            grace: Duration::ZERO,
            linger: Duration::ZERO,
        };
        let clock = MediaClock::new();
        let file = Joined {
            session: SESSION,
            protocol: "file",
            at: clock.t0,
        };
        let core = ChannelCore::new(
            "transcode",
            package,
            timing,
            transcoding.enabled(),
            TrackUse::default(),
            file,
        );
        Ok(VodChannel {
            core,
            transcoding,
            writer,
            clock,
            ladder: Ladder::default(),
            placed: None,
        })
    }

    /// One source event, in file order, then whatever the pipeline made.
    fn source(&mut self, event: IngestEvent) -> Result<(), OfflineError> {
        let arrival = self.clock.arrive(&event);
        self.input(Input::Media {
            session: SESSION,
            event,
            arrival,
        })?;
        let outputs = self.transcoding.outputs();
        for out in outputs.try_iter() {
            self.rung(out)?;
        }
        Ok(())
    }

    /// One output of the pipeline.
    fn rung(&mut self, out: RungOutput) -> Result<(), OfflineError> {
        match self.ladder.note(out) {
            Some(out) => self.input(Input::Rung(out)),
            None => Ok(()),
        }
    }

    /// Timed metadata at the source's next part; `NotLive` until the
    /// packager has started the stream.
    fn metadata(&mut self, ev: &TimedEvent) -> Result<Placement, MetadataRefusal> {
        self.placed = None;
        let input = Input::Metadata {
            payload: ev.payload.clone(),
            duration: ev.duration,
        };
        if self.input(input).is_err() {
            return Err(MetadataRefusal::NotLive);
        }
        self.placed.take().unwrap_or(Err(MetadataRefusal::NotLive))
    }

    /// Ends the stream and writes the playlists.
    fn finish(mut self) -> Result<(VodSummary, Ladder), OfflineError> {
        self.input(Input::Finish)?;
        Ok((self.writer.finish()?, self.ladder))
    }

    fn input(&mut self, input: Input) -> Result<(), OfflineError> {
        let now = self.clock.at(self.clock.latest).at;
        self.core.handle(now, input);
        while let Some(out) = self.core.poll_output() {
            let ladder = &mut self.ladder;
            let rest = self
                .transcoding
                .carry(&mut self.core, now, out, &mut |o| ladder.note(o))
                .map_err(OfflineError::Pipeline)?;
            match rest {
                Some(Output::Store(updates)) => self.writer.apply(updates)?,
                Some(Output::Metadata(answer)) => self.placed = Some(answer),
                _ => {}
            }
        }
        Ok(())
    }
}

pub fn run(opts: Options<'_>) -> Result<Report, OfflineError> {
    let started = Instant::now();
    let mut source = FileSource::open(opts.input)?;
    let mut cfg = opts.pipeline;
    cfg.pace = Pace::Offline;
    cfg.frame_rate = source.frame_rate;
    let ladder_name = cfg.ladder.clone();
    let duration = source.duration_s;
    let mut channel = VodChannel::new(opts.output, opts.package, Some(cfg))?;
    let mut frames = 0u64;
    let mut last_draw = Instant::now();
    let mut position = 0.0;
    let mut first_pts = None;
    let mut next_event = 0;

    while let Some(event) = source.next_event()? {
        if let IngestEvent::Packet(p) = &event
            && p.track == TrackKind::Video
        {
            frames += 1;
            position = p.pts as f64 / f64::from(TIMEBASE);
            // Sidecar events whose time this frame reaches go in before it:
            // the packager places them where the source has got to.
            let since = (p.pts - *first_pts.get_or_insert(p.pts)) as f64 / f64::from(TIMEBASE);
            while let Some(ev) = opts.metadata.get(next_event).filter(|ev| ev.at_s <= since) {
                match channel.metadata(ev) {
                    // Still measuring the frame rate: retry at the next frame.
                    Err(MetadataRefusal::NotLive) if frames < 1000 => break,
                    Err(e) => tracing::warn!(at = ev.at_s, error = %e, "sidecar event left out"),
                    Ok(_) => {}
                }
                next_event += 1;
            }
        }
        channel.source(event)?;
        if opts.progress && last_draw.elapsed() > Duration::from_millis(500) {
            last_draw = Instant::now();
            draw_progress(frames, started.elapsed(), position, duration);
        }
    }
    let (vod, ladder) = channel.finish()?;
    if opts.progress {
        draw_progress(frames, started.elapsed(), position, duration);
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let renditions = vod
        .renditions
        .iter()
        .map(|r| {
            let rung = ladder.plan.iter().position(|p| p.name == r.name);
            let summary = rung.and_then(|i| ladder.summaries.get(&i));
            let planned = rung.map(|i| &ladder.plan[i]);
            let (width, height) = match (r.name.as_str(), planned) {
                (_, Some(p)) => (Some(p.size.width), Some(p.size.height)),
                ("source", None) => (Some(source.video.width), Some(source.video.height)),
                _ => (None, None),
            };
            let secs = r.duration.as_secs_f64();
            RenditionReport {
                name: r.name.clone(),
                width,
                height,
                bytes: r.bytes,
                segments: r.segments,
                duration_s: secs,
                bitrate_bps: if secs > 0.0 {
                    (r.bytes as f64 * 8.0 / secs) as u64
                } else {
                    0
                },
                target_bitrate_bps: planned.map(|p| p.bitrate_bps),
                psnr_db: summary.and_then(|s| s.psnr.as_ref()).map(|p| p.average),
                ssim: summary.and_then(|s| s.ssim.as_ref()).map(|s| s.all),
                frames_encoded: summary.map(|s| s.frames),
                encoder: summary.map(|s| s.backend),
            }
        })
        .collect();
    Ok(Report {
        input: opts.input.display().to_string(),
        output: opts.output.display().to_string(),
        ladder: ladder_name,
        frames,
        seconds,
        fps: if seconds > 0.0 {
            frames as f64 / seconds
        } else {
            0.0
        },
        backends: ladder.backends,
        renditions,
    })
}

fn draw_progress(frames: u64, elapsed: Duration, position: f64, duration: Option<f64>) {
    let fps = frames as f64 / elapsed.as_secs_f64().max(1e-3);
    let of = duration.map_or(String::new(), |d| format!(" / {d:.1}"));
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{frames} frames  {fps:6.1} fps  {position:.1}{of} s  ({:.1} s)   ",
        elapsed.as_secs_f64()
    );
    let _ = err.flush();
}

#[cfg(test)]
mod tests;
