//! The CUDA kernels on an NVIDIA GPU: `make bench-gpu` (or `cargo bench
//! --bench gpu`). Needs a GPU and its driver; says so and fails without one.
//!
//! Printed:
//! - the ladder kernel's time per 1080p frame (720p/480p/360p/160p, I420 and
//!   NV12 sources), kernels queued on several streams at once as several
//!   channels would; goal <= 50 us;
//! - its achieved bandwidth (the least bytes a launch must move: the source
//!   read once, every rung written once) as a share of a plain
//!   device-to-device copy measured in the same run; goal >= 60%;
//! - PSNR+SSIM frame pairs per second at 1080p, batched, with the upload of
//!   the pairs and without it (kernels only); goal >= 2000 pairs/s.
//!
//! Timing: host clock around work that ends with a stream synchronize, after
//! a warm-up; the median of several repeats. Env: RUNGS_BENCH_STREAMS
//! (default 4), RUNGS_BENCH_FRAMES (launches per stream, default 200),
//! RUNGS_BENCH_JSON (a file to write the figures to, as one JSON object).

use std::sync::Arc;
use std::time::Instant;

use rungs::gpu::GpuConfig;
use rungs::gpu::device::Gpu;
use rungs::transcode::frame::{Frame, FramePool, Size};
use rungs::transcode::quality::cuda::GpuQuality;
use rungs::transcode::scale::{GpuScaler, Scaler};

const SOURCE: Size = Size::new(1920, 1080);
const LADDER: [Size; 4] = [
    Size::new(1280, 720),
    Size::new(854, 480),
    Size::new(640, 360),
    Size::new(284, 160),
];
const REPEATS: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let streams: usize = env("RUNGS_BENCH_STREAMS", 4);
    let frames: usize = env("RUNGS_BENCH_FRAMES", 200);
    let gpu = Gpu::open(&GpuConfig::default()).unwrap_or_else(|e| {
        eprintln!("bench-gpu needs an NVIDIA GPU: {e}");
        std::process::exit(1);
    });
    println!("GPU {}: {}", gpu.index, gpu.name);
    let mut figures = serde_json::json!({
        "gpu": gpu.name,
        "streams": streams,
        "goals": { "ladder_us_per_frame": 50, "bandwidth_share_of_copy_pct": 60, "quality_pairs_per_s": 2000 },
    });

    let src = texture(SOURCE);
    let mut scalers: Vec<GpuScaler> = (0..streams)
        .map(|_| GpuScaler::new(Arc::clone(&gpu), SOURCE, &LADDER).expect("scaler"))
        .collect();
    let mut out: Vec<Frame> = LADDER.iter().map(|&s| frame(s)).collect();
    for s in &mut scalers {
        // One full pass uploads the source (and checks the whole path works).
        s.scale(&src, &mut out).expect("scale");
    }

    let bytes = scalers[0].min_bytes_per_frame();
    let copy = median(
        (0..REPEATS)
            .map(|_| scalers[0].time_device_copy(256 << 20, 20).expect("copy"))
            .collect(),
    );
    let copy_bw = 2.0 * f64::from(256u32 << 20) / copy;
    figures["device_copy_gb_per_s"] = (copy_bw / 1e9).into();
    println!(
        "device-to-device copy: {:.0} GB/s (bytes read + written)",
        copy_bw / 1e9
    );
    for nv12 in [false, true] {
        let per_frame = median(
            (0..REPEATS)
                .map(|_| {
                    let started = Instant::now();
                    for _ in 0..frames {
                        for s in &mut scalers {
                            s.launch_on_device(nv12).expect("launch");
                        }
                    }
                    for s in &scalers {
                        s.synchronize().expect("sync");
                    }
                    started.elapsed().as_secs_f64() / (frames * streams) as f64
                })
                .collect(),
        );
        let bw = bytes as f64 / per_frame;
        figures[if nv12 { "ladder_nv12" } else { "ladder_i420" }] = serde_json::json!({
            "us_per_frame": per_frame * 1e6,
            "gb_per_s": bw / 1e9,
            "share_of_copy_pct": 100.0 * bw / copy_bw,
        });
        println!(
            "ladder kernel, {} source, {streams} streams: {:.1} us per 1080p frame (goal <= 50), \
             {:.0} GB/s = {:.0}% of the copy (goal >= 60%)",
            if nv12 { "NV12" } else { "I420" },
            per_frame * 1e6,
            bw / 1e9,
            100.0 * bw / copy_bw
        );
    }

    let batch = 16;
    let a: Vec<Frame> = (0..batch).map(|_| texture(SOURCE)).collect();
    let mut b: Vec<Frame> = (0..batch).map(|_| texture(SOURCE)).collect();
    for (i, f) in b.iter_mut().enumerate() {
        // A different picture from `a`, deterministically.
        for (k, p) in f.pixels_mut().iter_mut().enumerate() {
            *p = p.wrapping_add(((k + i) % 7) as u8);
        }
    }
    let pairs: Vec<(&Frame, &Frame)> = a.iter().zip(&b).collect();
    let mut meter = GpuQuality::new(Arc::clone(&gpu), SOURCE, batch).expect("meter");
    meter.measure(&pairs).expect("warm-up");
    let rounds: u32 = 20;
    let with_upload = median(
        (0..REPEATS)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..rounds {
                    meter.measure(&pairs).expect("measure");
                }
                started.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let kernels_only = median(
        (0..REPEATS)
            .map(|_| meter.time_kernels(batch, rounds).expect("kernels"))
            .collect(),
    );
    let pairs = batch as f64 * f64::from(rounds);
    println!(
        "PSNR+SSIM at 1080p, batches of {batch}: {:.0} pairs/s with the upload, \
         {:.0} pairs/s kernels only (goal >= 2000)",
        pairs / with_upload,
        pairs / kernels_only
    );
    figures["quality_pairs_per_s"] = serde_json::json!({
        "with_upload": pairs / with_upload,
        "kernels_only": pairs / kernels_only,
    });
    if let Some(path) = std::env::var_os("RUNGS_BENCH_JSON") {
        let text = serde_json::to_string_pretty(&figures).expect("JSON");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!(
                "bench-gpu: cannot write {}: {e}",
                std::path::Path::new(&path).display()
            );
            std::process::exit(1);
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn frame(size: Size) -> Frame {
    FramePool::new(size, 1).expect("size").get().expect("frame")
}

/// A picture with detail at every frequency (never zeros: they can time
/// faster than real data).
fn texture(size: Size) -> Frame {
    let mut f = frame(size);
    for (i, b) in f.pixels_mut().iter_mut().enumerate() {
        let i = i as u32;
        *b = (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0];
    }
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
