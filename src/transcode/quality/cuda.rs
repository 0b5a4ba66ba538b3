//! `GpuQuality`: PSNR and SSIM of a batch of frame pairs by
//! `kernels/quality.cu`, the same arithmetic as `transcode::quality` (and so
//! FFmpeg's filters). Device buffers for a batch of up to `capacity` pairs of
//! one size are allocated once; a batch costs one upload, two launches and
//! two small downloads on the meter's own stream.

use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};

use super::{FrameMse, Ssim};
use crate::gpu::device::{Gpu, GpuError, driver};
use crate::transcode::frame::{Frame, Layout, Plane, Size};
use crate::transcode::scale::cuda::KernelTiming;

/// Threads per block of both kernels.
const THREADS: u32 = 256;
/// Blocks per plane for the SSE kernel: enough rows in flight to fill a GPU
/// with a batch of a few frames.
const SSE_BLOCKS: u32 = 64;

/// `kernels/quality.cu`'s `PlanePair`: 2 pointers, then 4 ints (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PlanePair {
    a: u64,
    b: u64,
    pitch_a: i32,
    pitch_b: i32,
    width: i32,
    height: i32,
}

// SAFETY: plain old data of integers, laid out as the kernel's struct.
unsafe impl DeviceRepr for PlanePair {}

#[derive(Debug, thiserror::Error)]
pub enum GpuQualityError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("a batch of {got} pairs, the meter holds {capacity}")]
    Batch { got: usize, capacity: usize },
    #[error("frame is {got}, the meter was built for {want}")]
    Size { want: Size, got: Size },
    #[error("{0} is too small for SSIM (8x8 windows)")]
    TooSmall(Size),
}

pub struct GpuQuality {
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
    size: Size,
    layout: Layout,
    capacity: usize,
    /// `capacity` first frames, then `capacity` second frames, each in our
    /// frame layout.
    frames: CudaSlice<u8>,
    /// Three plane pairs per frame pair, pointing into `frames`.
    pairs: CudaSlice<PlanePair>,
    sse: CudaSlice<u64>,
    ssim: CudaSlice<f64>,
    up: PinnedHostSlice<u8>,
    sse_host: Vec<u64>,
    ssim_host: Vec<f64>,
    timing: KernelTiming,
}

impl GpuQuality {
    pub fn new(gpu: Arc<Gpu>, size: Size, capacity: usize) -> Result<Self, GpuQualityError> {
        let layout = Layout::new(size).map_err(|_| GpuQualityError::TooSmall(size))?;
        if Plane::ALL.into_iter().any(|p| {
            let (w, h) = layout.plane_size(p);
            w / 4 < 2 || h / 4 < 2
        }) {
            return Err(GpuQualityError::TooSmall(size));
        }
        let capacity = capacity.max(1);
        let stream = gpu.stream()?;
        let len = layout.buffer_len();
        let frames = stream
            .alloc_zeros::<u8>(2 * capacity * len)
            .map_err(driver("cuMemAlloc"))?;
        let base = {
            let (ptr, _guard) = frames.device_ptr(&stream);
            ptr
        };
        let table = pair_table(base, capacity, &layout);
        let pairs = stream.clone_htod(&table).map_err(driver("cuMemcpyHtoD"))?;
        let sse = stream
            .alloc_zeros::<u64>(3 * capacity)
            .map_err(driver("cuMemAlloc"))?;
        let ssim = stream
            .alloc_zeros::<f64>(3 * capacity)
            .map_err(driver("cuMemAlloc"))?;
        // SAFETY: page-locked host memory of the given length; cudarc waits for
        // the copies in flight on it before handing out slices.
        let up = unsafe { gpu.context().alloc_pinned::<u8>(2 * capacity * len) }
            .map_err(driver("cuMemHostAlloc"))?;
        let timing = KernelTiming::new(&gpu, "quality")?;
        Ok(Self {
            gpu,
            stream,
            size,
            layout,
            capacity,
            frames,
            pairs,
            sse,
            ssim,
            up,
            sse_host: vec![0; 3 * capacity],
            ssim_host: vec![0.0; 3 * capacity],
            timing,
        })
    }

    /// PSNR's error sums and SSIM of each pair, as `FrameMse::new` and
    /// `quality::ssim` compute them on the CPU.
    pub fn measure(
        &mut self,
        batch: &[(&Frame, &Frame)],
    ) -> Result<Vec<(FrameMse, Ssim)>, GpuQualityError> {
        let n = batch.len();
        if n > self.capacity {
            return Err(GpuQualityError::Batch {
                got: n,
                capacity: self.capacity,
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        for &(a, b) in batch {
            for f in [a, b] {
                if f.size() != self.size {
                    return Err(GpuQualityError::Size {
                        want: self.size,
                        got: f.size(),
                    });
                }
            }
        }
        let len = self.layout.buffer_len();
        let up = self
            .up
            .as_mut_slice()
            .map_err(driver("cuEventSynchronize"))?;
        for (i, &(a, b)) in batch.iter().enumerate() {
            up[i * len..][..len].copy_from_slice(a.pixels());
            up[(self.capacity + i) * len..][..len].copy_from_slice(b.pixels());
        }
        self.stream
            .memcpy_htod(&self.up, &mut self.frames)
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        self.timing.start(&self.stream)?;
        self.launch(n)?;
        self.timing.end(&self.stream)?;
        let s = &self.stream;
        s.memcpy_dtoh(&self.sse, &mut self.sse_host)
            .map_err(driver("cuMemcpyDtoH"))?;
        s.memcpy_dtoh(&self.ssim, &mut self.ssim_host)
            .map_err(driver("cuMemcpyDtoH"))?;
        s.synchronize().map_err(driver("cuStreamSynchronize"))?;
        self.timing.account();

        Ok(scores(&self.layout, n, &self.sse_host, &self.ssim_host))
    }

    /// Seconds for `rounds` runs of both kernels over the `n` pairs already
    /// on the device, no copies: the benchmark's kernels-only figure.
    pub fn time_kernels(&mut self, n: usize, rounds: u32) -> Result<f64, GpuQualityError> {
        let n = n.min(self.capacity);
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))?;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            self.launch(n)?;
        }
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Clears the sums and queues both kernels over the first `n` pairs.
    fn launch(&mut self, n: usize) -> Result<(), GpuQualityError> {
        let s = &self.stream;
        s.memset_zeros(&mut self.sse)
            .map_err(driver("cuMemsetD8Async"))?;
        s.memset_zeros(&mut self.ssim)
            .map_err(driver("cuMemsetD8Async"))?;
        let planes = 3 * n as u32;
        let (w, h) = self.layout.plane_size(Plane::Y);
        let windows = (w / 4 - 1) * (h / 4 - 1);
        let launches = [
            (&self.gpu.sse_planes, SSE_BLOCKS, true),
            (
                &self.gpu.ssim_planes,
                windows.div_ceil(THREADS as usize) as u32,
                false,
            ),
        ];
        for (function, blocks, sse) in launches {
            let cfg = LaunchConfig {
                grid_dim: (blocks.max(1), planes, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = s.launch_builder(function);
            launch.arg(&self.pairs);
            if sse {
                launch.arg(&mut self.sse);
            } else {
                launch.arg(&mut self.ssim);
            }
            // SAFETY: the pair table points into `frames`, sized for
            // `capacity` pairs of this layout; grid.y stays within the `n`
            // pairs uploaded; each block adds into its own plane's sum.
            unsafe { launch.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        }
        Ok(())
    }
}

/// Three plane pairs per frame pair: pair `i` reads frame `i` and frame
/// `capacity + i` of the buffer at `base` (frames `len` apart, our layout).
fn pair_table(base: u64, capacity: usize, layout: &Layout) -> Vec<PlanePair> {
    let len = layout.buffer_len();
    let mut table = Vec::with_capacity(3 * capacity);
    for i in 0..capacity {
        for plane in Plane::ALL {
            let (w, h) = layout.plane_size(plane);
            let offset = layout.offset(plane);
            table.push(PlanePair {
                a: base + (i * len + offset) as u64,
                b: base + ((capacity + i) * len + offset) as u64,
                pitch_a: layout.stride(plane) as i32,
                pitch_b: layout.stride(plane) as i32,
                width: w as i32,
                height: h as i32,
            });
        }
    }
    table
}

/// The kernels' per-plane sums turned into each pair's PSNR error and SSIM.
fn scores(layout: &Layout, n: usize, sse: &[u64], ssim: &[f64]) -> Vec<(FrameMse, Ssim)> {
    let sizes = Plane::ALL.map(|p| layout.plane_size(p));
    (0..n)
        .map(|i| {
            let sse = [0, 1, 2].map(|k| sse[3 * i + k]);
            let ssim = [0, 1, 2].map(|k| {
                let (w, h) = sizes[k];
                ssim[3 * i + k] / ((w / 4 - 1) * (h / 4 - 1)) as f64
            });
            (
                FrameMse::from_sse(sse, layout),
                Ssim::from_planes(ssim, layout),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kernels/quality.cu` over host memory, sum for sum (each window's
    /// score in f32, added in f64): checks the pair table and the turning of
    /// sums into scores against the CPU code, with no GPU.
    fn emulate(pairs: &[PlanePair], sse: &mut [u64], ssim: &mut [f64]) {
        for (k, p) in pairs.iter().enumerate() {
            // SAFETY: the addresses are the test's live host buffers.
            let row = |base: u64, pitch: i32, y: i32| unsafe {
                std::slice::from_raw_parts(
                    (base as *const u8).add((y * pitch) as usize),
                    p.width as usize,
                )
            };
            for y in 0..p.height {
                let (ra, rb) = (row(p.a, p.pitch_a, y), row(p.b, p.pitch_b, y));
                sse[k] += ra
                    .iter()
                    .zip(rb)
                    .map(|(&u, &v)| (i64::from(u) - i64::from(v)).pow(2) as u64)
                    .sum::<u64>();
            }
            let (wx, wy) = (p.width / 4 - 1, p.height / 4 - 1);
            for w in 0..wx * wy {
                let (x0, y0) = ((w % wx) * 4, (w / wx) * 4);
                let (mut s1, mut s2, mut ss, mut s12) = (0i64, 0i64, 0i64, 0i64);
                for dy in 0..8 {
                    let ra = &row(p.a, p.pitch_a, y0 + dy)[x0 as usize..][..8];
                    let rb = &row(p.b, p.pitch_b, y0 + dy)[x0 as usize..][..8];
                    for (&u, &v) in ra.iter().zip(rb) {
                        let (u, v) = (i64::from(u), i64::from(v));
                        s1 += u;
                        s2 += v;
                        ss += u * u + v * v;
                        s12 += u * v;
                    }
                }
                let (c1, c2) = (416i64, 235_963i64);
                let vars = ss * 64 - s1 * s1 - s2 * s2;
                let covar = s12 * 64 - s1 * s2;
                let score = ((2 * s1 * s2 + c1) as f32 * (2 * covar + c2) as f32)
                    / ((s1 * s1 + s2 * s2 + c1) as f32 * (vars + c2) as f32);
                ssim[k] += f64::from(score);
            }
        }
    }

    #[test]
    fn kernel_emulation_matches_the_cpu_psnr_and_ssim() {
        use crate::transcode::frame::FramePool;
        use crate::transcode::quality;

        let size = Size::new(854, 480);
        let pool = FramePool::new(size, 4).unwrap();
        let frame = |seed: u32| {
            let mut f = pool.get().unwrap();
            for (i, b) in f.pixels_mut().iter_mut().enumerate() {
                let i = i as u32;
                // A picture plus a little seed-dependent noise.
                *b = ((i % 854) / 3 + (i / 854) % 97) as u8
                    ^ ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(0x9E37_79B9)) >> 29)
                        as u8;
            }
            f
        };
        let (a0, a1, b0, b1) = (frame(1), frame(2), frame(3), frame(4));
        let layout = Layout::new(size).unwrap();
        let len = layout.buffer_len();
        // The device buffer's layout: first frames, then second frames.
        let mut buf = Vec::with_capacity(4 * len);
        for f in [&a0, &a1, &b0, &b1] {
            buf.extend_from_slice(f.pixels());
        }
        let table = pair_table(buf.as_ptr() as u64, 2, &layout);
        let (mut sse, mut ssim) = (vec![0u64; 6], vec![0f64; 6]);
        emulate(&table, &mut sse, &mut ssim);
        let got = scores(&layout, 2, &sse, &ssim);
        for ((a, b), (mse, s)) in [(&a0, &b0), (&a1, &b1)].into_iter().zip(got) {
            let want = FrameMse::new(a, b).unwrap();
            assert!(want.average > 0.5, "the pairs must differ: {want:?}");
            assert!(
                (want.average - mse.average).abs() < 1e-9,
                "{want:?} {mse:?}"
            );
            let (wp, gp) = (want.psnr().average, mse.psnr().average);
            assert!((wp - gp).abs() < 0.01, "PSNR {gp} vs CPU {wp}");
            let want = quality::ssim(a, b).unwrap();
            for (w, g) in [
                (want.y, s.y),
                (want.u, s.u),
                (want.v, s.v),
                (want.all, s.all),
            ] {
                assert!((w - g).abs() < 1e-4, "SSIM {g} vs CPU {w}");
            }
        }
    }

    #[test]
    fn pair_layout_matches_the_kernel_struct() {
        assert_eq!(std::mem::size_of::<PlanePair>(), 32);
        assert_eq!(std::mem::offset_of!(PlanePair, pitch_a), 16);
    }
}
