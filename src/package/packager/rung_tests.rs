//! Transcoded rungs end to end: a source, rungs that trail it by about 20
//! frames, and the playlists, media and multivariant playlist read back.

use super::tests::{Rig, audio_params, media, tfdt, values, video_params};
use super::*;
use crate::media::VideoEvent;
use crate::metrics::METRICS;
use crate::package::store::PlaylistRequest;
use bytes::Bytes;

/// Rung frames arrive this long after their source frame (20 frames).
const LAG_MS: i64 = 667;

fn ladder() -> Vec<RungDecl> {
    [("480p", 854, 480, 1_200_000), ("160p", 284, 160, 250_000)]
        .into_iter()
        .map(|(name, width, height, bitrate_bps)| RungDecl {
            name: name.into(),
            width,
            height,
            bitrate_bps,
        })
        .collect()
}

/// What a rung encoder makes of a source frame: same times and keyframes,
/// its own bytes (NAL type 5 on IDRs, so a test can see where one is).
fn encoded(src: &Packet, rung: usize) -> Packet {
    let nal = if src.keyframe { 0x65 } else { 0x41 };
    Packet {
        data: Bytes::from(vec![0, 0, 0, 2, nal, rung as u8]),
        ..src.clone()
    }
}

enum Ev {
    Source(Packet),
    Rung(usize, Packet),
}

impl Rig {
    fn rung_configs(&mut self, n: usize, at_ms: i64) {
        for (i, d) in ladder().iter().take(n).enumerate() {
            let mut params = (*video_params(d.width)).clone();
            params.height = d.height;
            self.push_rung(i, VideoEvent::Config(Arc::new(params)), at_ms);
        }
    }

    fn push_rung(&mut self, rung: usize, e: VideoEvent, at_ms: i64) {
        let at = Duration::from_millis(at_ms.max(0) as u64);
        // The source frame's arrival: the rung frame's time less the lag.
        let arrival = self.t0 + at.saturating_sub(Duration::from_millis(LAG_MS as u64));
        self.pk.push_rung(rung, e, self.wall0 + at, arrival);
    }

    /// Source packets at their time (plus `offset_ms`), and each of `rungs`
    /// rungs' copy of the video `LAG_MS` later, unless `drop(rung, frame
    /// time)` says its encoder dropped that frame.
    fn feed_with_rungs(
        &mut self,
        packets: Vec<Packet>,
        offset_ms: i64,
        rungs: usize,
        drop: impl Fn(usize, i64) -> bool,
    ) {
        let mut evs: Vec<(i64, Ev)> = Vec::new();
        for p in packets {
            let at = p.dts / 90 + offset_ms;
            if p.track == TrackKind::Video {
                for r in 0..rungs {
                    if !drop(r, p.dts / 90) {
                        evs.push((at + LAG_MS, Ev::Rung(r, encoded(&p, r))));
                    }
                }
            }
            evs.push((at, Ev::Source(p)));
        }
        evs.sort_by_key(|(at, _)| *at);
        for (at, ev) in evs {
            match ev {
                Ev::Source(p) => self.push(IngestEvent::Packet(p), at),
                Ev::Rung(r, p) => self.push_rung(r, VideoEvent::Packet(p), at),
            }
        }
    }
}

/// One listed segment of a media playlist.
#[derive(Debug, Default, Clone)]
struct Listed {
    msn: u64,
    uri: String,
    extinf: f64,
    gap: bool,
    discontinuity: bool,
    first_part_independent: Option<bool>,
}

fn listed(text: &str) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut cur = Listed::default();
    for line in text.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            cur.discontinuity = true;
        } else if line == "#EXT-X-GAP" {
            cur.gap = true;
        } else if let Some(p) = line.strip_prefix("#EXT-X-PART:") {
            cur.first_part_independent
                .get_or_insert(p.ends_with("INDEPENDENT=YES"));
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            cur.extinf = d.trim_end_matches(',').parse().expect("EXTINF");
        } else if !line.starts_with('#') && line.ends_with(".m4s") {
            let msn = line
                .trim_end_matches(".m4s")
                .rsplit('-')
                .next()
                .and_then(|m| m.parse().ok())
                .expect("MSN in the name");
            out.push(Listed {
                msn,
                uri: line.to_owned(),
                ..std::mem::take(&mut cur)
            });
        }
    }
    out
}

/// The first sample's bytes of a segment: the start of its first mdat.
fn first_sample(segment: &[u8]) -> &[u8] {
    let at = segment.windows(4).position(|w| w == b"mdat").expect("mdat");
    &segment[at + 4..]
}

async fn segment_bytes(rig: &Rig, rendition: &str, uri: &str) -> Bytes {
    rig.store
        .media_file(rendition, uri)
        .await
        .expect("segment")
        .bytes
}

/// Every rendition lists the same MSNs with the same durations, media
/// segments start at the same decode time, and rung segments with an IDR.
async fn assert_aligned(rig: &Rig, rungs: &[&str]) {
    let source_text = rig.playlist("source").await;
    let source = listed(&source_text);
    assert!(source.len() >= 3, "{source:?}");
    for rung in rungs {
        let text = rig.playlist(rung).await;
        // Players pair renditions' segments by these two numbers.
        for tag in ["#EXT-X-MEDIA-SEQUENCE:", "#EXT-X-DISCONTINUITY-SEQUENCE:"] {
            assert_eq!(
                values(&text, tag),
                values(&source_text, tag),
                "{rung} {tag}"
            );
        }
        let segs = listed(&text);
        assert_eq!(
            segs.iter().map(|s| s.msn).collect::<Vec<_>>(),
            source.iter().map(|s| s.msn).collect::<Vec<_>>(),
            "{rung}: {text}"
        );
        for (s, r) in source.iter().zip(&segs) {
            assert!((s.extinf - r.extinf).abs() < 1e-4, "{rung} {s:?} {r:?}");
            assert_eq!(s.discontinuity, r.discontinuity, "{rung} {}", r.msn);
            if r.gap {
                continue;
            }
            let (sb, rb) = (
                segment_bytes(rig, "source", &s.uri).await,
                segment_bytes(rig, rung, &r.uri).await,
            );
            assert_eq!(tfdt(&sb), tfdt(&rb), "{rung} segment {}", r.msn);
            assert_eq!(&first_sample(&rb)[4..5], [0x65], "{rung} {} IDR", r.msn);
            assert_ne!(r.first_part_independent, Some(false), "{rung} {}", r.msn);
        }
    }
}

#[tokio::test]
async fn rungs_follow_the_source_segment_for_segment() {
    let mut rig = Rig::new("rung-align");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    rig.feed_with_rungs(media(0, 9, 60, true), 0, 2, |_, _| false);
    // Live: the rungs trail the source but are numbered like it.
    let live = rig.playlist("480p").await;
    assert!(
        live.contains("#EXT-X-PART-INF:PART-TARGET=0.202\n"),
        "{live}"
    );
    assert!(live.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"));
    for other in ["source", "audio", "160p"] {
        assert!(
            live.contains(&format!(
                "#EXT-X-RENDITION-REPORT:URI=\"../{other}/index.m3u8\""
            )),
            "{other}: {live}"
        );
    }
    let source = rig.playlist("source").await;
    assert!(source.contains("#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\""));
    // Every part of a rung stays within PART-TARGET, and the first part of
    // each segment is independent.
    for d in values(&live, "#EXT-X-PART:DURATION=") {
        let d: f64 = d.split(',').next().and_then(|v| v.parse().ok()).expect("d");
        assert!(d <= 0.202, "{d}");
    }
    rig.pk.end();
    assert_aligned(&rig, &["480p", "160p"]).await;
    let ended = rig.playlist("160p").await;
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    assert_eq!(listed(&ended).len(), 5);
    let m = METRICS
        .ingest_to_part
        .with_label_values(&["rung-align", "480p"]);
    assert!(m.get_sample_count() > 0);
    // Measured from the source frame's arrival: the lag is in it.
    let mean = m.get_sample_sum() / m.get_sample_count() as f64;
    assert!(mean >= LAG_MS as f64 / 1000.0, "{mean}");
}

#[tokio::test]
async fn a_dropped_gop_is_a_gap_and_keeps_msns_aligned() {
    let mut rig = Rig::new("rung-gap");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    // 480p's encoder fell behind for the GOP from 4 s to 6 s (segment 2).
    let dropped = |rung: usize, ms: i64| rung == 0 && (4000..6000).contains(&ms);
    rig.feed_with_rungs(media(0, 9, 60, true), 0, 2, dropped);
    rig.pk.end();
    assert_aligned(&rig, &["480p", "160p"]).await;
    let segs = listed(&rig.playlist("480p").await);
    let gaps: Vec<u64> = segs.iter().filter(|s| s.gap).map(|s| s.msn).collect();
    assert_eq!(gaps, [2]);
    assert!((segs[2].extinf - 2.0).abs() < 1e-9);
    assert!(listed(&rig.playlist("160p").await).iter().all(|s| !s.gap));
    // The segment before the hole ends where the source's did, in the
    // playlist and in its media (the source's last frame there is 34 ms,
    // the rung's frames before it 33 ms).
    assert!((segs[1].extinf - 2.0).abs() < 1e-9);
    let source = listed(&rig.playlist("source").await);
    let (source_span, rung_span) = (
        media_span(&segment_bytes(&rig, "source", &source[1].uri).await),
        media_span(&segment_bytes(&rig, "480p", &segs[1].uri).await),
    );
    assert_eq!(rung_span, source_span);
}

/// First and end decode time of a segment's media: tfdt and trun durations.
fn media_span(segment: &[u8]) -> (u64, u64) {
    use mp4_atom::{Decode as _, Mdat, Moof, TrunSamples};
    let mut buf = segment;
    let mut span: Option<(u64, u64)> = None;
    while !buf.is_empty() {
        let moof = Moof::decode(&mut buf).expect("moof");
        Mdat::decode(&mut buf).expect("mdat");
        let traf = &moof.traf[0];
        let start = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
        let TrunSamples::Explicit(entries) = &traf.trun[0].samples else {
            panic!("per-sample entries")
        };
        let end = start
            + entries
                .iter()
                .map(|e| u64::from(e.duration.expect("duration")))
                .sum::<u64>();
        span = Some(span.map_or((start, end), |(s, _)| (s, end)));
    }
    span.expect("a fragment")
}

#[tokio::test]
async fn forced_cuts_in_a_long_gop_cut_the_rungs_too() {
    let mut rig = Rig::new("rung-long-gop");
    rig.configs(1280, false, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(1, 0);
    // Keyframes every 4 s: the source cuts at part boundaries in between.
    rig.feed_with_rungs(media(0, 12, 120, false), 0, 1, |_, _| false);
    rig.pk.end();
    let source = listed(&rig.playlist("source").await);
    let rung = listed(&rig.playlist("480p").await);
    assert_eq!(source.len(), rung.len());
    for (s, r) in source.iter().zip(&rung) {
        assert!((s.extinf - r.extinf).abs() < 1e-4, "{s:?} {r:?}");
        let (sb, rb) = (
            segment_bytes(&rig, "source", &s.uri).await,
            segment_bytes(&rig, "480p", &r.uri).await,
        );
        assert_eq!(tfdt(&sb), tfdt(&rb), "segment {}", r.msn);
        // Where the source cut without a keyframe, so did the rung.
        assert_eq!(first_sample(&sb)[4], first_sample(&rb)[4], "{}", r.msn);
    }
    assert!(
        source
            .iter()
            .any(|s| s.first_part_independent == Some(false))
    );
}

#[tokio::test(start_paused = true)]
async fn the_multivariant_playlist_lists_every_rung_top_down() {
    let mut rig = Rig::new("rung-master");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    // Only the source for now: the rungs have configurations, no segments.
    // After the bounded wait, only what a player can start on is listed.
    rig.feed(media(0, 4, 60, true), 0);
    let early = rig.store.master_playlist().await.expect("master");
    let parsed = m3u8_rs::parse_master_playlist_res(early.as_bytes()).expect("valid");
    let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["source/index.m3u8"], "{early}");
    // A rung with nothing yet: its playlist waits like any first load.
    let waiting = tokio::spawn({
        let store = rig.store.clone();
        async move {
            store
                .media_playlist("160p", PlaylistRequest::default())
                .await
        }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());

    // Now the rungs produce: BANDWIDTH becomes their measured peak.
    rig.feed_with_rungs(media(4000, 6, 60, true), 0, 2, |_, _| false);
    assert!(waiting.await.expect("task").is_ok());
    let master = rig.store.master_playlist().await.expect("master");
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("valid");
    let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["source/index.m3u8", "480p/index.m3u8", "160p/index.m3u8"]
    );
    assert!(parsed.variants[1].bandwidth < 1_000_000, "{master}");
    assert!(
        master.contains("RESOLUTION=854x480,FRAME-RATE=30,AUDIO=\"audio\""),
        "{master}"
    );
    assert!(master.contains("CODECS=\"avc1.64000d,mp4a.40.2\",RESOLUTION=284x160"));
    assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    assert_eq!(parsed.alternatives.len(), 1);
    assert_eq!(
        rig.store.renditions(),
        ["480p", "160p", "source", "audio"],
        "declared before the stream started"
    );
}

#[tokio::test]
async fn a_reconnect_and_the_end_keep_rungs_with_the_source() {
    let mut rig = Rig::new("rung-reconnect");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    rig.feed_with_rungs(media(0, 5, 60, true), 0, 2, |_, _| false);
    rig.pk.discontinuity();
    // The publisher comes back with its clock at zero; 160p's encoder never
    // produces anything in this stream.
    rig.configs(1280, true, 8000);
    rig.rung_configs(1, 8000);
    rig.feed_with_rungs(media(0, 5, 60, true), 8000, 1, |_, _| false);
    rig.pk.end();
    assert_aligned(&rig, &["480p", "160p"]).await;
    for r in ["source", "audio", "480p", "160p"] {
        let text = rig.playlist(r).await;
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{r}: {text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{r}");
    }
    let quiet = listed(&rig.playlist("160p").await);
    assert!(quiet[3..].iter().all(|s| s.gap), "{quiet:?}");
    assert!(quiet[..3].iter().all(|s| !s.gap));
}

#[tokio::test]
async fn a_new_source_resolution_replans_the_ladder_at_a_boundary() {
    let mut rig = Rig::new("rung-replan");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    rig.feed_with_rungs(media(0, 3, 60, true), 0, 2, |_, _| false);
    let exported = |rung: &str| {
        METRICS
            .render()
            .lines()
            .any(|l| l.contains("channel=\"rung-replan\"") && l.contains(&format!("=\"{rung}\"")))
    };
    assert!(
        exported("160p"),
        "160p's parts are counted while it is in the ladder"
    );
    // The source drops to 640 wide at 3 s; the rungs' last old frames
    // arrive, then the pipeline re-plans a one-rung ladder at 360 high.
    rig.push(IngestEvent::VideoConfig(video_params(640)), 3000);
    let next = media(3000, 4, 60, true);
    let (early, late): (Vec<Packet>, Vec<Packet>) =
        next.into_iter().partition(|p| p.dts < 3600 * 90);
    rig.feed(early, 0);
    rig.pk.set_rungs(vec![RungDecl {
        name: "480p".into(),
        width: 640,
        height: 360,
        bitrate_bps: 800_000,
    }]);
    let mut params = (*video_params(640)).clone();
    params.height = 360;
    rig.push_rung(0, VideoEvent::Config(Arc::new(params)), 3000 + LAG_MS);
    let resent: Vec<Packet> = media(3000, 1, 60, false)
        .into_iter()
        .filter(|p| p.dts < 3600 * 90)
        .collect();
    for p in resent {
        let at = p.dts / 90 + LAG_MS;
        rig.push_rung(0, VideoEvent::Packet(encoded(&p, 0)), at);
    }
    rig.feed_with_rungs(late, 0, 1, |_, _| false);
    rig.pk.end();
    assert_aligned(&rig, &["480p"]).await;
    let text = rig.playlist("480p").await;
    assert_eq!(values(&text, "#EXT-X-MAP:URI=").len(), 2, "{text}");
    assert_eq!(rig.store.renditions(), ["480p", "source", "audio"]);
    let master = rig.store.master_playlist().await.expect("master");
    assert!(!master.contains("160p"), "{master}");
    assert!(
        !exported("160p"),
        "a retired rung's metrics are no longer exported"
    );
    assert!(exported("480p"));
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    // The retired rung's playlist stays readable, ending where it stopped.
    let retired = listed(&rig.playlist("160p").await);
    assert_eq!(retired.last().map(|s| s.msn), Some(1));
    let _ = audio_params();
}

#[tokio::test]
async fn dropped_frames_leave_no_short_part_in_any_rendition() {
    let mut rig = Rig::new("rung-drops");
    rig.configs(1280, true, 0);
    rig.pk.set_rungs(ladder());
    rig.rung_configs(2, 0);
    // The publisher's encoder dropped every 7th picture (never a keyframe),
    // so the rungs' encoders never saw it either.
    let packets: Vec<Packet> = media(0, 9, 60, true)
        .into_iter()
        .filter(|p| {
            p.track != TrackKind::Video || p.keyframe || ((p.dts / 90 * 30 + 500) / 1000) % 7 != 6
        })
        .collect();
    rig.feed_with_rungs(packets, 0, 2, |_, _| false);
    rig.pk.end();
    assert_aligned(&rig, &["480p", "160p"]).await;
    for rendition in ["source", "480p", "160p"] {
        let text = rig.playlist(rendition).await;
        let mut parts: Vec<(f64, bool)> = Vec::new();
        let mut checked = 0;
        for line in text.lines() {
            if let Some(attrs) = line.strip_prefix("#EXT-X-PART:DURATION=") {
                let d: f64 = attrs
                    .split(',')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("d");
                parts.push((d, attrs.contains("INDEPENDENT=YES")));
            } else if line.starts_with("#EXTINF:") {
                // RFC 8216bis 4.4.4.9: all but a segment's last part (and
                // independent ones) last at least 85% of PART-TARGET.
                let n = parts.len().saturating_sub(1);
                for (d, independent) in &parts[..n] {
                    assert!(
                        *independent || *d >= 0.85 * 0.202,
                        "{rendition}: {parts:?}\n{text}"
                    );
                    checked += 1;
                }
                parts.clear();
            }
        }
        assert!(
            checked >= 10,
            "{rendition}: {checked} parts checked\n{text}"
        );
    }
}
