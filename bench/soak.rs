//! A long live soak of a release node: does anything grow that should not?
//!
//! `cargo bench --bench soak`: one live-paced 720p30 RTMP publish into a
//! `standard` ladder channel (the source passed through, 480p/360p/160p
//! transcoded), a player-like client reloading the source and 360p
//! playlists and fetching their newest parts, and every 10 s the node's
//! resident memory, open file descriptors and threads. At the end it prints
//! each series' least-squares slope per hour after the first two minutes
//! (warm-up: pools and the playlist window fill) and over the last half with
//! its range, and the GOPs the ladder dropped. Goal: flat, i.e. a slope that over a day would
//! stay within the noise of the samples.
//!
//! Env: RUNGS_SOAK_MINUTES (default 30).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/release.rs"]
mod release;

use common::*;
use release::release_binary;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(120);

/// One sample: seconds since the start, RSS bytes, open fds, threads.
type Sample = (f64, f64, f64, f64);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let minutes: f64 = std::env::var("RUNGS_SOAK_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("rungs-soak-")
        .tempdir()
        .expect("tempdir");
    let node = Node::start_in(tmp.path(), NodeConfig::default(), &bin);
    let pid = node.pid().expect("node running");
    let ch = node.create_channel_with_ladder("soak", "standard");
    let opts = PubOpts {
        width: 1280,
        height: 720,
        preset: "ultrafast",
        video_bitrate_k: 2500,
        max_seconds: (minutes * 60.0) as u32 + 120,
        ..Default::default()
    };
    let mut publisher = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, tmp.path());
    node.attach_log(&publisher.log_path);
    let urls = [
        node.media_url(&ch.id, "source"),
        node.media_url(&ch.id, "360p"),
    ];
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        let r = node.http.try_get(&urls[1]).ok()?;
        (r.status == 200 && r.text().contains("#EXT-X-PART:")).then_some(())
    })
    .unwrap_or_else(|| panic!("the 360p rung never listed a part\n{}", node.log()));

    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = t0;
    let mut fetched = 0u64;
    eprintln!("soak: {minutes} min, sampling every {EVERY:?}");
    while Instant::now() < end {
        if Instant::now() >= next {
            let s = sample(pid, t0.elapsed().as_secs_f64());
            eprintln!(
                "t={:>6.0}s rss={:.1} MB fds={} threads={}",
                s.0,
                s.1 / 1e6,
                s.2,
                s.3
            );
            samples.push(s);
            next += EVERY;
        }
        // A player's work: each playlist and its newest part, twice a second.
        for u in &urls {
            if let Ok(r) = node.http.try_get(u)
                && let Some(part) = newest_part(&r.text())
            {
                let base = &u[..u.rfind('/').map_or(0, |i| i + 1)];
                if node.http.try_get(&format!("{base}{part}")).is_ok() {
                    fetched += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = node.metrics();
    let dropped = m.sum("rungs_rung_dropped_gops_total", &[]);
    let cut = m.sum("rungs_ingest_cut_total", &[]);
    let running = publisher.running();
    publisher.stop();

    let steady: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.0 >= WARM_UP.as_secs_f64())
        .collect();
    println!(
        "soak {minutes} min, {} samples after {}s warm-up, {fetched} parts fetched",
        steady.len(),
        WARM_UP.as_secs()
    );
    if steady.len() < 2 {
        println!("the run was shorter than the warm-up: no slopes");
    } else {
        print_slopes(&steady);
    }
    println!(
        "dropped GOPs {dropped}, publishers cut {cut}, publisher still running at the end: {running}"
    );
}

/// Each series' slope per hour after warm-up and over the last half.
fn print_slopes(steady: &[Sample]) {
    for (name, unit, scale, pick) in [
        ("rss", "MB", 1e6, 1usize),
        ("fds", "", 1.0, 2),
        ("threads", "", 1.0, 3),
    ] {
        let series: Vec<(f64, f64)> = steady
            .iter()
            .map(|s| (s.0, [s.1, s.2, s.3][pick - 1] / scale))
            .collect();
        // Allocators and pools settle over minutes, not seconds: the last
        // half says whether anything still grows.
        let last_half = &series[series.len() / 2..];
        let (lo, hi) = last_half
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        println!(
            "{name:>8}: slope {:+.2} {unit}/hour after warm-up, {:+.2} {unit}/hour over the last half (range {lo:.1}..{hi:.1} {unit})",
            slope(&series) * 3600.0,
            slope(last_half) * 3600.0
        );
    }
}

fn sample(pid: u32, t: f64) -> Sample {
    let field = |name| status_field(pid, name).unwrap_or(0) as f64;
    (
        t,
        field("VmRSS") * 1024.0,
        open_fds(pid) as f64,
        field("Threads"),
    )
}

/// The URI of the playlist's last part.
fn newest_part(playlist: &str) -> Option<String> {
    playlist
        .lines()
        .rev()
        .find(|l| l.starts_with("#EXT-X-PART:"))
        .and_then(|l| l.split("URI=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
}

/// Least-squares slope of `points` (per second).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}
