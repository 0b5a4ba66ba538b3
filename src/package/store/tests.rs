//! Store behaviour: window, blocking reload (400/503/release), hinted parts,
//! rendition reports, multivariant playlist, new playlists after an end.

use super::*;
use crate::metrics::METRICS;
use crate::package::playlist::Skip;
use std::time::{Duration, UNIX_EPOCH};

const PT: Duration = Duration::from_millis(202);

fn src() -> Arc<str> {
    Arc::from("source")
}

fn aud() -> Arc<str> {
    Arc::from("audio")
}

fn started(sid: &str, next_msn: u64, new_playlist: bool) -> Arc<ChannelStore> {
    let s = ChannelStore::new("ch", &PackageConfig::default());
    start(&s, sid, next_msn, new_playlist);
    s
}

fn start(s: &ChannelStore, sid: &str, next_msn: u64, new_playlist: bool) {
    s.apply(vec![
        Update::StreamStart {
            sid: sid.into(),
            part_target: PT,
            new_playlist,
            next_msn,
        },
        Update::Init {
            rendition: src(),
            info: RenditionInfo::Video {
                codecs: "avc1.64001f".into(),
                width: 1280,
                height: 720,
            },
            uri: names::init(sid, 0),
            bytes: Bytes::from_static(b"vinit"),
        },
        Update::Init {
            rendition: aud(),
            info: RenditionInfo::Audio {
                codecs: "mp4a.40.2".into(),
            },
            uri: names::init(sid, 0),
            bytes: Bytes::from_static(b"ainit"),
        },
    ]);
}

fn seg_start(s: &ChannelStore, r: &Arc<str>, msn: u64, discontinuity: bool) {
    s.apply(vec![Update::SegmentStart {
        rendition: r.clone(),
        msn,
        discontinuity,
        program_date_time: UNIX_EPOCH + Duration::from_secs(2 * msn),
        map_uri: "init".into(),
    }]);
}

fn part(s: &ChannelStore, r: &Arc<str>, msn: u64, independent: bool) {
    s.apply(vec![Update::Part {
        rendition: r.clone(),
        msn,
        duration: Duration::from_millis(200),
        independent,
        bytes: Bytes::from(vec![msn as u8; 1000]),
    }]);
}

fn seg_end(s: &ChannelStore, r: &Arc<str>, msn: u64) {
    s.apply(vec![Update::SegmentEnd {
        rendition: r.clone(),
        msn,
        duration: Duration::from_secs(2),
        gap: false,
        samples: 60,
    }]);
}

/// A whole two-second segment of ten parts in both renditions.
fn segment(s: &ChannelStore, msn: u64) {
    for r in [src(), aud()] {
        seg_start(s, &r, msn, false);
        for i in 0..10 {
            part(s, &r, msn, i == 0);
        }
        seg_end(s, &r, msn);
    }
}

fn req(msn: Option<u64>, part: Option<u32>) -> PlaylistRequest {
    PlaylistRequest {
        msn,
        part,
        skip: None,
    }
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_refused_at_once() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    segment(&s, 1);
    let cases = [
        (req(None, Some(0)), "part without msn"),
        (req(Some(4), None), "msn beyond last + 2"),
        (req(Some(2), Some(15)), "part beyond the advance part limit"),
    ];
    for (r, why) in cases {
        let t = tokio::time::Instant::now();
        let got = s.media_playlist("source", r).await;
        assert!(
            matches!(got, Err(StoreError::BadRequest(_))),
            "{why}: {got:?}"
        );
        assert_eq!(
            t.elapsed(),
            Duration::ZERO,
            "{why} is answered without blocking"
        );
    }
    assert_eq!(
        s.media_playlist("nope", req(None, None)).await,
        Err(StoreError::NotFound)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_nothing_satisfies_gets_503_after_three_target_durations() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    let t = tokio::time::Instant::now();
    let got = s.media_playlist("source", req(Some(2), None)).await;
    assert_eq!(got, Err(StoreError::Unavailable));
    assert_eq!(t.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_blocked_reload_is_released_by_the_part_it_asked_for() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    seg_start(&s, &src(), 1, false);
    for i in 0..3 {
        part(&s, &src(), 1, i == 0);
    }
    // Parts 0-2 of segment 1 exist: part 2 is answered at once.
    let now = s
        .media_playlist("source", req(Some(1), Some(2)))
        .await
        .expect("playlist");
    assert!(now.contains("s1-1.2.m4s"));

    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.media_playlist("source", req(Some(1), Some(3))).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "part 3 does not exist yet");
    assert!(METRICS.blocked_requests.get() >= 1);
    part(&s, &src(), 1, false);
    let text = waiting
        .await
        .expect("task")
        .expect("released with a playlist");
    assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"s1-1.3.m4s\"\n"));
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-1.4.m4s\"\n"));
    // The audio rendition is reported as of the same moment.
    assert!(
        text.contains(
            "#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=0,LAST-PART=9\n"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_part_past_the_last_of_a_segment_means_the_next_segment() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.media_playlist("source", req(Some(0), Some(10))).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    seg_start(&s, &src(), 1, false);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "segment 1 has no part yet");
    part(&s, &src(), 1, true);
    assert!(waiting.await.expect("task").is_ok());
    // _HLS_msn alone waits for the whole segment.
    let whole = tokio::spawn({
        let s = s.clone();
        async move { s.media_playlist("source", req(Some(1), None)).await }
    });
    tokio::task::yield_now().await;
    assert!(!whole.is_finished());
    seg_end(&s, &src(), 1);
    assert!(
        whole
            .await
            .expect("task")
            .expect("playlist")
            .contains("s1-1.m4s")
    );
}

#[tokio::test(start_paused = true)]
async fn the_end_releases_waiters_and_ignores_directives() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.media_playlist("source", req(Some(1), Some(0))).await }
    });
    tokio::task::yield_now().await;
    s.apply(vec![Update::End]);
    let text = waiting.await.expect("task").expect("playlist");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!text.contains("PRELOAD-HINT"));
    let far = s.media_playlist("source", req(Some(99), Some(0))).await;
    assert!(far.is_ok(), "directives are ignored once ended");
}

#[tokio::test(start_paused = true)]
async fn hinted_parts_block_and_others_are_not_found() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    // Segment 1 has not started: its part 0 is the preload hint.
    let hinted = tokio::spawn({
        let s = s.clone();
        async move { s.media_file("source", "s1-1.0.m4s").await }
    });
    tokio::task::yield_now().await;
    assert!(!hinted.is_finished());
    seg_start(&s, &src(), 1, false);
    part(&s, &src(), 1, true);
    let f = hinted.await.expect("task").expect("part");
    assert_eq!(f.content_type, "video/mp4");
    assert_eq!(f.bytes.len(), 1000);

    let not_found = [
        "s2-1.0.m4s",  // another stream's name
        "s1-9.0.m4s",  // far future
        "s1-0.10.m4s", // past the end of a complete segment
        "s1-1.m4s",    // segment still in progress
        "init-s1-7.mp4",
        "index.m3u8",
    ];
    for f in not_found {
        assert_eq!(
            s.media_file("source", f).await,
            Err(StoreError::NotFound),
            "{f}"
        );
    }
    let seg = s.media_file("source", "s1-0.m4s").await.expect("segment");
    assert_eq!(
        seg.bytes.len(),
        10_000,
        "a segment is its parts back to back"
    );
    assert_eq!(
        s.media_file("audio", "init-s1-0.mp4")
            .await
            .expect("init")
            .content_type,
        "audio/mp4"
    );

    // The publisher goes away: a waiting hinted request gets 404, not a hang.
    let orphan = tokio::spawn({
        let s = s.clone();
        async move { s.media_file("source", "s1-1.1.m4s").await }
    });
    tokio::task::yield_now().await;
    s.apply(vec![Update::Pause]);
    assert_eq!(orphan.await.expect("task"), Err(StoreError::NotFound));
    let text = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(
        !text.contains("PRELOAD-HINT"),
        "nothing is hinted while no stream produces"
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_and_media_is_evicted() {
    let s = started("s1", 0, true);
    for msn in 0..30 {
        segment(&s, msn);
    }
    let text = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10\n"));
    // The newest (MSN 29) is shown open until MSN 30 has a part.
    assert_eq!(text.matches("#EXTINF").count(), 19);
    assert!(text.contains("s1-29.9.m4s") && !text.contains("s1-29.m4s"));
    // Just out of the playlist: still downloadable for a while.
    assert!(s.media_file("source", "s1-8.m4s").await.is_ok());
    assert_eq!(
        s.media_file("source", "s1-2.m4s").await,
        Err(StoreError::NotFound)
    );
    // Parts of old segments are released; recent ones kept.
    assert_eq!(
        s.media_file("source", "s1-15.0.m4s").await,
        Err(StoreError::NotFound)
    );
    assert!(s.media_file("source", "s1-29.9.m4s").await.is_ok());

    let delta = s
        .media_playlist(
            "source",
            PlaylistRequest {
                skip: Some(Skip::Segments),
                ..req(None, None)
            },
        )
        .await
        .expect("playlist");
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=13\n"));
}

#[tokio::test(start_paused = true)]
async fn a_discontinuity_sliding_out_bumps_the_discontinuity_sequence() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    s.apply(vec![Update::Pause]);
    start(&s, "s2", 1, false);
    for r in [src(), aud()] {
        seg_start(&s, &r, 1, true);
        part(&s, &r, 1, true);
        seg_end(&s, &r, 1);
    }
    let text = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"));
    assert!(
        text.contains("s2-1.0.m4s"),
        "names carry the new stream's id"
    );
    for msn in 2..22 {
        segment(&s, msn);
    }
    let text = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{text}"
    );
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
}

#[tokio::test(start_paused = true)]
async fn a_new_stream_after_the_end_starts_a_new_playlist_without_reusing_names() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    segment(&s, 1);
    s.apply(vec![Update::End]);
    start(&s, "s2", 2, true);
    segment(&s, 2);
    let text = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{text}"
    );
    assert!(!text.contains("ENDLIST"));
    assert!(!text.contains("s1-"));
    // Players finishing the old stream can still fetch it.
    assert!(s.media_file("source", "s1-1.m4s").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn master_playlist_waits_for_a_measured_segment() {
    let s = started("s1", 0, true);
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.master_playlist().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    segment(&s, 0);
    let text = waiting.await.expect("task").expect("master");
    assert_eq!(
        text,
        "#EXTM3U
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES
#EXT-X-STREAM-INF:BANDWIDTH=80000,AVERAGE-BANDWIDTH=80000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30,AUDIO=\"audio\"
source/index.m3u8
"
    );
    assert_eq!(s.renditions(), ["source", "audio"]);
    // No stream at all: a few seconds, then 503.
    let empty = ChannelStore::new("ch2", &PackageConfig::default());
    assert_eq!(empty.master_playlist().await, Err(StoreError::Unavailable));
}

#[tokio::test(start_paused = true)]
async fn late_and_skipping_renditions_keep_the_channel_numbering() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    s.apply(vec![Update::Pause]);
    start(&s, "s2", 1, false);
    for r in [src(), aud()] {
        seg_start(&s, &r, 1, true);
        part(&s, &r, 1, true);
        seg_end(&s, &r, 1);
    }
    segment(&s, 2);
    // A rung declared now starts at MSN 3, after the discontinuity: its
    // sequence must count it as the others do.
    let rung: Arc<str> = Arc::from("480p");
    s.apply(vec![Update::Declare {
        rendition: rung.clone(),
        width: 854,
        height: 480,
        bitrate_bps: 1_000_000,
        rank: 1,
    }]);
    for msn in 3..7 {
        segment(&s, msn);
        // The rung's encoder produced nothing for 4 and 5.
        if msn == 3 || msn == 6 {
            seg_start(&s, &rung, msn, false);
            part(&s, &rung, msn, true);
            seg_end(&s, &rung, msn);
        }
    }
    let text = s
        .media_playlist("480p", req(None, None))
        .await
        .expect("playlist");
    let source = s
        .media_playlist("source", req(None, None))
        .await
        .expect("playlist");
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{text}"
    );
    assert!(source.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
    // MSNs 4 and 5 were never produced: listed as gaps, so 6 is still 6.
    assert_eq!(
        text.matches("#EXT-X-GAP\n#EXTINF:2.00000,\n").count(),
        2,
        "{text}"
    );
    assert!(text.contains("s2-6.0.m4s"), "{text}");
    s.apply(vec![Update::Retire {
        rendition: rung.clone(),
    }]);
    assert_eq!(s.renditions(), ["source", "audio"]);
}

#[tokio::test(start_paused = true)]
async fn waiters_released_by_one_update_share_one_rendering_per_form() {
    let s = started("s1", 0, true);
    segment(&s, 0);
    seg_start(&s, &src(), 1, false);
    part(&s, &src(), 1, true);
    let wait = |skip, encoding| {
        let s = s.clone();
        tokio::spawn(async move {
            let r = PlaylistRequest {
                msn: Some(1),
                part: Some(1),
                skip,
            };
            s.playlist("source", r, encoding).await
        })
    };
    let plain: Vec<_> = (0..50).map(|_| wait(None, Encoding::Identity)).collect();
    let gz: Vec<_> = (0..50).map(|_| wait(None, Encoding::Gzip)).collect();
    let delta: Vec<_> = (0..50)
        .map(|_| wait(Some(Skip::Segments), Encoding::Identity))
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(plain.iter().all(|w| !w.is_finished()));
    part(&s, &src(), 1, false);
    let mut forms = Vec::new();
    for group in [plain, gz, delta] {
        let mut got = Vec::new();
        for w in group {
            got.push(w.await.expect("task").expect("released"));
        }
        // One rendering: every waiter holds the very same bytes.
        assert!(
            got.iter()
                .all(|b| b.as_ptr() == got[0].as_ptr() && b.len() == got[0].len())
        );
        forms.push(got[0].clone());
    }
    let text = String::from_utf8_lossy(&forms[0]).into_owned();
    assert!(text.contains("s1-1.1.m4s"), "{text}");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&forms[1][..]),
        &mut unzipped,
    )
    .expect("gzip");
    assert_eq!(
        unzipped, text,
        "the gzip form is the plain form, compressed"
    );
    assert_ne!(forms[0].as_ptr(), forms[2].as_ptr());
    // A later request in the same form, with nothing new, gets them too.
    let again = s
        .playlist("source", req(Some(1), Some(1)), Encoding::Identity)
        .await
        .expect("playlist");
    assert_eq!(again.as_ptr(), forms[0].as_ptr());
}

#[test]
fn the_parking_lot_refuses_past_its_size_and_frees_on_drop() {
    let lot = ParkingLot::new(2);
    let a = lot.enter().expect("first");
    let b = lot.enter().expect("second");
    assert_eq!(lot.enter().err(), Some(StoreError::Busy));
    drop(a);
    let c = lot.enter().expect("a place came free");
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn a_request_past_the_node_cap_is_refused_at_once_and_one_that_needs_no_wait_is_not() {
    let lot: &'static ParkingLot = Box::leak(Box::new(ParkingLot::new(1)));
    let s = ChannelStore::parked_in("ch", &PackageConfig::default(), lot);
    start(&s, "s1", 0, true);
    segment(&s, 0);
    seg_start(&s, &src(), 1, false);
    part(&s, &src(), 1, true);
    let parked = tokio::spawn({
        let s = s.clone();
        async move {
            s.playlist("source", req(Some(1), Some(3)), Encoding::Identity)
                .await
        }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!parked.is_finished());
    let started = tokio::time::Instant::now();
    let refused = s.media_file("source", "s1-1.4.m4s").await;
    assert_eq!(refused, Err(StoreError::Busy));
    let refused = s
        .playlist("source", req(Some(1), Some(2)), Encoding::Gzip)
        .await;
    assert_eq!(refused, Err(StoreError::Busy));
    assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
    // A request that is answered at once never parks, so never counts.
    assert!(
        s.playlist("source", req(Some(1), Some(0)), Encoding::Identity)
            .await
            .is_ok()
    );
    part(&s, &src(), 1, false);
    part(&s, &src(), 1, false);
    part(&s, &src(), 1, false);
    assert!(parked.await.expect("task").is_ok());
    // Its place is free again.
    let again = tokio::spawn({
        let s = s.clone();
        async move {
            s.playlist("source", req(Some(1), Some(5)), Encoding::Identity)
                .await
        }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!again.is_finished(), "parked, not refused");
    part(&s, &src(), 1, false);
    part(&s, &src(), 1, false);
    assert!(again.await.expect("task").is_ok());
}
