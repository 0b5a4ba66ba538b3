//! `rungs transcode` against the FFmpeg CLI making the same ladder, per
//! content kind.
//!
//! `cargo bench --bench ladder` generates one input per content kind
//! (1080p30, 10 s, H.264 + AAC in MP4, a keyframe every 60 frames) and then,
//! per kind, for a few rounds, runs the release `rungs transcode` and one
//! FFmpeg CLI command that makes the same ladder, alternating which goes
//! first. Both get the `standard` ladder for 1080p: 720p 3000, 480p 1200,
//! 360p 700 and 160p 250 kb/s, libx264 `veryfast`, VBV maxrate = bitrate and
//! bufsize = 2 x bitrate, IDR every 60 frames (`-g 60 -keyint_min 60
//! -sc_threshold 0`), and the source copied. The CLI keeps its own defaults
//! otherwise: `split` + `scale` (bicubic), x264 and decoder threads chosen
//! from the core count. rungs runs with its default config (or
//! `RUNGS_BENCH_CONFIG`), so its sampled quality check (each rung's output
//! decoded again for PSNR/SSIM) is on and is paid for.
//!
//! Printed per run: wall seconds, fps (input frames / wall seconds), the
//! CPU seconds (user + sys) of the process, and the CPU seconds that the rest
//! of the machine used meanwhile (other engineers' builds: a run with a lot of
//! it is not a clean measurement). Then per kind the medians, the fps ratio,
//! and per rung the bitrate of both and the PSNR (`average`) and SSIM (`All`)
//! of both against the source scaled to the rung's size with
//! `flags=lanczos`, and a goal line; at the end one summary line per kind.
//! The goal, per kind: fps ratio >= 1.30 and no rung of rungs more than
//! 0.10 dB PSNR below the CLI's.
//!
//! The content kinds (bench/ladder/content.rs has their graphs and why):
//! - `pattern`: `testsrc2` moves (a sweeping sector, sliding boxes, a
//!   scrolling colour band) and has the sharp edges and text that separate a
//!   good downscaler from a bad one; temporal grain (`noise=alls=8:allf=t+u`)
//!   gives every frame a changing texture, so x264 cannot skip static blocks.
//!   Easy to predict otherwise: too easy a picture to tune an encoder on.
//! - `detail`: a slow zoom into a fractal (detail from a few pixels to the
//!   whole frame), a hard cut, a slow eased pan over a still; light sensor
//!   noise.
//! - `grain`: heavy film grain over continuous motion: a faster fractal zoom,
//!   a hard cut, drifting colour gradients where grain on flat areas is all
//!   there is to code.
//!
//! The cuts of `detail` and `grain` land mid-GOP (frame 165 of 300). Each source is
//! encoded like a 1080p30 contribution stream (6 Mb/s); generating one takes
//! about a minute on two cores, once (kept with its recipe).
//!
//! Both sides use x264's own tuning of the preset (`rungs transcode`'s default;
//! the live channels' low-latency tuning is `--low-latency`).
//!
//! Env: RUNGS_BENCH_CONTENT (comma-separated kinds, default
//! `pattern,detail,grain`), RUNGS_BENCH_SECONDS (input length, default
//! 10), RUNGS_BENCH_ROUNDS (default 3, per kind), RUNGS_BENCH_DIR (default
//! target/bench-ladder; the inputs are kept there between runs, the outputs
//! under one folder per kind), RUNGS_BENCH_CONFIG (a rungs config file),
//! RUNGS_BENCH_BIN (another rungs binary, to compare builds),
//! RUNGS_BENCH_ONLY (`rungs` or `ffmpeg`).

#[path = "ladder/content.rs"]
mod content;
#[path = "common/env.rs"]
mod env;
// Shared by three benches; `psnr` is the GPU bench's.
#[allow(dead_code)]
#[path = "common/ladder_bench.rs"]
mod ladder_bench;

use content::Content;
use env::env_parse;
use ladder_bench::{
    LADDER, SOURCE_KBPS, children_cpu, count_frames, ffmpeg_command, kbps_of, loadavg,
    machine_busy, make_input, make_input_of, median, psnr_ssim, rungs_command,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The goal: rungs at least this many times the CLI's fps...
const GOAL_RATIO: f64 = 1.3;
/// ...with no rung's PSNR more than this many dB below the CLI's.
const GOAL_PSNR_DB: f64 = -0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Rungs,
    Ffmpeg,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Rungs => "rungs",
            Tool::Ffmpeg => "ffmpeg",
        }
    }
}

struct Run {
    tool: Tool,
    wall: f64,
    cpu: f64,
    /// CPU seconds the rest of the machine used during the run.
    other_cpu: f64,
    load: String,
    fps: f64,
}

/// What the bench was started with, the same for every content kind.
struct Setup {
    dir: PathBuf,
    seconds: u32,
    rounds: usize,
    config: Option<PathBuf>,
    bin: PathBuf,
    tools: Vec<Tool>,
}

/// One kind's result for the summary: fps ratio and worst PSNR difference
/// (rungs - CLI), where both tools ran.
struct Outcome {
    ratio: f64,
    worst_db: f64,
}

impl Outcome {
    fn met(&self) -> bool {
        self.ratio >= GOAL_RATIO && self.worst_db >= GOAL_PSNR_DB
    }
}

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("RUNGS_BENCH_DIR")
        .map_or_else(|| root.join("target/bench-ladder"), PathBuf::from);
    let only = std::env::var("RUNGS_BENCH_ONLY").ok();
    let kinds = std::env::var("RUNGS_BENCH_CONTENT")
        .map_or_else(
            |_| Ok(content::CONTENTS.iter().collect()),
            |list| content::select(&list),
        )
        .unwrap_or_else(|e| panic!("RUNGS_BENCH_CONTENT: {e}"));
    let setup = Setup {
        seconds: env_parse("RUNGS_BENCH_SECONDS").unwrap_or(10).max(1),
        rounds: env_parse("RUNGS_BENCH_ROUNDS").unwrap_or(3).max(1),
        config: std::env::var_os("RUNGS_BENCH_CONFIG").map(PathBuf::from),
        bin: std::env::var_os("RUNGS_BENCH_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rungs")), PathBuf::from),
        tools: [Tool::Rungs, Tool::Ffmpeg]
            .into_iter()
            .filter(|t| only.as_deref().is_none_or(|o| o == t.name()))
            .collect(),
        dir,
    };
    std::fs::create_dir_all(&setup.dir).expect("create the bench directory");

    println!(
        "rungs: {}{}",
        setup.bin.display(),
        setup
            .config
            .as_ref()
            .map_or(" (default config)".into(), |c| format!(
                " --config {}",
                c.display()
            ))
    );
    println!(
        "machine: {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let mut outcomes = Vec::new();
    for kind in kinds {
        let outcome = bench_kind(&setup, kind);
        outcomes.push((kind.name, outcome));
    }
    if setup.tools.len() < 2 {
        return;
    }
    println!(
        "\nsummary (goal per kind: fps ratio >= {GOAL_RATIO:.2}, no rung more than {:.2} dB PSNR below the CLI's)",
        -GOAL_PSNR_DB
    );
    for (name, o) in &outcomes {
        let o = o.as_ref().expect("both tools ran");
        println!(
            "{name:<13}  fps ratio {:.2}  worst rung {:+.3} dB  {}",
            o.ratio,
            o.worst_db,
            if o.met() { "met" } else { "NOT met" }
        );
    }
}

/// Generates (or reuses) `kind`'s input, runs the rounds and prints the
/// kind's tables; `None` when only one tool ran.
fn bench_kind(setup: &Setup, kind: &Content) -> Option<Outcome> {
    let note = format!(
        "generating the {} input (about a minute on two cores)...",
        kind.name
    );
    // The pattern keeps the file and recipe names it has always had.
    let input = if kind.name == "pattern" {
        make_input(&setup.dir, setup.seconds, "input.recipe", &note)
    } else {
        make_input_of(
            &setup.dir,
            &format!("input-{}", kind.name),
            &kind.graph(setup.seconds),
            setup.seconds,
            &format!("input-{}.recipe", kind.name),
            &note,
        )
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let frames = count_frames(&input).unwrap_or_else(|e| panic!("{e}"));
    println!("\n=== content {}: {}", kind.name, kind.about);
    println!(
        "input: {} ({frames} frames, {SOURCE_KBPS} kb/s, GOP 60)",
        input.display()
    );

    let out = setup.dir.join(kind.name);
    let rungs_out = out.join("rungs-out");
    let cli_out = out.join("ffmpeg-out");
    let mut runs = Vec::new();
    let mut report: Option<Value> = None;
    println!(
        "{:>5}  {:<6}  {:>7}  {:>6}  {:>6}  {:>9}  load average",
        "round", "tool", "wall s", "fps", "CPU s", "others s"
    );
    for round in 0..setup.rounds {
        // ABBA: neither side always runs on a cache or a machine that the
        // other has just warmed or loaded.
        let mut order = setup.tools.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for tool in order {
            let mut cmd = match tool {
                Tool::Rungs => {
                    rungs_command(&setup.bin, &input, &rungs_out, setup.config.as_deref())
                }
                Tool::Ffmpeg => ffmpeg_command(&input, &cli_out, false),
            };
            let (run, stdout) = timed(tool, &mut cmd, frames);
            println!(
                "{:>5}  {:<6}  {:>7.2}  {:>6.1}  {:>6.2}  {:>9.2}  {}",
                round + 1,
                tool.name(),
                run.wall,
                run.fps,
                run.cpu,
                run.other_cpu,
                run.load
            );
            if tool == Tool::Rungs {
                report = Some(serde_json::from_slice(&stdout).expect("rungs --json prints JSON"));
            }
            runs.push(run);
        }
    }

    let median_of = |tool: Tool, f: fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.tool == tool).map(f).collect())
    };
    for &tool in &setup.tools {
        println!(
            "median {:<6}  {:>6.1} fps  {:>6.2} s  {:>6.2} CPU s  ({:.2} CPU s/frame x 1000)",
            tool.name(),
            median_of(tool, |r| r.fps),
            median_of(tool, |r| r.wall),
            median_of(tool, |r| r.cpu),
            median_of(tool, |r| r.cpu) / frames as f64 * 1000.0,
        );
    }
    if let Some(report) = &report {
        let sampled = report["renditions"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["psnr_db"].is_number()));
        println!(
            "rungs quality sampling (re-decode + PSNR/SSIM): {}",
            if sampled { "on" } else { "off" }
        );
    }
    if setup.tools.len() < 2 {
        return None;
    }
    let ratio = median_of(Tool::Rungs, |r| r.fps) / median_of(Tool::Ffmpeg, |r| r.fps);
    println!("fps ratio rungs / ffmpeg: {ratio:.2} (goal >= {GOAL_RATIO:.2})");
    let worst_db = quality_table(&input, setup.seconds, &rungs_out, &cli_out);
    let outcome = Outcome { ratio, worst_db };
    println!(
        "goal {} (fps ratio >= {GOAL_RATIO:.2}, no rung more than {:.2} dB PSNR worse): {}",
        kind.name,
        -GOAL_PSNR_DB,
        if outcome.met() { "met" } else { "NOT met" }
    );
    Some(outcome)
}

/// Prints each rung's bitrate, PSNR and SSIM for both tools (the last
/// round's outputs; x264 is deterministic here) and returns the worst PSNR
/// difference, rungs - CLI.
fn quality_table(input: &Path, seconds: u32, rungs_out: &Path, cli_out: &Path) -> f64 {
    println!(
        "PSNR average (dB) and SSIM All against the source scaled with flags=lanczos; kb/s from packet sizes"
    );
    println!(
        "{:<5}  {:>9}  {:>6}  {:>10}  {:>11}  {:>10}  {:>11}  {:>6}  {:>10}  {:>11}  {:>7}",
        "rung",
        "size",
        "target",
        "rungs kb/s",
        "ffmpeg kb/s",
        "rungs PSNR",
        "ffmpeg PSNR",
        "diff",
        "rungs SSIM",
        "ffmpeg SSIM",
        "diff"
    );
    let rungs_files: Vec<PathBuf> = LADDER
        .iter()
        .map(|r| rungs_out.join(r.0).join("index.m3u8"))
        .collect();
    let cli_files: Vec<PathBuf> = LADDER
        .iter()
        .map(|r| cli_out.join(format!("{}.mp4", r.0)))
        .collect();
    let rungs_q = psnr_ssim(input, &rungs_files);
    let cli_q = psnr_ssim(input, &cli_files);
    let mut worst: f64 = f64::INFINITY;
    for (i, (name, w, h, kbps)) in LADDER.iter().enumerate() {
        let ((rp, rs), (cp, cs)) = (rungs_q[i], cli_q[i]);
        worst = worst.min(rp - cp);
        println!(
            "{name:<5}  {:>9}  {kbps:>6}  {:>10.0}  {:>11.0}  {rp:>10.3}  {cp:>11.3}  {:>+6.3}  {rs:>10.5}  {cs:>11.5}  {:>+7.5}",
            format!("{w}x{h}"),
            kbps_of(&rungs_files[i], seconds).unwrap_or_else(|e| panic!("{e}")),
            kbps_of(&cli_files[i], seconds).unwrap_or_else(|e| panic!("{e}")),
            rp - cp,
            rs - cs,
        );
    }
    worst
}

/// Runs `cmd`, timing its wall clock and CPU, and that of everyone else.
fn timed(tool: Tool, cmd: &mut Command, frames: u64) -> (Run, Vec<u8>) {
    let load = loadavg();
    let (busy0, cpu0) = (machine_busy(), children_cpu());
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let wall = started.elapsed().as_secs_f64();
    let (busy1, cpu1) = (machine_busy(), children_cpu());
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpu = cpu1 - cpu0;
    let run = Run {
        tool,
        wall,
        cpu,
        other_cpu: (busy1 - busy0 - cpu).max(0.0),
        load,
        fps: frames as f64 / wall,
    };
    (run, out.stdout)
}
