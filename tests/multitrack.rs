//! Enhanced RTMP multitrack: FFmpeg 9 (`.ffmpeg9/`, whose FLV muxer sends every video stream
//! after the first as a multitrack track) publishes the broadcaster's own ladder on one
//! connection.
//!
//! - `multitrack_tracks_are_rungs_and_the_ladder_is_filled`: a 1080p/720p/360p publish (H.264,
//!   GOPs aligned) gives the `standard` ladder with 720p and 360p the publisher's own samples,
//!   bit for bit, and 480p/160p transcoded; every rendition passes the LL-HLS rules, segments
//!   line up across the ladder, the stream API lists each track with what became of it, and
//!   hls.js switches to every level.
//! - `misaligned_tracks_are_dropped_and_channel_rules_refuse`: a track whose keyframes miss the
//!   source's leaves the ladder (log line, metric, stream API); channels that deny multitrack,
//!   require it, or cap the height cut the publisher with the reason.
//!
//! The clips are made by the test (FFmpeg 9, ultrafast) and published with `-c copy` in a loop,
//! so the node's work is what is measured, not the publisher's encoding.

#[path = "ladder/align.rs"]
mod align;
mod common;
#[path = "ladder/h264.rs"]
mod h264;
// The ladder test's helpers; this file uses all but one.
#[allow(dead_code)]
#[path = "ladder/master.rs"]
mod master;
#[path = "llhls/rules.rs"]
mod rules;
#[path = "ladder/switching.rs"]
mod switching;

use common::*;
use master::{Want, want};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// testsrc2 at the top track's size: every track is scaled from the same pictures.
fn picture(w: u32, h: u32) -> String {
    format!("testsrc2=size={w}x{h}:rate=30")
}

/// H.264 for the clips: fast, keyframes only where `-g` puts them.
const X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-sc_threshold",
    "0",
];

/// The MD5 of every video packet of stream `map` of `file`, in decode order (Debian's
/// FFmpeg, `-c copy`: the bytes as stored).
fn packet_md5s(file: &Path, map: &str) -> Vec<String> {
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-map", map, "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

/// The rendition's init section and latest complete segment, as one playable file.
fn latest_segment(http: &Http, node: &Node, id: &str, name: &str) -> PathBuf {
    let url = node.media_url(id, name);
    let pl = fetch_media(http, &url, "").pl;
    let map = pl.map_uri.clone().expect("EXT-X-MAP");
    let seg = pl
        .segments
        .iter()
        .rev()
        .find(|s| !s.gap)
        .unwrap_or_else(|| panic!("{url}: no complete segment"));
    let mut bytes = http.get(&resolve(&url, &map)).body;
    bytes.extend(http.get(&resolve(&url, &seg.uri)).body);
    tmp_file(&node.data_dir, &format!("{name}-latest.mp4"), &bytes)
}

fn stream_view(node: &Node, id: &str) -> serde_json::Value {
    let r = node.api("GET", &format!("/api/v1/channels/{id}/stream"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("stream JSON")
}

#[test]
fn multitrack_tracks_are_rungs_and_the_ladder_is_filled() {
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel_with_ladder("multitrack", "standard");
    let tracks = [
        clip_stream(1920, 1080, 4000, 60),
        clip_stream(1280, 720, 2500, 60),
        clip_stream(640, 360, 700, 60),
    ];
    let clip = clip(
        &node.data_dir,
        "ladder",
        &picture(1920, 1080),
        &tracks,
        12,
        X264,
    );
    let publisher = CopyPublisher::start(
        &clip,
        &["0:v:0", "0:v:1", "0:v:2"],
        &node.rtmp_url(&ch.stream_key),
        &node.data_dir,
        "ladder",
    );
    let wants: [Want; 5] = [
        want("source", 1920, 1080, 4000),
        want("720p", 1280, 720, 2500),
        want("480p", 854, 480, 1200),
        want("360p", 640, 360, 700),
        want("160p", 284, 160, 250),
    ];
    let names: Vec<&str> = wants.iter().map(|w| w.name).collect();
    wait_all(&http, &node, &ch.id, &names, 3, Duration::from_secs(60));

    // The multivariant playlist and every rendition as a player reads them.
    let master_url = node.master_url(&ch.id);
    let mv = master::fetch(&f, &http, &master_url);
    let variants = master::check_variants(&f, &mv, &master_url, &wants);
    let inits = master::check_inits(&f, &http, &node, &ch.id, &wants, &variants);
    let snaps = align::snapshot(&f, &http, &node, &ch.id, &names);
    align::check_same_targets(&f, &snaps);
    let al = align::check_segments(&f, &snaps);
    align::check_last_clean_starts(&f, &http, &node.data_dir, &snaps, &al, &inits);

    // The publisher's tracks are passed through untouched: a segment's samples are a run of
    // the clip's packets of that track.
    for (name, map) in [("720p", "0:v:1"), ("360p", "0:v:2")] {
        let sent = packet_md5s(&clip, map);
        let served = packet_md5s(&latest_segment(&http, &node, &ch.id, name), "0:v");
        let looped: Vec<String> = sent.iter().chain(&sent).cloned().collect();
        f.check(
            served.len() >= 30 && looped.windows(served.len()).any(|w| w == served.as_slice()),
            "a track's rung carries the publisher's samples bit for bit",
            || {
                format!(
                    "{name}: {} samples, not a run of the clip's {map}",
                    served.len()
                )
            },
        );
    }

    // The stream API: each track with what became of it, and who makes each rung.
    let s = stream_view(&node, &ch.id);
    let listed = s["ingest"]["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let summary: Vec<(u64, u64, Option<&str>)> = listed
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap_or(0),
                t["height"].as_u64().unwrap_or(0),
                t["rendition"].as_str(),
            )
        })
        .collect();
    f.check(
        summary == [(1, 720, Some("720p")), (2, 360, Some("360p"))],
        "the stream API lists each further track and its rung",
        || format!("{listed:?}"),
    );
    f.check(
        listed.iter().all(|t| {
            t["frame_rate"]
                .as_f64()
                .is_some_and(|r| (r - 30.0).abs() < 1.0)
        }),
        "each track's frame rate is measured",
        || format!("{listed:?}"),
    );
    let encoders: Vec<(String, String)> = s["rungs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("-").to_string(),
                r["encoder"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("source", "passthrough"),
        ("720p", "passthrough"),
        ("480p", "libx264"),
        ("360p", "passthrough"),
        ("160p", "libx264"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    f.check(
        encoders == expected,
        "tracks are passed through, the rest of the ladder transcoded",
        || format!("{encoders:?}"),
    );

    // A player switches between the broadcaster's rungs and the transcoded ones.
    switching::play_every_level(
        &f,
        &http,
        &node,
        &ch.id,
        &names,
        &[160, 360, 480, 720, 1080],
    );
    let log = node.log();
    f.check(
        !log.contains(&ch.stream_key),
        "the stream key is not in the log",
        String::new,
    );
    if !f.is_empty() {
        eprintln!("publisher:\n{}", publisher.log());
    }
    f.assert_empty("multitrack_tracks_are_rungs_and_the_ladder_is_filled");
}

/// Sets channel `id`'s rules through the API.
fn patch(node: &Node, id: &str, body: &str) {
    let r = node.api(
        "PATCH",
        &format!("/api/v1/channels/{id}"),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "PATCH {body}: {}", r.text());
}

#[test]
fn misaligned_tracks_are_dropped_and_channel_rules_refuse() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let dir = &node.data_dir;
    // Track 1's GOP is 45 frames against the source's 60: its frame at the source's
    // second keyframe is not one.
    let misaligned = clip(
        dir,
        "misaligned",
        &picture(640, 360),
        &[
            clip_stream(640, 360, 700, 60),
            clip_stream(320, 180, 300, 45),
        ],
        8,
        X264,
    );
    let ch = node.create_channel_with_ladder("misaligned", "standard");
    let publisher = CopyPublisher::start(
        &misaligned,
        &["0:v:0", "0:v:1"],
        &node.rtmp_url(&ch.stream_key),
        dir,
        "misaligned",
    );
    let dropped = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        let m = node.metrics();
        let n = m.sum(
            "rungs_ingest_tracks_dropped_total",
            &[("channel", &ch.id), ("reason", "misaligned")],
        );
        (n >= 1.0).then_some(n)
    });
    assert_eq!(
        dropped,
        Some(1.0),
        "the misaligned track is counted once; node log:\n{}\npublisher:\n{}",
        node.log(),
        publisher.log()
    );
    let s = stream_view(&node, &ch.id);
    let track = &s["ingest"]["tracks"][0];
    assert!(
        track["rendition"].is_null()
            && track["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("dropped") && r.contains("keyframe")),
        "{track}"
    );
    assert!(
        node.log().contains("do not line up with the source's"),
        "no log line for the dropped track"
    );
    // The ladder goes on without it: the transcoded 160p rung and the source play.
    wait_all(
        &http,
        &node,
        &ch.id,
        &["source", "160p"],
        2,
        Duration::from_secs(30),
    );
    let master = http.get(&node.master_url(&ch.id)).text();
    assert!(
        !master.contains("180p/"),
        "dropped track still listed:\n{master}"
    );
    drop(publisher);

    // Channel rules: each cuts the publisher, with its reason counted and logged.
    let single = clip(
        dir,
        "single",
        &picture(640, 360),
        &[clip_stream(640, 360, 700, 60)],
        4,
        X264,
    );
    let cases: [(&str, &str, &Path, &[&str], &str); 3] = [
        (
            "deny",
            r#"{"multitrack": "deny"}"#,
            &misaligned,
            &["0:v:0", "0:v:1"],
            "multitrack_denied",
        ),
        (
            "require",
            r#"{"multitrack": "require"}"#,
            &single,
            &["0:v:0"],
            "multitrack_required",
        ),
        (
            "max-height",
            r#"{"max_height": 240}"#,
            &single,
            &["0:v:0"],
            "max_height",
        ),
    ];
    for (name, rules, clip, maps, reason) in cases {
        let ch = node.create_channel_with_ladder(name, "standard");
        patch(&node, &ch.id, rules);
        let shown = node.api("GET", &format!("/api/v1/channels/{}", ch.id), None);
        let v: serde_json::Value = serde_json::from_slice(&shown.body).expect("channel JSON");
        let (key, want) = rules
            .trim_matches(|c| c == '{' || c == '}')
            .split_once(':')
            .expect("one rule");
        let key = key.trim().trim_matches('"');
        assert_eq!(
            v[key].to_string(),
            want.trim(),
            "{name}: the channel shows its rule: {v}"
        );
        let mut p = CopyPublisher::start(clip, maps, &node.rtmp_url(&ch.stream_key), dir, name);
        assert!(
            p.exited(Duration::from_secs(20)),
            "{name}: the publisher was not cut; node log:\n{}",
            node.log()
        );
        let cut = node.metrics().sum(
            "rungs_ingest_cut_total",
            &[("ingest", "rtmp"), ("reason", reason)],
        );
        assert_eq!(
            cut, 1.0,
            "{name}: rungs_ingest_cut_total{{reason={reason}}}"
        );
        let sessions = node.api("GET", &format!("/api/v1/channels/{}/sessions", ch.id), None);
        assert!(
            sessions.text().contains("publisher cut"),
            "{name}: the session records the cut: {}",
            sessions.text()
        );
    }
}
