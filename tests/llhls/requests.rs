//! Playlist requests with query parameters (RFC 8216bis 6.2.5): `_HLS_msn`
//! alone blocks for a whole segment, requests too far ahead or malformed
//! get 400 at once, a held request shows in the blocked-requests gauge, and
//! `_HLS_skip` gives a delta update that matches the full playlist.

use std::time::{Duration, Instant};

use crate::common::playlist::Skip;
use crate::common::*;
use crate::rules::{check_playlist, check_playlist_headers};

/// Blocking without _HLS_part waits for the whole segment. Returns the
/// playlist fetched before the request.
pub fn check_msn_alone(f: &Findings, http: &Http, src_url: &str) -> MediaPlaylist {
    let now_pl = fetch_media(http, src_url, "").pl;
    let last = now_pl.last_msn().expect("a complete segment");
    let t = Instant::now();
    let r = fetch_media(http, src_url, &format!("_HLS_msn={}", last + 1));
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
    now_pl
}

/// While a request is held, the blocked-requests gauge counts it.
pub fn check_blocked_requests_gauge(f: &Findings, http: &Http, node: &Node, src_url: &str) {
    // A playlist read in the part's time before the next segment starts
    // shows the newest segment still open, so "two ahead" of its last
    // complete one can come within that part: a second try is two whole
    // segments ahead.
    let mut gauge = Vec::new();
    for _ in 0..2 {
        let last = fetch_media(http, src_url, "").pl.last_msn().unwrap();
        let h2 = http.clone();
        let u = format!("{src_url}?_HLS_msn={}&_HLS_part=0", last + 2);
        let th = std::thread::spawn(move || h2.get(&u));
        std::thread::sleep(Duration::from_millis(300));
        let g = node.metrics().sum("rungs_hls_blocked_requests", &[]);
        gauge.push(g);
        let r = th.join().unwrap();
        f.check(
            r.status == 200,
            "blocking reload two segments ahead succeeds",
            || format!("{} {}", r.status, r.url),
        );
        if g >= 1.0 {
            break;
        }
    }
    f.check(
        gauge.last().is_some_and(|&g| g >= 1.0),
        "rungs_hls_blocked_requests counts a held request",
        || format!("gauge {gauge:?}"),
    );
}

/// Malformed or too-far-ahead requests answer 400 at once.
pub fn check_bad_requests(f: &Findings, http: &Http, src_url: &str) {
    let last = fetch_media(http, src_url, "").pl.last_msn().unwrap();
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
}

/// Delta updates (6.2.5.1): waits until the playlist is longer than
/// CAN-SKIP-UNTIL (read from `now_pl`) so that something can be skipped,
/// then asks for both kinds of skip.
pub fn check_delta_updates(f: &Findings, http: &Http, src_url: &str, now_pl: &MediaPlaylist) {
    let csu = now_pl
        .server_control
        .as_ref()
        .and_then(|s| s.can_skip_until)
        .unwrap_or(12.0);
    let td = now_pl.target_duration.unwrap_or(2) as f64;
    let long = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let x = fetch_media(http, src_url, "");
        (x.pl.listed_duration() > csu + 2.0 * td).then_some(x)
    });
    match long {
        None => f.fail(
            "playlist window longer than CAN-SKIP-UNTIL (else delta updates are useless)",
            format!("source playlist never listed more than CAN-SKIP-UNTIL {csu} + 2 x TD seconds"),
        ),
        Some(full0) => {
            for (skip, v2) in [("YES", false), ("v2", true)] {
                check_delta_update(f, http, src_url, &full0, (skip, v2), csu, td);
            }
        }
    }
}

/// One delta update (`_HLS_skip=YES`, or `v2` when `v2`) against the full
/// playlist at the end of `full0`.
fn check_delta_update(
    f: &Findings,
    http: &Http,
    src_url: &str,
    full0: &Fetched,
    (skip, v2): (&str, bool),
    csu: f64,
    td: f64,
) {
    let at = full0.pl.last_part().unwrap();
    let q = format!("_HLS_msn={}&_HLS_part={}", at.0, at.1);
    let full = fetch_media(http, src_url, &q);
    let delta = fetch_media(http, src_url, &format!("{q}&_HLS_skip={skip}"));
    check_playlist_headers(f, &delta.resp, true);
    check_playlist(
        f,
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
        return;
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
    check_delta_tail(f, &full, &delta, csu, td);
    check_skip_dateranges(f, &delta, sk, v2);
}

/// The segments after the skip are the tail of the full playlist, and only
/// segments beyond CAN-SKIP-UNTIL (`csu`) were skipped.
fn check_delta_tail(f: &Findings, full: &Fetched, delta: &Fetched, csu: f64, td: f64) {
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
            && delta.pl.segments.first().map(|s| s.msn) == Some(delta.pl.first_listed_msn()),
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
}

/// RECENTLY-REMOVED-DATERANGES exactly when `v2` (4.4.5.2), which needs
/// CAN-SKIP-DATERANGES=YES.
fn check_skip_dateranges(f: &Findings, delta: &Fetched, sk: &Skip, v2: bool) {
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
