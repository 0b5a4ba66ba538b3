//! LL-HLS conformance of a live channel, fed by a live-paced ffmpeg publisher.
//!
//! Rules are cited from draft-pantos-hls-rfc8216bis (section numbers of
//! draft 16+, "HTTP Live Streaming 2nd Edition") and Apple's "HTTP Live
//! Streaming (HLS) authoring specification for Apple devices" (written
//! "Apple HLS authoring" below). Violations are collected (common::Findings)
//! and reported together at the end, so one run shows every broken rule.

mod common;

use common::fmp4::{self, Fragment, Init};
use common::playlist::{MediaPlaylist, Part};
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PART_TARGET: f64 = 0.2;
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
fn check_playlist_headers(f: &Findings, r: &Resp, blocking: bool) {
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
fn check_media_headers(f: &Findings, r: &Resp) {
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
fn check_playlist(f: &Findings, pl: &MediaPlaylist, url: &str, fetched_unix: f64) {
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
    let td = pl.target_duration.unwrap_or(0);
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
    let Some(pt) = pl.part_target else {
        f.fail(
            "EXT-X-PART-INF present (4.4.3.7)",
            format!("{url}: no EXT-X-PART-INF"),
        );
        return;
    };
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
    let check_parts = |parts: &[Part], msn: u64, complete: bool| {
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
                    format!("{url}: part {msn}.{i} {} DURATION {} < 0.85 x {pt} (complete segment: {complete})", p.uri, p.duration)
                });
            }
        }
    };
    for s in &pl.segments {
        check_parts(&s.parts, s.msn, true);
    }
    check_parts(&pl.open_parts, pl.open_msn(), false);
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

    let Some(sc) = &pl.server_control else {
        f.fail(
            "EXT-X-SERVER-CONTROL present (4.4.3.8)",
            format!("{url}: none"),
        );
        return;
    };
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

/// History-based rules: things that must stay constant across reloads.
#[derive(Default)]
struct History {
    td: Option<u64>,
    part_target: Option<f64>,
    part_hold_back: Option<f64>,
    can_skip_until: Option<f64>,
    media_sequence: u64,
    segs: HashMap<u64, (String, f64)>,
    parts: HashMap<(u64, u64), (String, f64)>,
    reloads: usize,
}

impl History {
    fn add(&mut self, f: &Findings, pl: &MediaPlaylist, url: &str) {
        self.reloads += 1;
        // 6.2.1: "The EXT-X-TARGETDURATION value in the Media Playlist MUST NOT change."
        if let (Some(a), Some(b)) = (self.td, pl.target_duration) {
            f.check(
                a == b,
                "TARGETDURATION constant across reloads (6.2.1)",
                || format!("{url}: {a} then {b}"),
            );
        }
        // Apple HLS authoring / 4.4.3.7: PART-TARGET must not change for the life of the stream.
        if let (Some(a), Some(b)) = (self.part_target, pl.part_target) {
            f.check(
                a == b,
                "PART-TARGET constant across reloads (Apple)",
                || format!("{url}: {a} then {b}"),
            );
        }
        let phb = pl.server_control.as_ref().and_then(|s| s.part_hold_back);
        if let (Some(a), Some(b)) = (self.part_hold_back, phb) {
            f.check(
                a == b,
                "PART-HOLD-BACK constant across reloads (Apple)",
                || format!("{url}: {a} then {b}"),
            );
        }
        let csu = pl.server_control.as_ref().and_then(|s| s.can_skip_until);
        if let (Some(a), Some(b)) = (self.can_skip_until, csu) {
            f.check(a == b, "CAN-SKIP-UNTIL constant across reloads", || {
                format!("{url}: {a} then {b}")
            });
        }
        // 6.2.1: the media sequence number never decreases.
        f.check(
            pl.media_sequence >= self.media_sequence,
            "EXT-X-MEDIA-SEQUENCE never decreases (6.2.1)",
            || format!("{url}: {} after {}", pl.media_sequence, self.media_sequence),
        );
        self.td = pl.target_duration.or(self.td);
        self.part_target = pl.part_target.or(self.part_target);
        self.part_hold_back = phb.or(self.part_hold_back);
        self.can_skip_until = csu.or(self.can_skip_until);
        self.media_sequence = self.media_sequence.max(pl.media_sequence);
        for s in &pl.segments {
            let v = (s.uri.clone(), s.duration); // parts of old segments may be dropped (6.2.2)
            if let Some(old) = self.segs.get(&s.msn) {
                f.check(
                    *old == v,
                    "a segment never changes once listed (6.2.1)",
                    || format!("{url}: msn {} was {old:?}, now {v:?}", s.msn),
                );
            }
            self.segs.insert(s.msn, v);
        }
        for (m, i, p) in pl.all_parts() {
            let v = (p.uri.clone(), p.duration);
            if let Some(old) = self.parts.get(&(m, i)) {
                f.check(*old == v, "a part never changes once listed", || {
                    format!("{url}: part {m}.{i} was {old:?}, now {v:?}")
                });
            }
            self.parts.insert((m, i), v);
        }
        // Parts of consecutive complete segments and of the open segment are
        // numbered without gaps: checked by construction of the MSN/index.
    }
}

fn lex_ge(a: Option<(u64, u64)>, b: (u64, u64)) -> bool {
    a.is_some_and(|a| a >= b)
}

/// Resolves and fetches a media resource, checking headers.
fn fetch_media_res(f: &Findings, http: &Http, base: &str, uri: &str) -> Resp {
    let url = resolve(base, uri);
    let r = http.get(&url);
    assert_eq!(r.status, 200, "GET {url}");
    check_media_headers(f, &r);
    r
}

/// fMP4-level checks of one complete segment and its parts.
fn check_segment_media(
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

#[test]
fn llhls_live_conformance() {
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel("conformance");
    let idle = node.create_channel("idle");

    // 404 for an unknown channel and for a channel that is not live.
    for url in [
        node.master_url("no-such-channel"),
        node.media_url("no-such-channel", "source"),
        node.master_url(&idle.id),
        node.media_url(&idle.id, "source"),
        node.media_url(&idle.id, "audio"),
    ] {
        let r = http.get(&url);
        f.check(
            r.status == 404,
            "404 for unknown or not-live channel",
            || format!("GET {url}: {}", r.status),
        );
    }

    let mut publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::hd(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    let src_url = node.media_url(&ch.id, "source");
    let aud_url = node.media_url(&ch.id, "audio");
    let first = wait_playlist(&http, &src_url, 1, Duration::from_secs(25)).unwrap_or_else(|| {
        panic!(
            "source playlist never had a complete segment; ffmpeg log:\n{}",
            publisher.log()
        )
    });
    wait_playlist(&http, &aud_url, 1, Duration::from_secs(10))
        .expect("audio playlist never had a complete segment");

    // ---- multivariant playlist (4.4.6)
    let master_url = node.master_url(&ch.id);
    let mr = http.get(&master_url);
    assert_eq!(mr.status, 200, "GET {master_url}");
    check_playlist_headers(&f, &mr, false);
    let mv = parse_multivariant(&mr.text())
        .unwrap_or_else(|e| panic!("master playlist invalid: {e}\n{}", mr.text()));
    let audio_media: Vec<_> = mv
        .media
        .iter()
        .filter(|m| m.get("TYPE") == Some("AUDIO"))
        .collect();
    assert_eq!(
        audio_media.len(),
        1,
        "one EXT-X-MEDIA TYPE=AUDIO expected:\n{}",
        mr.text()
    );
    let am = audio_media[0];
    let group = am
        .quoted("GROUP-ID")
        .expect("EXT-X-MEDIA GROUP-ID (4.4.6.1 REQUIRED)");
    assert!(
        am.quoted("NAME").is_some(),
        "EXT-X-MEDIA NAME is REQUIRED (4.4.6.1)"
    );
    let am_uri = resolve(
        &master_url,
        am.quoted("URI").expect("audio EXT-X-MEDIA URI"),
    );
    assert_eq!(am_uri, aud_url, "audio rendition URI");
    assert_eq!(
        mv.variants.len(),
        1,
        "one variant (source) expected:\n{}",
        mr.text()
    );
    let va = &mv.variants[0].attrs;
    assert_eq!(
        resolve(&master_url, &mv.variants[0].uri),
        src_url,
        "variant URI"
    );
    f.check(
        va.quoted("AUDIO") == Some(group),
        "STREAM-INF AUDIO matches the EXT-X-MEDIA GROUP-ID (4.4.6.2)",
        || format!("{va:?}"),
    );
    let bandwidth: u64 = va
        .get("BANDWIDTH")
        .and_then(|b| b.parse().ok())
        .expect("BANDWIDTH (REQUIRED, 4.4.6.2)");
    let avg_bw: u64 = va
        .get("AVERAGE-BANDWIDTH")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    f.check(
        avg_bw > 0 && avg_bw <= bandwidth,
        "AVERAGE-BANDWIDTH present and <= BANDWIDTH",
        || format!("BANDWIDTH {bandwidth} AVERAGE-BANDWIDTH {avg_bw}"),
    );

    // ---- init sections, and the CODECS/RESOLUTION/FRAME-RATE they imply
    let src_pl = &first.pl;
    let vinit_r = fetch_media_res(
        &f,
        &http,
        &src_url,
        src_pl.map_uri.as_deref().expect("EXT-X-MAP"),
    );
    let vinit = fmp4::parse_init(&vinit_r.body).expect("video init segment parses");
    let aud0 = fetch_media(&http, &aud_url, "");
    let ainit_r = fetch_media_res(
        &f,
        &http,
        &aud_url,
        aud0.pl.map_uri.as_deref().expect("audio EXT-X-MAP"),
    );
    let ainit = fmp4::parse_init(&ainit_r.body).expect("audio init segment parses");
    assert_eq!(vinit.tracks.len(), 1, "video init has one track");
    assert_eq!(ainit.tracks.len(), 1, "audio init has one track");
    let vt = &vinit.tracks[0];
    let at = &ainit.tracks[0];
    assert_eq!(vt.handler, "vide");
    assert_eq!(at.handler, "soun");
    f.check(
        at.sample_entry == "mp4a" && at.sample_rate == 48000 && at.channels == 2,
        "audio init: mp4a 48 kHz stereo",
        || format!("{at:?}"),
    );
    let codecs = va.quoted("CODECS").unwrap_or("");
    let want_codecs = [vt.codec.as_str(), "mp4a.40.2"];
    let got: Vec<&str> = codecs.split(',').collect();
    f.check(
        got.len() == 2
            && want_codecs
                .iter()
                .all(|c| got.iter().any(|g| g.eq_ignore_ascii_case(c))),
        "CODECS = avc1.PPCCLL from avcC + mp4a.40.2 (4.4.6.2)",
        || format!("CODECS {codecs:?}, init says {want_codecs:?}"),
    );
    f.check(
        va.get("RESOLUTION") == Some("1280x720") && (vt.width, vt.height) == (1280, 720),
        "RESOLUTION matches the source (1280x720)",
        || {
            format!(
                "RESOLUTION {:?}, init {}x{}",
                va.get("RESOLUTION"),
                vt.width,
                vt.height
            )
        },
    );
    let fr: f64 = va
        .get("FRAME-RATE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    f.check(
        (fr - 30.0).abs() < 0.1,
        "FRAME-RATE matches the source (30)",
        || format!("FRAME-RATE {:?}", va.get("FRAME-RATE")),
    );

    // ---- follow the live edge with blocking reloads for ~14 s
    let mut hs = History::default();
    let mut ha = History::default();
    let mut block_times = Vec::new();
    let mut cur = fetch_media(&http, &src_url, "");
    check_playlist_headers(&f, &cur.resp, false);
    let t_follow = Instant::now();
    while t_follow.elapsed() < Duration::from_secs(14) {
        check_playlist(&f, &cur.pl, &src_url, now_unix());
        hs.add(&f, &cur.pl, &src_url);
        // The audio playlist, fetched just after: its rendition report about
        // the source must not be older than the source playlist just read,
        // and the source's report about audio not newer than audio itself.
        let a = fetch_media(&http, &aud_url, "");
        let a_unix = now_unix();
        check_playlist_headers(&f, &a.resp, false);
        check_playlist(&f, &a.pl, &aud_url, a_unix);
        ha.add(&f, &a.pl, &aud_url);
        let rep_a = cur
            .pl
            .rendition_reports
            .iter()
            .find(|r| resolve(&src_url, &r.uri) == aud_url);
        let rep_s =
            a.pl.rendition_reports
                .iter()
                .find(|r| resolve(&aud_url, &r.uri) == src_url);
        f.check(
            rep_a.is_some(),
            "source playlist has a RENDITION-REPORT for audio (4.4.5.4)",
            || format!("{:?}", cur.pl.rendition_reports),
        );
        f.check(
            rep_s.is_some(),
            "audio playlist has a RENDITION-REPORT for source (4.4.5.4)",
            || format!("{:?}", a.pl.rendition_reports),
        );
        if let (Some(ra), Some(rs)) = (rep_a, rep_s) {
            let ra = (ra.last_msn.unwrap_or(0), ra.last_part.unwrap_or(0));
            let rs = (rs.last_msn.unwrap_or(0), rs.last_part.unwrap_or(0));
            let a_last = a.pl.last_part().unwrap_or((0, 0));
            let s_last = cur.pl.last_part().unwrap_or((0, 0));
            // Distance in parts from `from` to `to` within a playlist.
            let dist = |pl: &MediaPlaylist, from: (u64, u64), to: (u64, u64)| -> Option<i64> {
                let v: Vec<(u64, u64)> = pl.all_parts().iter().map(|(m, i, _)| (*m, *i)).collect();
                let a = v.iter().position(|x| *x == from)? as i64;
                let b = v.iter().position(|x| *x == to)? as i64;
                Some(b - a)
            };
            // "as up-to-date as the Playlist that contains it" (4.4.5.4): the
            // source's report on audio names a part that the audio playlist
            // (fetched after) has, at most 2 parts behind its end ...
            let d = dist(&a.pl, ra, a_last);
            f.check(d.is_some_and(|d| (0..=2).contains(&d)), "RENDITION-REPORT LAST-MSN/LAST-PART consistent (4.4.5.4)", || {
                format!("source reports audio at {ra:?}; audio playlist fetched after ends at {a_last:?} (distance {d:?} parts)")
            });
            // ... and audio's report on source is not older than the source
            // playlist fetched before it (2 parts of slack for an audio
            // playlist that was last updated a moment earlier).
            let d = if rs >= s_last {
                Some(0)
            } else {
                dist(&cur.pl, rs, s_last)
            };
            f.check(d.is_some_and(|d| (0..=2).contains(&d)) && rs.0 <= s_last.0 + 1, "RENDITION-REPORT LAST-MSN/LAST-PART consistent (4.4.5.4)", || {
                format!("audio reports source at {rs:?}; source playlist fetched before ends at {s_last:?} ({d:?} parts behind)")
            });
        }
        // Segments line up across renditions: same MSN, close PDT and duration.
        for s in &cur.pl.segments {
            if let Some(x) = a.pl.segment(s.msn) {
                if let (Some(p1), Some(p2)) = (s.pdt, x.pdt) {
                    f.check(
                        (p1 - p2).abs() < 0.1,
                        "audio and video segments aligned (same MSN, PDT within 0.1 s)",
                        || format!("msn {}: video PDT {p1:.3} audio {p2:.3}", s.msn),
                    );
                }
                f.check(
                    (s.duration - x.duration).abs() < 0.1,
                    "audio and video segments aligned (durations within 0.1 s)",
                    || format!("msn {}: video {} audio {}", s.msn, s.duration, x.duration),
                );
            }
        }
        // Blocking reload for the next part (6.2.5.2).
        let (m, p) = cur.pl.next_part();
        let nx = fetch_blocking(&http, &src_url, m, p);
        check_playlist_headers(&f, &nx.resp, true);
        block_times.push(nx.resp.elapsed.as_secs_f64());
        f.check(
            lex_ge(nx.pl.last_part(), (m, p)),
            "blocking reload returns a playlist containing the requested part (6.2.5.2)",
            || format!("asked {m}.{p}, playlist ends at {:?}", nx.pl.last_part()),
        );
        // Part numbering has no gaps: the previous last part is followed by
        // (m, p) or, if the segment was cut, (m+1, 0).
        if let Some(prev_last) = cur.pl.last_part() {
            let parts = nx.pl.all_parts();
            let pos = parts.iter().position(|(a, b, _)| (*a, *b) == prev_last);
            if let Some(i) = pos
                && let Some((a, b, _)) = parts.get(i + 1)
            {
                f.check(
                    (*a, *b) == (m, p) || (*a, *b) == (m + 1, 0),
                    "part numbering contiguous",
                    || format!("after {prev_last:?} came {a}.{b}"),
                );
            }
        }
        cur = nx;
    }
    let max_block = block_times.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "blocking reloads: {} in 14 s, p50 {:.3}s p90 {:.3}s max {max_block:.3}s",
        block_times.len(),
        quantile(&block_times, 0.5),
        quantile(&block_times, 0.9)
    );
    f.check(
        block_times.len() >= 40,
        "about one blocking reload per part (>= 40 in 14 s)",
        || format!("{} reloads", block_times.len()),
    );
    f.check(
        max_block <= 1.5,
        "blocking reload for the next part returns within ~1 s",
        || format!("max {max_block:.3}s"),
    );

    // ---- preload hints (4.4.5.3, 6.2.6): the hinted request blocks, then
    // returns the part that the next playlist lists at that position.
    let mut hint_times = Vec::new();
    for _ in 0..4 {
        let base = fetch_media(&http, &src_url, "");
        let hint = base
            .pl
            .hint("PART")
            .expect("PRELOAD-HINT TYPE=PART")
            .clone();
        let hint_url = resolve(&src_url, &hint.uri);
        let h2 = http.clone();
        let hu = hint_url.clone();
        let th = std::thread::spawn(move || h2.get(&hu));
        let (m, p) = base.pl.next_part();
        let nx = fetch_blocking(&http, &src_url, m, p);
        let hr = th.join().unwrap();
        assert_eq!(hr.status, 200, "GET preload hint {hint_url}");
        check_media_headers(&f, &hr);
        hint_times.push(hr.elapsed.as_secs_f64());
        let prev_last = base.pl.last_part().expect("a part");
        let parts = nx.pl.all_parts();
        let i = parts
            .iter()
            .position(|(a, b, _)| (*a, *b) == prev_last)
            .expect("previous last part still listed");
        let Some((a, b, next)) = parts.get(i + 1) else {
            f.fail(
                "blocking reload lists the hinted part",
                format!("nothing after {prev_last:?}"),
            );
            continue;
        };
        f.check(
            next.uri == hint.uri,
            "PRELOAD-HINT URI == URI of the next EXT-X-PART (4.4.5.3)",
            || format!("hint {:?}, next part {a}.{b} is {:?}", hint.uri, next.uri),
        );
        let again = http.get(&resolve(&src_url, &next.uri));
        f.check(
            again.body == hr.body,
            "hinted response == the part fetched later",
            || format!("{} bytes vs {} bytes", hr.body.len(), again.body.len()),
        );
    }
    let max_hint = hint_times.iter().cloned().fold(0.0, f64::max);
    eprintln!("preload hint fetches: {hint_times:.3?}");
    f.check(
        max_hint <= 1.2,
        "preload-hinted part returns within ~1 s",
        || format!("{hint_times:?}"),
    );

    // ---- blocking without _HLS_part waits for the whole segment; 400 cases
    let now_pl = fetch_media(&http, &src_url, "").pl;
    let last = now_pl.last_msn().expect("a complete segment");
    let t = Instant::now();
    let r = fetch_media(&http, &src_url, &format!("_HLS_msn={}", last + 1));
    f.check(
        r.pl.last_msn().is_some_and(|x| x > last),
        "_HLS_msn alone returns once segment M is complete (6.2.5.2)",
        || format!("asked {}, last complete {:?}", last + 1, r.pl.last_msn()),
    );
    f.check(
        t.elapsed() < Duration::from_secs(5),
        "_HLS_msn=next returns within a target duration",
        || format!("{:?}", t.elapsed()),
    );
    // Meanwhile the blocked-requests gauge sees a held request.
    {
        let last = fetch_media(&http, &src_url, "").pl.last_msn().unwrap();
        let h2 = http.clone();
        let u = format!("{src_url}?_HLS_msn={}&_HLS_part=0", last + 2);
        let th = std::thread::spawn(move || h2.get(&u));
        std::thread::sleep(Duration::from_millis(300));
        let m = node.metrics();
        let g = m.sum("rungs_hls_blocked_requests", &[]);
        f.check(
            g >= 1.0,
            "rungs_hls_blocked_requests counts a held request",
            || format!("gauge {g}"),
        );
        let r = th.join().unwrap();
        f.check(
            r.status == 200,
            "blocking reload two segments ahead succeeds",
            || format!("{} {}", r.status, r.url),
        );
    }
    let last = fetch_media(&http, &src_url, "").pl.last_msn().unwrap();
    for (q, why) in [
        (
            "_HLS_part=1".to_string(),
            "_HLS_part without _HLS_msn => 400 (6.2.5.2)",
        ),
        (
            format!("_HLS_msn={}", last + 10),
            "_HLS_msn > last MSN + 2 => 400 (6.2.5.2)",
        ),
        (
            format!("_HLS_msn={}&_HLS_part=0", last + 10),
            "_HLS_msn > last MSN + 2 => 400 (6.2.5.2)",
        ),
    ] {
        let t = Instant::now();
        let r = http.get(&format!("{src_url}?{q}"));
        f.check(
            r.status == 400 && t.elapsed() < Duration::from_secs(1),
            why,
            || format!("?{q}: status {} after {:?}", r.status, t.elapsed()),
        );
    }

    // ---- delta updates (6.2.5.1): wait until the playlist is longer than
    // CAN-SKIP-UNTIL so that something can be skipped.
    let csu = now_pl
        .server_control
        .as_ref()
        .and_then(|s| s.can_skip_until)
        .unwrap_or(12.0);
    let td = now_pl.target_duration.unwrap_or(2) as f64;
    let long = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let x = fetch_media(&http, &src_url, "");
        (x.pl.listed_duration() > csu + 2.0 * td).then_some(x)
    });
    match long {
        None => f.fail(
            "playlist window longer than CAN-SKIP-UNTIL (else delta updates are useless)",
            format!("source playlist never listed more than CAN-SKIP-UNTIL {csu} + 2 x TD seconds"),
        ),
        Some(full0) => {
            for (skip, v2) in [("YES", false), ("v2", true)] {
                let at = full0.pl.last_part().unwrap();
                let q = format!("_HLS_msn={}&_HLS_part={}", at.0, at.1);
                let full = fetch_media(&http, &src_url, &q);
                let delta = fetch_media(&http, &src_url, &format!("{q}&_HLS_skip={skip}"));
                check_playlist_headers(&f, &delta.resp, true);
                check_playlist(
                    &f,
                    &delta.pl,
                    &format!("{src_url} (delta {skip})"),
                    now_unix(),
                );
                f.check(
                    full.pl.skip.is_none(),
                    "no EXT-X-SKIP without _HLS_skip",
                    || "EXT-X-SKIP in a full playlist".into(),
                );
                let Some(sk) = &delta.pl.skip else {
                    f.fail(
                        "_HLS_skip gives EXT-X-SKIP (6.2.5.1)",
                        format!("_HLS_skip={skip}: no EXT-X-SKIP\n{}", delta.resp.text()),
                    );
                    continue;
                };
                eprintln!(
                    "delta _HLS_skip={skip}: {sk:?}, version {:?}, {} segments listed after the skip, full playlist {} segments",
                    delta.pl.version,
                    delta.pl.segments.len(),
                    full.pl.segments.len()
                );
                f.check(
                    sk.skipped_segments > 0,
                    "EXT-X-SKIP SKIPPED-SEGMENTS > 0 on a long playlist",
                    || format!("{sk:?}"),
                );
                f.check(
                    delta.pl.media_sequence >= full.pl.media_sequence,
                    "delta EXT-X-MEDIA-SEQUENCE not older than the full playlist",
                    || {
                        format!(
                            "delta {} full {}",
                            delta.pl.media_sequence, full.pl.media_sequence
                        )
                    },
                );
                // The segments after the skip are the tail of the full playlist.
                let mut compared = 0;
                for s in &delta.pl.segments {
                    if let Some(fs) = full.pl.segment(s.msn) {
                        compared += 1;
                        f.check(
                            fs.uri == s.uri && fs.duration == s.duration && fs.parts == s.parts,
                            "delta update segments == tail of the full playlist (6.2.5.1)",
                            || format!("msn {}: delta {:?} full {:?}", s.msn, s.uri, fs.uri),
                        );
                    }
                }
                f.check(
                    compared > 0
                        && delta.pl.segments.first().map(|s| s.msn)
                            == Some(delta.pl.first_listed_msn()),
                    "delta update segments line up with the full playlist",
                    || format!("compared {compared}"),
                );
                f.check(
                    delta.pl.first_listed_msn() >= full.pl.media_sequence
                        && full.pl.segment(delta.pl.first_listed_msn()).is_some(),
                    "first segment after EXT-X-SKIP is in the full playlist",
                    || {
                        format!(
                            "delta first msn {}, full {}..{:?}",
                            delta.pl.first_listed_msn(),
                            full.pl.media_sequence,
                            full.pl.last_msn()
                        )
                    },
                );
                // Only segments older than the Skip Boundary (CAN-SKIP-UNTIL
                // before the end) may be skipped.
                let kept = delta.pl.listed_duration();
                f.check(
                    kept >= csu - td,
                    "skipped only segments beyond CAN-SKIP-UNTIL (6.2.5.1)",
                    || format!("delta keeps {kept:.2}s < CAN-SKIP-UNTIL {csu} - TD"),
                );
                if v2 {
                    f.check(
                        sk.recently_removed_dateranges.is_some(),
                        "_HLS_skip=v2: RECENTLY-REMOVED-DATERANGES present (4.4.5.2)",
                        || format!("{sk:?}"),
                    );
                    let sc = delta.pl.server_control.clone().unwrap_or_default();
                    f.check(
                        sc.can_skip_dateranges,
                        "CAN-SKIP-DATERANGES=YES advertised when v2 is served (4.4.3.8)",
                        || format!("{sc:?}"),
                    );
                    let v = delta.pl.version.unwrap_or(0);
                    if v < 10 {
                        eprintln!(
                            "WARN: v2 delta update has EXT-X-VERSION {v}; section 8 asks 10 for an EXT-X-SKIP that replaces EXT-X-DATERANGE tags"
                        );
                    }
                } else {
                    f.check(
                        sk.recently_removed_dateranges.is_none(),
                        "_HLS_skip=YES: no RECENTLY-REMOVED-DATERANGES",
                        || format!("{sk:?}"),
                    );
                }
            }
        }
    }

    // ---- media: decode init + a complete segment with ffprobe, and check
    // tfdt/trun of the segment and its parts.
    let s_pl = fetch_media(&http, &src_url, "").pl;
    let a_pl = fetch_media(&http, &aud_url, "").pl;
    let msn = s_pl.last_msn().unwrap().min(a_pl.last_msn().unwrap());
    let (vseg, vfr) = check_segment_media(&f, &http, &src_url, &s_pl, msn, &vinit, true);
    let (aseg, _) = check_segment_media(&f, &http, &aud_url, &a_pl, msn, &ainit, false);
    let vdur = s_pl.segment(msn).unwrap().duration;
    let adur = a_pl.segment(msn).unwrap().duration;
    let vfile = tmp_file(
        &node.data_dir,
        "video.mp4",
        &[vinit_r.body.clone(), vseg].concat(),
    );
    let (ok, v, err) = ffprobe_json(
        &vfile,
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
    let afile = tmp_file(
        &node.data_dir,
        "audio.mp4",
        &[ainit_r.body.clone(), aseg].concat(),
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
        "ffprobe: video segment {msn}: {} frames (EXTINF {vdur}), audio {aframes} frames (EXTINF {adur})",
        frames.len()
    );
    f.check(
        (aframes - adur * 48000.0 / 1024.0).abs() <= 2.0,
        "audio segment decodes to EXTINF x 46.875 AAC frames",
        || format!("{aframes} frames for EXTINF {adur}"),
    );

    // ---- metrics
    let m = node.metrics();
    for name in [
        "rungs_ingest_bytes_total",
        "rungs_ingest_frames_total",
        "rungs_ingest_keyframe_interval_seconds",
        "rungs_live_channels",
        "rungs_parts_published_total",
        "rungs_hls_blocked_requests",
        "rungs_ingest_to_part_seconds",
    ] {
        f.check(m.has(name), "metric exported", || {
            format!("{name} missing from /metrics")
        });
    }
    let c = [("channel", ch.id.as_str())];
    for name in [
        "rungs_ingest_bytes_total",
        "rungs_ingest_frames_total",
        "rungs_parts_published_total",
        "rungs_ingest_to_part_seconds_count",
    ] {
        let v = m.sum(name, &c);
        f.check(
            v > 0.0,
            "per-channel metric nonzero for the live channel",
            || format!("{name}{{channel={}}} = {v}", ch.id),
        );
    }
    let ki = m.sum("rungs_ingest_keyframe_interval_seconds", &c);
    f.check(
        (ki - 2.0).abs() < 0.1,
        "keyframe interval metric = 2 s for -g 60 at 30 fps",
        || format!("{ki}"),
    );
    let live = m.sum("rungs_live_channels", &[]);
    f.check(live == 1.0, "rungs_live_channels = 1", || format!("{live}"));
    let n = m.sum("rungs_ingest_to_part_seconds_count", &c);
    let avg = m.sum("rungs_ingest_to_part_seconds_sum", &c) / n.max(1.0);
    eprintln!("rungs_ingest_to_part_seconds: count {n}, mean {avg:.3}s");
    f.check(
        avg < 1.0,
        "mean ingest-to-part latency < 1 s with 200 ms parts",
        || format!("{avg:.3}s"),
    );
    f.check(
        !m.text.contains(&ch.stream_key),
        "metrics never contain a stream key",
        || "stream key in /metrics".into(),
    );

    // ---- still live, and no key in the log
    f.check(
        publisher.try_status().is_none(),
        "publisher still running at the end",
        || format!("ffmpeg exited: {:?}", publisher.try_status()),
    );
    f.check(
        !node.log().contains(&ch.stream_key),
        "node log never contains a stream key",
        || "stream key in log".into(),
    );
    eprintln!(
        "source: {} reloads, audio: {} reloads",
        hs.reloads, ha.reloads
    );
    publisher.stop();
    f.assert_empty("llhls_live_conformance");
}

/// Fetches the init that applies to segment `msn` and the segment, and
/// decodes them with ffprobe: (video frames, first frame is a keyframe).
fn decode_segment(http: &Http, pl_url: &str, pl: &MediaPlaylist, msn: u64) -> (i64, bool) {
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

/// Publisher drops and comes back within the grace period: same playlists,
/// EXT-X-DISCONTINUITY, MSN continues. Then it goes away for good:
/// EXT-X-ENDLIST after the grace.
#[test]
fn reconnect_within_grace_then_endlist() {
    let f = Findings::default();
    let grace = 4.0;
    let node = Node::start(NodeConfig {
        reconnect_grace_s: grace,
        ..Default::default()
    });
    let http = Http::new();
    let ch = node.create_channel("reconnect");
    let src = node.media_url(&ch.id, "source");
    let aud = node.media_url(&ch.id, "audio");

    // Without B-frames first, with B-frames after the reconnect (an encoder
    // restarted with other settings: exactly what a discontinuity is for).
    let no_b = PubOpts {
        bframes: false,
        ..Default::default()
    };
    let mut p1 = Publisher::start(&node.rtmp_url(&ch.stream_key), &no_b, &node.data_dir);
    node.attach_log(&p1.log_path);
    let before = wait_playlist(&http, &src, 2, Duration::from_secs(25))
        .expect("source playlist with 2 segments");
    let mut hist = History::default();
    hist.add(&f, &before.pl, &src);
    let seg0 = before.pl.segments[0].msn;
    let (frames, key) = decode_segment(&http, &src, &before.pl, seg0);
    f.check(
        key && (frames - 60).abs() <= 1,
        "no-B-frames segment decodes, keyframe first",
        || format!("msn {seg0}: {frames} frames, first is keyframe: {key}"),
    );
    assert_eq!(
        before.pl.discontinuity_tags, 0,
        "no discontinuity before the reconnect"
    );
    p1.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let during = fetch_media(&http, &src, "");
    f.check(
        !during.pl.endlist,
        "no ENDLIST during the grace period",
        || during.resp.text(),
    );
    hist.add(&f, &during.pl, &src);
    let last_before = during.pl.last_part().expect("parts before the drop");

    let mut p2 = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&p2.log_path);
    // Wait for two complete segments after a discontinuity.
    let after = wait_for(Duration::from_secs(25), Duration::from_millis(300), || {
        let x = fetch_media(&http, &src, "");
        let i = x.pl.segments.iter().position(|s| s.discontinuity)?;
        (x.pl.segments.len() >= i + 2).then_some(x)
    });
    let Some(after) = after else {
        let x = fetch_media(&http, &src, "");
        panic!(
            "no EXT-X-DISCONTINUITY followed by 2 segments after the reconnect:\n{}",
            x.resp.text()
        );
    };
    eprintln!("reconnected; playlist:\n{}", after.resp.text());
    check_playlist(&f, &after.pl, &src, now_unix());
    hist.add(&f, &after.pl, &src);
    let di = after
        .pl
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .unwrap();
    let dseg = after.pl.segments[di].clone();
    // The segment after the discontinuity (B-frames now) decodes with its own init.
    let (frames, key) = decode_segment(&http, &src, &after.pl, dseg.msn);
    f.check(
        key && frames as f64 >= dseg.duration * 30.0 - 1.0,
        "segment after the discontinuity decodes, keyframe first",
        || {
            format!(
                "msn {}: {frames} frames for EXTINF {}, first is keyframe: {key}",
                dseg.msn, dseg.duration
            )
        },
    );
    f.check(
        after.pl.media_sequence >= before.pl.media_sequence,
        "MSN continues (no reset) after reconnect",
        || {
            format!(
                "media sequence {} -> {}",
                before.pl.media_sequence, after.pl.media_sequence
            )
        },
    );
    f.check(
        dseg.msn > last_before.0,
        "first segment after reconnect continues the MSN",
        || {
            format!(
                "last part before drop {last_before:?}, discontinuity at msn {}",
                dseg.msn
            )
        },
    );
    if di > 0 {
        let prev = &after.pl.segments[di - 1];
        if let (Some(a), Some(b)) = (prev.pdt, dseg.pdt) {
            f.check(
                b >= a + prev.duration - 0.05,
                "PDT after the discontinuity is not earlier than before it",
                || format!("before {a:.3}+{} after {b:.3}", prev.duration),
            );
        }
    }
    f.check(
        dseg.pdt.is_some(),
        "EXT-X-PROGRAM-DATE-TIME on the segment after a discontinuity (6.2.1)",
        || format!("msn {}", dseg.msn),
    );
    // The audio rendition has the discontinuity at the same MSN (4.4.4.3).
    let a = fetch_media(&http, &aud, "");
    let adi =
        a.pl.segments
            .iter()
            .find(|s| s.discontinuity)
            .map(|s| s.msn);
    f.check(
        adi == Some(dseg.msn),
        "audio has EXT-X-DISCONTINUITY at the same MSN",
        || format!("video at {}, audio at {adi:?}", dseg.msn),
    );
    // And the stream still conforms over a few blocking reloads.
    let mut cur = after;
    for _ in 0..10 {
        let (m, p) = cur.pl.next_part();
        cur = fetch_blocking(&http, &src, m, p);
        check_playlist(&f, &cur.pl, &src, now_unix());
        hist.add(&f, &cur.pl, &src);
    }
    eprintln!(
        "reconnect: first segment after the drop is msn {} ({:?} after kill)",
        dseg.msn,
        killed.elapsed()
    );

    // Gone for good: ENDLIST after the grace period, not before.
    p2.kill();
    let gone = Instant::now();
    let mut ended = None;
    while gone.elapsed() < Duration::from_secs_f64(grace + 12.0) {
        let r = http.get(&src);
        if r.status == 200 {
            let pl = parse_media(&r.text())
                .unwrap_or_else(|e| panic!("invalid playlist after drop: {e}\n{}", r.text()));
            if pl.endlist {
                ended = Some((gone.elapsed(), pl, r.text()));
                break;
            }
        } else {
            f.fail(
                "playlist still served with ENDLIST after the grace (not straight to 404)",
                format!("status {} at {:?}", r.status, gone.elapsed()),
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    match ended {
        None => f.fail(
            "EXT-X-ENDLIST after the reconnect grace",
            format!("no ENDLIST within grace {grace}s + 12 s"),
        ),
        Some((t, pl, text)) => {
            eprintln!("ENDLIST after {t:?} (grace {grace}s)");
            f.check(
                t.as_secs_f64() >= grace - 0.5,
                "ENDLIST not before the grace period ends",
                || format!("after {t:?}"),
            );
            f.check(
                pl.preload_hints.is_empty(),
                "no PRELOAD-HINT with ENDLIST (4.4.5.3)",
                || text.clone(),
            );
            let a = http.get(&aud);
            let aend = a.status == 200 && parse_media(&a.text()).is_ok_and(|p| p.endlist);
            f.check(aend, "audio playlist has ENDLIST too", || {
                format!("{} {}", a.status, a.text())
            });
            // A blocking request on an ended playlist returns at once.
            let last = pl.last_msn().unwrap_or(0);
            let t0 = Instant::now();
            let r = http.get(&format!("{src}?_HLS_msn={}&_HLS_part=0", last + 1));
            f.check(
                t0.elapsed() < Duration::from_secs(2),
                "blocking reload on an ended playlist does not hang",
                || format!("{} after {:?}", r.status, t0.elapsed()),
            );
            let live = wait_for(Duration::from_secs(3), Duration::from_millis(200), || {
                (node.metrics().sum("rungs_live_channels", &[]) == 0.0).then_some(())
            });
            f.check(
                live.is_some(),
                "rungs_live_channels back to 0 after the grace",
                || format!("{}", node.metrics().sum("rungs_live_channels", &[])),
            );
        }
    }
    // Eventually 404 (informational: the spec leaves "some time after" open).
    let t404 = wait_for(Duration::from_secs(20), Duration::from_millis(500), || {
        (http.get(&src).status == 404).then_some(gone.elapsed())
    });
    eprintln!("404 after drop: {t404:?}");
    f.assert_empty("reconnect_within_grace_then_endlist");
}

/// The rule checks themselves catch violations (no node needed).
#[test]
fn conformance_checks_catch_violations() {
    let bad = "#EXTM3U
#EXT-X-VERSION:5
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.4,CAN-SKIP-UNTIL=6.0
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PART:DURATION=0.25,URI=\"a0.m4s\"
#EXT-X-PART:DURATION=0.1,URI=\"a1.m4s\"
#EXT-X-PART:DURATION=0.2,URI=\"a2.m4s\"
#EXTINF:2.6,
a.m4s
#EXT-X-PROGRAM-DATE-TIME:2020-01-01T00:00:00.000Z
#EXTINF:2.0,
b.m4s
";
    let pl = parse_media(bad).unwrap();
    let f = Findings::default();
    check_playlist(&f, &pl, "test", now_unix());
    let rules = f.rules();
    for want in [
        "EXT-X-VERSION >= 6 for EXT-X-MAP (4.4.4.5)",
        "EXTINF rounded <= TARGETDURATION (4.4.3.1)",
        "sum of part DURATIONs == EXTINF",
        "first part of a segment has INDEPENDENT=YES (4.4.4.9)",
        "part DURATION <= PART-TARGET (4.4.4.9)",
        "non-final part DURATION >= 85% PART-TARGET (4.4.4.9)",
        "PART-HOLD-BACK >= 3 x PART-TARGET (4.4.3.8, Apple)",
        "CAN-SKIP-UNTIL >= 6 x TARGETDURATION (4.4.3.8)",
        "EXT-X-PROGRAM-DATE-TIME on the first listed segment",
        "PROGRAM-DATE-TIME of the live edge within [-1, 3] s of wall clock",
        "EXT-X-PRELOAD-HINT TYPE=PART present (4.4.5.3)",
        "EXT-X-RENDITION-REPORT present (4.4.5.4)",
    ] {
        assert!(
            rules.iter().any(|r| r == want),
            "rule {want:?} not reported; got {rules:#?}"
        );
    }
    // History: a changed TARGETDURATION / PART-TARGET and a rewritten segment.
    let ok = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.2\n#EXTINF:2.0,\na.m4s\n";
    let changed = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:3\n#EXT-X-PART-INF:PART-TARGET=0.3\n#EXTINF:1.5,\nb.m4s\n";
    let f = Findings::default();
    let mut h = History::default();
    h.add(&f, &parse_media(ok).unwrap(), "t");
    h.add(&f, &parse_media(changed).unwrap(), "t");
    let rules = f.rules();
    for want in [
        "TARGETDURATION constant across reloads (6.2.1)",
        "PART-TARGET constant across reloads (Apple)",
        "a segment never changes once listed (6.2.1)",
    ] {
        assert!(
            rules.iter().any(|r| r == want),
            "rule {want:?} not reported; got {rules:#?}"
        );
    }
}
