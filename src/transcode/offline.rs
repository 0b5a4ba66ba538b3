//! `rungs transcode`: a file through the live pipeline as fast as it goes,
//! written as an HLS VOD ladder, with a summary of what each rung got.
//!
//! Uses the same pipeline and packager as a live channel, paced by the
//! slowest stage instead of the clock, so a figure measured here is what the
//! live node can sustain.

use crate::media::{Arrival, IngestEvent, TrackKind};
use crate::package::vod::{VodError, VodWriter};
use crate::package::{PackageConfig, RungEvent};
use crate::transcode::ladder::Rung;
use crate::transcode::pipeline::{Output, Pace, Pipeline, PipelineConfig, RungSummary, rung_decls};
use crate::transcode::source::{FileSource, SourceError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

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
    fn apply(&mut self, writer: &mut VodWriter, out: Output) -> Result<(), VodError> {
        match out {
            Output::Plan(rungs) => {
                self.plan = rungs.clone();
                writer.set_rungs(rung_decls(rungs))
            }
            Output::Config { rung, params } => writer.push_rung(rung, RungEvent::Config(params)),
            Output::Packet { rung, packet, .. } => {
                writer.push_rung(rung, RungEvent::Packet(packet))
            }
            Output::Summary { rung, summary } => {
                self.summaries.insert(rung, summary);
                Ok(())
            }
            Output::Backends(plan) => {
                self.backends = Some(plan.to_string());
                Ok(())
            }
        }
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
    let mut writer = VodWriter::new(opts.output, opts.package)?;
    let mut pipeline = Pipeline::start("transcode", cfg).map_err(OfflineError::Pipeline)?;
    let mut ladder = Ladder::default();
    let mut frames = 0u64;
    let mut last_draw = Instant::now();
    let mut position = 0.0;

    while let Some(event) = source.next_event()? {
        match &event {
            IngestEvent::VideoConfig(p) => pipeline.push_config(p.clone()),
            IngestEvent::Packet(p) if p.track == TrackKind::Video => {
                frames += 1;
                position = p.pts as f64 / f64::from(crate::media::TIMEBASE);
                // A file has no socket: a frame arrives when it is read.
                pipeline.push_packet(p.clone(), Arrival::now());
            }
            _ => {}
        }
        writer.push(event)?;
        for out in pipeline.outputs().try_iter() {
            ladder.apply(&mut writer, out)?;
        }
        if opts.progress && last_draw.elapsed() > Duration::from_millis(500) {
            last_draw = Instant::now();
            draw_progress(frames, started.elapsed(), position, duration);
        }
    }
    pipeline.finish();
    for out in pipeline.outputs().try_iter() {
        ladder.apply(&mut writer, out)?;
    }
    let vod = writer.finish()?;
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
mod tests {
    use super::*;
    use crate::transcode::encode::FrameRate;
    use crate::transcode::ffmpeg_cli;
    use crate::transcode::ladder::{Ladders, STANDARD};
    use crate::transcode::pipeline::EncoderTuning;
    use std::process::Command;
    use std::sync::Arc;

    fn ffprobe_frames(playlist: &Path) -> u64 {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=nb_read_frames,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(playlist)
            .output()
            .expect("ffprobe runs (apt-get install ffmpeg)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.trim().split(',').collect();
        fields
            .last()
            .and_then(|n| n.parse().ok())
            .expect("frame count")
    }

    #[test]
    fn a_file_becomes_a_vod_ladder_ffprobe_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.mp4");
        ffmpeg_cli::run(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-c:a",
            "aac",
            input.to_str().expect("utf-8"),
        ]);
        let output = dir.path().join("out");
        let report = run(Options {
            input: &input,
            output: &output,
            pipeline: PipelineConfig {
                ladder: STANDARD.into(),
                ladders: Arc::new(Ladders::default()),
                pace: Pace::Offline,
                encoder: EncoderTuning {
                    preset: "ultrafast".into(),
                    low_latency: false,
                    threads: 1,
                },
                decoder_threads: 1,
                queue_frames: 8,
                quality_every_gops: 2,
                frame_rate: Some(FrameRate::new(30, 1)),
                gpu: None,
            },
            package: PackageConfig::default(),
            progress: false,
        })
        .expect("transcode");
        assert_eq!(report.frames, 120);
        let names: Vec<&str> = report.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["source", "480p", "360p", "160p", "audio"]);
        assert!(output.join("master.m3u8").exists());
        for r in &report.renditions {
            assert!(r.bytes > 0 && r.segments >= 2, "{r:?}");
            assert!((r.duration_s - 4.0).abs() < 0.2, "{r:?}");
            if r.name == "audio" {
                continue;
            }
            let frames = ffprobe_frames(&output.join(&r.name).join("index.m3u8"));
            assert_eq!(frames, 120, "{}: frames ffprobe decodes", r.name);
            if r.name != "source" {
                assert!(r.psnr_db.is_some_and(|p| p > 30.0), "{r:?}");
                assert!(r.ssim.is_some_and(|s| s > 0.9), "{r:?}");
                let target = r.target_bitrate_bps.expect("target") as f64;
                let got = r.bitrate_bps as f64;
                assert!(got < target * 1.5, "{}: {got} b/s against {target}", r.name);
            }
        }
    }
}
