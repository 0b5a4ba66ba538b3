//! Fuzzes the LL-HLS request side: `rungs::serve::hls::routes` (path extraction, delivery-directive query parsing, media file name parsing) against a live store.
//!
//! The input is everything after `/hls/` in a GET request's URI, e.g.
//! `live/source/index.m3u8?_HLS_msn=3&_HLS_part=2` or `live/audio/loyw3v5n-2.1.m4s`. The
//! channel `live` is packaged once from a synthetic 8 s stream (ffmpeg's 64x48 H.264 record,
//! AAC-LC 44.1 kHz stereo) that starts at 1_700_000_000_123 ms, so its stream id is
//! `loyw3v5n`. Tokio's clock is paused, so blocking reloads and hinted parts time out at once
//! instead of hanging the fuzzer.
//!
//! `directives()` and `package::names::parse` are private; they are reached through the
//! router and `ChannelStore::media_file`, as a client reaches them. `RUNGS_FUZZ_TRACE=1`
//! prints each response's status and body (to replay one input).
#![no_main]

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::media::{IngestEvent, Packet, TrackKind, aac, h264};
use rungs::metrics::METRICS;
use rungs::package::{ChannelPackager, ChannelStore, PackageConfig};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tower::ServiceExt as _;

/// AVCDecoderConfigurationRecord from `ffmpeg -f lavfi -i testsrc=size=64x48:rate=10
/// -pix_fmt yuv420p -c:v libx264 -preset ultrafast -f flv` (Main profile, level 1.0).
const AVCC: &[u8] = &[
    0x01, 0x4d, 0x40, 0x0a, 0xff, 0xe1, 0x00, 0x17, 0x67, 0x4d, 0x40, 0x0a, 0xec, 0xa2, 0x3d, 0x80,
    0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x00, 0xa0, 0x78, 0x91, 0x2c, 0xb0, 0x01,
    0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
];
/// AAC-LC, 44.1 kHz, stereo.
const ASC: &[u8] = &[0x12, 0x10];
const START_MS: u64 = 1_700_000_000_123;

struct World {
    rt: tokio::runtime::Runtime,
    app: Router,
    _store: Arc<ChannelStore>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let cfg = PackageConfig::default();
        let store = ChannelStore::new("live", &cfg);
        let mut packager = ChannelPackager::new("live", store.clone(), cfg);
        let start = UNIX_EPOCH + Duration::from_millis(START_MS);
        let arrival = Instant::now();
        let video = h264::parse_avc_config(Bytes::from_static(AVCC)).expect("ffmpeg's avcC");
        let audio = aac::parse_audio_specific_config(Bytes::from_static(ASC)).expect("AAC-LC");
        packager.push(IngestEvent::VideoConfig(Arc::new(video)), start, arrival);
        packager.push(IngestEvent::AudioConfig(Arc::new(audio)), start, arrival);
        // 8 s at 30 fps with a keyframe every second, and 44.1 kHz AAC frames, interleaved.
        let (mut v, mut a) = (0i64, 0i64);
        while v < 240 {
            let v_dts = v * 3000;
            let a_dts = a * 1024 * 90_000 / 44_100;
            let pkt = if a_dts < v_dts {
                a += 1;
                Packet {
                    track: TrackKind::Audio,
                    dts: a_dts,
                    pts: a_dts,
                    keyframe: true,
                    data: Bytes::from_static(&[0x21, 0x1b, 0x94, 0x00]),
                }
            } else {
                let keyframe = v % 30 == 0;
                v += 1;
                Packet {
                    track: TrackKind::Video,
                    dts: v_dts,
                    pts: v_dts,
                    keyframe,
                    data: Bytes::from_static(if keyframe {
                        &[0, 0, 0, 2, 0x65, 0x88]
                    } else {
                        &[0, 0, 0, 2, 0x41, 0x9a]
                    }),
                }
            };
            let now = start + Duration::from_micros(pkt.dts as u64 * 100 / 9);
            packager.push(IngestEvent::Packet(pkt), now, arrival);
        }
        let lookup = {
            let store = store.clone();
            move |id: &str| (id == "live").then(|| store.clone())
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        World {
            rt,
            app: rungs::serve::hls::routes(lookup),
            _store: store,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut uri = b"/hls/".to_vec();
    uri.extend_from_slice(data);
    let Ok(req) = Request::get(uri.as_slice()).body(Body::empty()) else {
        return;
    };
    w.rt.block_on(async {
        let res = w.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (ctype, cache) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        match status {
            StatusCode::OK => {
                assert!(
                    matches!(
                        ctype.as_str(),
                        "application/vnd.apple.mpegurl" | "video/mp4" | "audio/mp4"
                    ),
                    "200 with content type {ctype:?}"
                );
                assert!(!cache.is_empty(), "200 without Cache-Control");
            }
            // A URI that matches no route gets axum's bare 404 (the node's fallback is layered
            // on outside `hls::routes`).
            StatusCode::NOT_FOUND if cache.is_empty() => {}
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(cache, "no-store", "{status} may not be cached");
            }
            other => panic!("unexpected status {other}"),
        }
        let body = to_bytes(res.into_body(), 64 << 20).await.expect("body");
        if std::env::var_os("RUNGS_FUZZ_TRACE").is_some() {
            eprintln!(
                "{status} {ctype} {cache}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    });
    // Every blocked request let go of the gauge.
    assert_eq!(
        METRICS.blocked_requests.get(),
        0,
        "blocked_requests gauge leaked"
    );
});
