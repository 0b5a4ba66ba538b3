//! Program-date-time latency of real players on a release node: how far
//! behind the node's ingest clock the picture on screen is.
//!
//! `cargo bench --bench playback` (as root: the WHIP half runs in a
//! loopback-only network namespace): for an RTMP publish (ffmpeg, 640x360,
//! `standard` ladder: the source and a transcoded 160p rung) and then a WHIP
//! publish (headless Chromium's camera, which ramps its resolution), plays
//! each of {hls.js with the README's settings, hls.js with
//! `lowLatencyMode` alone, Shaka Player with `streaming.lowLatencyMode`}
//! held on the source and on the 160p rung, one
//! after the other, for RUNGS_BENCH_SECONDS (default 60) each (only the
//! players named in RUNGS_BENCH_PLAYERS, comma-separated, when set), and prints a
//! table: median and p90 latency, stalls once playing, time to first frame.
//! The goal is a median of at most 1.0 s and no stall in every row.
//!
//! Needs what `make test` installs (Chromium, node_modules with hls.js and
//! shaka-player, ffmpeg).

#[path = "../tests/common/mod.rs"]
mod common;
// The tests' publisher processes; this benchmark uses the Chromium one only.
#[path = "common/env.rs"]
mod env;
#[allow(dead_code)]
#[path = "../tests/whip/peer.rs"]
mod peer;
#[path = "common/release.rs"]
mod release;

use common::*;
use env::env_parse;
use peer::Peer;
use release::release_binary;
use std::time::Duration;

const PLAYERS: [&str; 3] = ["hlsjs", "hlsjs-plain", "shaka"];
const RENDITIONS: [&str; 2] = ["source", "160p"];

struct Row {
    ingest: &'static str,
    player: &'static str,
    rendition: &'static str,
    p50: f64,
    p90: f64,
    stalls: u64,
    first_frame_s: f64,
    note: String,
}

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u32 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(60);
    let players: Vec<&str> = match std::env::var("RUNGS_BENCH_PLAYERS") {
        Ok(list) => PLAYERS
            .into_iter()
            .filter(|p| list.split(',').any(|w| w.trim() == *p))
            .collect(),
        Err(_) => PLAYERS.to_vec(),
    };
    assert!(
        !players.is_empty(),
        "RUNGS_BENCH_PLAYERS names none of {PLAYERS:?}"
    );
    // Each row plays `secs` after up to 40 s of start-up: a publisher must
    // last them all.
    let publish_secs = (secs + 40) * (players.len() * RENDITIONS.len()) as u32;
    let bin = release_binary();
    let mut rows = Vec::new();

    {
        let tmp = tempfile::Builder::new()
            .prefix("rungs-bench-")
            .tempdir()
            .expect("temp dir");
        let node = Node::start_in(tmp.path(), NodeConfig::default(), &bin);
        let ch = node.create_channel_with_ladder("playback-rtmp", "standard");
        // The default stops after 5 minutes.
        let opts = PubOpts {
            max_seconds: publish_secs,
            ..PubOpts::default()
        };
        let publisher = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, tmp.path());
        node.attach_log(&publisher.log_path);
        wait_rungs(&node, &ch.id);
        play_all(&node, &ch.id, "RTMP", &players, secs, &mut rows);
    }

    let ns = Netns::new("bench_playback_whip");
    ns.run_in(|| {
        let tmp = tempfile::Builder::new()
            .prefix("rungs-bench-")
            .tempdir()
            .expect("temp dir");
        let node = Node::start_in(tmp.path(), NodeConfig::default(), &bin);
        let ch = node.create_channel_with_ladder("playback-whip", "standard");
        let mut peer = Peer::chromium(
            &node.whip_url(&ch.id),
            &ch.stream_key,
            publish_secs,
            tmp.path(),
        );
        node.attach_log(&peer.log_path);
        let p = peer.published(Duration::from_secs(30));
        assert_eq!(p.status, 201, "WHIP POST: {}", p.json);
        wait_rungs(&node, &ch.id);
        play_all(&node, &ch.id, "WHIP", &players, secs, &mut rows);
        // The figures are in: no need to wait for the publisher's DELETE.
        peer.kill();
    });

    println!();
    println!(
        "program-date-time latency, {secs} s per row, 200 ms parts (goal: median <= 1.0 s, 0 stalls)"
    );
    println!(
        "{:<6} {:<11} {:<9} {:>8} {:>8} {:>7} {:>12}  note",
        "ingest", "player", "rendition", "p50 s", "p90 s", "stalls", "1st frame s"
    );
    for r in &rows {
        println!(
            "{:<6} {:<11} {:<9} {:>8.3} {:>8.3} {:>7} {:>12.2}  {}",
            r.ingest, r.player, r.rendition, r.p50, r.p90, r.stalls, r.first_frame_s, r.note
        );
    }
}

/// Waits until the source, the 160p rung and audio have complete segments.
fn wait_rungs(node: &Node, id: &str) {
    let http = Http::new();
    for r in ["source", "160p", "audio"] {
        let url = node.media_url(id, r);
        wait_playlist(&http, &url, 2, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{url} never had 2 complete segments;\n{}", node.log()));
    }
}

fn play_all(
    node: &Node,
    id: &str,
    ingest: &'static str,
    players: &[&'static str],
    secs: u32,
    rows: &mut Vec<Row>,
) {
    for &player in players {
        for rendition in RENDITIONS {
            let v = run_page_script(
                "bench/playback/play.mjs",
                &[player, &node.master_url(id), &secs.to_string(), rendition],
            );
            let rep = &v["report"];
            let pdt: Vec<f64> = rep["samples"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["pdt"].as_f64()).collect())
                .unwrap_or_default();
            let errors: Vec<String> = rep["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|e| e["fatal"] == true)
                        .map(|e| e["details"].to_string())
                        .collect()
                })
                .unwrap_or_default();
            let mut note = format!("level {}p", rep["level"]);
            if !rep["startAt"].is_null() {
                note = format!("{note}, started at {}", rep["startAt"]);
            }
            if v["ok"] != true {
                note = format!("failed: {}", v["error"]);
            } else if !errors.is_empty() {
                note = format!("fatal: {}", errors.join(", "));
            }
            eprintln!(
                "{ingest} {player} {rendition}: p50 {:.3} s, stalls {}",
                quantile(&pdt, 0.5),
                rep["stalls"]
            );
            rows.push(Row {
                ingest,
                player,
                rendition,
                p50: quantile(&pdt, 0.5),
                p90: quantile(&pdt, 0.9),
                stalls: rep["stalls"].as_u64().unwrap_or(0),
                first_frame_s: rep["firstFrameS"].as_f64().unwrap_or(f64::NAN),
                note,
            });
        }
    }
}
