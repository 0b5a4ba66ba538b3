//! `NvencEncoder`: a rung encoded by the GPU's NVENC through FFmpeg's h264_nvenc, with the
//! rung settings libx264 gets (bitrate, VBV, forced IDRs on source keyframes, no B-frames,
//! low latency). Frames come from host memory, as for libx264; the encoder context, input
//! picture and output arena are the shared [`LavcEncoder`]'s.
//!
//! `NvencCudaEncoder`: the same encoder fed pictures that stay in device memory. It owns a
//! CUDA frames context ([`CudaFrames`]: YUV 4:2:0 at the rung's size, on the GPU's primary
//! context, the one the CUDA scaler runs in); the pipeline takes a [`CudaPicture`] from it
//! per frame, the GPU scaler copies the rung into it device to device, and NVENC reads it
//! there: no download to the host and upload back. It takes no host frames at all.
//!
//! h264_nvenc loads libcuda and libnvidia-encode when it opens: without a driver, or on a GPU
//! without NVENC (H100, H200, A100), or past the driver's session limit, `new` fails and the
//! pipeline puts the rung on libx264 instead, saying so; a CUDA frames context that cannot be
//! made sends the rung to the host-memory `NvencEncoder`. It never falls back by itself.

use std::ptr::NonNull;
use std::sync::Arc;

use ffmpeg_next as ffmpeg;

use super::lavc::{HwFrames, LavcEncoder, check_settings, gop};
use super::{EncodeError, EncodedPacket, EncoderSettings, Result, VideoEncoder};
use crate::media::VideoParams;
use crate::transcode::frame::{Frame, FrameError, Size};

pub const CODEC: &str = "h264_nvenc";

/// NVENC's middle preset (p1 fastest .. p7 best): at 1080p it runs several hundred frames a
/// second, so one GPU carries many rungs; the x264 preset name in the settings does not apply.
const PRESET: &str = "p4";

pub struct NvencEncoder {
    inner: LavcEncoder,
}

impl NvencEncoder {
    /// Opens h264_nvenc for one rung, on CUDA device `device` (`None`: the driver's first).
    pub fn new(settings: &EncoderSettings, device: Option<usize>) -> Result<Self> {
        check(settings)?;
        let inner = LavcEncoder::open(settings, CODEC, &options(settings, device))
            .map_err(name_missing_driver)?;
        Ok(Self { inner })
    }

    pub fn params(&self) -> &Arc<VideoParams> {
        self.inner.params()
    }
}

impl VideoEncoder for NvencEncoder {
    fn params(&self) -> &Arc<VideoParams> {
        self.inner.params()
    }

    fn encode(
        &mut self,
        frame: &Frame,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()> {
        self.inner.encode(frame, force_idr, out)
    }

    fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()> {
        self.inner.flush(out)
    }
}

/// h264_nvenc fed [`CudaPicture`]s of its own [`CudaFrames`].
pub struct NvencCudaEncoder {
    inner: LavcEncoder,
    frames: CudaFrames,
}

impl NvencCudaEncoder {
    /// Makes a CUDA frames context for the rung on CUDA device `device` and opens
    /// h264_nvenc on it (the device is the context's, not an option).
    pub fn new(settings: &EncoderSettings, device: usize) -> Result<Self> {
        check(settings)?;
        let size = settings.size();
        let frames = CudaFrames::new(device, size).map_err(|source| EncodeError::Open {
            codec: CODEC,
            size,
            options: format!("CUDA frames (yuv420p) on GPU {device}"),
            source,
        });
        let frames = frames.map_err(name_missing_driver)?;
        let inner = LavcEncoder::open_hw(settings, CODEC, &options(settings, None), &frames.hw)
            .map_err(name_missing_driver)?;
        Ok(Self { inner, frames })
    }

    /// Where this encoder's pictures come from.
    pub fn frames(&self) -> &CudaFrames {
        &self.frames
    }

    pub fn params(&self) -> &Arc<VideoParams> {
        self.inner.params()
    }

    /// Encodes `picture` (one of [`NvencCudaEncoder::frames`]) at its pts, as an IDR when
    /// `force_idr` is set. Whatever filled it must be done before this call (the CUDA
    /// scaler returns once its copies are): NVENC reads it on FFmpeg's stream, the legacy
    /// default one, which waits for no other stream's work.
    pub fn encode(
        &mut self,
        mut picture: CudaPicture,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()> {
        let pts = picture.pts;
        self.inner
            .encode_hw(&mut picture.frame, pts, force_idr, out)
    }

    /// Drains the frames still held at the end of the stream.
    pub fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()> {
        self.inner.flush(out)
    }
}

fn check(settings: &EncoderSettings) -> Result<()> {
    check_settings(settings).map_err(|why| EncodeError::Settings {
        codec: CODEC,
        size: settings.size(),
        why,
    })
}

/// FFmpeg logs the cause of a failed open ("Cannot load libcuda.so.1") and returns a generic
/// error; names the usual one in the error itself, where the fallback's log line shows it.
fn name_missing_driver(e: EncodeError) -> EncodeError {
    if crate::gpu::device::driver_present() {
        e
    } else {
        EncodeError::Unavailable {
            why: "no CUDA driver: libcuda.so.1 not found",
            source: Box::new(e),
        }
    }
}

/// Why a CUDA picture could not be had or read back.
#[derive(Debug, thiserror::Error)]
pub enum CudaPictureError {
    #[error("no {size} CUDA picture from the frames pool: {source}")]
    Get { size: Size, source: ffmpeg::Error },
    #[error("CUDA picture at pts {pts} not copied to the host: {source}")]
    Download { pts: i64, source: ffmpeg::Error },
    #[error("CUDA picture at pts {pts}: {source}")]
    Frame { pts: i64, source: FrameError },
}

/// One rung's NVENC input pictures in device memory: FFmpeg's CUDA frames context (a pool of
/// YUV 4:2:0 pictures of the rung's size) on a GPU's primary context. Cloned for whoever
/// takes pictures from it while the encoder reads them; the pool lives while any clone or
/// picture does.
#[derive(Clone)]
pub struct CudaFrames {
    hw: HwFrames,
    size: Size,
}

impl CudaFrames {
    fn new(device: usize, size: Size) -> std::result::Result<Self, ffmpeg::Error> {
        use ffmpeg::ffi;
        let (width, height) = (size.width as i32, size.height as i32);
        // Its own reference to the device, on the primary context: the scaler's.
        let mut device_ref = crate::av::CudaDevice::open(Some(device))?.into_raw();
        // SAFETY: `device_ref` is a valid CUDA device reference; av_hwframe_ctx_alloc takes a
        // reference of its own to it, so ours is released right after. The new context is
        // not shared yet: its fields are ours to set before av_hwframe_ctx_init. One that does
        // not initialise is released here; one that does goes, with our only reference, to
        // `HwFrames`.
        let frames = unsafe {
            let frames = ffi::av_hwframe_ctx_alloc(device_ref);
            ffi::av_buffer_unref(&mut device_ref);
            let Some(frames) = NonNull::new(frames) else {
                return Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::ENOMEM,
                });
            };
            let ctx = (*frames.as_ptr()).data.cast::<ffi::AVHWFramesContext>();
            (*ctx).format = ffi::AVPixelFormat::AV_PIX_FMT_CUDA;
            // Planar, as the scaler's rungs are: three plain 2D copies fill a picture.
            (*ctx).sw_format = ffi::AVPixelFormat::AV_PIX_FMT_YUV420P;
            (*ctx).width = width;
            (*ctx).height = height;
            let ret = ffi::av_hwframe_ctx_init(frames.as_ptr());
            if ret < 0 {
                let mut raw = frames.as_ptr();
                ffi::av_buffer_unref(&mut raw);
                return Err(ffmpeg::Error::from(ret));
            }
            HwFrames::from_raw(frames)
        };
        Ok(Self { hw: frames, size })
    }

    /// A picture from the pool, to fill on the device and hand to the encoder.
    pub fn picture(&self) -> std::result::Result<CudaPicture, CudaPictureError> {
        let mut frame = ffmpeg::frame::Video::empty();
        // SAFETY: the frames context is valid (an initialised CUDA one) and `frame` empty;
        // on success FFmpeg gives it a pool buffer, its planes' device addresses and pitches,
        // and a reference to the context.
        let ret =
            unsafe { ffmpeg::ffi::av_hwframe_get_buffer(self.hw.as_ptr(), frame.as_mut_ptr(), 0) };
        if ret < 0 {
            let source = ffmpeg::Error::from(ret);
            return Err(CudaPictureError::Get {
                size: self.size,
                source,
            });
        }
        Ok(CudaPicture {
            frame,
            size: self.size,
            pts: 0,
        })
    }
}

/// A YUV 4:2:0 picture in device memory from a [`CudaFrames`] pool, returned to it when
/// dropped (or, once encoded, when NVENC has read it).
pub struct CudaPicture {
    frame: ffmpeg::frame::Video,
    size: Size,
    pts: i64,
}

impl CudaPicture {
    pub fn size(&self) -> Size {
        self.size
    }

    pub fn pts(&self) -> i64 {
        self.pts
    }

    pub fn set_pts(&mut self, pts: i64) {
        self.pts = pts;
    }

    /// (device address, pitch) of the Y, U and V planes, in the primary context of the
    /// device the frames context was made on. FFmpeg lays them out as NVENC reads YUV
    /// 4:2:0 (V before U, chroma at half the luma pitch); these say where each one is.
    pub fn planes(&self) -> [(u64, usize); 3] {
        // SAFETY: a frame from av_hwframe_get_buffer of a CUDA context holds its planes'
        // device addresses in data[0..3] and their pitches in linesize[0..3].
        unsafe {
            let raw = self.frame.as_ptr();
            [0, 1, 2].map(|i| ((*raw).data[i] as u64, (*raw).linesize[i].max(0) as usize))
        }
    }
}

/// Copies [`CudaPicture`]s to host frames through one host picture allocated once: what
/// the quality check of a rung fed from device memory reads.
pub struct PictureDownload {
    host: ffmpeg::frame::Video,
}

impl PictureDownload {
    pub fn new(size: Size) -> Self {
        Self {
            host: ffmpeg::frame::Video::new(
                ffmpeg::format::Pixel::YUV420P,
                size.width,
                size.height,
            ),
        }
    }

    /// Copies `picture` into `into` (a frame of its size) and stamps its pts.
    pub fn copy(
        &mut self,
        picture: &CudaPicture,
        into: &mut Frame,
    ) -> std::result::Result<(), CudaPictureError> {
        let pts = picture.pts;
        // SAFETY: both frames are valid; `host` has buffers of the picture's size and
        // format, so FFmpeg copies into them (CUDA to host, waiting for the copy) rather
        // than allocating.
        let ret = unsafe {
            ffmpeg::ffi::av_hwframe_transfer_data(self.host.as_mut_ptr(), picture.frame.as_ptr(), 0)
        };
        if ret < 0 {
            let source = ffmpeg::Error::from(ret);
            return Err(CudaPictureError::Download { pts, source });
        }
        let h = &self.host;
        let planes = [0, 1, 2].map(|i| (h.data(i), h.stride(i)));
        into.copy_from_planes(planes)
            .map_err(|source| CudaPictureError::Frame { pts, source })?;
        into.set_pts(pts);
        Ok(())
    }
}

/// h264_nvenc's AVOptions (FFmpeg 5.1, libavcodec/nvenc_h264.c) for a rung. Bitrate, maxrate
/// and the GOP length are set on the context by [`LavcEncoder::open`].
fn options(s: &EncoderSettings, device: Option<usize>) -> Vec<(&'static str, String)> {
    let mut o = vec![
        ("preset", PRESET.into()),
        // Constant bitrate within the VBV, as the ladder's bitrates promise.
        ("rc", "cbr".into()),
        ("bufsize", s.bufsize_bits.to_string()),
        // A frame marked I becomes an IDR: segments and parts start with one in every rung.
        ("forced-idr", "1".into()),
        // No scene-cut I-frames where the source has no keyframe.
        ("no-scenecut", "1".into()),
        ("keyint_min", gop(s).to_string()),
        ("profile", "high".into()),
        // No B-frames: dts = pts, nothing held for reordering.
        ("bf", "0".into()),
    ];
    if s.low_latency {
        o.extend([
            ("tune", "ll".into()),
            // One frame in, one packet out: no lookahead, no output delay.
            ("zerolatency", "1".into()),
            ("delay", "0".into()),
            ("rc-lookahead", "0".into()),
        ]);
    }
    if let Some(d) = device {
        o.push(("gpu", d.to_string()));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::encode::FrameRate;
    use crate::transcode::frame::FramePool;

    #[test]
    fn options_carry_the_rung_settings_and_low_latency() {
        let s = EncoderSettings::live(640, 360, FrameRate::new(30, 1), 700_000);
        let o = options(&s, Some(1));
        let get = |k: &str| o.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("rc"), Some("cbr"));
        assert_eq!(get("bufsize"), Some("1400000"));
        assert_eq!(get("forced-idr"), Some("1"));
        assert_eq!(get("bf"), Some("0"));
        assert_eq!(get("zerolatency"), Some("1"));
        assert_eq!(get("delay"), Some("0"));
        assert_eq!(get("tune"), Some("ll"));
        assert_eq!(get("preset"), Some("p4"));
        assert_eq!(get("keyint_min"), Some("300"));
        assert_eq!(get("gpu"), Some("1"));
        let offline = EncoderSettings {
            low_latency: false,
            ..s
        };
        let o = options(&offline, None);
        assert!(o.iter().all(|(k, _)| !matches!(*k, "zerolatency" | "gpu")));
    }

    /// Real behaviour on both kinds of machine: without a driver (CI) h264_nvenc fails to
    /// open with an error that names it, which is what sends a rung to libx264; with NVENC
    /// it opens, and forced frames come out as IDRs.
    #[test]
    fn opens_where_the_machine_has_nvenc_and_fails_cleanly_where_not() {
        let s = EncoderSettings::live(320, 240, FrameRate::new(30, 1), 400_000);
        let probe = crate::gpu::probe::probe(&crate::gpu::GpuConfig::default());
        match NvencEncoder::new(&s, None) {
            Err(e) => {
                assert!(
                    !probe.nvenc.usable,
                    "the probe opened h264_nvenc, the encoder did not: {e}"
                );
                assert!(
                    matches!(
                        e,
                        EncodeError::Open { .. } | EncodeError::Unavailable { .. }
                    ),
                    "{e}"
                );
                let text = e.to_string();
                assert!(text.contains("h264_nvenc"), "{text}");
                assert!(text.contains("forced-idr=1"), "{text}");
            }
            Ok(mut enc) => {
                let pool = FramePool::new(s.size(), 4).expect("pool");
                let mut out = Vec::new();
                for i in 0..30i64 {
                    let mut f = pool.get().expect("frame");
                    f.pixels_mut().fill((i * 8) as u8);
                    f.set_pts(i * 3000);
                    enc.encode(&f, i % 10 == 0, &mut out).expect("encode");
                }
                enc.flush(&mut out).expect("flush");
                assert_eq!(out.len(), 30);
                let keys: Vec<i64> = out.iter().filter(|p| p.keyframe).map(|p| p.pts).collect();
                assert_eq!(keys, [0, 30_000, 60_000]);
                assert!(out.iter().all(|p| p.dts == p.pts), "no B-frames");
            }
        }
    }

    /// A host picture uploaded into `picture` (what the CUDA scaler does device to device),
    /// through FFmpeg's own copy on its CUDA context.
    fn upload(picture: &mut CudaPicture, from: &Frame) {
        let size = from.size();
        let mut host =
            ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, size.width, size.height);
        for (i, p) in crate::transcode::frame::Plane::ALL.into_iter().enumerate() {
            let stride = host.stride(i);
            let (w, h) = from.layout().plane_size(p);
            for y in 0..h {
                host.data_mut(i)[y * stride..][..w].copy_from_slice(from.row(p, y));
            }
        }
        // SAFETY: both frames are valid; `picture` has its device buffers, so FFmpeg copies
        // host to device into them (queued on FFmpeg's stream, which NVENC reads on too).
        let ret = unsafe {
            ffmpeg::ffi::av_hwframe_transfer_data(picture.frame.as_mut_ptr(), host.as_ptr(), 0)
        };
        assert!(ret >= 0, "upload: {}", ffmpeg::Error::from(ret));
    }

    /// A picture with detail everywhere, different for each `salt`.
    fn texture(size: Size, salt: u32) -> Frame {
        let mut f = FramePool::new(size, 1).expect("pool").get().expect("frame");
        for (i, b) in f.pixels_mut().iter_mut().enumerate() {
            *b = ((i as u32).wrapping_mul(2_654_435_761) ^ salt).to_le_bytes()[2];
        }
        f
    }

    fn same_picture(a: &Frame, b: &Frame) -> bool {
        use crate::transcode::frame::Plane;
        a.size() == b.size()
            && Plane::ALL.into_iter().all(|p| {
                let (_, h) = a.layout().plane_size(p);
                (0..h).all(|y| a.row(p, y) == b.row(p, y))
            })
    }

    /// As for host frames: where NVENC and the driver are, CUDA pictures encode, IDRs where
    /// asked, and read back as written; elsewhere the open fails with an error that names
    /// the encoder, which sends the rung to host frames (and then libx264).
    #[test]
    fn cuda_input_opens_where_the_machine_has_nvenc_and_fails_cleanly_where_not() {
        let s = EncoderSettings::live(320, 240, FrameRate::new(30, 1), 400_000);
        let probe = crate::gpu::probe::probe(&crate::gpu::GpuConfig::default());
        match NvencCudaEncoder::new(&s, 0) {
            Err(e) => {
                assert!(
                    !probe.nvenc.usable,
                    "the probe opened h264_nvenc, the CUDA-frames encoder did not: {e}"
                );
                assert!(
                    matches!(
                        e,
                        EncodeError::Open { .. } | EncodeError::Unavailable { .. }
                    ),
                    "{e}"
                );
                assert!(e.to_string().contains("h264_nvenc"), "{e}");
            }
            Ok(mut enc) => {
                let mut out = Vec::new();
                let mut download = PictureDownload::new(s.size());
                let mut back = FramePool::new(s.size(), 1)
                    .expect("pool")
                    .get()
                    .expect("frame");
                for i in 0..30i64 {
                    let mut p = enc.frames().picture().expect("a CUDA picture");
                    let from = texture(s.size(), i as u32);
                    upload(&mut p, &from);
                    p.set_pts(i * 3000);
                    if i == 7 {
                        download.copy(&p, &mut back).expect("download");
                        assert!(same_picture(&back, &from), "reads back as written");
                        assert_eq!(back.pts(), i * 3000);
                    }
                    enc.encode(p, i % 10 == 0, &mut out).expect("encode");
                }
                enc.flush(&mut out).expect("flush");
                assert_eq!(out.len(), 30);
                let keys: Vec<i64> = out.iter().filter(|p| p.keyframe).map(|p| p.pts).collect();
                assert_eq!(keys, [0, 30_000, 60_000]);
                assert!(out.iter().all(|p| p.dts == p.pts), "no B-frames");
            }
        }
    }

    /// A rung picture of FFmpeg's CUDA frames as the CUDA scaler's device target, as the
    /// pipeline pairs them (same GPU, its primary context).
    struct Target(CudaPicture);

    // SAFETY: the frames were made on the scaler's GPU (`gpu.index` below) through FFmpeg's
    // CUDA device on its primary context; a picture from the pool is this test's alone.
    unsafe impl crate::transcode::scale::cuda::RungOutput for Target {
        fn picture_size(&self) -> Size {
            self.0.size()
        }

        fn target(&mut self) -> crate::transcode::scale::cuda::Target<'_> {
            crate::transcode::scale::cuda::Target::Device(self.0.planes())
        }

        fn set_picture_pts(&mut self, pts: i64) {
            self.0.set_pts(pts);
        }
    }

    /// No NVENC needed (an H100 runs it): FFmpeg's CUDA frames open beside the node's own
    /// CUDA context, the CUDA scaler fills their pictures device to device through the
    /// planes FFmpeg lays out (NVENC's YUV 4:2:0 order, chroma at half pitch), and they
    /// read back exactly as the same rungs downloaded to the host.
    #[test]
    #[ignore = "needs a GPU: make test-gpu"]
    fn gpu_cuda_frames_take_the_scalers_rungs_as_the_host_gets_them() {
        use crate::gpu::device::Gpu;
        use crate::transcode::scale::{GpuScaler, Scaler};

        let gpu = Gpu::open(&crate::gpu::GpuConfig::default())
            .unwrap_or_else(|e| panic!("needs a GPU: {e}"));
        let source = Size::new(1280, 720);
        let ladder = [
            Size::new(854, 480),
            Size::new(640, 360),
            Size::new(284, 160),
        ];
        let mut scaler = GpuScaler::new(gpu.clone(), source, &ladder).expect("scaler");
        let frames: Vec<CudaFrames> = ladder
            .iter()
            .map(|&r| CudaFrames::new(gpu.index, r).expect("CUDA frames"))
            .collect();
        for i in 0..4u32 {
            let mut src = texture(source, i);
            src.set_pts(i64::from(i) * 3000);
            let mut host: Vec<Frame> = ladder.iter().map(|&r| texture(r, 99)).collect();
            scaler.scale(&src, &mut host).expect("host rungs");
            let mut device: Vec<Target> = frames
                .iter()
                .map(|f| Target(f.picture().expect("a CUDA picture")))
                .collect();
            scaler.scale_into(&src, &mut device).expect("device rungs");
            for (r, (Target(p), want)) in device.iter().zip(&host).enumerate() {
                let mut back = texture(ladder[r], 7);
                PictureDownload::new(ladder[r])
                    .copy(p, &mut back)
                    .expect("download");
                assert!(same_picture(&back, want), "frame {i} rung {}", ladder[r]);
                assert_eq!(back.pts(), src.pts());
            }
        }
    }
}
