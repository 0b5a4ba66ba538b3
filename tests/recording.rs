//! Recording live streams as HLS VOD, end to end with real peers: ffmpeg
//! publishes over RTMP, the node records into its local store or into an S3
//! server (s3s-fs), ffprobe decodes every recorded segment, hls.js in
//! headless Chromium plays a recording back.
//!
//! - `local_recording_survives_a_reconnect_and_plays_in_hlsjs`: a `standard`
//!   channel whose publisher leaves and comes back within the reconnect grace
//!   period, with timed metadata inserted while live: one recording, every
//!   rendition a VOD playlist with one discontinuity and the date range, every
//!   segment decodable and starting on a keyframe, the durations those of what
//!   was published, thumbnails, `recording-ended.json`, the API's entry, the
//!   upload metrics; hls.js plays it to the end, fires the metadata's ID3 cue
//!   and places its date range at the same time.
//! - `s3_outage_is_spooled_without_touching_the_live_stream`: the S3 store
//!   goes away mid-stream for eight seconds: the live playlists keep advancing
//!   and drop nothing while the spool grows and uploads fail; once the store
//!   is back, the whole recording is read back through the S3 API and the
//!   spool is empty.
//! - `sigkill_mid_stream_recovers_the_recording_at_the_next_start`: a node
//!   killed with SIGKILL while recording (after a reconnect) completes the
//!   recording at its next start ("recovered": true), holding the
//!   discontinuity and every segment the live playlists had listed as
//!   complete before the kill, byte for byte.
//!
//! Publishers are cheap (`ultrafast`, no B-frames) and small, so that the 2-core
//! CI machine spends its time on the node's transcoder, and they stop by
//! themselves (`-t`): what was published is then known exactly (N seconds of
//! 30 fps video and 48 kHz audio), which is what the recorded durations are
//! held to.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// One frame of the publishers' 30 fps video: how far each recorded segment's
/// EXTINF may be from its media (a segment's last frame is the one whose
/// duration a timeline can round either way).
const FRAME_S: f64 = 1.0 / 30.0;
/// Reconnect grace of the nodes under test: long enough for a second ffmpeg
/// to connect on a loaded machine, short enough that the recording ends soon
/// after the last publisher.
const GRACE_S: f64 = 6.0;
/// What the inserted timed metadata says.
const TEXT: &str = "rungs-recording-e2e";

/// `[recording]` keys every test sets: a thumbnail every 4 s (several in a
/// short stream) and a quick retry of a failing store (1 s, not 30).
const RECORDING_KEYS: &str = "thumbnail_interval_s = 4\nupload_retry_max_s = 1\n";

/// `NodeConfig::extra_toml` is `&'static str` (most tests give a literal); the
/// S3 test's table names a port known only at run time. One small string per
/// test, never freed: the test process ends soon after.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn node_config(extra_toml: &'static str) -> NodeConfig {
    NodeConfig {
        reconnect_grace_s: GRACE_S,
        extra_toml,
        ..NodeConfig::default()
    }
}

/// A live-paced ffmpeg that publishes `seconds` of testsrc2 (30 fps) and a
/// 48 kHz tone, then unpublishes and exits by itself. `ultrafast`, no
/// B-frames, a 2 s GOP (the node's segment target).
fn publish_for(node: &Node, ch: &Channel, width: u32, height: u32, seconds: u32) -> Publisher {
    let opts = PubOpts {
        width,
        height,
        bframes: false,
        zerolatency: true,
        preset: "ultrafast",
        vbv: true,
        video_bitrate_k: 1200,
        max_seconds: seconds,
        ..PubOpts::default()
    };
    let p = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, &node.data_dir);
    node.attach_log(&p.log_path);
    p
}

/// Waits for ffmpeg to finish its `seconds` and checks it exited cleanly
/// (so that all of them reached the node).
fn wait_published(p: &mut Publisher, seconds: u32) {
    let st = p
        .wait_exit(Duration::from_secs(seconds as u64 + 60))
        .unwrap_or_else(|| {
            panic!(
                "ffmpeg still publishing long after {seconds} s:\n{}",
                p.log()
            )
        });
    assert!(st.success(), "ffmpeg failed ({st}):\n{}", p.log());
}

/// `GET /api/v1/channels/{id}/recordings`: the list, newest first.
fn recordings(node: &Node, id: &str) -> Vec<Value> {
    let r = node.api("GET", &format!("/api/v1/channels/{id}/recordings"), None);
    assert_eq!(r.status, 200, "recordings API: {}", r.text());
    r.json()["recordings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the channel's newest recording is `complete`, and returns the
/// whole list then.
fn wait_complete(node: &Node, id: &str, timeout: Duration) -> Vec<Value> {
    wait_for(timeout, Duration::from_millis(250), || {
        let list = recordings(node, id);
        (list.first()?["state"] == "complete").then_some(list)
    })
    .unwrap_or_else(|| {
        panic!(
            "no complete recording within {timeout:?}; the API lists {:?}",
            recordings(node, id)
        )
    })
}

/// Rendition names and playlist URIs of a multivariant playlist, variants
/// first, then the EXT-X-MEDIA ones (audio).
fn renditions(master: &str) -> Vec<(String, String)> {
    let mv = parse_multivariant(master)
        .unwrap_or_else(|e| panic!("invalid multivariant playlist: {e}\n{master}"));
    mv.variants
        .iter()
        .map(|v| v.uri.clone())
        .chain(
            mv.media
                .iter()
                .filter_map(|m| m.quoted("URI").map(str::to_string)),
        )
        .map(|uri| {
            let name = uri.split('/').next().unwrap_or_default().to_string();
            (name, uri)
        })
        .collect()
}

/// One recorded segment as read back.
#[derive(Debug)]
struct Seg {
    extinf: f64,
    bytes: Vec<u8>,
    /// The sum of its packets' durations, as ffprobe reads them.
    media_s: f64,
    /// It began a new publish (EXT-X-DISCONTINUITY before it).
    discontinuity: bool,
}

/// One rendition of a recording as read back.
#[derive(Debug)]
struct Rendition {
    name: String,
    text: String,
    segments: Vec<Seg>,
    discontinuities: usize,
    /// Every distinct init segment's bytes plus every segment's.
    bytes: u64,
}

impl Rendition {
    fn extinf_sum(&self) -> f64 {
        self.segments.iter().map(|s| s.extinf).sum()
    }
}

/// A recording read back through `fetch` (a path below the session folder to
/// its bytes, `None` when missing), checked on the way into `f`: the master
/// lists the renditions; each rendition's playlist is a strict, finished VOD
/// (PLAYLIST-TYPE:VOD, ENDLIST, no gap); every segment and its init exist,
/// decode with ffprobe (every packet a frame, no error), a video one starts
/// with a keyframe, and its EXTINF is its media's duration within a frame.
fn read_vod(
    f: &Findings,
    fetch: &dyn Fn(&str) -> Option<Vec<u8>>,
    scratch: &Path,
) -> Vec<Rendition> {
    let master = String::from_utf8(fetch("master.m3u8").expect("the recording has master.m3u8"))
        .expect("master.m3u8 is UTF-8");
    let mut out = Vec::new();
    for (name, uri) in renditions(&master) {
        let Some(bytes) = fetch(&uri) else {
            f.fail("every rendition the master names has a playlist", uri);
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let pl = match parse_media(&text) {
            Ok(pl) => pl,
            Err(e) => {
                f.fail("every VOD playlist parses", format!("{uri}: {e}\n{text}"));
                continue;
            }
        };
        f.check(
            pl.playlist_type.as_deref() == Some("VOD") && pl.endlist,
            "a recorded playlist has PLAYLIST-TYPE:VOD and ENDLIST",
            || format!("{uri}:\n{text}"),
        );
        f.check(
            pl.open_parts.is_empty() && pl.preload_hints.is_empty() && pl.part_target.is_none(),
            "a recorded playlist has no LL-HLS parts or hints",
            || format!("{uri}:\n{text}"),
        );
        // RFC 8216bis 4.4.3.1: "The EXTINF duration of each Media Segment in
        // the Playlist file, when rounded to the nearest integer, MUST be less
        // than or equal to the Target Duration".
        let target = pl.target_duration.unwrap_or(0);
        f.check(
            pl.segments
                .iter()
                .all(|s| s.duration.round() as u64 <= target),
            "every recorded EXTINF, rounded, is at most the target duration",
            || format!("{uri}:\n{text}"),
        );
        let dir = uri.rsplit_once('/').map_or("", |(d, _)| d);
        let mut inits: Vec<String> = Vec::new();
        let mut total = 0u64;
        let mut segments = Vec::new();
        for s in &pl.segments {
            f.check(!s.gap, "no recorded segment is a gap", || {
                format!("{uri}: {}", s.uri)
            });
            let Some(map) = s.map_uri.clone() else {
                f.fail(
                    "every recorded segment has an EXT-X-MAP",
                    format!("{uri}: {}", s.uri),
                );
                continue;
            };
            let (Some(init), Some(seg)) = (
                fetch(&format!("{dir}/{map}")),
                fetch(&format!("{dir}/{}", s.uri)),
            ) else {
                f.fail(
                    "every segment and init a recorded playlist names is stored",
                    format!("{uri}: {} (init {map})", s.uri),
                );
                continue;
            };
            if !inits.contains(&map) {
                inits.push(map.clone());
                total += init.len() as u64;
            }
            total += seg.len() as u64;
            let media_s = probe_segment(f, &name, &s.uri, &init, &seg, scratch);
            f.check(
                (s.duration - media_s).abs() <= FRAME_S,
                "a recorded segment's EXTINF is its media's duration within a frame",
                || {
                    format!(
                        "{uri}: {} EXTINF {} but ffprobe reads {media_s:.4} s",
                        s.uri, s.duration
                    )
                },
            );
            segments.push(Seg {
                extinf: s.duration,
                bytes: seg,
                media_s,
                discontinuity: s.discontinuity,
            });
        }
        f.check(
            !segments.is_empty(),
            "every rendition recorded segments",
            || uri.clone(),
        );
        out.push(Rendition {
            name,
            text,
            segments,
            discontinuities: pl.discontinuity_tags,
            bytes: total,
        });
    }
    out
}

/// ffprobe decodes `init` + `segment` (as a player appends them): one track,
/// every packet a frame, nothing reported as an error, and a video segment's
/// first packet a keyframe. Returns the segment's media duration: its trun
/// sample durations over the init's timescale (ffprobe leaves some packet
/// durations N/A, so they are read from the boxes), after checking that
/// ffprobe read as many packets as the boxes list samples.
fn probe_segment(
    f: &Findings,
    rendition: &str,
    uri: &str,
    init: &[u8],
    segment: &[u8],
    scratch: &Path,
) -> f64 {
    let at = format!("{rendition}/{uri}");
    let file = scratch.join(format!("{rendition}-{uri}.mp4"));
    std::fs::write(&file, [init, segment].concat()).expect("write a scratch file");
    let (ok, v, stderr) = ffprobe_json(
        &file,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames,nb_read_packets:packet=flags",
        ],
    );
    let _ = std::fs::remove_file(&file);
    f.check(
        ok && stderr.trim().is_empty(),
        "ffprobe decodes every recorded segment cleanly",
        || format!("{at}: {stderr}"),
    );
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    f.check(
        streams.len() == 1,
        "a recorded segment holds one track",
        || format!("{at}: {v}"),
    );
    let st = streams.first().cloned().unwrap_or_default();
    let count = |k: &str| {
        st[k]
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (frames, packets) = (count("nb_read_frames"), count("nb_read_packets"));
    f.check(
        packets > 0 && frames == packets,
        "every packet of a recorded segment decodes to a frame",
        || format!("{at}: {packets} packets, {frames} frames"),
    );
    if st["codec_type"] == "video" {
        let flags = v["packets"][0]["flags"].as_str().unwrap_or("");
        f.check(
            flags.starts_with('K'),
            "a recorded video segment starts with a keyframe",
            || format!("{at}: first packet flags {flags:?}"),
        );
    }
    let parsed = fmp4::parse_init(init).and_then(|i| {
        let timescale = i.tracks.first().map_or(0, |t| t.timescale);
        let frags = fmp4::parse_fragments(segment, Some(&i))?;
        Ok((timescale, frags))
    });
    match parsed {
        Ok((timescale, frags)) if timescale > 0 => {
            let samples: usize = frags.iter().map(|f| f.samples.len()).sum();
            f.check(
                samples == packets,
                "ffprobe reads every sample the segment's boxes list",
                || format!("{at}: {samples} samples, {packets} packets"),
            );
            frags.iter().map(|f| f.duration()).sum::<u64>() as f64 / timescale as f64
        }
        other => {
            f.fail(
                "a recorded segment's init and fragments parse",
                format!("{at}: {:?}", other.map(|(t, fr)| (t, fr.len()))),
            );
            0.0
        }
    }
}

/// `recording-ended.json` agrees with the recording read back: its channel and
/// session, a start before its end, each rendition's segment count, bytes
/// (distinct inits and segments) and duration (the EXTINF sum), the totals.
fn check_ended_json(f: &Findings, ended: &Value, ch: &str, session: &str, vod: &[Rendition]) {
    f.check(
        ended["event"] == "recording-ended"
            && ended["channel"] == ch
            && ended["session"] == session,
        "recording-ended.json names its event, channel and session",
        || ended.to_string(),
    );
    let started = ended["started_at"]
        .as_str()
        .and_then(playlist::parse_date_time);
    let ended_at = ended["ended_at"]
        .as_str()
        .and_then(playlist::parse_date_time);
    f.check(
        matches!((started, ended_at), (Some(a), Some(b)) if b > a),
        "recording-ended.json: RFC 3339 started_at before ended_at",
        || ended.to_string(),
    );
    // The session folder is the start in ISO 8601 basic form.
    let basic = ended["started_at"]
        .as_str()
        .and_then(|s| s.get(..19))
        .map(|s| format!("{}Z", s.replace(['-', ':'], "")));
    f.check(
        basic.as_deref() == Some(session),
        "the session folder is the recording's UTC start (ISO 8601 basic)",
        || format!("{session} vs {}", ended["started_at"]),
    );
    let listed: Vec<&str> = ended["renditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let read: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    f.check(
        listed == read,
        "recording-ended.json lists the master's renditions, in order",
        || format!("{listed:?} vs {read:?}"),
    );
    for (r, j) in vod
        .iter()
        .zip(ended["renditions"].as_array().into_iter().flatten())
    {
        f.check(
            j["segments"].as_u64() == Some(r.segments.len() as u64),
            "recording-ended.json: a rendition's segment count",
            || format!("{}: {j} vs {} listed", r.name, r.segments.len()),
        );
        f.check(
            j["bytes"].as_u64() == Some(r.bytes),
            "recording-ended.json: a rendition's bytes are its inits' and segments'",
            || format!("{}: {j} vs {} stored", r.name, r.bytes),
        );
        let d = j["duration_s"].as_f64().unwrap_or(f64::NAN);
        // EXTINF is written to 5 decimals.
        f.check(
            (d - r.extinf_sum()).abs() <= 1e-5 * (r.segments.len() as f64 + 1.0),
            "recording-ended.json: a rendition's duration is its EXTINF sum",
            || format!("{}: {d} vs {}", r.name, r.extinf_sum()),
        );
    }
    let bytes: u64 = vod.iter().map(|r| r.bytes).sum();
    f.check(
        ended["bytes"].as_u64() == Some(bytes),
        "recording-ended.json: bytes is every rendition's",
        || format!("{} vs {bytes}", ended["bytes"]),
    );
    let longest = vod.iter().map(Rendition::extinf_sum).fold(0.0, f64::max);
    let d = ended["duration_s"].as_f64().unwrap_or(f64::NAN);
    f.check(
        (d - longest).abs() <= 1e-3,
        "recording-ended.json: duration_s is the longest rendition's",
        || format!("{d} vs {longest}"),
    );
}

/// The API's entry agrees with `recording-ended.json`.
fn check_api_entry(f: &Findings, entry: &Value, ended: &Value) {
    for k in ["session", "started_at", "ended_at", "bytes", "recovered"] {
        f.check(
            entry[k] == ended[k],
            "the API's recording entry matches recording-ended.json",
            || format!("{k}: API {} vs {}", entry[k], ended[k]),
        );
    }
    let (a, b) = (
        entry["duration_s"].as_f64().unwrap_or(f64::NAN),
        ended["duration_s"].as_f64().unwrap_or(f64::NAN),
    );
    f.check(
        (a - b).abs() < 1e-6,
        "the API's duration_s is the recording's",
        || format!("{a} vs {b}"),
    );
}

/// A JPEG's first and last bytes (SOI, EOI), and ffprobe reads a picture.
fn is_jpeg(bytes: &[u8], scratch: &Path) -> Result<(u64, u64), String> {
    if !(bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && bytes.ends_with(&[0xFF, 0xD9])) {
        return Err(format!("not SOI..EOI ({} bytes)", bytes.len()));
    }
    let file = scratch.join("probe.jpg");
    std::fs::write(&file, bytes).expect("write a scratch file");
    let (ok, v, stderr) = ffprobe_json(&file, &["-show_entries", "stream=codec_name,width,height"]);
    let st = &v["streams"][0];
    if !ok || st["codec_name"] != "mjpeg" {
        return Err(format!("ffprobe: {v} {stderr}"));
    }
    Ok((
        st["width"].as_u64().unwrap_or(0),
        st["height"].as_u64().unwrap_or(0),
    ))
}

/// Inserts [`TEXT`] as timed metadata into `id`'s live stream; returns the
/// date range's ID. text/plain: the node carries it as an ID3 TXXX frame and
/// X-RUNGS-TEXT (`Node::api` sends JSON's content type, which makes a PRIV
/// frame and hex data).
fn post_metadata(node: &Node, http: &Http, id: &str) -> String {
    let auth = format!("Bearer {}", node.token);
    let r = http
        .request(
            "POST",
            &node.admin_url(&format!("/api/v1/channels/{id}/metadata")),
            &[
                ("authorization", &auth),
                ("content-type", "text/plain; charset=utf-8"),
            ],
            Some(TEXT.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 202, "metadata accepted: {}", r.text());
    r.json()["daterange_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no daterange_id: {}", r.text()))
        .to_string()
}

/// What is left in the node's spool, for a failure's message.
fn spool_files(node: &Node) -> Vec<String> {
    let root = node.data_dir.join("spool");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

fn metric(node: &Node, name: &str) -> f64 {
    node.metrics().sum(name, &[])
}

/// Test 1. See the file's comment.
#[test]
fn local_recording_survives_a_reconnect_and_plays_in_hlsjs() {
    require_browser();
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let node = Node::start(node_config(leak(format!("[recording]\n{RECORDING_KEYS}"))));
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");

    // The node records channels that say so: this one does, by the API.
    let ch = node.create_channel_with_ladder("rec-local", "standard");
    let r = node.api(
        "PATCH",
        &format!("/api/v1/channels/{}", ch.id),
        Some(br#"{"record": true}"#),
    );
    assert_eq!(r.status, 200, "PATCH record: {}", r.text());
    assert_eq!(
        r.json()["record"],
        true,
        "the channel says record: {}",
        r.text()
    );

    // 960x540: the standard ladder's 480p, 360p and 160p rungs below the
    // source, and no 720p (never upscaled), at a cost two cores can carry.
    const FIRST_S: u32 = 8;
    const SECOND_S: u32 = 8;
    let mut first = publish_for(&node, &ch, 960, 540, FIRST_S);
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("not live; ffmpeg:\n{}", first.log()));

    // Timed metadata mid-stream: at 2-3 s of the first publish's 8, early
    // enough that a slow machine still finds the stream live.
    let dr_id = post_metadata(&node, &http, &ch.id);

    // While live the API lists the recording as `recording`, not yet ended.
    let live = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        recordings(&node, &ch.id).into_iter().next()
    });
    f.check(
        live.as_ref()
            .is_some_and(|r| r["state"] == "recording" && r["ended_at"].is_null()),
        "a live stream's recording is listed as `recording`",
        || format!("{live:?}"),
    );

    // The publisher leaves; another comes back within the grace period: the
    // same stream, so the same recording, with a discontinuity.
    wait_published(&mut first, FIRST_S);
    let mut second = publish_for(&node, &ch, 960, 540, SECOND_S);
    wait_published(&mut second, SECOND_S);
    let list = wait_complete(&node, &ch.id, Duration::from_secs_f64(GRACE_S + 60.0));
    eprintln!("recording complete after {:?}", t0.elapsed());
    assert_eq!(
        list.len(),
        1,
        "one recording across the reconnect: {list:?}"
    );
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();

    // Read back as a player would: over HTTP from the node's /recordings.
    let base = node.url(&format!("/recordings/{}/{session}/", ch.id));
    let fetch = |rel: &str| -> Option<Vec<u8>> {
        let r = http.get(&format!("{base}{rel}"));
        (r.status == 200).then_some(r.body)
    };
    let vod = read_vod(&f, &fetch, scratch.path());
    let names: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["source", "480p", "360p", "160p", "audio"],
        "renditions of a 960x540 source on the standard ladder"
    );

    let published = (FIRST_S + SECOND_S) as f64;
    for r in &vod {
        f.check(
            r.discontinuities == 1 && r.segments.iter().filter(|s| s.discontinuity).count() == 1,
            "exactly one EXT-X-DISCONTINUITY (the reconnect)",
            || format!("{}:\n{}", r.name, r.text),
        );
        // Each publish's seconds are recorded, on either side of it.
        let cut = r.segments.iter().position(|s| s.discontinuity).unwrap_or(0);
        let (a, b) = r.segments.split_at(cut);
        for (part, want) in [(a, FIRST_S), (b, SECOND_S)] {
            let sum: f64 = part.iter().map(|s| s.extinf).sum();
            f.check(
                (sum - want as f64).abs() <= FRAME_S * part.len().max(1) as f64,
                "each publish's length is recorded (EXTINF sum within a frame per segment)",
                || format!("{}: {sum:.4} s for a {want} s publish:\n{}", r.name, r.text),
            );
        }
        let media: f64 = r.segments.iter().map(|s| s.media_s).sum();
        f.check(
            (r.extinf_sum() - media).abs() <= FRAME_S * r.segments.len() as f64
                && (media - published).abs() <= FRAME_S * r.segments.len() as f64,
            "EXTINF sum, decoded media and the published length agree",
            || {
                format!(
                    "{}: EXTINF {:.4}, media {media:.4}, published {published}",
                    r.name,
                    r.extinf_sum()
                )
            },
        );
        // The metadata: a date range in the playlist, the emsg in a segment.
        f.check(
            r.text.lines().any(|l| {
                l.starts_with(&format!("#EXT-X-DATERANGE:ID=\"{dr_id}\""))
                    && l.contains(&format!("X-RUNGS-TEXT=\"{TEXT}\""))
            }),
            "the inserted metadata is an EXT-X-DATERANGE of every recorded rendition",
            || format!("{}:\n{}", r.name, r.text),
        );
        f.check(
            r.segments.iter().any(|s| {
                fmp4::id3_emsg_payloads(&s.bytes).iter().any(|p| {
                    p.starts_with(b"ID3\x04") && p.windows(TEXT.len()).any(|w| w == TEXT.as_bytes())
                })
            }),
            "the inserted metadata is an emsg in a recorded segment of every rendition",
            || r.name.clone(),
        );
    }

    let ended_resp = http.get(&format!("{base}recording-ended.json"));
    assert_eq!(ended_resp.status, 200, "recording-ended.json");
    f.check(
        ended_resp.content_type() == "application/json",
        "recording-ended.json is served as JSON",
        || ended_resp.content_type(),
    );
    let ended = ended_resp.json();
    check_ended_json(&f, &ended, &ch.id, &session, &vod);
    f.check(
        ended["recovered"] == false,
        "a stream that ended is not `recovered`",
        || ended.to_string(),
    );
    check_api_entry(&f, entry, &ended);
    let url = entry["url"].as_str().unwrap_or_default().to_string();
    let want_path = format!("/recordings/{}/{session}/master.m3u8", ch.id);
    f.check(
        url.starts_with("http://") && url.ends_with(&want_path),
        "the API's url is the node's /recordings master",
        || url.clone(),
    );
    f.check(
        http.try_get(&url)
            .is_ok_and(|r| r.status == 200 && Some(r.body) == fetch("master.m3u8")),
        "the API's url serves the recording's master",
        || url.clone(),
    );

    // Thumbnails, every 4 s of a 16 s stream, and the channel's latest one:
    // files of the local store, and served.
    let store = node.data_dir.join("recordings").join(&ch.id);
    let mut thumbs: Vec<String> = std::fs::read_dir(store.join(&session).join("thumbnails"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    thumbs.sort();
    f.check(
        thumbs.len() >= 2
            && thumbs.iter().all(|t| {
                t.len() == 10 && t.ends_with(".jpg") && t[..6].bytes().all(|b| b.is_ascii_digit())
            }),
        "thumbnails/<6-digit seconds>.jpg, several over 16 s at one per 4 s",
        || format!("{thumbs:?}"),
    );
    let mut thumb_bytes = Vec::new();
    for t in &thumbs {
        let bytes =
            std::fs::read(store.join(&session).join("thumbnails").join(t)).unwrap_or_default();
        let size = is_jpeg(&bytes, scratch.path());
        f.check(
            size.as_ref()
                .is_ok_and(|&(w, h)| (1..=640).contains(&w) && h > 0),
            "a thumbnail is a JPEG at most 640 wide",
            || format!("{t}: {size:?}"),
        );
        thumb_bytes.push(bytes);
    }
    if let Some(t) = thumbs.first() {
        let r = http.get(&format!("{base}thumbnails/{t}"));
        f.check(
            r.status == 200
                && r.content_type() == "image/jpeg"
                && Some(&r.body) == thumb_bytes.first(),
            "a thumbnail is served as image/jpeg",
            || format!("{t}: {} {}", r.status, r.content_type()),
        );
    }
    let latest = std::fs::read(store.join("latest.jpg")).unwrap_or_default();
    f.check(
        is_jpeg(&latest, scratch.path()).is_ok() && thumb_bytes.contains(&latest),
        "<channel>/latest.jpg is a JPEG, one of the recording's thumbnails",
        || format!("{} bytes", latest.len()),
    );

    // Metrics: every segment went through the uploader, nothing waits, nothing failed.
    let segments: usize = vod.iter().map(|r| r.segments.len()).sum();
    let m = node.metrics();
    f.check(
        m.sum("rungs_recording_uploaded_bytes_total", &[])
            >= ended["bytes"].as_f64().unwrap_or(f64::MAX),
        "rungs_recording_uploaded_bytes_total counts the recording's bytes",
        || {
            format!(
                "{} vs {}",
                m.sum("rungs_recording_uploaded_bytes_total", &[]),
                ended["bytes"]
            )
        },
    );
    f.check(
        m.sum("rungs_recording_uploaded_segments_total", &[]) == segments as f64,
        "rungs_recording_uploaded_segments_total is the recorded segments",
        || {
            format!(
                "{} vs {segments}",
                m.sum("rungs_recording_uploaded_segments_total", &[])
            )
        },
    );
    for zero in [
        "rungs_recording_upload_errors_total",
        "rungs_recording_dropped_segments_total",
        "rungs_recordings_active",
    ] {
        f.check(
            m.sum(zero, &[]) == 0.0,
            "no upload error, no dropped segment, none active",
            || format!("{zero} = {}", m.sum(zero, &[])),
        );
    }
    // A late thumbnail may still be on its way out of the spool.
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        (metric(&node, "rungs_recording_spool_files") == 0.0).then_some(())
    });
    f.check(drained.is_some(), "the spool empties", || {
        format!(
            "{} files: {:?}",
            metric(&node, "rungs_recording_spool_files"),
            spool_files(&node)
        )
    });

    // hls.js plays the recording from the API's URL to its end, through the
    // discontinuity, and the metadata's ID3 cue fires on the way.
    let v = run_page_script("tests/player/vod_metadata.mjs", &[&url, TEXT, &dr_id]);
    let fired = v["report"]["fired"].as_array().cloned().unwrap_or_default();
    f.check(
        v["ended"] == true
            && v["report"]["fatal"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "hls.js plays the recording to its end without a fatal error",
        || v.to_string(),
    );
    f.check(
        v["emsgFired"] == true,
        "hls.js fires the recording's ID3 (emsg) cue",
        || v.to_string(),
    );
    // The date range as hls.js reads it from the recording's video and audio
    // playlists (its cue cannot fire in Chromium: tests/player/vod_metadata.mjs
    // says why): the same event, where the emsg's cue fired, within about a part.
    let emsg_at = fired
        .iter()
        .find(|c| c["key"] == "TXXX" && c["data"] == TEXT)
        .and_then(|c| c["start"].as_f64());
    for kind in ["video", "audio"] {
        let range = v["dateRanges"][kind]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == dr_id.as_str())
            .cloned();
        let at = range.as_ref().and_then(|r| r["startTime"].as_f64());
        f.check(
            range.as_ref().is_some_and(|r| r["text"] == TEXT)
                && matches!((at, emsg_at), (Some(d), Some(e)) if (d - e).abs() <= 0.35),
            "hls.js places the recording's date range where its ID3 cue fired",
            || {
                format!(
                    "{kind}: date range {range:?}, emsg cue at {emsg_at:?}\n{}",
                    v["dateRanges"]
                )
            },
        );
    }
    let duration = v["report"]["duration"].as_f64().unwrap_or(f64::NAN);
    f.check(
        (duration - published).abs() <= 0.25,
        "hls.js sees the recording's whole length",
        || format!("{duration} s for {published} s published"),
    );
    eprintln!("local recording test took {:?}", t0.elapsed());
    f.assert_empty("local recording");
}

/// The last complete segment's media sequence number of each of `urls`.
fn last_msns(http: &Http, urls: &[String]) -> Vec<Option<u64>> {
    urls.iter()
        .map(|u| {
            let r = http.try_get(u).ok()?;
            parse_media(&r.text()).ok()?.last_msn()
        })
        .collect()
}

/// Test 2. See the file's comment.
#[test]
fn s3_outage_is_spooled_without_touching_the_live_stream() {
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let s3_dir = tempfile::Builder::new()
        .prefix("rungs-s3-")
        .tempdir()
        .expect("temp dir");
    let mut s3 = S3Server::start(s3_dir.path());
    // Every channel records, by the node's default; objects under `e2e/`.
    let node = Node::start(node_config(leak(format!(
        "{}enabled = true\n{RECORDING_KEYS}",
        s3.toml("e2e")
    ))));
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");
    let ch = node.create_channel_with_ladder("rec-s3", "standard");
    let shown = node.api("GET", &format!("/api/v1/channels/{}", ch.id), None);
    assert_eq!(
        shown.json()["record"],
        true,
        "a channel that does not say records by the node's default: {}",
        shown.text()
    );

    // 640x360: the source, a 160p rung and audio, so that the rung's
    // dropped-GOP count means something and two cores keep up.
    const SECONDS: u32 = 20;
    let mut publisher = publish_for(&node, &ch, 640, 360, SECONDS);
    let started = publisher.spawned;
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("not live; ffmpeg:\n{}", publisher.log()));
    let master = http.get(&node.master_url(&ch.id)).text();
    let live = renditions(&master);
    let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["source", "160p", "audio"],
        "live renditions:\n{master}"
    );
    let urls: Vec<String> = live
        .iter()
        .map(|(_, uri)| node.url(&format!("/hls/{}/{uri}", ch.id)))
        .collect();

    // The store goes away at about 6 s and comes back at about 14 s.
    std::thread::sleep(
        (started + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    );
    let lost = |m: &Metrics| {
        m.sum("rungs_rung_dropped_gops_total", &[])
            + m.sum("rungs_ingest_dropped_packets_total", &[])
            + m.sum("rungs_recording_dropped_segments_total", &[])
    };
    let before = node.metrics();
    s3.stop();
    let down_at = Instant::now();
    let mut msns: Vec<(f64, Vec<Option<u64>>)> = Vec::new();
    let mut spool: Vec<(f64, f64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(14) {
        let at = down_at.elapsed().as_secs_f64();
        msns.push((at, last_msns(&http, &urls)));
        let m = node.metrics();
        spool.push((
            m.sum("rungs_recording_spool_bytes", &[]),
            m.sum("rungs_recording_spool_files", &[]),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = node.metrics();
    s3.restart();
    eprintln!(
        "S3 down for {:.1} s; spool (bytes, files) went {:?} -> {:?}",
        down_at.elapsed().as_secs_f64(),
        spool.first(),
        spool.last()
    );

    // While it was down: every live playlist kept advancing (a new segment
    // at least every 5 s, two or more in all), nothing was dropped, the
    // uploads failed and the spool held what waited.
    for (i, (name, _)) in live.iter().enumerate() {
        let series: Vec<(f64, Option<u64>)> = msns.iter().map(|(t, v)| (*t, v[i])).collect();
        let first = series.first().and_then(|s| s.1);
        let last = series.last().and_then(|s| s.1);
        f.check(
            matches!((first, last), (Some(a), Some(b)) if b >= a + 2),
            "live playlists advance while the store is down",
            || format!("{name}: {series:?}"),
        );
        let mut since = 0.0;
        let mut prev = first;
        for &(t, msn) in &series {
            if msn > prev {
                since = t;
                prev = msn;
            }
            f.check(
                t - since <= 5.0,
                "a new live segment at least every 5 s while the store is down",
                || format!("{name}: {series:?}"),
            );
        }
    }
    f.check(
        lost(&during) == lost(&before),
        "nothing dropped (rung GOPs, ingest packets, recorded segments) while the store is down",
        || format!("{} -> {}", lost(&before), lost(&during)),
    );
    let errors = |m: &Metrics| m.sum("rungs_recording_upload_errors_total", &[]);
    f.check(
        errors(&during) > errors(&before),
        "rungs_recording_upload_errors_total rises while the store is down",
        || format!("{} -> {}", errors(&before), errors(&during)),
    );
    let (first, last) = (spool.first().copied(), spool.last().copied());
    f.check(
        matches!((first, last), (Some(a), Some(b)) if b.0 > a.0 && b.1 > a.1),
        "rungs_recording_spool_bytes and _files rise while the store is down",
        || format!("{spool:?}"),
    );

    wait_published(&mut publisher, SECONDS);
    let after = node.metrics();
    f.check(
        lost(&after) == lost(&before),
        "nothing dropped after the store came back",
        || format!("{} -> {}", lost(&before), lost(&after)),
    );
    let list = wait_complete(&node, &ch.id, Duration::from_secs_f64(GRACE_S + 60.0));
    eprintln!("recording complete after {:?}", t0.elapsed());
    assert_eq!(list.len(), 1, "one recording: {list:?}");
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();

    // Read back through the S3 API, as a CDN in front of the bucket would.
    let prefix = format!("e2e/{}", ch.id);
    let objects = s3.list(&prefix);
    let sessions: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(&format!("{prefix}/"))?.split_once('/'))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        sessions.into_iter().collect::<Vec<_>>(),
        [session.as_str()],
        "one session folder in the bucket: {objects:?}"
    );
    f.check(
        objects
            .iter()
            .all(|(k, _)| !k.ends_with(".live") && !k.ends_with(".tmp")),
        "no working or half-written spool file reaches the store",
        || format!("{objects:?}"),
    );
    let fetch = |rel: &str| s3.try_get(&format!("{prefix}/{session}/{rel}")).ok();
    let vod = read_vod(&f, &fetch, scratch.path());
    let got: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, names, "recorded renditions are the live ones");
    for r in &vod {
        let n = r.segments.len() as f64;
        let media: f64 = r.segments.iter().map(|s| s.media_s).sum();
        f.check(
            r.discontinuities == 0,
            "one publish, no discontinuity",
            || format!("{}:\n{}", r.name, r.text),
        );
        f.check(
            (r.extinf_sum() - SECONDS as f64).abs() <= FRAME_S * n
                && (media - SECONDS as f64).abs() <= FRAME_S * n,
            "the whole publish is recorded across the outage (EXTINF and media within a frame per segment)",
            || {
                format!(
                    "{}: EXTINF {:.4}, media {media:.4}, published {SECONDS}\n{}",
                    r.name,
                    r.extinf_sum(),
                    r.text
                )
            },
        );
    }
    let ended: Value = serde_json::from_slice(&fetch("recording-ended.json").unwrap_or_default())
        .expect("recording-ended.json in the bucket");
    check_ended_json(&f, &ended, &ch.id, &session, &vod);
    check_api_entry(&f, entry, &ended);
    let want_url = format!(
        "{}/{}/{prefix}/{session}/master.m3u8",
        s3.endpoint(),
        s3.bucket()
    );
    f.check(
        entry["url"] == want_url.as_str(),
        "the API's url is the bucket's master (no public_base_url: the endpoint)",
        || format!("{} vs {want_url}", entry["url"]),
    );
    let thumbs = s3.list(&format!("{prefix}/{session}/thumbnails"));
    f.check(
        thumbs.len() >= 3,
        "thumbnails reach the bucket (one per 4 s of 20)",
        || format!("{thumbs:?}"),
    );
    for (k, _) in thumbs.iter().chain(
        objects
            .iter()
            .filter(|(k, _)| k == &format!("{prefix}/latest.jpg")),
    ) {
        let jpeg = is_jpeg(&s3.get(k), scratch.path());
        f.check(jpeg.is_ok(), "stored thumbnails are JPEGs", || {
            format!("{k}: {jpeg:?}")
        });
    }
    f.check(
        objects
            .iter()
            .any(|(k, _)| k == &format!("{prefix}/latest.jpg")),
        "<channel>/latest.jpg in the bucket",
        || format!("{objects:?}"),
    );

    // Everything reached the store: the spool is empty again.
    let segments: usize = vod.iter().map(|r| r.segments.len()).sum();
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        let m = node.metrics();
        (m.sum("rungs_recording_spool_files", &[]) == 0.0
            && m.sum("rungs_recording_spool_bytes", &[]) == 0.0)
            .then_some(m)
    });
    f.check(
        drained.is_some(),
        "the spool is empty once the recording is stored",
        || {
            let m = node.metrics();
            format!(
                "{} files, {} bytes",
                m.sum("rungs_recording_spool_files", &[]),
                m.sum("rungs_recording_spool_bytes", &[])
            )
        },
    );
    let m = node.metrics();
    f.check(
        m.sum("rungs_recording_uploaded_segments_total", &[]) == segments as f64,
        "rungs_recording_uploaded_segments_total counts each segment once",
        || {
            format!(
                "{} vs {segments}",
                m.sum("rungs_recording_uploaded_segments_total", &[])
            )
        },
    );
    eprintln!("S3 recording test took {:?}", t0.elapsed());
    f.assert_empty("S3 recording");
}

/// One complete segment of a live playlist, noted before the kill.
struct Noted {
    rendition: String,
    uri: String,
    extinf: f64,
    bytes: Vec<u8>,
    map_uri: String,
    init: Vec<u8>,
}

/// Test 3. See the file's comment.
#[test]
fn sigkill_mid_stream_recovers_the_recording_at_the_next_start() {
    let _turn = take_turn();
    let f = Findings::default();
    let t0 = Instant::now();
    let cfg = node_config(leak(format!("[recording]\n{RECORDING_KEYS}")));
    let mut node = Node::start(cfg.clone());
    let http = Http::new();
    let scratch = tempfile::tempdir().expect("scratch dir");
    // This channel records by the CLI's flag (the node's default is off).
    let out = node.cli(&[
        "channel", "create", "--name", "rec-kill", "--ladder", "standard", "--record", "--json",
    ]);
    let ch = Channel::from_json(
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}")),
    );
    assert_eq!(ch.json["record"], true, "channel create --record: {out}");

    // A first publish of 6 s, then a reconnect within the grace period: the
    // working playlists the node keeps for a crash then hold a discontinuity
    // and a second init, which the recovered VOD must keep.
    let mut first = publish_for(&node, &ch, 640, 360, 6);
    wait_published(&mut first, 6);
    let mut publisher = publish_for(&node, &ch, 640, 360, 120);
    // Segments after the reconnect's discontinuity in a live playlist.
    let after_cut = |name: &str| {
        let r = http.try_get(&node.media_url(&ch.id, name)).ok()?;
        let pl = parse_media(&r.text()).ok()?;
        let cut = pl.segments.iter().position(|s| s.discontinuity)?;
        Some(pl.segments.len() - cut)
    };
    let wait_after_cut = |k: usize| {
        let all = wait_for(Duration::from_secs(45), Duration::from_millis(200), || {
            ["source", "160p", "audio"]
                .iter()
                .all(|n| after_cut(n).is_some_and(|have| have >= k))
                .then_some(())
        });
        assert!(
            all.is_some(),
            "not {k} segments after the reconnect in every live playlist"
        );
    };
    // Timed metadata once the second publish has a segment: it lands in the
    // second or third segment after the discontinuity, both complete (and so
    // noted) once there are three, about 6 s into the second publish.
    wait_after_cut(1);
    let dr_id = post_metadata(&node, &http, &ch.id);
    let dr_tag = format!("#EXT-X-DATERANGE:ID=\"{dr_id}\"");
    wait_after_cut(3);
    let master_url = node.master_url(&ch.id);
    let master = http.get(&master_url).text();
    let live = renditions(&master);
    let mut noted: Vec<Noted> = Vec::new();
    // (rendition, the date range's line) where a complete segment carried it.
    let mut noted_ranges: Vec<(String, String)> = Vec::new();
    for (name, uri) in &live {
        let url = resolve(&master_url, uri);
        let Fetched { resp, pl } = fetch_media(&http, &url, "");
        let text = resp.text();
        let lines: Vec<&str> = text.lines().collect();
        let last_uri = pl
            .segments
            .last()
            .and_then(|s| lines.iter().rposition(|l| *l == s.uri));
        let range = lines.iter().position(|l| l.starts_with(&dr_tag));
        if let (Some(r), Some(u)) = (range, last_uri)
            && r < u
        {
            noted_ranges.push((name.clone(), lines[r].to_string()));
        }
        for s in &pl.segments {
            let map_uri = s.map_uri.clone().unwrap_or_default();
            let get = |u: &str| {
                let r = http.get(&resolve(&url, u));
                assert_eq!(r.status, 200, "GET {u} of live {name}");
                r.body
            };
            noted.push(Noted {
                rendition: name.clone(),
                uri: s.uri.clone(),
                extinf: s.duration,
                bytes: get(&s.uri),
                init: get(&map_uri),
                map_uri,
            });
        }
    }
    // The recorder spools a segment right after the live store publishes it
    // (players first): a second lets a loaded machine's channel thread do
    // that for the last one noted before the kill.
    std::thread::sleep(Duration::from_secs(1));
    let pid = node.pid().expect("the node runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {pid}");
    assert!(
        time_until(Duration::from_secs(10), || !node.is_running()).is_some(),
        "the node did not die of SIGKILL"
    );
    publisher.kill();
    eprintln!(
        "killed the node after {:?} with {} segments noted",
        t0.elapsed(),
        noted.len()
    );

    // The next node on the same data directory completes the recording.
    let again = Node::start_in(&node.data_dir, cfg, &node_bin());
    let list = wait_complete(&again, &ch.id, Duration::from_secs(60));
    eprintln!("recovered recording complete after {:?}", t0.elapsed());
    assert_eq!(list.len(), 1, "one recording: {list:?}");
    let entry = &list[0];
    let session = entry["session"].as_str().expect("session").to_string();
    let base = again.url(&format!("/recordings/{}/{session}/", ch.id));
    let fetch = |rel: &str| -> Option<Vec<u8>> {
        let r = http.get(&format!("{base}{rel}"));
        (r.status == 200).then_some(r.body)
    };
    let vod = read_vod(&f, &fetch, scratch.path());
    let got: Vec<&str> = vod.iter().map(|r| r.name.as_str()).collect();
    let want: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, want, "recorded renditions are the live ones");
    for r in &vod {
        f.check(
            r.discontinuities == 1,
            "the recovered VOD keeps the reconnect's one discontinuity",
            || format!("{}:\n{}", r.name, r.text),
        );
    }

    // Every segment the live playlists listed as complete is in the
    // recording, with its EXTINF, its init and its very bytes.
    for n in &noted {
        let Some(r) = vod.iter().find(|r| r.name == n.rendition) else {
            continue;
        };
        let listed = r
            .text
            .lines()
            .position(|l| l == n.uri)
            .and_then(|i| r.text.lines().nth(i.checked_sub(1)?))
            .and_then(|l| {
                l.strip_prefix("#EXTINF:")?
                    .trim_end_matches(',')
                    .parse::<f64>()
                    .ok()
            });
        f.check(
            listed.is_some_and(|d| (d - n.extinf).abs() < 1e-6),
            "every segment complete live before the kill is listed in the recovered VOD with its EXTINF",
            || format!("{}/{} (live EXTINF {}):\n{}", n.rendition, n.uri, n.extinf, r.text),
        );
        f.check(
            fetch(&format!("{}/{}", n.rendition, n.uri)).as_ref() == Some(&n.bytes),
            "a recovered segment has the live segment's bytes",
            || format!("{}/{}", n.rendition, n.uri),
        );
        f.check(
            r.text
                .contains(&format!("#EXT-X-MAP:URI=\"{}\"", n.map_uri))
                && fetch(&format!("{}/{}", n.rendition, n.map_uri)).as_ref() == Some(&n.init),
            "a recovered segment's init is the live one, byte for byte",
            || format!("{}/{}", n.rendition, n.map_uri),
        );
    }

    // The metadata, complete in every live playlist before the kill, is in
    // every recovered one, the same date range line.
    f.check(
        noted_ranges.len() == live.len(),
        "the metadata's segment was complete in every live playlist before the kill",
        || format!("{noted_ranges:?}"),
    );
    for (name, line) in &noted_ranges {
        let text = vod
            .iter()
            .find(|r| &r.name == name)
            .map_or("", |r| r.text.as_str());
        f.check(
            text.lines().any(|l| l == line),
            "the recovered VOD keeps the live playlist's EXT-X-DATERANGE",
            || format!("{name}: {line}\n{text}"),
        );
    }

    let ended: Value = serde_json::from_slice(&fetch("recording-ended.json").unwrap_or_default())
        .expect("recording-ended.json in the store");
    f.check(
        ended["event"] == "recording-ended"
            && ended["channel"] == ch.id.as_str()
            && ended["session"] == session.as_str()
            && ended["recovered"] == true,
        "recording-ended.json of a recording completed after a kill says recovered",
        || ended.to_string(),
    );
    let (a, b) = (
        ended["started_at"]
            .as_str()
            .and_then(playlist::parse_date_time),
        ended["ended_at"]
            .as_str()
            .and_then(playlist::parse_date_time),
    );
    f.check(
        matches!((a, b), (Some(a), Some(b)) if b >= a),
        "a recovered recording's ended_at is not before its start",
        || ended.to_string(),
    );
    check_api_entry(&f, entry, &ended);
    f.check(
        entry["recovered"] == true,
        "the API lists the recording as recovered",
        || entry.to_string(),
    );
    let drained = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        (metric(&again, "rungs_recording_spool_files") == 0.0).then_some(())
    });
    f.check(
        drained.is_some(),
        "the spool is empty once the recovered recording is stored",
        || format!("{} files", metric(&again, "rungs_recording_spool_files")),
    );
    eprintln!("SIGKILL recording test took {:?}", t0.elapsed());
    f.assert_empty("recovered recording");
}
