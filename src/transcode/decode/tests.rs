use super::test_clip::{Clip, flv};
use super::*;
use crate::transcode::ffmpeg_cli;
use crate::transcode::quality::psnr;
use bytes::Bytes;

const GRAPH: &str = "testsrc2=size=640x360:rate=30";
/// Closed 30-frame GOPs with B-frames, so output order differs from decode order.
const SOURCE: &[&str] = &[
    "-preset",
    "veryfast",
    "-g",
    "30",
    "-keyint_min",
    "30",
    "-sc_threshold",
    "0",
    "-bf",
    "2",
    "-pix_fmt",
    "yuv420p",
];

#[test]
fn decoder_can_move_to_its_thread() {
    fn is_send<T: Send>() {}
    is_send::<VideoDecoder>();
}

fn decode_all(clip: &Clip, threads: usize) -> Vec<DecodedFrame> {
    let mut dec = VideoDecoder::new(&clip.params, threads).unwrap();
    let pool = FramePool::new(dec.size(), 128).unwrap();
    let mut out = Vec::new();
    for p in &clip.packets {
        dec.decode(p, &pool, &mut out).unwrap();
    }
    dec.flush(&pool, &mut out).unwrap();
    out
}

fn keyframe_indices(frames: &[DecodedFrame]) -> Vec<usize> {
    let keys = frames.iter().enumerate().filter(|(_, f)| f.keyframe);
    keys.map(|(i, _)| i).collect()
}

#[test]
fn decodes_in_presentation_order_with_source_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let clip = flv(dir.path(), "src", GRAPH, 90, SOURCE);
    assert_eq!(clip.packets.len(), 90);
    assert!(
        clip.packets.iter().any(|p| p.pts != p.dts),
        "the clip should have B-frames"
    );
    for threads in [1, 2] {
        let frames = decode_all(&clip, threads);
        assert_eq!(frames.len(), 90, "threads {threads}");
        assert!(
            frames
                .windows(2)
                .all(|w| w[0].frame.pts() < w[1].frame.pts())
        );
        assert_eq!(keyframe_indices(&frames), [0, 30, 60], "threads {threads}");
        let mut pts: Vec<i64> = clip.packets.iter().map(|p| p.pts).collect();
        pts.sort_unstable();
        let ours: Vec<i64> = frames.iter().map(|f| f.frame.pts()).collect();
        assert_eq!(ours, pts, "pts carried through");
    }

    // Bit-exact with the FFmpeg CLI decoding the same file.
    let size = Size::new(640, 360);
    let yuv = dir.path().join("cli.yuv");
    let (input, out) = (dir.path().join("src.flv"), yuv.to_str().unwrap().to_owned());
    let input = input.to_str().unwrap();
    ffmpeg_cli::run(&["-i", input, "-frames:v", "60", "-f", "rawvideo", &out]);
    let cli = ffmpeg_cli::read_frames(&yuv, size);
    let ours = decode_all(&clip, 2);
    for (i, (a, b)) in cli.iter().zip(&ours).enumerate() {
        let p = psnr(a, &b.frame).unwrap();
        assert!(
            p.average.is_infinite(),
            "frame {i} differs from ffmpeg: {p:?}"
        );
    }
}

#[test]
fn a_corrupt_packet_is_an_error_and_decoding_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let clip = flv(dir.path(), "src", GRAPH, 90, SOURCE);
    let mut dec = VideoDecoder::new(&clip.params, 1).unwrap();
    let pool = FramePool::new(dec.size(), 128).unwrap();
    let mut out = Vec::new();
    let mut errors = 0;
    for (i, p) in clip.packets.iter().enumerate() {
        let mut p = p.clone();
        if i == 35 {
            p.data = Bytes::new();
        } else if i == 40 {
            // A NAL length larger than the sample.
            p.data = Bytes::from_static(&[0, 0, 0x40, 0, 0x41, 0x9a, 1, 2, 3]);
        } else if i == 45 {
            // A plausible slice header followed by noise.
            let noise: Vec<u8> = (0..600u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let mut data = (noise.len() as u32 + 1).to_be_bytes().to_vec();
            data.push(0x41);
            data.extend(noise);
            p.data = data.into();
        }
        if let Err(e) = dec.decode(&p, &pool, &mut out) {
            eprintln!("packet {i}: {e}");
            assert!(matches!(
                e,
                DecodeError::Packet { .. } | DecodeError::Receive { .. }
            ));
            errors += 1;
        }
    }
    dec.flush(&pool, &mut out).unwrap();
    assert!(
        errors >= 2,
        "the empty packet and the bad NAL length must be reported"
    );
    // The last GOP starts at a keyframe after the damage and decodes intact.
    let last: Vec<_> = out
        .iter()
        .filter(|f| f.frame.pts() >= clip_pts(&clip, 60))
        .collect();
    assert_eq!(last.len(), 30);
    assert!(last[0].keyframe);
    let reference = decode_all(&clip, 1);
    for (a, b) in last.iter().zip(&reference[60..]) {
        assert!(psnr(&a.frame, &b.frame).unwrap().average.is_infinite());
    }
}

/// The pts of the `n`th picture in presentation order.
fn clip_pts(clip: &Clip, n: usize) -> i64 {
    let mut pts: Vec<i64> = clip.packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    pts[n]
}

#[test]
fn other_pixel_formats_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["-preset", "veryfast", "-pix_fmt", "yuv444p"];
    let clip = flv(dir.path(), "444", GRAPH, 3, &args);
    let mut dec = VideoDecoder::new(&clip.params, 1).unwrap();
    let pool = FramePool::new(dec.size(), 8).unwrap();
    let mut out = Vec::new();
    let mut result = Ok(());
    for p in &clip.packets {
        result = result.and(dec.decode(p, &pool, &mut out));
    }
    result = result.and(dec.flush(&pool, &mut out));
    let err = result.unwrap_err();
    assert!(matches!(err, DecodeError::PixelFormat { .. }), "{err}");
    assert!(err.to_string().contains("YUV444P"), "{err}");
}

/// Real on both kinds of machine: without a driver (CI) NVDEC fails to
/// open, saying why, which is what sends a stream to software decode;
/// with one, its pictures (downloaded) equal the software decoder's.
#[test]
fn nvdec_fails_cleanly_without_a_driver_and_matches_software_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let clip = flv(dir.path(), "src", GRAPH, 30, SOURCE);
    match VideoDecoder::new_nvdec(&clip.params, 0) {
        Err(e) => {
            assert!(
                matches!(e, DecodeError::NvdecDevice { device: 0, .. }),
                "{e}"
            );
            if !crate::gpu::device::driver_present() {
                assert!(e.to_string().contains("libcuda.so.1"), "{e}");
            }
        }
        Ok(mut dec) => {
            assert_eq!(dec.nvdec_device(), Some(0));
            let pool = FramePool::new(dec.size(), 64).unwrap();
            let mut out = Vec::new();
            for p in &clip.packets {
                dec.decode(p, &pool, &mut out).unwrap();
            }
            dec.flush(&pool, &mut out).unwrap();
            assert!(dec.has_produced());
            let want = decode_all(&clip, 1);
            assert_eq!(out.len(), want.len());
            for (a, b) in out.iter().zip(&want) {
                assert_eq!((a.frame.pts(), a.keyframe), (b.frame.pts(), b.keyframe));
                assert!(psnr(&a.frame, &b.frame).unwrap().average.is_infinite());
            }
        }
    }
}

/// An MP4 clip (hvcC, av1C) of `frames` 320x184 frames in `pix_fmt`, its video packets read
/// as a file source reads them.
fn mp4_clip(
    dir: &std::path::Path,
    name: &str,
    frames: usize,
    pix_fmt: &str,
    encoder: &[&str],
) -> Clip {
    use crate::media::{IngestEvent, TrackKind};
    let path = dir.join(format!("{name}.mp4"));
    let out = path.to_str().expect("temp paths are UTF-8");
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x184:rate=30,format=rgb24",
    ];
    let frames = frames.to_string();
    args.extend(["-frames:v", &frames, "-pix_fmt", pix_fmt]);
    args.extend(encoder);
    args.push(out);
    ffmpeg_cli::run(&args);
    let mut source = crate::transcode::source::FileSource::open(&path).expect("open the clip");
    let params = source.video.clone();
    let mut packets = Vec::new();
    while let Some(event) = source.next_event().expect("read the clip") {
        if let IngestEvent::Packet(p) = event
            && p.track == TrackKind::Video
        {
            packets.push(p);
        }
    }
    Clip { params, packets }
}

/// NVDEC for HEVC Main 10 and AV1: FFmpeg's `hevc` and native `av1` decoders are found and
/// set up for the cuda hwaccel, so that without a driver (CI) the open fails at the CUDA
/// device, saying why, like H.264's; with one, NVDEC's 10-bit pictures, downloaded, equal the
/// software decoder's once both are reduced to 8 bits (AV1 may be refused before its first
/// picture: Turing, GA100 and Hopper have no AV1 NVDEC).
#[test]
fn nvdec_for_10_bit_hevc_and_av1_fails_cleanly_without_a_driver() {
    let dir = tempfile::tempdir().unwrap();
    let hevc = [
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-tag:v",
        "hvc1",
    ];
    let av1 = ["-c:v", "libsvtav1", "-preset", "12"];
    for (name, encoder) in [("hevc", &hevc[..]), ("av1", &av1[..])] {
        let clip = mp4_clip(dir.path(), name, 8, "yuv420p10le", encoder);
        let want = decode_all(&clip, 1);
        assert_eq!(want.len(), 8, "{name}: software decodes every picture");
        let mut dec = match VideoDecoder::new_nvdec(&clip.params, 0) {
            Err(e) => {
                assert!(
                    matches!(e, DecodeError::NvdecDevice { device: 0, .. }),
                    "{name}: {e}"
                );
                if !crate::gpu::device::driver_present() {
                    assert!(e.to_string().contains("libcuda.so.1"), "{name}: {e}");
                }
                continue;
            }
            Ok(dec) => dec,
        };
        let pool = FramePool::new(dec.size(), 64).unwrap();
        let mut out = Vec::new();
        let decoded = clip
            .packets
            .iter()
            .try_for_each(|p| dec.decode(p, &pool, &mut out))
            .and_then(|()| dec.flush(&pool, &mut out));
        if let Err(e) = decoded {
            assert!(name == "av1" && !dec.has_produced(), "{name}: {e}");
            continue;
        }
        assert_eq!(out.len(), want.len(), "{name}");
        for (a, b) in out.iter().zip(&want) {
            assert_eq!((a.frame.pts(), a.keyframe), (b.frame.pts(), b.keyframe));
            assert!(
                psnr(&a.frame, &b.frame).unwrap().average.is_infinite(),
                "{name}"
            );
        }
    }
}

#[test]
fn a_cut_config_record_is_survivable() {
    let mut params = VideoParams {
        codec: crate::media::VideoCodec::Avc,
        // The SPS length says 40 bytes, one follows.
        avcc: Bytes::from_static(&[1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 40, 0x67]),
        width: 640,
        height: 360,
        profile_idc: 0x64,
        constraint_flags: 0,
        level_idc: 0x1e,
        nal_length_size: 4,
    };
    // FFmpeg 5.1 logs "Error decoding the extradata" and opens anyway; then packets fail
    // for want of parameter sets. Either way: errors with context, no panic.
    match VideoDecoder::new(&params, 1) {
        Err(e) => assert!(e.to_string().contains("640x360"), "{e}"),
        Ok(mut dec) => {
            let pool = FramePool::new(dec.size(), 2).unwrap();
            let packet = Packet {
                track: crate::media::TrackKind::Video,
                dts: 0,
                pts: 0,
                keyframe: true,
                data: Bytes::from_static(&[0, 0, 0, 3, 0x65, 0x88, 0x84]),
            };
            let mut out = Vec::new();
            let _ = dec.decode(&packet, &pool, &mut out);
            let _ = dec.flush(&pool, &mut out);
            assert!(out.is_empty());
        }
    }
    params.avcc = Bytes::new();
    assert!(
        VideoDecoder::new(&params, 1).is_ok(),
        "no extradata is allowed"
    );
}

/// An open GOP (x265's default: each CRA's leading pictures are decoded after it and shown
/// before it) starts showing at its earliest leading picture: that picture carries the GOP's
/// keyframe flag, so a rung's IDR opens the segment the packager cuts there.
#[test]
fn an_open_gop_starts_at_its_first_shown_picture() {
    let dir = tempfile::tempdir().unwrap();
    let x265 = [
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error:keyint=30:min-keyint=30:scenecut=0:bframes=3",
    ];
    let clip = mp4_clip(dir.path(), "open-gop", 95, "yuv420p", &x265);
    // Each GOP in decode order, from a source keyframe to the next: where it starts showing.
    let mut starts = Vec::new();
    let mut leading = 0;
    for (i, p) in clip.packets.iter().enumerate() {
        if !p.keyframe {
            continue;
        }
        let gop = clip.packets[i..]
            .iter()
            .enumerate()
            .take_while(|(j, q)| *j == 0 || !q.keyframe)
            .map(|(_, q)| q.pts);
        let first = gop.min().unwrap_or(p.pts);
        leading += usize::from(first < p.pts);
        starts.push(first);
    }
    assert!(leading >= 2, "x265 made no open GOP: {starts:?}");
    let frames = decode_all(&clip, 2);
    let keys: Vec<i64> = frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.frame.pts())
        .collect();
    assert_eq!(keys, starts);
}
