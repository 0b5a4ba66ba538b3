//! Tests of the CPU scaler: the tables, the optimised passes against the
//! written spec, frame checks and buffer reuse, and PSNR against libswscale.

use super::*;
use crate::transcode::ffmpeg_cli;
use crate::transcode::frame::FramePool;
use crate::transcode::quality::{FrameMse, Psnr, PsnrMean};

/// Deterministic noise: scaling must be exact on any content.
fn noise_frame(size: Size, seed: u32) -> Frame {
    let mut frame = FramePool::new(size, 1).unwrap().get().unwrap();
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(1);
    let data: Vec<u8> = (0..frame.layout().packed_len())
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    frame.copy_from_packed(&data).unwrap();
    frame
}

fn frames(sizes: &[Size]) -> Vec<Frame> {
    sizes
        .iter()
        .map(|&s| FramePool::new(s, 1).unwrap().get().unwrap())
        .collect()
}

/// The module documentation's arithmetic, one sample at a time, with no
/// chunking, padding or parallelism: the reference a GPU port must match.
fn reference_plane(kernel: Kernel, src: &Frame, plane: Plane, dst: (usize, usize)) -> Vec<u8> {
    let (sw, sh) = src.layout().plane_size(plane);
    let h = AxisFilter::new(kernel, sw, dst.0);
    let v = AxisFilter::new(kernel, sh, dst.1);
    let mid: Vec<Vec<i32>> = (0..sh)
        .map(|y| {
            let row = src.row(plane, y);
            (0..dst.0)
                .map(|x| {
                    let (start, w) = h.at(x);
                    let acc: i32 = w
                        .iter()
                        .enumerate()
                        .map(|(k, &w)| i32::from(w) * i32::from(row[start + k]))
                        .sum();
                    (acc + (1 << 7)) >> 8
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(dst.0 * dst.1);
    for y in 0..dst.1 {
        let (start, w) = v.at(y);
        out.extend((0..dst.0).map(|x| {
            let acc: i32 = w
                .iter()
                .enumerate()
                .map(|(k, &w)| i32::from(w) * mid[start + k][x])
                .sum();
            ((acc + (1 << 19)) >> 20).clamp(0, 255) as u8
        }));
    }
    out
}

#[test]
fn weights_are_q14_and_windows_stay_inside() {
    for (src, dst) in [
        (1920, 1280),
        (1920, 284),
        (960, 427),
        (683, 640),
        (10, 23),
        (3, 1),
        (1, 5),
    ] {
        for kernel in Kernel::ALL {
            let f = AxisFilter::new(kernel, src, dst);
            assert_eq!(f.starts().len(), dst);
            for i in 0..dst {
                let (start, w) = f.at(i);
                assert!(
                    start + f.taps() <= src,
                    "{src}->{dst} output {i} reads past the edge"
                );
                assert_eq!(
                    w.iter().map(|&x| i32::from(x)).sum::<i32>(),
                    1 << WEIGHT_BITS
                );
            }
        }
    }
    let same = AxisFilter::new(Kernel::Lanczos3, 50, 50);
    for i in 0..50 {
        let (start, w) = same.at(i);
        assert_eq!(w[i - start], 1 << WEIGHT_BITS, "equal sizes must copy");
    }
}

#[test]
fn optimised_passes_equal_the_written_spec() {
    let source = Size::new(75, 47);
    let rungs = [
        Size::new(40, 22),
        Size::new(17, 9),
        Size::new(3, 3),
        Size::new(160, 90),
        Size::new(75, 47),
    ];
    let src = noise_frame(source, 7);
    for kernel in Kernel::ALL {
        let options = ScaleOptions {
            kernel,
            cascade: Cascade::Direct,
        };
        for threading in [Threading::Rayon, Threading::Caller] {
            let scaler = CpuScaler::with_options(source, &rungs, options).unwrap();
            let mut scaler = scaler.with_threading(threading);
            let mut dst = frames(&rungs);
            scaler.scale(&src, &mut dst).unwrap();
            check_against_spec(kernel, threading, &src, &dst);
        }
    }
}

/// Every plane of every rung in `dst` against [`reference_plane`].
fn check_against_spec(kernel: Kernel, threading: Threading, src: &Frame, dst: &[Frame]) {
    for out in dst {
        for plane in Plane::ALL {
            let size = out.layout().plane_size(plane);
            let want = reference_plane(kernel, src, plane, size);
            let got: Vec<u8> = (0..size.1)
                .flat_map(|y| out.row(plane, y).to_vec())
                .collect();
            assert!(
                got == want,
                "{kernel:?} {threading:?} {}->{} {plane:?} differs from the spec",
                src.size(),
                out.size()
            );
        }
    }
    // Equal size is an exact copy: weights are a unit impulse.
    let same = dst.iter().find(|f| f.size() == src.size());
    assert_eq!(
        FrameMse::new(src, same.expect("an equal-size rung"))
            .unwrap()
            .average,
        0.0
    );
}

#[test]
fn rejects_mismatched_frames() {
    let ladder = [Size::new(64, 36), Size::new(32, 18)];
    let mut scaler = CpuScaler::new(Size::new(128, 72), &ladder).unwrap();
    let src = noise_frame(Size::new(128, 72), 1);
    let err = scaler
        .scale(&src, &mut frames(&[Size::new(64, 36)]))
        .unwrap_err();
    assert!(matches!(err, ScaleError::RungCount { want: 2, got: 1 }));
    let err = scaler
        .scale(&src, &mut frames(&[Size::new(64, 36), Size::new(30, 18)]))
        .unwrap_err();
    assert!(matches!(err, ScaleError::RungSize { index: 1, .. }));
    let err = scaler
        .scale(&noise_frame(Size::new(64, 36), 1), &mut frames(&ladder))
        .unwrap_err();
    assert!(matches!(err, ScaleError::SourceSize { .. }));
    assert!(matches!(
        CpuScaler::new(Size::new(128, 72), &[]),
        Err(ScaleError::NoRungs)
    ));
    assert!(matches!(
        CpuScaler::new(Size::new(128, 72), &[Size::new(0, 2)]),
        Err(ScaleError::Size(_))
    ));
}

#[test]
fn steady_state_reuses_pool_buffers() {
    let source = Size::new(320, 180);
    let rungs = [Size::new(160, 90), Size::new(64, 36)];
    let mut scaler = CpuScaler::new(source, &rungs).unwrap();
    assert_eq!(scaler.input_of(1), Some(0), "64x36 cascades from 160x90");
    let src_pool = FramePool::new(source, 4).unwrap();
    let pools: Vec<FramePool> = rungs
        .iter()
        .map(|&s| FramePool::new(s, 4).unwrap())
        .collect();
    // A little pipelining: the encoder still holds the previous outputs.
    let mut held = Vec::new();
    for pts in 0..300 {
        let mut src = src_pool.get().unwrap();
        src.set_pts(pts);
        let mut out: Vec<Frame> = pools.iter().map(|p| p.get().unwrap()).collect();
        scaler.scale(&src, &mut out).unwrap();
        assert!(out.iter().all(|f| f.pts() == pts));
        held.push(out);
        if held.len() > 2 {
            held.remove(0);
        }
    }
    assert_eq!(src_pool.buffers_created(), 1);
    assert!(pools.iter().all(|p| p.buffers_created() == 3), "{pools:?}");
}

const LADDER_1080: [Size; 4] = [
    Size::new(1280, 720),
    Size::new(854, 480),
    Size::new(640, 360),
    Size::new(284, 160),
];
// 1366x768 keeps the rung heights; widths round to even (1280.6, 853.75, 640.3, 284.6).
const LADDER_768: [Size; 4] = [
    Size::new(1280, 720),
    Size::new(854, 480),
    Size::new(640, 360),
    Size::new(284, 160),
];
const FRAMES: usize = 2;

struct Clip {
    _dir: tempfile::TempDir,
    size: Size,
    frames: Vec<Frame>,
    /// libswscale's output per rung, with the flag naming each [`Kernel::ALL`].
    references: [Vec<Vec<Frame>>; 2],
}

/// libswscale's name for each of [`Kernel::ALL`].
fn swscale_flag(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Bicubic => "bicubic",
        Kernel::Lanczos3 => "lanczos",
    }
}

fn clip(name: &str, graph: &str, size: Size, ladder: &[Size]) -> Clip {
    let dir = tempfile::tempdir().unwrap();
    let raw = ffmpeg_cli::generate(dir.path(), name, graph, FRAMES);
    let references = Kernel::ALL.map(|kernel| {
        let flag = swscale_flag(kernel);
        ladder
            .iter()
            .map(|&r| ffmpeg_cli::read_frames(&ffmpeg_cli::swscale(&raw, size, r, flag), r))
            .collect()
    });
    Clip {
        frames: ffmpeg_cli::read_frames(&raw, size),
        _dir: dir,
        size,
        references,
    }
}

fn testsrc2_1080() -> Clip {
    clip(
        "testsrc2",
        "testsrc2=size=1920x1080:rate=30",
        Size::new(1920, 1080),
        &LADDER_1080,
    )
}

/// Fractal edges plus film-grain-like noise: detail at every frequency.
fn mandelbrot_1080() -> Clip {
    let graph = "mandelbrot=size=1920x1080:rate=30,noise=alls=12:allf=t+u";
    clip("mandelbrot", graph, Size::new(1920, 1080), &LADDER_1080)
}

fn testsrc2_768() -> Clip {
    clip(
        "testsrc2_768",
        "testsrc2=size=1366x768:rate=30",
        Size::new(1366, 768),
        &LADDER_768,
    )
}

/// Our ladder for every frame of `clip`: `[frame][rung]`.
fn scale_clip(clip: &Clip, options: ScaleOptions) -> Vec<Vec<Frame>> {
    let ladder: Vec<Size> = clip.references[0].iter().map(|r| r[0].size()).collect();
    let mut scaler = CpuScaler::with_options(clip.size, &ladder, options).unwrap();
    let outputs = clip.frames.iter().map(|src| {
        let mut dst = frames(&ladder);
        scaler.scale(src, &mut dst).unwrap();
        dst
    });
    outputs.collect()
}

/// PSNR per rung between two `[frame][rung]` sets, FFmpeg-averaged.
fn ours_vs(ours: &[Vec<Frame>], other: &[Vec<Frame>]) -> Vec<Psnr> {
    let other: Vec<Vec<&Frame>> = other.iter().map(|f| f.iter().collect()).collect();
    ours_vs_refs(ours, &other)
}

fn ours_vs_refs(ours: &[Vec<Frame>], other: &[Vec<&Frame>]) -> Vec<Psnr> {
    let rungs = ours[0].len();
    let per_rung = (0..rungs).map(|r| {
        let mut mean = PsnrMean::default();
        for (a, b) in ours.iter().zip(other) {
            mean.add(FrameMse::new(&a[r], b[r]).unwrap());
        }
        mean.psnr().unwrap()
    });
    per_rung.collect()
}

/// libswscale's output with `kernel`'s flag, regrouped as `[frame][rung]`.
fn swscale_outputs(clip: &Clip, kernel: Kernel) -> Vec<Vec<&Frame>> {
    let index = Kernel::ALL.iter().position(|&k| k == kernel).unwrap();
    let references = &clip.references[index];
    (0..clip.frames.len())
        .map(|n| references.iter().map(|r| &r[n]).collect())
        .collect()
}

fn report(what: &str, ladder: &[Size], psnr: &[Psnr]) {
    for (size, p) in ladder.iter().zip(psnr) {
        let size = size.to_string();
        eprintln!(
            "{what:<36} {size:>9}: avg {:6.2} dB (y {:6.2} u {:6.2} v {:6.2})",
            p.average, p.y, p.u, p.v
        );
    }
}

/// Each kernel, cascaded as by default, against libswscale's filter of the
/// same name. The bound: the lowest plane PSNR measured over these clips is
/// 53.9 dB (Lanczos-3, mandelbrot+grain, 640x360, cascaded from 720p).
#[test]
fn ladder_matches_swscale_kernel_for_kernel() {
    for (name, clip) in [
        ("testsrc2 1080p", testsrc2_1080()),
        ("mandelbrot+grain 1080p", mandelbrot_1080()),
        ("testsrc2 1366x768", testsrc2_768()),
    ] {
        for kernel in Kernel::ALL {
            let options = ScaleOptions {
                kernel,
                ..ScaleOptions::default()
            };
            let ours = scale_clip(&clip, options);
            let psnr = ours_vs_refs(&ours, &swscale_outputs(&clip, kernel));
            report(
                &format!("{name} {kernel:?} vs swscale"),
                &LADDER_1080,
                &psnr,
            );
            for p in psnr {
                assert!(
                    p.y >= 50.0 && p.u >= 50.0 && p.v >= 50.0,
                    "{name} {kernel:?}: {p:?}"
                );
            }
        }
    }
}

/// Why `Cascade::Auto`, for either kernel, and how far the kernels are
/// apart: numbers printed with --nocapture.
#[test]
fn auto_cascade_is_lossless_in_practice_for_each_kernel() {
    for (name, clip) in [
        ("testsrc2", testsrc2_1080()),
        ("mandelbrot+grain", mandelbrot_1080()),
    ] {
        let mut direct_of = Vec::new();
        for kernel in Kernel::ALL {
            let swscale = swscale_outputs(&clip, kernel);
            let options = |cascade| ScaleOptions { kernel, cascade };
            let direct = scale_clip(&clip, options(Cascade::Direct));
            let direct_vs_swscale = ours_vs_refs(&direct, &swscale);
            let what = format!("{name} {kernel:?}");
            report(
                &format!("{what} direct vs swscale"),
                &LADDER_1080,
                &direct_vs_swscale,
            );
            for cascade in [Cascade::Auto, Cascade::Nearest] {
                let cascaded = scale_clip(&clip, options(cascade));
                let vs_swscale = ours_vs_refs(&cascaded, &swscale);
                let vs_direct = ours_vs(&cascaded, &direct);
                report(
                    &format!("{what} {cascade:?} vs swscale"),
                    &LADDER_1080,
                    &vs_swscale,
                );
                report(
                    &format!("{what} {cascade:?} vs our direct"),
                    &LADDER_1080,
                    &vs_direct,
                );
                if cascade == Cascade::Auto {
                    // Two passes soften a little more than one (bicubic's 360p:
                    // 62.4 dB of libswscale's where direct is 65.7), far above
                    // what x264 keeps at a ladder's bitrates.
                    for (p, d) in vs_swscale.iter().zip(&direct_vs_swscale) {
                        assert!(
                            p.average >= (d.average - 4.0).min(55.0),
                            "{what}: {p:?} vs direct {d:?}"
                        );
                    }
                    assert!(
                        vs_direct.iter().all(|p| p.average >= 55.0),
                        "{what}: {vs_direct:?}"
                    );
                }
            }
            direct_of.push((kernel, direct));
        }
        // The kernels differ by far more than either differs from libswscale's:
        // the comparisons above would see a wrong kernel.
        let lanczos = swscale_outputs(&clip, Kernel::Lanczos3);
        let (bicubic, lanczos_ours) = (&direct_of[0], &direct_of[1]);
        assert_eq!(
            (bicubic.0, lanczos_ours.0),
            (Kernel::Bicubic, Kernel::Lanczos3)
        );
        let cubic_vs_lanczos = ours_vs_refs(&bicubic.1, &lanczos);
        let ours_vs_lanczos = ours_vs_refs(&lanczos_ours.1, &lanczos);
        report(
            &format!("{name} bicubic vs swscale lanczos"),
            &LADDER_1080,
            &cubic_vs_lanczos,
        );
        for (c, l) in cubic_vs_lanczos.iter().zip(&ours_vs_lanczos) {
            assert!(
                c.average + 2.0 < l.average,
                "{name}: cubic {c:?} vs lanczos {l:?}"
            );
        }
    }
}
