//! Enhanced RTMP publishers: FFmpeg 9 (the static build `make` fetches into `.ffmpeg9/`, whose
//! FLV muxer writes Enhanced RTMP v2) publishes HEVC and AV1. The source rung is passed
//! through as `hvc1`/`av01` fMP4 with the CODECS string of its configuration record, and the
//! ladder's H.264 rung decodes, so every player has a rung it can play.
//!
//! Small and short on purpose (320x180, fastest presets): the whole file runs in well under a
//! minute on two cores.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn ffmpeg9() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ffmpeg9/ffmpeg")
}

/// The FFmpeg 9 publisher, killed on Drop.
struct Publisher9 {
    child: Child,
    log: PathBuf,
}

impl Publisher9 {
    fn start(url: &str, video: &[&str], dir: &Path, name: &str) -> Publisher9 {
        let bin = ffmpeg9();
        assert!(
            bin.exists(),
            "{} is missing: run `make .ffmpeg9/ffmpeg` (or `make test`)",
            bin.display()
        );
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
    let publisher = Publisher9::start(&node.rtmp_url(&ch.stream_key), video, &node.data_dir, name);

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
}

#[test]
fn hevc_over_enhanced_rtmp() {
    source_passes_through_and_ladder_is_h264(
        "hevc",
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=30:min-keyint=30:scenecut=0",
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
        "hvc1",
        "hevc",
    );
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
    let rung = output.join("160p/index.m3u8");
    let log = ffmpeg(&[
        "-i",
        rung.to_str().expect("utf-8 path"),
        "-i",
        source.to_str().expect("utf-8 path"),
        "-lavfi",
        "[1:v]scale=284:160:flags=lanczos,format=yuv420p[ref];[0:v][ref]psnr",
        "-f",
        "null",
        "-",
    ]);
    let avg = log
        .split("average:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    avg.unwrap_or_else(|| panic!("no PSNR in:\n{log}"))
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
