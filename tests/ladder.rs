//! The ABR ladder end to end: a live-paced ffmpeg publisher into a
//! `standard` (or `passthrough`) channel, and what players see of the rungs.
//!
//! - `ladder_1080p_live_has_five_aligned_rungs`: the multivariant playlist
//!   lists the source and 720p/480p/360p/160p with the right attributes;
//!   every rung's playlist passes the LL-HLS single-playlist rules of
//!   `tests/llhls/rules.rs`; segments line up across the ladder (EXTINF,
//!   PROGRAM-DATE-TIME, IDR first frame at the same pts); quality metrics.
//! - `ladder_sizes_for_720p_and_odd_sources`: which rungs a 720p, a 1366x768
//!   and a passthrough channel get, and the SPS size of each.
//! - `browser_hlsjs_plays_ladder_switching_levels`: hls.js in headless
//!   Chromium switches to every level while playing (needs /usr/bin/chromium
//!   and `npm install`; fails, not skips, when they are missing).
//!
//! Helpers live under `tests/ladder/`: `publish` (a cheap ultrafast
//! publisher, channels with a ladder), `h264` (avcC, SPS size, NAL types),
//! `master` (variants and init sections), `align` (cross-rendition checks).
//! Violations are collected in `common::Findings` and reported together.

#[path = "ladder/align.rs"]
mod align;
mod common;
#[path = "ladder/h264.rs"]
mod h264;
#[path = "ladder/master.rs"]
mod master;
#[path = "ladder/publish.rs"]
mod publish;
#[path = "llhls/rules.rs"]
mod rules;
#[path = "ladder/switching.rs"]
mod switching;

use common::*;
use master::{Want, want};
use publish::{Source, create_channel, publish};
use std::time::{Duration, Instant};
use switching::rung_metric;

/// The `standard` rungs of a 1920x1080 source, top down, after the source.
const RUNGS_1080: [Want; 4] = [
    want("720p", 1280, 720, 3000),
    want("480p", 854, 480, 1200),
    want("360p", 640, 360, 700),
    want("160p", 284, 160, 250),
];

/// `wants` as rendition names.
fn names(wants: &[Want]) -> Vec<&'static str> {
    wants.iter().map(|w| w.name).collect()
}

#[test]
fn ladder_1080p_live_has_five_aligned_rungs() {
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = create_channel(&node, "ladder-1080p", "standard");
    let mut publisher = publish(&node, &ch, Source::new(1920, 1080, 4000, 120));
    let mut wants = vec![want("source", 1920, 1080, 4000)];
    wants.extend(RUNGS_1080);
    let names = names(&wants);

    // Every rendition has three complete segments.
    let t0 = Instant::now();
    wait_all(&http, &node, &ch.id, &names, 3, Duration::from_secs(60));
    eprintln!("every rendition had 3 segments after {:?}", t0.elapsed());

    // Multivariant playlist and init sections.
    let master_url = node.master_url(&ch.id);
    let mv = master::fetch(&f, &http, &master_url);
    let variants = master::check_variants(&f, &mv, &master_url, &wants);
    let inits = master::check_inits(&f, &http, &node, &ch.id, &wants, &variants);

    // Every playlist on its own, then the segments across the ladder.
    let snaps = align::snapshot(&f, &http, &node, &ch.id, &names);
    align::check_same_targets(&f, &snaps);
    let al = align::check_segments(&f, &snaps);
    f.check(
        al.common.len() >= 3,
        "at least 3 segments complete in every rendition",
        || format!("common MSNs {:?}", al.common),
    );
    // The last two segments without a gap anywhere: IDR at the same pts.
    let probe = align::check_last_clean_starts(&f, &http, &node.data_dir, &snaps, &al, &inits);

    // Gaps are allowed only where the rung dropped GOPs (and said so).
    let m = node.metrics();
    let mut notes = Vec::new();
    for (rung, &n) in &al.gaps {
        // A decoder that fell behind drops the GOP of every rung, counted
        // under rung="*".
        let dropped = ["*", rung.as_str()]
            .iter()
            .filter_map(|r| rung_metric(&m, "rungs_rung_dropped_gops_total", &ch.id, r))
            .sum::<f64>();
        notes.push(format!(
            "{rung}: {n} of {} compared segments are GAPs, rungs_rung_dropped_gops_total = {dropped}",
            al.common.len()
        ));
        f.check(
            dropped > 0.0,
            "GAP segments only where rungs_rung_dropped_gops_total counts dropped GOPs",
            || notes.last().unwrap().clone(), // pushed just above
        );
        f.check(
            2 * n <= al.common.len(),
            "at most half the compared segments of a rung are GAPs",
            || notes.last().unwrap().clone(), // pushed just above
        );
    }

    // Quality and throughput metrics of every rung.
    let mut latencies = Vec::new();
    for w in &RUNGS_1080 {
        let get = |name| rung_metric(&m, name, &ch.id, w.name);
        let psnr = get("rungs_rung_psnr_db");
        let ssim = get("rungs_rung_ssim");
        let frames = get("rungs_rung_frames_encoded_total");
        f.check(
            psnr.is_some_and(|v| v > 30.0),
            "rungs_rung_psnr_db > 30 for every rung",
            || format!("{}: {psnr:?}", w.name),
        );
        f.check(
            ssim.is_some_and(|v| v > 0.9),
            "rungs_rung_ssim > 0.9 for every rung",
            || format!("{}: {ssim:?}", w.name),
        );
        f.check(
            frames.is_some_and(|v| v > 0.0),
            "rungs_rung_frames_encoded_total > 0 for every rung",
            || format!("{}: {frames:?}", w.name),
        );
        for name in [
            "rungs_rung_encode_seconds_total",
            "rungs_rung_realtime_ratio",
            "rungs_rung_queue_frames",
            "rungs_transcode_latency_seconds_count",
        ] {
            f.check(get(name).is_some(), "per-rung metric exported", || {
                format!("{name}{{channel={},rung={}}} missing", ch.id, w.name)
            });
        }
        let lat = m.histogram_quantile(
            "rungs_transcode_latency_seconds",
            &[("channel", &ch.id), ("rung", w.name)],
            0.5,
        );
        latencies.push(format!("{} {:.2} s", w.name, lat.unwrap_or(f64::NAN)));
        eprintln!(
            "{}: psnr {psnr:?} ssim {ssim:?} frames {frames:?} realtime {:?} dropped GOPs {:?} transcode latency p50 {lat:?}",
            w.name,
            get("rungs_rung_realtime_ratio"),
            get("rungs_rung_dropped_gops_total"),
        );
    }

    f.check(
        publisher.running(),
        "publisher still running at the end",
        || publisher.log(),
    );
    publisher.stop();
    if !f.is_empty() && !notes.is_empty() {
        eprintln!("GAP segments: {notes:#?}");
    }
    // A rung's live edge trails the source's by its transcode latency: say
    // how busy the machine was, to tell a starved machine from a slow node.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    f.assert_empty(&format!(
        "ladder_1080p_live_has_five_aligned_rungs (compared MSNs {:?}, probed {probe:?}; GAPs: {}; \
         transcode latency p50: {}; load average {})",
        al.common,
        if notes.is_empty() {
            "none".to_string()
        } else {
            notes.join("; ")
        },
        latencies.join(", "),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    ));
}

/// Waits for every rendition of `ch` to have a segment, then checks the
/// multivariant playlist and each rendition's init against `wants`.
fn check_ladder(f: &Findings, http: &Http, node: &Node, ch: &Channel, wants: &[Want]) {
    let names = names(wants);
    wait_all(http, node, &ch.id, &names, 1, Duration::from_secs(30));
    let master_url = node.master_url(&ch.id);
    let (mv, text) = master::wait_variants(http, &master_url, wants.len());
    let variants = master::check_variants(f, &mv, &master_url, wants);
    master::check_inits(f, http, node, &ch.id, wants, &variants);
    eprintln!("{} ({}):\n{text}", ch.name, ch.id);
}

#[test]
fn ladder_sizes_for_720p_and_odd_sources() {
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let hd = create_channel(&node, "ladder-720p", "standard");
    let pass = create_channel(&node, "ladder-passthrough", "passthrough");
    let odd = create_channel(&node, "ladder-1366x768", "standard");

    // A 720p source gets no 720p rung (never the source's own height, never
    // upscaled); a 480p passthrough channel gets no rungs at all.
    let mut p_hd = publish(&node, &hd, Source::new(1280, 720, 2500, 30));
    let mut p_pass = publish(&node, &pass, Source::new(854, 480, 1000, 30));
    check_ladder(
        &f,
        &http,
        &node,
        &hd,
        &[
            want("source", 1280, 720, 2500),
            want("480p", 854, 480, 1200),
            want("360p", 640, 360, 700),
            want("160p", 284, 160, 250),
        ],
    );
    check_ladder(&f, &http, &node, &pass, &[want("source", 854, 480, 1000)]);
    for rung in ["720p", "480p", "360p", "160p"] {
        let url = node.media_url(&pass.id, rung);
        let st = http.get(&url).status;
        f.check(
            st == 404,
            "a passthrough channel has no rung playlists (404)",
            || format!("GET {url}: {st}"),
        );
    }
    let url = node.media_url(&hd.id, "720p");
    let st = http.get(&url).status;
    f.check(
        st == 404,
        "no rung at the source's own height (404)",
        || format!("GET {url}: {st}"),
    );
    p_hd.stop();
    p_pass.stop();

    // 1366x768: rungs keep their height, widths follow 16:9-ish rounded to even.
    let mut p_odd = publish(&node, &odd, Source::new(1366, 768, 2500, 30));
    check_ladder(
        &f,
        &http,
        &node,
        &odd,
        &[
            want("source", 1366, 768, 2500),
            want("720p", 1280, 720, 3000),
            want("480p", 854, 480, 1200),
            want("360p", 640, 360, 700),
            want("160p", 284, 160, 250),
        ],
    );
    p_odd.stop();
    f.assert_empty("ladder_sizes_for_720p_and_odd_sources");
}

#[test]
fn browser_hlsjs_plays_ladder_switching_levels() {
    let _turn = take_turn();
    require_browser();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = create_channel(&node, "ladder-browser", "standard");
    let mut publisher = publish(&node, &ch, Source::new(1280, 720, 2500, 120));
    let wants = [
        want("source", 1280, 720, 2500),
        want("480p", 854, 480, 1200),
        want("360p", 640, 360, 700),
        want("160p", 284, 160, 250),
    ];
    wait_all(
        &http,
        &node,
        &ch.id,
        &names(&wants),
        2,
        Duration::from_secs(40),
    );

    let f = Findings::default();
    let heights = [160, 360, 480, 720];
    let v = switching::play_every_level(&f, &http, &node, &ch.id, &names(&wants), &heights);
    f.check(
        publisher.running(),
        "publisher still running at the end",
        || publisher.log(),
    );
    publisher.stop();
    if !f.is_empty() {
        eprintln!("browser console: {}", v["console"]);
    }
    f.assert_empty("browser_hlsjs_plays_ladder_switching_levels");
}
