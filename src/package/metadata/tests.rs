use super::*;
use crate::package::playlist::{
    MediaPlaylist, OpenSegment, Segment, SegmentHead, Skip, date_range, render_media,
};
use mp4_atom::Decode as _;
use std::time::UNIX_EPOCH;

fn event(id: u32, payload: Payload, at: u64) -> TimedMetadata {
    TimedMetadata {
        id,
        payload,
        duration: None,
        at,
        date: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
    }
}

#[test]
fn id3_text_is_one_utf8_txxx_frame_with_synchsafe_sizes() {
    let tag = id3(&Payload::Text("héllo".into()));
    let body_len = 2 + "héllo".len();
    let mut want = b"ID3\x04\x00\x00".to_vec();
    want.extend_from_slice(&[0, 0, 0, (10 + body_len) as u8]);
    want.extend_from_slice(b"TXXX");
    want.extend_from_slice(&[0, 0, 0, body_len as u8, 0, 0, 0x03, 0x00]);
    want.extend_from_slice("héllo".as_bytes());
    assert_eq!(tag, want);
}

#[test]
fn id3_bytes_are_a_priv_frame_and_large_sizes_are_synchsafe() {
    let data = vec![0xAB; 1024];
    let tag = id3(&Payload::Bytes(data.clone()));
    let body = PRIV_OWNER.len() + 1 + 1024;
    // 1030 = 8 * 128 + 6: synchsafe bytes 0, 0, 8, 6.
    assert_eq!(body, 1030);
    assert_eq!(&tag[14..18], &[0, 0, 8, 6]);
    assert_eq!(&tag[6..10], &synchsafe(body + 10));
    assert_eq!(&tag[10..14], b"PRIV");
    assert_eq!(&tag[20..25], PRIV_OWNER.as_bytes());
    assert_eq!(tag[25], 0);
    assert_eq!(&tag[26..], &data[..]);
}

#[test]
fn emsg_is_version_1_with_the_aom_id3_scheme() {
    let mut ev = event(7, Payload::Text("hi".into()), 90_000);
    ev.duration = Some(Duration::from_millis(1500));
    let bytes = emsg(&ev, 48_000, 48_000).expect("writes");
    assert_eq!(&bytes[4..8], b"emsg");
    assert_eq!(bytes[8], 1, "version 1");
    let parsed = Emsg::decode(&mut &bytes[..]).expect("parses");
    assert_eq!(parsed.timescale, 48_000);
    assert_eq!(parsed.presentation_time, EmsgTimestamp::Absolute(48_000));
    assert_eq!(parsed.event_duration, 72_000);
    assert_eq!(parsed.id, 7);
    assert_eq!(parsed.scheme_id_uri, ID3_SCHEME);
    assert_eq!(parsed.value, "");
    assert_eq!(parsed.message_data, id3(&ev.payload));
    ev.duration = None;
    let parsed = Emsg::decode(&mut &emsg(&ev, 90_000, 1).expect("writes")[..]).expect("parses");
    assert_eq!(parsed.event_duration, u32::MAX, "unknown duration");
}

#[test]
fn board_places_an_event_once_per_rendition_at_the_part_reaching_its_time() {
    let mut b = Board::default();
    let id = b.next_id();
    b.add(event(id, Payload::Text("x".into()), 180_000))
        .expect("room");
    let v: Arc<str> = Arc::from("source");
    let a: Arc<str> = Arc::from("audio");
    // A part ending before the time carries nothing.
    assert!(b.take(&v, 90_000, 160_000, 180_000).is_empty());
    let got = b.take(&v, 90_000, 180_000, 198_000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 180_000);
    assert!(b.take(&v, 90_000, 198_000, 216_000).is_empty());
    // Audio at 48 kHz: 2 s is sample 96000, inside this part.
    let got = b.take(&a, 48_000, 95_000, 96_500);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 96_000);
    // A rung whose part starts after the time carries it at its start.
    let r: Arc<str> = Arc::from("360p");
    let got = b.take(&r, 90_000, 181_000, 199_000);
    assert_eq!(got[0].1, 181_000);
}

#[test]
fn board_refuses_past_a_few_pending_events() {
    let mut b = Board::default();
    for _ in 0..MAX_PENDING {
        let id = b.next_id();
        b.add(event(id, Payload::Text("x".into()), 0))
            .expect("room");
    }
    let id = b.next_id();
    assert_eq!(
        b.add(event(id, Payload::Text("x".into()), 0)),
        Err(MetadataRefusal::Backlog)
    );
}

#[test]
fn daterange_carries_text_quoted_and_bytes_as_hex() {
    let mut w = String::new();
    let mut ev = event(3, Payload::Text("goal!".into()), 0);
    ev.duration = Some(Duration::from_secs(2));
    date_range(&mut w, &DateRange::of(&ev));
    assert_eq!(
        w,
        "#EXT-X-DATERANGE:ID=\"rungs-3\",CLASS=\"rungs.metadata\",START-DATE=\"2023-11-14T22:13:20.250Z\",DURATION=2.000,X-RUNGS-TEXT=\"goal!\"\n"
    );
    let mut w = String::new();
    date_range(
        &mut w,
        &DateRange::of(&event(4, Payload::Bytes(vec![0, 0xfe]), 0)),
    );
    assert!(w.ends_with(",X-RUNGS-DATA=0x00FE\n"), "{w}");
    // A quote cannot be in a quoted-string: such text goes as hex.
    let mut w = String::new();
    date_range(
        &mut w,
        &DateRange::of(&event(5, Payload::Text("a\"b".into()), 0)),
    );
    assert!(w.ends_with(",X-RUNGS-DATA=0x612262\n"), "{w}");
}

/// `n` two-second segments from MSN 0, the second one with a date range.
fn playlist(n: u64) -> MediaPlaylist {
    let mut pl = MediaPlaylist::new(2, Duration::from_millis(200), 0);
    for msn in 0..n {
        let mut head = SegmentHead {
            msn,
            discontinuity: false,
            map_uri: "init.mp4".into(),
            program_date_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 2 * msn),
            date_ranges: Vec::new(),
        };
        if msn == 1 {
            head.date_ranges.push(Arc::new(DateRange::of(&event(
                1,
                Payload::Text("old".into()),
                0,
            ))));
        }
        if msn == n - 1 {
            head.date_ranges.push(Arc::new(DateRange::of(&event(
                2,
                Payload::Text("new".into()),
                0,
            ))));
        }
        pl.segments.push(Segment {
            head,
            uri: format!("s{msn}.m4s"),
            duration: Duration::from_secs(2),
            gap: false,
            parts: Vec::new(),
        });
    }
    pl.open = Some(OpenSegment {
        head: SegmentHead {
            msn: n,
            discontinuity: false,
            map_uri: "init.mp4".into(),
            program_date_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 2 * n),
            date_ranges: Vec::new(),
        },
        parts: Vec::new(),
    });
    pl.preload_hint = Some("next.m4s".into());
    pl
}

#[test]
fn delta_updates_keep_skipped_date_ranges_unless_v2() {
    let mut pl = playlist(12);
    let full = render_media(&pl, None, &[], false);
    assert!(full.contains("ID=\"rungs-1\""), "{full}");
    assert!(full.contains("ID=\"rungs-2\""), "{full}");
    // YES skips segments only: the skipped segment's range stays listed.
    let yes = render_media(&pl, Some(Skip::Segments), &[], false);
    assert!(yes.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{yes}");
    assert!(yes.contains("ID=\"rungs-1\""), "{yes}");
    assert!(yes.contains("ID=\"rungs-2\""), "{yes}");
    assert!(yes.contains("#EXT-X-VERSION:9"), "{yes}");
    // v2 skips the old range too and lists the recently removed ones.
    pl.removed_date_ranges.push_back(("rungs-0".into(), 0));
    pl.removed_date_ranges.push_back(("rungs-9".into(), 0));
    let v2 = render_media(&pl, Some(Skip::SegmentsAndDateRanges), &[], false);
    assert!(!v2.contains("ID=\"rungs-1\""), "{v2}");
    assert!(v2.contains("ID=\"rungs-2\""), "{v2}");
    assert!(
        v2.contains(",RECENTLY-REMOVED-DATERANGES=\"rungs-0\trungs-9\"\n"),
        "{v2}"
    );
    assert!(v2.contains("#EXT-X-VERSION:10"), "{v2}");
}
