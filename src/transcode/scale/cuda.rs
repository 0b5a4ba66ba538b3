//! `GpuScaler`: the CPU scaler's filter (the same Q14 tables, the same
//! integer steps) applied by `kernels/scale.cu` to every plane of every rung.
//! Device buffers, filter tables, pinned staging buffers, streams and events
//! are made once, when the scaler is built; a frame costs one upload (or a
//! device-to-device copy of an NVDEC surface), one launch per rung, and per
//! rung one download to pinned memory (for libx264) or one device-to-device
//! copy into a picture that stays on the GPU (an NVENC input frame).
//!
//! Two streams. The compute stream uploads and runs the kernels, one launch
//! per rung, smallest rung first, recording an event after each; the copy
//! stream waits for a rung's event and takes that rung out while the kernels
//! of the larger rungs still run, and the host copies a downloaded rung into
//! its frame while the later ones are still coming down. Smallest first: a
//! rung's kernel is shorter than its download over PCIe, so the copy engine
//! starts soonest and then always has the next rung ready. A call returns
//! once every rung is out (or, failing, once both streams are idle), so
//! frames never overlap each other: a frame's kernels overwrite rungs that
//! nothing reads any more.
//!
//! Every rung is scaled from the source, as [`Cascade::Direct`] does on the
//! CPU, with the same kernel's tables, so the two agree sample for sample. A 10-bit source (NVDEC's P010) is
//! first reduced to 8-bit NV12 on the device by `p010_to_nv12`, with the CPU's
//! rounding and in the CPU's order (reduce, then filter), so it agrees too.
//!
//! [`Cascade::Direct`]: super::Cascade::Direct

use std::sync::Arc;

use cudarc::driver::{
    CudaEvent, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg, sys,
};

use super::{AxisFilter, Kernel, Result as ScaleResult, ScaleError, Scaler};
use crate::gpu::device::{Gpu, GpuError, driver};
use crate::transcode::frame::{Frame, Layout, Plane, SemiPlanar, Size};

mod error;
mod jobs;
mod target;
pub use error::GpuScaleError;
use error::{bad_surface, check_pitch};
use jobs::{
    Axis, BLOCK, JOBS_PER_RUNG, MAX_ROWS, Nv12Layout, PITCH_ALIGN, ScaleJob, SourcePlane,
    build_jobs, i420_planes, smallest_first, tile_height,
};
pub use target::{RungOutput, Target};

/// Threads per block of `p010_to_nv12`: one row segment of samples each.
const REDUCE_BLOCK: u32 = 256;

/// The jobs of every rung for one source layout, on the device.
struct JobTable {
    /// What the launches' addresses point into: kept alive with them.
    _jobs: CudaSlice<ScaleJob>,
    /// Per rung: the device address of its jobs, and its blocks.
    launches: Vec<(u64, u32)>,
}

/// One axis's table on the device.
struct DeviceFilter {
    starts: CudaSlice<i32>,
    weights: CudaSlice<i16>,
    taps: i32,
    /// Vertical tables only: output rows per tile (see [`tile_height`]).
    tile_h: i32,
}

pub struct GpuScaler {
    gpu: Arc<Gpu>,
    /// Uploads and kernels.
    stream: Arc<CudaStream>,
    /// The rungs out of `dst`: downloads, and copies to device targets.
    copy: Arc<CudaStream>,
    source: Size,
    rungs: Vec<Size>,
    layouts: Vec<Layout>,
    /// Rung indices in the order they are scaled and taken out: smallest first.
    order: Vec<usize>,
    /// The source picture: our I420 frame layout, or NV12 (Y, then UV).
    src: CudaSlice<u8>,
    /// Every rung's picture back to back, each in our frame layout.
    dst: CudaSlice<u8>,
    /// `dst`'s device address, for the copies to device targets.
    dst_base: u64,
    /// Where each rung starts in `dst`.
    dst_offsets: Vec<usize>,
    /// The tables the jobs point into: kept alive with them.
    _filters: Vec<DeviceFilter>,
    i420: JobTable,
    nv12: JobTable,
    nv12_layout: Nv12Layout,
    /// Pinned staging: I420 going up (write-combined), NV12 going up.
    up: PinnedHostSlice<u8>,
    up_nv12: PinnedHostSlice<u8>,
    /// Per rung, pinned (cached: the CPU reads it): each rung comes down on
    /// its own and its event tells the host when that one is there.
    down: Vec<PinnedHostSlice<u8>>,
    /// A host P010 picture's planes on the device ([`GpuScaler::scale_p010`]): made on its
    /// first call, grown only if a later picture's pitches need more.
    up_p010: Option<CudaSlice<u8>>,
    /// Per rung, recorded on the compute stream after its launch: what the
    /// copy stream waits for before taking the rung out.
    scaled: Vec<CudaEvent>,
    /// Recorded on the copy stream after the copies a call queued there.
    copied: CudaEvent,
    /// Around each frame's kernels on the compute stream (a 10-bit source's
    /// reduction included), for `rungs_gpu_kernel_seconds_total`; the copies
    /// run on the copy stream, outside it.
    timing: KernelTiming,
}

/// Two timing events around a kernel launch and the counter their
/// difference goes to.
pub(crate) struct KernelTiming {
    start: CudaEvent,
    end: CudaEvent,
    seconds: prometheus::Counter,
}

impl KernelTiming {
    pub(crate) fn new(gpu: &Gpu, kernel: &str) -> Result<Self, GpuError> {
        let ctx = gpu.context();
        let event = || {
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver("cuEventCreate"))
        };
        Ok(Self {
            start: event()?,
            end: event()?,
            seconds: crate::metrics::METRICS
                .gpu_kernel_seconds
                .with_label_values(&[&gpu.index.to_string(), kernel]),
        })
    }

    pub(crate) fn start(&self, stream: &CudaStream) -> Result<(), GpuError> {
        self.start.record(stream).map_err(driver("cuEventRecord"))
    }

    pub(crate) fn end(&self, stream: &CudaStream) -> Result<(), GpuError> {
        self.end.record(stream).map_err(driver("cuEventRecord"))
    }

    /// Adds the time between the two events; call once the stream has
    /// passed the end event (after a synchronising copy).
    pub(crate) fn account(&self) {
        if let Ok(ms) = self.start.elapsed_ms(&self.end) {
            self.seconds.inc_by(f64::from(ms.max(0.0)) / 1000.0);
        }
    }
}

impl GpuScaler {
    /// With the default [`Kernel`].
    pub fn new(gpu: Arc<Gpu>, source: Size, rungs: &[Size]) -> ScaleResult<Self, GpuScaleError> {
        Self::with_kernel(gpu, source, rungs, Kernel::default())
    }

    pub fn with_kernel(
        gpu: Arc<Gpu>,
        source: Size,
        rungs: &[Size],
        kernel: Kernel,
    ) -> ScaleResult<Self, GpuScaleError> {
        if rungs.is_empty() {
            return Err(ScaleError::NoRungs.into());
        }
        let stream = gpu.stream()?;
        let copy = gpu.stream()?;
        let src_layout = Layout::new(source).map_err(ScaleError::from)?;
        let layouts = rungs
            .iter()
            .map(|&r| Layout::new(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ScaleError::from)?;
        let nv12_layout = Nv12Layout::new(source);
        let mut dst_offsets = Vec::with_capacity(rungs.len());
        let mut dst_len = 0;
        for l in &layouts {
            dst_offsets.push(dst_len);
            dst_len += l.buffer_len().next_multiple_of(PITCH_ALIGN);
        }
        let src_len = src_layout.buffer_len().max(nv12_layout.len);
        let alloc = |len| stream.alloc_zeros::<u8>(len).map_err(driver("cuMemAlloc"));
        let src = alloc(src_len)?;
        let dst = alloc(dst_len)?;

        // Tables per rung and plane kind (luma, chroma).
        let mut filters = Vec::new();
        let mut tables = Vec::new();
        for layout in &layouts {
            for plane in [Plane::Y, Plane::U] {
                let (sw, sh) = src_layout.plane_size(plane);
                let (dw, dh) = layout.plane_size(plane);
                let h = upload(&stream, &AxisFilter::new(kernel, sw, dw))?;
                let v = upload(&stream, &AxisFilter::new(kernel, sh, dh))?;
                if v.tile_h == 0 {
                    return Err(GpuScaleError::TooSteep { from: sh, to: dh });
                }
                tables.push((filters.len(), filters.len() + 1));
                filters.push(h);
                filters.push(v);
            }
        }
        let src_ptr = device_ptr(&src, &stream);
        let dst_ptr = device_ptr(&dst, &stream);
        let i420_planes = i420_planes(&src_layout);
        let nv = nv12_layout;
        let nv12_planes = nv.planes();
        let addresses: Vec<(Axis, Axis)> = tables
            .iter()
            .map(|&(h, v)| {
                let axis = |f: &DeviceFilter| Axis {
                    starts: device_ptr(&f.starts, &stream),
                    weights: device_ptr(&f.weights, &stream),
                    taps: f.taps,
                    tile_h: f.tile_h,
                };
                (axis(&filters[h]), axis(&filters[v]))
            })
            .collect();
        let table = |planes: [SourcePlane; 3]| -> Result<JobTable, GpuScaleError> {
            let (jobs, launches) =
                build_jobs(src_ptr, planes, dst_ptr, &layouts, &dst_offsets, &addresses);
            let jobs = stream.clone_htod(&jobs).map_err(driver("cuMemcpyHtoD"))?;
            let base = device_ptr(&jobs, &stream);
            let job_bytes = std::mem::size_of::<ScaleJob>() as u64;
            let launches = launches
                .iter()
                .map(|l| (base + l.first_job as u64 * job_bytes, l.blocks))
                .collect();
            Ok(JobTable {
                _jobs: jobs,
                launches,
            })
        };
        let i420 = table(i420_planes)?;
        let nv12 = table(nv12_planes)?;

        let timing = KernelTiming::new(&gpu, "scale_ladder")?;
        let ctx = gpu.context();
        let scaled = (0..rungs.len())
            .map(|_| ctx.new_event(None).map_err(driver("cuEventCreate")))
            .collect::<Result<Vec<_>, _>>()?;
        // The host waits on it: blocking, rather than spinning a core.
        let copied = ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
            .map_err(driver("cuEventCreate"))?;
        // SAFETY: page-locked host memory of the given lengths; cudarc tracks
        // the copies in flight on each and waits for them before handing out
        // its slice.
        let (up, up_nv12, down) = unsafe {
            (
                ctx.alloc_pinned::<u8>(src_layout.buffer_len())
                    .map_err(driver("cuMemHostAlloc"))?,
                ctx.alloc_pinned::<u8>(nv.len)
                    .map_err(driver("cuMemHostAlloc"))?,
                layouts
                    .iter()
                    .map(|l| ctx.alloc_pinned_with_flags::<u8>(l.buffer_len(), 0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(driver("cuMemHostAlloc"))?,
            )
        };
        Ok(Self {
            gpu,
            stream,
            copy,
            source,
            order: smallest_first(rungs),
            rungs: rungs.to_vec(),
            layouts,
            src,
            dst,
            dst_base: dst_ptr,
            dst_offsets,
            _filters: filters,
            i420,
            nv12,
            nv12_layout,
            up,
            up_nv12,
            down,
            up_p010: None,
            scaled,
            copied,
            timing,
        })
    }

    /// Scales a picture that is already in device memory (an NVDEC surface: the device
    /// addresses and pitches of its Y and interleaved UV planes, laid out as `format`) into
    /// `dst`. NV12 is copied device to device into the scaler's source buffer; P010 is
    /// reduced to 8 bits into that buffer by `p010_to_nv12`. Then the launches, and each
    /// rung out to its target. The surface can be reused as soon as this returns, whether
    /// it succeeded or not.
    ///
    /// # Safety
    ///
    /// `y` and `uv` must address device memory in this GPU's primary context
    /// (the one FFmpeg's NVDEC opens with `primary_ctx`) holding the
    /// source's rows at those pitches, valid until this returns.
    pub unsafe fn scale_device<O: RungOutput>(
        &mut self,
        format: SemiPlanar,
        y: (u64, usize),
        uv: (u64, usize),
        pts: i64,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        self.check_targets(dst)?;
        for (what, (ptr, pitch), row) in self.surface_rows(format, y, uv) {
            if ptr == 0 {
                return Err(bad_surface(format, what, "null device address".into()));
            }
            check_pitch(format, what, ptr, pitch, row)?;
        }
        self.gpu
            .context()
            .bind_to_thread()
            .map_err(driver("cuCtxSetCurrent"))?;
        // NVDEC's copy into the surface was queued on FFmpeg's stream, the
        // legacy default one, which this scaler's non-blocking streams do
        // not wait for by themselves.
        // SAFETY: synchronising the null stream of the current context.
        unsafe { sys::cuStreamSynchronize(std::ptr::null_mut()) }
            .result()
            .map_err(driver("cuStreamSynchronize"))?;
        let source = match format {
            SemiPlanar::Nv12 => {
                // A failed copy may still be queued: `run`'s error path waits for it too.
                // SAFETY: the caller's promise above, and the rows checked against the pitches.
                if let Err(e) = unsafe { self.copy_nv12_device(y, uv) } {
                    return Err(self.drained(e));
                }
                Source::Nv12
            }
            SemiPlanar::P010 => Source::P010 { y, uv },
        };
        self.run(source, pts, dst)
    }

    /// Each plane of a `format` picture of the source's size by name, with its (address,
    /// pitch) and the bytes of one of its rows.
    fn surface_rows<T>(
        &self,
        format: SemiPlanar,
        y: (T, usize),
        uv: (T, usize),
    ) -> [(&'static str, (T, usize), usize); 2] {
        let bytes = format.sample_bytes();
        let c = self.source.chroma();
        [
            ("Y", y, self.source.width as usize * bytes),
            ("UV", uv, 2 * c.width as usize * bytes),
        ]
    }

    /// Copies an NV12 surface into `src` in the scaler's NV12 layout, on the compute stream.
    ///
    /// # Safety
    ///
    /// As for [`GpuScaler::scale_device`], with pitches checked against the rows.
    unsafe fn copy_nv12_device(
        &mut self,
        y: (u64, usize),
        uv: (u64, usize),
    ) -> Result<(), GpuScaleError> {
        let nv = self.nv12_layout;
        let (w, h) = (self.source.width as usize, self.source.height as usize);
        let c = self.source.chroma();
        let (cw, ch) = (2 * c.width as usize, c.height as usize);
        let base = device_ptr(&self.src, &self.stream);
        let planes = [
            (y, 0, nv.y_pitch, w, h),
            (uv, nv.uv_offset, nv.uv_pitch, cw, ch),
        ];
        for ((src, src_pitch), offset, dst_pitch, width, rows) in planes {
            let copy = copy_2d(
                (src, src_pitch),
                (base + offset as u64, dst_pitch),
                width,
                rows,
            );
            // SAFETY: the source rows are the caller's (see above); the
            // destination is `src`, sized for this NV12 layout when the
            // scaler was built; the copy is ordered before the launches on
            // the same stream.
            unsafe { sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()) }
                .result()
                .map_err(driver("cuMemcpy2DAsync"))?;
        }
        Ok(())
    }

    /// Scales an NV12 picture (a hardware decoder's layout: `y` and
    /// interleaved `uv` rows with their pitches) into `dst`, as [`Scaler::scale`]
    /// does an I420 one.
    pub fn scale_nv12<O: RungOutput>(
        &mut self,
        y: (&[u8], usize),
        uv: (&[u8], usize),
        pts: i64,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        self.check_targets(dst)?;
        self.check_host_surface(SemiPlanar::Nv12, y, uv)?;
        let nv = self.nv12_layout;
        let w = self.source.width as usize;
        let cw = 2 * self.source.chroma().width as usize;
        let up = self
            .up_nv12
            .as_mut_slice()
            .map_err(driver("cuEventSynchronize"))?;
        for (row, d) in up[..nv.uv_offset].chunks_exact_mut(nv.y_pitch).enumerate() {
            d[..w].copy_from_slice(&y.0[row * y.1..][..w]);
        }
        for (row, d) in up[nv.uv_offset..].chunks_exact_mut(nv.uv_pitch).enumerate() {
            d[..cw].copy_from_slice(&uv.0[row * uv.1..][..cw]);
        }
        self.stream
            .memcpy_htod(&self.up_nv12, &mut self.src)
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        self.run(Source::Nv12, pts, dst)
    }

    /// Scales a P010 picture held on the host (NVDEC's 10-bit layout, as
    /// [`Frame::copy_from_p010`] reads it) into `dst`: both planes go up as they are, then
    /// are reduced and scaled exactly as an NVDEC surface is by [`GpuScaler::scale_device`].
    /// What checks the reduction on a GPU without NVDEC.
    pub fn scale_p010<O: RungOutput>(
        &mut self,
        y: (&[u8], usize),
        uv: (&[u8], usize),
        pts: i64,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        self.check_targets(dst)?;
        self.check_host_surface(SemiPlanar::P010, y, uv)?;
        // UV starts on an aligned address after Y, as in a decoder's surface.
        let uv_offset = y.0.len().next_multiple_of(PITCH_ALIGN);
        let need = uv_offset + uv.0.len();
        let up = match self.up_p010.take() {
            Some(up) if up.len() >= need => up,
            _ => self
                .stream
                .alloc_zeros::<u8>(need)
                .map_err(driver("cuMemAlloc"))?,
        };
        let up = self.up_p010.insert(up);
        self.stream
            .memcpy_htod(y.0, &mut up.slice_mut(..y.0.len()))
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        self.stream
            .memcpy_htod(uv.0, &mut up.slice_mut(uv_offset..need))
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        let base = device_ptr(up, &self.stream);
        let source = Source::P010 {
            y: (base, y.1),
            uv: (base + uv_offset as u64, uv.1),
        };
        self.run(source, pts, dst)
    }

    /// Checks host planes of a `format` picture of the source's size: pitches that hold a
    /// row (2-byte aligned for P010) and enough bytes for every row, the last unpadded.
    fn check_host_surface(
        &self,
        format: SemiPlanar,
        y: (&[u8], usize),
        uv: (&[u8], usize),
    ) -> Result<(), GpuScaleError> {
        let (h, ch) = (
            self.source.height as usize,
            self.source.chroma().height as usize,
        );
        let planes = self.surface_rows(format, y, uv).into_iter().zip([h, ch]);
        for ((what, (data, pitch), row), rows) in planes {
            // Where the host rows lie does not matter: they go up to an aligned device buffer.
            check_pitch(format, what, 0, pitch, row)?;
            let need = pitch * (rows - 1) + row;
            if data.len() < need {
                let why = format!("has {} bytes, needs {need}", data.len());
                return Err(bad_surface(format, what, why));
            }
        }
        Ok(())
    }

    /// Checks the outputs handed to a call: one per rung, of its size, and a device
    /// target's pitches wide enough for its rows.
    fn check_targets<O: RungOutput>(&self, dst: &mut [O]) -> Result<(), GpuScaleError> {
        if dst.len() != self.rungs.len() {
            return Err(ScaleError::RungCount {
                want: self.rungs.len(),
                got: dst.len(),
            }
            .into());
        }
        for (index, (out, &want)) in dst.iter_mut().zip(&self.rungs).enumerate() {
            let got = out.picture_size();
            if got != want {
                return Err(ScaleError::RungSize { index, want, got }.into());
            }
            let Target::Device(planes) = out.target() else {
                continue;
            };
            for (plane, (address, pitch)) in Plane::ALL.into_iter().zip(planes) {
                let (width, _) = self.layouts[index].plane_size(plane);
                if address == 0 || pitch < width {
                    let why =
                        format!("{plane:?} plane at {address:#x}, pitch {pitch}, rows of {width}");
                    return Err(GpuScaleError::BadTarget { rung: want, why });
                }
            }
        }
        Ok(())
    }

    /// Scales an I420 frame of the source's size into `dst`: [`Scaler::scale`] for any
    /// [`RungOutput`], device targets included.
    pub fn scale_into<O: RungOutput>(
        &mut self,
        src: &Frame,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        if src.size() != self.source {
            let (want, got) = (self.source, src.size());
            return Err(ScaleError::SourceSize { want, got }.into());
        }
        self.check_targets(dst)?;
        let up = self
            .up
            .as_mut_slice()
            .map_err(driver("cuEventSynchronize"))?;
        up.copy_from_slice(src.pixels());
        self.stream
            .memcpy_htod(&self.up, &mut self.src)
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        self.run(Source::I420, src.pts(), dst)
    }

    /// The launches over the source now queued (or on the device), then every rung out to
    /// its target. On an error, waits for what was queued, so that nothing still reads the
    /// source or writes a target once this returns.
    fn run<O: RungOutput>(
        &mut self,
        source: Source,
        pts: i64,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        self.scale_and_take_out(source, pts, dst)
            .map_err(|e| self.drained(e))
    }

    /// Waits for both streams, then hands `e` back: the error path of a call that may have
    /// queued work reading the caller's surface or writing its targets.
    fn drained(&self, e: GpuScaleError) -> GpuScaleError {
        // Best effort: a failed wait means a broken context, which `e` already reports.
        let _ = self.stream.synchronize();
        let _ = self.copy.synchronize();
        e
    }

    fn scale_and_take_out<O: RungOutput>(
        &mut self,
        source: Source,
        pts: i64,
        dst: &mut [O],
    ) -> Result<(), GpuScaleError> {
        // The raw copies below are queued in this context's terms.
        self.gpu
            .context()
            .bind_to_thread()
            .map_err(driver("cuCtxSetCurrent"))?;
        self.timing.start(&self.stream)?;
        self.launch(source)?;
        self.timing.end(&self.stream)?;
        // The copies are queued once every launch is: the kernels go back to back, and each
        // rung's copy still starts as soon as its own kernel is done.
        for &r in &self.order {
            self.copy
                .wait(&self.scaled[r])
                .map_err(driver("cuStreamWaitEvent"))?;
            match dst[r].target() {
                Target::Host(_) => {
                    let at = self.dst_offsets[r];
                    let rung = self.dst.slice(at..at + self.layouts[r].buffer_len());
                    self.copy
                        .memcpy_dtoh(&rung, &mut self.down[r])
                        .map_err(driver("cuMemcpyDtoHAsync"))?;
                }
                // SAFETY: the planes are as `RungOutput` promises, their pitches checked
                // against the rung's rows by `check_targets`.
                Target::Device(planes) => unsafe { self.copy_to_device(r, planes) }?,
            }
        }
        self.copied
            .record(&self.copy)
            .map_err(driver("cuEventRecord"))?;
        // Rung by rung as each lands, while the later ones are still coming down.
        for &r in &self.order {
            let out = &mut dst[r];
            if let Target::Host(frame) = out.target() {
                let down = self.down[r]
                    .as_slice()
                    .map_err(driver("cuEventSynchronize"))?;
                frame.pixels_mut().copy_from_slice(down);
            }
            out.set_picture_pts(pts);
        }
        // Device targets are written once the copy stream is past `copied`. It waited for
        // every rung's event, the last one recorded after the last launch, so every kernel
        // (and whatever read the caller's surface before them) is done too.
        self.copied
            .synchronize()
            .map_err(driver("cuEventSynchronize"))?;
        self.timing.account();
        Ok(())
    }

    /// Queues rung `r`'s planes, device to device, from `dst` into `planes` on the copy
    /// stream (which has waited for the rung's kernel).
    ///
    /// # Safety
    ///
    /// `planes` as [`RungOutput`] promises for a device target of this rung's size.
    unsafe fn copy_to_device(
        &self,
        r: usize,
        planes: [(u64, usize); 3],
    ) -> Result<(), GpuScaleError> {
        let layout = &self.layouts[r];
        let base = self.dst_base + self.dst_offsets[r] as u64;
        for (plane, to) in Plane::ALL.into_iter().zip(planes) {
            let (width, rows) = layout.plane_size(plane);
            let from = (base + layout.offset(plane) as u64, layout.stride(plane));
            let copy = copy_2d(from, to, width, rows);
            // SAFETY: the source is this rung's plane in `dst`, written by its kernel before
            // the event this stream waited for, and rewritten only by the next call's
            // kernels, queued after this call has waited for `copied`; the destination is
            // the caller's (see above).
            unsafe { sys::cuMemcpy2DAsync_v2(&copy, self.copy.cu_stream()) }
                .result()
                .map_err(driver("cuMemcpy2DAsync"))?;
        }
        Ok(())
    }

    /// Queues the kernels alone on the compute stream, over whatever source
    /// is on the device: what the GPU benchmark times, many at once.
    #[cfg(feature = "internals")]
    pub fn launch_on_device(&mut self, nv12: bool) -> Result<(), GpuScaleError> {
        self.launch(if nv12 { Source::Nv12 } else { Source::I420 })
    }

    /// Waits for everything queued on this scaler's streams.
    pub fn synchronize(&self) -> Result<(), GpuScaleError> {
        for stream in [&self.stream, &self.copy] {
            stream
                .synchronize()
                .map_err(driver("cuStreamSynchronize"))?;
        }
        Ok(())
    }

    /// Device memory one frame's launches must move at least: the source read once
    /// and every rung written once.
    #[cfg(feature = "internals")]
    pub fn min_bytes_per_frame(&self) -> usize {
        let src = Layout::new(self.source).map_or(0, |l| l.packed_len());
        src + self.layouts.iter().map(Layout::packed_len).sum::<usize>()
    }

    /// Time of a device-to-device copy of `bytes` on this scaler's compute stream,
    /// averaged over `rounds`: the bandwidth ceiling the benchmark compares
    /// the kernel with.
    #[cfg(feature = "internals")]
    pub fn time_device_copy(&self, bytes: usize, rounds: u32) -> Result<f64, GpuScaleError> {
        let alloc = |n| {
            self.stream
                .alloc_zeros::<u8>(n)
                .map_err(driver("cuMemAlloc"))
        };
        let (from, mut to) = (alloc(bytes)?, alloc(bytes)?);
        self.stream
            .memcpy_dtod(&from, &mut to)
            .map_err(driver("cuMemcpyDtoD"))?;
        self.synchronize()?;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            self.stream
                .memcpy_dtod(&from, &mut to)
                .map_err(driver("cuMemcpyDtoD"))?;
        }
        self.synchronize()?;
        Ok(started.elapsed().as_secs_f64() / f64::from(rounds.max(1)))
    }

    /// Queues one frame's kernels on the compute stream: a P010 source's reduction, then one
    /// launch per rung, smallest first, each followed by its `scaled` event. They overwrite
    /// `dst` with nothing on the copy stream still reading it: every call returns only once
    /// the copy stream has passed its `copied` (or, failing, once both streams are drained).
    fn launch(&mut self, source: Source) -> Result<(), GpuScaleError> {
        let table = match source {
            Source::I420 => &self.i420,
            Source::Nv12 => &self.nv12,
            Source::P010 { y, uv } => {
                self.reduce_p010(y, uv)?;
                &self.nv12
            }
        };
        let count = JOBS_PER_RUNG as i32;
        for &r in &self.order {
            let (jobs, blocks) = table.launches[r];
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (BLOCK.0, BLOCK.1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.stream.launch_builder(&self.gpu.scale_ladder);
            launch.arg(&jobs).arg(&count);
            // SAFETY: the kernel reads `src` and the tables and writes rung `r` of `dst`
            // through its three jobs' pointers, all allocated when the scaler was built
            // for exactly these sizes (the jobs too, uploaded on this stream); the source
            // was written before it on this stream, and the copy stream reads the rung
            // only after this launch's event (and no earlier frame's copy is pending).
            unsafe { launch.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
            self.scaled[r]
                .record(&self.stream)
                .map_err(driver("cuEventRecord"))?;
        }
        Ok(())
    }

    /// Queues `p010_to_nv12` for both planes of a P010 picture (device addresses and
    /// pitches, checked by the caller), writing the 8-bit NV12 the `nv12` jobs read into `src`.
    fn reduce_p010(&self, y: (u64, usize), uv: (u64, usize)) -> Result<(), GpuScaleError> {
        let nv = self.nv12_layout;
        let base = device_ptr(&self.src, &self.stream);
        let c = self.source.chroma();
        let planes = [
            (y, 0, nv.y_pitch, self.source.width, self.source.height),
            (uv, nv.uv_offset, nv.uv_pitch, 2 * c.width, c.height),
        ];
        for ((src, src_pitch), offset, dst_pitch, width, rows) in planes {
            let cfg = LaunchConfig {
                grid_dim: (width.div_ceil(REDUCE_BLOCK), rows, 1),
                block_dim: (REDUCE_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let dst = base + offset as u64;
            // Sides are at most MAX_SIDE and pitches were checked to fit an int.
            let (src_pitch, dst_pitch) = (src_pitch as i32, dst_pitch as i32);
            let (width, rows) = (width as i32, rows as i32);
            let mut launch = self.stream.launch_builder(&self.gpu.p010_to_nv12);
            launch.arg(&src).arg(&src_pitch).arg(&dst).arg(&dst_pitch);
            launch.arg(&width).arg(&rows);
            // SAFETY: the kernel reads `rows` rows of `width` 16-bit samples at `src_pitch`
            // from the caller's planes (checked to hold them, 2-byte aligned) and writes as
            // many bytes per row into `src`, sized for this NV12 layout; it is ordered
            // before the scale launches on the same stream.
            unsafe { launch.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        }
        Ok(())
    }
}

impl Drop for GpuScaler {
    fn drop(&mut self) {
        // cudarc orders the freeing of `dst` after the reads it tracks, not after the raw
        // copies to device targets: those must be done before the fields go.
        let _ = self.copy.synchronize();
    }
}

#[derive(Clone, Copy)]
enum Source {
    I420,
    Nv12,
    /// A P010 picture at these device (address, pitch) pairs, reduced into `src` first.
    P010 {
        y: (u64, usize),
        uv: (u64, usize),
    },
}

impl Scaler for GpuScaler {
    fn scale(&mut self, src: &Frame, dst: &mut [Frame]) -> ScaleResult<()> {
        self.scale_into(src, dst).map_err(|e| match e {
            GpuScaleError::Scale(e) => e,
            e => ScaleError::Device(Box::new(e)),
        })
    }

    fn rungs(&self) -> &[Size] {
        &self.rungs
    }
}

/// A device-to-device copy of `rows` rows of `width` bytes, each side an (address, pitch).
fn copy_2d(
    (src, src_pitch): (u64, usize),
    (dst, dst_pitch): (u64, usize),
    width: usize,
    rows: usize,
) -> sys::CUDA_MEMCPY2D {
    sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: width,
        Height: rows,
    }
}

fn upload(stream: &Arc<CudaStream>, f: &AxisFilter) -> Result<DeviceFilter, GpuError> {
    let starts: Vec<i32> = f.starts().iter().map(|&s| s as i32).collect();
    Ok(DeviceFilter {
        tile_h: tile_height(f).map_or(0, |t| t as i32),
        starts: stream.clone_htod(&starts).map_err(driver("cuMemcpyHtoD"))?,
        weights: stream
            .clone_htod(f.weights())
            .map_err(driver("cuMemcpyHtoD"))?,
        taps: f.taps() as i32,
    })
}

/// The raw address of a buffer, for the job table and the copies to device
/// targets; the guard's event only orders later uses through cudarc, and the
/// raw uses of these addresses are ordered by the scaler's own events.
fn device_ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (ptr, _guard) = slice.device_ptr(stream);
    ptr
}

#[cfg(test)]
mod tests;
