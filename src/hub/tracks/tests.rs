use super::*;
use crate::media::TrackKind;
use crate::transcode::frame::Size;
use bytes::Bytes;

use crate::package::testmedia::sized_video_params as params;

/// Frame `n` of a 30 fps track with a keyframe every `gop` frames from `first_key`.
fn frame(n: i64, gop: i64, first_key: i64) -> Packet {
    Packet {
        track: TrackKind::Video,
        dts: n * 3000,
        pts: n * 3000,
        keyframe: n >= first_key && (n - first_key) % gop == 0,
        data: Bytes::from(vec![0u8; 1000]),
    }
}

fn standard_plan(covered: &[u32]) -> Vec<Rung> {
    [
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
        ("160p", 284, 160),
    ]
    .into_iter()
    .filter(|r| !covered.contains(&r.2))
    .map(|(name, w, h)| Rung {
        name: name.into(),
        size: Size::new(w, h),
        bitrate_bps: 1_000_000,
    })
    .collect()
}

fn names(t: &Tracks) -> Vec<(String, Slot)> {
    t.ladder()
        .iter()
        .map(|e| (e.decl.name.clone(), e.slot))
        .collect()
}

#[test]
fn fill_passes_tracks_through_and_transcodes_the_rest_top_down() {
    let mut t = Tracks::new(TrackUse::Fill);
    assert!(t.config(1, params(1280, 720)));
    assert!(t.config(2, params(640, 360)));
    assert_eq!(t.covered_heights(), vec![720, 360]);
    t.set_plan(standard_plan(&t.covered_heights()));
    t.compose();
    assert_eq!(
        names(&t),
        vec![
            ("720p".into(), Slot::Track(1)),
            ("480p".into(), Slot::Planned(0)),
            ("360p".into(), Slot::Track(2)),
            ("160p".into(), Slot::Planned(1)),
        ]
    );
    assert_eq!(t.index_of_planned(1), Some(3));
    assert_eq!(t.packet(2, &frame(0, 60, 0)), Verdict::Forward(2));
    // A track announced after the plan, at a height the pipeline makes, is not a second rung.
    assert!(!t.config(3, params(854, 480)));
    assert_eq!(t.packet(3, &frame(0, 60, 0)), Verdict::Ignore);
    let info = t.infos();
    assert_eq!(info[2].rendition, None);
    assert!(
        info[2]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("already"))
    );
}

#[test]
fn passthrough_only_never_transcodes_and_transcode_ignores_tracks() {
    let mut t = Tracks::new(TrackUse::PassthroughOnly);
    assert!(!t.transcodes());
    assert!(t.config(1, params(640, 360)));
    t.compose();
    assert_eq!(names(&t), vec![("360p".into(), Slot::Track(1))]);

    let mut t = Tracks::new(TrackUse::Transcode);
    assert!(t.transcodes());
    assert!(!t.config(1, params(640, 360)));
    assert!(t.covered_heights().is_empty());
    t.set_plan(standard_plan(&[]));
    t.compose();
    assert!(names(&t).iter().all(|(_, s)| matches!(s, Slot::Planned(_))));
}

#[test]
fn aligned_tracks_stay_whatever_order_their_frames_come_in() {
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.config(2, params(320, 180));
    t.compose();
    for n in 0..200 {
        let src = frame(n, 60, 0);
        // Track 1 before the source, track 2 after it: both orders occur.
        assert_eq!(t.packet(1, &frame(n, 60, 0)), Verdict::Forward(0));
        if src.keyframe {
            assert!(t.source_keyframe(src.pts).is_empty(), "frame {n}");
        }
        // Extra keyframes of a track are harmless.
        assert_eq!(t.packet(2, &frame(n, 30, 0)), Verdict::Forward(1));
    }
}

#[test]
fn a_track_whose_frame_at_a_source_keyframe_is_not_one_is_dropped() {
    // The track's GOPs start 10 frames late: seen when its frame arrives after the source's.
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.compose();
    assert!(t.source_keyframe(0).is_empty());
    assert!(matches!(t.packet(1, &frame(0, 60, 0)), Verdict::Forward(_)));
    for n in 1..60 {
        t.packet(1, &frame(n, 60, 10));
    }
    assert!(t.source_keyframe(60 * 3000).is_empty());
    match t.packet(1, &frame(60, 60, 10)) {
        Verdict::Dropped(why) => assert!(why.contains("not a keyframe"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.packet(1, &frame(61, 60, 10)), Verdict::Ignore);
    assert!(t.compose().is_empty());
    let info = &t.infos()[0];
    assert!(
        info.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("dropped"))
    );

    // Seen when the source's keyframe arrives after the track's frame.
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.compose();
    for n in 0..=60 {
        t.packet(1, &frame(n, 60, 10));
    }
    assert_eq!(t.source_keyframe(60 * 3000).len(), 1);
}

#[test]
fn a_track_stepping_over_a_source_keyframe_is_dropped() {
    // 15 fps against a 30 fps source, with the source's keyframe on an odd frame.
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.compose();
    t.source_keyframe(31 * 3000);
    t.packet(1, &frame(30, 1000, 0));
    assert!(matches!(
        t.packet(1, &frame(32, 1000, 0)),
        Verdict::Dropped(_)
    ));
    // A keyframe after a hole (a dropped stretch of media) starts afresh.
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.compose();
    t.source_keyframe(31 * 3000);
    t.packet(1, &frame(30, 1000, 0));
    assert!(matches!(
        t.packet(1, &frame(40, 10, 0)),
        Verdict::Forward(_)
    ));
}

#[test]
fn rates_are_measured_per_track() {
    let mut t = Tracks::new(TrackUse::Fill);
    t.config(1, params(640, 360));
    t.compose();
    for n in 0..90 {
        t.packet(1, &frame(n, 30, 0));
    }
    let info = &t.infos()[0];
    assert_eq!(info.video.frame_rate, Some(30.0));
    assert_eq!(info.bitrate_bps, Some(240_000));
    assert_eq!(info.rendition.as_deref(), Some("360p"));
}
