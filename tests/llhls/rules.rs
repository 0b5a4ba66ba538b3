//! Rules that one response can be checked against on its own: the headers
//! of playlists and media, and everything a single media playlist must
//! satisfy (RFC 8216bis section 4, Apple HLS authoring). Rules that need
//! several reloads live in `history.rs`. Checks record into [`Findings`];
//! they never panic on a violation.

use crate::common::Findings;
use crate::common::Resp;
use crate::common::playlist::{MediaPlaylist, Part, ServerControl};

/// The node's configured `part_target_s` (the default `NodeConfig`).
pub const PART_TARGET: f64 = 0.2;
/// Decimal formatting slack when comparing playlist durations to each other.
const EPS: f64 = 0.0011;

fn is_playlist_type(ct: &str) -> bool {
    // RFC 8216bis 4: "the HTTP Content-Type MUST be
    // "application/vnd.apple.mpegurl" or "audio/mpegurl"".
    ct == "application/vnd.apple.mpegurl" || ct == "audio/mpegurl"
}

fn is_media_type(ct: &str) -> bool {
    ct == "video/mp4" || ct == "audio/mp4" || ct == "application/mp4"
}

/// Header rules for every playlist response.
pub fn check_playlist_headers(f: &Findings, r: &Resp, blocking: bool) {
    let ct = r.content_type();
    f.check(
        is_playlist_type(&ct),
        "playlist Content-Type (RFC 8216bis 4)",
        || format!("{} has Content-Type {ct:?}", r.url),
    );
    f.check(
        r.header("access-control-allow-origin").is_some(),
        "CORS: Access-Control-Allow-Origin on playlists",
        || format!("{} has no Access-Control-Allow-Origin", r.url),
    );
    let cc = r.header("cache-control").unwrap_or("").to_ascii_lowercase();
    f.check(!cc.is_empty(), "Cache-Control on playlists", || {
        format!("{} has no Cache-Control", r.url)
    });
    if !blocking && !cc.is_empty() {
        // A live playlist changes every part: a plain GET must not be cached
        // for longer than about a part (Apple LL-HLS: playlists are short-lived,
        // blocking responses are what a CDN caches).
        let ok = cc.contains("no-cache")
            || cc.contains("no-store")
            || r.max_age().is_some_and(|m| m <= 1);
        f.check(ok, "plain playlist GET cacheable for at most ~1 s", || {
            format!("{}: Cache-Control {cc:?}", r.url)
        });
    }
}

/// Header rules for init sections, parts and segments.
pub fn check_media_headers(f: &Findings, r: &Resp) {
    let ct = r.content_type();
    f.check(
        is_media_type(&ct),
        "fMP4 Content-Type video/mp4|audio/mp4",
        || format!("{} has Content-Type {ct:?}", r.url),
    );
    f.check(
        r.header("access-control-allow-origin").is_some(),
        "CORS: Access-Control-Allow-Origin on media",
        || format!("{} has no Access-Control-Allow-Origin", r.url),
    );
    let cc = r.header("cache-control").unwrap_or("").to_ascii_lowercase();
    // Parts and segments never change once published: they should be cacheable
    // for at least the time they stay in the playlist (several target durations).
    let ok =
        !cc.contains("no-store") && !cc.contains("no-cache") && r.max_age().is_some_and(|m| m >= 6);
    f.check(
        ok,
        "media Cache-Control: cacheable (max-age >= 6 s)",
        || format!("{}: Cache-Control {cc:?}", r.url),
    );
}

/// Per-playlist rules that need no history.
pub fn check_playlist(f: &Findings, pl: &MediaPlaylist, url: &str, fetched_unix: f64) {
    check_version_and_tags(f, pl, url);
    let td = pl.target_duration.unwrap_or(0);
    check_segment_durations(f, pl, url, td);
    let Some(pt) = pl.part_target else {
        f.fail(
            "EXT-X-PART-INF present (4.4.3.7)",
            format!("{url}: no EXT-X-PART-INF"),
        );
        return;
    };
    check_parts(f, pl, url, pt);
    let Some(sc) = &pl.server_control else {
        f.fail(
            "EXT-X-SERVER-CONTROL present (4.4.3.8)",
            format!("{url}: none"),
        );
        return;
    };
    check_server_control(f, sc, url, pt, td);
    check_program_date_time(f, pl, url, fetched_unix);
    check_hints_and_reports(f, pl, url);
}

/// EXT-X-VERSION against the features used, EXT-X-MAP, no unknown tags.
fn check_version_and_tags(f: &Findings, pl: &MediaPlaylist, url: &str) {
    let v = pl.version.unwrap_or(1);
    // 4.4.4.5: EXT-X-MAP in a playlist without EXT-X-I-FRAMES-ONLY
    // "REQUIRES a compatibility version number of 6 or greater".
    f.check(v >= 6, "EXT-X-VERSION >= 6 for EXT-X-MAP (4.4.4.5)", || {
        format!("{url}: version {v}")
    });
    // 4.4.1.2 / 8: a delta update (EXT-X-SKIP) needs version 9.
    if pl.skip.is_some() {
        f.check(v >= 9, "EXT-X-VERSION >= 9 with EXT-X-SKIP (8)", || {
            format!("{url}: version {v}")
        });
    }
    f.check(
        pl.map_uri.is_some(),
        "EXT-X-MAP present for fMP4 (4.4.4.5)",
        || format!("{url}: no EXT-X-MAP"),
    );
    f.check(pl.unknown_tags.is_empty(), "no unknown EXT tags", || {
        format!("{url}: {:?}", pl.unknown_tags)
    });
}

/// EXTINF against TARGETDURATION and against the parts of each segment.
fn check_segment_durations(f: &Findings, pl: &MediaPlaylist, url: &str, td: u64) {
    for s in &pl.segments {
        // 4.4.3.1: "The EXTINF duration of each Media Segment in a Playlist
        // file, when rounded to the nearest integer, MUST be less than or
        // equal to the Target Duration."
        f.check(
            s.duration.round() as u64 <= td,
            "EXTINF rounded <= TARGETDURATION (4.4.3.1)",
            || format!("{url}: msn {} EXTINF {} > {td}", s.msn, s.duration),
        );
        // 4.4.4.9: "... they also necessarily apply to the first Partial Segment"
        // A segment's EXTINF equals the sum of its parts.
        if !s.parts.is_empty() {
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            f.check(
                (sum - s.duration).abs() <= 0.002 * s.parts.len() as f64 + EPS,
                "sum of part DURATIONs == EXTINF",
                || {
                    format!(
                        "{url}: msn {} EXTINF {} but parts sum to {sum:.4}",
                        s.msn, s.duration
                    )
                },
            );
            // Segments are cut at keyframes: the first part is independent.
            f.check(
                s.parts[0].independent,
                "first part of a segment has INDEPENDENT=YES (4.4.4.9)",
                || {
                    format!(
                        "{url}: msn {} first part {} not INDEPENDENT",
                        s.msn, s.parts[0].uri
                    )
                },
            );
        }
    }
}

/// PART-TARGET, part durations against it, unique part URIs.
fn check_parts(f: &Findings, pl: &MediaPlaylist, url: &str, pt: f64) {
    f.check(
        (pt - PART_TARGET).abs() < 0.05,
        "PART-TARGET matches config part_target_s",
        || format!("{url}: {pt}"),
    );
    // 4.4.4.9: "The duration of a Partial Segment MUST be less than or equal
    // to the Part Target Duration. The duration of each Partial Segment MUST be
    // at least 85% of the Part Target Duration, with the exception of Partial
    // Segments with the INDEPENDENT=YES or GAP=YES attribute, [...] and the
    // final Partial Segment of any Parent Segment."
    let check_list = |parts: &[Part], msn: u64, complete: bool| {
        for (i, p) in parts.iter().enumerate() {
            f.check(
                p.duration <= pt + 0.0005,
                "part DURATION <= PART-TARGET (4.4.4.9)",
                || {
                    format!(
                        "{url}: part {msn}.{i} {} DURATION {} > PART-TARGET {pt}",
                        p.uri, p.duration
                    )
                },
            );
            // In the open segment the last listed part may turn out to be the
            // final one, so it is checked once its segment is complete.
            let is_last = i + 1 == parts.len();
            if !p.independent && !p.gap && !is_last {
                f.check(p.duration >= 0.85 * pt - 0.0005, "non-final part DURATION >= 85% PART-TARGET (4.4.4.9)", || {
                    let all: Vec<f64> = parts.iter().map(|p| p.duration).collect();
                    format!("{url}: part {msn}.{i} {} DURATION {} < 0.85 x {pt} (complete segment: {complete}; its parts: {all:?})", p.uri, p.duration)
                });
            }
        }
    };
    for s in &pl.segments {
        check_list(&s.parts, s.msn, true);
    }
    check_list(&pl.open_parts, pl.open_msn(), false);
    // Parts: unique URIs.
    let mut uris: Vec<&str> = pl
        .all_parts()
        .iter()
        .map(|(_, _, p)| p.uri.as_str())
        .collect();
    let n = uris.len();
    uris.sort();
    uris.dedup();
    f.check(uris.len() == n, "part URIs unique", || {
        format!("{url}: duplicate part URIs")
    });
}

/// EXT-X-SERVER-CONTROL: blocking reloads, hold-backs, delta updates.
fn check_server_control(f: &Findings, sc: &ServerControl, url: &str, pt: f64, td: u64) {
    f.check(
        sc.can_block_reload,
        "CAN-BLOCK-RELOAD=YES (4.4.3.8, Apple LL-HLS)",
        || format!("{url}: {sc:?}"),
    );
    // 4.4.3.8: PART-HOLD-BACK "MUST be at least twice the Part Target
    // Duration [...] SHOULD be at least three times"; Apple HLS authoring
    // requires >= 3x.
    match sc.part_hold_back {
        Some(phb) => f.check(
            phb >= 3.0 * pt - 1e-6,
            "PART-HOLD-BACK >= 3 x PART-TARGET (4.4.3.8, Apple)",
            || format!("{url}: PART-HOLD-BACK {phb} < 3 x {pt}"),
        ),
        None => f.fail(
            "PART-HOLD-BACK present with PART-INF (4.4.3.8)",
            format!("{url}: {sc:?}"),
        ),
    }
    // 4.4.3.8: CAN-SKIP-UNTIL "MUST be at least six times the Target Duration".
    match sc.can_skip_until {
        Some(c) => f.check(
            c >= 6.0 * td as f64 - 1e-6,
            "CAN-SKIP-UNTIL >= 6 x TARGETDURATION (4.4.3.8)",
            || format!("{url}: CAN-SKIP-UNTIL {c} < 6 x {td}"),
        ),
        None => f.fail(
            "CAN-SKIP-UNTIL present (delta updates)",
            format!("{url}: {sc:?}"),
        ),
    }
    if let Some(hb) = sc.hold_back {
        // 4.4.3.8: HOLD-BACK "MUST be at least three times the Target Duration".
        f.check(
            hb >= 3.0 * td as f64 - 1e-6,
            "HOLD-BACK >= 3 x TARGETDURATION (4.4.3.8)",
            || format!("{url}: {hb}"),
        );
    }
}

/// EXT-X-PROGRAM-DATE-TIME: present, consistent with EXTINF, close to now.
fn check_program_date_time(f: &Findings, pl: &MediaPlaylist, url: &str, fetched_unix: f64) {
    // Apple HLS authoring: EXT-X-PROGRAM-DATE-TIME is required for LL-HLS.
    let first_has_pdt = pl
        .segments
        .first()
        .map_or(pl.open_pdt.is_some(), |s| s.pdt.is_some());
    f.check(
        first_has_pdt,
        "EXT-X-PROGRAM-DATE-TIME on the first listed segment",
        || format!("{url}: none"),
    );
    // 4.4.4.6 + 6.2.1: PDT of consecutive segments (no discontinuity) grows by EXTINF.
    let mut prev: Option<(f64, f64, u64)> = None; // (pdt, duration, msn)
    for s in &pl.segments {
        if let (Some((ppdt, pdur, pmsn)), Some(pdt)) = (prev, s.pdt)
            && !s.discontinuity
        {
            let d = pdt - (ppdt + pdur);
            f.check(
                d.abs() < 0.05,
                "PROGRAM-DATE-TIME consistent with EXTINF (4.4.4.6)",
                || {
                    format!(
                        "{url}: msn {} PDT is {d:+.3}s off msn {pmsn} PDT + EXTINF",
                        s.msn
                    )
                },
            );
        }
        prev = match (s.pdt, prev) {
            (Some(p), _) => Some((p, s.duration, s.msn)),
            (None, Some((pp, pd, _))) => Some((pp + pd, s.duration, s.msn)),
            (None, None) => None,
        };
    }
    // The live edge's date is close to now.
    if let Some((p, d, _)) = prev {
        let edge = p + d + pl.open_parts.iter().map(|x| x.duration).sum::<f64>();
        let lag = fetched_unix - edge;
        f.check(
            (-1.0..3.0).contains(&lag),
            "PROGRAM-DATE-TIME of the live edge within [-1, 3] s of wall clock",
            || format!("{url}: edge PDT is {lag:.3}s behind now"),
        );
    }
}

/// Preload hints (live only) and rendition reports.
fn check_hints_and_reports(f: &Findings, pl: &MediaPlaylist, url: &str) {
    if !pl.endlist {
        // 4.4.5.3 + Apple LL-HLS: a live playlist carries a preload hint for the next part.
        f.check(
            pl.hint("PART").is_some(),
            "EXT-X-PRELOAD-HINT TYPE=PART present (4.4.5.3)",
            || format!("{url}: none"),
        );
    } else {
        f.check(
            pl.preload_hints.is_empty(),
            "no PRELOAD-HINT with ENDLIST (4.4.5.3)",
            || url.to_string(),
        );
    }
    f.check(
        !pl.rendition_reports.is_empty() || pl.endlist,
        "EXT-X-RENDITION-REPORT present (4.4.5.4)",
        || format!("{url}: none"),
    );
    for rr in &pl.rendition_reports {
        f.check(
            rr.last_msn.is_some() && rr.last_part.is_some(),
            "RENDITION-REPORT has LAST-MSN and LAST-PART (4.4.5.4)",
            || format!("{url}: {rr:?}"),
        );
    }
}
