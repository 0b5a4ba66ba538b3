//! What the recording tests share: publishing, waiting for a recording,
//! reading one back and checking it against what was published.

use super::common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// One frame of the publishers' 30 fps video: how far each recorded segment's
/// EXTINF may be from its media (a segment's last frame is the one whose
/// duration a timeline can round either way).
pub(crate) const FRAME_S: f64 = 1.0 / 30.0;
/// Reconnect grace of the nodes under test: long enough for a second ffmpeg
/// to connect on a loaded machine, short enough that the recording ends soon
/// after the last publisher.
pub(crate) const GRACE_S: f64 = 6.0;
/// What the inserted timed metadata says.
pub(crate) const TEXT: &str = "rungs-recording-e2e";

/// `[recording]` keys every test sets: a thumbnail every 4 s (several in a
/// short stream) and a quick retry of a failing store (1 s, not 30).
pub(crate) const RECORDING_KEYS: &str = "thumbnail_interval_s = 4\nupload_retry_max_s = 1\n";

/// `NodeConfig::extra_toml` is `&'static str` (most tests give a literal); the
/// S3 test's table names a port known only at run time. One small string per
/// test, never freed: the test process ends soon after.
pub(crate) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(crate) fn node_config(extra_toml: &'static str) -> NodeConfig {
    NodeConfig {
        reconnect_grace_s: GRACE_S,
        extra_toml,
        ..NodeConfig::default()
    }
}

/// A live-paced ffmpeg that publishes `seconds` of testsrc2 (30 fps) and a
/// 48 kHz tone, then unpublishes and exits by itself. `ultrafast`, no
/// B-frames, a 2 s GOP (the node's segment target).
pub(crate) fn publish_for(
    node: &Node,
    ch: &Channel,
    width: u32,
    height: u32,
    seconds: u32,
) -> Publisher {
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
pub(crate) fn wait_published(p: &mut Publisher, seconds: u32) {
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
pub(crate) fn recordings(node: &Node, id: &str) -> Vec<Value> {
    let r = node.api("GET", &format!("/api/v1/channels/{id}/recordings"), None);
    assert_eq!(r.status, 200, "recordings API: {}", r.text());
    r.json()["recordings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the channel's newest recording is `complete`, and returns the
/// whole list then.
pub(crate) fn wait_complete(node: &Node, id: &str, timeout: Duration) -> Vec<Value> {
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
pub(crate) fn renditions(master: &str) -> Vec<(String, String)> {
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
pub(crate) struct Seg {
    pub(crate) extinf: f64,
    pub(crate) bytes: Vec<u8>,
    /// The sum of its packets' durations, as ffprobe reads them.
    pub(crate) media_s: f64,
    /// It began a new publish (EXT-X-DISCONTINUITY before it).
    pub(crate) discontinuity: bool,
}

/// One rendition of a recording as read back.
#[derive(Debug)]
pub(crate) struct Rendition {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) segments: Vec<Seg>,
    pub(crate) discontinuities: usize,
    /// Every distinct init segment's bytes plus every segment's.
    pub(crate) bytes: u64,
}

impl Rendition {
    pub(crate) fn extinf_sum(&self) -> f64 {
        self.segments.iter().map(|s| s.extinf).sum()
    }
}

/// A recording read back through `fetch` (a path below the session folder to
/// its bytes, `None` when missing), checked on the way into `f`: the master
/// lists the renditions; each rendition's playlist is a strict, finished VOD
/// (PLAYLIST-TYPE:VOD, ENDLIST, no gap); every segment and its init exist,
/// decode with ffprobe (every packet a frame, no error), a video one starts
/// with a keyframe, and its EXTINF is its media's duration within a frame.
pub(crate) fn read_vod(
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
pub(crate) fn probe_segment(
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
pub(crate) fn check_ended_json(
    f: &Findings,
    ended: &Value,
    ch: &str,
    session: &str,
    vod: &[Rendition],
) {
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
pub(crate) fn check_api_entry(f: &Findings, entry: &Value, ended: &Value) {
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
pub(crate) fn is_jpeg(bytes: &[u8], scratch: &Path) -> Result<(u64, u64), String> {
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
pub(crate) fn post_metadata(node: &Node, http: &Http, id: &str) -> String {
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
pub(crate) fn spool_files(node: &Node) -> Vec<String> {
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

pub(crate) fn metric(node: &Node, name: &str) -> f64 {
    node.metrics().sum(name, &[])
}
