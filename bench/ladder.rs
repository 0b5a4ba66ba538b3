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

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SOURCE_GRAPH: &str = "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t+u";
const SECONDS: u32 = 10;
const SOURCE_KBPS: u32 = 6000;

/// The standard ladder for a 1080p source: (name, width, height, kb/s).
const LADDER: [(&str, u32, u32, u32); 4] = [
    ("720p", 1280, 720, 3000),
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 700),
    ("160p", 284, 160, 250),
];

/// x264 options the two sides share.
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

    let input = make_input(&dir);
    let frames = count_frames(&input);
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
                Tool::Ffmpeg => ffmpeg_command(&input, &cli_out),
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
            kbps_of(&rungs_files[i]),
            kbps_of(&cli_files[i]),
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

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The input, generated once and kept; regenerated when the recipe changes.
fn make_input(dir: &Path) -> PathBuf {
    let input = dir.join("input-1080p30-10s.mp4");
    let recipe_file = dir.join("input.recipe");
    let seconds = SECONDS.to_string();
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
    eprintln!("generating the input (about a minute on two cores)...");
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

/// Runs `cmd` to completion and returns its stdout; panics with its stderr.
fn check(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); apt-get install ffmpeg"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn rungs_command(bin: &Path, input: &Path, out: &Path, config: Option<&Path>) -> Command {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(bin);
    cmd.arg("transcode")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--json");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd
}

/// What an operator would script: one decode, `split` + `scale` with the
/// CLI's default (bicubic) scaler, one libx264 per rung, the source copied.
fn ffmpeg_command(input: &Path, out: &Path) -> Command {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).expect("create the CLI's output directory");
    let labels = ["a", "b", "c", "d"];
    let mut graph = format!("[0:v]split={}", LADDER.len());
    for l in &labels[..LADDER.len()] {
        graph.push_str(&format!("[{l}]"));
    }
    for (l, (name, w, h, _)) in labels.iter().zip(LADDER) {
        graph.push_str(&format!(";[{l}]scale={w}:{h}[v{name}]"));
    }
    let mut cmd = ffmpeg();
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
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 16 and 17 (1-based) of the whole line; `rest` starts at field 3.
    (fields[13] + fields[14]) / clock_ticks()
}

/// CPU seconds all CPUs spent busy since boot (the `cpu` line of /proc/stat,
/// less idle and iowait).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("Linux /proc");
    let line = stat.lines().next().expect("/proc/stat has a cpu line");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0.0);
    busy / clock_ticks()
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
/// lanczos, all rungs in one FFmpeg run (one decode of the input). Timestamps
/// are rebased to zero on both sides, so a B-frame delay in a rung's first
/// pts does not shift the pairing.
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
    // `Parsed_psnr_K`: K is the filter's index in the graph, which lists
    // the rungs in order; the summaries may be printed in another order.
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
    assert_eq!(
        found.len(),
        n,
        "{n} psnr summaries expected in ffmpeg's output:\n{log}"
    );
    found.into_iter().map(|f| f.1).collect()
}

/// Video bitrate from the packets' sizes over the input's duration.
fn kbps_of(file: &Path) -> f64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(file);
    let out = check(&mut cmd);
    let bytes: f64 = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .sum();
    bytes * 8.0 / f64::from(SECONDS) / 1000.0
}
