//! Media-level rules: an fMP4 segment and its parts agree with the playlist
//! and with each other (tfdt/trun, durations, sync samples), and decode
//! with ffprobe to what the playlist promises. Fetches what it checks.

use std::path::Path;

use crate::common::fmp4::{self, Fragment, Init};
use crate::common::playlist::MediaPlaylist;
use crate::common::*;
use crate::master::Inits;
use crate::rules::check_media_headers;

/// Resolves and fetches a media resource, checking headers.
pub fn fetch_media_res(f: &Findings, http: &Http, base: &str, uri: &str) -> Resp {
    let url = resolve(base, uri);
    let r = http.get(&url);
    assert_eq!(r.status, 200, "GET {url}");
    check_media_headers(f, &r);
    r
}

/// fMP4-level checks of one complete segment and its parts.
pub fn check_segment_media(
    f: &Findings,
    http: &Http,
    pl_url: &str,
    pl: &MediaPlaylist,
    msn: u64,
    init: &Init,
    video: bool,
) -> (Vec<u8>, Vec<Fragment>) {
    let seg = pl.segment(msn).expect("segment listed");
    let what = if video { "source" } else { "audio" };
    let sr = fetch_media_res(f, http, pl_url, &seg.uri);
    let frags = fmp4::parse_fragments(&sr.body, Some(init))
        .unwrap_or_else(|e| panic!("{what} segment {msn}: {e}"));
    assert!(!frags.is_empty(), "{what} segment {msn} has no moof");
    let ts = init.tracks[0].timescale as f64;
    // Sample sizes add up to the mdat payload.
    for fr in &frags {
        let sz: u64 = fr.samples.iter().map(|s| s.size as u64).sum();
        f.check(
            sz == fr.mdat_len as u64,
            "trun sample sizes == mdat payload",
            || format!("{what} msn {msn}: samples {sz} bytes, mdat {}", fr.mdat_len),
        );
    }
    // Fragments inside the segment are contiguous in decode time.
    for w in frags.windows(2) {
        f.check(
            w[1].base_decode_time == w[0].base_decode_time + w[0].duration(),
            "decode times contiguous within a segment",
            || {
                format!(
                    "{what} msn {msn}: tfdt {} after {}+{}",
                    w[1].base_decode_time,
                    w[0].base_decode_time,
                    w[0].duration()
                )
            },
        );
    }
    let total: u64 = frags.iter().map(|x| x.duration()).sum();
    let frame = frags[0]
        .samples
        .first()
        .map_or(0.0, |s| s.duration as f64 / ts);
    f.check(
        (total as f64 / ts - seg.duration).abs() <= frame + 0.002,
        "EXTINF == media duration of the segment",
        || {
            format!(
                "{what} msn {msn}: EXTINF {} vs samples {:.4}",
                seg.duration,
                total as f64 / ts
            )
        },
    );
    if video {
        f.check(
            frags[0].samples.first().is_some_and(|s| s.is_sync()),
            "video segment starts with a sync sample",
            || {
                format!(
                    "msn {msn}: first sample flags {:#x}",
                    frags[0].samples.first().map_or(0, |s| s.flags)
                )
            },
        );
    }
    // Parts: DURATION matches samples, INDEPENDENT matches a leading sync
    // sample, decode times continue from part to part, and the parts carry
    // the same media as the segment.
    let mut next_dt = frags[0].base_decode_time;
    let mut part_bytes = Vec::new();
    for (i, p) in seg.parts.iter().enumerate() {
        let pr = fetch_media_res(f, http, pl_url, &p.uri);
        part_bytes.extend_from_slice(&pr.body);
        let pf = fmp4::parse_fragments(&pr.body, Some(init))
            .unwrap_or_else(|e| panic!("{what} part {msn}.{i}: {e}"));
        assert!(!pf.is_empty(), "{what} part {msn}.{i} has no moof");
        f.check(
            pf[0].base_decode_time == next_dt,
            "part decode times contiguous (no gaps/overlaps)",
            || {
                format!(
                    "{what} part {msn}.{i}: tfdt {} expected {next_dt}",
                    pf[0].base_decode_time
                )
            },
        );
        let d: u64 = pf.iter().map(|x| x.duration()).sum();
        next_dt = pf.last().unwrap().base_decode_time + pf.last().unwrap().duration();
        f.check(
            (d as f64 / ts - p.duration).abs() <= 0.0021,
            "part DURATION == media duration of the part",
            || {
                format!(
                    "{what} part {msn}.{i}: DURATION {} vs samples {:.4}",
                    p.duration,
                    d as f64 / ts
                )
            },
        );
        if video {
            let sync = pf[0].samples.first().is_some_and(|s| s.is_sync());
            f.check(
                !p.independent || sync,
                "INDEPENDENT=YES part starts with a sync sample (4.4.4.9)",
                || format!("part {msn}.{i} marked INDEPENDENT without a leading sync sample"),
            );
            f.check(
                p.independent || !sync,
                "part starting with a sync sample has INDEPENDENT=YES (4.4.4.9 SHOULD)",
                || format!("part {msn}.{i} starts with a sync sample but is not INDEPENDENT"),
            );
        }
    }
    if !seg.parts.is_empty() {
        f.check(
            next_dt == frags[0].base_decode_time + total,
            "parts cover exactly the segment's media",
            || {
                format!(
                    "{what} msn {msn}: parts end at {next_dt}, segment at {}",
                    frags[0].base_decode_time + total
                )
            },
        );
        if part_bytes != sr.body {
            eprintln!(
                "note: {what} segment {msn} is not the byte concatenation of its parts (allowed)"
            );
        }
    }
    (sr.body, frags)
}

/// Checks the latest segment that both renditions have completed, at the
/// fMP4 level and then decoded by ffprobe with its init section.
pub fn check_latest_segments(
    f: &Findings,
    http: &Http,
    data_dir: &Path,
    src_url: &str,
    aud_url: &str,
    inits: &Inits,
) {
    let s_pl = fetch_media(http, src_url, "").pl;
    let a_pl = fetch_media(http, aud_url, "").pl;
    let msn = s_pl.last_msn().unwrap().min(a_pl.last_msn().unwrap());
    let (vseg, vfr) = check_segment_media(f, http, src_url, &s_pl, msn, &inits.vinit, true);
    let (aseg, _) = check_segment_media(f, http, aud_url, &a_pl, msn, &inits.ainit, false);
    let vdur = s_pl.segment(msn).unwrap().duration;
    let adur = a_pl.segment(msn).unwrap().duration;
    let vfile = tmp_file(
        data_dir,
        "video.mp4",
        &[inits.vinit_r.body.clone(), vseg].concat(),
    );
    let vframes = probe_video_segment(f, &vfile, vdur, &vfr);
    let afile = tmp_file(
        data_dir,
        "audio.mp4",
        &[inits.ainit_r.body.clone(), aseg].concat(),
    );
    let (ok, v, err) = ffprobe_json(
        &afile,
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,sample_rate,channels:frame=nb_samples",
        ],
    );
    assert!(
        ok && err.trim().is_empty(),
        "ffprobe on init + audio segment failed: {err}"
    );
    let st = &v["streams"][0];
    f.check(
        st["codec_name"] == "aac" && st["sample_rate"] == "48000" && st["channels"] == 2,
        "audio segment decodes as AAC 48 kHz stereo",
        || format!("{st}"),
    );
    let aframes = v["frames"].as_array().map_or(0, |a| a.len()) as f64;
    eprintln!(
        "ffprobe: video segment {msn}: {vframes} frames (EXTINF {vdur}), audio {aframes} frames (EXTINF {adur})"
    );
    f.check(
        (aframes - adur * 48000.0 / 1024.0).abs() <= 2.0,
        "audio segment decodes to EXTINF x 46.875 AAC frames",
        || format!("{aframes} frames for EXTINF {adur}"),
    );
}

/// Decodes init + source segment `vfile` (EXTINF `vdur`, fragments `vfr`):
/// h264 1280x720, keyframe first, one frame per sample at 30 fps. Returns
/// the number of decoded frames.
fn probe_video_segment(f: &Findings, vfile: &Path, vdur: f64, vfr: &[Fragment]) -> usize {
    let (ok, v, err) = ffprobe_json(
        vfile,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:frame=key_frame,pict_type",
        ],
    );
    assert!(
        ok && err.trim().is_empty(),
        "ffprobe on init + source segment failed: {err}"
    );
    let st = &v["streams"][0];
    f.check(
        st["codec_name"] == "h264" && st["width"] == 1280 && st["height"] == 720,
        "segment decodes as h264 1280x720",
        || format!("{st}"),
    );
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    f.check(
        frames.first().is_some_and(|x| x["key_frame"] == 1),
        "first decoded video frame is a keyframe",
        || format!("{:?}", frames.first()),
    );
    let want = (vdur * 30.0).round() as i64;
    f.check(
        (frames.len() as i64 - want).abs() <= 1,
        "segment decodes to EXTINF x 30 frames",
        || format!("{} frames for EXTINF {vdur}", frames.len()),
    );
    f.check(
        vfr.iter().map(|x| x.samples.len()).sum::<usize>() == frames.len(),
        "every sample decodes",
        || {
            format!(
                "{} samples, {} frames",
                vfr.iter().map(|x| x.samples.len()).sum::<usize>(),
                frames.len()
            )
        },
    );
    frames.len()
}

/// Fetches the init that applies to segment `msn` and the segment, and
/// decodes them with ffprobe: (video frames, first frame is a keyframe).
pub fn decode_segment(http: &Http, pl_url: &str, pl: &MediaPlaylist, msn: u64) -> (i64, bool) {
    let seg = pl.segment(msn).expect("segment listed");
    let init = http.get(&resolve(
        pl_url,
        seg.map_uri
            .as_deref()
            .expect("EXT-X-MAP before the segment"),
    ));
    let media = http.get(&resolve(pl_url, &seg.uri));
    assert!(
        init.status == 200 && media.status == 200,
        "init {} segment {}",
        init.status,
        media.status
    );
    let dir = tempfile::tempdir().unwrap();
    let file = tmp_file(dir.path(), "seg.mp4", &[init.body, media.body].concat());
    let (ok, v, err) = ffprobe_json(
        &file,
        &["-select_streams", "v:0", "-show_entries", "frame=key_frame"],
    );
    assert!(
        ok && err.trim().is_empty(),
        "ffprobe on init + segment {msn}: {err}"
    );
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    (
        frames.len() as i64,
        frames.first().is_some_and(|x| x["key_frame"] == 1),
    )
}
