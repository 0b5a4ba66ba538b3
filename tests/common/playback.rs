//! What a player page's report (tests/player/play.mjs) must show: playback
//! that advances with the wall clock once started, no stall, no seek over a
//! hole, no fatal error; and its latency figures.

use std::process::Command;

use super::findings::Findings;
use super::{hlsjs_fatal_errors, quantile, repo_root};

/// Runs tests/player/play.mjs: hls.js plays `master_url` for `seconds`,
/// forcing a level switch every `switch_every_s` seconds (0: ABR alone),
/// then opens `play_page` if given. Returns its JSON report; panics when it
/// printed none.
pub fn play_hlsjs(
    master_url: &str,
    seconds: u32,
    play_page: Option<&str>,
    switch_every_s: u32,
) -> serde_json::Value {
    run_page_script(
        "tests/player/play.mjs",
        &[
            master_url,
            &seconds.to_string(),
            play_page.unwrap_or("-"),
            &switch_every_s.to_string(),
        ],
    )
}

/// Like [`play_hlsjs`] without a switch or player page, on the top level of
/// those whose video codec starts with `codec` (e.g. `avc1`): the report's
/// `startLevel` is that level's index (-1: none), and each of its `levels`
/// has the `videoCodec` hls.js parsed.
pub fn play_hlsjs_codec(master_url: &str, seconds: u32, codec: &str) -> serde_json::Value {
    run_page_script(
        "tests/player/play.mjs",
        &[master_url, &seconds.to_string(), "-", "0", codec],
    )
}

/// Runs a browser driver script of the repository with node and returns
/// the last JSON line it printed; panics when it printed none.
pub fn run_page_script(script: &str, args: &[&str]) -> serde_json::Value {
    let root = repo_root();
    let out = Command::new("node")
        .arg(root.join(script))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("run node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script} printed no JSON (exit {}):\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        })
}

/// Latency figures of one run, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Playback {
    pub first_frame_s: f64,
    /// hls.js's own estimate (`hls.latency`), median over the run.
    pub latency_p50: f64,
    /// From the node's ingest clock (EXT-X-PROGRAM-DATE-TIME) to the
    /// picture on screen, median over the run.
    pub pdt_latency_p50: f64,
    pub pdt_latency_p90: f64,
}

/// Checks `rep` (the page's `window.report`) of a run of `seconds` into `f`.
pub fn check_playback(f: &Findings, rep: &serde_json::Value, seconds: u32) -> Playback {
    let started_at = rep["firstFrameMs"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let samples = rep["samples"].as_array().cloned().unwrap_or_default();
    let after: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| s["t"].as_f64().unwrap_or(0.0) > started_at + 1.0)
        .collect();
    let at = |s: &serde_json::Value| {
        (
            s["t"].as_f64().unwrap_or(0.0),
            s["currentTime"].as_f64().unwrap_or(0.0),
        )
    };
    f.check(
        after.len() >= (seconds as usize * 2).saturating_sub(6),
        "enough playback samples",
        || format!("{} of {}", after.len(), seconds * 2),
    );
    // Once playing, every 2 s window advanced by at least 1.5 s.
    for w in after.windows(5) {
        let ((t0, c0), (t1, c1)) = (at(w[0]), at(w[4]));
        f.check(
            c1 - c0 >= 0.75 * (t1 - t0),
            "currentTime advances steadily (>= 0.75 x wall clock per 2 s)",
            || format!("from t={t0:.1}s to {t1:.1}s currentTime went {c0:.2} -> {c1:.2}"),
        );
    }
    let waiting = rep["waiting"].as_u64().unwrap_or(0);
    let stalls = rep["stalls"].as_u64().unwrap_or(0);
    let holes = rep["holes"].as_u64().unwrap_or(0);
    let start_stalls = rep["startStalls"].as_u64().unwrap_or(0);
    let placements = rep["placements"].as_u64().unwrap_or(0);
    f.check(
        waiting == 0,
        "no `waiting` events after playback started",
        || {
            format!(
                "{waiting}: {}\nrequests around the first stall: {}",
                rep["events"],
                requests_around_stall(rep, started_at)
            )
        },
    );
    f.check(
        stalls == 0,
        "no hls.js bufferStalledError after the first frame",
        || format!("{stalls}: {}", rep["errors"]),
    );
    f.check(holes == 0, "no hls.js bufferSeekOverHole", || {
        format!("{holes}: {}", rep["errors"])
    });
    let fatal = hlsjs_fatal_errors(rep);
    f.check(fatal.is_empty(), "no fatal hls.js errors", || {
        format!("{fatal:?}")
    });
    let lat: Vec<f64> = after.iter().filter_map(|s| s["latency"].as_f64()).collect();
    let pdt: Vec<f64> = after
        .iter()
        .filter_map(|s| s["pdtLatency"].as_f64())
        .collect();
    f.check(!lat.is_empty(), "hls.latency reported", || {
        "no latency samples".into()
    });
    f.check(!pdt.is_empty(), "hls.playingDate reported", || {
        "no program-date-time samples".into()
    });
    let p = Playback {
        first_frame_s: started_at,
        latency_p50: quantile(&lat, 0.5),
        pdt_latency_p50: quantile(&pdt, 0.5),
        pdt_latency_p90: quantile(&pdt, 0.9),
    };
    eprintln!(
        "hls.js: first frame after {started_at:.2}s, latency p50 {:.3}s, date latency p50 {:.3}s p90 {:.3}s (target {}), waiting {waiting}, stalls {stalls}, holes {holes} (before the first frame: {start_stalls} stalls, {placements} start placements by seek)",
        p.latency_p50,
        p.pdt_latency_p50,
        p.pdt_latency_p90,
        samples
            .last()
            .map_or(serde_json::Value::Null, |s| s["targetLatency"].clone())
    );
    p
}

/// The page's requests that were under way from one second before the
/// first `waiting` after playback started until it played again: what
/// hls.js waited on (a request the node held, or none at all).
fn requests_around_stall(rep: &serde_json::Value, started_at: f64) -> String {
    let events = rep["events"].as_array().cloned().unwrap_or_default();
    let t_of = |e: &serde_json::Value, i: usize| e[i].as_f64().unwrap_or(f64::NAN);
    let Some(at) = events
        .iter()
        .filter(|e| e[0] == "waiting")
        .map(|e| t_of(e, 2))
        .find(|&t| t > started_at)
    else {
        return "none".into();
    };
    let until = events
        .iter()
        .filter(|e| e[0] == "playing")
        .map(|e| t_of(e, 1))
        .find(|&t| t > at)
        .unwrap_or(f64::INFINITY);
    // A stall in the first seconds is read with everything since the start.
    let from = if at < 5.0 { 0.0 } else { at - 1.0 };
    let (from_ms, until_ms) = (1000.0 * from, 1000.0 * (until + 0.5));
    let lines: Vec<String> = rep["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            let (start, end) = (t_of(r, 1), t_of(r, 2));
            start <= until_ms && (end == 0.0 || end >= from_ms)
        })
        .take(120)
        .map(|r| format!("{} {}..{}", r[0].as_str().unwrap_or("?"), r[1], r[2]))
        .collect();
    // hls.js's events (time last), and the recorded rows (time first) of its
    // stream controllers' state ([t, state, loadingParts, nextLoadPosition,
    // buffered end, ...]; audio rows say "audio") and of its load decisions,
    // over the same window.
    let in_window = |t: f64| t >= from && t <= until + 0.5;
    let window = |key: &str, at_end: bool, limit: usize| -> Vec<String> {
        rep[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                let t = if at_end {
                    r.as_array().and_then(|a| a.last())
                } else {
                    r.get(0)
                };
                t.and_then(|t| t.as_f64()).is_some_and(in_window)
            })
            .take(limit)
            .map(|r| r.to_string())
            .collect()
    };
    let hls_events = window("events", true, 200);
    let trace = window("trace", false, 400);
    let calls = window("calls", false, 600);
    format!(
        "waiting at {at:.2} s, playing again at {until:.2} s (ms from page start; end 0: never answered):\n  {}\nhls.js events:\n  {}\nstream controller:\n  {}\nits decisions:\n  {}",
        lines.join("\n  "),
        hls_events.join("\n  "),
        trace.join("\n  "),
        calls.join("\n  ")
    )
}
