//! The packager end to end with the real fMP4 writer: ingest events in,
//! playlists and media read back from the store.

use super::*;
use crate::metrics::METRICS;
use crate::package::store::PlaylistRequest;

pub(super) use crate::package::testmedia::{audio_params, media, video_params};

pub(super) struct Rig {
    pub(super) pk: ChannelPackager,
    pub(super) store: Arc<ChannelStore>,
    pub(super) wall0: SystemTime,
    pub(super) t0: Instant,
}

impl Rig {
    pub(super) fn new(channel: &str) -> Rig {
        let store = ChannelStore::new(channel, &PackageConfig::default());
        Rig {
            pk: ChannelPackager::new(channel, store.clone(), PackageConfig::default()),
            store,
            wall0: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            t0: Instant::now(),
        }
    }

    /// Pushes an event as if it arrived `at_ms` after the rig started.
    pub(super) fn push(&mut self, e: IngestEvent, at_ms: i64) {
        let at = Duration::from_millis(at_ms.max(0) as u64);
        self.pk.push(e, self.wall0 + at, self.t0 + at);
    }

    pub(super) fn configs(&mut self, width: u32, audio: bool, at_ms: i64) {
        self.push(IngestEvent::VideoConfig(video_params(width)), at_ms);
        if audio {
            self.push(IngestEvent::AudioConfig(audio_params()), at_ms);
        }
    }

    pub(super) fn feed(&mut self, packets: Vec<Packet>, arrival_offset_ms: i64) {
        for p in packets {
            let at = p.dts / 90 + arrival_offset_ms;
            self.push(IngestEvent::Packet(p), at);
        }
    }

    pub(super) async fn playlist(&self, rendition: &str) -> String {
        self.store
            .media_playlist(rendition, PlaylistRequest::default())
            .await
            .expect("playlist")
    }
}

pub(super) fn values<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

pub(super) fn extinfs(text: &str) -> Vec<f64> {
    values(text, "#EXTINF:")
        .iter()
        .map(|v| v.trim_end_matches(',').parse().expect("EXTINF is a number"))
        .collect()
}

pub(super) fn part_uris(text: &str) -> Vec<String> {
    values(text, "#EXT-X-PART:")
        .iter()
        .filter_map(|v| {
            v.split("URI=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// tfdt of a moof+mdat, found by fourcc: the test knows what it wrote.
pub(super) fn tfdt(fragment: &[u8]) -> u64 {
    let at = fragment
        .windows(4)
        .position(|w| w == b"tfdt")
        .expect("tfdt");
    let body = &fragment[at + 4..];
    if body[0] == 1 {
        u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"))
    } else {
        u64::from(u32::from_be_bytes(body[4..8].try_into().expect("4 bytes")))
    }
}

#[tokio::test]
async fn audio_and_video_playlists_line_up() {
    let mut rig = Rig::new("pk-align");
    rig.configs(320, true, 0);
    rig.feed(media(0, 11, 60, true), 0);
    let video = rig.playlist("source").await;
    let audio = rig.playlist("audio").await;

    for text in [&video, &audio] {
        assert!(
            text.contains("#EXT-X-PART-INF:PART-TARGET=0.202\n"),
            "{text}"
        );
        assert!(text.contains("PART-HOLD-BACK=0.606"));
        for d in values(text, "#EXT-X-PART:DURATION=") {
            let d: f64 = d
                .split(',')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("duration");
            assert!(d <= 0.202, "{d}");
        }
    }
    assert_eq!(
        values(&video, "#EXT-X-MEDIA-SEQUENCE:"),
        values(&audio, "#EXT-X-MEDIA-SEQUENCE:")
    );
    let (v, a) = (extinfs(&video), extinfs(&audio));
    assert_eq!(v.len(), 5, "{video}");
    assert_eq!(v.len(), a.len());
    for (v, a) in v.iter().zip(&a) {
        assert!((v - 2.0).abs() < 1e-9, "video segments follow the 2 s GOP");
        assert!((v - a).abs() <= 1024.0 / 44_100.0, "audio {a} vs video {v}");
    }
    // Same time, same date in both renditions.
    let (vd, ad) = (
        values(&video, "#EXT-X-PROGRAM-DATE-TIME:"),
        values(&audio, "#EXT-X-PROGRAM-DATE-TIME:"),
    );
    assert_eq!(vd[0], "2023-11-14T22:13:20.000Z");
    let secs = |d: &str| d[17..23].parse::<f64>().expect("seconds");
    for (v, a) in vd.iter().zip(&ad).take(3) {
        // Each date is its segment's first sample: audio's is the first AAC
        // frame at or after video's cut (dates in whole milliseconds, video's
        // rounded up and audio's down).
        let after = secs(a) - secs(v);
        assert!((-0.001..=1024.0 / 44_100.0).contains(&after), "{v} vs {a}");
    }
    assert!(video.contains("#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\""));
    assert!(audio.contains("#EXT-X-RENDITION-REPORT:URI=\"../source/index.m3u8\""));

    // Parts are real fragments whose decode times run on without holes.
    let mut expected = None;
    for uri in part_uris(&audio) {
        let f = rig.store.media_file("audio", &uri).await.expect("part");
        assert_eq!(&f.bytes[4..8], b"moof");
        let t = tfdt(&f.bytes);
        if let Some(e) = expected {
            assert_eq!(t, e, "{uri}");
        }
        let frames = f
            .bytes
            .windows(3)
            .filter(|w| w[0] == 0x21 && w[1] == 0x10)
            .count() as u64;
        expected = Some(t + frames * 1024);
    }
    let segment = values(&video, "")
        .into_iter()
        .find(|l| l.ends_with(".m4s"))
        .expect("segment uri");
    let seg = rig
        .store
        .media_file("source", segment)
        .await
        .expect("segment");
    assert_eq!(&seg.bytes[4..8], b"moof");
    let map = values(&video, "#EXT-X-MAP:URI=\"")[0].trim_end_matches('"');
    assert_eq!(
        &rig.store
            .media_file("source", map)
            .await
            .expect("init")
            .bytes[4..8],
        b"ftyp"
    );

    let master = rig.store.master_playlist().await.expect("master");
    assert!(
        master.contains(
            "CODECS=\"avc1.64000d,mp4a.40.2\",RESOLUTION=320x240,FRAME-RATE=30,AUDIO=\"audio\""
        ),
        "{master}"
    );
    assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    let parts = METRICS
        .parts_published
        .with_label_values(&["pk-align", "source"])
        .get();
    assert!(parts >= 50, "{parts}");
    assert!(
        METRICS
            .ingest_to_part
            .with_label_values(&["pk-align", "audio"])
            .get_sample_count()
            > 0
    );
}

#[tokio::test]
async fn nothing_is_packaged_before_a_config_and_a_keyframe() {
    let mut rig = Rig::new("pk-start");
    rig.feed(media(0, 1, 30, true), 0);
    rig.configs(320, false, 1000);
    // Starts mid-GOP: frames before the next keyframe are dropped.
    rig.feed(media(1000, 5, 30, false).into_iter().skip(10).collect(), 0);
    let text = rig.playlist("source").await;
    let first_part = values(&text, "#EXT-X-PART:").into_iter().next();
    assert!(first_part.is_none_or(|p| p.ends_with("INDEPENDENT=YES")));
    assert!(
        values(&text, "#EXT-X-PROGRAM-DATE-TIME:")[0].starts_with("2023-11-14T22:13:22.000Z"),
        "{text}"
    );
    assert_eq!(rig.store.renditions(), ["source"]);
}

#[tokio::test]
async fn a_reconnect_continues_the_playlist_after_a_discontinuity() {
    let mut rig = Rig::new("pk-reconnect");
    rig.configs(320, true, 0);
    rig.feed(media(0, 5, 60, true), 0);
    rig.pk.discontinuity();
    let paused = rig.playlist("source").await;
    assert!(!paused.contains("PRELOAD-HINT"));
    assert_eq!(
        extinfs(&paused).len(),
        3,
        "the interrupted segment is flushed"
    );

    // The publisher comes back with its clock restarted at zero.
    rig.configs(320, true, 7000);
    rig.feed(media(0, 5, 60, true), 7000);
    rig.pk.end();
    for rendition in ["source", "audio"] {
        let text = rig.playlist(rendition).await;
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let uris: Vec<&str> = values(&text, "")
            .into_iter()
            .filter(|l| l.ends_with(".m4s"))
            .collect();
        assert_eq!(uris.len(), 6);
        let sids: std::collections::BTreeSet<&str> = uris
            .iter()
            .map(|u| u.split('-').next().unwrap_or(""))
            .collect();
        assert_eq!(sids.len(), 2, "each stream names its own media");
        // Media sequence numbers run on and decode times never go back.
        let mut last = 0;
        for (i, uri) in uris.iter().enumerate() {
            assert!(uri.ends_with(&format!("-{i}.m4s")), "{uri}");
            let bytes = rig
                .store
                .media_file(rendition, uri)
                .await
                .expect("segment")
                .bytes;
            let t = tfdt(&bytes);
            assert!(t >= last, "{rendition} {uri}: {t} < {last}");
            last = t;
        }
    }
}

/// Where the second EXT-X-MAP (a new configuration) starts in `text`.
fn second_map(text: &str) -> usize {
    let first = text.find("#EXT-X-MAP:").expect("a map");
    first + 1 + text[first + 1..].find("#EXT-X-MAP:").expect("a second map")
}

#[tokio::test]
async fn a_new_resolution_gets_a_new_init_segment_and_no_discontinuity() {
    let mut rig = Rig::new("pk-reconfig");
    rig.configs(320, true, 0);
    rig.feed(media(0, 3, 60, true), 0);
    rig.push(IngestEvent::VideoConfig(video_params(640)), 3000);
    rig.feed(media(3000, 3, 60, true), 0);
    let video = rig.playlist("source").await;
    let audio = rig.playlist("audio").await;
    let maps = values(&video, "#EXT-X-MAP:URI=");
    assert_eq!(maps.len(), 2, "{video}");
    assert_ne!(maps[0], maps[1]);
    // The timestamps run on: players append the new initialization section
    // without re-basing their timeline.
    for text in [&video, &audio] {
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    }
    assert_eq!(values(&audio, "#EXT-X-MAP:URI=").len(), 1, "{audio}");
}

#[tokio::test]
async fn a_new_resolution_is_cut_at_its_keyframe_without_a_hole() {
    let mut rig = Rig::new("pk-reconfig-step");
    rig.configs(320, true, 0);
    rig.feed(media(0, 3, 60, true), 0);
    rig.push(IngestEvent::VideoConfig(video_params(640)), 3000);
    // The new configuration's keyframe comes 100 ms after the last frame (at
    // 2967 ms), as a browser encoder's does when it steps its resolution.
    rig.feed(media(3067, 3, 60, false), 0);
    let video = rig.playlist("source").await;
    let at = second_map(&video);
    let before: f64 = extinfs(&video[..at]).iter().sum();
    // The last frame ends its part (a part of its own would leave the one
    // before it under 85% of PART-TARGET); the keyframe follows it at once,
    // at most a frame before its own time.
    assert!((3.0..=3.067).contains(&before), "{video}");
    let next = video[at..]
        .lines()
        .find(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .expect("a segment after the new map");
    let bytes = rig
        .store
        .media_file("source", next)
        .await
        .expect("segment")
        .bytes;
    assert_eq!(tfdt(&bytes), (before * 90_000.0).round() as u64, "no hole");
    let parts = values(&video[..at], "#EXT-X-PART:DURATION=");
    let last_segment: Vec<f64> = parts
        .iter()
        .rev()
        .take(5)
        .filter_map(|p| p.split(',').next()?.parse().ok())
        .collect();
    assert!(last_segment.iter().all(|d| *d <= 0.2021), "{video}");
}

/// The first segment after `extinf_count` complete segments: its tfdt, in
/// seconds, and the summed EXTINF of those before it.
async fn start_after(rig: &Rig, rendition: &str, text: &str, count: usize) -> (f64, f64) {
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .collect();
    let bytes = rig
        .store
        .media_file(rendition, uris[count])
        .await
        .expect("segment")
        .bytes;
    let before: f64 = extinfs(text)[..count].iter().sum();
    (tfdt(&bytes) as f64 / 90_000.0, before)
}

#[tokio::test]
async fn a_keyframe_after_a_long_frame_starts_where_that_frame_ends() {
    // Frames stop for 284 ms before a keyframe (a browser encoder that skips
    // frames to step its resolution, or recovers from loss), with and
    // without a new configuration; the keyframe opens segment 1. With
    // `lost`, seven frames before the last one are missing too: the frame
    // before them fills its part and lends the last one time.
    for (reconfigure, lost) in [(false, false), (true, false), (false, true)] {
        let mut rig = Rig::new("pk-long-frame");
        rig.configs(320, false, 0);
        let mut first = media(0, 2, 60, false);
        if lost {
            first.retain(|p| !(1733..=1933).contains(&(p.dts / 90)));
        }
        rig.feed(first, 0);
        if reconfigure {
            rig.push(IngestEvent::VideoConfig(video_params(640)), 2250);
        }
        rig.feed(media(2250, 5, 60, false), 0);
        let video = rig.playlist("source").await;
        let (start, before) = start_after(&rig, "source", &video, 1).await;
        assert!(
            (start - before).abs() < 1e-4,
            "no hole: {start} after {before}\n{video}"
        );
        // Under a frame... plus the frame gap early, never late.
        assert!((1.95..=2.25).contains(&start), "{video}");
        let parts: Vec<f64> = values(&video, "#EXT-X-PART:DURATION=")
            .iter()
            .filter_map(|p| p.split(',').next()?.parse().ok())
            .collect();
        assert!(parts.iter().all(|d| *d <= 0.2021), "{video}");
        // 4.4.4.9: only a segment's last part may be under 85% of PART-TARGET.
        let first_segment = &parts[..parts.len().min(9)];
        assert!(
            first_segment.iter().all(|d| *d >= 0.85 * 0.2),
            "{reconfigure} {lost}: {video}"
        );
    }
}

#[tokio::test]
async fn a_later_stream_after_the_end_starts_a_new_playlist() {
    let mut rig = Rig::new("pk-end");
    rig.configs(320, false, 0);
    rig.feed(media(0, 3, 60, false), 0);
    rig.pk.end();
    let ended = rig.playlist("source").await;
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    rig.configs(320, false, 60_000);
    rig.feed(media(0, 5, 60, false), 60_000);
    let text = rig.playlist("source").await;
    assert!(!text.contains("ENDLIST"));
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{text}"
    );
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
}

/// The samples of a part or segment: its truns' counts, found by fourcc.
fn trun_samples(fragments: &[u8]) -> u64 {
    fragments
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"trun")
        .map(|(at, _)| {
            u64::from(u32::from_be_bytes(
                fragments[at + 8..at + 12].try_into().expect("4 bytes"),
            ))
        })
        .sum()
}

#[tokio::test]
async fn lost_audio_frames_become_silence_and_leave_no_hole() {
    let mut rig = Rig::new("pk-audio-holes");
    rig.configs(320, true, 0);
    // AAC frames 100-102 and 300-301 never arrive (lost RTP packets, or an
    // encoder that skipped them): the next frames' timestamps jump ahead.
    let lost = |p: &Packet| {
        let k = (p.dts / 90 * 44_100 + 1_023_999) / 1_024_000;
        p.track == TrackKind::Audio && ((100..103).contains(&k) || (300..302).contains(&k))
    };
    let packets: Vec<Packet> = media(0, 11, 60, true)
        .into_iter()
        .filter(|p| !lost(p))
        .collect();
    assert_eq!(
        media(0, 11, 60, true).len() - packets.len(),
        5,
        "the test drops five frames"
    );
    rig.feed(packets, 0);
    let audio = rig.playlist("audio").await;
    let silence = crate::media::aac::silent_frame(&audio_params()).expect("AAC-LC stereo");
    let (mut expected, mut silent) = (None, 0);
    for uri in part_uris(&audio) {
        let f = rig.store.media_file("audio", &uri).await.expect("part");
        let t = tfdt(&f.bytes);
        if let Some(e) = expected {
            assert_eq!(t, e, "{uri}: a hole or an overlap before it");
        }
        expected = Some(t + trun_samples(&f.bytes) * 1024);
        silent += f
            .bytes
            .windows(silence.len())
            .filter(|w| *w == &silence[..])
            .count();
    }
    assert_eq!(silent, 5, "one silent frame per lost frame");
    // Every segment is as long as the frames it holds.
    let segments: Vec<&str> = values(&audio, "")
        .into_iter()
        .filter(|l| l.ends_with(".m4s"))
        .collect();
    for (uri, extinf) in segments.iter().zip(extinfs(&audio)) {
        let f = rig.store.media_file("audio", uri).await.expect("segment");
        let held = trun_samples(&f.bytes) as f64 * 1024.0 / 44_100.0;
        assert!(
            (held - extinf).abs() < 1e-4,
            "{uri}: EXTINF {extinf} for {held} s of frames"
        );
    }
    assert_eq!(
        METRICS
            .audio_silence_frames
            .with_label_values(&["pk-audio-holes"])
            .get(),
        5
    );
}

#[tokio::test]
async fn audio_waits_for_video() {
    let mut rig = Rig::new("pk-audio-first");
    rig.configs(320, true, 0);
    let (audio, video): (Vec<Packet>, Vec<Packet>) = media(0, 6, 60, true)
        .into_iter()
        .partition(|p| p.track == TrackKind::Audio);
    // Three seconds of audio before any video arrives.
    let early: Vec<Packet> = audio.iter().filter(|p| p.dts < 270_000).cloned().collect();
    rig.feed(early, 0);
    assert!(rig.store.renditions().is_empty());
    let mut rest: Vec<Packet> = video
        .into_iter()
        .chain(audio.into_iter().filter(|p| p.dts >= 270_000))
        .collect();
    rest.sort_by_key(|p| p.dts);
    rig.feed(rest, 0);
    let (v, a) = (
        extinfs(&rig.playlist("source").await),
        extinfs(&rig.playlist("audio").await),
    );
    assert_eq!(v.len(), 2);
    assert_eq!(a.len(), 2);
    assert!((v[0] - a[0]).abs() <= 1024.0 / 44_100.0);
}

#[tokio::test]
async fn timed_metadata_goes_into_the_next_part_of_video_and_audio() {
    use crate::package::metadata::{MetadataRefusal, Payload};
    let mut rig = Rig::new("pk-meta");
    assert_eq!(
        rig.pk.insert_metadata(Payload::Text("early".into()), None),
        Err(MetadataRefusal::NotLive)
    );
    rig.configs(320, true, 0);
    let packets = media(0, 6, 60, true);
    let (first, rest): (Vec<_>, Vec<_>) = packets.into_iter().partition(|p| p.dts < 3 * 90_000);
    rig.feed(first, 0);
    let placed = rig
        .pk
        .insert_metadata(Payload::Text("hello".into()), None)
        .expect("live");
    let at = placed.media_time.as_secs_f64();
    assert!((2.5..3.0).contains(&at), "placed at {at}");
    rig.feed(rest, 0);
    for rendition in ["source", "audio"] {
        let text = rig.playlist(rendition).await;
        let tag = format!("#EXT-X-DATERANGE:ID=\"rungs-{}\"", placed.id);
        let line = text
            .lines()
            .position(|l| l.starts_with(&tag))
            .unwrap_or_else(|| panic!("{rendition}: no date range\n{text}"));
        assert!(text.contains("X-RUNGS-TEXT=\"hello\""), "{text}");
        // The parts of the segment whose head lists the date range.
        let after: Vec<String> = part_uris(
            &text
                .lines()
                .skip(line + 1)
                .take_while(|l| !l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let mut found = false;
        for u in part_uris(&text) {
            let f = rig.store.media_file(rendition, &u).await.expect("part");
            if &f.bytes[4..8] == b"emsg" {
                assert!(
                    after.contains(&u),
                    "{rendition}: the emsg is in a part of the date range's segment"
                );
                assert!(f.bytes.windows(5).any(|w| w == b"hello"));
                let size = u32::from_be_bytes([f.bytes[0], f.bytes[1], f.bytes[2], f.bytes[3]]);
                assert_eq!(&f.bytes[size as usize + 4..size as usize + 8], b"moof");
                assert!(!found, "{rendition}: one part carries it");
                found = true;
            }
        }
        assert!(found, "{rendition}: no part carries the emsg");
    }
}
