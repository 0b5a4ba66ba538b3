//! What an Enhanced RTMP multitrack publish saves a node, and what HEVC ingest costs in latency.
//!
//! `cargo bench --bench multitrack`: makes two clips once with FFmpeg 9 (`.ffmpeg9/ffmpeg`),
//! 20 s at 30 fps in Matroska, from `testsrc2` with temporal grain (as bench/ladder.rs, so that
//! decoding and encoding do a camera's work):
//!
//! - `ladder.mkv`: three H.264 streams cut from one picture, 1920x1080 at 4000k, 1280x720 at
//!   2500k and 640x360 at 700k (libx264 `veryfast`, VBV maxrate = bitrate and bufsize = 2 x
//!   bitrate, IDR every 60 frames on every stream: the GOPs line up), and AAC;
//! - `hevc720.mkv`: the same 720p picture in HEVC (libx265 `ultrafast`, IDR every 60 frames,
//!   closed GOPs, 2500k), and AAC.
//!
//! Then one release node, and one run after the other on it, each on a channel of its own with
//! the `standard` ladder, published with `-re -stream_loop -1 ... -c copy -f flv` (the node's work
//! is measured, not the publisher's encoding):
//!
//! - `fill`: the three streams as one multitrack publish; the channel's default `tracks = fill`
//!   makes 720p and 360p of the publisher's tracks, 480p and 160p transcoded from 1080p;
//! - `full`: the 1080p stream alone: 720p/480p/360p/160p transcoded;
//! - `passthrough-only`: the multitrack publish on a channel with `{"tracks":
//!   "passthrough-only"}`: nothing transcoded;
//! - `h264-720p`: the clip's 720p H.264 stream alone (the reference for HEVC);
//! - `hevc-720p`: the HEVC clip.
//!
//! Each run waits for a complete segment of every rendition, then 4 s, then measures a steady
//! window of RUNGS_BENCH_SECONDS: the node's CPU seconds (utime + stime of /proc/<pid>/stat) over
//! wall seconds, i.e. cores used, the publisher's likewise, the rest of the machine's (other
//! work on a shared machine: a run with much of it is not a clean measurement), the GOPs and
//! packets the channel dropped, and the node's own `rungs_ingest_to_part_seconds` per rendition
//! over the window only (the histogram read at both ends and subtracted; quantiles interpolated
//! within its buckets, as Prometheus does: the buckets are 0.2, 0.25, 0.3, 0.4, 0.5 s around these
//! figures, so a p50 is coarse; the mean, from the sum and count, is exact). The publisher is
//! then stopped and the channel's end awaited before the next run. Printed: cores per run with
//! fill/full and passthrough-only/full, mean/p50/p90 per rendition, and HEVC/H.264 p50 and mean
//! per video rendition.
//!
//! Env: RUNGS_BENCH_SECONDS (default 30), RUNGS_BENCH_WARMUP (seconds after every rendition's
//! first segment, default 4), RUNGS_BENCH_RUNS (a comma-separated subset of the runs above).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/env.rs"]
mod env;
// The ladder bench's helpers; this one uses two of them.
#[allow(dead_code)]
#[path = "common/ladder_bench.rs"]
mod ladder_bench;
#[path = "common/release.rs"]
mod release;

use common::*;
use env::env_parse;
use ladder_bench::machine_busy;
use release::release_binary;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Seconds of each clip (looped by the publisher).
const CLIP_SECONDS: u32 = 20;
/// The clips' picture: moving edges, text and a camera's grain.
const PICTURE: &str = "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t+u";
const HISTOGRAM: &str = "rungs_ingest_to_part_seconds";

/// One run: which clip, which of its video streams, the channel's rules, and the renditions
/// (with who makes each) it must give; `None` takes what the node plans.
struct Run {
    name: &'static str,
    clip: ClipName,
    maps: &'static [&'static str],
    rules: Option<&'static str>,
    want: Option<&'static [(&'static str, &'static str)]>,
}

#[derive(Clone, Copy)]
enum ClipName {
    Ladder,
    Hevc,
}

const RUNS: [Run; 5] = [
    Run {
        name: "fill",
        clip: ClipName::Ladder,
        maps: &["0:v:0", "0:v:1", "0:v:2"],
        rules: None,
        want: Some(&[
            ("source", "passthrough"),
            ("720p", "passthrough"),
            ("480p", "libx264"),
            ("360p", "passthrough"),
            ("160p", "libx264"),
        ]),
    },
    Run {
        name: "full",
        clip: ClipName::Ladder,
        maps: &["0:v:0"],
        rules: None,
        want: Some(&[
            ("source", "passthrough"),
            ("720p", "libx264"),
            ("480p", "libx264"),
            ("360p", "libx264"),
            ("160p", "libx264"),
        ]),
    },
    Run {
        name: "passthrough-only",
        clip: ClipName::Ladder,
        maps: &["0:v:0", "0:v:1", "0:v:2"],
        rules: Some(r#"{"tracks": "passthrough-only"}"#),
        want: Some(&[
            ("source", "passthrough"),
            ("720p", "passthrough"),
            ("360p", "passthrough"),
        ]),
    },
    Run {
        name: "h264-720p",
        clip: ClipName::Ladder,
        maps: &["0:v:1"],
        rules: None,
        want: None,
    },
    Run {
        name: "hevc-720p",
        clip: ClipName::Hevc,
        maps: &["0:v:0"],
        rules: None,
        want: None,
    },
];

/// What one run measured over its steady window.
struct Measured {
    name: &'static str,
    wall_s: f64,
    node_cores: f64,
    publisher_cores: f64,
    other_cores: f64,
    dropped_gops: f64,
    dropped_packets: f64,
    /// Rendition, who makes it, and its latency over the window.
    renditions: Vec<Rendition>,
}

struct Rendition {
    name: String,
    encoder: String,
    parts: f64,
    /// Exact, from the histogram's sum and count.
    mean: Option<f64>,
    p50: Option<f64>,
    p90: Option<f64>,
}

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(30);
    let warmup: u64 = env_parse("RUNGS_BENCH_WARMUP").unwrap_or(4);
    let only: Option<Vec<String>> = std::env::var("RUNGS_BENCH_RUNS")
        .ok()
        .map(|s| s.split(',').map(|r| r.trim().to_string()).collect());
    let runs: Vec<&Run> = RUNS
        .iter()
        .filter(|r| only.as_ref().is_none_or(|o| o.iter().any(|n| n == r.name)))
        .collect();
    assert!(
        !runs.is_empty(),
        "RUNGS_BENCH_RUNS names none of {:?}",
        RUNS.iter().map(|r| r.name).collect::<Vec<_>>()
    );

    println!("rungs multitrack bench, {}", date());
    println!("  machine: {} CPUs, {}", nproc(), cpu_model());
    println!(
        "  {secs} s steady window per run after every rendition's first segment + {warmup} s; 200 ms parts, 2 s segments"
    );

    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("rungs-bench-multitrack-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let t = Instant::now();
    let ladder = runs
        .iter()
        .any(|r| matches!(r.clip, ClipName::Ladder))
        .then(|| {
            let streams = [
                clip_stream(1920, 1080, 4000, 60),
                clip_stream(1280, 720, 2500, 60),
                clip_stream(640, 360, 700, 60),
            ];
            clip(dir, "ladder", PICTURE, &streams, CLIP_SECONDS, STUDIO_X264)
        });
    let hevc = runs
        .iter()
        .any(|r| matches!(r.clip, ClipName::Hevc))
        .then(|| {
            let streams = [clip_stream(1280, 720, 2500, 60)];
            clip(dir, "hevc720", PICTURE, &streams, CLIP_SECONDS, X265)
        });
    eprintln!("clips made in {:.0} s", t.elapsed().as_secs_f64());

    // A publisher that stops ends its channel a second later, not ten.
    let cfg = NodeConfig {
        reconnect_grace_s: 1.0,
        ..NodeConfig::default()
    };
    let node = Node::start_in(dir, cfg, &bin);
    let node_pid = node.pid().expect("the node runs");
    let mut results = Vec::new();
    for run in runs {
        let clip = match run.clip {
            ClipName::Ladder => ladder.as_deref(),
            ClipName::Hevc => hevc.as_deref(),
        }
        .expect("the clips the runs need are made");
        let m = measure(&node, node_pid, clip, run, secs, warmup);
        eprintln!(
            "{}: node {:.2} cores, publisher {:.2}, others {:.2}",
            m.name, m.node_cores, m.publisher_cores, m.other_cores
        );
        results.push(m);
    }
    report(&results);
}

/// One run on a fresh channel: publish, warm up, measure the window, stop, wait for the end.
fn measure(node: &Node, node_pid: u32, clip: &Path, run: &Run, secs: u64, warmup: u64) -> Measured {
    let http = Http::new();
    let ch = node.create_channel_with_ladder(&format!("bench-{}", run.name), "standard");
    if let Some(rules) = run.rules {
        let r = node.api(
            "PATCH",
            &format!("/api/v1/channels/{}", ch.id),
            Some(rules.as_bytes()),
        );
        assert_eq!(r.status, 200, "PATCH {rules}: {}", r.text());
    }
    let mut publisher = CopyPublisher::start(
        clip,
        run.maps,
        &node.rtmp_url(&ch.stream_key),
        &node.data_dir,
        run.name,
    );
    node.attach_log(publisher.log_path());

    // Warm-up: the node's plan, then a complete segment of every rendition, then `warmup`.
    let rungs = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
        check_running(&mut publisher, node);
        let r = rungs_of(node, &ch.id);
        (!r.is_empty()).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "{}: the stream API listed no rungs within 60 s; publisher log:\n{}",
            run.name,
            publisher.log()
        )
    });
    // Tracks are placed as they are announced: let a late one show.
    std::thread::sleep(Duration::from_secs(1));
    let rungs = {
        let again = rungs_of(node, &ch.id);
        if again.is_empty() { rungs } else { again }
    };
    if let Some(want) = run.want {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(
            rungs,
            want,
            "{}: the channel's rungs are not the ones this run measures; stream: {}\npublisher log:\n{}",
            run.name,
            stream(node, &ch.id),
            publisher.log()
        );
    }
    let names: Vec<&str> = rungs.iter().map(|(n, _)| n.as_str()).collect();
    wait_all(&http, node, &ch.id, &names, 1, Duration::from_secs(60));
    check_running(&mut publisher, node);
    std::thread::sleep(Duration::from_secs(warmup));

    // The steady window.
    let pub_pid = publisher.pid();
    let m0 = node.metrics();
    let (t0, node0, pub0, busy0) = (
        Instant::now(),
        cpu_seconds(node_pid),
        cpu_seconds(pub_pid),
        machine_busy(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (node1, pub1, busy1) = (cpu_seconds(node_pid), cpu_seconds(pub_pid), machine_busy());
    let wall_s = t0.elapsed().as_secs_f64();
    let m1 = node.metrics();
    check_running(&mut publisher, node);

    let id = ch.id.as_str();
    let delta = |name: &str| m1.sum(name, &[("channel", id)]) - m0.sum(name, &[("channel", id)]);
    let mut renditions: Vec<Rendition> = rungs
        .iter()
        .map(|(n, e)| (n.clone(), e.clone()))
        .chain(std::iter::once(("audio".to_string(), "-".to_string())))
        .map(|(name, encoder)| {
            let labels = [("channel", id), ("rendition", name.as_str())];
            let (b0, b1) = (buckets(&m0, &labels), buckets(&m1, &labels));
            let window = |suffix: &str| {
                let name = format!("{HISTOGRAM}_{suffix}");
                m1.sum(&name, &labels) - m0.sum(&name, &labels)
            };
            let parts = window("count");
            Rendition {
                parts,
                mean: (parts > 0.0).then(|| window("sum") / parts),
                p50: window_quantile(&b0, &b1, 0.5),
                p90: window_quantile(&b0, &b1, 0.9),
                name,
                encoder,
            }
        })
        .collect();
    renditions.retain(|r| r.parts > 0.0 || r.name != "audio");
    let (node_cpu, pub_cpu) = (node1 - node0, pub1 - pub0);
    let measured = Measured {
        name: run.name,
        wall_s,
        node_cores: node_cpu / wall_s,
        publisher_cores: pub_cpu / wall_s,
        other_cores: (busy1 - busy0 - node_cpu - pub_cpu).max(0.0) / wall_s,
        dropped_gops: delta("rungs_rung_dropped_gops_total"),
        dropped_packets: delta("rungs_ingest_dropped_packets_total"),
        renditions,
    };

    // Stop, and wait for the channel to end before the next run starts.
    drop(publisher);
    let ended = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        (node.metrics().sum("rungs_live_channels", &[]) == 0.0).then_some(())
    });
    assert!(
        ended.is_some(),
        "{}: the channel did not end within 30 s of its publisher stopping",
        run.name
    );
    measured
}

fn report(results: &[Measured]) {
    println!();
    println!(
        "{:<17} {:>7} {:>11} {:>11} {:>12} {:>9}  renditions",
        "run", "wall s", "node cores", "publisher", "others", "drops"
    );
    for m in results {
        let made: Vec<String> = m
            .renditions
            .iter()
            .filter(|r| r.name != "audio")
            .map(|r| {
                let by = match r.encoder.as_str() {
                    "passthrough" => "copy",
                    "libx264" => "x264",
                    e => e,
                };
                format!("{}={by}", r.name)
            })
            .collect();
        println!(
            "{:<17} {:>7.1} {:>11.3} {:>11.3} {:>12.3} {:>9}  {}",
            m.name,
            m.wall_s,
            m.node_cores,
            m.publisher_cores,
            m.other_cores,
            format!("{}/{}", m.dropped_gops, m.dropped_packets),
            made.join(" ")
        );
    }
    println!("  (cores: CPU seconds / wall seconds over the window; drops: GOPs/packets dropped)");
    let cores = |name: &str| {
        results
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.node_cores)
    };
    if let Some(full) = cores("full") {
        for r in ["fill", "passthrough-only"] {
            if let Some(c) = cores(r) {
                println!("  node CPU {r}/full: {:.3}", c / full);
            }
        }
    }

    println!();
    println!(
        "ingest-to-part (rungs_ingest_to_part_seconds over the window)\n{:<17} {:<9} {:<12} {:>6} {:>8} {:>8} {:>8}",
        "run", "rendition", "made by", "parts", "mean s", "p50 s", "p90 s"
    );
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    for m in results {
        for r in &m.renditions {
            println!(
                "{:<17} {:<9} {:<12} {:>6} {:>8} {:>8} {:>8}",
                m.name,
                r.name,
                r.encoder,
                r.parts,
                fmt(r.mean),
                fmt(r.p50),
                fmt(r.p90)
            );
        }
    }
    let run = |name: &str| results.iter().find(|m| m.name == name);
    if let (Some(hevc), Some(h264)) = (run("hevc-720p"), run("h264-720p")) {
        // The source, passed through, and the transcoded rungs: the decoder is what differs.
        for r in hevc.renditions.iter().filter(|r| r.name != "audio") {
            let Some(reference) = h264.renditions.iter().find(|x| x.name == r.name) else {
                continue;
            };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.3} / {:.3} = {:.2}", a, b, a / b),
                _ => "n/a".into(),
            };
            println!(
                "  HEVC/H.264 {} ({}): p50 {}, mean {}",
                r.name,
                r.encoder,
                ratio(r.p50, reference.p50),
                ratio(r.mean, reference.mean)
            );
        }
    }
}

/// The channel's rungs as the stream API lists them: (name, encoder), in its order.
fn rungs_of(node: &Node, id: &str) -> Vec<(String, String)> {
    stream(node, id)["rungs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["name"].as_str()?.into(), r["encoder"].as_str()?.into())))
        .collect()
}

fn stream(node: &Node, id: &str) -> serde_json::Value {
    let r = node.api("GET", &format!("/api/v1/channels/{id}/stream"), None);
    if r.status != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

/// The histogram's cumulative buckets (upper bound, count) for one label set, ascending.
fn buckets(m: &Metrics, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = m
        .find(&format!("{HISTOGRAM}_bucket"), labels)
        .iter()
        .filter_map(|s| {
            let le = s.label("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// The q-quantile of what was observed between two readings of a histogram, linear within
/// a bucket (Prometheus' `histogram_quantile`); the lower bound of +Inf's bucket if it falls
/// there.
fn window_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let window: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| {
            let earlier = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c - earlier)
        })
        .collect();
    let total = window.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_c) = (0.0, 0.0);
    for (le, c) in window {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let within = if c > prev_c {
                (rank - prev_c) / (c - prev_c)
            } else {
                0.0
            };
            return Some(prev_le + (le - prev_le) * within);
        }
        (prev_le, prev_c) = (le, c);
    }
    None
}

/// HEVC with closed GOPs, so segments of the source and the rungs start on the same picture.
const X265: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-x265-params",
    "log-level=error:scenecut=0:open-gop=0",
];

/// Panics, with both logs, if the publisher has exited (refused or cut).
fn check_running(publisher: &mut CopyPublisher, node: &Node) {
    if let Some(st) = publisher.exit_status() {
        panic!(
            "the publisher exited ({st}); its log:\n{}\nnode log:\n{}",
            publisher.log(),
            node.log()
        );
    }
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("unix time {:.0}", now_unix()))
}
