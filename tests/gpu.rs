//! Tests that need an NVIDIA GPU (and its driver): named `gpu_*` and ignored
//! by default, run by `make test-gpu`. The frames come from the FFmpeg CLI
//! (testsrc2, and mandelbrot with grain; one source in 10 bits too), made
//! once into `target/gpu-frames` by the test here that needs no GPU; a GPU
//! machine without FFmpeg reads them from the folder `RUNGS_GPU_FRAMES`
//! names (the device bundle carries them). This binary links no FFmpeg
//! library, so it runs on such a machine as built here.

#[path = "gpu/compare.rs"]
mod compare;
#[path = "gpu/targets.rs"]
mod targets;

use compare::max_difference;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rungs::gpu::GpuConfig;
use rungs::gpu::device::Gpu;
use rungs::transcode::frame::{Frame, FramePool, Plane, Size};
use rungs::transcode::quality::cuda::GpuQuality;
use rungs::transcode::quality::{self, FrameMse};
use rungs::transcode::scale::{Cascade, CpuScaler, GpuScaler, ScaleOptions, Scaler};

const FRAMES: usize = 4;

/// (name, lavfi graph, size, ladder below it)
fn sources() -> Vec<(&'static str, &'static str, Size, Vec<Size>)> {
    let ladder_1080 = vec![
        Size::new(1280, 720),
        Size::new(854, 480),
        Size::new(640, 360),
        Size::new(284, 160),
    ];
    vec![
        (
            "testsrc2-1080",
            "testsrc2=size=1920x1080:rate=30",
            Size::new(1920, 1080),
            ladder_1080.clone(),
        ),
        (
            "mandelbrot-grain-1080",
            "mandelbrot=size=1920x1080:rate=30",
            Size::new(1920, 1080),
            ladder_1080,
        ),
        (
            "testsrc2-768",
            "testsrc2=size=1366x768:rate=30",
            Size::new(1366, 768),
            vec![
                Size::new(1280, 720),
                Size::new(854, 480),
                Size::new(640, 360),
                Size::new(284, 160),
            ],
        ),
    ]
}

/// The source the 10-bit test reads: odd chroma width (683). testsrc2 made
/// in 10 bits directly leaves the two low bits 0; made in RGB and converted,
/// two thirds of its samples use them.
fn ten_bit_source() -> (&'static str, &'static str, Size, Vec<Size>) {
    let (_, _, size, ladder) = sources().remove(2);
    (
        "testsrc2-rgb-768",
        "testsrc2=size=1366x768:rate=30,format=rgb24",
        size,
        ladder,
    )
}

/// [`FRAMES`] raw frames of `graph` in `pix_fmt`, packed as FFmpeg's rawvideo
/// writes them, `frame_len` bytes each: from `RUNGS_GPU_FRAMES/<file>` when
/// set, else made with the FFmpeg CLI into `target/gpu-frames`.
fn raw(file: &str, graph: &str, pix_fmt: &str, frame_len: usize) -> Vec<u8> {
    let dir = std::env::var_os("RUNGS_GPU_FRAMES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/gpu-frames"),
        PathBuf::from,
    );
    let file = dir.join(file);
    if !file.exists() {
        std::fs::create_dir_all(&dir).expect("frames folder");
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", graph, "-frames:v"])
            .arg(FRAMES.to_string())
            .args(["-pix_fmt", pix_fmt, "-f", "rawvideo"])
            .arg(&file)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "no {file:?}, and the FFmpeg CLI could not make it: run `cargo test --test \
             gpu frames_for` where FFmpeg is and point RUNGS_GPU_FRAMES at the folder"
        );
    }
    let data = std::fs::read(&file).expect("read the frames");
    assert_eq!(
        data.len(),
        FRAMES * frame_len,
        "{file:?} holds {FRAMES} frames of {frame_len} bytes"
    );
    data
}

/// Raw I420 frames of `name` (`<name>.yuv`), with grain added here to a
/// `-grain-` source.
fn frames(name: &str, graph: &str, size: Size) -> Vec<Frame> {
    let pool = FramePool::new(size, FRAMES).expect("size");
    let len = pool.get().expect("frame").layout().packed_len();
    let data = raw(&format!("{name}.yuv"), graph, "yuv420p", len);
    data.chunks_exact(len)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = pool.get().expect("pool holds every frame");
            f.copy_from_packed(chunk).expect("packed length");
            if name.contains("-grain-") {
                add_grain(&mut f, i as u64);
            }
            f
        })
        .collect()
}

/// Temporal grain of up to +-12 code values on every plane (what FFmpeg's
/// `noise=alls=12:allf=t+u` does), drawn here from a fixed seed per frame
/// rather than stored: noise does not compress, and the frames travel to GPU
/// machines in the device bundle.
fn add_grain(f: &mut Frame, frame: u64) {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ frame.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for b in f.pixels_mut() {
        // xorshift64*: cheap, deterministic, well spread.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 59; // 0..=31
        let delta = (r % 25) as i16 - 12;
        *b = (i16::from(*b) + delta).clamp(0, 255) as u8;
    }
}

/// Raw 10-bit frames of `name` (`<name>-yuv420p10le.yuv`): per frame, its Y,
/// U and V planes of little-endian u16 samples, packed.
fn frames_10bit(name: &str, graph: &str, size: Size) -> Vec<[Vec<u8>; 3]> {
    let luma = 2 * size.area() as usize;
    let chroma = 2 * size.chroma().area() as usize;
    let file = format!("{name}-yuv420p10le.yuv");
    let data = raw(&file, graph, "yuv420p10le", luma + 2 * chroma);
    data.chunks_exact(luma + 2 * chroma)
        .map(|f| {
            let (y, uv) = f.split_at(luma);
            let (u, v) = uv.split_at(chroma);
            [y.to_vec(), u.to_vec(), v.to_vec()]
        })
        .collect()
}

fn gpu() -> Arc<Gpu> {
    Gpu::open(&GpuConfig::default()).unwrap_or_else(|e| panic!("this test needs a GPU: {e}"))
}

/// Output frames filled with a value no scaler writes everywhere, so a
/// sample the GPU leaves unwritten shows.
fn poisoned(ladder: &[Size]) -> Vec<Frame> {
    ladder
        .iter()
        .map(|&s| {
            let mut f = FramePool::new(s, 1).expect("size").get().expect("frame");
            f.pixels_mut().fill(0xA5);
            f
        })
        .collect()
}

/// No GPU needed: makes (once) and checks the frames the GPU tests read, so
/// that `make device-bundle` can carry them to a machine without FFmpeg.
#[test]
fn frames_for_the_gpu_tests_are_made_and_whole() {
    for (name, graph, size, _) in sources() {
        let f = frames(name, graph, size);
        assert_eq!(f.len(), FRAMES);
        // Real pictures, not a blank: more than a few distinct sample values.
        let mut seen = [false; 256];
        for &b in f[0].plane(Plane::Y) {
            seen[usize::from(b)] = true;
        }
        assert!(
            seen.iter().filter(|&&s| s).count() > 32,
            "{name} looks blank"
        );
    }
    let (name, graph, size, _) = ten_bit_source();
    let f = frames_10bit(name, graph, size);
    assert_eq!(f.len(), FRAMES);
    // Real 10-bit samples: the two bits below the top eight are used.
    let low_bits = f[0][0]
        .chunks_exact(2)
        .filter(|le| u16::from_le_bytes([le[0], le[1]]) % 4 != 0)
        .count();
    assert!(low_bits > f[0][0].len() / 8, "{name} has no 10-bit detail");
}

#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_scale_matches_cpu_on_real_frames() {
    let gpu = gpu();
    for (name, graph, size, ladder) in sources() {
        let direct = ScaleOptions {
            cascade: Cascade::Direct,
            ..ScaleOptions::default()
        };
        let mut cpu = CpuScaler::with_options(size, &ladder, direct).expect("cpu scaler");
        let mut gpu_scaler = GpuScaler::new(gpu.clone(), size, &ladder).expect("gpu scaler");
        for (i, src) in frames(name, graph, size).iter().enumerate() {
            let (mut want, mut got) = (poisoned(&ladder), poisoned(&ladder));
            cpu.scale(src, &mut want).expect("cpu scale");
            gpu_scaler.scale(src, &mut got).expect("gpu scale");
            for (r, (w, g)) in want.iter().zip(&got).enumerate() {
                let d = max_difference(w, g);
                assert!(
                    d <= 1,
                    "{name} frame {i} rung {}: GPU differs by {d}",
                    ladder[r]
                );
                assert_eq!(g.pts(), src.pts());
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_scale_reads_nv12_as_it_reads_i420() {
    let gpu = gpu();
    let (name, graph, size, ladder) = sources().remove(1);
    let mut scaler = GpuScaler::new(gpu, size, &ladder).expect("gpu scaler");
    for src in frames(name, graph, size) {
        // NV12 with pitches unlike ours, as a decoder might hand it over.
        let (w, h) = (size.width as usize, size.height as usize);
        let (cw, ch) = src.layout().plane_size(Plane::U);
        let (y_pitch, uv_pitch) = (w + 32, 2 * cw + 96);
        let mut y = vec![0u8; y_pitch * h];
        let mut uv = vec![0u8; uv_pitch * ch];
        for row in 0..h {
            y[row * y_pitch..][..w].copy_from_slice(src.row(Plane::Y, row));
        }
        for row in 0..ch {
            let (u, v) = (src.row(Plane::U, row), src.row(Plane::V, row));
            for x in 0..cw {
                uv[row * uv_pitch + 2 * x] = u[x];
                uv[row * uv_pitch + 2 * x + 1] = v[x];
            }
        }
        let (mut want, mut got) = (poisoned(&ladder), poisoned(&ladder));
        scaler.scale(&src, &mut want).expect("i420");
        scaler
            .scale_nv12((&y, y_pitch), (&uv, uv_pitch), src.pts(), &mut got)
            .expect("nv12");
        for (r, (a, b)) in want.iter().zip(&got).enumerate() {
            assert_eq!(max_difference(a, b), 0, "rung {}", ladder[r]);
        }
    }
}

/// NVDEC's 10-bit layout (P010) reduced to 8 bits and scaled on the GPU gives
/// what the CPU gives for the same picture decoded in software (reduced when
/// copied in, then scaled): within 1 of the CPU scaler, as 8-bit sources are,
/// and exactly the GPU's own ladder of the CPU-reduced picture, since the
/// reduction is exact.
#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_scale_reduces_p010_as_the_cpu_reduces_10_bit() {
    let gpu = gpu();
    let (name, graph, size, ladder) = ten_bit_source();
    let direct = ScaleOptions {
        cascade: Cascade::Direct,
        ..ScaleOptions::default()
    };
    let mut cpu = CpuScaler::with_options(size, &ladder, direct).expect("cpu scaler");
    let mut scaler = GpuScaler::new(gpu, size, &ladder).expect("gpu scaler");
    let pool = FramePool::new(size, 1).expect("size");
    let (w, h) = (size.width as usize, size.height as usize);
    let c = size.chroma();
    let (cw, ch) = (c.width as usize, c.height as usize);
    // Pitches unlike ours and unlike each other, as a decoder's surface has them.
    let (y_pitch, uv_pitch) = (2 * w + 128, 4 * cw + 320);
    for (i, [y10, u10, v10]) in frames_10bit(name, graph, size).iter().enumerate() {
        let mut src = pool.get().expect("frame");
        src.copy_from_planes_10le([(y10, 2 * w), (u10, 2 * cw), (v10, 2 * cw)])
            .expect("10-bit planes");
        src.set_pts(i as i64 * 3000);
        let sample =
            |plane: &[u8], at: usize| u16::from_le_bytes([plane[2 * at], plane[2 * at + 1]]);
        let mut y = vec![0u8; y_pitch * h];
        for row in 0..h {
            for x in 0..w {
                let p010 = sample(y10, row * w + x) << 6;
                y[row * y_pitch + 2 * x..][..2].copy_from_slice(&p010.to_le_bytes());
            }
        }
        let mut uv = vec![0u8; uv_pitch * ch];
        for row in 0..ch {
            for x in 0..cw {
                let at = row * uv_pitch + 4 * x;
                let (u, v) = (
                    sample(u10, row * cw + x) << 6,
                    sample(v10, row * cw + x) << 6,
                );
                uv[at..][..2].copy_from_slice(&u.to_le_bytes());
                uv[at + 2..][..2].copy_from_slice(&v.to_le_bytes());
            }
        }
        let (mut want, mut eight_bit, mut got) =
            (poisoned(&ladder), poisoned(&ladder), poisoned(&ladder));
        cpu.scale(&src, &mut want).expect("cpu scale");
        scaler
            .scale(&src, &mut eight_bit)
            .expect("gpu scale of the reduced picture");
        scaler
            .scale_p010((&y, y_pitch), (&uv, uv_pitch), src.pts(), &mut got)
            .expect("p010");
        for (r, ((w8, e), g)) in want.iter().zip(&eight_bit).zip(&got).enumerate() {
            let rung = ladder[r];
            assert_eq!(
                max_difference(e, g),
                0,
                "{name} frame {i} rung {rung}: reduction"
            );
            let d = max_difference(w8, g);
            assert!(
                d <= 1,
                "{name} frame {i} rung {rung}: GPU differs from the CPU by {d}"
            );
            assert_eq!(g.pts(), src.pts());
        }
    }
}

#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_quality_matches_cpu_within_the_goal() {
    let gpu = gpu();
    for (name, graph, size, ladder) in sources() {
        let src = frames(name, graph, size);
        // Pairs as the node measures them: a rung against a degraded copy of
        // itself (neighbouring frames: real, varied differences).
        let rung = ladder[1];
        let mut scaler = CpuScaler::new(size, &ladder).expect("scaler");
        let scaled: Vec<Frame> = src
            .iter()
            .map(|f| {
                let mut out = poisoned(&ladder);
                scaler.scale(f, &mut out).expect("scale");
                out.swap_remove(1)
            })
            .collect();
        let pairs: Vec<(&Frame, &Frame)> = scaled.iter().zip(scaled.iter().skip(1)).collect();
        let mut meter = GpuQuality::new(gpu.clone(), rung, pairs.len()).expect("meter");
        let measured = meter.measure(&pairs).expect("measure");
        for ((a, b), (mse, ssim)) in pairs.iter().zip(measured) {
            let want_psnr = FrameMse::new(a, b).expect("cpu psnr").psnr();
            let got_psnr = mse.psnr();
            let want_ssim = quality::ssim(a, b).expect("cpu ssim");
            for (w, g) in [
                (want_psnr.y, got_psnr.y),
                (want_psnr.u, got_psnr.u),
                (want_psnr.v, got_psnr.v),
                (want_psnr.average, got_psnr.average),
            ] {
                assert!((w - g).abs() <= 0.01, "{name}: PSNR {g} vs CPU {w}");
            }
            for (w, g) in [
                (want_ssim.y, ssim.y),
                (want_ssim.u, ssim.u),
                (want_ssim.v, ssim.v),
                (want_ssim.all, ssim.all),
            ] {
                assert!((w - g).abs() <= 1e-4, "{name}: SSIM {g} vs CPU {w}");
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_opens_the_device_and_loads_every_kernel() {
    let gpu = gpu();
    assert!(!gpu.name.is_empty());
    // A second device selection that cannot exist is refused with the reason.
    let none = GpuConfig {
        devices: vec![999],
        ..GpuConfig::default()
    };
    let err = Gpu::open(&none).expect_err("no GPU 999");
    assert!(err.to_string().contains("gpu.devices"), "{err}");
}
