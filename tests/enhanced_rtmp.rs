//! Enhanced RTMP publishers: FFmpeg 9 (the static build `make` fetches into `.ffmpeg9/`, whose
//! FLV muxer writes Enhanced RTMP v2) publishes HEVC and AV1. The source rung is passed
//! through as `hvc1`/`av01` fMP4 with the CODECS string of its configuration record, and the
//! ladder's H.264 rung decodes, so every player has a rung it can play.
//!
//! Both publishes are also checked as a player sees them: the source and the 160p rung pass the
//! LL-HLS rules of `tests/llhls/rules.rs` (and, over a few blocking reloads, those of
//! `history.rs`) and line up with each other (`tests/ladder/align.rs`), and hls.js in headless
//! Chromium plays the H.264 rung (needs /usr/bin/chromium and `npm install`: it fails, not
//! skips, when they are missing). FFmpeg 9 also publishes 10-bit H.264 and HEVC live: the
//! ladder is 8-bit H.264 as faithful to the source as from an 8-bit publish.
//!
//! Small and short on purpose (320x180, fastest presets): the whole file runs in well under a
//! minute on two cores.

// The ladder test's helpers, for the checks across renditions; it uses what this file does not.
#[allow(dead_code)]
#[path = "ladder/align.rs"]
mod align;
mod common;
#[allow(dead_code)]
#[path = "ladder/h264.rs"]
mod h264;
#[path = "llhls/history.rs"]
mod history;
#[allow(dead_code)]
#[path = "ladder/master.rs"]
mod master;
#[path = "llhls/rules.rs"]
mod rules;

use common::*;
use history::History;
use rules::{check_media_headers, check_playlist, check_playlist_headers};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The FFmpeg 9 publisher, killed on Drop.
struct Publisher9 {
    child: Child,
    log: PathBuf,
}

impl Publisher9 {
    fn start(url: &str, video: &[&str], dir: &Path, name: &str) -> Publisher9 {
        let bin = ffmpeg9();
        let log = dir.join(format!("ffmpeg9-{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut args: Vec<&str> = vec![
            "-hide_banner",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "60",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-g",
            "30",
        ];
        args.extend_from_slice(video);
        args.extend_from_slice(&["-c:a", "aac", "-b:a", "64k", "-f", "flv", url]);
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn FFmpeg 9");
        Publisher9 { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Publisher9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Init segment + the newest complete segment of `rendition`, concatenated into a file that
/// ffprobe decodes; returns (codec_name, width, height, frames decoded).
fn decode_latest(http: &Http, node: &Node, id: &str, rendition: &str) -> (String, u64, u64, u64) {
    let url = node.media_url(id, rendition);
    let fetched = wait_playlist(http, &url, 1, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "{rendition}: no complete segment; node log:\n{}",
            node.log()
        )
    });
    let seg = fetched.pl.segments.last().expect("a segment");
    let map = seg.map_uri.as_deref().expect("EXT-X-MAP");
    let mut bytes = http.get(&resolve(&url, map)).body;
    bytes.extend(http.get(&resolve(&url, &seg.uri)).body);
    let file = node.data_dir.join(format!("{rendition}.mp4"));
    std::fs::write(&file, &bytes).expect("write segment");
    let (ok, v, err) = ffprobe_json(
        &file,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ],
    );
    assert!(ok, "{rendition}: ffprobe failed: {err}");
    let s = &v["streams"][0];
    let n = |k: &str| {
        s[k].as_u64()
            .or_else(|| s[k].as_str().and_then(|x| x.parse().ok()))
            .unwrap_or(0)
    };
    (
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        n("width"),
        n("height"),
        n("nb_read_frames"),
    )
}

/// Publishes with `video` (FFmpeg 9 encoder options) and checks the source rung, the CODECS
/// strings and the transcoded H.264 rung.
fn source_passes_through_and_ladder_is_h264(
    name: &str,
    video: &[&str],
    fourcc: &str,
    ffprobe_codec: &str,
) {
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel_with_ladder(name, "standard");
    let mut publisher =
        Publisher9::start(&node.rtmp_url(&ch.stream_key), video, &node.data_dir, name);
    node.attach_log(&publisher.log);

    let (codec, w, h, frames) = decode_latest(&http, &node, &ch.id, "source");
    assert_eq!(
        (codec.as_str(), w, h),
        (ffprobe_codec, 320, 180),
        "source rung; publisher log:\n{}",
        publisher.log()
    );
    assert!(frames >= 30, "source segment decoded {frames} frames");

    // A rung is listed in the multivariant playlist once it has media.
    let (codec, w, h, frames) = decode_latest(&http, &node, &ch.id, "160p");
    assert_eq!((codec.as_str(), h), ("h264", 160), "160p rung is {w}x{h}");
    assert!(frames >= 30, "160p segment decoded {frames} frames");
    let master = http.get(&node.master_url(&ch.id)).text();
    let mv = parse_multivariant(&master).expect("multivariant playlist");
    let codecs: Vec<String> = mv
        .variants
        .iter()
        .map(|v| v.attrs.quoted("CODECS").unwrap_or_default().to_owned())
        .collect();
    assert!(
        codecs.iter().any(|c| c.starts_with(&format!("{fourcc}."))),
        "no {fourcc} variant in:\n{master}"
    );
    assert!(
        codecs.iter().any(|c| c.starts_with("avc1.")),
        "no H.264 variant in:\n{master}"
    );

    let log = node.log();
    assert!(!log.contains(&ch.stream_key), "stream key in the node log");
    if video.contains(&"-rtmp_enhanced_codecs") {
        assert!(
            log.lines()
                .any(|l| l.contains("rtmp: publishing") && l.contains(r#"["hvc1", "av01"]"#)),
            "the publisher's fourCcList is not on the publishing line:\n{log}"
        );
    }

    let f = Findings::default();
    check_llhls(&f, &http, &node, &ch.id);
    plays_h264_rung(&f, &node.master_url(&ch.id), fourcc);
    f.check(
        publisher.child.try_wait().is_ok_and(|st| st.is_none()),
        "publisher still running",
        || publisher.log(),
    );
    f.assert_empty(name);
}

/// The source and the 160p rung as an LL-HLS player sees them: each playlist passes the
/// single-playlist rules (PART-TARGET, PART-HOLD-BACK, preload hint, rendition reports, ...),
/// the two carry the same targets, report each other and line up segment by segment; then a
/// few blocking reloads of each, part by part, with the rules across reloads and the hinted
/// parts' headers. (A source whose codec the node only passes through must still make a
/// conformant LL-HLS rendition.)
fn check_llhls(f: &Findings, http: &Http, node: &Node, id: &str) {
    let snaps = align::snapshot(f, http, node, id, &["source", "160p"]);
    align::check_same_targets(f, &snaps);
    let aligned = align::check_segments(f, &snaps);
    f.check(
        !aligned.common.is_empty(),
        "source and 160p list a common complete segment",
        || {
            format!(
                "{:?}",
                snaps.iter().map(|s| s.pl.last_msn()).collect::<Vec<_>>()
            )
        },
    );
    for s in &snaps {
        let mut hist = History::default();
        let mut cur = fetch_media(http, &s.url, "");
        hist.add(f, &cur.pl, &s.url);
        // Five parts: a second of the live edge.
        for _ in 0..5 {
            let Some(hint) = cur.pl.hint("PART").cloned() else {
                break; // check_playlist has reported it
            };
            // The hinted part is answered once it exists.
            let part = http.get(&resolve(&s.url, &hint.uri));
            f.check(
                part.status == 200,
                "preload-hinted part answered 200",
                || format!("{}: {}", part.url, part.status),
            );
            check_media_headers(f, &part);
            let (msn, idx) = cur.pl.next_part();
            cur = fetch_blocking(http, &s.url, msn, idx);
            check_playlist_headers(f, &cur.resp, true);
            check_playlist(f, &cur.pl, &s.url, now_unix());
            hist.add(f, &cur.pl, &s.url);
            f.check(
                cur.pl.find_part(msn, idx).is_some() || cur.pl.find_part(msn + 1, 0).is_some(),
                "a blocking reload answers with the part asked for (6.2.5.2)",
                || {
                    format!(
                        "{}: asked {msn}.{idx}, last part {:?}",
                        s.url,
                        cur.pl.last_part()
                    )
                },
            );
        }
    }
}

/// hls.js in headless Chromium plays the H.264 rung of a channel whose source is `fourcc`
/// for a few seconds: no stall, no fatal error, and every level it played is H.264. The level
/// is chosen by codec: Chromium decodes AV1 (hls.js would play the `av01` source, the top
/// level), not HEVC (hls.js drops the `hvc1` variant, whose CODECS MediaSource rejects, and
/// keeps the rest).
fn plays_h264_rung(f: &Findings, master_url: &str, fourcc: &str) {
    const SECONDS: u32 = 8;
    require_browser();
    let v = play_hlsjs_codec(master_url, SECONDS, "avc1");
    let rep = &v["report"];
    assert!(
        v["ok"] == true,
        "{fourcc}: browser playback failed: {}\nreport: {rep}\nconsole: {}",
        v["error"],
        v["console"]
    );
    let levels = rep["levels"].as_array().cloned().unwrap_or_default();
    let codec_of = |l: u64| levels[l as usize]["videoCodec"].as_str().unwrap_or("?");
    eprintln!(
        "{fourcc}: hls.js kept levels {:?}, played {}",
        (0..levels.len() as u64).map(codec_of).collect::<Vec<_>>(),
        rep["startLevel"]
    );
    let start = rep["startLevel"].as_i64().unwrap_or(-1);
    f.check(start >= 0, "hls.js lists the H.264 rung", || {
        format!("{fourcc}: levels {levels:?}")
    });
    check_playback(f, rep, SECONDS);
    // What hls.js played: its current level in every sample once playing, and every switch.
    let played: Vec<u64> = rep["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["level"].as_u64())
        .chain(
            rep["switched"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["level"].as_u64()),
        )
        .collect();
    f.check(
        !played.is_empty(),
        "hls.js reports the level it plays",
        || format!("{fourcc}: {}", rep["samples"]),
    );
    f.check(
        played
            .iter()
            .all(|&l| (l as usize) < levels.len() && codec_of(l).starts_with("avc1.")),
        "hls.js plays H.264 levels only",
        || format!("{fourcc}: played {played:?} of {levels:?}"),
    );
    if !f.is_empty() {
        eprintln!("{fourcc}: browser console: {}", v["console"]);
    }
}

/// HEVC from x265 with its defaults (open GOPs) but a fixed GOP: what a publisher sends.
const X265: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-x265-params",
    "log-level=error:keyint=30:min-keyint=30:scenecut=0",
];

#[test]
fn hevc_over_enhanced_rtmp() {
    let video = [
        X265,
        &[
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "300k",
            // FFmpeg then announces `fourCcList` in its connect, and gets the node's
            // capabilities in a rewritten `_result` (connect.rs): the publish going on is
            // the check that FFmpeg reads that answer and the chunk headers after it.
            "-rtmp_enhanced_codecs",
            "hvc1,av01",
        ],
    ]
    .concat();
    source_passes_through_and_ladder_is_h264("hevc", &video, "hvc1", "hevc");
}

#[test]
fn av1_over_enhanced_rtmp() {
    source_passes_through_and_ladder_is_h264(
        "av1",
        &[
            "-c:v",
            "libsvtav1",
            "-preset",
            "12",
            "-svtav1-params",
            "keyint=30:scd=0",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "300k",
        ],
        "av01",
        "av1",
    );
}

/// Runs `ffmpeg` (Debian's) with `args`, panicking with its log on failure.
fn ffmpeg(args: &[&str]) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg {args:?} failed:\n{log}");
    log
}

/// `rungs transcode` of `input` into `output`: (JSON report, stderr).
fn transcode(input: &Path, output: &Path) -> (serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rungs"))
        .arg("transcode")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--json")
        .output()
        .expect("run rungs transcode");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rungs transcode failed:\n{log}");
    (
        serde_json::from_slice(&out.stdout).expect("one JSON report"),
        log,
    )
}

/// PSNR (average, dB) of the 160p rung of `output` against `source` brought to 284x160 8-bit
/// 4:2:0 by FFmpeg itself.
fn psnr_160p(source: &Path, output: &Path) -> f64 {
    psnr_planes(&output.join("160p/index.m3u8"), source, None).average
}

/// PSNR of a 160p rendition against a reference, in dB.
#[derive(Debug, Clone, Copy)]
struct Psnr {
    y: f64,
    u: f64,
    v: f64,
    average: f64,
}

/// PSNR of `rung` (284x160) against `reference` brought to 284x160 8-bit 4:2:0 by FFmpeg
/// itself, frame by frame as FFmpeg pairs them (by timestamp); with `stats`, one line per
/// frame compared is written there.
fn psnr_planes(rung: &Path, reference: &Path, stats: Option<&Path>) -> Psnr {
    let psnr = match stats {
        Some(p) => format!("psnr=stats_file={}", p.to_str().expect("utf-8 path")),
        None => "psnr".to_owned(),
    };
    let graph = format!("[1:v]scale=284:160:flags=lanczos,format=yuv420p[ref];[0:v][ref]{psnr}");
    let log = ffmpeg(&[
        "-i",
        rung.to_str().expect("utf-8 path"),
        "-i",
        reference.to_str().expect("utf-8 path"),
        "-lavfi",
        &graph,
        "-f",
        "null",
        "-",
    ]);
    // "[Parsed_psnr_2 @ 0x..] PSNR y:38.95 u:42.05 v:42.33 average:39.79 min:38.12 max:40.22"
    let line = log.lines().rev().find(|l| l.contains("PSNR y:"));
    let field = |k: &str| -> Option<f64> {
        line?
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|x| x.parse().ok())
    };
    match (field("y:"), field("u:"), field("v:"), field("average:")) {
        (Some(y), Some(u), Some(v), Some(average)) => Psnr { y, u, v, average },
        _ => panic!("no PSNR in:\n{log}"),
    }
}

/// `rungs transcode` of a 10-bit file: the source rendition stays 10-bit, the ladder's 160p
/// rung is 8-bit 4:2:0 H.264, nothing is logged per packet, and its PSNR against FFmpeg's own
/// conversion of the source is in line with an 8-bit source's.
fn ten_bit_file_gives_8_bit_rungs(name: &str, codec: &[&str], psnr_eight: Option<f64>) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join(format!("{name}.mp4"));
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=30",
        "-t",
        "2",
    ];
    args.extend_from_slice(codec);
    args.push(input.to_str().expect("utf-8 path"));
    ffmpeg(&args);
    let output = dir.path().join("out");
    let (report, log) = transcode(&input, &output);
    let names: Vec<&str> = report["renditions"]
        .as_array()
        .expect("renditions")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"160p"),
        "{name}: renditions {names:?}; log:\n{log}"
    );
    assert!(
        !log.contains("not supported") && log.lines().count() < 10,
        "{name}: per-packet warnings:\n{log}"
    );
    let pix_fmt = |rendition: &str| {
        let (ok, v, err) = ffprobe_json(
            &output.join(rendition).join("index.m3u8"),
            &["-show_entries", "stream=codec_name,pix_fmt"],
        );
        assert!(ok, "{name} {rendition}: {err}");
        v["streams"][0]["pix_fmt"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(pix_fmt("160p"), "yuv420p", "{name}");
    // The source rung stays as sent.
    if psnr_eight.is_some() {
        assert_eq!(pix_fmt("source"), "yuv420p10le", "{name}");
    }
    let psnr = psnr_160p(&input, &output);
    eprintln!("{name}: 160p PSNR against FFmpeg's own conversion {psnr:.2} dB");
    if let Some(eight) = psnr_eight {
        assert!(
            psnr > 30.0 && psnr > eight - 1.5,
            "{name}: {psnr:.2} dB vs {eight:.2} dB from an 8-bit source"
        );
    }
    psnr
}

#[test]
fn ten_bit_h264_and_hevc_files_give_8_bit_rungs() {
    let x264 = ["-c:v", "libx264", "-preset", "veryfast"];
    let eight = ten_bit_file_gives_8_bit_rungs(
        "high",
        &[&x264[..], &["-pix_fmt", "yuv420p", "-profile:v", "high"]].concat(),
        None,
    );
    ten_bit_file_gives_8_bit_rungs(
        "high10",
        &[
            &x264[..],
            &["-pix_fmt", "yuv420p10le", "-profile:v", "high10"],
        ]
        .concat(),
        Some(eight),
    );
    ten_bit_file_gives_8_bit_rungs(
        "main10",
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
            "-pix_fmt",
            "yuv420p10le",
            "-tag:v",
            "hvc1",
        ],
        Some(eight),
    );
}

/// Init + complete segment `msn` of `rendition`, written to `<data dir>/<file>.mp4`. A
/// blocking reload for the first part of the next segment answers once `msn` is complete.
fn fetch_segment(
    http: &Http,
    node: &Node,
    id: &str,
    rendition: &str,
    msn: u64,
    file: &str,
) -> PathBuf {
    let url = node.media_url(id, rendition);
    let got = fetch_blocking(http, &url, msn + 1, 0);
    let seg = got
        .pl
        .segment(msn)
        .unwrap_or_else(|| panic!("{url}: no segment {msn} in\n{}", got.resp.text()));
    let map = seg.map_uri.as_deref().expect("EXT-X-MAP");
    let mut bytes = http.get(&resolve(&url, map)).body;
    let media = http.get(&resolve(&url, &seg.uri));
    assert_eq!(media.status, 200, "GET {}", media.url);
    bytes.extend(media.body);
    let path = node.data_dir.join(format!("{file}.mp4"));
    std::fs::write(&path, &bytes).expect("write segment");
    path
}

/// ffprobe's (codec_name, profile, pix_fmt) of the video of `file`.
fn video_format(file: &Path) -> (String, String, String) {
    let (ok, v, err) = ffprobe_json(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,profile,pix_fmt",
        ],
    );
    assert!(ok, "ffprobe {}: {err}", file.display());
    let s = &v["streams"][0];
    let k = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
    (k("codec_name"), k("profile"), k("pix_fmt"))
}

/// A live publish of one bit depth and codec, as the node made it.
struct LiveCase {
    name: &'static str,
    video: Vec<&'static str>,
    /// ffprobe's profile and pix_fmt of the source rung (the publish as sent).
    source: (&'static str, &'static str),
    /// How the source variant's CODECS starts (RFC 6381: the profile is in it).
    codecs: &'static str,
    /// For a 10-bit publish: the 8-bit publish of the same codec and settings to compare with.
    eight_bit: Option<&'static str>,
}

/// FFmpeg 9 publishes the same testsrc2 pattern to one node four times at once: H.264 High
/// and High 10 (plain RTMP), HEVC Main and Main 10 (Enhanced RTMP). The source rungs stay as
/// sent; each 160p rung is 8-bit 4:2:0 H.264, not High 10, and its CODECS says so.
///
/// Fidelity: for one MSN the 160p segment and the source segment hold the same frames (the
/// rungs are aligned), so FFmpeg compares the rung frame by frame (60 frames) with its own
/// conversion of the source segment (decoded, scaled to 284x160, brought to 8-bit 4:2:0), per
/// plane. Each 10-bit publish must come within 1 dB, on every plane, of the 8-bit publish of
/// the same codec and settings (the codec matters: the 160p rung of an HEVC source at these
/// settings scores 1.5 dB below an H.264 one's, 8-bit or not; 10-bit and 8-bit of one codec
/// scored within 0.1 dB here). Measured offline with FFmpeg making the mistakes on purpose,
/// the check catches a wrong narrowing of 10-bit samples: the low 8 bits kept instead of the
/// top ones (every plane ~9 dB), U and V swapped (U and V ~7 dB), no shift at all (clipped to
/// white). It cannot catch truncating instead of rounding (a half-step bias: 0.04 dB through
/// a 250 kbit/s encode, below the coding noise).
#[test]
fn ten_bit_h264_and_hevc_live_give_8_bit_rungs() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let cases = [
        LiveCase {
            name: "high",
            video: [STUDIO_X264, &["-pix_fmt", "yuv420p", "-profile:v", "high"]].concat(),
            source: ("High", "yuv420p"),
            codecs: "avc1.64",
            eight_bit: None,
        },
        LiveCase {
            name: "high10",
            video: [
                STUDIO_X264,
                &["-pix_fmt", "yuv420p10le", "-profile:v", "high10"],
            ]
            .concat(),
            source: ("High 10", "yuv420p10le"),
            codecs: "avc1.6e",
            eight_bit: Some("high"),
        },
        LiveCase {
            name: "main",
            video: [X265, &["-pix_fmt", "yuv420p"]].concat(),
            source: ("Main", "yuv420p"),
            codecs: "hvc1.1.",
            eight_bit: None,
        },
        LiveCase {
            name: "main10",
            video: [X265, &["-pix_fmt", "yuv420p10le"]].concat(),
            source: ("Main 10", "yuv420p10le"),
            codecs: "hvc1.2.",
            eight_bit: Some("main"),
        },
    ];
    let live: Vec<(Channel, Publisher9)> = cases
        .iter()
        .map(|c| {
            let ch = node.create_channel_with_ladder(c.name, "standard");
            let mut video = c.video.clone();
            video.extend(["-b:v", "300k"]);
            let p = Publisher9::start(
                &node.rtmp_url(&ch.stream_key),
                &video,
                &node.data_dir,
                c.name,
            );
            node.attach_log(&p.log);
            (ch, p)
        })
        .collect();

    let f = Findings::default();
    let mut psnr = Vec::new();
    for (c, (ch, publisher)) in cases.iter().zip(&live) {
        let name = c.name;
        let rung_url = node.media_url(&ch.id, "160p");
        let first =
            wait_playlist(&http, &rung_url, 1, Duration::from_secs(30)).unwrap_or_else(|| {
                panic!(
                    "{name}: 160p never had a complete segment; publisher:\n{}",
                    publisher.log()
                )
            });
        let msn = first.pl.last_msn().expect("a complete segment");
        let rung = fetch_segment(&http, &node, &ch.id, "160p", msn, &format!("{name}-160p"));
        let source = fetch_segment(
            &http,
            &node,
            &ch.id,
            "source",
            msn,
            &format!("{name}-source"),
        );

        let (codec, profile, pix_fmt) = video_format(&source);
        f.check(
            (profile.as_str(), pix_fmt.as_str()) == c.source,
            "the source rung stays as published",
            || {
                format!(
                    "{name}: {codec} {profile} {pix_fmt}, published {:?}",
                    c.source
                )
            },
        );
        let (codec, profile, pix_fmt) = video_format(&rung);
        f.check(
            codec == "h264" && pix_fmt == "yuv420p" && !profile.contains("10"),
            "160p rung is 8-bit 4:2:0 H.264, not High 10",
            || format!("{name}: {codec} {profile} {pix_fmt}"),
        );

        let mv_text = http.get(&node.master_url(&ch.id)).text();
        let mv = parse_multivariant(&mv_text).expect("multivariant playlist");
        let codecs_of = |rendition: &str| {
            let url = node.media_url(&ch.id, rendition);
            mv.variants
                .iter()
                .find(|v| resolve(&node.master_url(&ch.id), &v.uri) == url)
                .and_then(|v| v.attrs.quoted("CODECS"))
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        f.check(
            codecs_of("source").starts_with(c.codecs),
            "source variant CODECS carries the published profile (RFC 6381)",
            || format!("{name}: want {}..., got\n{mv_text}", c.codecs),
        );
        let rung_codecs = codecs_of("160p");
        f.check(
            rung_codecs.starts_with("avc1.") && !rung_codecs.starts_with("avc1.6e"),
            "160p variant CODECS is 8-bit H.264",
            || format!("{name}:\n{mv_text}"),
        );

        let stats = node.data_dir.join(format!("{name}-psnr.log"));
        let p = psnr_planes(&rung, &source, Some(&stats));
        let compared = std::fs::read_to_string(&stats)
            .unwrap_or_default()
            .lines()
            .count();
        eprintln!(
            "{name}: 160p segment {msn} vs FFmpeg's conversion of the source: {p:?} over {compared} frames"
        );
        // A 2 s segment at 30 fps.
        f.check(compared >= 50, "a whole segment compared", || {
            format!("{name}: {compared} frames")
        });
        f.check(
            p.average > 30.0,
            "160p PSNR against the source > 30 dB",
            || format!("{name}: {p:?}"),
        );
        psnr.push(p);
    }
    for (c, p) in cases.iter().zip(&psnr) {
        let Some(base) = c.eight_bit else { continue };
        let eight = psnr[cases
            .iter()
            .position(|b| b.name == base)
            .expect("a listed case")];
        f.check(
            p.y > eight.y - 1.0 && p.u > eight.u - 1.0 && p.v > eight.v - 1.0,
            "10-bit publish: 160p PSNR within 1 dB of the 8-bit publish's, per plane",
            || format!("{}: {p:?}, {base} {eight:?}", c.name),
        );
    }
    f.assert_empty("ten_bit_h264_and_hevc_live_give_8_bit_rungs");
}
