//! hls.js in headless Chromium plays a live channel for 20 s without
//! stalling, at low latency. Needs /usr/bin/chromium and `npm install`
//! (node_modules/hls.js, node_modules/playwright-core): it fails, not skips,
//! when they are missing.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const PLAY_SECONDS: u32 = 20;
const MAX_LATENCY_S: f64 = 3.0;

#[test]
fn browser_hlsjs_plays_20s() {
    let root = repo_root();
    require_browser();

    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel("browser");
    let mut publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        2,
        Duration::from_secs(25),
    )
    .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", publisher.log()));

    let page = node.url(&format!("/play/{}", ch.id));
    let pr = http.get(&page);
    assert_eq!(pr.status, 200, "GET {page}");
    assert!(
        pr.content_type() == "text/html",
        "player page Content-Type {:?}",
        pr.content_type()
    );

    let probe = TimelineProbe::start(&node.master_url(&ch.id));
    let out = Command::new("node")
        .arg(root.join("tests/player/play.mjs"))
        .arg(node.master_url(&ch.id))
        .arg(PLAY_SECONDS.to_string())
        .arg(&page)
        .current_dir(&root)
        .output()
        .expect("run node tests/player/play.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "play.mjs printed no JSON (exit {}):\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("play.mjs JSON");
    assert!(
        v["ok"] == true,
        "browser playback failed: {}\nreport: {}\nconsole: {}\nstderr: {stderr}",
        v["error"],
        v["report"],
        v["console"]
    );
    let rep = &v["report"];
    eprintln!("REPORT {}", rep);
    let samples = rep["samples"].as_array().cloned().unwrap_or_default();
    let f = Findings::default();
    let timeline = probe.finish();
    eprintln!("timeline:\n{}", timeline.summary());
    timeline.check(&f, "timeline");

    // Playback advanced steadily: once playing, every 2 s window advanced >= 1.5 s.
    let started_at = rep["firstFrameMs"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let after: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                s["t"].as_f64().unwrap_or(0.0),
                s["currentTime"].as_f64().unwrap_or(0.0),
            )
        })
        .filter(|(t, _)| *t > started_at + 1.0)
        .collect();
    f.check(
        after.len() >= (PLAY_SECONDS as usize * 2 - 4),
        "enough playback samples",
        || format!("{}", after.len()),
    );
    for w in after.windows(5) {
        let (t0, c0) = w[0];
        let (t1, c1) = w[4];
        f.check(
            c1 - c0 >= 0.75 * (t1 - t0),
            "currentTime advances steadily (>= 0.75 x wall clock per 2 s)",
            || format!("from t={t0:.1}s to {t1:.1}s currentTime went {c0:.2} -> {c1:.2}"),
        );
    }
    let first = after.first().copied().unwrap_or((0.0, 0.0));
    let lastp = after.last().copied().unwrap_or((0.0, 0.0));
    let played = lastp.1 - first.1;
    f.check(
        played >= 0.9 * (lastp.0 - first.0),
        "played >= 90% of wall time",
        || format!("played {played:.2}s in {:.2}s", lastp.0 - first.0),
    );
    let waiting = rep["waiting"].as_u64().unwrap_or(0);
    let stalls = rep["stalls"].as_u64().unwrap_or(0);
    f.check(
        waiting == 0,
        "no `waiting` events after playback started",
        || format!("{waiting}: {}", rep["events"]),
    );
    f.check(stalls == 0, "no hls.js bufferStalledError", || {
        format!("{stalls}: {}", rep["errors"])
    });
    let fatal = hlsjs_fatal_errors(rep);
    f.check(fatal.is_empty(), "no fatal hls.js errors", || {
        format!("{fatal:?}")
    });

    // Latency reported by hls.js over the last 10 s.
    let lat: Vec<f64> = samples
        .iter()
        .filter(|s| s["t"].as_f64().unwrap_or(0.0) > started_at + PLAY_SECONDS as f64 - 10.0)
        .filter_map(|s| s["latency"].as_f64())
        .collect();
    let lat50 = quantile(&lat, 0.5);
    let latmax = lat.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "hls.js: first frame after {:.2}s, latency p50 {lat50:.3}s max {latmax:.3}s (target {}), waiting {waiting}, stalls {stalls}",
        started_at,
        samples
            .last()
            .map_or(serde_json::Value::Null, |s| s["targetLatency"].clone())
    );
    f.check(!lat.is_empty(), "hls.latency reported", || {
        "no latency samples".into()
    });
    f.check(lat50 < MAX_LATENCY_S, "hls.js latency p50 < 3 s", || {
        format!("p50 {lat50:.3}s, samples {lat:?}")
    });

    // The node's own player page plays too and shows a latency.
    let pp = &v["play_page"];
    f.check(pp["played"] == true, "/play/ID plays", || format!("{pp}"));
    let text = pp["text"].as_str().unwrap_or("").to_ascii_lowercase();
    f.check(
        {
            // e.g. "Latency\n1.17 s"
            let i = text.find("latency");
            i.is_some_and(|i| {
                text[i + 7..]
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit())
            })
        },
        "/play/ID shows the live latency",
        || format!("page text {text:?}"),
    );

    f.check(
        publisher.try_status().is_none(),
        "publisher still running",
        || format!("{:?}", publisher.try_status()),
    );
    if !f.is_empty() {
        eprintln!("browser console: {}", v["console"]);
    }
    f.assert_empty("browser_hlsjs_plays_20s");
}
