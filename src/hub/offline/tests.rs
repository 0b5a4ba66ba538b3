//! `rungs transcode` end to end, and VOD directories from synthetic and real
//! media driven through the channel core: playlists and files, and real
//! H.264/AAC that ffprobe must decode through the HLS demuxer.

use super::*;
use crate::media::{AudioParams, VideoParams};
use crate::package::testmedia;
use crate::transcode::encode::FrameRate;
use crate::transcode::ffmpeg_cli;
use crate::transcode::frame::Size;
use crate::transcode::ladder::{Ladders, STANDARD};
use crate::transcode::pipeline::EncoderTuning;
use bytes::Bytes;
use std::process::Command;
use std::sync::Arc;

/// Rung frames come this many frames after their source frame.
const LAG_FRAMES: i64 = 20;

fn params(width: u32, height: u32) -> Arc<VideoParams> {
    Arc::new(VideoParams {
        width,
        height,
        ..(*testmedia::video_params(width)).clone()
    })
}

fn rung(name: &str, width: u32, height: u32, bitrate_bps: u64) -> Rung {
    Rung {
        name: name.into(),
        size: Size { width, height },
        bitrate_bps,
    }
}

/// Source video and audio, and each rung's copy of the video
/// `LAG_FRAMES` later, in the order an offline transcoder produces them.
enum Ev {
    Source(Packet),
    Rung(usize, Packet),
}

fn schedule(
    video: &[Packet],
    audio: &[Packet],
    rungs: usize,
    drop: impl Fn(usize, usize) -> bool,
) -> Vec<Ev> {
    let frame = video.get(1).map_or(3000, |p| p.dts - video[0].dts);
    let mut timed: Vec<(i64, usize, Ev)> = Vec::new();
    for (i, p) in video.iter().enumerate() {
        timed.push((p.dts, 0, Ev::Source(p.clone())));
        for r in (0..rungs).filter(|&r| !drop(r, i)) {
            timed.push((p.dts + LAG_FRAMES * frame, 1, Ev::Rung(r, p.clone())));
        }
    }
    for p in audio {
        timed.push((p.dts, 0, Ev::Source(p.clone())));
    }
    timed.sort_by_key(|(t, order, _)| (*t, *order));
    timed.into_iter().map(|(_, _, e)| e).collect()
}

/// A VOD channel fed by hand: the source, and each rung's output as a
/// pipeline would hand it over (a rung packet arrives with its source).
fn write_vod(
    dir: &Path,
    video: (Arc<VideoParams>, Vec<Packet>),
    audio: Option<(Arc<AudioParams>, Vec<Packet>)>,
    ladder: &[(Rung, Arc<VideoParams>)],
    drop: impl Fn(usize, usize) -> bool,
) -> VodSummary {
    let mut ch = VodChannel::new(dir, PackageConfig::default(), None).expect("channel");
    ch.source(IngestEvent::VideoConfig(video.0)).expect("push");
    if let Some((params, _)) = &audio {
        ch.source(IngestEvent::AudioConfig(params.clone()))
            .expect("push");
    }
    ch.rung(RungOutput::Plan(
        ladder.iter().map(|(r, _)| r.clone()).collect(),
    ))
    .expect("plan");
    for (i, (_, p)) in ladder.iter().enumerate() {
        ch.rung(RungOutput::Config {
            rung: i,
            params: p.clone(),
        })
        .expect("config");
    }
    let audio_packets = audio.map(|a| a.1).unwrap_or_default();
    for e in schedule(&video.1, &audio_packets, ladder.len(), drop) {
        match e {
            Ev::Source(p) => ch.source(IngestEvent::Packet(p)),
            Ev::Rung(rung, packet) => {
                let made_from = ch.clock.media_time(&packet);
                let arrival = ch.clock.at(made_from);
                ch.rung(RungOutput::Packet {
                    rung,
                    packet,
                    arrival,
                })
            }
        }
        .expect("push");
    }
    ch.finish().expect("finish").0
}

/// 30 fps video with a keyframe every `gop` frames, and 44.1 kHz AAC.
fn synthetic(secs: i64, gop: i64) -> (Vec<Packet>, Vec<Packet>) {
    let video = (0..secs * 30)
        .map(|i| {
            let t = i * 3000;
            Packet {
                track: TrackKind::Video,
                dts: t,
                pts: t,
                keyframe: i % gop == 0,
                data: Bytes::from(vec![0, 0, 0, 1, if i % gop == 0 { 0x65 } else { 0x41 }]),
            }
        })
        .collect();
    let audio = (0..secs * 44_100 / 1024)
        .map(|k| {
            let t = k * 1024 * 90_000 / 44_100;
            Packet {
                track: TrackKind::Audio,
                dts: t,
                pts: t,
                keyframe: true,
                data: Bytes::from(vec![0x21, 0x10, k as u8]),
            }
        })
        .collect();
    (video, audio)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_synthetic_vod_has_a_playlist_per_rendition_and_a_master() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out");
    let (video, audio) = synthetic(9, 60);
    let audio_params = Arc::new(AudioParams {
        asc: Bytes::from_static(&[0x12, 0x10]),
        object_type: 2,
        sample_rate: 44_100,
        channels: 2,
        samples_per_frame: 1024,
    });
    let ladder = [
        (rung("720p", 1280, 720, 3_000_000), params(1280, 720)),
        (rung("360p", 640, 360, 700_000), params(640, 360)),
    ];
    // 360p's encoder dropped the GOP from 4 s to 6 s.
    let summary = write_vod(
        &dir,
        (params(1920, 1080), video),
        Some((audio_params, audio)),
        &ladder,
        |r, i| r == 1 && (120..180).contains(&i),
    );
    let names: Vec<&str> = summary.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["source", "720p", "360p", "audio"]);
    for r in &summary.renditions {
        assert_eq!(r.segments, 5, "{r:?}");
        assert!(r.bytes > 0);
        let secs = r.duration.as_secs_f64();
        assert!((secs - 9.0).abs() < 0.05, "{r:?}");
    }

    let master = read(&dir.join("master.m3u8"));
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("master");
    let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["source/index.m3u8", "720p/index.m3u8", "360p/index.m3u8"]
    );
    assert!(
        master.contains("RESOLUTION=1280x720,FRAME-RATE=30,AUDIO=\"audio\""),
        "{master}"
    );
    assert!(master.contains("CODECS=\"avc1.64000d,mp4a.40.2\""));
    assert_eq!(
        parsed.alternatives[0].uri.as_deref(),
        Some("audio/index.m3u8")
    );

    for name in names {
        let folder = dir.join(name);
        let text = read(&folder.join("index.m3u8"));
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n"), "{text}");
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!text.contains("EXT-X-PART"), "no LL-HLS tags in VOD");
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("media");
        assert_eq!(parsed.segments.len(), 5);
        let map = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
            .expect("map")
            .trim_end_matches('"');
        assert!(folder.join(map).is_file(), "{name}/{map}");
        for s in &parsed.segments {
            let gap = s.unknown_tags.iter().any(|t| t.tag == "X-GAP");
            assert_eq!(folder.join(&s.uri).is_file(), !gap, "{name}/{}", s.uri);
        }
    }
    let gaps = read(&dir.join("360p/index.m3u8"))
        .matches("#EXT-X-GAP")
        .count();
    assert_eq!(gaps, 1);
}

/// Frames ffprobe decodes from a playlist's first stream, which must raise
/// nothing at error level on the way.
fn decoded_frames(playlist: &Path) -> u64 {
    let args = format!(
        "-v error -count_frames -show_entries stream=nb_read_frames -of json {}",
        playlist.display()
    );
    let dir = playlist.parent().expect("folder");
    let out = testmedia::tool(dir, "ffprobe", &args);
    assert!(
        out.stderr.is_empty(),
        "{}: {}",
        playlist.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let count = &probe["streams"][0]["nb_read_frames"];
    count
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("frame count: {probe}"))
}

#[test]
fn ffprobe_decodes_every_rendition_of_a_real_vod() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (video_params, video) = testmedia::h264(tmp.path(), 150, 60, 2);
    let (audio_params, audio) = testmedia::aac(tmp.path(), 5);
    assert!(video.iter().any(|p| p.pts != p.dts), "B-frames");
    let audio_frames = audio.len() as u64;
    let dir = tmp.path().join("vod");
    // The same samples stand in for a transcoded rung.
    let ladder = [(rung("720p", 320, 240, 500_000), video_params.clone())];
    let summary = write_vod(
        &dir,
        (video_params, video),
        Some((audio_params, audio)),
        &ladder,
        |_, _| false,
    );
    assert_eq!(summary.renditions.len(), 3);
    assert_eq!(decoded_frames(&dir.join("source/index.m3u8")), 150);
    assert_eq!(decoded_frames(&dir.join("720p/index.m3u8")), 150);
    // Audio past the end of video is not packaged: the B-frames' decode
    // delay (2 frames) and AAC priming leave about 100 ms, 5 frames, out.
    let audio = decoded_frames(&dir.join("audio/index.m3u8"));
    assert!(
        audio + 6 >= audio_frames && audio <= audio_frames,
        "{audio} of {audio_frames}"
    );
    // The multivariant playlist opens too, with every variant.
    let master = dir.join("master.m3u8");
    let out = testmedia::tool(
        &dir,
        "ffprobe",
        &format!(
            "-v error -show_entries program=program_id:stream=codec_type -of json {}",
            master.display()
        ),
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let programs = probe["programs"].as_array().expect("programs");
    assert_eq!(programs.len(), 2, "one program per variant: {probe}");
    for p in programs {
        let mut kinds: Vec<&str> = p["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .filter_map(|s| s["codec_type"].as_str())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["audio", "video"], "{probe}");
    }
}

fn ffprobe_frames(playlist: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(playlist)
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    fields
        .last()
        .and_then(|n| n.parse().ok())
        .expect("frame count")
}

#[test]
fn sidecar_lines_parse_and_bad_ones_are_refused() {
    let evs = parse_sidecar(
        "{\"at\": 2, \"text\": \"b\"}\n\n{\"at\": 1, \"hex\": \"0x00ff\", \"duration\": 5}",
    )
    .expect("valid");
    assert_eq!(evs[0].at_s, 1.0);
    assert_eq!(evs[0].payload, Payload::Bytes(vec![0, 255]));
    assert_eq!(evs[0].duration, Some(Duration::from_secs(5)));
    assert_eq!(evs[1].payload, Payload::Text("b".into()));
    assert!(parse_sidecar("{\"at\": -1, \"text\": \"x\"}").is_err());
    assert!(parse_sidecar("{\"at\": 1}").is_err());
    assert!(parse_sidecar("{\"at\": 1, \"hex\": \"abc\"}").is_err());
}

#[test]
fn a_file_becomes_a_vod_ladder_ffprobe_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.mp4");
    ffmpeg_cli::run(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "60",
        "-c:a",
        "aac",
        input.to_str().expect("utf-8"),
    ]);
    let output = dir.path().join("out");
    let report = run(Options {
        input: &input,
        output: &output,
        pipeline: PipelineConfig {
            ladder: STANDARD.into(),
            ladders: Arc::new(Ladders::default()),
            pace: Pace::Offline,
            encoder: EncoderTuning {
                preset: "ultrafast".into(),
                low_latency: false,
                threads: 1,
            },
            decoder_threads: 1,
            scaler: Default::default(),
            queue_frames: 8,
            quality_every_gops: 2,
            frame_rate: Some(FrameRate::new(30, 1)),
            gpu: None,
            covered: Vec::new(),
        },
        package: PackageConfig::default(),
        progress: false,
        metadata: parse_sidecar(
            "{\"at\": 1.5, \"text\": \"first-event\"}\n# a comment\n{\"at\": 3, \"hex\": \"c0ffee\"}\n",
        )
        .expect("sidecar"),
    })
    .expect("transcode");
    assert_eq!(report.frames, 120);
    // Every rendition carries both sidecar events in emsg boxes.
    for r in &report.renditions {
        let mut media = Vec::new();
        for f in std::fs::read_dir(output.join(&r.name)).expect("rendition dir") {
            let path = f.expect("entry").path();
            if path.extension().is_some_and(|e| e == "m4s") {
                media.extend(std::fs::read(&path).expect("segment"));
            }
        }
        let has = |needle: &[u8]| media.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"https://aomedia.org/emsg/ID3"), "{}: no emsg", r.name);
        assert!(has(b"first-event"), "{}: no text event", r.name);
        let pl = read(&output.join(&r.name).join("index.m3u8"));
        assert!(pl.contains("X-RUNGS-TEXT=\"first-event\""), "{pl}");
        assert!(pl.contains("X-RUNGS-DATA=0xC0FFEE"), "{pl}");
        assert!(pl.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{pl}");
        assert!(has(b"rungs\0\xc0\xff\xee"), "{}: no bytes event", r.name);
    }
    let names: Vec<&str> = report.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["source", "480p", "360p", "160p", "audio"]);
    assert!(output.join("master.m3u8").exists());
    for r in &report.renditions {
        assert!(r.bytes > 0 && r.segments >= 2, "{r:?}");
        assert!((r.duration_s - 4.0).abs() < 0.2, "{r:?}");
        if r.name == "audio" {
            continue;
        }
        let frames = ffprobe_frames(&output.join(&r.name).join("index.m3u8"));
        assert_eq!(frames, 120, "{}: frames ffprobe decodes", r.name);
        if r.name != "source" {
            assert!(r.psnr_db.is_some_and(|p| p > 30.0), "{r:?}");
            assert!(r.ssim.is_some_and(|s| s > 0.9), "{r:?}");
            let target = r.target_bitrate_bps.expect("target") as f64;
            let got = r.bitrate_bps as f64;
            assert!(got < target * 1.5, "{}: {got} b/s against {target}", r.name);
        }
    }
}
