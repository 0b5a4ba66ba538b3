//! What the FFmpeg-backed H.264 encoders (libx264, h264_nvenc) share: one encoder context
//! fed pooled frames from host memory through one reusable input picture, or hardware
//! frames from a frames context ([`HwFrames`]: NVENC reading the GPU scaler's pictures in
//! device memory), and the output arena that turns FFmpeg's Annex B packets into
//! length-prefixed samples with the parameter sets in `params`. Each backend only chooses
//! the encoder, its options and its input.

use std::ptr::NonNull;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ffmpeg::format::Pixel;
use ffmpeg::packet::side_data::Type as SideDataType;
use ffmpeg::{Dictionary, Rational, codec, picture};
use ffmpeg_next as ffmpeg;

use super::{EncodeError, EncodedPacket, EncoderSettings, Result};
use crate::media::annexb::{self, NAL_AUD, NAL_PPS, NAL_SPS};
use crate::media::h264::parse_avc_config;
use crate::media::{TIMEBASE, VideoParams};
use crate::transcode::frame::{Frame, Plane, Size};
use crate::transcode::quality::FrameMse;

/// FFmpeg's `FF_QP2LAMBDA`: the quality stats carry lambda, QP times this.
const QP2LAMBDA: f32 = 118.0;

/// A reference to an initialised hardware frames context (`AVHWFramesContext`): what an
/// encoder fed hardware frames is opened with, and the pool those frames come from.
pub(super) struct HwFrames(NonNull<ffmpeg::ffi::AVBufferRef>);

// SAFETY: the reference is FFmpeg's reference-counted buffer (atomic counts); the frames
// context behind it is immutable once initialised, and taking frames from its pool
// (av_hwframe_get_buffer, an AVBufferPool underneath) is thread-safe.
unsafe impl Send for HwFrames {}
// SAFETY: as above; nothing here mutates the context through `&self`.
unsafe impl Sync for HwFrames {}

impl HwFrames {
    /// Takes over `raw`.
    ///
    /// # Safety
    ///
    /// `raw` must be a reference of its own to an AVHWFramesContext that
    /// av_hwframe_ctx_init accepted; it is unreferenced when this is dropped.
    pub(super) unsafe fn from_raw(raw: NonNull<ffmpeg::ffi::AVBufferRef>) -> Self {
        Self(raw)
    }

    pub(super) fn as_ptr(&self) -> *mut ffmpeg::ffi::AVBufferRef {
        self.0.as_ptr()
    }

    /// The context's (hardware format, software format).
    fn formats(&self) -> (ffmpeg::ffi::AVPixelFormat, ffmpeg::ffi::AVPixelFormat) {
        // SAFETY: the buffer of a frames-context reference holds its AVHWFramesContext, alive
        // while the reference is.
        unsafe {
            let ctx = (*self.0.as_ptr())
                .data
                .cast::<ffmpeg::ffi::AVHWFramesContext>();
            ((*ctx).format, (*ctx).sw_format)
        }
    }
}

impl Clone for HwFrames {
    fn clone(&self) -> Self {
        // SAFETY: `self.0` is a valid reference; av_buffer_ref makes another to the same
        // context, or returns null when out of memory.
        let raw = unsafe { ffmpeg::ffi::av_buffer_ref(self.0.as_ptr()) };
        // A few bytes of allocation failing: the process is out of memory anyway.
        Self(NonNull::new(raw).expect("av_buffer_ref: out of memory"))
    }
}

impl Drop for HwFrames {
    fn drop(&mut self) {
        let mut raw = self.0.as_ptr();
        // SAFETY: our own reference, released once.
        unsafe { ffmpeg::ffi::av_buffer_unref(&mut raw) };
    }
}

pub(super) struct LavcEncoder {
    /// FFmpeg's name of the encoder, for error messages.
    codec: &'static str,
    encoder: ffmpeg::encoder::Video,
    /// Allocated once; every host frame is copied into it. `None`: the encoder is fed
    /// hardware frames ([`LavcEncoder::encode_hw`]) and never a host frame.
    input: Option<ffmpeg::frame::Video>,
    /// Reused for every `receive_packet`.
    packet: ffmpeg::Packet,
    params: Arc<VideoParams>,
    /// The SPS and PPS of `params`, to recognise them if the encoder ever repeats them in-band.
    config_nals: Vec<Bytes>,
    /// Output samples are carved from this buffer; see `take_packets`.
    arena: BytesMut,
    arena_capacity: usize,
    size: Size,
    psnr: bool,
    /// Pts of the last frame sent, for error context.
    last_pts: i64,
}

impl LavcEncoder {
    /// Opens FFmpeg's encoder `name` for `settings` with `options` (AVOptions,
    /// generic and private), global header on, YUV 4:2:0 input from host memory.
    pub(super) fn open(
        settings: &EncoderSettings,
        name: &'static str,
        options: &[(&'static str, String)],
    ) -> Result<Self> {
        Self::open_with(settings, name, options, None)
    }

    /// [`LavcEncoder::open`], fed hardware frames of `frames` (its formats and pool, the
    /// settings' size) through [`LavcEncoder::encode_hw`] instead of host frames.
    pub(super) fn open_hw(
        settings: &EncoderSettings,
        name: &'static str,
        options: &[(&'static str, String)],
        frames: &HwFrames,
    ) -> Result<Self> {
        Self::open_with(settings, name, options, Some(frames))
    }

    fn open_with(
        settings: &EncoderSettings,
        name: &'static str,
        options: &[(&'static str, String)],
        frames: Option<&HwFrames>,
    ) -> Result<Self> {
        let size = settings.size();
        let invalid = |why: String| EncodeError::Settings {
            codec: name,
            size,
            why,
        };
        check_settings(settings).map_err(invalid)?;
        crate::av::init();
        let found = ffmpeg::encoder::find_by_name(name);
        let codec = found.ok_or(EncodeError::NoEncoder { codec: name })?;

        let ctx = codec::Context::new_with_codec(codec);
        let mut enc = ctx.encoder().video().map_err(|source| EncodeError::Open {
            codec: name,
            size,
            options: String::new(),
            source,
        })?;
        enc.set_width(settings.width);
        enc.set_height(settings.height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(Rational::new(1, TIMEBASE as i32));
        let fps = settings.frame_rate;
        enc.set_frame_rate(Some(Rational::new(fps.num as i32, fps.den as i32)));
        enc.set_bit_rate(clamp_usize(settings.bitrate_bps));
        enc.set_max_bit_rate(clamp_usize(settings.maxrate_bps));
        // The caller forces an IDR on every source keyframe; the encoder's own keyframes would only
        // add IDRs that no other rung has. Ten seconds is longer than live GOPs in practice;
        // a longer source GOP gets an extra IDR in the rung, never a missing one.
        enc.set_gop(gop(settings));
        let mut flags = codec::Flags::GLOBAL_HEADER;
        if settings.psnr {
            flags |= codec::Flags::PSNR;
        }
        enc.set_flags(flags);
        if let Some(frames) = frames {
            let (hw, sw) = frames.formats();
            // SAFETY: ffmpeg-next has no hw_frames_ctx setter. The context is not open yet,
            // so nothing reads these fields concurrently; the new reference passes to the
            // context, which unreferences it when freed (a null one, out of memory, makes
            // the open below fail).
            unsafe {
                let raw = enc.as_mut_ptr();
                (*raw).pix_fmt = hw;
                (*raw).sw_pix_fmt = sw;
                (*raw).hw_frames_ctx = ffmpeg::ffi::av_buffer_ref(frames.as_ptr());
            }
        }

        let mut dict = Dictionary::new();
        for (k, v) in options {
            dict.set(k, v);
        }
        let encoder = enc
            .open_as_with(codec, dict)
            .map_err(|source| EncodeError::Open {
                codec: name,
                size,
                options: options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                source,
            })?;

        let config_err = |source| EncodeError::Config {
            codec: name,
            size,
            source,
        };
        let record = annexb::avc_config_from_annexb(extradata(&encoder)).map_err(config_err)?;
        let params = parse_avc_config(record).map_err(config_err)?;
        if (params.width, params.height) != (settings.width, settings.height) {
            return Err(invalid(format!(
                "{name} wrote an SPS for {}x{}",
                params.width, params.height
            )));
        }
        let config_nals = annexb::annexb_nals(extradata(&encoder))
            .filter(|n| matches!(annexb::nal_type(n), NAL_SPS | NAL_PPS))
            .map(Bytes::copy_from_slice)
            .collect();

        let input = match frames {
            Some(_) => None,
            None => {
                let input =
                    ffmpeg::frame::Video::new(Pixel::YUV420P, settings.width, settings.height);
                if input.planes() != 3 {
                    return Err(invalid("cannot allocate the input picture".into()));
                }
                Some(input)
            }
        };
        // About a second of output: packets are split off it and only a consumer that holds
        // more than that at once makes it allocate again.
        let arena_capacity =
            (settings.maxrate_bps.max(settings.bitrate_bps) / 8).clamp(256 << 10, 8 << 20) as usize;
        Ok(Self {
            codec: name,
            encoder,
            input,
            packet: ffmpeg::Packet::empty(),
            params: Arc::new(params),
            config_nals,
            arena: BytesMut::with_capacity(arena_capacity),
            arena_capacity,
            size,
            psnr: settings.psnr,
            last_pts: 0,
        })
    }

    pub(super) fn params(&self) -> &Arc<VideoParams> {
        &self.params
    }

    /// Encodes `frame`, as an IDR when `force_idr` is set, and appends the packets that
    /// became ready to `out`.
    pub(super) fn encode(
        &mut self,
        frame: &Frame,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()> {
        let codec = self.codec;
        let pts = frame.pts();
        if frame.size() != self.size {
            return Err(EncodeError::FrameSize {
                codec,
                encoder: self.size,
                frame: frame.size(),
                pts,
            });
        }
        // Only `open_hw` leaves it out, and the encoders it opens (NVENC fed device
        // pictures) have no way to hand over a host frame.
        let input = self
            .input
            .as_mut()
            .expect("an encoder opened for hardware frames is never given a host frame");
        // SAFETY: ffmpeg-next has no av_frame_make_writable. `input` is a valid frame that we
        // allocated; the call only reallocates its buffers if FFmpeg still holds a reference
        // to them (it does not once send_frame has returned for libx264 and h264_nvenc, which
        // copy the picture into buffers of their own), so writing below never races the
        // encoder.
        let writable = unsafe { ffmpeg::ffi::av_frame_make_writable(input.as_mut_ptr()) };
        if writable < 0 {
            let source = ffmpeg::Error::from(writable);
            return Err(EncodeError::Send { codec, pts, source });
        }
        for (i, plane) in Plane::ALL.into_iter().enumerate() {
            let (_, rows) = frame.layout().plane_size(plane);
            let stride = input.stride(i);
            let dst = input.data_mut(i);
            for (y, dst_row) in dst.chunks_mut(stride).take(rows).enumerate() {
                let src = frame.row(plane, y);
                dst_row[..src.len()].copy_from_slice(src);
            }
        }
        Self::send(
            codec,
            &mut self.encoder,
            input,
            pts,
            force_idr,
            &mut self.last_pts,
        )?;
        self.take_packets(out)
    }

    /// Encodes a hardware frame of the context the encoder was opened with
    /// ([`LavcEncoder::open_hw`]) as the picture at `pts`, as an IDR when `force_idr` is
    /// set, and appends the packets that became ready to `out`. The encoder keeps its own
    /// reference to the frame for as long as it reads it.
    pub(super) fn encode_hw(
        &mut self,
        picture: &mut ffmpeg::frame::Video,
        pts: i64,
        force_idr: bool,
        out: &mut Vec<EncodedPacket>,
    ) -> Result<()> {
        let (codec, encoder) = (self.codec, &mut self.encoder);
        Self::send(codec, encoder, picture, pts, force_idr, &mut self.last_pts)?;
        self.take_packets(out)
    }

    /// Sends `picture` as the frame at `pts`.
    fn send(
        codec: &'static str,
        encoder: &mut ffmpeg::encoder::Video,
        picture: &mut ffmpeg::frame::Video,
        pts: i64,
        force_idr: bool,
        last_pts: &mut i64,
    ) -> Result<()> {
        picture.set_pts(Some(pts));
        // With forced-idr=1 both wrappers turn an I request into an IDR; AUTO leaves the
        // choice to the encoder, which (scenecut off, GOP longer than any source GOP) keeps
        // P (and B) pictures.
        picture.set_kind(if force_idr {
            picture::Type::I
        } else {
            picture::Type::None
        });
        *last_pts = pts;
        encoder
            .send_frame(picture)
            .map_err(|source| EncodeError::Send { codec, pts, source })
    }

    /// Drains the frames the encoder still holds (lookahead, B-frames, frame threads).
    pub(super) fn flush(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()> {
        let codec = self.codec;
        self.encoder
            .send_eof()
            .map_err(|source| EncodeError::Send {
                codec,
                pts: self.last_pts,
                source,
            })?;
        self.take_packets(out)
    }

    fn take_packets(&mut self, out: &mut Vec<EncodedPacket>) -> Result<()> {
        let codec = self.codec;
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other {
                    errno: ffmpeg::error::EAGAIN,
                })
                | Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(EncodeError::Receive {
                        codec,
                        pts: self.last_pts,
                        source,
                    });
                }
            }
            let packet = self.convert_packet()?;
            out.push(packet);
        }
    }

    fn convert_packet(&mut self) -> Result<EncodedPacket> {
        let codec = self.codec;
        let last_pts = self.last_pts;
        let output_err = |why: String| EncodeError::Output {
            codec,
            pts: last_pts,
            why,
        };
        let pkt = &self.packet;
        let pts = pkt
            .pts()
            .ok_or_else(|| output_err("packet without pts".into()))?;
        let dts = pkt.dts().unwrap_or(pts);
        let annexb = pkt.data().unwrap_or_default();

        // Samples are split off one long-lived buffer: `reserve` only allocates when the
        // packets still held by consumers fill it; once they are dropped it reclaims the
        // whole buffer. So steady state costs no allocation per packet on our side.
        if self.arena.capacity() < annexb.len() + 64 {
            self.arena
                .reserve(self.arena_capacity.max(annexb.len() + 64));
        }
        let config = &self.config_nals;
        annexb::annexb_to_length_prefixed(annexb, &mut self.arena, |nal| {
            match annexb::nal_type(nal) {
                // In a sample the sample boundary delimits the access unit, so an AUD says
                // nothing; parameter sets identical to the avcC record's only repeat it.
                NAL_AUD => false,
                NAL_SPS | NAL_PPS => !config.iter().any(|c| c[..] == *nal),
                _ => true,
            }
        })
        .map_err(|e| output_err(e.to_string()))?;
        let data = self.arena.split().freeze();
        if data.is_empty() {
            return Err(output_err(format!(
                "access unit of {} bytes holds no NAL unit",
                annexb.len()
            )));
        }

        let (qp, mse) = match pkt
            .side_data()
            .find(|sd| sd.kind() == SideDataType::QualityStats)
        {
            Some(sd) => parse_quality_stats(sd.data(), self.psnr.then_some(self.size)),
            None => (None, None),
        };
        Ok(EncodedPacket {
            pts,
            dts,
            keyframe: pkt.is_key(),
            data,
            qp,
            mse,
        })
    }
}

pub(super) fn check_settings(s: &EncoderSettings) -> Result<(), String> {
    // x264 refuses odd sizes for 4:2:0; say so before it does, in words.
    if s.width == 0 || s.height == 0 || s.width % 2 == 1 || s.height % 2 == 1 {
        return Err("width and height must be even and non-zero for 4:2:0".into());
    }
    if s.width > i32::MAX as u32 || s.height > i32::MAX as u32 {
        return Err("size out of range".into());
    }
    let fps = s.frame_rate;
    if fps.num == 0 || fps.den == 0 || fps.num > i32::MAX as u32 || fps.den > i32::MAX as u32 {
        return Err(format!("frame rate {fps}"));
    }
    if s.bitrate_bps == 0 {
        return Err("bitrate 0".into());
    }
    if s.bufsize_bits > i32::MAX as u64 {
        // AVCodecContext.rc_buffer_size is an int.
        return Err(format!("VBV buffer of {} bits", s.bufsize_bits));
    }
    if s.preset.is_empty() || !s.preset.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("preset {:?}", s.preset));
    }
    Ok(())
}

pub(super) fn gop(s: &EncoderSettings) -> u32 {
    s.frame_rate.ceil().saturating_mul(10).max(1)
}

fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The global header the encoder wrote at open: SPS and PPS in Annex B form.
fn extradata(encoder: &ffmpeg::encoder::Video) -> &[u8] {
    // SAFETY: ffmpeg-next has no extradata getter. An opened encoder's extradata is either
    // null or an av_malloc'd buffer of `extradata_size` bytes that FFmpeg leaves untouched
    // until the context is freed, which the returned borrow of `encoder` prevents.
    unsafe {
        let raw = encoder.as_ptr();
        match usize::try_from((*raw).extradata_size) {
            Ok(len) if len > 0 && !(*raw).extradata.is_null() => {
                std::slice::from_raw_parts((*raw).extradata, len)
            }
            _ => &[],
        }
    }
}

/// Reads `AV_PKT_DATA_QUALITY_STATS` (libavcodec/packet.h): u32le quality (lambda), u8
/// picture type, u8 error count, 2 reserved bytes, then one u64le sum of squared errors per
/// plane. `size` is given when PSNR was requested.
pub(super) fn parse_quality_stats(
    data: &[u8],
    size: Option<Size>,
) -> (Option<f32>, Option<FrameMse>) {
    let Some(head) = data.get(..8) else {
        return (None, None);
    };
    // The wrapper writes (qp + 1 - 1) * lambda scale from an int; x264 leaves qp + 1 at 0
    // when it has no figure, which arrives as a negative lambda.
    let lambda = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let qp = (lambda >= 0).then(|| lambda as f32 / QP2LAMBDA);
    let count = usize::from(head[5]);
    let sse = |i: usize| {
        data.get(8 + 8 * i..16 + 8 * i)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let mse = size.filter(|_| count >= 3).and_then(|size| {
        let (y, u, v) = (sse(0)?, sse(1)?, sse(2)?);
        // FFmpeg's libx264 wrapper turns x264's per-plane PSNR into these sums over
        // width * height and width * height / 4 samples.
        let luma = size.area() as f64;
        let chroma = luma / 4.0;
        let (y, u, v) = (y as f64, u as f64, v as f64);
        Some(FrameMse {
            y: y / luma,
            u: u / chroma,
            v: v / chroma,
            average: (y + u + v) / (luma + 2.0 * chroma),
        })
    });
    (qp, mse)
}
