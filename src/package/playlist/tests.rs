//! Playlist text for live, delta, ended, discontinuous and gap playlists.

use super::*;

const PT: Duration = Duration::from_millis(202);

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn parts(msn: u64, n: u32) -> Vec<Part> {
    (0..n)
        .map(|i| Part {
            uri: format!("s1-{msn}.{i}.m4s"),
            duration: Duration::from_millis(200),
            independent: i % 5 == 0,
        })
        .collect()
}

fn head(msn: u64) -> SegmentHead {
    SegmentHead {
        msn,
        discontinuity: false,
        map_uri: "init-s1-0.mp4".into(),
        program_date_time: at(1_700_000_000_000 + (msn - 100) * 2000),
        date_ranges: Vec::new(),
    }
}

/// `n` two-second segments from MSN 100, plus an open segment of 3 parts.
fn live(n: u64) -> MediaPlaylist {
    let mut pl = MediaPlaylist::new(2, PT, 100);
    for msn in 100..100 + n {
        pl.segments.push(Segment {
            head: head(msn),
            uri: format!("s1-{msn}.m4s"),
            duration: Duration::from_secs(2),
            gap: false,
            parts: parts(msn, 10),
        });
    }
    let msn = 100 + n;
    pl.open = Some(OpenSegment {
        head: head(msn),
        parts: parts(msn, 3),
    });
    pl.preload_hint = Some(format!("s1-{msn}.3.m4s"));
    pl
}

fn report() -> Vec<RenditionReport> {
    vec![RenditionReport {
        uri: "../audio/index.m3u8".into(),
        last_msn: 105,
        last_part: Some(2),
    }]
}

#[test]
fn live_playlist() {
    let text = render_media(&live(5), None, &report(), false);
    let expected_head = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.606,CAN-SKIP-UNTIL=12.000,CAN-SKIP-DATERANGES=YES
#EXT-X-PART-INF:PART-TARGET=0.202
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI=\"init-s1-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.00000,
s1-100.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
";
    assert!(text.starts_with(expected_head), "{text}");
    let expected_tail = "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:30.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"s1-105.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"s1-105.1.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"s1-105.2.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-105.3.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=105,LAST-PART=2
";
    assert!(text.ends_with(expected_tail), "{text}");
    // Parts are listed for the segments within three target durations of
    // the end (102, 103, 104) and not for older ones.
    assert!(!text.contains("s1-101.0.m4s"));
    assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"s1-102.0.m4s\",INDEPENDENT=YES\n"));
    assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
    assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME").count(), 6);

    // The classic part of the text parses; m3u8-rs drops the LL-HLS tags.
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid playlist");
    assert_eq!(parsed.media_sequence, 100);
    assert_eq!(parsed.target_duration, 2);
    assert_eq!(parsed.segments.len(), 5);
    assert!(parsed.segments.iter().all(|s| s.duration == 2.0));
}

#[test]
fn delta_update_skips_segments_beyond_the_skip_boundary() {
    let pl = live(20);
    let text = render_media(&pl, Some(Skip::Segments), &[], false);
    // 20 segments of 2 s; the last 7 end within 12 s of the end.
    assert!(text.contains("#EXT-X-VERSION:9\n"));
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=13\n#EXT-X-MAP:URI=\"init-s1-0.mp4\"\n"), "{text}");
    assert!(!text.contains("s1-112.m4s"));
    assert!(text.contains("s1-113.m4s"));
    assert_eq!(text.matches("#EXTINF").count(), 7);

    let v2 = render_media(&pl, Some(Skip::SegmentsAndDateRanges), &[], false);
    assert!(v2.contains("#EXT-X-VERSION:10\n"));
    assert!(v2.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=13,RECENTLY-REMOVED-DATERANGES=\"\"\n"));

    // Nothing old enough to skip: the full playlist, no SKIP tag.
    let short = render_media(&live(5), Some(Skip::SegmentsAndDateRanges), &[], false);
    assert!(!short.contains("EXT-X-SKIP"));
    assert!(short.contains("#EXT-X-VERSION:9\n"));
}

#[test]
fn ended_playlist() {
    let mut pl = live(5);
    let open = pl.open.take().expect("open segment");
    pl.segments.push(Segment {
        head: open.head,
        uri: "s1-105.m4s".into(),
        duration: Duration::from_millis(600),
        gap: false,
        parts: open.parts,
    });
    pl.ended = true;
    let text = render_media(&pl, Some(Skip::Segments), &[], false);
    assert!(text.contains("#EXT-X-SERVER-CONTROL:PART-HOLD-BACK=0.606\n"));
    assert!(!text.contains("PRELOAD-HINT"));
    assert!(!text.contains("EXT-X-SKIP"), "skip is ignored once ended");
    assert!(
        text.ends_with("#EXTINF:0.60000,\ns1-105.m4s\n#EXT-X-ENDLIST\n"),
        "{text}"
    );
}

#[test]
fn discontinuity_with_new_init_and_a_gap() {
    let mut pl = live(3);
    pl.discontinuity_sequence = 4;
    pl.segments[1].gap = true;
    pl.segments[1].parts.clear();
    let open = pl.open.as_mut().expect("open segment");
    open.head.discontinuity = true;
    open.head.map_uri = "init-s2-1.mp4".into();
    open.parts[0].uri = "s2-103.0.m4s".into();
    let text = render_media(&pl, None, &[], false);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:4\n"));
    assert!(
        text.contains("#EXT-X-GAP\n#EXTINF:2.00000,\ns1-101.m4s\n"),
        "{text}"
    );
    assert!(text.contains(
        "s1-102.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-s2-1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z\n#EXT-X-PART:DURATION=0.20000,URI=\"s2-103.0.m4s\",INDEPENDENT=YES\n"
    ));
}

#[test]
fn part_and_segment_queries_follow_6_2_5_2() {
    let pl = live(3); // complete 100..=102 (10 parts each), open 103 with 3
    assert!(
        pl.has_part(99, 0),
        "older than the playlist: answer at once"
    );
    assert!(pl.has_part(102, 9));
    assert!(
        pl.has_part(102, 10),
        "past the last part of 102 is 103.0, which exists"
    );
    assert!(pl.has_part(103, 2));
    assert!(!pl.has_part(103, 3));
    assert!(!pl.has_part(104, 0));
    assert!(pl.has_segment(102));
    assert!(!pl.has_segment(103));
    assert_eq!(pl.last_msn(), Some(102));
    assert_eq!(pl.next_msn(), 103);
    assert_eq!(pl.last_part(), Some((103, 2)));
}

#[test]
fn program_date_time_is_utc_with_milliseconds() {
    assert_eq!(program_date_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        program_date_time(at(951_782_400_007)),
        "2000-02-29T00:00:00.007Z"
    );
    assert_eq!(
        program_date_time(at(4_102_444_799_999)),
        "2099-12-31T23:59:59.999Z"
    );
}

#[test]
fn multivariant_playlist() {
    let text = render_master(
        true,
        &[Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 3_200_000,
            average_bandwidth: 2_900_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(29.97002997),
            audio_group: Some("audio".into()),
        }],
        &[AudioMedia {
            group_id: "audio".into(),
            name: "audio".into(),
            uri: "audio/index.m3u8".into(),
            default: true,
        }],
    );
    assert_eq!(
        text,
        "#EXTM3U
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES
#EXT-X-STREAM-INF:BANDWIDTH=3200000,AVERAGE-BANDWIDTH=2900000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.97,AUDIO=\"audio\"
source/index.m3u8
"
    );
    let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).expect("valid playlist");
    assert_eq!(parsed.variants[0].bandwidth, 3_200_000);
    assert_eq!(
        parsed.alternatives[0].uri.as_deref(),
        Some("audio/index.m3u8")
    );
}

#[test]
fn a_rendition_report_never_names_part_zero_after_the_first_segment() {
    let mut pl = live(3);
    assert_eq!(pl.reported_part(), Some((103, 2)));
    pl.open = Some(OpenSegment {
        head: head(103),
        parts: parts(103, 1),
    });
    // Part 0 of 103 is reported as the last part of 102, which a blocking
    // reload for the part after it finds at once.
    assert_eq!(pl.last_part(), Some((103, 0)));
    assert_eq!(pl.reported_part(), Some((102, 9)));
    assert!(pl.has_part(102, 10));
    // With nothing before it, part 0 is all there is to report.
    let mut first = MediaPlaylist::new(2, PT, 0);
    first.open = Some(OpenSegment {
        head: head(100),
        parts: parts(100, 1),
    });
    assert_eq!(first.reported_part(), Some((100, 0)));
}

#[test]
fn durations_round_down_to_ten_microseconds() {
    // Nine AAC frames at 44.1 kHz: 0.2089795... s.
    assert_eq!(secs5(Duration::from_nanos(208_979_591)), "0.20897");
    assert_eq!(secs5(Duration::from_secs(2)), "2.00000");
    assert_eq!(secs5(Duration::from_nanos(9_999)), "0.00000");
    assert_eq!(secs5(Duration::from_millis(61_234)), "61.23400");
}

/// `n` complete segments whose successor has no part yet.
fn just_completed(n: u64) -> MediaPlaylist {
    let mut pl = live(n);
    pl.open = Some(OpenSegment {
        head: head(100 + n),
        parts: Vec::new(),
    });
    pl.preload_hint = Some(format!("s1-{}.0.m4s", 100 + n));
    pl
}

#[test]
fn the_newest_segment_is_listed_complete_once_its_successor_has_a_part() {
    let held = render_media(&just_completed(3), None, &[], true);
    assert!(held.contains("#EXTINF:2.00000,\ns1-101.m4s\n"), "{held}");
    assert!(!held.contains("s1-102.m4s\n"), "{held}");
    assert!(
        held.contains("#EXT-X-PART:DURATION=0.20000,URI=\"s1-102.9.m4s\"\n"),
        "{held}"
    );
    assert!(
        held.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-103.0.m4s\"\n"),
        "{held}"
    );
    assert!(
        !held.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26"),
        "{held}"
    );
    // Asked not to hold, or once the next segment has a part, it is complete.
    let plain = render_media(&just_completed(3), None, &[], false);
    assert!(plain.contains("#EXTINF:2.00000,\ns1-102.m4s\n"), "{plain}");
    assert!(
        plain.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-103.0.m4s\"\n"),
        "{plain}"
    );
    let next = render_media(&live(3), None, &[], true);
    assert!(next.contains("#EXTINF:2.00000,\ns1-102.m4s\n"), "{next}");
    assert!(next.contains("PRELOAD-HINT"), "{next}");
}

#[test]
fn the_first_segment_a_gap_and_an_ended_playlist_are_never_held() {
    assert!(!just_completed(1).holds_newest());
    assert!(just_completed(2).holds_newest());
    let mut gap = just_completed(2);
    if let Some(s) = gap.segments.last_mut() {
        s.gap = true;
        s.parts.clear();
    }
    assert!(!gap.holds_newest());
    let mut paused = just_completed(2);
    paused.preload_hint = None;
    assert!(!paused.holds_newest());
    let mut ended = just_completed(2);
    ended.ended = true;
    ended.open = None;
    assert!(!ended.holds_newest());
    let text = render_media(&ended, None, &[], true);
    assert!(text.contains("s1-101.m4s\n#EXT-X-ENDLIST"), "{text}");
}
