//! The GPU backends end to end, on a machine with an NVIDIA GPU and its
//! driver: a file through `rungs transcode` with `gpu.enabled = "on"`
//! (NVDEC decode, CUDA scale and quality kernels, NVENC where the GPU has
//! it, libx264 from pinned memory where not) against the same file with
//! `gpu.enabled = "off"`. Every rung's PSNR must be within 0.1 dB of the CPU
//! backend's. Named `gpu_*` and ignored by default: `make test-gpu`.
//!
//! NVDEC is also checked on its own, for H.264 and for 10-bit HEVC (P010
//! surfaces): its pictures against FFmpeg's software decode, and the CUDA
//! scaler reading them in device memory against the CPU scaler.
//!
//! The inputs are made once by the FFmpeg CLI into `target/gpu-frames` (the
//! test that is not ignored does it); a GPU machine without the CLI reads them
//! from the folder `RUNGS_GPU_FRAMES` names. `RUNGS_BIN` names the `rungs`
//! binary when it is not the one cargo built. Unlike `tests/gpu.rs`, this
//! binary and `rungs` link FFmpeg's libraries (libavcodec 59, as Debian 12
//! has it): the GPU machine needs them.

#[path = "gpu/compare.rs"]
mod compare;

use compare::max_difference;
use std::path::{Path, PathBuf};
use std::process::Command;

const INPUT: &str = "gpu-pipeline-1080p.mp4";
/// Two seconds of 1080p HEVC Main 10 from libx265, with B-frames.
const HEVC_10BIT: &str = "gpu-nvdec-hevc-main10-1080p.mp4";
/// The largest PSNR difference per rung allowed between the two backends.
const TOLERANCE_DB: f64 = 0.1;

fn frames_dir() -> PathBuf {
    std::env::var_os("RUNGS_GPU_FRAMES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/gpu-frames"),
        PathBuf::from,
    )
}

/// Six seconds of 1080p30 High profile with B-frames and 2 s GOPs, 4 Mb/s,
/// and AAC, as OBS would send it. The device bundle's pipeline benchmark
/// publishes and transcodes it too.
fn input() -> PathBuf {
    clip(
        INPUT,
        &[
            "-i",
            "testsrc2=size=1920x1080:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
        ],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "2",
            "-b:v",
            "4M",
            "-maxrate",
            "4M",
            "-bufsize",
            "8M",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
        ],
    )
}

/// [`HEVC_10BIT`]: testsrc2 drawn in RGB, so that its 10-bit samples use
/// their two low bits, then x265 Main 10 with B-frames and 1 s GOPs.
fn hevc_10bit() -> PathBuf {
    clip(
        HEVC_10BIT,
        &[
            "-i",
            "testsrc2=size=1920x1080:rate=30,format=rgb24",
            "-t",
            "2",
        ],
        &[
            "-c:v",
            "libx265",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "keyint=30:min-keyint=30:bframes=2:log-level=error",
            "-b:v",
            "3M",
            "-tag:v",
            "hvc1",
        ],
    )
}

/// `file` in the frames folder, made by the FFmpeg CLI from the lavfi
/// `input` with `output` options when it is not there.
fn clip(file: &str, input: &[&str], output: &[&str]) -> PathBuf {
    let dir = frames_dir();
    let file = dir.join(file);
    if !file.exists() {
        std::fs::create_dir_all(&dir).expect("frames folder");
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi"])
            .args(input)
            .args(output)
            .arg(&file)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "no {file:?}, and the FFmpeg CLI could not make it: run \
             `cargo test --test gpu_pipeline input_for` where FFmpeg is and point \
             RUNGS_GPU_FRAMES at the folder"
        );
    }
    file
}

fn rungs_bin() -> PathBuf {
    std::env::var_os("RUNGS_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rungs")), PathBuf::from)
}

/// `rungs transcode --json` of the input with `gpu.enabled = mode`, every
/// frame of every rung measured.
fn transcode(dir: &Path, mode: &str) -> serde_json::Value {
    let config = dir.join(format!("{mode}.toml"));
    std::fs::write(
        &config,
        format!("[gpu]\nenabled = \"{mode}\"\n\n[transcode]\nquality_every_gops = 1\n"),
    )
    .expect("config");
    let out = Command::new(rungs_bin())
        .arg("transcode")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(input())
        .arg("--output")
        .arg(dir.join(mode))
        .arg("--json")
        .output()
        .expect("run rungs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rungs transcode ({mode}) failed:\n{log}"
    );
    eprintln!("{mode}: {log}");
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

/// No GPU needed: makes (once) the inputs the GPU tests read, so that they
/// can be carried to a GPU machine without FFmpeg's CLI.
#[test]
fn input_for_the_gpu_pipeline_test_is_made() {
    for file in [input(), hevc_10bit()] {
        let len = std::fs::metadata(&file).expect("input").len();
        assert!(len > 100_000, "{file:?} is {len} bytes");
    }
}

#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_transcode_ladder_psnr_is_within_a_tenth_of_a_db_of_the_cpu_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu = transcode(dir.path(), "off");
    let gpu = transcode(dir.path(), "on");
    let backends = |r: &serde_json::Value| r["backends"].as_str().unwrap_or_default().to_owned();
    let (cpu_plan, gpu_plan) = (backends(&cpu), backends(&gpu));
    eprintln!("CPU run: {cpu_plan}\nGPU run: {gpu_plan}");
    assert!(cpu_plan.starts_with("CPU"), "{cpu_plan}");
    for stage in ["decode nvdec", "scale cuda", "quality cuda"] {
        assert!(
            gpu_plan.contains(stage),
            "the GPU run fell back: {gpu_plan}"
        );
    }
    assert_eq!(cpu["frames"], gpu["frames"]);
    let renditions =
        |r: &serde_json::Value| r["renditions"].as_array().cloned().unwrap_or_default();
    let gpu_renditions = renditions(&gpu);
    let mut compared = 0;
    for c in renditions(&cpu) {
        let Some(cpu_psnr) = c["psnr_db"].as_f64() else {
            continue;
        };
        let name = c["name"].as_str().expect("name");
        let g = gpu_renditions
            .iter()
            .find(|g| g["name"] == c["name"])
            .unwrap_or_else(|| panic!("the GPU run has no rung {name}"));
        let gpu_psnr = g["psnr_db"].as_f64().expect("GPU PSNR");
        assert_eq!(c["frames_encoded"], g["frames_encoded"], "{name}");
        eprintln!(
            "{name}: CPU {cpu_psnr:.3} dB ({} kb/s), GPU {gpu_psnr:.3} dB ({} kb/s, {})",
            c["bitrate_bps"].as_u64().unwrap_or(0) / 1000,
            g["bitrate_bps"].as_u64().unwrap_or(0) / 1000,
            g["encoder"].as_str().unwrap_or("?"),
        );
        assert!(
            (cpu_psnr - gpu_psnr).abs() <= TOLERANCE_DB,
            "{name}: GPU {gpu_psnr:.3} dB vs CPU {cpu_psnr:.3} dB"
        );
        compared += 1;
    }
    assert_eq!(compared, 4, "the standard ladder of a 1080p source");
}

/// NVDEC on its own: its pictures, downloaded, equal FFmpeg's software
/// decode bit for bit, and the CUDA scaler reading them where they are (in
/// device memory) gives the CPU scaler's ladder within 1 everywhere.
#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_nvdec_pictures_equal_software_decode_and_scale_from_device_memory() {
    nvdec_matches_software(&input(), rungs::transcode::frame::SemiPlanar::Nv12);
}

/// The same for 10-bit HEVC: NVDEC's P010 surfaces, reduced to 8 bits on the
/// host (download) and on the device (the scaler's `p010_to_nv12`), give what
/// the software decoder's yuv420p10le gives once the CPU has reduced it.
#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_nvdec_decodes_10_bit_hevc_as_software_does_and_scales_it_on_the_device() {
    nvdec_matches_software(&hevc_10bit(), rungs::transcode::frame::SemiPlanar::P010);
}

/// Decodes the first 45 video packets of `file` in software and with NVDEC
/// (whose surfaces must be `surfaces`), and compares picture for picture:
/// downloads exactly, device-memory ladders within 1 of the CPU's.
fn nvdec_matches_software(file: &Path, surfaces: rungs::transcode::frame::SemiPlanar) {
    use std::collections::HashMap;

    use rungs::gpu::GpuConfig;
    use rungs::gpu::device::Gpu;
    use rungs::media::{IngestEvent, TrackKind};
    use rungs::transcode::decode::{Decoded, DecodedFrame, VideoDecoder};
    use rungs::transcode::frame::{Frame, FramePool, Size};
    use rungs::transcode::scale::{Cascade, CpuScaler, GpuScaler, ScaleOptions, Scaler};
    use rungs::transcode::source::FileSource;

    let mut source = FileSource::open(file).expect("open the input");
    let params = source.video.clone();
    let mut packets = Vec::new();
    while let Some(event) = source.next_event().expect("read the input") {
        if let IngestEvent::Packet(p) = event
            && p.track == TrackKind::Video
        {
            packets.push(p);
        }
        if packets.len() == 45 {
            break;
        }
    }
    let size = Size::new(params.width, params.height);
    let pool = FramePool::new(size, 64).expect("pool");
    let mut software = VideoDecoder::new(&params, 1).expect("software decoder");
    let mut want: Vec<DecodedFrame> = Vec::new();
    for p in &packets {
        software
            .decode(p, &pool, &mut want)
            .expect("software decode");
    }
    software.flush(&pool, &mut want).expect("flush");
    let want: HashMap<i64, DecodedFrame> = want.into_iter().map(|f| (f.frame.pts(), f)).collect();

    let gpu = Gpu::open(&GpuConfig::default()).unwrap_or_else(|e| panic!("needs a GPU: {e}"));
    let mut nvdec = VideoDecoder::new_nvdec(&params, gpu.index).expect("NVDEC opens");
    let ladder = [
        Size::new(1280, 720),
        Size::new(854, 480),
        Size::new(640, 360),
        Size::new(284, 160),
    ];
    let mut scaler = GpuScaler::new(gpu.clone(), size, &ladder).expect("GPU scaler");
    let direct = ScaleOptions {
        cascade: Cascade::Direct,
        ..ScaleOptions::default()
    };
    let mut cpu = CpuScaler::with_options(size, &ladder, direct).expect("CPU scaler");
    let frames = |fill: u8| -> Vec<Frame> {
        ladder
            .iter()
            .map(|&s| {
                let mut f = FramePool::new(s, 1).expect("size").get().expect("frame");
                f.pixels_mut().fill(fill);
                f
            })
            .collect()
    };
    let mut seen = 0;
    let mut check = |picture: Decoded| {
        let pts = picture.pts();
        let w = want
            .get(&pts)
            .unwrap_or_else(|| panic!("no software picture at {pts}"));
        assert_eq!(picture.keyframe(), w.keyframe, "pts {pts}");
        let Decoded::Device(d) = picture else {
            panic!("NVDEC gave a host picture at {pts}");
        };
        assert_eq!(d.format(), surfaces, "pts {pts}");
        let host = d.download(&pool).expect("download");
        assert_eq!(
            max_difference(&host.frame, &w.frame),
            0,
            "pts {pts}: NVDEC differs"
        );
        let (y, uv) = d.planes();
        let (mut from_device, mut from_cpu) = (frames(0xA5), frames(0x5A));
        // SAFETY: `d` is a surface of the NVDEC decoder opened on this GPU
        // (its primary context), alive until the call returns.
        unsafe { scaler.scale_device(d.format(), y, uv, pts, &mut from_device) }
            .expect("GPU scale");
        cpu.scale(&w.frame, &mut from_cpu).expect("CPU scale");
        for (r, (a, b)) in from_device.iter().zip(&from_cpu).enumerate() {
            let diff = max_difference(a, b);
            assert!(diff <= 1, "pts {pts} rung {}: differs by {diff}", ladder[r]);
            assert_eq!(a.pts(), pts);
        }
        seen += 1;
    };
    let mut out = Vec::new();
    for p in &packets {
        nvdec
            .decode_pictures(p, &pool, &mut out)
            .expect("NVDEC decode");
        out.drain(..).for_each(&mut check);
    }
    nvdec.flush_pictures(&pool, &mut out).expect("flush");
    out.drain(..).for_each(&mut check);
    assert_eq!(seen, want.len());
}
