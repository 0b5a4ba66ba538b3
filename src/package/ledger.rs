//! The rendition ledger the live store and VOD share: each rendition's
//! identity, variant order, declared rate and per-segment statistics
//! ([`Entry`]); the book of renditions and their media playlists built from
//! the packager's updates ([`book`]); BANDWIDTH, AVERAGE-BANDWIDTH and
//! FRAME-RATE and the multivariant playlist itself; and the gap segments
//! that keep a rendition that skipped MSNs numbered like the others.
//! Spec-driven logic that must never disagree between live and VOD; which
//! renditions are listed, and in what order, is the caller's.

pub(crate) mod book;

use super::playlist::{self, AudioMedia, Variant, VariantAudio, VideoRates};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// What a rendition carries, for the multivariant playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenditionInfo {
    Video {
        codecs: String,
        width: u32,
        height: u32,
    },
    Audio {
        codecs: String,
    },
}

impl RenditionInfo {
    pub(crate) fn content_type(&self) -> &'static str {
        match self {
            RenditionInfo::Video { .. } => "video/mp4",
            RenditionInfo::Audio { .. } => "audio/mp4",
        }
    }
}

/// Measured per complete segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentStats {
    pub bytes: usize,
    pub duration: Duration,
    pub samples: u32,
    pub independent: bool,
    pub gap: bool,
}

/// One rendition as the ledger keeps it, live or VOD.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: Arc<str>,
    pub info: RenditionInfo,
    /// Variant order in the multivariant playlist (source 0, rungs top down).
    pub rank: u32,
    /// A transcoded rung's declared bit rate, used for BANDWIDTH until its
    /// segments are measured. `None` for the source and audio.
    pub declared_bps: Option<u64>,
    /// Produced by the current (or last) stream, or still in the ladder:
    /// inactive ones are left out of the multivariant playlist.
    pub active: bool,
    /// Per complete segment, oldest first: the live window's, or all of a
    /// VOD's.
    pub stats: VecDeque<SegmentStats>,
}

impl Entry {
    pub fn new(name: Arc<str>, info: RenditionInfo) -> Self {
        Entry {
            name,
            info,
            rank: 0,
            declared_bps: None,
            active: true,
            stats: VecDeque::new(),
        }
    }

    /// A rung the packager will produce, at `rank`, listed at its declared
    /// bit rate until it is measured.
    pub fn declare(&mut self, rank: u32, bitrate_bps: u64) {
        self.active = true;
        self.rank = rank;
        self.declared_bps = Some(bitrate_bps);
    }

    pub fn is_audio(&self) -> bool {
        matches!(self.info, RenditionInfo::Audio { .. })
    }

    /// Whether the rendition has media to play (a complete segment that is
    /// not a gap).
    pub fn playable(&self) -> bool {
        self.stats.iter().any(|s| !s.gap)
    }
}

/// The multivariant playlist of `listed`: its video renditions as variants
/// in rank order (source first, then the rungs top down), its audio as the
/// alternative renditions. Segments shorter than `peak_min` (a stream's
/// tail) are left out of the peak.
pub(crate) fn master<'a>(
    listed: impl IntoIterator<Item = &'a Entry>,
    peak_min: Duration,
) -> String {
    let (audio, mut video): (Vec<&Entry>, Vec<&Entry>) =
        listed.into_iter().partition(|e| e.is_audio());
    video.sort_by_key(|e| e.rank);
    render_master(&video, &audio, peak_min)
}

/// (MSN, duration) of the gap segments listed for the MSNs `skipped` (a
/// rung re-added to the ladder long after it left, or whose encoder lost
/// GOPs): each lasts what another rendition listed for that MSN
/// (`listed_elsewhere`), else the target duration, so that every rendition
/// keeps the channel's numbering and the same timeline length.
pub(crate) fn gaps(
    skipped: Range<u64>,
    listed_elsewhere: impl Fn(u64) -> Option<Duration>,
    target_duration: u32,
) -> Vec<(u64, Duration)> {
    let fallback = Duration::from_secs(u64::from(target_duration));
    skipped
        .map(|msn| (msn, listed_elsewhere(msn).unwrap_or(fallback)))
        .collect()
}

fn render_master(video: &[&Entry], audio: &[&Entry], peak_min: Duration) -> String {
    let audio_variant = audio.first().and_then(|a| match &a.info {
        RenditionInfo::Audio { codecs } => Some(VariantAudio {
            codecs,
            rates: bitrates(&a.stats, peak_min),
        }),
        RenditionInfo::Video { .. } => None,
    });
    // A rung without segments yet plays at the source's frame rate (Apple
    // HLS authoring spec 9.15 wants FRAME-RATE on every video variant).
    let source_rate = video.iter().find_map(|r| frame_rate(&r.stats));
    let mut independent = true;
    let mut variants = Vec::new();
    for r in video {
        let RenditionInfo::Video {
            codecs,
            width,
            height,
        } = &r.info
        else {
            continue;
        };
        independent &= r.stats.iter().all(|s| s.independent || s.gap);
        variants.push(Variant::video(
            &r.name,
            codecs,
            (*width, *height),
            frame_rate(&r.stats).or(source_rate),
            VideoRates {
                measured: bitrates(&r.stats, peak_min),
                declared: r.declared_bps,
            },
            audio_variant,
        ));
    }
    let media: Vec<AudioMedia> = audio
        .iter()
        .enumerate()
        .map(|(i, a)| AudioMedia {
            group_id: "audio".to_owned(),
            name: a.name.to_string(),
            uri: format!("{}/index.m3u8", a.name),
            default: i == 0,
        })
        .collect();
    playlist::render_master(independent, &variants, &media)
}

/// Frames per second over the media (non-gap) segments.
fn frame_rate(stats: &VecDeque<SegmentStats>) -> Option<f64> {
    let (frames, secs) = stats
        .iter()
        .filter(|s| !s.gap)
        .fold((0u64, 0f64), |(f, d), s| {
            (f + u64::from(s.samples), d + s.duration.as_secs_f64())
        });
    (secs > 0.0 && frames > 0).then(|| frames as f64 / secs)
}

/// (peak, average) bits per second over the media segments. Segments
/// shorter than `min_for_peak` (the tail before a discontinuity) are left
/// out of the peak, unless there is nothing else: a lone keyframe would
/// inflate it.
fn bitrates(stats: &VecDeque<SegmentStats>, min_for_peak: Duration) -> (u64, u64) {
    let mut peak = 0f64;
    let mut fallback_peak = 0f64;
    let (mut bits, mut secs) = (0f64, 0f64);
    for s in stats.iter().filter(|s| !s.gap && !s.duration.is_zero()) {
        let d = s.duration.as_secs_f64();
        let rate = s.bytes as f64 * 8.0 / d;
        fallback_peak = fallback_peak.max(rate);
        if s.duration >= min_for_peak {
            peak = peak.max(rate);
        }
        bits += s.bytes as f64 * 8.0;
        secs += d;
    }
    if peak == 0.0 {
        peak = fallback_peak;
    }
    let avg = if secs > 0.0 { bits / secs } else { 0.0 };
    (peak.ceil() as u64, avg.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use crate::media::{IngestEvent, TrackKind, VideoEvent};
    use crate::package::testmedia::{audio_params, media, video_params};
    use crate::package::vod::VodAssembler;
    use crate::package::{ChannelPackager, ChannelStore, PackageConfig, PlaylistRequest, RungDecl};
    use std::time::{Duration, Instant, SystemTime};

    /// One packager's updates applied to a live store and to a VOD: a
    /// source, AAC, and a rung whose encoder lost one GOP (a gap).
    #[tokio::test(start_paused = true)]
    async fn live_and_vod_list_the_same_variants() {
        let cfg = PackageConfig::default();
        let mut pk = ChannelPackager::buffered("ledger", cfg.clone());
        let (wall0, t0) = (SystemTime::now(), Instant::now());
        let at = |ms: i64| Duration::from_millis(ms as u64);
        pk.push(IngestEvent::VideoConfig(video_params(320)), wall0, t0);
        pk.push(IngestEvent::AudioConfig(audio_params()), wall0, t0);
        pk.set_rungs(vec![RungDecl {
            name: "160p".into(),
            width: 212,
            height: 160,
            bitrate_bps: 250_000,
        }]);
        pk.push_rung(0, VideoEvent::Config(video_params(212)), wall0, t0);
        for p in media(0, 8, 30, true) {
            let ms = p.dts / 90;
            let (wall, now) = (wall0 + at(ms), t0 + at(ms));
            // The rung's encoder dropped the two GOPs of the segment from 4 s to 6 s.
            let rung =
                (p.track == TrackKind::Video && !(4000..6000).contains(&ms)).then(|| p.clone());
            pk.push(IngestEvent::Packet(p), wall, now);
            if let Some(r) = rung {
                pk.push_rung(0, VideoEvent::Packet(r), wall, now);
            }
        }
        pk.end();
        let updates = pk.take_updates();

        let store = ChannelStore::new("ledger", &cfg);
        store.apply(updates.clone());
        let live = store.master_playlist().await.expect("live master");
        let mut vod = VodAssembler::new(&cfg);
        vod.apply(updates);
        let vod_out = vod.finish();
        let vod = vod_out.master.clone();

        let parse = |text: &str| {
            m3u8_rs::parse_master_playlist_res(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e:?}: {text}"))
        };
        let (live_pl, vod_pl) = (parse(&live), parse(&vod));
        let described = |pl: &m3u8_rs::MasterPlaylist| {
            pl.variants
                .iter()
                .map(|v| {
                    (
                        v.uri.clone(),
                        v.bandwidth,
                        v.average_bandwidth,
                        v.frame_rate.map(|f| (f * 1000.0).round() as u64),
                        v.codecs.clone(),
                        v.resolution.map(|r| (r.width, r.height)),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            described(&live_pl),
            described(&vod_pl),
            "live:\n{live}\nvod:\n{vod}"
        );
        assert_eq!(live_pl.variants.len(), 2, "source and the rung: {live}");
        assert!(
            live_pl
                .variants
                .iter()
                .all(|v| v.average_bandwidth.is_some())
        );
        assert_eq!(live_pl.alternatives.len(), vod_pl.alternatives.len());
        assert_eq!(
            live.contains("#EXT-X-INDEPENDENT-SEGMENTS"),
            vod.contains("#EXT-X-INDEPENDENT-SEGMENTS")
        );
        // The lost GOP is a gap in both, and out of both rates.
        let rung = store
            .media_playlist("160p", PlaylistRequest::default())
            .await
            .expect("rung playlist");
        assert!(rung.contains("#EXT-X-GAP"), "{rung}");

        // Every media playlist lists the same segments live and as VOD:
        // numbering, durations, gaps, discontinuities.
        let listing = |text: &str| {
            // EXT-X-DISCONTINUITY-SEQUENCE:0 may be left out (RFC 8216bis 4.4.3.3).
            let dseq = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
                .unwrap_or("0")
                .to_owned();
            let tags = text.lines().filter(|l| {
                *l == "#EXT-X-DISCONTINUITY"
                    || ["#EXTINF", "#EXT-X-GAP", "#EXT-X-MEDIA-SEQUENCE"]
                        .iter()
                        .any(|t| l.starts_with(t))
            });
            (dseq, tags.map(str::to_owned).collect::<Vec<_>>())
        };
        let vod_media = vod_out.media;
        assert_eq!(vod_media.len(), 3, "source, rung and audio");
        for (name, vod_text) in &vod_media {
            let live_text = store
                .media_playlist(name, PlaylistRequest::default())
                .await
                .expect("live playlist");
            assert_eq!(
                listing(&live_text),
                listing(vod_text),
                "{name}: live:\n{live_text}\nvod:\n{vod_text}"
            );
        }
    }
}
