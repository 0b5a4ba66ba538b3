//! Media for tests: synthetic packets with real codec configurations, and
//! real H.264 and AAC made by the FFmpeg CLI, split into the packets ingest
//! would produce. A missing `ffmpeg`/`ffprobe` is a test failure, not a skip.

use crate::media::{AudioParams, Packet, TrackKind, VideoParams};
use bytes::Bytes;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

/// The avcC FFmpeg 5.1's libx264 wrapper wrote for 320x240 High profile.
const HIGH_AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

pub fn video_params(width: u32) -> Arc<VideoParams> {
    sized_video_params(width, 240)
}

/// H.264 parameters for a picture of `width` x `height` (the avcC is 320x240's: only what the
/// record says matters to the code under test, not the SPS inside it).
pub fn sized_video_params(width: u32, height: u32) -> Arc<VideoParams> {
    Arc::new(VideoParams {
        codec: crate::media::VideoCodec::Avc,
        avcc: Bytes::from_static(HIGH_AVCC),
        width,
        height,
        profile_idc: 0x64,
        constraint_flags: 0x00,
        level_idc: 0x0d,
        nal_length_size: 4,
    })
}

pub fn audio_params() -> Arc<AudioParams> {
    Arc::new(AudioParams {
        // AAC-LC, 44.1 kHz, stereo.
        asc: Bytes::from_static(&[0x12, 0x10]),
        object_type: 2,
        sample_rate: 44_100,
        channels: 2,
        samples_per_frame: 1024,
    })
}

/// RTMP-like media: millisecond timestamps, 30 fps video with a keyframe
/// every `gop` frames, AAC at 44.1 kHz, interleaved by time.
pub fn media(from_ms: i64, secs: i64, gop: i64, audio: bool) -> Vec<Packet> {
    let mut out = Vec::new();
    for i in 0..secs * 30 {
        let ms = from_ms + i * 1000 / 30;
        out.push(Packet {
            track: TrackKind::Video,
            dts: ms * 90,
            pts: ms * 90,
            keyframe: i % gop == 0,
            data: Bytes::from(vec![0, 0, 0, 1, if i % gop == 0 { 0x65 } else { 0x41 }]),
        });
    }
    if audio {
        for k in 0..secs * 44_100 / 1024 {
            let ms = from_ms + k * 1024 * 1000 / 44_100;
            out.push(Packet {
                track: TrackKind::Audio,
                dts: ms * 90,
                pts: ms * 90,
                keyframe: true,
                data: Bytes::from(vec![0x21, 0x10, k as u8]),
            });
        }
    }
    out.sort_by_key(|p| (p.dts, p.track == TrackKind::Audio));
    out
}

/// Runs `program` in `dir` with a whitespace-separated argument line.
pub fn tool(dir: &Path, program: &str, args: &str) -> Output {
    let output = Command::new(program)
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("{program} is required for this test: {e}"));
    assert!(
        output.status.success(),
        "{program} {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

/// NAL units of an Annex B stream, without start codes.
fn annex_b_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |next| next - 3);
        // Zeros before the next start code belong to a 4-byte start code.
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        nals.push(&data[start..end]);
    }
    nals
}

/// `frames` of 320x240 libx264 at 30 fps, a keyframe every `gop` frames
/// and `bframes` B-frames, as 4-byte length-prefixed packets with 90 kHz
/// pts/dts (what RTMP ingest hands over).
pub fn h264(
    dir: &Path,
    frames: usize,
    gop: usize,
    bframes: u32,
) -> (Arc<VideoParams>, Vec<Packet>) {
    tool(
        dir,
        "ffmpeg",
        &format!(
            "-v error -y -f lavfi -i testsrc2=size=320x240:rate=30 -frames:v {frames} \
             -c:v libx264 -g {gop} -keyint_min {gop} -sc_threshold 0 -bf {bframes} \
             -pix_fmt yuv420p -video_track_timescale 90000 src.mp4"
        ),
    );
    tool(
        dir,
        "ffmpeg",
        "-v error -y -i src.mp4 -c:v copy \
         -bsf:v h264_mp4toannexb,h264_metadata=aud=insert -f h264 src.h264",
    );
    let packets = json(&tool(
        dir,
        "ffprobe",
        "-v error -show_packets -of json src.mp4",
    ));
    let times: Vec<(i64, i64)> = packets["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            (
                p["pts"].as_i64().expect("pts"),
                p["dts"].as_i64().expect("dts"),
            )
        })
        .collect();
    let annex_b = std::fs::read(dir.join("src.h264")).expect("read h264");
    let (mut sps, mut pps) = (None, None);
    let mut units: Vec<Vec<&[u8]>> = Vec::new();
    for nal in annex_b_nals(&annex_b) {
        match nal[0] & 0x1f {
            9 => units.push(Vec::new()),
            7 => sps = sps.or(Some(nal)),
            8 => pps = pps.or(Some(nal)),
            _ => units.last_mut().expect("AUD first").push(nal),
        }
    }
    assert_eq!(units.len(), frames);
    assert_eq!(times.len(), frames);
    let (sps, pps) = (sps.expect("SPS"), pps.expect("PPS"));
    // AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xfc | 3, 0xe0 | 1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let params = Arc::new(VideoParams {
        codec: crate::media::VideoCodec::Avc,
        avcc: Bytes::from(avcc),
        width: 320,
        height: 240,
        profile_idc: sps[1],
        constraint_flags: sps[2],
        level_idc: sps[3],
        nal_length_size: 4,
    });
    let packets = units
        .iter()
        .zip(&times)
        .map(|(nals, &(pts, dts))| {
            let mut data = Vec::new();
            for nal in nals {
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
            Packet {
                track: TrackKind::Video,
                dts,
                pts,
                keyframe: nals.iter().any(|nal| nal[0] & 0x1f == 5),
                data: Bytes::from(data),
            }
        })
        .collect();
    (params, packets)
}

/// `secs` of a 48 kHz mono AAC-LC sine, one packet per raw frame.
pub fn aac(dir: &Path, secs: u32) -> (Arc<AudioParams>, Vec<Packet>) {
    tool(
        dir,
        "ffmpeg",
        &format!(
            "-v error -y -f lavfi -i sine=frequency=1000:sample_rate=48000 -t {secs} \
             -c:a aac -f adts src.aac"
        ),
    );
    let adts = std::fs::read(dir.join("src.aac")).expect("read aac");
    let mut packets = Vec::new();
    let mut at = 0;
    // ADTS headers (ISO/IEC 13818-7): 7 bytes, 9 with a CRC.
    while at + 7 <= adts.len() {
        let h = &adts[at..at + 7];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync at {at}");
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let frame_len =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let t = packets.len() as i64 * 1024 * 90_000 / 48_000;
        packets.push(Packet {
            track: TrackKind::Audio,
            dts: t,
            pts: t,
            keyframe: true,
            data: Bytes::copy_from_slice(&adts[at + header_len..at + frame_len]),
        });
        at += frame_len;
    }
    let params = Arc::new(AudioParams {
        // AAC-LC, 48 kHz (index 3), mono.
        asc: Bytes::from_static(&[0x11, 0x88]),
        object_type: 2,
        sample_rate: 48_000,
        channels: 1,
        samples_per_frame: 1024,
    });
    (params, packets)
}
