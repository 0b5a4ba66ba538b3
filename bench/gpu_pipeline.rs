//! The GPU pipeline end to end: `rungs transcode` on the GPU backend against
//! the CPU backend and the FFmpeg CLI, then how many live 1080p30 ladders one
//! node holds in real time. Needs an NVIDIA GPU and its driver (H100/H200:
//! NVDEC, no NVENC) and Debian 12's FFmpeg; `make bench-gpu-pipeline`.
//!
//! Without a usable GPU (`rungs probe --json`: no driver, no device, no NVDEC
//! or no NVRTC) it stops at once with the reason and a non-zero exit: it
//! never prints numbers for a GPU it did not use. NVRTC comes from the
//! Makefile's `.nvrtc` (its `LD_LIBRARY_PATH`): run it through make, or
//! export that path.
//!
//! File part: the input of `bench/ladder.rs` (testsrc2 + temporal grain,
//! 1080p30, 6 Mb/s, AAC, IDR every 60 frames) and the `standard` ladder
//! (720p 3000, 480p 1200, 360p 700, 160p 250 kb/s, libx264 veryfast, VBV
//! maxrate = bitrate, bufsize = 2 x bitrate, source copied). Each round runs,
//! in an order rotated every round:
//! - `rungs-gpu`: `rungs transcode` with `[gpu] enabled = "on"`; its
//!   `--json` report must say `GPU ...: decode nvdec, scale cuda`, or the
//!   benchmark aborts (a fallback is not a GPU measurement);
//! - `rungs-cpu`: the same with `enabled = "off"`;
//! - `ffmpeg-cuda`: the CLI's best equivalent, `-hwaccel cuda
//!   -hwaccel_output_format cuda`, `split`, `scale_cuda=W:H:interp_algo=bicubic`
//!   per rung (bicubic: the CPU CLI's default scaler), `hwdownload,format=nv12`
//!   and the same libx264 options as ladder.rs; `ffmpeg-cpu` (ladder.rs's
//!   command) when this FFmpeg has no `scale_cuda`. The one that ran is named.
//!
//! Printed: wall s, fps, the child's CPU seconds (user + sys, as ladder.rs
//! measures them) and CPU seconds per output minute (per minute of input
//! turned into the whole ladder), medians, the GPU backend's CPU-seconds
//! reduction against the CPU backend (goal: at least 35%), and per rung the
//! bitrate and PSNR (`average`) of each against the source scaled with
//! `flags=lanczos`.
//!
//! Live part: for N in the steps, one release `rungs serve` (fresh data dir,
//! free ports, GPU on or off) with N `standard` channels, each published by
//! `ffmpeg -re -stream_loop -1 -i <input> -c copy -f flv` over RTMP. After a
//! warm-up, `/metrics` is read every second: a channel holds if the max of
//! `rungs_rung_realtime_ratio` over its rungs and the samples stays <= 0.8
//! (the Livepeer measure; Livepeer's T4 holds 14 such streams), it dropped no
//! GOP (`rungs_rung_dropped_gops_total`) and its publisher is still up; on
//! the GPU every stream must hold an NVDEC session (`rungs_gpu_sessions`)
//! with no decode fallback. The steps go up until one does not hold; printed
//! per step: the worst ratio, the node's CPU seconds per stream per second
//! (its /proc utime + stime over the window / N / seconds) and per stream
//! minute; then the largest N that held per backend.
//!
//! Env:
//! - RUNGS_BENCH_MODE: `file`, `live` or `both` (default).
//! - RUNGS_BENCH_ROUNDS: file rounds (default 3).
//! - RUNGS_BENCH_SECONDS: input length (default 10).
//! - RUNGS_BENCH_DIR: work folder (default target/bench-gpu-pipeline; the
//!   input is kept there between runs).
//! - RUNGS_BENCH_BIN: another rungs binary.
//! - RUNGS_BENCH_LIVE_BACKENDS: `gpu,cpu` (default), `gpu` or `cpu`.
//! - RUNGS_BENCH_LIVE_STEPS: stream counts to try in order (default
//!   `2,4,8,12,16,20,24,32`); RUNGS_BENCH_LIVE_MAX caps them (default 64).
//! - RUNGS_BENCH_LIVE_SECONDS: publish time per step (default 30);
//!   RUNGS_BENCH_LIVE_WARMUP: seconds not measured at its start (default 8).
//! - RUNGS_BENCH_ALLOW_NO_GPU=1: on a machine without a GPU, run only the CPU
//!   contenders (rungs-cpu, ffmpeg-cpu, live `cpu`) to check the plumbing;
//!   the GPU ones are skipped, and said to be.
//!
//! The input, the `standard` ladder, the rungs and CLI commands, CPU time,
//! bitrate and PSNR are bench/common/ladder_bench.rs's, shared with
//! ladder.rs; the live part is in gpu_pipeline/live.rs.

// Shared by three benches; `machine_busy` is the ladder and multitrack benches'.
#[allow(dead_code)]
#[path = "common/ladder_bench.rs"]
mod ladder_bench;
#[path = "gpu_pipeline/live.rs"]
mod live;

use ladder_bench::{
    LADDER, SOURCE_GRAPH, SOURCE_KBPS, children_cpu, count_frames, env_parse, ffmpeg_command,
    kbps_of, loadavg, make_input, median, psnr, rungs_command,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const FPS: f64 = 30.0;
const GOAL_REDUCTION_PCT: f64 = 35.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    RungsGpu,
    RungsCpu,
    /// The FFmpeg CLI; `true`: cuda decode + scale_cuda.
    Ffmpeg(bool),
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::RungsGpu => "rungs-gpu",
            Contender::RungsCpu => "rungs-cpu",
            Contender::Ffmpeg(true) => "ffmpeg-cuda",
            Contender::Ffmpeg(false) => "ffmpeg-cpu",
        }
    }

    /// Where its rungs are written, one file per rung.
    fn rung_files(self, dir: &Path) -> Vec<PathBuf> {
        let out = dir.join(self.name());
        LADDER
            .iter()
            .map(|r| match self {
                Contender::Ffmpeg(_) => out.join(format!("{}.mp4", r.0)),
                _ => out.join(r.0).join("index.m3u8"),
            })
            .collect()
    }
}

struct Run {
    who: Contender,
    wall: f64,
    cpu: f64,
}

fn main() {
    // `cargo test --benches` lists; `cargo bench` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("RUNGS_BENCH_DIR")
        .map_or_else(|| root.join("target/bench-gpu-pipeline"), PathBuf::from);
    let bin = std::env::var_os("RUNGS_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rungs")), PathBuf::from);
    let mode = std::env::var("RUNGS_BENCH_MODE").unwrap_or_else(|_| "both".into());
    if !matches!(mode.as_str(), "file" | "live" | "both") {
        fail(&format!(
            "RUNGS_BENCH_MODE={mode}: expected file, live or both"
        ));
    }
    let allow_no_gpu = std::env::var("RUNGS_BENCH_ALLOW_NO_GPU").is_ok_and(|v| v == "1");

    // First, before any work: is there a GPU the GPU backend can use?
    let gpu = match gpu_usable(&bin) {
        Ok(name) => {
            println!("GPU: {name}");
            true
        }
        Err(why) if allow_no_gpu => {
            println!(
                "no usable GPU (rungs probe: {why}); RUNGS_BENCH_ALLOW_NO_GPU=1: \
                 the GPU contenders are SKIPPED, only the CPU ones run"
            );
            false
        }
        Err(why) => fail(&format!(
            "no usable GPU (rungs probe: {why}): this benchmark needs an NVIDIA GPU \
             and its driver (and NVRTC on the library path: run it with \
             `make bench-gpu-pipeline`). RUNGS_BENCH_ALLOW_NO_GPU=1 runs only the \
             CPU contenders, to check the plumbing."
        )),
    };

    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let seconds: u32 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(10).max(1);
    let input = make_input(
        &dir,
        seconds,
        &format!("input-{seconds}s.recipe"),
        "generating the input...",
    )
    .unwrap_or_else(|e| fail(&e));
    let frames = count_frames(&input).unwrap_or_else(|e| fail(&e));
    println!(
        "input: {} ({frames} frames, {SOURCE_GRAPH}, {SOURCE_KBPS} kb/s, GOP 60)",
        input.display()
    );
    println!(
        "rungs: {}\nmachine: {} CPUs, load average {}",
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    if mode != "live" {
        file_part(&bin, &dir, &input, frames, seconds, gpu);
    }
    if mode != "file" {
        live::live_part(&bin, &dir, &input, gpu);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("gpu_pipeline: {msg}");
    std::process::exit(1);
}

/// The GPU's name if `rungs probe --json` finds a driver, a selected device,
/// NVDEC and NVRTC; why not otherwise.
fn gpu_usable(bin: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .args(["probe", "--json"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`rungs probe --json` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let p: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`rungs probe --json` printed no JSON: {e}"))?;
    let detail = |k: &str| p[k]["detail"].as_str().unwrap_or("?").to_string();
    if p["driver"].is_null() {
        return Err(format!("no CUDA driver: {}", detail("nvdec")));
    }
    let Some(dev) = p["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["selected"] == true))
    else {
        return Err("the CUDA driver sees no (selected) GPU".into());
    };
    if p["nvdec"]["usable"] != true {
        return Err(format!("NVDEC not usable: {}", detail("nvdec")));
    }
    if p["kernels"]["usable"] != true {
        return Err(format!("CUDA kernels not usable: {}", detail("kernels")));
    }
    Ok(format!(
        "{} ({} MiB), driver {}, NVENC {}",
        dev["name"].as_str().unwrap_or("?"),
        dev["memory_bytes"].as_u64().unwrap_or(0) >> 20,
        p["driver"].as_str().unwrap_or("?"),
        if p["nvenc"]["usable"] == true {
            "yes"
        } else {
            "no"
        }
    ))
}

/// A config with only `[gpu] enabled` (and extra lines) set.
fn write_config(dir: &Path, name: &str, gpu: bool, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let toml = format!(
        "[gpu]\nenabled = \"{}\"\n{extra}",
        if gpu { "on" } else { "off" }
    );
    std::fs::write(&path, toml).expect("write a config");
    path
}

// ---------------------------------------------------------------- file part

fn file_part(bin: &Path, dir: &Path, input: &Path, frames: u64, seconds: u32, gpu: bool) {
    let rounds: usize = env_parse("RUNGS_BENCH_ROUNDS").unwrap_or(3).max(1);
    let scale_cuda = has_scale_cuda();
    let cli = Contender::Ffmpeg(gpu && scale_cuda);
    println!("\n== file: rungs transcode GPU vs CPU backend vs the FFmpeg CLI ({rounds} rounds)");
    println!(
        "FFmpeg CLI: {} ({})",
        cli.name(),
        match (gpu, scale_cuda) {
            (true, true) => "hwaccel cuda decode + scale_cuda",
            (true, false) => "this FFmpeg has no scale_cuda: CPU decode and scale",
            (false, _) => "no GPU: CPU decode and scale",
        }
    );
    let mut contenders = vec![Contender::RungsCpu, cli];
    if gpu {
        contenders.insert(0, Contender::RungsGpu);
    } else {
        println!("rungs-gpu: SKIPPED (no usable GPU)");
    }
    let gpu_cfg = write_config(dir, "gpu-on.toml", true, "");
    let cpu_cfg = write_config(dir, "gpu-off.toml", false, "");
    let out_minutes = frames as f64 / FPS / 60.0;

    println!(
        "\n{:>5}  {:<11}  {:>7}  {:>6}  {:>7}  {:>12}",
        "round", "contender", "wall s", "fps", "CPU s", "CPU s/out min"
    );
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..rounds {
        let mut order = contenders.clone();
        order.rotate_left(round % contenders.len());
        for who in order {
            let out = dir.join(who.name());
            let _ = std::fs::remove_dir_all(&out);
            let mut cmd = match who {
                Contender::RungsGpu => rungs_command(bin, input, &out, Some(&gpu_cfg)),
                Contender::RungsCpu => rungs_command(bin, input, &out, Some(&cpu_cfg)),
                Contender::Ffmpeg(cuda) => ffmpeg_command(input, &out, cuda),
            };
            let (run, stdout) = timed(who, &mut cmd);
            if let Contender::RungsGpu | Contender::RungsCpu = who {
                let report: Value =
                    serde_json::from_slice(&stdout).expect("rungs transcode --json prints JSON");
                let backends = report["backends"].as_str().unwrap_or("(none reported)");
                if round == 0 {
                    println!("       {:<11}  backends: {backends}", who.name());
                }
                if who == Contender::RungsGpu
                    && !(backends.starts_with("GPU")
                        && backends.contains("decode nvdec")
                        && backends.contains("scale cuda"))
                {
                    fail(&format!(
                        "the GPU run fell back: `rungs transcode` reported backends \
                         {backends:?}, not `GPU n: decode nvdec, scale cuda, ...`; \
                         not a GPU measurement"
                    ));
                }
            }
            println!(
                "{:>5}  {:<11}  {:>7.2}  {:>6.1}  {:>7.2}  {:>12.1}",
                round + 1,
                who.name(),
                run.wall,
                frames as f64 / run.wall,
                run.cpu,
                run.cpu / out_minutes
            );
            runs.push(run);
        }
    }

    println!();
    let med = |who: Contender, f: &dyn Fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.who == who).map(f).collect())
    };
    let mut per_min = BTreeMap::new();
    for &who in &contenders {
        let cpu = med(who, &|r| r.cpu);
        println!(
            "median {:<11}  {:>6.1} fps  {:>6.2} s  {:>7.2} CPU s  {:>7.1} CPU s per output minute",
            who.name(),
            med(who, &|r| frames as f64 / r.wall),
            med(who, &|r| r.wall),
            cpu,
            cpu / out_minutes
        );
        match who {
            Contender::RungsGpu => per_min.insert("gpu", cpu / out_minutes),
            Contender::RungsCpu => per_min.insert("cpu", cpu / out_minutes),
            Contender::Ffmpeg(_) => None,
        };
    }
    if let (Some(g), Some(c)) = (per_min.get("gpu"), per_min.get("cpu")) {
        let reduction = (1.0 - g / c) * 100.0;
        println!(
            "host CPU-seconds, GPU backend vs CPU backend: {reduction:+.1}% less \
             (goal >= {GOAL_REDUCTION_PCT:.0}%): {}",
            if reduction >= GOAL_REDUCTION_PCT {
                "met"
            } else {
                "NOT met"
            }
        );
    } else {
        println!("GPU vs CPU reduction: not measured (rungs-gpu skipped)");
    }

    // Quality of the last round's outputs.
    println!(
        "\nPSNR average (dB) against the source scaled with flags=lanczos; kb/s from packet sizes"
    );
    let mut header = format!("{:<5}  {:>9}  {:>6}", "rung", "size", "target");
    for who in &contenders {
        header.push_str(&format!("  {:>17}", format!("{} kb/s, dB", who.name())));
    }
    println!("{header}");
    let results: Vec<(Vec<f64>, Vec<f64>)> = contenders
        .iter()
        .map(|who| {
            let files = who.rung_files(dir);
            let kbps = files
                .iter()
                .map(|f| kbps_of(f, seconds).unwrap_or_else(|e| fail(&e)))
                .collect();
            (kbps, psnr(input, &files))
        })
        .collect();
    for (i, (name, w, h, kbps)) in LADDER.iter().enumerate() {
        let mut line = format!("{name:<5}  {:>9}  {kbps:>6}", format!("{w}x{h}"));
        for (rates, db) in &results {
            line.push_str(&format!("  {:>8.0} {:>8.3}", rates[i], db[i]));
        }
        println!("{line}");
    }
}

fn has_scale_cuda() -> bool {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-filters"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("scale_cuda"))
        })
}

/// Runs `cmd` to completion: wall seconds, its CPU seconds, its stdout.
fn timed(who: Contender, cmd: &mut Command) -> (Run, Vec<u8>) {
    let cpu0 = children_cpu();
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let wall = started.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        fail(&format!(
            "{} failed: {cmd:?}\n{}",
            who.name(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    (Run { who, wall, cpu }, out.stdout)
}
