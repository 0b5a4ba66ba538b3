//! The fMP4 writer's boxes read back by mp4-atom, and its output decoded by
//! ffprobe from media the FFmpeg CLI made.

use super::*;
use crate::package::testmedia::{self, tool};
use mp4_atom::{Codec, Decode as _, TrunSamples};
use std::path::Path;
use std::process::Output;

/// The avcC that FFmpeg 5.1's libx264 wrapper wrote for 320x240 High
/// profile (with the High-profile extension fields after the PPS).
const HIGH_AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

fn video_params(avcc: &[u8]) -> VideoParams {
    VideoParams {
        codec: crate::media::VideoCodec::Avc,
        avcc: Bytes::copy_from_slice(avcc),
        width: 320,
        height: 240,
        profile_idc: avcc[1],
        constraint_flags: avcc[2],
        level_idc: avcc[3],
        nal_length_size: 4,
    }
}

fn audio_params(asc: &[u8], sample_rate: u32, channels: u8) -> AudioParams {
    AudioParams {
        asc: Bytes::copy_from_slice(asc),
        object_type: 2,
        sample_rate,
        channels,
        samples_per_frame: 1024,
    }
}

fn sample(duration: u32, composition_offset: i32, keyframe: bool, data: &[u8]) -> Sample {
    Sample {
        duration,
        composition_offset,
        keyframe,
        data: Bytes::copy_from_slice(data),
    }
}

fn parse_init(init: &[u8]) -> (Ftyp, Moov) {
    let mut buf = init;
    let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty(), "{} bytes after moov", buf.len());
    (ftyp, moov)
}

/// The body of the first box of `kind` anywhere in `data`, found by its
/// fourcc: enough for a test that knows what it wrote.
fn box_body<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    let at = data
        .windows(4)
        .position(|w| w == kind)
        .expect("box present");
    let start = at - 4;
    let size = u32::from_be_bytes(data[start..at].try_into().expect("a 4-byte slice")) as usize;
    &data[at + 4..start + size]
}

#[test]
fn video_init_segment_round_trips() {
    let params = video_params(HIGH_AVCC);
    let init = init_segment(7, TrackCodec::Video(&params)).expect("init");
    let (ftyp, moov) = parse_init(&init);

    assert_eq!(ftyp.major_brand, b"iso6".into());
    for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
        assert!(ftyp.compatible_brands.contains(&brand.into()), "{brand:?}");
    }
    assert_eq!(moov.mvhd.timescale, 1000);
    assert_eq!(moov.mvhd.next_track_id, 8);
    let [trak] = moov.trak.as_slice() else {
        panic!("one trak, got {}", moov.trak.len())
    };
    assert_eq!(trak.tkhd.track_id, 7);
    assert!(trak.tkhd.enabled && trak.tkhd.in_movie);
    assert_eq!(trak.tkhd.width, 320.into());
    assert_eq!(trak.tkhd.height, 240.into());
    assert_eq!(trak.mdia.mdhd.timescale, 90_000);
    assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
    let minf = &trak.mdia.minf;
    assert!(minf.vmhd.is_some() && minf.smhd.is_none());
    assert_eq!(minf.dinf.dref.entries, vec![Url::default().into()]);
    let stbl = &minf.stbl;
    assert!(stbl.stts.entries.is_empty() && stbl.stsc.entries.is_empty());
    assert_eq!(stbl.stco.as_ref().map(|s| s.entries.len()), Some(0));
    let [Codec::Avc1(avc1)] = stbl.stsd.codecs.as_slice() else {
        panic!("one avc1 entry, got {:?}", stbl.stsd.codecs)
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (320, 240));
    assert_eq!(avc1.visual.data_reference_index, 1);
    assert_eq!(
        avc1.avcc,
        Avcc::decode_body(&mut &HIGH_AVCC[..]).expect("reference avcC")
    );
    assert_eq!(box_body(&init, b"avcC"), HIGH_AVCC, "avcC is verbatim");
    let mvex = moov.mvex.expect("mvex");
    assert_eq!(mvex.trex.len(), 1);
    assert_eq!(mvex.trex[0].track_id, 7);
    assert_eq!(mvex.trex[0].default_sample_description_index, 1);
}

#[test]
fn audio_init_segment_round_trips() {
    // AAC-LC, 44100 Hz (index 4), stereo.
    let asc = [0x12, 0x10];
    let params = audio_params(&asc, 44_100, 2);
    assert_eq!(TrackCodec::Audio(&params).timescale(), 44_100);
    let init = init_segment(2, TrackCodec::Audio(&params)).expect("init");
    let (_, moov) = parse_init(&init);

    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.track_id, 2);
    assert_eq!(trak.tkhd.volume, 1.into());
    assert_eq!(trak.mdia.mdhd.timescale, 44_100);
    assert_eq!(trak.mdia.hdlr.handler, b"soun".into());
    assert!(trak.mdia.minf.smhd.is_some() && trak.mdia.minf.vmhd.is_none());
    let [Codec::Mp4a(mp4a)] = trak.mdia.minf.stbl.stsd.codecs.as_slice() else {
        panic!("one mp4a entry")
    };
    assert_eq!(mp4a.audio.channel_count, 2);
    assert_eq!(mp4a.audio.sample_rate, 44_100.into());
    let dec_config = &mp4a.esds.es_desc.dec_config;
    assert_eq!(dec_config.object_type_indication, 0x40);
    assert_eq!(dec_config.stream_type, 0x05);
    let dsi = dec_config
        .dec_specific
        .as_ref()
        .expect("DecoderSpecificInfo");
    assert_eq!(dsi.raw, asc);
    assert_eq!((dsi.profile, dsi.freq_index, dsi.chan_conf), (2, 4, 2));
}

#[test]
fn video_fragment_round_trips() {
    let samples = [
        sample(3000, 6000, true, b"\x00\x00\x00\x03\x65\xaa\xbb"),
        sample(3000, -3000, false, b"\x00\x00\x00\x02\x41\xcc"),
        sample(3000, 0, false, b"\x00\x00\x00\x01\x01"),
    ];
    let frag = fragment(42, 1, 1 << 40, &samples).expect("fragment");

    let mut buf = &frag[..];
    let moof = Moof::decode(&mut buf).expect("moof");
    let moof_len = frag.len() - buf.len();
    let mdat = Mdat::decode(&mut buf).expect("mdat");
    assert!(buf.is_empty());

    assert_eq!(moof.mfhd.sequence_number, 42);
    let [traf] = moof.traf.as_slice() else {
        panic!("one traf")
    };
    assert_eq!(traf.tfhd.track_id, 1);
    assert!(traf.tfhd.default_base_is_moof);
    assert_eq!(traf.tfhd.base_data_offset, None);
    assert_eq!(
        traf.tfdt
            .as_ref()
            .expect("tfdt written")
            .base_media_decode_time,
        1 << 40
    );
    assert_eq!(&box_body(&frag, b"tfdt")[..1], [1], "tfdt version 1");
    assert_eq!(&box_body(&frag, b"trun")[..1], [1], "trun version 1");
    let [trun] = traf.trun.as_slice() else {
        panic!("one trun")
    };
    assert_eq!(trun.samples.len(), 3);
    let data_offset = trun.data_offset.expect("data_offset") as usize;
    assert_eq!(data_offset, moof_len + 8, "points at the mdat payload");

    let mut offset = data_offset;
    for (entry, sample) in trun.samples.iter().zip(&samples) {
        assert_eq!(entry.duration, Some(3000));
        assert_eq!(entry.cts, Some(sample.composition_offset.into()));
        let size = entry.size.expect("size") as usize;
        assert_eq!(&frag[offset..offset + size], &sample.data[..]);
        offset += size;
    }
    assert_eq!(offset, frag.len());
    let flags: Vec<_> = trun.samples.iter().map(|e| e.flags).collect();
    assert_eq!(
        flags,
        [Some(0x0200_0000), Some(0x0101_0000), Some(0x0101_0000)]
    );
    assert_eq!(mdat.data.len(), 7 + 6 + 5);
}

#[test]
fn fragment_without_composition_offsets_leaves_them_out() {
    let samples = [sample(1024, 0, true, b"ab"), sample(1024, 0, true, b"cd")];
    let frag = fragment(1, 2, 0, &samples).expect("fragment");
    let moof = Moof::decode(&mut &frag[..]).expect("moof");
    let TrunSamples::Explicit(entries) = &moof.traf[0].trun[0].samples else {
        panic!("per-sample entries")
    };
    assert!(entries.iter().all(|e| e.cts.is_none()));
    assert!(entries.iter().all(|e| e.flags == Some(SYNC_SAMPLE_FLAGS)));
    assert!(frag.ends_with(b"abcd"));
}

#[test]
fn impossible_values_are_errors() {
    let video = video_params(HIGH_AVCC);
    let one = [sample(1, 0, true, b"x")];
    assert!(matches!(fragment(1, 1, 0, &[]), Err(Fmp4Error::NoSamples)));
    assert!(matches!(
        fragment(1, 0, 0, &one),
        Err(Fmp4Error::InvalidTrackId(0))
    ));
    assert!(matches!(
        init_segment(u32::MAX, TrackCodec::Video(&video)),
        Err(Fmp4Error::InvalidTrackId(_))
    ));
    let wide = VideoParams {
        width: 70_000,
        ..video.clone()
    };
    assert!(matches!(
        init_segment(1, TrackCodec::Video(&wide)),
        Err(Fmp4Error::TooLarge { .. })
    ));
    let two_byte_lengths = VideoParams {
        nal_length_size: 2,
        ..video.clone()
    };
    for bad in [
        video_params(&HIGH_AVCC[..6]),
        video_params(&[[0u8].as_slice(), &HIGH_AVCC[1..]].concat()),
        two_byte_lengths,
    ] {
        assert!(
            matches!(
                init_segment(1, TrackCodec::Video(&bad)),
                Err(Fmp4Error::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
    for bad in [
        audio_params(&[0x12], 44_100, 2),
        audio_params(&[0x12, 0x10], 0, 2),
    ] {
        assert!(matches!(
            init_segment(1, TrackCodec::Audio(&bad)),
            Err(Fmp4Error::InvalidConfig { .. })
        ));
    }
}

// ---- Real decoder checks: FFmpeg makes the input, ffprobe decodes our output.

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

/// Decodes every frame of `file` with ffprobe, which must say nothing at
/// error level while doing so.
fn probe_frames(dir: &Path, file: &str) -> serde_json::Value {
    let args = format!("-v error -show_streams -show_frames -of json {file}");
    let out = tool(dir, "ffprobe", &args);
    assert!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

fn frame_pts(probe: &serde_json::Value) -> Vec<i64> {
    probe["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["pts"].as_i64().expect("frame pts"))
        .collect()
}

#[test]
fn ffprobe_decodes_h264_with_b_frames() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();

    // libx264 with B-frames, as ingest would hand it over.
    let (params, packets) = testmedia::h264(dir, 60, 30, 2);
    let samples: Vec<Sample> = packets
        .iter()
        .map(|p| Sample {
            duration: 3000,
            composition_offset: (p.pts - p.dts) as i32,
            keyframe: p.keyframe,
            data: p.data.clone(),
        })
        .collect();
    assert!(samples[0].keyframe && samples[30].keyframe);
    assert!(
        samples.iter().any(|s| s.composition_offset != 0),
        "B-frames"
    );

    let mut file = init_segment(1, TrackCodec::Video(&params))
        .expect("init")
        .to_vec();
    file.extend_from_slice(&fragment(1, 1, 0, &samples[..30]).expect("fragment 1"));
    file.extend_from_slice(&fragment(2, 1, 90_000, &samples[30..]).expect("fragment 2"));
    std::fs::write(dir.join("out.mp4"), &file).expect("write");

    let probe = probe_frames(dir, "out.mp4");
    let frames = probe["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), 60);
    assert!(frames.iter().all(|f| f["media_type"] == "video"));
    assert_eq!(frames[0]["key_frame"], 1);
    assert_eq!(probe["streams"][0]["width"], 320);
    // Decoded frames come out in presentation order, each at the time
    // its sample's dts + composition offset says.
    let mut expected: Vec<i64> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| i as i64 * 3000 + i64::from(s.composition_offset))
        .collect();
    expected.sort_unstable();
    let pts = frame_pts(&probe);
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "monotonic: {pts:?}");
    assert_eq!(pts, expected);
}

#[test]
fn ffprobe_decodes_aac() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tool(
        dir,
        "ffmpeg",
        "-v error -f lavfi -i sine=frequency=1000:sample_rate=48000 -t 1 \
         -c:a aac -f adts src.aac",
    );
    let adts = std::fs::read(dir.join("src.aac")).expect("read aac");

    // ADTS headers (ISO/IEC 13818-7): 7 bytes, 9 with a CRC.
    let mut frames = Vec::new();
    let mut asc = None;
    let mut at = 0;
    while at < adts.len() {
        let h = &adts[at..at + 7];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync at {at}");
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let object_type = (h[2] >> 6) + 1;
        let freq_index = (h[2] >> 2) & 0xf;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        let frame_len =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        asc.get_or_insert([
            (object_type << 3) | (freq_index >> 1),
            ((freq_index & 1) << 7) | (channels << 3),
        ]);
        frames.push(&adts[at + header_len..at + frame_len]);
        at += frame_len;
    }
    let asc = asc.expect("at least one frame");
    assert_eq!(asc, [0x11, 0x88], "AAC-LC, 48 kHz, mono");
    let params = audio_params(&asc, 48_000, 1);

    let samples: Vec<Sample> = frames
        .iter()
        .map(|payload| sample(1024, 0, true, payload))
        .collect();
    let half = samples.len() / 2;
    let mut file = init_segment(1, TrackCodec::Audio(&params))
        .expect("init")
        .to_vec();
    file.extend_from_slice(&fragment(1, 1, 0, &samples[..half]).expect("fragment 1"));
    file.extend_from_slice(
        &fragment(2, 1, half as u64 * 1024, &samples[half..]).expect("fragment 2"),
    );
    std::fs::write(dir.join("out.mp4"), &file).expect("write");

    let probe = probe_frames(dir, "out.mp4");
    let stream = &probe["streams"][0];
    assert_eq!(stream["codec_name"], "aac");
    assert_eq!(stream["sample_rate"], "48000");
    assert_eq!(stream["channels"], 1);
    let decoded = probe["frames"].as_array().expect("frames");
    assert_eq!(decoded.len(), samples.len());
    assert!(decoded.iter().all(|f| f["media_type"] == "audio"));
    let pts = frame_pts(&probe);
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "monotonic: {pts:?}");
}
