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
//! The helpers for the input, the CLI command, CPU time and PSNR are a
//! compact copy of bench/ladder.rs's (that file is a whole bench with its own
//! `main`, so it is not `#[path]`-included); keep the two in step.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE_GRAPH: &str = "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t+u";
const SOURCE_KBPS: u32 = 6000;
const FPS: f64 = 30.0;
/// The Livepeer measure: encode time over media time of each GOP.
const MAX_RATIO: f64 = 0.8;
const GOAL_REDUCTION_PCT: f64 = 35.0;

/// The standard ladder for a 1080p source: (name, width, height, kb/s).
const LADDER: [(&str, u32, u32, u32); 4] = [
    ("720p", 1280, 720, 3000),
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 700),
    ("160p", 284, 160, 250),
];

/// x264 options the CLI gets (as in ladder.rs).
const X264: [&str; 10] = [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
];

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
    let input = make_input(&dir, seconds);
    let frames = count_frames(&input);
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
        live_part(&bin, &dir, &input, gpu);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("gpu_pipeline: {msg}");
    std::process::exit(1);
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
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
    if p["nvrtc"]["usable"] != true {
        return Err(format!("NVRTC not usable: {}", detail("nvrtc")));
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
                Contender::RungsGpu => rungs_command(bin, input, &out, &gpu_cfg),
                Contender::RungsCpu => rungs_command(bin, input, &out, &cpu_cfg),
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
            let kbps = files.iter().map(|f| kbps_of(f, seconds)).collect();
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

fn rungs_command(bin: &Path, input: &Path, out: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("transcode")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--config")
        .arg(config)
        .arg("--json");
    cmd
}

/// One decode, `split`, a scaler and one libx264 per rung, the source copied:
/// `cuda`: NVDEC decode into device memory, `scale_cuda` (bicubic, as the CPU
/// CLI's `scale` default) and one download per rung; else ladder.rs's command.
fn ffmpeg_command(input: &Path, out: &Path, cuda: bool) -> Command {
    std::fs::create_dir_all(out).expect("create the CLI's output directory");
    let labels = ["a", "b", "c", "d"];
    let mut graph = format!("[0:v]split={}", LADDER.len());
    for l in &labels[..LADDER.len()] {
        graph.push_str(&format!("[{l}]"));
    }
    for (l, (name, w, h, _)) in labels.iter().zip(LADDER) {
        if cuda {
            graph.push_str(&format!(
                ";[{l}]scale_cuda={w}:{h}:interp_algo=bicubic,hwdownload,format=nv12[v{name}]"
            ));
        } else {
            graph.push_str(&format!(";[{l}]scale={w}:{h}[v{name}]"));
        }
    }
    let mut cmd = ffmpeg();
    if cuda {
        cmd.args(["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"]);
    }
    cmd.arg("-i").arg(input).args(["-filter_complex", &graph]);
    for (name, _, _, kbps) in LADDER {
        let (rate, buf) = (format!("{kbps}k"), format!("{}k", 2 * kbps));
        cmd.args(["-map", &format!("[v{name}]")])
            .args(X264)
            .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &buf])
            .arg(out.join(format!("{name}.mp4")));
    }
    cmd.args(["-map", "0:v", "-map", "0:a", "-c", "copy"])
        .arg(out.join("source.mp4"));
    cmd
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

// ---------------------------------------------------------------- live part

struct Step {
    n: usize,
    held: bool,
    why: Vec<String>,
    worst_ratio: f64,
    /// Node CPU seconds per stream per second of the window.
    cpu_per_stream: f64,
}

fn live_part(bin: &Path, dir: &Path, input: &Path, gpu: bool) {
    let backends = std::env::var("RUNGS_BENCH_LIVE_BACKENDS").unwrap_or_else(|_| "gpu,cpu".into());
    let max: usize = env_parse("RUNGS_BENCH_LIVE_MAX").unwrap_or(64);
    let steps: Vec<usize> = std::env::var("RUNGS_BENCH_LIVE_STEPS")
        .unwrap_or_else(|_| "2,4,8,12,16,20,24,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n >= 1 && n <= max)
        .collect();
    let secs: f64 = env_parse("RUNGS_BENCH_LIVE_SECONDS").unwrap_or(30.0);
    let warmup: f64 = env_parse("RUNGS_BENCH_LIVE_WARMUP").unwrap_or(8.0);
    if warmup + 2.0 > secs {
        fail("RUNGS_BENCH_LIVE_SECONDS must exceed RUNGS_BENCH_LIVE_WARMUP by 2 s or more");
    }
    println!(
        "\n== live: N x (1080p30 RTMP -> standard 4-rung ladder) on one node, \
         {secs} s each ({warmup} s warm-up not measured); holds: realtime ratio \
         <= {MAX_RATIO}, no dropped GOP"
    );
    let mut best: Vec<(&str, Option<Step>)> = Vec::new();
    for backend in backends.split(',').map(str::trim) {
        let on = match backend {
            "gpu" => true,
            "cpu" => false,
            other => fail(&format!("RUNGS_BENCH_LIVE_BACKENDS: unknown {other:?}")),
        };
        if on && !gpu {
            println!("live gpu: SKIPPED (no usable GPU)");
            continue;
        }
        println!(
            "\n{:<4}  {:>3}  {:>5}  {:>11}  {:>15}  {:>16}  why not",
            "node", "N", "held", "worst ratio", "CPU s/stream/s", "CPU s/stream min"
        );
        let mut held: Option<Step> = None;
        for &n in &steps {
            let step = live_step(bin, dir, input, on, n, secs, warmup);
            println!(
                "{backend:<4}  {n:>3}  {:>5}  {:>11.3}  {:>15.3}  {:>16.1}  {}",
                if step.held { "yes" } else { "NO" },
                step.worst_ratio,
                step.cpu_per_stream,
                step.cpu_per_stream * 60.0,
                step.why.join("; ")
            );
            if !step.held {
                break;
            }
            held = Some(step);
        }
        best.push((if on { "gpu" } else { "cpu" }, held));
    }
    println!();
    for (backend, step) in &best {
        match step {
            Some(s) => println!(
                "live {backend}: {} streams held (largest step tried that held), \
                 {:.3} host CPU-s per stream per second ({:.1} per stream minute)",
                s.n,
                s.cpu_per_stream,
                s.cpu_per_stream * 60.0
            ),
            None => println!("live {backend}: not even the first step held"),
        }
    }
    let held_at = |b: &str| best.iter().find(|e| e.0 == b).and_then(|e| e.1.as_ref());
    if let (Some(g), Some(c)) = (held_at("gpu"), held_at("cpu")) {
        println!(
            "live host CPU per stream, GPU vs CPU node: {:+.1}% less (goal >= \
             {GOAL_REDUCTION_PCT:.0}%; GPU at N={}, CPU at N={})",
            (1.0 - g.cpu_per_stream / c.cpu_per_stream) * 100.0,
            g.n,
            c.n
        );
    }
}

/// Kills the processes it holds when dropped, so a panic leaves none behind.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn live_step(
    bin: &Path,
    dir: &Path,
    input: &Path,
    gpu: bool,
    n: usize,
    secs: f64,
    warmup: f64,
) -> Step {
    let data = dir.join(format!("live-{}-{n}", if gpu { "gpu" } else { "cpu" }));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the node's data dir");
    let (rtmp, http) = (free_tcp_port(), free_tcp_port());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let cfg = write_config(
        &data,
        "config.toml",
        gpu,
        &format!("\n[whip]\nudp_addr = \"127.0.0.1:{udp}\"\n"),
    );
    // (id, stream key) of each channel.
    let channels: Vec<(String, String)> = (0..n)
        .map(|i| {
            let mut cmd = Command::new(bin);
            cmd.args(["channel", "create", "--ladder", "standard", "--json"])
                .arg("--name")
                .arg(format!("bench{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--config")
                .arg(&cfg);
            let ch: Value = serde_json::from_slice(&check(&mut cmd)).expect("channel JSON");
            let s = |k: &str| {
                ch[k]
                    .as_str()
                    .expect("channel has id and stream_key")
                    .to_string()
            };
            (s("id"), s("stream_key"))
        })
        .collect();

    let log_path = data.join("node.log");
    let log = std::fs::File::create(&log_path).expect("node log");
    let node = Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--rtmp-addr")
        .arg(format!("127.0.0.1:{rtmp}"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--config")
        .arg(&cfg)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start rungs serve");
    let node_pid = node.id();
    let mut procs = Procs(vec![node]);
    let base = format!("http://127.0.0.1:{http}");
    let up = Instant::now();
    while get(&format!("{base}/healthz")).is_none() {
        if let Ok(Some(st)) = procs.0[0].try_wait() {
            fail(&format!(
                "rungs serve exited ({st}) before /healthz answered; {}:\n{}",
                log_path.display(),
                tail(&log_path)
            ));
        }
        if up.elapsed() > Duration::from_secs(60) {
            fail(&format!(
                "rungs serve did not answer /healthz in 60 s; {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    for (i, (_, key)) in channels.iter().enumerate() {
        let err = std::fs::File::create(data.join(format!("publisher-{i}.log"))).expect("log");
        let child = ffmpeg()
            .args(["-re", "-stream_loop", "-1", "-i"])
            .arg(input)
            .args(["-c", "copy", "-f", "flv"])
            .arg(format!("rtmp://127.0.0.1:{rtmp}/live/{key}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start an ffmpeg publisher");
        procs.0.push(child);
    }
    let until = |t: f64| {
        let left = t - started.elapsed().as_secs_f64();
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left));
        }
    };
    until(warmup);
    let metrics = |base: &str| parse_metrics(&get(&format!("{base}/metrics")).unwrap_or_default());
    let (cpu0, t0, m0) = (process_cpu(node_pid), Instant::now(), metrics(&base));
    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    let mut why = Vec::new();
    let mut nvdec_min = usize::MAX;
    let mut t = warmup;
    while t < secs {
        t += 1.0;
        until(t);
        let m = metrics(&base);
        for s in m.iter().filter(|s| s.name == "rungs_rung_realtime_ratio") {
            if let Some((id, _)) = channels.iter().find(|c| s.label("channel") == Some(&c.0)) {
                let w = worst.entry(id.as_str()).or_insert(0.0);
                *w = w.max(s.value);
            }
        }
        let nvdec: f64 = m
            .iter()
            .filter(|s| s.name == "rungs_gpu_sessions" && s.label("kind") == Some("nvdec"))
            .map(|s| s.value)
            .sum();
        nvdec_min = nvdec_min.min(nvdec as usize);
    }
    let (cpu1, t1, m1) = (process_cpu(node_pid), Instant::now(), metrics(&base));
    for (i, c) in procs.0.iter_mut().enumerate().skip(1) {
        if let Ok(Some(st)) = c.try_wait() {
            why.push(format!(
                "publisher {} exited ({st}): {}",
                i - 1,
                tail(&data.join(format!("publisher-{}.log", i - 1)))
            ));
        }
    }
    if let Ok(Some(st)) = procs.0[0].try_wait() {
        why.push(format!("the node exited ({st}); {}", log_path.display()));
    }
    drop(procs);

    let mut dropped = 0.0;
    let mut silent = 0;
    for (id, _) in &channels {
        let sum = |m: &[Sample]| -> f64 {
            m.iter()
                .filter(|s| {
                    s.name == "rungs_rung_dropped_gops_total" && s.label("channel") == Some(id)
                })
                .map(|s| s.value)
                .sum()
        };
        dropped += sum(&m1) - sum(&m0);
        if !worst.contains_key(id.as_str()) {
            silent += 1;
        }
    }
    let worst_ratio = worst.values().copied().fold(0.0, f64::max);
    if silent > 0 {
        why.push(format!("{silent} channel(s) reported no realtime ratio"));
    }
    if worst_ratio > MAX_RATIO {
        let over = worst.values().filter(|&&r| r > MAX_RATIO).count();
        why.push(format!("{over} channel(s) above {MAX_RATIO}"));
    }
    if dropped > 0.0 {
        why.push(format!("{dropped} GOP(s) dropped"));
    }
    if gpu {
        let fallbacks: f64 = m1
            .iter()
            .filter(|s| s.name == "rungs_decode_backend_fallbacks_total")
            .map(|s| s.value)
            .sum();
        if fallbacks > 0.0 || nvdec_min < n {
            why.push(format!(
                "GPU decode fell back ({fallbacks} decode fallback(s), as few as {nvdec_min} \
                 NVDEC sessions for {n} streams)"
            ));
        }
    }
    Step {
        n,
        held: why.is_empty(),
        why,
        worst_ratio,
        cpu_per_stream: (cpu1 - cpu0) / n as f64 / (t1 - t0).as_secs_f64(),
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.0 == k).map(|l| l.1.as_str())
    }
}

/// The Prometheus text format, as far as this bench needs it (label values
/// without escaped quotes or commas: channel ids, rung names).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn get(url: &str) -> Option<String> {
    let mut res = ureq::get(url).call().ok()?;
    res.body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .ok()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// utime + stime of a running process, every thread, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<f64> = stat[close + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (1-based) of the whole line; `f` starts at field 3.
    (f[11] + f[12]) / clock_ticks()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

// ------------------------------------------- helpers copied from ladder.rs

/// The input, generated once and kept; regenerated when the recipe changes.
fn make_input(dir: &Path, seconds: u32) -> PathBuf {
    let input = dir.join(format!("input-1080p30-{seconds}s.mp4"));
    let recipe_file = dir.join(format!("input-{seconds}s.recipe"));
    let seconds = seconds.to_string();
    let (rate, buf) = (format!("{SOURCE_KBPS}k"), format!("{}k", 2 * SOURCE_KBPS));
    let args: Vec<&str> = vec![
        "-f",
        "lavfi",
        "-i",
        SOURCE_GRAPH,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &seconds,
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-b:v",
        &rate,
        "-maxrate",
        &rate,
        "-bufsize",
        &buf,
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
    ];
    let recipe = args.join(" ");
    if input.exists() && std::fs::read_to_string(&recipe_file).ok().as_deref() == Some(&recipe) {
        return input;
    }
    eprintln!("generating the input...");
    let mut cmd = ffmpeg();
    cmd.args(&args).arg(&input);
    check(&mut cmd);
    std::fs::write(&recipe_file, recipe).expect("write the recipe");
    input
}

fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]);
    cmd
}

/// Runs `cmd` to completion and returns its stdout; fails with its stderr.
fn check(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?} ({e}); apt-get install ffmpeg")));
    if !out.status.success() {
        fail(&format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    out.stdout
}

fn count_frames(input: &Path) -> u64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(input);
    let out = check(&mut cmd);
    String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("ffprobe prints a packet count")
}

/// Clock ticks per second of /proc's counters (USER_HZ).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of this process's waited-for children
/// (`cutime` + `cstime` of /proc/self/stat).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 16 and 17 (1-based) of the whole line; `rest` starts at field 3.
    (fields[13] + fields[14]) / clock_ticks()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// PSNR `average` of each rung file against the input scaled to its size with
/// lanczos, all rungs in one FFmpeg run; timestamps rebased to zero on both
/// sides.
fn psnr(input: &Path, rungs: &[PathBuf]) -> Vec<f64> {
    let n = rungs.len();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info"]);
    for r in rungs {
        cmd.arg("-i").arg(r);
    }
    cmd.arg("-i").arg(input);
    let mut graph = format!("[{n}:v]setpts=PTS-STARTPTS,split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (_, w, h, _)) in LADDER.iter().enumerate().take(n) {
        graph.push_str(&format!(
            ";[s{i}]scale={w}:{h}:flags=lanczos[r{i}];[{i}:v]setpts=PTS-STARTPTS[d{i}];[d{i}][r{i}]psnr"
        ));
    }
    cmd.args(["-filter_complex", &graph, "-f", "null", "-"]);
    let out = cmd.output().expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "PSNR run failed:\n{log}");
    // `Parsed_psnr_K`: K is the filter's index in the graph, rungs in order.
    let mut found: Vec<(usize, f64)> = log
        .lines()
        .filter_map(|l| {
            let k = l
                .split("Parsed_psnr_")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?;
            let avg = l.split("average:").nth(1)?.split_whitespace().next()?;
            Some((k.parse().ok()?, avg.parse().ok()?))
        })
        .collect();
    found.sort_by_key(|f| f.0);
    assert_eq!(found.len(), n, "{n} psnr summaries expected:\n{log}");
    found.into_iter().map(|f| f.1).collect()
}

/// Video bitrate from the packets' sizes over the input's duration.
fn kbps_of(file: &Path, seconds: u32) -> f64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(file);
    let out = check(&mut cmd);
    let bytes: f64 = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .sum();
    bytes * 8.0 / f64::from(seconds) / 1000.0
}
