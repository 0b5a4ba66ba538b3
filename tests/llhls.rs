//! LL-HLS conformance of a live channel, fed by a live-paced ffmpeg publisher.
//!
//! Rules are cited from draft-pantos-hls-rfc8216bis (section numbers of
//! draft 16+, "HTTP Live Streaming 2nd Edition") and Apple's "HTTP Live
//! Streaming (HLS) authoring specification for Apple devices" (written
//! "Apple HLS authoring" below). Violations are collected (common::Findings)
//! and reported together at the end, so one run shows every broken rule.
//!
//! The tests here read as scripts; each family of rules lives in its own
//! module under `tests/llhls/`:
//!
//! - `rules`: headers, and everything one media playlist must satisfy;
//! - `history`: what must hold across reloads of one playlist;
//! - `master`: the multivariant playlist and the init sections;
//! - `follow`: the live sampling loop (plain and blocking reloads, rendition
//!   reports) and preload hints;
//! - `requests`: `_HLS_msn` alone, 400s, the blocked-requests gauge, delta
//!   updates;
//! - `media`: fMP4 segments and parts, decoded with ffprobe;
//! - `status`: 404 for channels that are not live, /metrics;
//! - `reconnect`: the phases of the reconnect test.
//!
//! (`#[path]` keeps cargo from taking those files for test targets of their own.)

mod common;
#[path = "llhls/follow.rs"]
mod follow;
#[path = "llhls/history.rs"]
mod history;
#[path = "llhls/master.rs"]
mod master;
#[path = "llhls/media.rs"]
mod media;
#[path = "llhls/reconnect.rs"]
mod reconnect;
#[path = "llhls/requests.rs"]
mod requests;
#[path = "llhls/rules.rs"]
mod rules;
#[path = "llhls/status.rs"]
mod status;

use common::*;
use history::History;
use rules::check_playlist;
use std::time::{Duration, Instant};

#[test]
fn llhls_live_conformance() {
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel("conformance");
    let idle = node.create_channel("idle");

    // 404 for an unknown channel and for a channel that is not live.
    status::check_not_live_404(&f, &http, &node, &idle);

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

    // Multivariant playlist (4.4.6), then the init sections and what they imply.
    let master_url = node.master_url(&ch.id);
    let va = master::check_multivariant(&f, &http, &master_url, &src_url, &aud_url);
    let inits = master::check_inits(&f, &http, &src_url, &aud_url, &first.pl, &va);
    // Follow the live edge with blocking reloads for ~14 s; preload hints.
    let (hs, ha) = follow::follow_live_edge(&f, &http, &src_url, &aud_url);
    follow::check_preload_hints(&f, &http, &src_url);
    // _HLS_msn without _HLS_part, a held request in the gauge, 400s, delta updates.
    let now_pl = requests::check_msn_alone(&f, &http, &src_url);
    requests::check_blocked_requests_gauge(&f, &http, &node, &src_url);
    requests::check_bad_requests(&f, &http, &src_url);
    requests::check_delta_updates(&f, &http, &src_url, &now_pl);
    // fMP4 of a complete segment and its parts, decoded by ffprobe; metrics.
    media::check_latest_segments(&f, &http, &node.data_dir, &src_url, &aud_url, &inits);
    status::check_metrics(&f, &node, &ch);

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

    let mut hist = History::default();

    // Without B-frames first, with B-frames after the reconnect (an encoder
    // restarted with other settings: exactly what a discontinuity is for).
    let no_b = PubOpts {
        bframes: false,
        ..Default::default()
    };
    let mut p1 = Publisher::start(&node.rtmp_url(&ch.stream_key), &no_b, &node.data_dir);
    node.attach_log(&p1.log_path);
    let before = reconnect::check_before_drop(&f, &http, &src, &mut hist);
    p1.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let last_before = reconnect::check_during_grace(&f, &http, &src, &mut hist);

    let mut p2 = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&p2.log_path);
    // Wait for two complete segments after a discontinuity.
    let after = reconnect::wait_discontinuity(&http, &src);
    let dseg =
        reconnect::check_discontinuity(&f, &http, &src, &before, last_before, &after, &mut hist);
    reconnect::check_audio_discontinuity(&f, &http, &aud, dseg.msn);
    reconnect::check_blocking_reloads(&f, &http, &src, after, &mut hist);
    eprintln!(
        "reconnect: first segment after the drop is msn {} ({:?} after kill)",
        dseg.msn,
        killed.elapsed()
    );

    // Gone for good: ENDLIST after the grace period, not before.
    p2.kill();
    reconnect::check_endlist_after_grace(&f, &http, &node, &src, &aud, grace);
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
