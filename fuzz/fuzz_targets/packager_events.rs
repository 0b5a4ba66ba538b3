//! Fuzzes the packager through its public API, `rungs::package::ChannelPackager` writing into
//! a `ChannelStore`, with arbitrary event sequences: timestamps that go backwards or jump by
//! hours, B-frame composition offsets, keyframes anywhere, video and audio configuration
//! changes mid-GOP, publisher gaps (`discontinuity`) and ends, and a wall clock that moves
//! on by fuzzer-chosen steps. Then every rendition's media playlist is read back.
//!
//! Input: events of 5 bytes, `op a b c d` (`op % 8`): 0 video configuration (`a % 3` picks
//! one of three real avcC records), 1 audio configuration (`a % 2`: AAC-LC 44.1 kHz stereo
//! or 48 kHz mono), 2 video frame (`a b` the signed dts step in 1/100 s, `c` the signed
//! composition offset in 1/100 s, `d` bit 0 keyframe, bits 1-7 the size / 8), 3 audio frame
//! (`a b` the signed dts step in 1/1000 s), 4 a jump (`a b c d` big-endian u32 ticks of 90
//! kHz, forwards or, with bit 31, backwards), 5 discontinuity, 6 end, 7 the wall clock
//! moves on (`a b` ms).
#![no_main]

use axum::body::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::media::{IngestEvent, Packet, TrackKind, aac, h264};
use rungs::package::{ChannelPackager, ChannelStore, PackageConfig, PlaylistRequest};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

const AVCC: [&[u8]; 3] = [
    include_bytes!("../corpus/avc_config/seed-main-bframes-avcc"),
    include_bytes!("../corpus/avc_config/seed-baseline-avcc"),
    include_bytes!("../corpus/avc_config/seed-high-cqm-avcc"),
];
const ASC: [&[u8]; 2] = [&[0x12, 0x10], &[0x11, 0x88]];

fuzz_target!(|input: &[u8]| {
    let cfg = PackageConfig::default();
    let store = ChannelStore::new("live", &cfg);
    let mut packager = ChannelPackager::new("live", store.clone(), cfg);
    let mut wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let arrival = Instant::now();
    let (mut video_dts, mut audio_dts) = (0i64, 0i64);
    for e in input.chunks_exact(5) {
        let [op, a, b, c, d] = [e[0], e[1], e[2], e[3], e[4]];
        let step = i64::from(i16::from_be_bytes([a, b]));
        let event = match op % 8 {
            0 => {
                let params = h264::parse_avc_config(Bytes::from_static(AVCC[usize::from(a) % 3]))
                    .expect("a real avcC");
                IngestEvent::VideoConfig(Arc::new(params))
            }
            1 => {
                let params =
                    aac::parse_audio_specific_config(Bytes::from_static(ASC[usize::from(a) % 2]))
                        .expect("a real AudioSpecificConfig");
                IngestEvent::AudioConfig(Arc::new(params))
            }
            2 => {
                video_dts = video_dts.saturating_add(step * 900);
                let keyframe = d & 1 == 1;
                let size = usize::from(d >> 1) * 8 + 2;
                let mut data = vec![0u8; 4 + size];
                data[..4].copy_from_slice(&(size as u32).to_be_bytes());
                data[4] = if keyframe { 0x65 } else { 0x41 };
                IngestEvent::Packet(Packet {
                    track: TrackKind::Video,
                    dts: video_dts,
                    pts: video_dts.saturating_add(i64::from(c as i8) * 900),
                    keyframe,
                    data: Bytes::from(data),
                })
            }
            3 => {
                audio_dts = audio_dts.saturating_add(step * 90);
                IngestEvent::Packet(Packet {
                    track: TrackKind::Audio,
                    dts: audio_dts,
                    pts: audio_dts,
                    keyframe: true,
                    data: Bytes::from_static(&[0x21, 0x1b, 0x94, 0x00]),
                })
            }
            4 => {
                let jump = i64::from(u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff);
                let jump = if a & 0x80 != 0 { -jump } else { jump };
                video_dts = video_dts.saturating_add(jump);
                audio_dts = audio_dts.saturating_add(jump);
                continue;
            }
            5 => {
                packager.discontinuity();
                continue;
            }
            6 => {
                packager.end();
                continue;
            }
            _ => {
                wall += Duration::from_millis(u64::from(u16::from_be_bytes([a, b])));
                continue;
            }
        };
        packager.push(event, wall, arrival);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        for rendition in store.renditions() {
            // A playlist with nothing in it yet times out (the clock is paused: at once).
            if let Ok(text) = store
                .media_playlist(&rendition, PlaylistRequest::default())
                .await
            {
                assert!(text.starts_with("#EXTM3U"), "{rendition}: {text}");
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("#EXTINF:") {
                        let secs: f64 = v.trim_end_matches(',').parse().expect("EXTINF");
                        assert!(secs.is_finite() && secs >= 0.0, "{rendition}: {line}");
                    }
                }
            }
        }
    });
});
