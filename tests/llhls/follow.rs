//! Following the live edge as a player does: plain reloads of both
//! renditions checked against every playlist rule and across reloads,
//! rendition reports and alignment between the renditions, blocking
//! reloads for the next part (RFC 8216bis 6.2.5.2), and preload hints
//! (4.4.5.3, 6.2.6).

use std::time::{Duration, Instant};

use crate::common::*;
use crate::history::History;
use crate::rules::{check_media_headers, check_playlist, check_playlist_headers};

/// Follows the live edge with blocking reloads for ~14 s; returns the
/// source's and the audio's history.
pub fn follow_live_edge(
    f: &Findings,
    http: &Http,
    src_url: &str,
    aud_url: &str,
) -> (History, History) {
    let mut hs = History::default();
    let mut ha = History::default();
    let mut block_times = Vec::new();
    let mut cur = fetch_media(http, src_url, "");
    check_playlist_headers(f, &cur.resp, false);
    let t_follow = Instant::now();
    while t_follow.elapsed() < Duration::from_secs(14) {
        check_playlist(f, &cur.pl, src_url, now_unix());
        hs.add(f, &cur.pl, src_url);
        // The audio playlist, fetched just after: its rendition report about
        // the source must not be older than the source playlist just read,
        // and the source's report about audio not newer than audio itself.
        let a = fetch_media(http, aud_url, "");
        let a_unix = now_unix();
        check_playlist_headers(f, &a.resp, false);
        check_playlist(f, &a.pl, aud_url, a_unix);
        ha.add(f, &a.pl, aud_url);
        check_rendition_reports(f, src_url, aud_url, &cur, &a);
        check_renditions_aligned(f, &cur.pl, &a.pl);
        // Blocking reload for the next part (6.2.5.2).
        cur = reload_next_part(f, http, src_url, &cur, &mut block_times);
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
    (hs, ha)
}

/// Each playlist's RENDITION-REPORT on the other, with `cur` (source)
/// fetched just before `a` (audio).
fn check_rendition_reports(f: &Findings, src_url: &str, aud_url: &str, cur: &Fetched, a: &Fetched) {
    let rep_a = cur
        .pl
        .rendition_reports
        .iter()
        .find(|r| resolve(src_url, &r.uri) == aud_url);
    let rep_s =
        a.pl.rendition_reports
            .iter()
            .find(|r| resolve(aud_url, &r.uri) == src_url);
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
}

/// Segments line up across renditions: same MSN, close PDT and duration.
fn check_renditions_aligned(f: &Findings, cur: &MediaPlaylist, a: &MediaPlaylist) {
    for s in &cur.segments {
        if let Some(x) = a.segment(s.msn) {
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
}

/// Blocking reload for the part after the end of `cur` (6.2.5.2), timed
/// into `block_times`; checks that it contains that part and that part
/// numbering continues without a gap.
fn reload_next_part(
    f: &Findings,
    http: &Http,
    src_url: &str,
    cur: &Fetched,
    block_times: &mut Vec<f64>,
) -> Fetched {
    let (m, p) = cur.pl.next_part();
    let nx = fetch_blocking(http, src_url, m, p);
    check_playlist_headers(f, &nx.resp, true);
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
    nx
}

fn lex_ge(a: Option<(u64, u64)>, b: (u64, u64)) -> bool {
    a.is_some_and(|a| a >= b)
}

/// Preload hints (4.4.5.3, 6.2.6): the hinted request blocks, then returns
/// the part that the next playlist lists at that position.
pub fn check_preload_hints(f: &Findings, http: &Http, src_url: &str) {
    let mut hint_times = Vec::new();
    for _ in 0..4 {
        let base = fetch_media(http, src_url, "");
        let hint = base
            .pl
            .hint("PART")
            .expect("PRELOAD-HINT TYPE=PART")
            .clone();
        let hint_url = resolve(src_url, &hint.uri);
        let h2 = http.clone();
        let hu = hint_url.clone();
        let th = std::thread::spawn(move || h2.get(&hu));
        let (m, p) = base.pl.next_part();
        let nx = fetch_blocking(http, src_url, m, p);
        let hr = th.join().unwrap();
        assert_eq!(hr.status, 200, "GET preload hint {hint_url}");
        check_media_headers(f, &hr);
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
        let again = http.get(&resolve(src_url, &next.uri));
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
}
