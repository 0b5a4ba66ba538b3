//! The CUDA scaler's device targets (where an NVENC rung's picture stays on
//! the GPU) against its host downloads and the CPU scaler. Here rather than
//! beside the scaler so that the device bundle's `gpu-tests` runs it.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use rungs::transcode::frame::{Frame, FramePool, Layout, Plane, Size};
use rungs::transcode::scale::cuda::{RungOutput, Target};
use rungs::transcode::scale::{Cascade, CpuScaler, GpuScaleError, GpuScaler, ScaleOptions, Scaler};

use crate::compare::max_difference;

/// The ladder of the 1366x768 source of tests/gpu.rs, and 64x36 below it: steep
/// enough (21x) for tiles shorter than the kernel's.
fn source_and_ladder() -> (&'static str, &'static str, Size, Vec<Size>) {
    let (name, graph, size, mut ladder) = super::sources()
        .into_iter()
        .find(|s| s.0 == "testsrc2-768")
        .expect("tests/gpu.rs has a 1366x768 source");
    ladder.push(Size::new(64, 36));
    (name, graph, size, ladder)
}

/// One rung's picture left in device memory, as an NVENC input frame is: its planes in a
/// buffer of their own, at pitches unlike our frames'.
struct DevicePicture {
    size: Size,
    buf: CudaSlice<u8>,
    /// Per plane: (offset in `buf`, pitch).
    planes: [(usize, usize); 3],
    pts: i64,
}

impl DevicePicture {
    fn new(stream: &Arc<CudaStream>, size: Size) -> Self {
        let layout = Layout::new(size).unwrap();
        let mut len = 0;
        let planes = Plane::ALL.map(|p| {
            let (w, h) = layout.plane_size(p);
            // Odd pitches, and room after each plane's rows that must stay untouched.
            let plane = (len, w + 96 + 3);
            len += plane.1 * h + 512;
            plane
        });
        let buf = stream.alloc_zeros::<u8>(len).unwrap();
        // The scaler's streams do not wait for this one: the zeros must be there first.
        stream.synchronize().unwrap();
        Self {
            size,
            buf,
            planes,
            pts: -1,
        }
    }

    /// The picture read back into a host frame, and whether the padding kept its zeros.
    fn download(&self, stream: &Arc<CudaStream>) -> (Frame, bool) {
        let host = stream.clone_dtoh(&self.buf).unwrap();
        let mut frame = FramePool::new(self.size, 1).unwrap().get().unwrap();
        let layout = *frame.layout();
        let mut padding_clean = true;
        for (p, (offset, pitch)) in Plane::ALL.into_iter().zip(self.planes) {
            let (w, h) = layout.plane_size(p);
            let stride = frame.stride(p);
            let plane = frame.plane_mut(p);
            for y in 0..h {
                let row = &host[offset + y * pitch..][..pitch];
                plane[y * stride..][..w].copy_from_slice(&row[..w]);
                padding_clean &= row[w..].iter().all(|&b| b == 0);
            }
        }
        frame.set_pts(self.pts);
        (frame, padding_clean)
    }
}

// SAFETY: `buf` is device memory of the test's GPU (its primary context, where cudarc
// allocates), holding every plane's rows at its pitch, and the test touches it only
// between the scaler's calls.
unsafe impl RungOutput for DevicePicture {
    fn picture_size(&self) -> Size {
        self.size
    }

    fn target(&mut self) -> Target<'_> {
        let (base, _guard) = self.buf.device_ptr(self.buf.stream());
        Target::Device(
            self.planes
                .map(|(offset, pitch)| (base + offset as u64, pitch)),
        )
    }

    fn set_picture_pts(&mut self, pts: i64) {
        self.pts = pts;
    }
}

/// A rung going to the host or staying on the device, as the pipeline mixes them.
enum Out {
    Host(Frame),
    Device(DevicePicture),
}

// SAFETY: as the parts'.
unsafe impl RungOutput for Out {
    fn picture_size(&self) -> Size {
        match self {
            Out::Host(f) => f.size(),
            Out::Device(d) => d.picture_size(),
        }
    }

    fn target(&mut self) -> Target<'_> {
        match self {
            Out::Host(f) => f.target(),
            Out::Device(d) => d.target(),
        }
    }

    fn set_picture_pts(&mut self, pts: i64) {
        match self {
            Out::Host(f) => f.set_pts(pts),
            Out::Device(d) => d.set_picture_pts(pts),
        }
    }
}

/// Rungs copied to device targets equal, byte for byte, the same rungs downloaded to the
/// host, whichever rungs are on the device and over frames back to back (a copy racing
/// the next frame's kernels would show as a rung of the wrong frame); the host rungs equal
/// the CPU scaler's; targets that do not fit are refused before anything runs.
#[test]
#[ignore = "needs a GPU: make test-gpu"]
fn gpu_device_targets_get_the_rungs_the_host_gets() {
    let gpu = super::gpu();
    let stream = gpu.stream().unwrap();
    let (name, graph, source, rungs) = source_and_ladder();
    let mut frames = super::frames(name, graph, source);
    let direct = ScaleOptions {
        cascade: Cascade::Direct,
        ..ScaleOptions::default()
    };
    let mut cpu = CpuScaler::with_options(source, &rungs, direct).unwrap();
    let mut scaler = GpuScaler::new(gpu.clone(), source, &rungs).unwrap();
    let host = |size: Size| {
        let mut f = FramePool::new(size, 1).unwrap().get().unwrap();
        f.pixels_mut().fill(0xA5);
        f
    };
    // Twice through the frames, so each picture follows a different one.
    for i in 0..2 * frames.len() {
        let pts = i as i64 * 3000;
        let n = frames.len();
        frames[i % n].set_pts(pts);
        let src = &frames[i % n];
        let mut want: Vec<Frame> = rungs.iter().map(|&r| host(r)).collect();
        cpu.scale(src, &mut want).unwrap();
        let mut all_host: Vec<Frame> = rungs.iter().map(|&r| host(r)).collect();
        scaler.scale(src, &mut all_host).unwrap();
        // Every other rung on the device, the other half on the next frame.
        let mut mixed: Vec<Out> = rungs
            .iter()
            .enumerate()
            .map(|(r, &size)| match (i + r) % 2 {
                1 => Out::Device(DevicePicture::new(&stream, size)),
                _ => Out::Host(host(size)),
            })
            .collect();
        scaler.scale_into(src, &mut mixed).unwrap();
        for (r, out) in mixed.iter().enumerate() {
            let rung = rungs[r];
            assert_eq!(
                max_difference(&all_host[r], &want[r]),
                0,
                "frame {i} rung {rung}"
            );
            let got = match out {
                Out::Host(f) => max_difference(f, &all_host[r]),
                Out::Device(d) => {
                    let (f, padding_clean) = d.download(&stream);
                    assert!(padding_clean, "frame {i} rung {rung}: wrote past a row");
                    assert_eq!(d.pts, pts, "frame {i} rung {rung}");
                    max_difference(&f, &all_host[r])
                }
            };
            assert_eq!(got, 0, "frame {i} rung {rung}");
            if let Out::Host(f) = out {
                assert_eq!(f.pts(), pts, "frame {i} rung {rung}");
            }
        }
    }
    // A pitch narrower than the rung's rows: refused, and the scaler still works.
    let mut narrow = DevicePicture::new(&stream, rungs[0]);
    narrow.planes[1].1 = 16;
    let mut outs: Vec<Out> = vec![Out::Device(narrow)];
    outs.extend(rungs[1..].iter().map(|&r| Out::Host(host(r))));
    let err = scaler.scale_into(&frames[0], &mut outs).unwrap_err();
    assert!(matches!(err, GpuScaleError::BadTarget { .. }), "{err}");
    let mut again: Vec<Frame> = rungs.iter().map(|&r| host(r)).collect();
    scaler.scale(&frames[0], &mut again).unwrap();
}
