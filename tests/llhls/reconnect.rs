//! The phases of `reconnect_within_grace_then_endlist`: a publisher drops
//! and comes back within the grace period (same playlists, one
//! EXT-X-DISCONTINUITY at the same MSN in every rendition, the MSN
//! continues), then goes away for good (EXT-X-ENDLIST after the grace, not
//! before, and eventually 404). The test drives the publishers; these check.

use std::time::{Duration, Instant};

use crate::common::playlist::Segment;
use crate::common::*;
use crate::history::History;
use crate::media::decode_segment;
use crate::rules::check_playlist;

/// Before the drop: two complete segments without B-frames that decode,
/// and no discontinuity yet.
pub fn check_before_drop(f: &Findings, http: &Http, src: &str, hist: &mut History) -> Fetched {
    let before = wait_playlist(http, src, 2, Duration::from_secs(25))
        .expect("source playlist with 2 segments");
    hist.add(f, &before.pl, src);
    let seg0 = before.pl.segments[0].msn;
    let (frames, key) = decode_segment(http, src, &before.pl, seg0);
    f.check(
        key && (frames - 60).abs() <= 1,
        "no-B-frames segment decodes, keyframe first",
        || format!("msn {seg0}: {frames} frames, first is keyframe: {key}"),
    );
    assert_eq!(
        before.pl.discontinuity_tags, 0,
        "no discontinuity before the reconnect"
    );
    before
}

/// During the grace period, one second after the drop: still live (no
/// ENDLIST). Returns the last part listed before the drop.
pub fn check_during_grace(f: &Findings, http: &Http, src: &str, hist: &mut History) -> (u64, u64) {
    let during = fetch_media(http, src, "");
    f.check(
        !during.pl.endlist,
        "no ENDLIST during the grace period",
        || during.resp.text(),
    );
    hist.add(f, &during.pl, src);
    during.pl.last_part().expect("parts before the drop")
}

/// Waits for two complete segments after a discontinuity; panics with the
/// playlist if they never come.
pub fn wait_discontinuity(http: &Http, src: &str) -> Fetched {
    let after = wait_for(Duration::from_secs(25), Duration::from_millis(300), || {
        let x = fetch_media(http, src, "");
        let i = x.pl.segments.iter().position(|s| s.discontinuity)?;
        (x.pl.segments.len() >= i + 2).then_some(x)
    });
    let Some(after) = after else {
        let x = fetch_media(http, src, "");
        panic!(
            "no EXT-X-DISCONTINUITY followed by 2 segments after the reconnect:\n{}",
            x.resp.text()
        );
    };
    after
}

/// The source playlist `after` the reconnect against the one `before` the
/// drop (whose last part was `last_before`): the segment after the
/// discontinuity decodes with its own init, and the MSN and PDT continue.
/// Returns that segment.
pub fn check_discontinuity(
    f: &Findings,
    http: &Http,
    src: &str,
    before: &Fetched,
    last_before: (u64, u64),
    after: &Fetched,
    hist: &mut History,
) -> Segment {
    eprintln!("reconnected; playlist:\n{}", after.resp.text());
    check_playlist(f, &after.pl, src, now_unix());
    hist.add(f, &after.pl, src);
    let di = after
        .pl
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .unwrap();
    let dseg = after.pl.segments[di].clone();
    // The segment after the discontinuity (B-frames now) decodes with its own init.
    let (frames, key) = decode_segment(http, src, &after.pl, dseg.msn);
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
    dseg
}

/// The audio rendition has the discontinuity at the same MSN (4.4.4.3).
pub fn check_audio_discontinuity(f: &Findings, http: &Http, aud: &str, msn: u64) {
    let a = fetch_media(http, aud, "");
    let adi =
        a.pl.segments
            .iter()
            .find(|s| s.discontinuity)
            .map(|s| s.msn);
    f.check(
        adi == Some(msn),
        "audio has EXT-X-DISCONTINUITY at the same MSN",
        || format!("video at {msn}, audio at {adi:?}"),
    );
}

/// The stream still conforms over a few blocking reloads from `cur`.
pub fn check_blocking_reloads(
    f: &Findings,
    http: &Http,
    src: &str,
    mut cur: Fetched,
    hist: &mut History,
) {
    for _ in 0..10 {
        let (m, p) = cur.pl.next_part();
        cur = fetch_blocking(http, src, m, p);
        check_playlist(f, &cur.pl, src, now_unix());
        hist.add(f, &cur.pl, src);
    }
}

/// Gone for good, the publisher just killed: ENDLIST after `grace`
/// seconds, not before, in both renditions; then (informational) 404.
pub fn check_endlist_after_grace(
    f: &Findings,
    http: &Http,
    node: &Node,
    src: &str,
    aud: &str,
    grace: f64,
) {
    let gone = Instant::now();
    let mut ended = None;
    while gone.elapsed() < Duration::from_secs_f64(grace + 12.0) {
        let r = http.get(src);
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
            let a = http.get(aud);
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
        (http.get(src).status == 404).then_some(gone.elapsed())
    });
    eprintln!("404 after drop: {t404:?}");
}
