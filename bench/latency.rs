//! Ingest-to-part latency of a release node.
//!
//! `cargo bench --bench latency`: starts the release binary, publishes a
//! live-paced 720p30 stream (libx264 `-tune zerolatency`, AAC) with 200 ms
//! parts, follows the source rendition's preload hints for ~30 s and, for
//! each part, takes the wall time at which its hinted GET completed (the part
//! became fetchable) and the part's tfdt. With T0 the moment ffmpeg started
//! sending (its "Output #0" line) and t_first the stream's first decode time:
//!
//!   latency(first sample) = done - (T0 + (tfdt - t_first))
//!   latency(last sample)  = done - (T0 + (tfdt_last_sample - t_first))
//!
//! The second is what the packager adds after the last frame of a part
//! arrived (RTMP transfer + packaging + HTTP); the first adds the part's own
//! duration. Also prints the node's own rungs_ingest_to_part_seconds.
//!
//! Env: RUNGS_BENCH_SECONDS (default 30), RUNGS_BENCH_SIZE (default 1280x720).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/env.rs"]
mod env;
#[path = "common/release.rs"]
mod release;

use common::fmp4;
use common::*;
use env::env_parse;
use release::release_binary;
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench -- <filter>` passes extra args; `cargo test --benches` passes --bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(30);
    let (w, h) = std::env::var("RUNGS_BENCH_SIZE")
        .ok()
        .and_then(|s| {
            s.split_once('x')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        })
        .unwrap_or((1280u32, 720u32));
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("rungs-bench-")
        .tempdir()
        .unwrap();
    let node = Node::start_in(tmp.path(), NodeConfig::default(), &bin);
    let ch = node.create_channel("latency");
    let http = Http::new();
    let opts = PubOpts {
        width: w,
        height: h,
        bframes: false,
        zerolatency: true,
        video_bitrate_k: 2500,
        ..Default::default()
    };
    let publisher = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, tmp.path());
    node.attach_log(&publisher.log_path);
    let src = node.media_url(&ch.id, "source");

    // The first playlist: the earliest media of the stream, and the init.
    let first = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let r = http.try_get(&src).ok()?;
        if r.status != 200 {
            return None;
        }
        let pl = parse_media(&r.text()).ok()?;
        (!pl.all_parts().is_empty()).then_some(pl)
    })
    .unwrap_or_else(|| panic!("no playlist; ffmpeg log:\n{}", publisher.log()));
    let t0 = publisher
        .output_started
        .lock()
        .unwrap()
        .unwrap_or(publisher.spawned);
    let t0_src = if publisher.output_started.lock().unwrap().is_some() {
        "ffmpeg 'Output #0'"
    } else {
        "ffmpeg spawn"
    };
    let init = fmp4::parse_init(
        &http
            .get(&resolve(&src, first.map_uri.as_deref().expect("EXT-X-MAP")))
            .body,
    )
    .expect("init");
    let ts = init.tracks[0].timescale as f64;
    let (fm, fi, fp) = first.all_parts()[0];
    assert_eq!(
        (fm, fi),
        (first.media_sequence, 0),
        "the playlist no longer starts at the stream's first part"
    );
    let fb = http.get(&resolve(&src, &fp.uri)).body;
    let t_first = fmp4::parse_fragments(&fb, Some(&init)).expect("first part")[0].base_decode_time;

    let mut lat_first = Vec::new();
    let mut lat_last = Vec::new();
    let mut hint_wait = Vec::new();
    let mut cur = fetch_media(&http, &src, "");
    let start = Instant::now();
    let mut gaps = 0;
    let mut last_dt: Option<u64> = None;
    while start.elapsed() < Duration::from_secs(secs) {
        let hint = cur.pl.hint("PART").expect("PRELOAD-HINT").uri.clone();
        let r = http.get(&resolve(&src, &hint));
        assert_eq!(r.status, 200, "hinted part {hint}");
        hint_wait.push(r.elapsed.as_secs_f64());
        let frags = fmp4::parse_fragments(&r.body, Some(&init)).expect("part parses");
        let tfdt = frags[0].base_decode_time;
        let last = frags.last().unwrap();
        let last_sample_dt = last.base_decode_time + last.duration()
            - last.samples.last().map_or(0, |s| s.duration as u64);
        if last_dt.is_some_and(|d| d != tfdt) {
            gaps += 1;
        }
        last_dt = Some(last.base_decode_time + last.duration());
        let done = r.done.duration_since(t0).as_secs_f64();
        lat_first.push(done - (tfdt - t_first) as f64 / ts);
        lat_last.push(done - (last_sample_dt - t_first) as f64 / ts);
        let (m, p) = cur.pl.next_part();
        cur = fetch_blocking(&http, &src, m, p);
    }
    let m = node.metrics();
    let c = [("channel", ch.id.as_str()), ("rendition", "source")];
    let hq = |q| {
        m.histogram_quantile("rungs_ingest_to_part_seconds", &c, q)
            .map_or("n/a".into(), |v| format!("{v:.3}s"))
    };
    let n = m.sum("rungs_ingest_to_part_seconds_count", &c);
    let mean = m.sum("rungs_ingest_to_part_seconds_sum", &c) / n.max(1.0);
    println!(
        "rungs latency bench: {w}x{h}@30 zerolatency, 200 ms parts, {secs} s, {} parts, T0 = {t0_src}",
        lat_first.len()
    );
    println!(
        "  ingest->part available, from part's first sample: p50 {:.3}s  p90 {:.3}s  (min {:.3}s max {:.3}s)",
        quantile(&lat_first, 0.5),
        quantile(&lat_first, 0.9),
        lat_first.iter().cloned().fold(f64::INFINITY, f64::min),
        lat_first.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "  ingest->part available, from part's last sample:  p50 {:.3}s  p90 {:.3}s  (min {:.3}s max {:.3}s)",
        quantile(&lat_last, 0.5),
        quantile(&lat_last, 0.9),
        lat_last.iter().cloned().fold(f64::INFINITY, f64::min),
        lat_last.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "  preload-hint GET wait: p50 {:.3}s p90 {:.3}s",
        quantile(&hint_wait, 0.5),
        quantile(&hint_wait, 0.9)
    );
    println!(
        "  node rungs_ingest_to_part_seconds{{rendition=source}}: count {n}, mean {mean:.3}s, p50 {} p90 {} p99 {}",
        hq(0.5),
        hq(0.9),
        hq(0.99)
    );
    if gaps > 0 {
        println!("  WARNING: {gaps} parts did not start where the previous one ended");
    }
}
