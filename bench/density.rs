//! Live density: how many live 720p30 channels one box transcodes in real
//! time, rungs against one FFmpeg CLI per channel, and what the live x264
//! tuning costs in quality against the offline one.
//!
//! `cargo bench --bench density` makes a 720p30 clip once (20 s of a content
//! kind of bench/ladder/content.rs, default `detail`: camera-like detail,
//! motion, grain and a cut; H.264 `veryfast` at 3000 kb/s as a studio
//! encoder sends it, IDR every 60 frames, AAC) with FFmpeg 9, and then:
//!
//! - **rungs**: one release node; live-paced publishers (`-re -stream_loop
//!   -1 ... -c copy -f flv`, so the publishers' own work is a remux) are
//!   added one by one, each on a `standard` channel (the 720p source passed
//!   through; 480p, 360p and 160p transcoded). After each one, once the new
//!   channel lists a segment of every rendition and a warm-up has passed,
//!   a window of RUNGS_BENCH_SECONDS is measured: the node's cores (CPU
//!   seconds over wall seconds), the GOPs and packets any channel dropped,
//!   and the highest `rungs_rung_realtime_ratio` (encode wall time over
//!   media time of a rung's last GOP, sampled every second). N holds when no
//!   channel dropped anything and no rung's ratio exceeded 0.9.
//! - **FFmpeg CLI**: the live transcoder an operator would otherwise script:
//!   per channel one Debian `ffmpeg` listening for the same publisher
//!   (`-listen 1 -i rtmp://...`), making the same ladder from it (`split`,
//!   `scale` (bicubic), libx264 with rungs' live settings: `veryfast`, no
//!   B-frames, a 3-frame lookahead, same bitrates and VBV, IDR every 60
//!   frames), the source and audio copied, every output discarded (`-f
//!   null`). N holds when every process kept real time over the window: media
//!   time written (its `-progress` out_time) over wall time >= 0.97 (a CLI
//!   falls behind rather than dropping).
//!
//! Printed per step: N, cores, cores per channel, the publishers' cores,
//! drops, worst ratio or slowest speed, held or not; then the largest N held
//! by each, their ratio (goal >= 1.3) and the CPU per channel of both. Then
//! quality: `rungs transcode` of the clip with the offline tuning (x264's
//! own) and with `--low-latency` (the live channels' tuning), each rung's
//! bitrate, PSNR and SSIM against the clip scaled with lanczos, and the
//! live-minus-offline difference (goal: no rung more than 0.3 dB below).
//!
//! Env: RUNGS_BENCH_CONTENT (one kind, default `detail`),
//! RUNGS_BENCH_SECONDS (window per step, default 20), RUNGS_BENCH_WARMUP
//! (default 4), RUNGS_BENCH_MAX (most channels tried per side, default 16),
//! RUNGS_BENCH_SIDES (`rungs,ffmpeg,quality` or a subset).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "ladder/content.rs"]
mod content;
#[path = "common/env.rs"]
mod env;
// Shared by the ladder benches; this one uses a few of them.
#[allow(dead_code)]
#[path = "common/ladder_bench.rs"]
mod ladder_bench;
#[path = "common/release.rs"]
mod release;

use common::*;
use env::env_parse;
use ladder_bench::{GOP, Pairing, X264, check, kbps_of, machine_busy, psnr_ssim_at};
use release::release_binary;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds of the clip (looped by the publishers).
const CLIP_SECONDS: u32 = 20;
const CLIP_KBPS: u32 = 3000;
/// The standard ladder's rungs below a 720p source: (name, width, height, kb/s).
const RUNGS: [(&str, u32, u32, u32); 3] = [
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 700),
    ("160p", 284, 160, 250),
];
/// The line for rungs: a rung busy more than this share of real time
/// has no headroom left.
const MAX_RATIO: f64 = 0.9;
/// A CLI process that writes less media time than this share of wall time
/// has fallen behind its live input.
const MIN_SPEED: f64 = 0.97;
const GOAL_DENSITY: f64 = 1.3;
const GOAL_LIVE_DB: f64 = -0.3;

struct Step {
    n: usize,
    cores: f64,
    publisher_cores: f64,
    other_cores: f64,
    /// rungs: GOPs + packets dropped in the window; the CLI: none (it slows).
    drops: f64,
    /// rungs: the highest realtime ratio; the CLI: the lowest speed.
    worst: f64,
    held: bool,
    why: String,
}

/// What one step's window measured: wall seconds, and the CPU seconds of the
/// transcoders, the publishers and the whole machine.
struct Window {
    wall: f64,
    cpu: f64,
    pub_cpu: f64,
    busy: f64,
}

/// A window being measured: the counters at its start.
struct Meter {
    transcoders: Vec<u32>,
    publishers: Vec<u32>,
    t0: Instant,
    cpu0: f64,
    pub0: f64,
    busy0: f64,
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

impl Meter {
    fn start(transcoders: Vec<u32>, publishers: Vec<u32>) -> Meter {
        Meter {
            t0: Instant::now(),
            cpu0: cpu_of(&transcoders),
            pub0: cpu_of(&publishers),
            busy0: machine_busy(),
            transcoders,
            publishers,
        }
    }

    fn stop(self) -> Window {
        Window {
            wall: self.t0.elapsed().as_secs_f64(),
            cpu: cpu_of(&self.transcoders) - self.cpu0,
            pub_cpu: cpu_of(&self.publishers) - self.pub0,
            busy: machine_busy() - self.busy0,
        }
    }
}

impl Window {
    /// Prints and keeps step `n`; whether it held (nothing in `why`).
    fn record(
        &self,
        steps: &mut Vec<Step>,
        n: usize,
        drops: f64,
        worst: f64,
        why: Vec<String>,
    ) -> bool {
        let step = Step {
            n,
            cores: self.cpu / self.wall,
            publisher_cores: self.pub_cpu / self.wall,
            other_cores: (self.busy - self.cpu - self.pub_cpu).max(0.0) / self.wall,
            drops,
            worst,
            held: why.is_empty(),
            why: why.join(", "),
        };
        print_step(&step);
        steps.push(step);
        why.is_empty()
    }
}

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(20);
    let warmup: u64 = env_parse("RUNGS_BENCH_WARMUP").unwrap_or(4);
    let max: usize = env_parse("RUNGS_BENCH_MAX").unwrap_or(16);
    let sides =
        std::env::var("RUNGS_BENCH_SIDES").unwrap_or_else(|_| "rungs,ffmpeg,quality".into());
    let side = |s: &str| sides.split(',').any(|x| x.trim() == s);
    let kind_name = std::env::var("RUNGS_BENCH_CONTENT").unwrap_or_else(|_| "detail".into());
    let kind = match content::select(&kind_name).as_deref() {
        Ok([k]) => *k,
        Ok(_) => panic!("RUNGS_BENCH_CONTENT: name one kind"),
        Err(e) => panic!("RUNGS_BENCH_CONTENT: {e}"),
    };

    let bin = release_binary();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-density");
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let clip = make_clip(&dir, kind);
    println!(
        "rungs live density bench: {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ladder_bench::loadavg()
    );
    println!(
        "clip: {} ({}: {}), 720p30 {CLIP_KBPS} kb/s, looped live by FFmpeg 9 with -c copy",
        clip.display(),
        kind.name,
        kind.about
    );
    println!(
        "per step: {warmup} s warm-up, {secs} s window; rungs holds with no drop and realtime ratio <= {MAX_RATIO}; \
         the CLI holds with speed >= {MIN_SPEED}"
    );

    let tmp = tempfile::Builder::new()
        .prefix("rungs-bench-density-")
        .tempdir()
        .expect("temp dir");
    let rungs = side("rungs").then(|| {
        println!("\n== rungs: one node, N standard channels");
        rungs_steps(&bin, tmp.path(), &clip, max, warmup, secs)
    });
    let cli = side("ffmpeg").then(|| {
        println!("\n== FFmpeg CLI: one ffmpeg per channel");
        cli_steps(tmp.path(), &clip, max, warmup, secs)
    });
    if let (Some(r), Some(c)) = (&rungs, &cli) {
        summary(r, c);
    }
    if side("quality") {
        quality(&bin, &dir, &clip);
    }
}

/// The clip, made once and kept with its recipe.
fn make_clip(dir: &Path, kind: &content::Content) -> PathBuf {
    let recipe = format!(
        "{} | scale=1280:720 | libx264 veryfast {CLIP_KBPS}k vbv 2x | g 60 | {CLIP_SECONDS}s",
        kind.graph(CLIP_SECONDS)
    );
    let name = format!("clip-{}-720p30", kind.name);
    let out = dir.join(format!("{name}.mkv"));
    let recipe_file = dir.join(format!("{name}.recipe"));
    if out.exists() && std::fs::read_to_string(&recipe_file).ok().as_deref() == Some(&recipe) {
        return out;
    }
    eprintln!("making the clip (about a minute on two cores)...");
    let made = clip(
        dir,
        &name,
        &kind.graph(CLIP_SECONDS),
        &[clip_stream(1280, 720, CLIP_KBPS, 60)],
        CLIP_SECONDS,
        STUDIO_X264,
    );
    assert_eq!(made, out);
    std::fs::write(&recipe_file, recipe).expect("write the recipe");
    out
}

fn rungs_steps(
    bin: &Path,
    dir: &Path,
    clip: &Path,
    max: usize,
    warmup: u64,
    secs: u64,
) -> Vec<Step> {
    let cfg = NodeConfig {
        reconnect_grace_s: 1.0,
        ..NodeConfig::default()
    };
    let node = Node::start_in(&dir.join("node"), cfg, bin);
    let node_pid = node.pid().expect("the node runs");
    let http = Http::new();
    let mut publishers: Vec<CopyPublisher> = Vec::new();
    let mut ids = Vec::new();
    let mut steps = Vec::new();
    print_header("worst ratio");
    for n in 1..=max {
        let ch = node.create_channel_with_ladder(&format!("density-{n}"), "standard");
        let p = CopyPublisher::start(
            clip,
            &["0:v"],
            &node.rtmp_url(&ch.stream_key),
            dir,
            &format!("rungs-{n}"),
        );
        node.attach_log(p.log_path());
        publishers.push(p);
        let rungs = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
            let r = rungs_of(&node, &ch.id);
            (!r.is_empty()).then_some(r)
        })
        .unwrap_or_else(|| panic!("channel {n}: no rungs listed within 60 s"));
        let names: Vec<&str> = rungs.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            std::iter::once("source")
                .chain(RUNGS.iter().map(|r| r.0))
                .collect::<Vec<_>>(),
            "a 720p source on the standard ladder"
        );
        wait_all(&http, &node, &ch.id, &names, 1, Duration::from_secs(60));
        ids.push(ch.id);
        std::thread::sleep(Duration::from_secs(warmup));

        let m0 = node.metrics();
        let meter = Meter::start(
            vec![node_pid],
            publishers.iter().map(CopyPublisher::pid).collect(),
        );
        let mut worst: f64 = 0.0;
        while meter.t0.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(1));
            let m = node.metrics();
            for id in &ids {
                for s in m.find("rungs_rung_realtime_ratio", &[("channel", id)]) {
                    worst = worst.max(s.value);
                }
            }
        }
        let window = meter.stop();
        let m1 = node.metrics();
        let drops: f64 = ids
            .iter()
            .map(|id| {
                let d = |name: &str| {
                    m1.sum(name, &[("channel", id)]) - m0.sum(name, &[("channel", id)])
                };
                d("rungs_rung_dropped_gops_total") + d("rungs_ingest_dropped_packets_total")
            })
            .sum();
        let mut why = Vec::new();
        if drops > 0.0 {
            why.push(format!("{drops} dropped"));
        }
        if worst > MAX_RATIO {
            why.push(format!("ratio {worst:.2} > {MAX_RATIO}"));
        }
        for (i, p) in publishers.iter_mut().enumerate() {
            if let Some(st) = p.exit_status() {
                why.push(format!("publisher {} exited ({st})", i + 1));
            }
        }
        if !window.record(&mut steps, n, drops, worst, why) {
            break;
        }
    }
    steps
}

/// One FFmpeg CLI transcoder, listening for its publisher.
struct Cli {
    child: Child,
    progress: PathBuf,
    port: u16,
}

impl Cli {
    fn start(dir: &Path, n: usize) -> Cli {
        let port = free_port();
        let progress = dir.join(format!("cli-{n}.progress"));
        let log = std::fs::File::create(dir.join(format!("cli-{n}.log"))).expect("log file");
        let mut graph = format!("[0:v]split={}", RUNGS.len());
        for (name, ..) in RUNGS {
            graph.push_str(&format!("[s{name}]"));
        }
        for (name, w, h, _) in RUNGS {
            graph.push_str(&format!(";[s{name}]scale={w}:{h}[v{name}]"));
        }
        let mut cmd = Command::new("ffmpeg");
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-stats_period",
            "0.25",
        ])
        .arg("-progress")
        .arg(&progress)
        .args(["-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/density"))
        .args(["-filter_complex", &graph]);
        for (name, _, _, kbps) in RUNGS {
            let (rate, buf) = (format!("{kbps}k"), format!("{}k", 2 * kbps));
            // rungs' live tuning (src/transcode/encode/x264.rs).
            cmd.args(["-map", &format!("[v{name}]")])
                .args(X264)
                .args(["-bf", "0", "-rc-lookahead", "3"])
                .args(GOP)
                .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &buf])
                .args(["-f", "null", "/dev/null"]);
        }
        cmd.args([
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-f",
            "null",
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().expect("spawn ffmpeg (apt-get install ffmpeg)");
        let listening = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            listening(port).then_some(())
        });
        assert!(
            listening.is_some(),
            "ffmpeg -listen did not listen on {port}"
        );
        Cli {
            child,
            progress,
            port,
        }
    }

    /// The last `out_time_us` the process reported, in seconds.
    fn out_time(&self) -> f64 {
        let text = std::fs::read_to_string(&self.progress).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("out_time_us="))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |us| us / 1e6)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something listens on 127.0.0.1:`port` (/proc/net/tcp, state 0A),
/// found without connecting: `-listen 1` takes one connection only.
fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
}

fn cli_steps(dir: &Path, clip: &Path, max: usize, warmup: u64, secs: u64) -> Vec<Step> {
    let mut clis: Vec<Cli> = Vec::new();
    let mut publishers: Vec<CopyPublisher> = Vec::new();
    let mut steps = Vec::new();
    print_header("slowest speed");
    for n in 1..=max {
        let cli = Cli::start(dir, n);
        let url = format!("rtmp://127.0.0.1:{}/live/density", cli.port);
        publishers.push(CopyPublisher::start(
            clip,
            &["0:v"],
            &url,
            dir,
            &format!("cli-{n}"),
        ));
        clis.push(cli);
        // Its first output, then the warm-up.
        let started = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            (clis[n - 1].out_time() > 0.0).then_some(())
        });
        assert!(started.is_some(), "CLI {n} wrote nothing within 30 s");
        std::thread::sleep(Duration::from_secs(warmup));

        let out0: Vec<f64> = clis.iter().map(Cli::out_time).collect();
        let meter = Meter::start(
            clis.iter().map(|c| c.child.id()).collect(),
            publishers.iter().map(CopyPublisher::pid).collect(),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let out1: Vec<f64> = clis.iter().map(Cli::out_time).collect();
        let window = meter.stop();
        let slowest = out0
            .iter()
            .zip(&out1)
            .map(|(a, b)| (b - a) / window.wall)
            .fold(f64::INFINITY, f64::min);
        let mut why = Vec::new();
        if slowest < MIN_SPEED {
            why.push(format!("speed {slowest:.2} < {MIN_SPEED}"));
        }
        for (i, c) in clis.iter_mut().enumerate() {
            if let Ok(Some(st)) = c.child.try_wait() {
                why.push(format!("CLI {} exited ({st})", i + 1));
            }
        }
        if !window.record(&mut steps, n, 0.0, slowest, why) {
            break;
        }
    }
    drop(publishers);
    steps
}

fn print_header(worst: &str) {
    println!(
        "{:>3}  {:>6}  {:>9}  {:>10}  {:>6}  {:>6}  {:>13}  held",
        "N", "cores", "per chan.", "publishers", "others", "drops", worst
    );
}

fn print_step(s: &Step) {
    println!(
        "{:>3}  {:>6.2}  {:>9.3}  {:>10.2}  {:>6.2}  {:>6.0}  {:>13.2}  {}",
        s.n,
        s.cores,
        s.cores / s.n as f64,
        s.publisher_cores,
        s.other_cores,
        s.drops,
        s.worst,
        if s.held {
            "yes".to_string()
        } else {
            format!("no: {}", s.why)
        }
    );
}

fn summary(rungs: &[Step], cli: &[Step]) {
    let best = |steps: &[Step]| {
        steps
            .iter()
            .filter(|s| s.held)
            .max_by_key(|s| s.n)
            .map(|s| (s.n, s.cores / s.n as f64))
    };
    let (r, c) = (best(rungs), best(cli));
    println!("\nlargest N held (cores per channel there):");
    let show = |name: &str, b: Option<(usize, f64)>, steps: &[Step]| match b {
        Some((n, per)) => println!(
            "  {name:<10} {n:>3}  ({per:.3}){}",
            if steps.last().is_some_and(|s| s.held) {
                "  (the step limit: a lower bound)"
            } else {
                ""
            }
        ),
        None => println!("  {name:<10} none"),
    };
    show("rungs", r, rungs);
    show("FFmpeg CLI", c, cli);
    if let (Some((rn, rper)), Some((cn, cper))) = (r, c) {
        let ratio = rn as f64 / cn as f64;
        println!(
            "density ratio rungs / CLI: {ratio:.2} (goal >= {GOAL_DENSITY}): {}; CPU per channel rungs / CLI: {:.2}",
            if ratio >= GOAL_DENSITY {
                "met"
            } else {
                "NOT met"
            },
            rper / cper
        );
    }
}

/// Offline against live tuning of `rungs transcode`, at the same bitrates.
fn quality(bin: &Path, dir: &Path, clip: &Path) {
    println!(
        "\n== quality: rungs transcode of the clip, offline tuning (default) against --low-latency (live)"
    );
    let mut results = Vec::new();
    for (name, extra) in [("offline", None), ("live", Some("--low-latency"))] {
        let out = dir.join(format!("transcode-{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = Command::new(bin);
        cmd.args(["transcode", "--input"])
            .arg(clip)
            .arg("--output")
            .arg(&out);
        cmd.args(extra);
        check(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<PathBuf> = RUNGS
            .iter()
            .map(|r| out.join(r.0).join("index.m3u8"))
            .collect();
        let sizes: Vec<(u32, u32)> = RUNGS.iter().map(|r| (r.1, r.2)).collect();
        let q = psnr_ssim_at(clip, &files, &sizes, Pairing::Index);
        let kbps: Vec<f64> = files
            .iter()
            .map(|f| kbps_of(f, CLIP_SECONDS).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        results.push((q, kbps));
    }
    println!(
        "{:<5}  {:>6}  {:>12}  {:>9}  {:>12}  {:>9}  {:>7}  {:>12}  {:>9}",
        "rung",
        "target",
        "offline kb/s",
        "live kb/s",
        "offline PSNR",
        "live PSNR",
        "diff",
        "offline SSIM",
        "live SSIM"
    );
    let mut worst = f64::INFINITY;
    for (i, (name, _, _, target)) in RUNGS.iter().enumerate() {
        let ((op, os), (lp, ls)) = (results[0].0[i], results[1].0[i]);
        worst = worst.min(lp - op);
        println!(
            "{name:<5}  {target:>6}  {:>12.0}  {:>9.0}  {op:>12.3}  {lp:>9.3}  {:>+7.3}  {os:>12.5}  {ls:>9.5}",
            results[0].1[i],
            results[1].1[i],
            lp - op
        );
    }
    println!(
        "live tuning, worst rung {worst:+.3} dB against offline (goal >= {GOAL_LIVE_DB}): {}",
        if worst >= GOAL_LIVE_DB {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// The channel's rung names as the stream API lists them, in its order.
fn rungs_of(node: &Node, id: &str) -> Vec<String> {
    let r = node.api("GET", &format!("/api/v1/channels/{id}/stream"), None);
    if r.status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["rungs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some(r["name"].as_str()?.to_string()))
        .collect()
}
