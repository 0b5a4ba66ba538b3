//! What a WHIP stream must look like once it is packaged: the multivariant
//! playlist, every media playlist against the LL-HLS rules of
//! `tests/llhls/rules.rs` (and across reloads, `history.rs`), init +
//! segment decoded by ffprobe, the end of the stream, and the latency from
//! the publisher to a fetchable part. Checks record into `Findings`; a
//! missing resource (non-200) panics, as in the LL-HLS tests.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::fmp4::{self, Init};
use crate::common::*;
use crate::history::History;
use crate::rules::{check_media_headers, check_playlist, check_playlist_headers};

/// The first part of the stream, as a player polling from the start saw it.
pub struct FirstPart {
    /// When it first appeared in the source playlist.
    pub seen_unix: f64,
    /// Its decode time, in `timescale` units.
    pub tfdt: u64,
    pub timescale: f64,
}

/// Polls the source playlist every 20 ms (it is 404 until the stream is
/// live) until it lists a part, then reads that first part's decode time.
pub fn wait_first_part(http: &Http, src_url: &str, timeout: Duration) -> Option<FirstPart> {
    let (seen_unix, pl) = wait_for(timeout, Duration::from_millis(20), || {
        let r = http.try_get(src_url).ok()?;
        if r.status != 200 {
            return None;
        }
        let seen = now_unix();
        let pl = parse_media(&r.text()).ok()?;
        (!pl.all_parts().is_empty()).then_some((seen, pl))
    })?;
    let (msn, idx, part) = pl.all_parts()[0];
    assert_eq!(
        (msn, idx),
        (pl.media_sequence, 0),
        "the first playlist with parts does not start at the stream's first part"
    );
    let init = fetch_init(http, src_url, first_map(&pl, msn));
    let body = get_ok(http, &resolve(src_url, &part.uri)).body;
    let frags = fmp4::parse_fragments(&body, Some(&init)).expect("the first part parses");
    Some(FirstPart {
        seen_unix,
        tfdt: frags
            .first()
            .expect("the first part has a moof")
            .base_decode_time,
        timescale: init.tracks[0].timescale as f64,
    })
}

/// The multivariant playlist: one AUDIO rendition at `aud_url`, variants
/// that include `src_url`, each with H.264 + AAC CODECS and the audio group.
/// Returns every variant's media playlist URL.
pub fn check_master(
    f: &Findings,
    http: &Http,
    master_url: &str,
    src_url: &str,
    aud_url: &str,
) -> Vec<String> {
    let r = get_ok(http, master_url);
    check_playlist_headers(f, &r, false);
    let mv = parse_multivariant(&r.text()).unwrap_or_else(|e| {
        panic!(
            "{master_url}: invalid multivariant playlist: {e}\n{}",
            r.text()
        )
    });
    let audio: Vec<_> = mv
        .media
        .iter()
        .filter(|m| m.get("TYPE") == Some("AUDIO"))
        .collect();
    assert_eq!(
        audio.len(),
        1,
        "one EXT-X-MEDIA TYPE=AUDIO expected:\n{}",
        r.text()
    );
    let group = audio[0].quoted("GROUP-ID").unwrap_or("");
    let a_uri = audio[0].quoted("URI").map(|u| resolve(master_url, u));
    assert_eq!(
        a_uri.as_deref(),
        Some(aud_url),
        "audio rendition URI:\n{}",
        r.text()
    );
    let urls: Vec<String> = mv
        .variants
        .iter()
        .map(|v| resolve(master_url, &v.uri))
        .collect();
    assert!(
        urls.iter().any(|u| u == src_url),
        "no variant for the source ({src_url}):\n{}",
        r.text()
    );
    for v in &mv.variants {
        let codecs = v.attrs.quoted("CODECS").unwrap_or("");
        f.check(
            codecs.contains("avc1.") && codecs.contains("mp4a.40.2"),
            "variant CODECS: H.264 video + AAC-LC audio",
            || format!("{}: CODECS {codecs:?}", v.uri),
        );
        f.check(
            v.attrs.quoted("AUDIO") == Some(group),
            "variant AUDIO matches the EXT-X-MEDIA GROUP-ID (4.4.6.2)",
            || format!("{}: {:?}", v.uri, v.attrs),
        );
    }
    urls
}

/// Each playlist once: headers and every single-playlist rule.
pub fn check_playlists(f: &Findings, http: &Http, urls: &[String]) {
    for url in urls {
        let got = fetch_media(http, url, "");
        check_playlist_headers(f, &got.resp, false);
        check_playlist(f, &got.pl, url, now_unix());
    }
}

/// Publisher-to-part latency samples, in seconds.
#[derive(Default)]
pub struct Latency {
    /// Part fetchable minus when its first sample was sent.
    pub first_sample: Vec<f64>,
    /// How long the GET of the hinted part waited.
    pub hint_wait: Vec<f64>,
    /// Parts whose decode time did not start where the previous one ended.
    pub gaps: Vec<Gap>,
}

/// A part whose decode time does not start where the previous part ended.
pub struct Gap {
    pub uri: String,
    /// Its tfdt minus the previous part's end, in timescale units.
    pub ticks: i64,
    /// Its EXT-X-MAP differs from the previous part's.
    pub new_map: bool,
    /// It starts a segment that follows an EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
}

/// The EXT-X-MAP of the part with `uri` in `pl`, and whether it is the
/// first part of a segment after an EXT-X-DISCONTINUITY.
fn part_context(pl: &MediaPlaylist, uri: &str) -> Option<(String, bool)> {
    for s in &pl.segments {
        if let Some(i) = s.parts.iter().position(|p| p.uri == uri) {
            return Some((s.map_uri.clone()?, i == 0 && s.discontinuity));
        }
    }
    let i = pl.open_parts.iter().position(|p| p.uri == uri)?;
    Some((pl.open_map_uri.clone()?, i == 0 && pl.open_discontinuity))
}

/// Follows the source's live edge for `secs` as an LL-HLS player does:
/// GET the preload-hinted part (it answers once the part exists), then a
/// blocking reload for the next part; every playlist is checked against
/// the rules and across reloads. With `t0_unix` the moment the publisher
/// started sending (its peer connection came up) and `first` the stream's
/// first part, a part with decode time `tfdt` became fetchable
/// `done - (t0 + (tfdt - first.tfdt) / timescale)` after its first sample
/// was sent. (The first keyframe follows the connection by a PLI round
/// trip, a few tens of ms: that much is counted in.)
pub fn follow_parts(
    f: &Findings,
    http: &Http,
    src_url: &str,
    secs: f64,
    t0_unix: f64,
    first: &FirstPart,
) -> Latency {
    let mut lat = Latency::default();
    let mut hist = History::default();
    let mut inits: HashMap<String, Init> = HashMap::new();
    let mut last_end: Option<(u64, String)> = None;
    let mut cur = fetch_media(http, src_url, "");
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        check_playlist(f, &cur.pl, src_url, now_unix());
        hist.add(f, &cur.pl, src_url);
        if cur.pl.endlist {
            f.fail(
                "stream stays live while followed",
                format!("{src_url}: EXT-X-ENDLIST"),
            );
            break;
        }
        let Some(hint) = cur.pl.hint("PART").cloned() else {
            break; // check_playlist has reported it
        };
        let r = get_ok(http, &resolve(src_url, &hint.uri));
        check_media_headers(f, &r);
        lat.hint_wait.push(r.elapsed.as_secs_f64());
        let done_unix = now_unix() - r.done.elapsed().as_secs_f64();
        // The reload lists the part just fetched, under the EXT-X-MAP (and
        // any EXT-X-DISCONTINUITY) that applies to it: a hint for the first
        // part of a new segment comes before the new segment's tags.
        let (m, p) = cur.pl.next_part();
        cur = fetch_blocking(http, src_url, m, p);
        let Some((map, disc)) = part_context(&cur.pl, &hint.uri) else {
            f.fail(
                "a hinted part is listed on the next reload",
                format!("{}: not in the reload for {m}.{p}", hint.uri),
            );
            continue;
        };
        let init = inits
            .entry(map.clone())
            .or_insert_with(|| fetch_init(http, src_url, &map));
        match fmp4::parse_fragments(&r.body, Some(init)) {
            Ok(frags) if !frags.is_empty() => {
                let tfdt = frags[0].base_decode_time;
                if let Some((e, prev_map)) = &last_end
                    && *e != tfdt
                {
                    lat.gaps.push(Gap {
                        uri: hint.uri.clone(),
                        ticks: tfdt as i64 - *e as i64,
                        new_map: *prev_map != map,
                        discontinuity: disc,
                    });
                }
                let end = frags.last().expect("not empty");
                last_end = Some((end.base_decode_time + end.duration(), map));
                let media_s = (tfdt as f64 - first.tfdt as f64) / first.timescale;
                lat.first_sample.push(done_unix - (t0_unix + media_s));
            }
            other => f.fail(
                "hinted part parses as fMP4 with a moof",
                format!("{}: {other:?}", hint.uri),
            ),
        }
    }
    lat
}

/// Decodes init + the latest complete segment of a video playlist with
/// ffprobe: H.264, every frame decodes, the first is a keyframe. Returns
/// (width, height, frames).
pub fn probe_video(f: &Findings, http: &Http, url: &str, dir: &Path) -> (u64, u64, usize) {
    let (file, dur) = latest_segment_file(http, url, dir, "video.mp4");
    let (ok, v, err) = ffprobe_json(
        &file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:frame=key_frame",
        ],
    );
    f.check(
        ok && err.trim().is_empty(),
        "ffprobe decodes init + video segment cleanly",
        || format!("{url}: {err}"),
    );
    let st = &v["streams"][0];
    f.check(
        st["codec_name"] == "h264",
        "video segment decodes as H.264",
        || format!("{st}"),
    );
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    f.check(
        frames.first().is_some_and(|x| x["key_frame"] == 1),
        "first decoded video frame is a keyframe",
        || format!("{url}: {:?}", frames.first()),
    );
    // Chromium sends 20-30 fps, aiortc 30: at least 10 fps in any segment.
    f.check(
        frames.len() as f64 >= 10.0 * dur,
        "video segment decodes to >= 10 frames a second",
        || format!("{url}: {} frames in EXTINF {dur}", frames.len()),
    );
    let wh = |k: &str| st[k].as_u64().unwrap_or(0);
    (wh("width"), wh("height"), frames.len())
}

/// Decodes init + the latest complete audio segment: AAC 48 kHz, about
/// EXTINF x 46.875 frames. Returns (channels, frames).
pub fn probe_audio(f: &Findings, http: &Http, url: &str, dir: &Path) -> (u64, usize) {
    let (file, dur) = latest_segment_file(http, url, dir, "audio.mp4");
    let (ok, v, err) = ffprobe_json(
        &file,
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,sample_rate,channels:frame=nb_samples",
        ],
    );
    f.check(
        ok && err.trim().is_empty(),
        "ffprobe decodes init + audio segment cleanly",
        || format!("{url}: {err}"),
    );
    let st = &v["streams"][0];
    f.check(
        st["codec_name"] == "aac" && st["sample_rate"] == "48000",
        "audio segment decodes as AAC 48 kHz (Opus transcoded)",
        || format!("{st}"),
    );
    let frames = v["frames"].as_array().map_or(0, |a| a.len());
    f.check(
        (frames as f64 - dur * 48000.0 / 1024.0).abs() <= 2.0,
        "audio segment decodes to EXTINF x 46.875 AAC frames",
        || format!("{url}: {frames} frames for EXTINF {dur}"),
    );
    (st["channels"].as_u64().unwrap_or(0), frames)
}

/// Waits until every playlist in `urls` has EXT-X-ENDLIST; the time it took,
/// or None (with what the playlists said) after `timeout`.
pub fn wait_endlist(http: &Http, urls: &[String], timeout: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let mut last = String::new();
    let ended = wait_for(timeout, Duration::from_millis(100), || {
        for u in urls {
            match http.try_get(u) {
                Ok(r) if r.status == 200 && parse_media(&r.text()).is_ok_and(|p| p.endlist) => {}
                Ok(r) => {
                    last = format!(
                        "{u}: {} {}",
                        r.status,
                        r.text().lines().last().unwrap_or("")
                    );
                    return None;
                }
                Err(e) => {
                    last = e;
                    return None;
                }
            }
        }
        Some(())
    });
    ended.map(|_| t.elapsed()).ok_or(last)
}

/// (MSN, part index) of the last part `url` lists, if it answers.
pub fn edge(http: &Http, url: &str) -> Option<(u64, u64)> {
    let r = http.try_get(url).ok()?;
    (r.status == 200).then_some(())?;
    parse_media(&r.text()).ok()?.last_part()
}

fn get_ok(http: &Http, url: &str) -> Resp {
    let r = http.get(url);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    r
}

fn fetch_init(http: &Http, pl_url: &str, map: &str) -> Init {
    let r = get_ok(http, &resolve(pl_url, map));
    fmp4::parse_init(&r.body).unwrap_or_else(|e| panic!("init {map}: {e}"))
}

/// The EXT-X-MAP that applies to segment `msn` (or to the open one).
fn first_map(pl: &MediaPlaylist, msn: u64) -> &str {
    pl.segment(msn)
        .and_then(|s| s.map_uri.as_deref())
        .or(pl.open_map_uri.as_deref())
        .or(pl.map_uri.as_deref())
        .expect("EXT-X-MAP")
}

/// Writes init + the latest complete segment of `url` to `dir/name`;
/// returns the file and the segment's EXTINF.
fn latest_segment_file(
    http: &Http,
    url: &str,
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, f64) {
    let pl = fetch_media(http, url, "").pl;
    let seg = pl
        .segments
        .last()
        .unwrap_or_else(|| panic!("{url} lists no complete segment"));
    let init = get_ok(http, &resolve(url, first_map(&pl, seg.msn)));
    let media = get_ok(http, &resolve(url, &seg.uri));
    let file = tmp_file(dir, name, &[init.body, media.body].concat());
    (file, seg.duration)
}
