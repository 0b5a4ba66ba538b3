//! What the ladder benches (ladder.rs, gpu_pipeline.rs, multitrack.rs) share: the input, the `standard` ladder, the rungs and FFmpeg CLI commands, CPU time, bitrate, PSNR and SSIM.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const SOURCE_GRAPH: &str = "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t+u";
pub const SOURCE_KBPS: u32 = 6000;

/// The standard ladder for a 1080p source: (name, width, height, kb/s).
pub const LADDER: [(&str, u32, u32, u32); 4] = [
    ("720p", 1280, 720, 3000),
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 700),
    ("160p", 284, 160, 250),
];

/// The encoder the FFmpeg CLI's rungs get; with [`GOP`], the x264 options
/// rungs and the CLI share.
pub const X264: [&str; 4] = ["-c:v", "libx264", "-preset", "veryfast"];

/// IDR every 60 frames, in the input and in every rung.
pub const GOP: [&str; 6] = ["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"];

/// The input (`input-1080p30-{seconds}s.mp4` in `dir`), generated once and
/// kept; regenerated when the recipe kept in `dir/recipe_name` changes.
/// `note` goes to stderr while it is generated.
pub fn make_input(
    dir: &Path,
    seconds: u32,
    recipe_name: &str,
    note: &str,
) -> Result<PathBuf, String> {
    make_input_of(dir, "input", SOURCE_GRAPH, seconds, recipe_name, note)
}

/// [`make_input`] of another picture: `seconds` of the lavfi `graph` (one
/// source, or a graph whose output is labelled `[out0]`) with a 440 Hz tone,
/// encoded like a 1080p30 contribution stream into
/// `{stem}-1080p30-{seconds}s.mp4` in `dir`.
pub fn make_input_of(
    dir: &Path,
    stem: &str,
    graph: &str,
    seconds: u32,
    recipe_name: &str,
    note: &str,
) -> Result<PathBuf, String> {
    let input = dir.join(format!("{stem}-1080p30-{seconds}s.mp4"));
    let recipe_file = dir.join(recipe_name);
    let seconds = seconds.to_string();
    let (rate, buf) = (format!("{SOURCE_KBPS}k"), format!("{}k", 2 * SOURCE_KBPS));
    let mut args: Vec<&str> = vec![
        "-f",
        "lavfi",
        "-i",
        graph,
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
    ];
    args.extend(GOP);
    args.extend(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"]);
    let recipe = args.join(" ");
    if input.exists() && std::fs::read_to_string(&recipe_file).ok().as_deref() == Some(&recipe) {
        return Ok(input);
    }
    eprintln!("{note}");
    let mut cmd = ffmpeg();
    cmd.args(&args).arg(&input);
    check(&mut cmd)?;
    std::fs::write(&recipe_file, recipe).expect("write the recipe");
    Ok(input)
}

pub fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]);
    cmd
}

/// Runs `cmd` to completion and returns its stdout, or why not (with its
/// stderr).
pub fn check(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?} ({e}); apt-get install ffmpeg"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

pub fn count_frames(input: &Path) -> Result<u64, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(input);
    let out = check(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("ffprobe prints a packet count"))
}

/// `rungs transcode --json` of `input` into `out` (emptied first).
pub fn rungs_command(bin: &Path, input: &Path, out: &Path, config: Option<&Path>) -> Command {
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

/// What an operator would script, into `out` (emptied first): one decode,
/// `split`, a scaler and one libx264 per rung, the source copied. The scaler
/// is the CLI's default `scale` (bicubic), or with `cuda` NVDEC decode into
/// device memory, `scale_cuda` (bicubic too) and one download per rung.
pub fn ffmpeg_command(input: &Path, out: &Path, cuda: bool) -> Command {
    let _ = std::fs::remove_dir_all(out);
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
            .args(GOP)
            .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &buf])
            .arg(out.join(format!("{name}.mp4")));
    }
    cmd.args(["-map", "0:v", "-map", "0:a", "-c", "copy"])
        .arg(out.join("source.mp4"));
    cmd
}

/// Clock ticks per second of /proc's counters (USER_HZ).
pub fn clock_ticks() -> f64 {
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
pub fn children_cpu() -> f64 {
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

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn median(mut v: Vec<f64>) -> f64 {
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
pub fn psnr(input: &Path, rungs: &[PathBuf]) -> Vec<f64> {
    measure(input, rungs, false)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// [`psnr`] and SSIM (`All`) of each rung file, in the same one FFmpeg run.
pub fn psnr_ssim(input: &Path, rungs: &[PathBuf]) -> Vec<(f64, f64)> {
    psnr_ssim_at(input, rungs, &ladder_sizes(), Pairing::Time)
}

/// The standard ladder's (width, height), in order.
fn ladder_sizes() -> Vec<(u32, u32)> {
    LADDER.iter().map(|r| (r.1, r.2)).collect()
}

/// How [`psnr_ssim_at`] pairs a rung's frames with the input's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// By presentation time, both rebased to zero.
    Time,
    /// By index: for a millisecond-timed input (Matroska, FLV), whose times
    /// beside a rung's 90 kHz ones pair a frame with its neighbour.
    Index,
}

/// [`psnr_ssim`] of rungs of any `sizes` (one per file, in order).
pub fn psnr_ssim_at(
    input: &Path,
    rungs: &[PathBuf],
    sizes: &[(u32, u32)],
    pairing: Pairing,
) -> Vec<(f64, f64)> {
    measure_at(input, rungs, sizes, true, pairing)
        .into_iter()
        .map(|(p, s)| (p, s.expect("measured with ssim")))
        .collect()
}

fn measure(input: &Path, rungs: &[PathBuf], ssim: bool) -> Vec<(f64, Option<f64>)> {
    measure_at(input, rungs, &ladder_sizes(), ssim, Pairing::Time)
}

fn measure_at(
    input: &Path,
    rungs: &[PathBuf],
    sizes: &[(u32, u32)],
    ssim: bool,
    pairing: Pairing,
) -> Vec<(f64, Option<f64>)> {
    let n = rungs.len();
    let setpts = match pairing {
        Pairing::Time => "setpts=PTS-STARTPTS",
        Pairing::Index => "settb=1/30,setpts=N",
    };
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info"]);
    for r in rungs {
        cmd.arg("-i").arg(r);
    }
    cmd.arg("-i").arg(input);
    let mut graph = format!("[{n}:v]{setpts},split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (w, h)) in sizes.iter().enumerate().take(n) {
        graph.push_str(&format!(
            ";[s{i}]scale={w}:{h}:flags=lanczos[r{i}];[{i}:v]{setpts}[d{i}]"
        ));
        if ssim {
            graph.push_str(&format!(
                ";[r{i}]split[rp{i}][rs{i}];[d{i}]split[dp{i}][ds{i}];[dp{i}][rp{i}]psnr;[ds{i}][rs{i}]ssim"
            ));
        } else {
            graph.push_str(&format!(";[d{i}][r{i}]psnr"));
        }
    }
    cmd.args(["-filter_complex", &graph, "-f", "null", "-"]);
    let out = cmd.output().expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "PSNR run failed:\n{log}");
    let psnr = summaries(&log, "psnr", "average:", n);
    if !ssim {
        return psnr.into_iter().map(|p| (p, None)).collect();
    }
    let ssim = summaries(&log, "ssim", "All:", n);
    psnr.into_iter().zip(ssim.into_iter().map(Some)).collect()
}

/// The `n` values after `key` in the summary lines of the `filter`s in an
/// FFmpeg log, in graph order. `Parsed_{filter}_K`: K is the filter's index
/// in the graph, which lists the rungs in order; the summaries may be
/// printed in another order.
fn summaries(log: &str, filter: &str, key: &str, n: usize) -> Vec<f64> {
    let tag = format!("Parsed_{filter}_");
    let mut found: Vec<(usize, f64)> = log
        .lines()
        .filter_map(|l| {
            let k = l
                .split(tag.as_str())
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?;
            let v = l.split(key).nth(1)?.split_whitespace().next()?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    found.sort_by_key(|f| f.0);
    assert_eq!(
        found.len(),
        n,
        "{n} {filter} summaries expected in ffmpeg's output:\n{log}"
    );
    found.into_iter().map(|f| f.1).collect()
}

/// Video bitrate from the packets' sizes over the input's duration.
pub fn kbps_of(file: &Path, seconds: u32) -> Result<f64, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(file);
    let out = check(&mut cmd)?;
    let bytes: f64 = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .sum();
    Ok(bytes * 8.0 / f64::from(seconds) / 1000.0)
}

/// CPU seconds all CPUs spent busy since boot (the `cpu` line of /proc/stat,
/// less idle and iowait).
pub fn machine_busy() -> f64 {
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
