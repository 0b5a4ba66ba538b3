//! hls.js switching through every level of a live ladder, and what the
//! node did meanwhile: shared by the ladder and multitrack tests.

use crate::common::*;

/// A gauge or counter of one rung, or None when it is not exported.
pub fn rung_metric(m: &Metrics, name: &str, id: &str, rung: &str) -> Option<f64> {
    let found = m.find(name, &[("channel", id), ("rung", rung)]);
    (!found.is_empty()).then(|| found.iter().map(|s| s.value).sum())
}

pub const PLAY_SECONDS: u32 = 25;

/// One 100 ms sample of the video element.
#[derive(Clone, Copy, Default)]
struct PlaySample {
    t: f64,
    current_time: f64,
    /// hls.currentLevel then.
    level: i64,
}

/// Times currentTime stood still for more than `min` s after playback
/// started: (from t, for how long, level playing when it stopped).
fn stalls(samples: &[PlaySample], min: f64) -> Vec<(f64, f64, i64)> {
    let mut out = Vec::new();
    let Some(&first) = samples.first() else {
        return out;
    };
    let mut moved = first;
    let flush = |moved: PlaySample, t: f64, out: &mut Vec<_>| {
        if t - moved.t > min {
            out.push((moved.t, t - moved.t, moved.level));
        }
    };
    for &s in &samples[1..] {
        if s.current_time > moved.current_time + 1e-3 {
            flush(moved, s.t, &mut out);
            moved = s;
        }
    }
    flush(moved, samples.last().map_or(0.0, |s| s.t), &mut out);
    out
}

/// Per rung: GOPs dropped, transcode latency p50 and GAP segments listed
/// now; and the machine's load average.
fn node_side_report(http: &Http, node: &Node, id: &str, names: &[&str]) -> String {
    let m = node.metrics();
    let mut parts = Vec::new();
    let all = rung_metric(&m, "rungs_rung_dropped_gops_total", id, "*").unwrap_or(0.0);
    parts.push(format!("GOPs dropped by the decoder {all}"));
    for name in &names[1..] {
        let dropped = rung_metric(&m, "rungs_rung_dropped_gops_total", id, name).unwrap_or(0.0);
        let lat = m
            .histogram_quantile(
                "rungs_transcode_latency_seconds",
                &[("channel", id), ("rung", name)],
                0.5,
            )
            .unwrap_or(f64::NAN);
        let gaps = http
            .try_get(&node.media_url(id, name))
            .ok()
            .and_then(|r| parse_media(&r.text()).ok())
            .map_or(0, |pl| pl.segments.iter().filter(|s| s.gap).count());
        parts.push(format!(
            "{name}: dropped GOPs {dropped}, transcode p50 {lat:.2}s, GAP segments listed {gaps}"
        ));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    parts.push(format!("load average {}", load.trim()));
    parts.join("; ")
}

/// hls.js in headless Chromium plays the channel's multivariant playlist
/// for [`PLAY_SECONDS`], forcing every level in turn
/// (`tests/player/ladder.mjs`): each level (heights `expect_heights`,
/// ascending) is switched to and played, no fatal error, no stall over 1 s.
/// `names`: the video renditions, source first, for the node-side report.
/// Returns the script's JSON.
pub fn play_every_level(
    f: &Findings,
    http: &Http,
    node: &Node,
    id: &str,
    names: &[&str],
    expect_heights: &[u64],
) -> serde_json::Value {
    let v = run_page_script(
        "tests/player/ladder.mjs",
        &[&node.master_url(id), &PLAY_SECONDS.to_string()],
    );
    assert!(
        v["ok"] == true,
        "browser playback failed: {}\nswitches: {}\nreport: {}\nconsole: {}",
        v["error"],
        v["switches"],
        v["report"],
        v["console"]
    );
    let rep = &v["report"];

    // hls.js sees every variant with its size.
    let levels = rep["levels"].as_array().cloned().unwrap_or_default();
    let mut heights: Vec<u64> = levels.iter().filter_map(|l| l["height"].as_u64()).collect();
    heights.sort_unstable();
    f.check(
        heights == expect_heights,
        "hls.js parses a level for every video rendition, with its height",
        || format!("{levels:?}, expected heights {expect_heights:?}"),
    );

    // Every level was forced, switched to, and played.
    let switches = v["switches"].as_array().cloned().unwrap_or_default();
    f.check(
        switches.len() == levels.len(),
        "every level forced once",
        || format!("{switches:?}"),
    );
    let switched_to = |lvl: u64, after: f64| {
        rep["switched"].as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s["level"].as_u64() == Some(lvl) && s["t"].as_f64().unwrap_or(0.0) >= after
            })
        })
    };
    for s in &switches {
        let lvl = s["level"].as_u64().unwrap_or(u64::MAX);
        let at = s["forcedAt"].as_f64().unwrap_or(0.0);
        let height = levels
            .get(lvl as usize)
            .map_or(serde_json::Value::Null, |l| l["height"].clone());
        f.check(
            switched_to(lvl, at),
            "LEVEL_SWITCHED for every forced level",
            || {
                format!(
                    "level {lvl} ({height}p) forced at {at:.1}s: {s}; switched {}",
                    rep["switched"]
                )
            },
        );
        f.check(
            s["played"] == true,
            "FRAG_CHANGED (a fragment of it played) for every forced level",
            || {
                format!(
                    "level {lvl} ({height}p) forced at {at:.1}s: {s}; fragChanged {}",
                    rep["fragChanged"]
                )
            },
        );
    }

    let fatal = hlsjs_fatal_errors(rep);
    f.check(fatal.is_empty(), "no fatal hls.js errors", || {
        format!("{fatal:?}")
    });

    // Playback kept advancing, without a stall longer than 1 s.
    let started = rep["firstFrameS"].as_f64().unwrap_or(f64::NAN);
    let samples: Vec<PlaySample> = rep["samples"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| PlaySample {
            t: s["t"].as_f64().unwrap_or(0.0),
            current_time: s["currentTime"].as_f64().unwrap_or(0.0),
            level: s["level"].as_i64().unwrap_or(-1),
        })
        .filter(|s| s.t > started + 0.5)
        .collect();
    f.check(
        samples.len() >= PLAY_SECONDS as usize * 8,
        "enough playback samples (every 100 ms)",
        || format!("{} samples", samples.len()),
    );
    let (first, last) = (
        samples.first().copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    );
    let played = last.current_time - first.current_time;
    let wall = last.t - first.t;
    f.check(
        played >= 0.8 * wall,
        "currentTime advanced >= 80% of wall time while switching",
        || format!("played {played:.2}s in {wall:.2}s"),
    );
    let height = |lvl: i64| {
        usize::try_from(lvl)
            .ok()
            .and_then(|i| levels.get(i))
            .and_then(|l| l["height"].as_u64())
            .map_or_else(|| format!("level {lvl}"), |h| format!("{h}p"))
    };
    let forced: Vec<String> = switches
        .iter()
        .map(|s| {
            format!(
                "{} at {:.1}s",
                height(s["level"].as_i64().unwrap_or(-1)),
                s["forcedAt"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let stalled: Vec<String> = stalls(&samples, 0.3)
        .iter()
        .map(|(t, d, l)| format!("{d:.2}s from {t:.1}s playing {}", height(*l)))
        .collect();
    let longest = stalls(&samples, 0.0)
        .iter()
        .map(|s| s.1)
        .fold(0.0, f64::max);
    // What the node did meanwhile, to tell a starved rung from a player bug.
    let node_side = node_side_report(http, node, id, names);
    f.check(longest <= 1.0, "no stall longer than 1 s", || {
        format!(
            "currentTime stood still {longest:.2}s; stalls over 0.3 s: {stalled:?}; forced {forced:?}; \
             video events {}; hls.js errors {}; node: {node_side}",
            rep["events"], rep["errors"]
        )
    });
    eprintln!(
        "hls.js: first frame {started:.2}s, played {played:.2}s in {wall:.2}s, longest stall {longest:.2}s, \
         stalls over 0.3 s {stalled:?}, waiting {}, forced {forced:?}; node: {node_side}",
        rep["waiting"]
    );

    v
}
