//! Thumbnails of a recording: the first picture of one CMAF media segment of a video
//! rendition, as a JPEG no wider than asked.
//!
//! FFmpeg's mp4 demuxer reads the init segment and the media segment from memory (so
//! `avc1`/`avc3`, `hvc1`/`hev1` and `av01` sample entries, `styp`, `emsg` and several
//! `moof`+`mdat` chunks are all its business), a software decoder decodes the segment's
//! first access unit, the ladder's [`CpuScaler`] shrinks it, and FFmpeg's `mjpeg` encoder
//! writes it. Pure: bytes in, bytes out, no files, no clock, no state between calls.
//!
//! Must never run on a live path: a call decodes a whole keyframe on the calling thread
//! (milliseconds for 1080p, more for 4K AV1). The recorder calls it from a background thread.
//! Must never panic on what a publisher sent: bytes FFmpeg cannot read are a
//! [`ThumbnailError`].

use std::io::Cursor;

use ffmpeg::codec::{self, threading};
use ffmpeg::format::Pixel;
use ffmpeg::util::color;
use ffmpeg_next as ffmpeg;

use crate::transcode::frame::{Frame, FramePool, Plane, Size};
use crate::transcode::scale::{CpuScaler, ScaleError, Scaler as _, Threading};

/// The `mjpeg` encoder's fixed quantiser scale, as `ffmpeg -q:v` takes it: 2 is the best
/// (and largest), 31 the worst. At 3 a 320-wide thumbnail is 10 to 20 kB and shows no
/// blocking.
const JPEG_QSCALE: i32 = 3;

/// Reads from the demuxer after which a segment that has produced no video packet is given
/// up on. FFmpeg skips past corrupt data one `InvalidData` at a time; this bounds the loop
/// whatever the bytes are.
const MAX_READS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error(
        "cannot read the init segment ({init} bytes) and media segment ({segment} bytes) as fMP4: {source}"
    )]
    Demux {
        init: usize,
        segment: usize,
        source: ffmpeg::Error,
    },
    #[error("the init segment declares no video track")]
    NoVideoTrack,
    #[error("the media segment holds no sample of the video track")]
    NoSample,
    #[error("no decoder for the video track's codec ({0:?}) in this FFmpeg build")]
    NoDecoder(codec::Id),
    #[error("cannot open the {decoder} decoder: {source}")]
    OpenDecoder {
        decoder: &'static str,
        source: ffmpeg::Error,
    },
    #[error("the {decoder} decoder refused the segment's first sample ({bytes} bytes): {source}")]
    Decode {
        decoder: &'static str,
        bytes: usize,
        source: ffmpeg::Error,
    },
    #[error(
        "the segment's first sample ({bytes} bytes) decodes to no picture: the segment does \
         not start with a keyframe, or the keyframe is corrupt"
    )]
    NoPicture { bytes: usize },
    #[error("decoded pixel format {0:?} is not supported (only yuv420p, yuvj420p and yuv420p10le)")]
    PixelFormat(Pixel),
    #[error("cannot scale the {from} picture to {to}: {source}")]
    Scale {
        from: Size,
        to: Size,
        source: ScaleError,
    },
    #[error("cannot encode the {size} JPEG: {source}")]
    Encode { size: Size, source: ffmpeg::Error },
}

/// A JPEG of the first picture of `segment` (a CMAF media segment that starts with a
/// keyframe, as every segment the packager cuts does), read with the track description in
/// `init` (the rendition's `ftyp`+`moov`). The picture is scaled to at most `max_width`
/// pixels across (never up), keeping its display aspect ratio, with even sides; a
/// `max_width` below 2 counts as 2.
pub(crate) fn jpeg(init: &[u8], segment: &[u8], max_width: u32) -> Result<Vec<u8>, ThumbnailError> {
    crate::av::init();
    let picture = first_picture(init, segment)?;
    let format = picture.format();
    if !matches!(
        format,
        Pixel::YUV420P | Pixel::YUVJ420P | Pixel::YUV420P10LE
    ) {
        return Err(ThumbnailError::PixelFormat(format));
    }
    let source = Size::new(picture.width(), picture.height());
    let target = thumbnail_size(source, picture.aspect_ratio(), max_width);
    let small = scale(&picture, target).map_err(|source_error| ThumbnailError::Scale {
        from: source,
        to: target,
        source: source_error,
    })?;
    // A picture that says nothing about its range is limited range: what every encoder
    // the node meets writes, and what H.264/HEVC/AV1 assume when the VUI/color config is
    // absent.
    let full_range = format == Pixel::YUVJ420P || picture.color_range() == color::Range::JPEG;
    encode(&small, full_range)
}

/// Decodes the first sample of the video track in `init` + `segment`.
fn first_picture(init: &[u8], segment: &[u8]) -> Result<ffmpeg::frame::Video, ThumbnailError> {
    let demux = |source| ThumbnailError::Demux {
        init: init.len(),
        segment: segment.len(),
        source,
    };
    let mut input = open_mp4([init, segment].concat()).map_err(demux)?;
    let (index, mut decoder, name) = {
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or(ThumbnailError::NoVideoTrack)?;
        let (decoder, name) = open_decoder(stream.parameters())?;
        (stream.index(), decoder, name)
    };

    let mut packet = ffmpeg::Packet::empty();
    let mut found = false;
    for _ in 0..MAX_READS {
        match packet.read(&mut input) {
            Ok(()) if packet.stream() == index && packet.size() > 0 => {
                found = true;
                break;
            }
            // Another track, or a corrupt stretch the demuxer resynchronises after.
            Ok(()) | Err(ffmpeg::Error::InvalidData) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(source) => return Err(demux(source)),
        }
    }
    if !found {
        return Err(ThumbnailError::NoSample);
    }

    // A CMAF segment starts with a keyframe, which decodes alone, and one access unit (one
    // AV1 temporal unit) is exactly one shown picture. Ending the stream right after it
    // makes the decoder hand that picture out at once, whatever delay its reordering or
    // frame threads would otherwise add; nothing after it needs decoding.
    let bytes = packet.size();
    let decode_error = |source| ThumbnailError::Decode {
        decoder: name,
        bytes,
        source,
    };
    decoder.send_packet(&packet).map_err(decode_error)?;
    decoder.send_eof().map_err(decode_error)?;
    let mut picture = ffmpeg::frame::Video::empty();
    match decoder.receive_frame(&mut picture) {
        Ok(()) => Ok(picture),
        Err(ffmpeg::Error::Eof) => Err(ThumbnailError::NoPicture { bytes }),
        Err(source) => Err(decode_error(source)),
    }
}

/// FFmpeg's mp4 demuxer over `bytes`, with the track descriptions the init segment gives.
///
/// Unlike `ffmpeg::format::input_from_stream` this skips `avformat_find_stream_info`, which
/// would decode the keyframe once more just to learn its pixel format; the `stsd` entry
/// already holds everything the decoder needs.
fn open_mp4(bytes: Vec<u8>) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    use ffmpeg::ffi;
    // StreamIo wants an owned, 'static reader; one copy of a segment is cheap next to
    // decoding it.
    let mut io = ffmpeg::format::context::StreamIo::from_read_seek(Cursor::new(bytes))?;
    // SAFETY: as in ffmpeg-next's `input_from_stream`: the context is ours until
    // avformat_open_input, which frees it (and nulls `ctx`) when it fails. With
    // AVFMT_FLAG_CUSTOM_IO FFmpeg never frees `pb`; `io` owns it, and on success moves into
    // the Input, which closes the format context before dropping `io`.
    unsafe {
        let mut ctx = ffi::avformat_alloc_context();
        if ctx.is_null() {
            return Err(ffmpeg::Error::Other { errno: ffi::ENOMEM });
        }
        (*ctx).pb = io.as_mut_ptr();
        (*ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        // The mov demuxer by name ("mov,mp4,m4a,3gp,3g2,mj2"): no probing of what the
        // bytes might be.
        let format = ffi::av_find_input_format(c"mp4".as_ptr());
        let ret = ffi::avformat_open_input(&mut ctx, c"".as_ptr(), format, std::ptr::null_mut());
        if ret < 0 {
            return Err(ffmpeg::Error::from(ret));
        }
        Ok(ffmpeg::format::context::Input::wrap_with_custom_io(ctx, io))
    }
}

/// Opens the software decoder for the track: FFmpeg's own for H.264 and HEVC, dav1d for AV1
/// (FFmpeg 5.1's native `av1` decodes only through a hwaccel; see `transcode::decode`).
fn open_decoder(
    params: codec::Parameters,
) -> Result<(ffmpeg::decoder::Video, &'static str), ThumbnailError> {
    let id = params.id();
    let (codec, name) = match id {
        codec::Id::H264 => (ffmpeg::decoder::find(id), "h264"),
        codec::Id::HEVC => (ffmpeg::decoder::find(id), "hevc"),
        codec::Id::AV1 => (ffmpeg::decoder::find_by_name("libdav1d"), "libdav1d"),
        _ => (None, ""),
    };
    let codec = codec.ok_or(ThumbnailError::NoDecoder(id))?;
    let open_error = |source| ThumbnailError::OpenDecoder {
        decoder: name,
        source,
    };
    let mut ctx = codec::Context::from_parameters(params).map_err(open_error)?;
    // Slice threads (and dav1d's tile threads) speed up the one picture; frame threads
    // would not, since there is only one.
    ctx.set_threading(threading::Config {
        kind: threading::Type::Slice,
        count: 0,
        ..Default::default()
    });
    let decoder = ctx
        .decoder()
        .open_as(codec)
        .and_then(|opened| opened.video())
        .map_err(open_error)?;
    Ok((decoder, name))
}

/// The thumbnail's size for a `source` picture with sample aspect ratio `sar`: the display
/// width capped at `max_width`, the height that keeps the display aspect ratio, both even and
/// at least 2.
fn thumbnail_size(source: Size, sar: ffmpeg::Rational, max_width: u32) -> Size {
    let (w, h) = (f64::from(source.width), f64::from(source.height));
    // An unset or nonsensical sample aspect ratio means square pixels.
    let sar = match (sar.numerator(), sar.denominator()) {
        (n, d) if n > 0 && d > 0 => f64::from(n) / f64::from(d),
        _ => 1.0,
    };
    let display_width = w * sar;
    let width = display_width.min(f64::from(max_width.max(2)));
    let even_down = |x: f64| ((x / 2.0).floor() as u32 * 2).max(2);
    let even_nearest = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
    let width = even_down(width);
    Size::new(width, even_nearest(f64::from(width) * h / display_width))
}

/// The decoded picture (yuv420p, yuvj420p or yuv420p10le) as a ladder frame, scaled to `target` by the ladder's scaler (on this
/// thread: the transcoders own the rayon pool).
fn scale(picture: &ffmpeg::frame::Video, target: Size) -> Result<Frame, ScaleError> {
    let source = Size::new(picture.width(), picture.height());
    let mut frame = FramePool::new(source, 1)?.get()?;
    let planes = [0, 1, 2].map(|i| (picture.data(i), picture.stride(i)));
    // `jpeg` let through only these three formats.
    if picture.format() == Pixel::YUV420P10LE {
        frame.copy_from_planes_10le(planes)?;
    } else {
        frame.copy_from_planes(planes)?;
    }
    let mut out = [FramePool::new(target, 1)?.get()?];
    CpuScaler::new(source, &[target])?
        .with_threading(Threading::Caller)
        .scale(&frame, &mut out)?;
    let [out] = out;
    Ok(out)
}

/// Encodes `frame` as a baseline JPEG (4:2:0, full range). A limited-range frame is
/// stretched to full range on the way, as JFIF requires.
fn encode(frame: &Frame, full_range: bool) -> Result<Vec<u8>, ThumbnailError> {
    let size = frame.size();
    let error = |source| ThumbnailError::Encode { size, source };
    let codec =
        ffmpeg::encoder::find(codec::Id::MJPEG).ok_or(error(ffmpeg::Error::EncoderNotFound))?;
    let mut encoder = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(error)?;
    let quality = JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA;
    encoder.set_width(size.width);
    encoder.set_height(size.height);
    // yuvj420p is the one 4:2:0 format FFmpeg 5.1's mjpeg takes without
    // `-strict unofficial`; it means full range.
    encoder.set_format(Pixel::YUVJ420P);
    encoder.set_color_range(color::Range::JPEG);
    encoder.set_time_base((1, 1));
    encoder.set_flags(codec::Flags::QSCALE);
    encoder.set_global_quality(quality);
    let mut encoder = encoder.open_as(codec).map_err(error)?;

    let mut picture = ffmpeg::frame::Video::new(Pixel::YUVJ420P, size.width, size.height);
    for (i, plane) in Plane::ALL.into_iter().enumerate() {
        let (width, height) = frame.layout().plane_size(plane);
        let stride = picture.stride(i);
        let dst = picture.data_mut(i);
        for y in 0..height {
            let src = frame.row(plane, y);
            let row = &mut dst[y * stride..][..width];
            if full_range {
                row.copy_from_slice(src);
            } else {
                let expand = if plane == Plane::Y {
                    luma_to_full
                } else {
                    chroma_to_full
                };
                for (d, &s) in row.iter_mut().zip(src) {
                    *d = expand(s);
                }
            }
        }
    }
    picture.set_pts(Some(0));
    // SAFETY: `quality` is a plain field of the frame we own. With a fixed quantiser the
    // mpegvideo encoders take the picture's lambda from it, as the ffmpeg CLI sets it.
    unsafe { (*picture.as_mut_ptr()).quality = quality };
    encoder.send_frame(&picture).map_err(error)?;
    encoder.send_eof().map_err(error)?;
    let mut packet = ffmpeg::Packet::empty();
    encoder.receive_packet(&mut packet).map_err(error)?;
    Ok(packet.data().unwrap_or_default().to_vec())
}

/// Limited-range luma (16..=235) to full range (0..=255), rounded and clamped.
fn luma_to_full(y: u8) -> u8 {
    ((i32::from(y) - 16) * 255 * 2 + 219)
        .div_euclid(219 * 2)
        .clamp(0, 255) as u8
}

/// Limited-range chroma (16..=240 around 128) to full range, rounded and clamped.
fn chroma_to_full(c: u8) -> u8 {
    (((i32::from(c) - 128) * 255 * 2 + 224).div_euclid(224 * 2) + 128).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    //! Real media: H.264 from libx264 packaged by the node's own fMP4 writer, and H.264,
    //! HEVC (8 and 10 bit, `hev1` and `hvc1`) and AV1 in CMAF fragments written by the
    //! FFmpeg CLI's mp4 muxer. A missing `ffmpeg` is a test failure, not a skip.

    use super::*;
    use crate::package::fmp4::{self, Sample, TrackCodec};
    use crate::package::testmedia::{self, tool};
    use std::path::Path;

    /// Init segment and the first media segment, packaged by [`fmp4`] from 320x240 libx264
    /// with B-frames (so the segment's samples carry composition offsets).
    fn node_packaged_h264(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let (params, packets) = testmedia::h264(dir, 30, 30, 2);
        let init = fmp4::init_segment(1, TrackCodec::Video(&params)).expect("init segment");
        let first_dts = packets[0].dts;
        let samples: Vec<Sample> = packets
            .iter()
            .enumerate()
            .map(|(i, p)| Sample {
                duration: packets.get(i + 1).map_or(3000, |next| next.dts - p.dts) as u32,
                composition_offset: (p.pts - p.dts) as i32,
                keyframe: p.keyframe,
                data: p.data.clone(),
            })
            .collect();
        assert!(samples[0].keyframe);
        // Two CMAF chunks, as LL-HLS parts make them.
        let mut segment = fmp4::fragment(1, 1, 0, &samples[..15])
            .expect("chunk 1")
            .to_vec();
        let second_dts = (packets[15].dts - first_dts) as u64;
        segment
            .extend_from_slice(&fmp4::fragment(2, 1, second_dts, &samples[15..]).expect("chunk 2"));
        (init.to_vec(), segment)
    }

    /// Top-level boxes of an MP4 file: (type, bytes of the whole box).
    fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
            let kind: [u8; 4] = data[4..8].try_into().expect("4 bytes");
            assert!(
                size >= 8 && size <= data.len(),
                "box {kind:?} of {size} bytes"
            );
            out.push((kind, &data[..size]));
            data = &data[size..];
        }
        out
    }

    /// `lavfi` source `source` encoded by the FFmpeg CLI with `codec_args`, 60 frames at 30 fps
    /// with a keyframe every 30, muxed as CMAF (a fragment per keyframe): the init segment and
    /// the second fragment, which starts at the second keyframe.
    fn cli_cmaf(dir: &Path, source: &str, codec_args: &str) -> (Vec<u8>, Vec<u8>) {
        tool(
            dir,
            "ffmpeg",
            &format!(
                "-v error -y -f lavfi -i {source}:rate=30 -frames:v 60 {codec_args} -g 30 \
                 -keyint_min 30 -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf \
                 -f mp4 out.mp4"
            ),
        );
        let file = std::fs::read(dir.join("out.mp4")).expect("read out.mp4");
        let all = boxes(&file);
        let moov = all.iter().position(|(k, _)| k == b"moov").expect("moov");
        let init: Vec<u8> = all[..=moov].iter().flat_map(|(_, b)| b.to_vec()).collect();
        let moofs: Vec<usize> = (0..all.len()).filter(|&i| &all[i].0 == b"moof").collect();
        assert!(moofs.len() >= 2, "{} fragments", moofs.len());
        let segment = all[moofs[1]..]
            .iter()
            .take_while(|(k, _)| k == b"moof" || k == b"mdat")
            .take(2)
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        (init, segment)
    }

    /// (width, height) from a JPEG's start-of-frame marker.
    fn sof_size(jpeg: &[u8]) -> (u16, u16) {
        assert_eq!(jpeg[..2], [0xff, 0xd8], "SOI");
        let mut at = 2;
        while at + 4 <= jpeg.len() {
            assert_eq!(jpeg[at], 0xff, "marker at {at}");
            let marker = jpeg[at + 1];
            let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if matches!(marker, 0xc0..=0xc3) {
                let h = u16::from_be_bytes([jpeg[at + 5], jpeg[at + 6]]);
                let w = u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]]);
                return (w, h);
            }
            at += 2 + len;
        }
        panic!("no SOF marker");
    }

    /// The JPEG decoded back by FFmpeg's mjpeg decoder.
    fn decode_jpeg(jpeg: &[u8]) -> ffmpeg::frame::Video {
        let codec = ffmpeg::decoder::find(codec::Id::MJPEG).expect("mjpeg decoder");
        let mut decoder = codec::Context::new_with_codec(codec)
            .decoder()
            .video()
            .expect("open mjpeg");
        let packet = ffmpeg::Packet::copy(jpeg);
        decoder.send_packet(&packet).expect("send jpeg");
        decoder.send_eof().expect("eof");
        let mut picture = ffmpeg::frame::Video::empty();
        decoder.receive_frame(&mut picture).expect("a picture");
        picture
    }

    /// Mean of the Y plane.
    fn mean_luma(picture: &ffmpeg::frame::Video) -> f64 {
        let (w, h, stride) = (
            picture.width() as usize,
            picture.height() as usize,
            picture.stride(0),
        );
        let sum: u64 = (0..h)
            .flat_map(|y| &picture.data(0)[y * stride..][..w])
            .map(|&v| u64::from(v))
            .sum();
        sum as f64 / (w * h) as f64
    }

    /// Checks a thumbnail's markers and size, as written and decoded back.
    fn check(init: &[u8], segment: &[u8], max_width: u32, want: (u16, u16)) {
        let out = jpeg(init, segment, max_width).expect("thumbnail");
        assert_eq!(out[..2], [0xff, 0xd8], "JPEG SOI");
        assert_eq!(out[out.len() - 2..], [0xff, 0xd9], "JPEG EOI");
        assert_eq!(sof_size(&out), want);
        let back = decode_jpeg(&out);
        assert_eq!(
            (back.width(), back.height()),
            (u32::from(want.0), u32::from(want.1))
        );
    }

    #[test]
    fn node_packaged_h264_makes_a_scaled_jpeg() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (init, segment) = node_packaged_h264(tmp.path());
        check(&init, &segment, 160, (160, 120));
        // Never scaled up: the picture's own size.
        check(&init, &segment, 1000, (320, 240));
    }

    #[test]
    fn hevc_and_av1_make_jpegs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (what, codec_args) in [
            (
                "hev1",
                "-c:v libx265 -x265-params log-level=error -pix_fmt yuv420p",
            ),
            (
                "hvc1",
                "-c:v libx265 -x265-params log-level=error -pix_fmt yuv420p -tag:v hvc1",
            ),
            (
                "hevc main10",
                "-c:v libx265 -x265-params log-level=error -pix_fmt yuv420p10le",
            ),
            ("av01", "-c:v libsvtav1 -preset 12 -pix_fmt yuv420p"),
            ("h264 avc1", "-c:v libx264 -pix_fmt yuv420p"),
        ] {
            let (init, segment) = cli_cmaf(tmp.path(), "testsrc2=size=640x360", codec_args);
            eprintln!(
                "{what}: init {} bytes, segment {} bytes",
                init.len(),
                segment.len()
            );
            check(&init, &segment, 320, (320, 180));
        }
    }

    #[test]
    fn limited_range_becomes_full_range() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (color, want) in [("black", 0.0), ("white", 255.0)] {
            let (init, segment) = cli_cmaf(
                tmp.path(),
                &format!("color=c={color}:size=320x240"),
                "-c:v libx264 -pix_fmt yuv420p",
            );
            let out = jpeg(&init, &segment, 320).expect("thumbnail");
            let luma = mean_luma(&decode_jpeg(&out));
            assert!(
                (luma - want).abs() < 2.0,
                "{color}: mean luma {luma}, want {want}"
            );
        }
    }

    #[test]
    fn thumbnail_size_keeps_display_aspect_with_even_sides() {
        let square = ffmpeg::Rational::new(1, 1);
        let size = |w, h, sar, max| thumbnail_size(Size::new(w, h), sar, max);
        assert_eq!(size(1920, 1080, square, 320), Size::new(320, 180));
        assert_eq!(size(1280, 720, square, 480), Size::new(480, 270));
        assert_eq!(size(320, 240, square, 640), Size::new(320, 240));
        assert_eq!(size(1001, 501, square, 2000), Size::new(1000, 500));
        assert_eq!(size(1920, 1080, square, 321), Size::new(320, 180));
        // Anamorphic 1440x1080 shown as 1920x1080.
        assert_eq!(
            size(1440, 1080, ffmpeg::Rational::new(4, 3), 320),
            Size::new(320, 180)
        );
        // Unset SAR (0/1 or 0/0) is square.
        assert_eq!(
            size(1920, 1080, ffmpeg::Rational::new(0, 1), 320),
            Size::new(320, 180)
        );
        assert_eq!(
            size(1920, 1080, ffmpeg::Rational::new(0, 0), 320),
            Size::new(320, 180)
        );
        assert_eq!(size(1920, 1080, square, 0), Size::new(2, 2));
        assert_eq!(size(16, 4000, square, 320), Size::new(16, 4000));
    }

    #[test]
    fn range_expansion_maps_the_limits() {
        assert_eq!((luma_to_full(16), luma_to_full(235)), (0, 255));
        assert_eq!((luma_to_full(0), luma_to_full(255)), (0, 255));
        assert_eq!(luma_to_full(126), 128);
        // 16 and 240 lie half a step outside full range's chroma (128 -/+ 127.5).
        assert_eq!(
            (chroma_to_full(16), chroma_to_full(128), chroma_to_full(240)),
            (1, 128, 255)
        );
        assert_eq!((chroma_to_full(0), chroma_to_full(255)), (0, 255));
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (init, segment) = node_packaged_h264(tmp.path());

        for (what, init, segment) in [
            ("nothing", &[][..], &[][..]),
            (
                "garbage",
                &b"not an mp4 at all, just text"[..],
                &b"more text"[..],
            ),
            ("init only", &init[..], &[][..]),
            ("garbage segment", &init[..], &[0x5a; 4096][..]),
            ("segment without init", &[][..], &segment[..]),
            ("truncated init", &init[..init.len() / 2], &segment[..]),
            ("segment's first 100 bytes", &init[..], &segment[..100]),
        ] {
            let result = jpeg(init, segment, 160);
            assert!(result.is_err(), "{what}: {result:?}");
            eprintln!("{what}: {}", result.unwrap_err());
        }

        // Flipped bytes anywhere: whatever FFmpeg makes of them, an answer and no panic.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut err) = (0, 0);
        for _ in 0..200 {
            let (mut init, mut segment) = (init.clone(), segment.clone());
            for _ in 0..1 + next() % 8 {
                let r = next() as usize;
                let target = if r.is_multiple_of(4) {
                    &mut init
                } else {
                    &mut segment
                };
                let at = (r >> 8) % target.len();
                target[at] ^= 1 << (r >> 4 & 7);
            }
            match jpeg(&init, &segment, 160) {
                Ok(out) => {
                    assert_eq!(out[..2], [0xff, 0xd8]);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
        eprintln!("corrupted inputs: {ok} thumbnails, {err} errors");
    }

    /// Full-size pictures of every codec a source may carry (what they cost is
    /// measured by the recording benchmark, not here).
    #[test]
    fn a_1080p_keyframe_of_each_codec_makes_a_jpeg() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (what, codec_args) in [
            (
                "h264",
                "-c:v libx264 -preset veryfast -b:v 6M -pix_fmt yuv420p",
            ),
            (
                "hevc",
                "-c:v libx265 -preset ultrafast -x265-params log-level=error -b:v 4M -pix_fmt yuv420p",
            ),
            ("av1", "-c:v libsvtav1 -preset 12 -b:v 3M -pix_fmt yuv420p"),
        ] {
            let (init, segment) = cli_cmaf(tmp.path(), "testsrc2=size=1920x1080", codec_args);
            eprintln!("1080p {what}: {} kB segment", segment.len() / 1024);
            check(&init, &segment, 320, (320, 180));
        }
    }
}
