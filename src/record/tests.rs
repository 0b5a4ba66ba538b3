use super::recover::recover;
use super::session::{ENDED, Recording, Summary};
use super::spool::Spool;
use crate::package::{PackageConfig, RenditionInfo, Update};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const SEG: Duration = Duration::from_secs(2);

fn start() -> Vec<Update> {
    vec![
        Update::StreamStart {
            sid: "s1".into(),
            part_target: Duration::from_millis(500),
            new_playlist: true,
            next_msn: 0,
        },
        Update::Init {
            rendition: Arc::from("source"),
            info: RenditionInfo::Video {
                codecs: "avc1.64001f".into(),
                width: 1280,
                height: 720,
            },
            uri: "init-s1-1.mp4".into(),
            bytes: Bytes::from_static(b"init"),
        },
    ]
}

/// Segment `msn` of the source: four parts of `part_len` bytes.
fn segment(msn: u64, part_len: usize) -> Vec<Update> {
    let r: Arc<str> = Arc::from("source");
    let mut u = vec![Update::SegmentStart {
        rendition: r.clone(),
        msn,
        discontinuity: false,
        program_date_time: SystemTime::UNIX_EPOCH + SEG * msn as u32,
        map_uri: "init-s1-1.mp4".into(),
    }];
    for i in 0..4 {
        u.push(Update::Part {
            rendition: r.clone(),
            msn,
            duration: SEG / 4,
            independent: i == 0,
            bytes: Bytes::from(vec![msn as u8; part_len]),
        });
    }
    u.push(Update::SegmentEnd {
        rendition: r,
        msn,
        duration: SEG,
        gap: false,
        samples: 60,
    });
    u
}

fn session_dir(spool: &Spool) -> std::path::PathBuf {
    let ch = spool.root().join("ch1");
    std::fs::read_dir(&ch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap()
}

fn read(p: std::path::PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn recording(spool: &Spool) -> Recording {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    Recording::start(spool, "ch1", &PackageConfig::default(), None, now)
}

#[test]
fn segments_are_spooled_as_they_complete_and_the_end_writes_the_vod() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let mut rec = recording(&spool);
    let now = SystemTime::now();
    rec.apply(&spool, start(), now);
    rec.apply(&spool, segment(0, 100), now);
    let s = session_dir(&spool);
    assert_eq!(s.file_name().unwrap(), "20261130T005320Z");
    assert!(s.join("recording-started.json").is_file());
    assert_eq!(std::fs::read(s.join("source/s1-0.m4s")).unwrap().len(), 400);
    // The playlist so far, kept for a crash: no end yet.
    let so_far = read(s.join("source/index.m3u8.live"));
    assert!(
        so_far.contains("s1-0.m4s") && !so_far.contains("ENDLIST"),
        "{so_far}"
    );
    rec.apply(&spool, segment(1, 100), now);
    rec.apply(&spool, vec![Update::End], now);
    let vod = read(s.join("source/index.m3u8"));
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{vod}");
    assert!(
        vod.contains("s1-1.m4s") && vod.ends_with("#EXT-X-ENDLIST\n"),
        "{vod}"
    );
    assert!(read(s.join("master.m3u8")).contains("source/index.m3u8"));
    assert!(!s.join("source/index.m3u8.live").exists());
    let ended: Summary = serde_json::from_str(&read(s.join(ENDED))).unwrap();
    assert_eq!(ended.duration_s, 4.0);
    assert_eq!(ended.bytes, 4 + 800);
    assert!(!ended.recovered);
    assert_eq!(ended.renditions[0].segments, 2);
}

#[test]
fn a_full_spool_costs_the_recording_a_gap_not_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the events, the init and one segment.
    let spool = Spool::open(dir.path(), 2_000).unwrap();
    let mut rec = recording(&spool);
    let now = SystemTime::now();
    rec.apply(&spool, start(), now);
    rec.apply(&spool, segment(0, 100), now);
    rec.apply(&spool, segment(1, 1_000), now);
    rec.apply(&spool, vec![Update::End], now);
    let s = session_dir(&spool);
    assert!(s.join("source/s1-0.m4s").is_file());
    assert!(!s.join("source/s1-1.m4s").exists());
    let vod = read(s.join("source/index.m3u8"));
    // The lost segment keeps its place and length in the timeline.
    assert!(
        vod.contains("#EXT-X-GAP\n#EXTINF:2.00000,\ns1-1.m4s"),
        "{vod}"
    );
    let ended: Summary = serde_json::from_str(&read(s.join(ENDED))).unwrap();
    assert_eq!(ended.bytes, 4 + 400, "a lost segment is not counted");
}

#[test]
fn a_recording_cut_short_is_completed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let mut rec = recording(&spool);
    let now = SystemTime::now();
    rec.apply(&spool, start(), now);
    rec.apply(&spool, segment(0, 100), now);
    rec.apply(&spool, segment(1, 100), now);
    // The node dies here: no End, no finish.
    drop(rec);
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(recover(&spool).unwrap(), 1);
    let s = session_dir(&spool);
    let vod = read(s.join("source/index.m3u8"));
    assert!(
        vod.contains("s1-0.m4s\n") && vod.contains("s1-1.m4s\n"),
        "{vod}"
    );
    assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    assert!(read(s.join("master.m3u8")).contains("source/index.m3u8"));
    let ended: Summary = serde_json::from_str(&read(s.join(ENDED))).unwrap();
    assert!(ended.recovered);
    assert_eq!(ended.duration_s, 4.0);
    // Done once: a second start finds nothing to complete.
    assert_eq!(recover(&spool).unwrap(), 0);
}

#[test]
fn half_an_entry_left_by_a_torn_append_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let mut rec = recording(&spool);
    let now = SystemTime::now();
    rec.apply(&spool, start(), now);
    rec.apply(&spool, segment(0, 100), now);
    drop(rec);
    let s = session_dir(&spool);
    let working = s.join("source/index.m3u8.live");
    let mut text = read(working.clone());
    text.push_str("#EXTINF:2.00000,\ns1-1.m");
    std::fs::write(&working, text).unwrap();
    recover(&spool).unwrap();
    let vod = read(s.join("source/index.m3u8"));
    assert!(vod.ends_with("s1-0.m4s\n#EXT-X-ENDLIST\n"), "{vod}");
}
