//! `VideoDecoder`: H.264, HEVC or AV1 samples in, pooled YUV 4:2:0 frames out, through FFmpeg's software
//! decoder or through NVDEC (FFmpeg's cuda hwaccel), whose pictures stay in device memory
//! until someone asks for them on the host. Owns the FFmpeg decoder context and nothing else:
//! it never scales, converts pixel formats or touches threads of its own beyond FFmpeg's frame
//! threads, and it never falls back from NVDEC to software by itself (the pipeline does, per
//! stream, and says so).

use std::collections::VecDeque;

use ffmpeg::codec::threading;
use ffmpeg::format::Pixel;
use ffmpeg::packet::{Flags, Mut as _};
use ffmpeg_next as ffmpeg;

use crate::media::{Packet, TIMEBASE, VideoCodec, VideoParams};
use crate::transcode::frame::{Frame, FrameError, FramePool, SemiPlanar, Size};

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("this FFmpeg build has no {codec} decoder ({wanted})")]
    NoDecoder {
        codec: &'static str,
        wanted: &'static str,
    },
    #[error(
        "cannot open the {codec} decoder for {size} ({nal_length_size}-byte NAL lengths): {source}"
    )]
    Open {
        codec: &'static str,
        size: Size,
        nal_length_size: u8,
        source: ffmpeg::Error,
    },
    #[error("video decoder refused the packet at pts {pts} ({bytes} bytes): {source}")]
    Packet {
        pts: i64,
        bytes: usize,
        source: ffmpeg::Error,
    },
    #[error("video decoder failed after the packet at pts {pts}: {source}")]
    Receive { pts: i64, source: ffmpeg::Error },
    #[error(
        "decoded pixel format {format:?} at pts {pts} is not supported (only yuv420p, yuvj420p \
         and yuv420p10le)"
    )]
    PixelFormat { format: Pixel, pts: i64 },
    #[error(
        "NVDEC surface format {format:?} at pts {pts} is not supported (only nv12, p010le and \
         p016le)"
    )]
    SurfaceFormat { format: Pixel, pts: i64 },
    #[error("decoded picture at pts {pts} is {decoded}, the frame pool holds {pool}")]
    SizeChanged { decoded: Size, pool: Size, pts: i64 },
    #[error("decoded picture at pts {pts} has no timestamp")]
    NoTimestamp { pts: i64 },
    #[error("decoded picture at pts {pts}: {source}")]
    Frame { pts: i64, source: FrameError },
    #[error("NVDEC: FFmpeg cannot open CUDA device {device}: {why}")]
    NvdecDevice { device: usize, why: String },
    #[error("NVDEC picture at pts {pts} cannot be copied to the host: {source}")]
    Download { pts: i64, source: ffmpeg::Error },
}

/// One decoded picture and whether its source access unit was a keyframe: every transcoded
/// rung places an IDR on exactly those frames.
#[derive(Debug)]
pub struct DecodedFrame {
    pub frame: Frame,
    pub keyframe: bool,
}

/// A picture NVDEC left in device memory: NV12 (8-bit streams) or P010 (10-bit) in one of
/// FFmpeg's CUDA surfaces, which goes back to FFmpeg's pool when this is dropped. Hold few at
/// once: the pool has [`EXTRA_SURFACES`] to spare beyond what the decoder itself needs.
pub struct DeviceFrame {
    picture: ffmpeg::frame::Video,
    pts: i64,
    pub keyframe: bool,
    size: Size,
    format: SemiPlanar,
}

impl std::fmt::Debug for DeviceFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFrame")
            .field("pts", &self.pts)
            .field("keyframe", &self.keyframe)
            .field("size", &self.size)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl DeviceFrame {
    pub fn pts(&self) -> i64 {
        self.pts
    }

    pub fn size(&self) -> Size {
        self.size
    }

    /// How the surface's samples are laid out: what [`DeviceFrame::planes`] points at.
    pub fn format(&self) -> SemiPlanar {
        self.format
    }

    /// (device address, pitch in bytes) of the Y plane and of the interleaved UV plane, in
    /// the CUDA context of the device the decoder was opened on.
    pub fn planes(&self) -> ((u64, usize), (u64, usize)) {
        // SAFETY: a decoded AV_PIX_FMT_CUDA frame (checked when it was taken) holds device
        // pointers to its two planes (NV12 or P010) in data[0] and data[1] with their pitches
        // in linesize.
        unsafe {
            let raw = self.picture.as_ptr();
            let plane = |i: usize| ((*raw).data[i] as u64, (*raw).linesize[i].max(0) as usize);
            (plane(0), plane(1))
        }
    }

    /// Copies the picture to the host, into a pooled frame: the path when the scaler runs on
    /// the CPU.
    pub fn download(&self, pool: &FramePool) -> Result<DecodedFrame> {
        let pts = self.pts;
        let mut sw = ffmpeg::frame::Video::empty();
        // SAFETY: both frames are valid; av_hwframe_transfer_data allocates `sw`'s buffers in
        // the surface's software format (NV12, P010 or P016) and copies the picture into them.
        let ret = unsafe {
            ffmpeg::ffi::av_hwframe_transfer_data(sw.as_mut_ptr(), self.picture.as_ptr(), 0)
        };
        if ret < 0 {
            return Err(DecodeError::Download {
                pts,
                source: ffmpeg::Error::from(ret),
            });
        }
        let mut frame = pool
            .get()
            .map_err(|source| DecodeError::Frame { pts, source })?;
        let (y, uv) = ((sw.data(0), sw.stride(0)), (sw.data(1), sw.stride(1)));
        // 10-bit pictures reduced as the software decoder's are (`take_picture`).
        match self.format {
            SemiPlanar::Nv12 => frame.copy_from_nv12(y, uv),
            SemiPlanar::P010 => frame.copy_from_p010(y, uv),
        }
        .map_err(|source| DecodeError::Frame { pts, source })?;
        frame.set_pts(pts);
        Ok(DecodedFrame {
            frame,
            keyframe: self.keyframe,
        })
    }
}

/// A decoded picture, on the host or (NVDEC) on the device.
#[derive(Debug)]
pub enum Decoded {
    Host(DecodedFrame),
    Device(DeviceFrame),
}

impl Decoded {
    pub fn pts(&self) -> i64 {
        match self {
            Decoded::Host(f) => f.frame.pts(),
            Decoded::Device(f) => f.pts,
        }
    }

    pub fn keyframe(&self) -> bool {
        match self {
            Decoded::Host(f) => f.keyframe,
            Decoded::Device(f) => f.keyframe,
        }
    }

    /// The picture on the host, downloaded if it is on the device.
    pub fn into_host(self, pool: &FramePool) -> Result<DecodedFrame> {
        match self {
            Decoded::Host(f) => Ok(f),
            Decoded::Device(f) => f.download(pool),
        }
    }
}

/// CUDA surfaces the NVDEC decoder's pool holds beyond its references, for the pictures the
/// pipeline holds between decode and scale.
pub const EXTRA_SURFACES: i32 = 4;

/// Source keyframe flags waiting for their pictures. A decoder holds at most 16 reference
/// pictures plus one per frame thread, so a few dozen entries cover any stream; past that the
/// oldest entry is dropped (its picture then reads as not a keyframe unless FFmpeg flags it).
const PENDING_FLAGS: usize = 64;

pub struct VideoDecoder {
    decoder: ffmpeg::decoder::Video,
    /// Reused for every packet: its data points at the caller's sample only for the duration
    /// of one `send_packet`.
    packet: ffmpeg::Packet,
    /// Reused for every picture; FFmpeg unrefs it at each `receive_frame`.
    picture: ffmpeg::frame::Video,
    /// (pts, keyframe) of packets sent and not yet seen as pictures.
    pending: VecDeque<(i64, bool)>,
    size: Size,
    /// The CUDA device NVDEC decodes on; `None`: software.
    nvdec: Option<usize>,
    /// A picture has come out since the decoder was opened.
    produced: bool,
}

fn open_error(params: &VideoParams, source: ffmpeg::Error) -> DecodeError {
    DecodeError::Open {
        codec: params.codec.name(),
        size: Size::new(params.width, params.height),
        nal_length_size: params.nal_length_size,
        source,
    }
}

impl VideoDecoder {
    /// Opens a software decoder for samples described by `params` (the configuration record
    /// goes in as extradata, so samples stay as FLV and fMP4 carry them). `threads` > 1 enables frame
    /// threading, which delays output by `threads - 1` pictures; 0 lets FFmpeg pick.
    pub fn new(params: &VideoParams, threads: usize) -> Result<Self> {
        let (mut ctx, codec) = Self::context(params, false)?;
        ctx.set_threading(threading::Config {
            kind: if threads == 1 {
                threading::Type::None
            } else {
                threading::Type::Frame
            },
            count: threads,
            ..Default::default()
        });
        Self::open(ctx, codec, params, None)
    }

    /// Opens FFmpeg's decoder for the codec (`h264`, `hevc`, or the native `av1`) with the
    /// cuda hwaccel (NVDEC) on CUDA device `device`: pictures come out as NV12 (8-bit) or P010
    /// (10-bit) surfaces in device memory ([`Decoded::Device`]). The device is opened on its
    /// primary context, the one the node's kernels run in, so the scaler reads the surfaces
    /// where they are.
    ///
    /// An error here (no driver, no such device) or on the first packets (NVDEC refuses the
    /// stream: `get_format` is offered no CUDA format, or the hwaccel does not initialise)
    /// means: decode this stream in software.
    pub fn new_nvdec(params: &VideoParams, device: usize) -> Result<Self> {
        let (mut ctx, codec) = Self::context(params, true)?;
        let hw = cuda_device(device)?;
        // SAFETY: the context is not open yet, so nothing reads these fields concurrently.
        // `hw` is a new reference whose ownership passes to the context (which unrefs it when
        // freed); `cuda_format` matches the get_format signature and keeps no state.
        unsafe {
            let raw = ctx.as_mut_ptr();
            (*raw).hw_device_ctx = hw;
            (*raw).get_format = Some(cuda_format);
            (*raw).extra_hw_frames = EXTRA_SURFACES;
        }
        // The hwaccel decodes one picture at a time on the GPU; frame threads would only add
        // delay and surfaces.
        ctx.set_threading(threading::Config {
            kind: threading::Type::None,
            count: 1,
            ..Default::default()
        });
        Self::open(ctx, codec, params, Some(device))
    }

    /// FFmpeg's decoder context for the codec with the configuration record as extradata,
    /// not opened yet; `nvdec`: the decoder that takes the cuda hwaccel.
    fn context(
        params: &VideoParams,
        nvdec: bool,
    ) -> Result<(ffmpeg::codec::Context, ffmpeg::Codec)> {
        crate::av::init();
        let no_decoder = |wanted| DecodeError::NoDecoder {
            codec: params.codec.name(),
            wanted,
        };
        let codec = match params.codec {
            VideoCodec::Avc => {
                ffmpeg::decoder::find(ffmpeg::codec::Id::H264).ok_or(no_decoder("h264"))
            }
            VideoCodec::Hevc(_) => {
                ffmpeg::decoder::find(ffmpeg::codec::Id::HEVC).ok_or(no_decoder("hevc"))
            }
            // FFmpeg's native `av1` decoder decodes only through a hwaccel, so it is NVDEC's;
            // dav1d is the software one (Debian's FFmpeg 5.1 has both). Found by name:
            // looked up by codec id, FFmpeg may hand out either.
            VideoCodec::Av1(_) if nvdec => {
                ffmpeg::decoder::find_by_name("av1").ok_or(no_decoder("av1"))
            }
            VideoCodec::Av1(_) => {
                ffmpeg::decoder::find_by_name("libdav1d").ok_or(no_decoder("libdav1d"))
            }
        }?;
        let mut ctx = ffmpeg::codec::Context::new_with_codec(codec);
        set_extradata(&mut ctx, &params.avcc).map_err(|source| open_error(params, source))?;
        Ok((ctx, codec))
    }

    /// Opens the configured context; the tail both constructors share.
    fn open(
        ctx: ffmpeg::codec::Context,
        codec: ffmpeg::Codec,
        params: &VideoParams,
        nvdec: Option<usize>,
    ) -> Result<Self> {
        let size = Size::new(params.width, params.height);
        let mut dec = ctx.decoder();
        dec.set_packet_time_base(ffmpeg::Rational::new(1, TIMEBASE as i32));
        let decoder = dec
            .open_as(codec)
            .and_then(|o| o.video())
            .map_err(|source| open_error(params, source))?;
        Ok(Self {
            decoder,
            packet: ffmpeg::Packet::empty(),
            picture: ffmpeg::frame::Video::empty(),
            pending: VecDeque::with_capacity(PENDING_FLAGS),
            size,
            nvdec,
            produced: false,
        })
    }

    /// The CUDA device this decoder runs NVDEC on; `None`: software.
    pub fn nvdec_device(&self) -> Option<usize> {
        self.nvdec
    }

    /// Whether a picture has come out since the decoder was opened: until then an NVDEC
    /// error may mean NVDEC refuses the stream.
    pub fn has_produced(&self) -> bool {
        self.produced
    }

    /// Whether to skip the pictures no other picture refers to (non-reference B-frames) from
    /// the next packet on. A skipped packet yields no picture; every other picture decodes
    /// exactly as it would without skipping, since nothing predicts from the skipped ones.
    /// A quality check that compares only sampled pictures uses this to decode about half the
    /// work of a B-frame stream.
    pub fn skip_non_reference(&mut self, skip: bool) {
        self.decoder.skip_frame(if skip {
            ffmpeg::Discard::NonReference
        } else {
            ffmpeg::Discard::Default
        });
    }

    /// Size of the pictures this decoder was opened for; the pool passed in must match.
    pub fn size(&self) -> Size {
        self.size
    }

    /// Decodes one access unit and appends the pictures it completes, in presentation order,
    /// to `out`. With B-frames a packet often completes none, or one sent earlier.
    ///
    /// An error concerns this packet only: the decoder stays usable, and a later keyframe
    /// resynchronises it.
    pub fn decode(
        &mut self,
        packet: &Packet,
        pool: &FramePool,
        out: &mut Vec<DecodedFrame>,
    ) -> Result<()> {
        self.decode_kept(packet, pool, out, &mut |_| true)
    }

    /// [`VideoDecoder::decode`], but only the pictures whose pts `keep` accepts are copied
    /// out; the others are decoded (later pictures may refer to them) and dropped.
    pub fn decode_kept(
        &mut self,
        packet: &Packet,
        pool: &FramePool,
        out: &mut Vec<DecodedFrame>,
        keep: &mut dyn FnMut(i64) -> bool,
    ) -> Result<()> {
        self.decode_into(packet, pool, keep, false, &mut |d| {
            if let Decoded::Host(f) = d {
                out.push(f);
            }
        })
    }

    /// [`VideoDecoder::decode`], but NVDEC pictures stay in device memory
    /// ([`Decoded::Device`]); a software decoder gives [`Decoded::Host`] ones.
    pub fn decode_pictures(
        &mut self,
        packet: &Packet,
        pool: &FramePool,
        out: &mut Vec<Decoded>,
    ) -> Result<()> {
        self.decode_into(packet, pool, &mut |_| true, true, &mut |d| out.push(d))
    }

    fn decode_into(
        &mut self,
        packet: &Packet,
        pool: &FramePool,
        keep: &mut dyn FnMut(i64) -> bool,
        device: bool,
        out: &mut dyn FnMut(Decoded),
    ) -> Result<()> {
        let bytes = packet.data.len();
        let send_err = |source| DecodeError::Packet {
            pts: packet.pts,
            bytes,
            source,
        };
        // An empty packet would read as end of stream to FFmpeg; refuse it here instead.
        let size = i32::try_from(bytes)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| send_err(ffmpeg::Error::InvalidData))?;
        if self.pending.len() == PENDING_FLAGS {
            self.pending.pop_front();
        }
        let mut keyframe = packet.keyframe;
        if !keyframe {
            // A picture decoded after its GOP's keyframe but shown before it (an open GOP's
            // leading picture: HEVC RASL/RADL, x265's default) is where the GOP starts
            // showing, and where the packager cuts the rungs: the keyframe's flag moves to
            // the earliest such picture, so the rung's IDR is the first picture of its segment.
            let flagged = self.pending.iter_mut().rev().find(|e| e.1);
            if let Some(flag) = flagged.filter(|e| packet.pts < e.0) {
                flag.1 = false;
                keyframe = true;
            }
        }
        self.pending.push_back((packet.pts, keyframe));
        self.packet.set_pts(Some(packet.pts));
        self.packet.set_dts(Some(packet.dts));
        self.packet.set_flags(if packet.keyframe {
            Flags::KEY
        } else {
            Flags::empty()
        });
        let sent = {
            let raw = self.packet.as_mut_ptr();
            // SAFETY: ffmpeg-next has no way to point a packet at borrowed bytes with
            // timestamps set. `raw` is our own packet, which has no `buf`, so FFmpeg treats the
            // data as not reference-counted: avcodec_send_packet copies it into a padded
            // buffer of its own before returning and never writes through the pointer. The
            // pointer is cleared right after, while `packet.data` is still borrowed.
            unsafe {
                (*raw).data = packet.data.as_ptr().cast_mut();
                (*raw).size = size;
            }
            let sent = self.decoder.send_packet(&self.packet);
            // SAFETY: as above; resets the borrowed pointer before anything else can see it.
            unsafe {
                (*raw).data = std::ptr::null_mut();
                (*raw).size = 0;
            }
            sent
        };
        match sent {
            Ok(()) => {}
            // Every call drains all pictures, so the decoder only refuses input when the
            // packet itself is bad; keep its flag from matching a later picture.
            Err(e) => {
                self.pending.pop_back();
                // Pictures completed before the bad packet are still good.
                self.receive(pool, packet.pts, keep, device, out)?;
                return Err(send_err(e));
            }
        }
        self.receive(pool, packet.pts, keep, device, out)
    }

    /// Drains the pictures still inside the decoder at the end of a stream (or before a
    /// configuration change) and leaves it ready for a new keyframe.
    pub fn flush(&mut self, pool: &FramePool, out: &mut Vec<DecodedFrame>) -> Result<()> {
        self.flush_into(pool, false, &mut |d| {
            if let Decoded::Host(f) = d {
                out.push(f);
            }
        })
    }

    /// [`VideoDecoder::flush`], NVDEC pictures left on the device.
    pub fn flush_pictures(&mut self, pool: &FramePool, out: &mut Vec<Decoded>) -> Result<()> {
        self.flush_into(pool, true, &mut |d| out.push(d))
    }

    fn flush_into(
        &mut self,
        pool: &FramePool,
        device: bool,
        out: &mut dyn FnMut(Decoded),
    ) -> Result<()> {
        let last = self.pending.back().map_or(0, |p| p.0);
        if let Err(source) = self.decoder.send_eof() {
            return Err(DecodeError::Receive { pts: last, source });
        }
        let drained = self.receive(pool, last, &mut |_| true, device, out);
        // Back to a fresh state even after an error, so the next keyframe decodes.
        self.decoder.flush();
        self.pending.clear();
        drained
    }

    fn receive(
        &mut self,
        pool: &FramePool,
        pts: i64,
        keep: &mut dyn FnMut(i64) -> bool,
        device: bool,
        out: &mut dyn FnMut(Decoded),
    ) -> Result<()> {
        loop {
            match self.decoder.receive_frame(&mut self.picture) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                })
                | Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => return Err(DecodeError::Receive { pts, source }),
            }
            self.produced = true;
            if let Some(picture) = self.take_picture(pool, pts, keep, device)? {
                out(picture);
            }
        }
    }

    /// Copies the picture FFmpeg just returned into a pooled frame, if `keep` wants it; an
    /// NVDEC picture stays on the device when `device` is set.
    fn take_picture(
        &mut self,
        pool: &FramePool,
        packet_pts: i64,
        keep: &mut dyn FnMut(i64) -> bool,
        device: bool,
    ) -> Result<Option<Decoded>> {
        let pic = &self.picture;
        let pts = pic
            .pts()
            .or_else(|| pic.timestamp())
            .ok_or(DecodeError::NoTimestamp { pts: packet_pts })?;
        let format = pic.format();
        let surface = if format == Pixel::CUDA {
            Some(match surface_format(pic) {
                Pixel::NV12 => SemiPlanar::Nv12,
                // FFmpeg's NVDEC gives P010 for 10-bit streams and P016 for 12-bit ones; both
                // hold the value in the high bits, and the ladder keeps the top 10 of them.
                Pixel::P010LE | Pixel::P016LE => SemiPlanar::P010,
                sw => return Err(DecodeError::SurfaceFormat { format: sw, pts }),
            })
        } else if !matches!(
            format,
            Pixel::YUV420P | Pixel::YUVJ420P | Pixel::YUV420P10LE
        ) {
            return Err(DecodeError::PixelFormat { format, pts });
        } else {
            None
        };
        let decoded = Size::new(pic.width(), pic.height());
        if decoded != pool.size() {
            return Err(DecodeError::SizeChanged {
                decoded,
                pool: pool.size(),
                pts,
            });
        }
        // The source packet's flag is authoritative (it is what the ingest and the packager
        // saw); FFmpeg's own flag covers a picture whose entry fell out of the window.
        let mut keyframe = match self.pending.iter().position(|(p, _)| *p == pts) {
            Some(i) => self.pending.remove(i).is_some_and(|(_, key)| key),
            None => pic.is_key(),
        };
        // Pictures come out in presentation order: an entry shown before this one that is
        // still waiting never came out (the leading pictures a decoder skips when it starts
        // at an open GOP's keyframe), and a keyframe flag it held passes to this picture.
        self.pending.retain(|&(p, key)| {
            let stale = p < pts;
            keyframe |= stale && key;
            !stale
        });
        if !keep(pts) {
            return Ok(None);
        }
        if let Some(format) = surface {
            // The surface goes with the picture; the decoder gets a fresh frame to fill.
            let picture = std::mem::replace(&mut self.picture, ffmpeg::frame::Video::empty());
            let frame = DeviceFrame {
                picture,
                pts,
                keyframe,
                size: decoded,
                format,
            };
            return Ok(Some(if device {
                Decoded::Device(frame)
            } else {
                Decoded::Host(frame.download(pool)?)
            }));
        }
        let mut frame = pool
            .get()
            .map_err(|source| DecodeError::Frame { pts, source })?;
        let planes = [
            (pic.data(0), pic.stride(0)),
            (pic.data(1), pic.stride(1)),
            (pic.data(2), pic.stride(2)),
        ];
        // The source rung stays as sent; the ladder is 8-bit 4:2:0.
        if format == Pixel::YUV420P10LE {
            frame.copy_from_planes_10le(planes)
        } else {
            frame.copy_from_planes(planes)
        }
        .map_err(|source| DecodeError::Frame { pts, source })?;
        frame.set_pts(pts);
        Ok(Some(Decoded::Host(DecodedFrame { frame, keyframe })))
    }
}

/// The software format of a hardware picture's surfaces (from NVDEC: NV12 for 8-bit 4:2:0,
/// P010 for 10-bit).
fn surface_format(pic: &ffmpeg::frame::Video) -> Pixel {
    // SAFETY: a hardware frame's hw_frames_ctx, when set, is a reference to an
    // AVHWFramesContext buffer, valid while the frame holds it.
    unsafe {
        let frames = (*pic.as_ptr()).hw_frames_ctx;
        if frames.is_null() {
            return Pixel::None;
        }
        let ctx = (*frames).data.cast::<ffmpeg::ffi::AVHWFramesContext>();
        Pixel::from((*ctx).sw_format)
    }
}

/// `get_format` for NVDEC: the CUDA format when FFmpeg offers it (the hwaccel supports the
/// stream), else none, which fails the decode instead of silently decoding in software on a
/// decoder the pipeline believes to be NVDEC.
unsafe extern "C" fn cuda_format(
    _ctx: *mut ffmpeg::ffi::AVCodecContext,
    formats: *const ffmpeg::ffi::AVPixelFormat,
) -> ffmpeg::ffi::AVPixelFormat {
    use ffmpeg::ffi::AVPixelFormat::{AV_PIX_FMT_CUDA, AV_PIX_FMT_NONE};
    let mut at = formats;
    // SAFETY: FFmpeg passes a list terminated by AV_PIX_FMT_NONE.
    unsafe {
        while !at.is_null() && *at != AV_PIX_FMT_NONE {
            if *at == AV_PIX_FMT_CUDA {
                return AV_PIX_FMT_CUDA;
            }
            at = at.add(1);
        }
    }
    AV_PIX_FMT_NONE
}

/// A new reference to FFmpeg's CUDA device `device`, on the device's primary context.
fn cuda_device(device: usize) -> Result<*mut ffmpeg::ffi::AVBufferRef> {
    match crate::av::CudaDevice::open(Some(device)) {
        Ok(d) => Ok(d.into_raw()),
        Err(e) => {
            let mut why = e.to_string();
            if !crate::gpu::device::driver_present() {
                why.push_str(" (no CUDA driver: libcuda.so.1 not found)");
            }
            Err(DecodeError::NvdecDevice { device, why })
        }
    }
}

/// Gives the decoder the avcC record so it reads length-prefixed samples.
fn set_extradata(ctx: &mut ffmpeg::codec::Context, avcc: &[u8]) -> Result<(), ffmpeg::Error> {
    let len = i32::try_from(avcc.len()).map_err(|_| ffmpeg::Error::InvalidData)?;
    let padded = avcc.len() + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: ffmpeg-next has no extradata setter. The buffer comes from av_mallocz (FFmpeg
    // frees extradata with av_free when the context is freed), is checked for null, holds
    // `len` bytes plus the zeroed padding FFmpeg's bit readers require, and the context is
    // not yet opened, so nothing else reads the field concurrently.
    unsafe {
        let buf = ffmpeg::ffi::av_mallocz(padded).cast::<u8>();
        if buf.is_null() {
            return Err(ffmpeg::Error::Other {
                errno: ffmpeg::error::ENOMEM,
            });
        }
        std::ptr::copy_nonoverlapping(avcc.as_ptr(), buf, avcc.len());
        let raw = ctx.as_mut_ptr();
        (*raw).extradata = buf;
        (*raw).extradata_size = len;
    }
    Ok(())
}

/// H.264 clips made by the FFmpeg CLI and demuxed with the project's own FLV tag parser, the
/// path RTMP ingest takes. Shared by the decode and encode tests.
#[cfg(test)]
pub(crate) mod test_clip {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::ingest::rtmp::flv::{VideoTag, parse_video_tag};
    use crate::media::h264::parse_avc_config;
    use crate::media::{Packet, TrackKind, VideoParams, ms_to_ticks};
    use crate::transcode::ffmpeg_cli;

    pub struct Clip {
        pub params: Arc<VideoParams>,
        pub packets: Vec<Packet>,
    }

    /// Encodes `frames` frames of the lavfi `graph` with libx264 and `x264_args` into FLV.
    pub fn flv(dir: &Path, name: &str, graph: &str, frames: usize, x264_args: &[&str]) -> Clip {
        let path = dir.join(format!("{name}.flv"));
        let frames = frames.to_string();
        let out = path.to_str().expect("temp paths are UTF-8");
        let mut args = vec!["-f", "lavfi", "-i", graph, "-frames:v", &frames];
        args.extend(["-c:v", "libx264"]);
        args.extend(x264_args);
        args.extend(["-f", "flv", out]);
        ffmpeg_cli::run(&args);
        demux(&std::fs::read(&path).expect("ffmpeg wrote the FLV"))
    }

    /// FLV file structure (Adobe FLV spec E.2-E.4.1): 9-byte header, then tags each
    /// followed by a 4-byte PreviousTagSize.
    fn demux(file: &[u8]) -> Clip {
        assert_eq!(&file[..3], b"FLV", "not an FLV file");
        let u24 = |b: &[u8]| (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let mut pos = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize + 4;
        let (mut params, mut packets) = (None, Vec::new());
        while pos + 11 <= file.len() {
            let kind = file[pos];
            let len = u24(&file[pos + 1..]) as usize;
            let ms = i64::from(u24(&file[pos + 4..]) | (u32::from(file[pos + 7]) << 24));
            let body = Bytes::copy_from_slice(&file[pos + 11..pos + 11 + len]);
            pos += 11 + len + 4;
            if kind != 9 {
                continue;
            }
            match parse_video_tag(body).expect("ffmpeg writes valid video tags") {
                VideoTag::SequenceHeader(record) => {
                    params = Some(Arc::new(parse_avc_config(record).expect("valid avcC")));
                }
                VideoTag::Frame {
                    keyframe,
                    composition_time_ms,
                    data,
                } => packets.push(Packet {
                    track: TrackKind::Video,
                    dts: ms_to_ticks(ms),
                    pts: ms_to_ticks(ms + i64::from(composition_time_ms)),
                    keyframe,
                    data,
                }),
                _ => {}
            }
        }
        Clip {
            params: params.expect("the FLV has an AVC sequence header"),
            packets,
        }
    }
}

#[cfg(test)]
mod tests;
