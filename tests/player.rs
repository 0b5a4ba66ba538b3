//! hls.js in headless Chromium plays a live channel of the `standard` ladder
//! for 60 s, forced onto every level in turn and then left to its ABR:
//! no stall once it plays, sub-second latency, and the timeline probe
//! beside it finds no hole, overlap or misalignment in what the node
//! published. Needs /usr/bin/chromium and `npm install`
//! (node_modules/hls.js, node_modules/playwright-core): it fails, not skips,
//! when they are missing.

mod common;

use common::*;

const PLAY_SECONDS: u32 = 60;
/// A forced level switch this often, then ABR for the rest.
const SWITCH_EVERY_S: u32 = 8;
const MAX_LATENCY_S: f64 = 1.0;

#[test]
fn browser_hlsjs_plays_ladder_60s() {
    require_browser();
    let _turn = take_turn();

    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel_with_ladder("browser", "standard");
    // From before the first segment: the multivariant playlist is checked
    // from its first answer on.
    let probe = TimelineProbe::start(&node.master_url(&ch.id));
    let mut publisher = node.publish_live(&ch, 2);

    let page = node.url(&format!("/play/{}", ch.id));
    let pr = http.get(&page);
    assert_eq!(pr.status, 200, "GET {page}");
    assert!(
        pr.content_type() == "text/html",
        "player page Content-Type {:?}",
        pr.content_type()
    );

    let v = play_hlsjs(
        &node.master_url(&ch.id),
        PLAY_SECONDS,
        Some(&page),
        SWITCH_EVERY_S,
    );
    let timeline = probe.finish();
    assert!(
        v["ok"] == true,
        "browser playback failed: {}\nreport: {}\nconsole: {}",
        v["error"],
        v["report"],
        v["console"]
    );
    let rep = &v["report"];
    let f = Findings::default();
    eprintln!("timeline:\n{}", timeline.summary());
    timeline.check(&f, "timeline");
    f.check(
        timeline.renditions.len() == 3,
        "the probe followed source, 160p and audio",
        || timeline.summary(),
    );

    let verdict = check_playback(&f, rep, PLAY_SECONDS);

    // Every level was forced and switched to, after playback started.
    let levels = rep["levels"].as_array().cloned().unwrap_or_default();
    f.check(levels.len() == 2, "hls.js parses source and 160p", || {
        format!("{levels:?}")
    });
    for s in v["forced"].as_array().cloned().unwrap_or_default() {
        let level = s["level"].as_u64();
        f.check(
            rep["switched"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["level"].as_u64() == level)),
            "LEVEL_SWITCHED for every forced level",
            || format!("forced {s}; switched {}", rep["switched"]),
        );
    }
    f.check(
        v["forced"].as_array().is_some_and(|a| a.len() >= 4),
        "levels forced back and forth",
        || format!("{}", v["forced"]),
    );
    f.check(
        verdict.latency_p50 < MAX_LATENCY_S,
        "hls.js latency p50 < 1 s",
        || format!("p50 {:.3}s", verdict.latency_p50),
    );

    // The node's own player page plays, catches up to the target, and shows a latency.
    let pp = &v["play_page"];
    f.check(pp["played"] == true, "/play/ID plays", || format!("{pp}"));
    f.check(
        pp["latency"].as_f64().is_some_and(|l| l < MAX_LATENCY_S),
        "/play/ID reaches sub-second latency (its playback rate control)",
        || format!("{pp}"),
    );
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
        eprintln!("hls.js report: {rep}");
    }
    f.assert_empty("browser_hlsjs_plays_ladder_60s");
}

/// hls.js 1.7 can take a segment for buffered that it never loaded (a part
/// that finished buffering after the playlist update completing its
/// segment): it stops where that segment starts. The page is made to reach
/// that state on purpose (tests/player/stuck.mjs). As the fault arises
/// (`held`: the tracker is wrong until the segment is taken off it), the
/// node's player helper has hls.js load the segment before the playhead
/// gets there: no stall at all; without the helper hls.js stops there
/// (which shows the fault is real). Where the helper cannot correct the
/// tracker (the default: it stays wrong), it seeks past the segment, and
/// playback goes on within seconds. That stall also raises hls.js's target
/// latency by a second: the helper lowers it again 20 s later, hls.js alone
/// never does.
#[test]
fn browser_hlsjs_helper_ends_a_stall_on_a_segment_never_loaded() {
    require_browser();
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel_with_ladder("stuck", "passthrough");
    let _publisher = node.publish_live(&ch, 2);

    let f = Findings::default();

    let v = run_page_script(
        "tests/player/stuck.mjs",
        &[&node.master_url(&ch.id), "12", "on", "held"],
    );
    let rep = &v["report"];
    assert!(v["ok"] == true, "helper on, held: {v}");
    let marked = rep["markedAt"].as_f64().expect("the victim was marked");
    let waits: Vec<f64> = rep["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e[0] == "waiting")
        .filter_map(|e| e[1].as_f64())
        .filter(|&t| t > marked)
        .collect();
    eprintln!(
        "helper on, held: victim {} marked at {marked:.2} s, loaded at {}, waiting at {waits:?}",
        rep["victim"], rep["loadedAt"]
    );
    f.check(
        rep["loadedAt"].as_f64().is_some_and(|t| t > marked),
        "with the helper, hls.js loads the segment its tracker held",
        || format!("{}", rep["events"]),
    );
    f.check(
        waits.is_empty(),
        "with the helper, the held segment does not stop playback",
        || format!("{}", rep["events"]),
    );

    let mut resumed_after = Vec::new();
    let mut last_target = Vec::new();
    // With the helper long enough for it to forgive the stall (20 s).
    for (helper, secs, mode) in [("on", "34", "stuck"), ("off", "16", "held")] {
        let v = run_page_script(
            "tests/player/stuck.mjs",
            &[&node.master_url(&ch.id), secs, helper, mode],
        );
        let rep = &v["report"];
        assert!(v["ok"] == true, "helper {helper}: {v}");
        let marked = rep["markedAt"].as_f64().expect("the victim was marked");
        let events: Vec<(String, f64, f64)> = rep["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e[0].as_str()?.to_owned(), e[1].as_f64()?, e[2].as_f64()?)))
            .collect();
        let stall = events
            .iter()
            .find(|(e, t, _)| e == "waiting" && *t > marked)
            .map(|&(_, t, _)| t);
        let resumed = stall.and_then(|s| {
            events
                .iter()
                .find(|(e, t, _)| e == "playing" && *t > s)
                .map(|&(_, t, _)| t - s)
        });
        eprintln!(
            "helper {helper}: victim {} marked at {marked:.2} s, stalled at {stall:?}, playing again after {resumed:?} s; end {}",
            rep["victim"], rep["end"]
        );
        f.check(stall.is_some(), "the marked segment stops hls.js", || {
            format!("helper {helper}: {}", rep["events"])
        });
        resumed_after.push(resumed);
        let targets: Vec<f64> = rep["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t[1].as_f64())
            .collect();
        let first = targets.first().copied().unwrap_or(f64::NAN);
        f.check(
            targets.iter().any(|&t| t > first + 0.5),
            "hls.js raises its target latency after the stall",
            || format!("helper {helper}: {targets:?}"),
        );
        last_target.push((first, targets.last().copied().unwrap_or(f64::NAN)));
    }
    let ((first_on, last_on), (first_off, last_off)) = (last_target[0], last_target[1]);
    f.check(
        (last_on - first_on).abs() < 0.01,
        "with the helper, the target latency is back at PART-HOLD-BACK 20 s after the stall",
        || format!("first {first_on}, last {last_on}"),
    );
    f.check(
        last_off > first_off + 0.5,
        "without the helper, hls.js keeps the raised target",
        || format!("first {first_off}, last {last_off}"),
    );
    // The helper waits half a second, then for the next segment to be
    // listed (up to one segment) and hls.js to load its first part.
    let (with, without) = (resumed_after[0], resumed_after[1]);
    f.check(
        with.is_some_and(|r| r < 4.0),
        "with the helper, playback goes on within 4 s",
        || format!("{with:?}"),
    );
    f.check(
        without.is_none_or(|r| with.is_some_and(|w| r > w + 2.0)),
        "without the helper, hls.js stays stopped at least 2 s longer",
        || format!("with {with:?}, without {without:?}"),
    );
    f.assert_empty("browser_hlsjs_helper_ends_a_stall_on_a_segment_never_loaded");
}
