//! `rungs transcode` against the FFmpeg CLI making the same ladder.
//!
//! `cargo bench --bench ladder` generates one input (1080p30, 10 s, H.264 +
//! AAC in MP4, a keyframe every 60 frames) and then, for a few rounds, runs
//! the release `rungs transcode` and one FFmpeg CLI command that makes the
//! same ladder, alternating which goes first. Both get the `standard` ladder
//! for 1080p: 720p 3000, 480p 1200, 360p 700 and 160p 250 kb/s, libx264
//! `veryfast`, VBV maxrate = bitrate and bufsize = 2 x bitrate, IDR every 60
//! frames (`-g 60 -keyint_min 60 -sc_threshold 0`), and the source copied.
//! The CLI keeps its own defaults otherwise: `split` + `scale` (bicubic),
//! x264 and decoder threads chosen from the core count. rungs runs with its
//! default config (or `RUNGS_BENCH_CONFIG`), so its sampled quality check
//! (each rung's output decoded again for PSNR/SSIM) is on and is paid for.
//!
//! Printed per run: wall seconds, fps (input frames / wall seconds), the
//! CPU seconds (user + sys) of the process, and the CPU seconds that the rest
//! of the machine used meanwhile (other engineers' builds: a run with a lot of
//! it is not a clean measurement). Then the medians, the fps ratio, and per
//! rung the bitrate of both and the PSNR (`average`) of both against the
//! source scaled to the rung's size with `flags=lanczos`.
//!
//! Why this input: `testsrc2` moves (a sweeping sector, sliding boxes, a
//! scrolling colour band) and has the sharp edges and text that separate a
//! good downscaler from a bad one; temporal grain (`noise=alls=8:allf=t+u`)
//! gives every frame the fine, changing texture of a camera sensor, so x264
//! cannot skip static blocks and the decoder has real residuals to decode.
//! The source is encoded like a 1080p30 contribution stream (6 Mb/s).
//!
//! Env: RUNGS_BENCH_ROUNDS (default 3), RUNGS_BENCH_DIR (default
//! target/bench-ladder; the input is kept there between runs),
//! RUNGS_BENCH_CONFIG (a rungs config file), RUNGS_BENCH_BIN (another rungs
//! binary, to compare builds), RUNGS_BENCH_ONLY (`rungs` or `ffmpeg`).

#[path = "common/ladder_bench.rs"]
mod ladder_bench;

use ladder_bench::{
    LADDER, SOURCE_GRAPH, SOURCE_KBPS, children_cpu, count_frames, env_parse, ffmpeg_command,
    kbps_of, loadavg, machine_busy, make_input, median, psnr, rungs_command,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const SECONDS: u32 = 10;

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

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("RUNGS_BENCH_DIR")
        .map_or_else(|| root.join("target/bench-ladder"), PathBuf::from);
    let rounds: usize = env_parse("RUNGS_BENCH_ROUNDS").unwrap_or(3).max(1);
    let config = std::env::var_os("RUNGS_BENCH_CONFIG").map(PathBuf::from);
    let bin = std::env::var_os("RUNGS_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rungs")), PathBuf::from);
    let only = std::env::var("RUNGS_BENCH_ONLY").ok();
    let tools: Vec<Tool> = [Tool::Rungs, Tool::Ffmpeg]
        .into_iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == t.name()))
        .collect();
    std::fs::create_dir_all(&dir).expect("create the bench directory");

    let input = make_input(
        &dir,
        SECONDS,
        "input.recipe",
        "generating the input (about a minute on two cores)...",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let frames = count_frames(&input).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "input: {} ({frames} frames, {SOURCE_GRAPH}, {SOURCE_KBPS} kb/s, GOP 60)",
        input.display()
    );
    println!(
        "rungs: {}{}",
        bin.display(),
        config
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

    let rungs_out = dir.join("rungs-out");
    let cli_out = dir.join("ffmpeg-out");
    let mut runs = Vec::new();
    let mut report: Option<Value> = None;
    println!(
        "\n{:>5}  {:<6}  {:>7}  {:>6}  {:>6}  {:>9}  load average",
        "round", "tool", "wall s", "fps", "CPU s", "others s"
    );
    for round in 0..rounds {
        // ABBA: neither side always runs on a cache or a machine that the
        // other has just warmed or loaded.
        let mut order = tools.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for tool in order {
            let mut cmd = match tool {
                Tool::Rungs => rungs_command(&bin, &input, &rungs_out, config.as_deref()),
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

    println!();
    let median_of = |tool: Tool, f: fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.tool == tool).map(f).collect())
    };
    for &tool in &tools {
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
    if tools.len() < 2 {
        return;
    }
    let ratio = median_of(Tool::Rungs, |r| r.fps) / median_of(Tool::Ffmpeg, |r| r.fps);
    println!("fps ratio rungs / ffmpeg: {ratio:.2} (goal >= 1.30)");

    // Quality of the last round's outputs (x264 is deterministic here).
    println!(
        "\nPSNR average (dB) against the source scaled with flags=lanczos; kb/s from packet sizes"
    );
    println!(
        "{:<5}  {:>9}  {:>6}  {:>10}  {:>10}  {:>11}  {:>11}  {:>6}",
        "rung", "size", "target", "rungs kb/s", "ffmpeg kb/s", "rungs PSNR", "ffmpeg PSNR", "diff"
    );
    let rungs_files: Vec<PathBuf> = LADDER
        .iter()
        .map(|r| rungs_out.join(r.0).join("index.m3u8"))
        .collect();
    let cli_files: Vec<PathBuf> = LADDER
        .iter()
        .map(|r| cli_out.join(format!("{}.mp4", r.0)))
        .collect();
    let rungs_psnr = psnr(&input, &rungs_files);
    let cli_psnr = psnr(&input, &cli_files);
    let mut worst: f64 = f64::INFINITY;
    for (i, (name, w, h, kbps)) in LADDER.iter().enumerate() {
        let diff = rungs_psnr[i] - cli_psnr[i];
        worst = worst.min(diff);
        println!(
            "{name:<5}  {:>9}  {kbps:>6}  {:>10.0}  {:>11.0}  {:>11.3}  {:>11.3}  {diff:>+6.3}",
            format!("{w}x{h}"),
            kbps_of(&rungs_files[i], SECONDS).unwrap_or_else(|e| panic!("{e}")),
            kbps_of(&cli_files[i], SECONDS).unwrap_or_else(|e| panic!("{e}")),
            rungs_psnr[i],
            cli_psnr[i],
        );
    }
    println!(
        "\ngoal (fps ratio >= 1.30, no rung more than 0.20 dB worse): {}",
        if ratio >= 1.3 && worst >= -0.2 {
            "met"
        } else {
            "NOT met"
        }
    );
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
