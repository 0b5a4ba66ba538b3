//! Alignment of the rungs with the source (DESIGN "Rungs are aligned"):
//! every rung's media playlist passes the single-playlist LL-HLS rules with
//! the source's TARGETDURATION and PART-TARGET; a segment with a given MSN
//! has the same EXTINF and PROGRAM-DATE-TIME in every rendition; and its
//! first frame is an IDR with the same presentation time everywhere, so a
//! player can switch at any segment boundary.

use std::collections::BTreeMap;

use crate::common::playlist::MediaPlaylist;
use crate::common::*;
use crate::h264::first_sample_nal_types;
use crate::master::InitInfo;
use crate::rules::{check_playlist, check_playlist_headers};

/// "Within 1 ms", plus slack for float arithmetic on the playlists' decimal
/// text. (RTMP timestamps are whole milliseconds, so 30 fps frames last 33
/// or 34 ms; a last frame whose duration is estimated can be 1 ms off.)
const MS: f64 = 0.001 + 1e-6;

/// One rendition's playlist as fetched.
pub struct Snap {
    pub name: String,
    pub url: String,
    pub pl: MediaPlaylist,
}

/// Fetches every rendition's playlist, one after the other, and checks each
/// against the per-playlist rules of `tests/llhls/rules.rs`.
pub fn snapshot(f: &Findings, http: &Http, node: &Node, id: &str, names: &[&str]) -> Vec<Snap> {
    names
        .iter()
        .map(|name| {
            let url = node.media_url(id, name);
            let got = fetch_media(http, &url, "");
            check_playlist_headers(f, &got.resp, false);
            check_playlist(f, &got.pl, &url, now_unix());
            Snap {
                name: name.to_string(),
                url,
                pl: got.pl,
            }
        })
        .collect()
}

/// Each rung carries the source's TARGETDURATION and PART-TARGET, and a
/// rendition report for every other video rendition.
pub fn check_same_targets(f: &Findings, snaps: &[Snap]) {
    let src = &snaps[0];
    for s in &snaps[1..] {
        f.check(
            s.pl.target_duration == src.pl.target_duration,
            "rung TARGETDURATION = source TARGETDURATION",
            || {
                format!(
                    "{}: {:?}, source {:?}",
                    s.name, s.pl.target_duration, src.pl.target_duration
                )
            },
        );
        f.check(
            s.pl.part_target == src.pl.part_target,
            "rung PART-TARGET = source PART-TARGET",
            || {
                format!(
                    "{}: {:?}, source {:?}",
                    s.name, s.pl.part_target, src.pl.part_target
                )
            },
        );
    }
    for s in snaps {
        let reported: Vec<String> =
            s.pl.rendition_reports
                .iter()
                .map(|r| resolve(&s.url, &r.uri))
                .collect();
        for o in snaps.iter().filter(|o| o.name != s.name) {
            f.check(
                reported.contains(&o.url),
                "EXT-X-RENDITION-REPORT for every other rendition (4.4.5.4)",
                || format!("{} reports {reported:?}, not {}", s.name, o.url),
            );
        }
    }
}

/// What the segment comparison found.
pub struct Aligned {
    /// MSNs complete in every rendition.
    pub common: Vec<u64>,
    /// GAP segments among them, per rung.
    pub gaps: BTreeMap<String, usize>,
}

/// Compares EXTINF and PROGRAM-DATE-TIME of the segments complete in every
/// rendition; counts GAP segments.
pub fn check_segments(f: &Findings, snaps: &[Snap]) -> Aligned {
    let src = &snaps[0];
    let common: Vec<u64> = src
        .pl
        .segments
        .iter()
        .map(|s| s.msn)
        .filter(|m| snaps.iter().all(|s| s.pl.segment(*m).is_some()))
        .collect();
    let mut gaps = BTreeMap::new();
    for &msn in &common {
        let a = src.pl.segment(msn).unwrap(); // `common` holds MSNs of the source.
        f.check(!a.gap, "the source has no GAP segments", || {
            format!("source msn {msn}")
        });
        for s in &snaps[1..] {
            let b = s.pl.segment(msn).unwrap(); // `common` holds MSNs of every rendition.
            if b.gap {
                *gaps.entry(s.name.clone()).or_insert(0) += 1;
            }
            f.check(
                (a.duration - b.duration).abs() <= MS,
                "same EXTINF (within 1 ms) as the source for the same MSN",
                || {
                    format!(
                        "msn {msn}: source {} {}, {} {}",
                        a.duration, a.uri, s.name, b.duration
                    )
                },
            );
            let d = match (a.pdt, b.pdt) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            };
            f.check(
                d.is_some_and(|d| d.abs() <= MS),
                "same PROGRAM-DATE-TIME (within 1 ms) as the source for the same MSN",
                || {
                    format!(
                        "msn {msn}: source PDT {:?}, {} PDT {:?} ({d:?} s apart)",
                        a.pdt, s.name, b.pdt
                    )
                },
            );
            // DESIGN: "segments and independent parts line up across the
            // ladder", so a player can switch at a part boundary too. (Parts
            // of older segments leave the playlist: compare where both list
            // them.)
            let durs = |s: &crate::common::playlist::Segment| -> Vec<f64> {
                s.parts.iter().map(|p| p.duration).collect()
            };
            let (pa, pb) = (durs(a), durs(b));
            f.check(
                b.gap
                    || pa.is_empty()
                    || pb.is_empty()
                    || (pa.len() == pb.len()
                        && pa.iter().zip(&pb).all(|(x, y)| (x - y).abs() <= MS)),
                "same part durations (within 1 ms) as the source for the same MSN",
                || format!("msn {msn}: source parts {pa:?}, {} parts {pb:?}", s.name),
            );
            f.check(
                b.discontinuity == a.discontinuity,
                "EXT-X-DISCONTINUITY on the same MSNs as the source",
                || {
                    format!(
                        "msn {msn}: source {}, {} {}",
                        a.discontinuity, s.name, b.discontinuity
                    )
                },
            );
        }
    }
    Aligned { common, gaps }
}

/// First video frame of init + segment as ffprobe decodes it.
#[derive(Debug)]
struct FirstFrame {
    key: bool,
    pict_type: String,
    pts_time: f64,
    raw: String,
}

fn ffprobe_first_frame(file: &std::path::Path) -> Result<FirstFrame, String> {
    let (ok, v, err) = ffprobe_json(
        file,
        &[
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_frames",
            "-show_entries",
            "frame=pts,pts_time,key_frame,pict_type",
        ],
    );
    let fr = &v["frames"][0];
    if !ok || fr.is_null() {
        return Err(format!("ffprobe failed ({ok}): {err} {v}"));
    }
    Ok(FirstFrame {
        key: fr["key_frame"].as_i64() == Some(1),
        pict_type: fr["pict_type"].as_str().unwrap_or("").to_string(),
        pts_time: fr["pts_time"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN),
        raw: fr.to_string(),
    })
}

/// The last two segments complete in every rendition without a GAP anywhere (at least two
/// must be), checked by [`check_segment_starts`]; returns their MSNs.
pub fn check_last_clean_starts(
    f: &Findings,
    http: &Http,
    dir: &std::path::Path,
    snaps: &[Snap],
    aligned: &Aligned,
    inits: &BTreeMap<String, InitInfo>,
) -> Vec<u64> {
    let clean: Vec<u64> = aligned
        .common
        .iter()
        .copied()
        .filter(|m| {
            snaps
                .iter()
                .all(|s| s.pl.segment(*m).is_some_and(|s| !s.gap))
        })
        .collect();
    f.check(
        clean.len() >= 2,
        "at least 2 segments without a GAP in every rendition",
        || format!("common {:?}, gaps {:?}", aligned.common, aligned.gaps),
    );
    let probe = clean[clean.len().saturating_sub(2)..].to_vec();
    check_segment_starts(f, http, dir, snaps, inits, &probe);
    probe
}

/// For each MSN in `msns`: every rendition's segment starts with an IDR
/// (NAL type 5 in the first sample; ffprobe decodes a key I frame), at the
/// same presentation time as the source's.
pub fn check_segment_starts(
    f: &Findings,
    http: &Http,
    dir: &std::path::Path,
    snaps: &[Snap],
    inits: &BTreeMap<String, InitInfo>,
    msns: &[u64],
) {
    for &msn in msns {
        let mut src_pts: Option<f64> = None;
        for s in snaps {
            let seg = s.pl.segment(msn).unwrap(); // `msns` are complete everywhere.
            let url = resolve(&s.url, &seg.uri);
            let r = http.get(&url);
            if r.status != 200 {
                f.fail(
                    "complete segments are fetchable",
                    format!("GET {url}: {}", r.status),
                );
                continue;
            }
            let init = &inits[&s.name];
            match first_sample_nal_types(&r.body, init.avc.length_size) {
                Ok(types) => f.check(
                    types.contains(&5) && !types.contains(&1),
                    "segment starts with an IDR access unit (NAL type 5)",
                    || format!("{} msn {msn}: first sample NAL types {types:?}", s.name),
                ),
                Err(e) => f.fail(
                    "segment starts with an IDR access unit (NAL type 5)",
                    format!("{} msn {msn}: {e}", s.name),
                ),
            }
            let mut both = init.bytes.clone();
            both.extend_from_slice(&r.body);
            let file = tmp_file(dir, &format!("ladder-{}-{msn}.mp4", s.name), &both);
            match ffprobe_first_frame(&file) {
                Ok(fr) => {
                    f.check(
                        fr.key && fr.pict_type == "I",
                        "first decoded frame of every segment is a key I frame",
                        || format!("{} msn {msn}: {}", s.name, fr.raw),
                    );
                    match src_pts {
                        None => src_pts = Some(fr.pts_time),
                        Some(p) => f.check(
                            (fr.pts_time - p).abs() < 0.0005,
                            "first pts of a segment equal across rungs and the source",
                            || {
                                format!(
                                    "msn {msn}: source first pts {p:.6}s, {} {:.6}s ({})",
                                    s.name, fr.pts_time, fr.raw
                                )
                            },
                        ),
                    }
                }
                Err(e) => f.fail(
                    "ffprobe decodes init + segment of every rendition",
                    format!("{} msn {msn}: {e}", s.name),
                ),
            }
        }
    }
}
