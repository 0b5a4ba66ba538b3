//! fMP4/CMAF boxes: init segments and moof+mdat fragments for one track.
//!
//! Owns the byte layout of what a player downloads: `ftyp`+`moov` once per
//! rung, then one `moof`+`mdat` per CMAF chunk (an LL-HLS part). Pure
//! functions from codec parameters and samples to bytes: no I/O, no clock,
//! no state between calls (sequence numbers and decode times come from the
//! segmenter). Every box is an `mp4-atom` type except where a comment says
//! why not. Must never panic on what a publisher sent: impossible values
//! are an [`Fmp4Error`].

use bytes::Bytes;
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, BufMut as _, Dinf, Dref, Encode as _, Esds, Ftyp, Hdlr, Header, Mdat,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts,
    Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

use crate::media::{AudioParams, TIMEBASE, VideoParams};

/// Which codec a track carries.
#[derive(Clone, Copy, Debug)]
pub enum TrackCodec<'a> {
    Video(&'a VideoParams),
    Audio(&'a AudioParams),
}

impl TrackCodec<'_> {
    /// Ticks per second of the track's media timeline (`mdhd`), which is also
    /// the unit of [`Sample::duration`], [`Sample::composition_offset`] and a
    /// fragment's base media decode time.
    pub fn timescale(&self) -> u32 {
        match self {
            // The node timebase, so packet timestamps need no rescaling.
            TrackCodec::Video(_) => TIMEBASE,
            // One tick per PCM sample: AAC frame durations stay exact integers.
            TrackCodec::Audio(audio) => audio.sample_rate,
        }
    }
}

/// One access unit (video) or raw AAC frame (audio), in decode order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// In track timescale ticks.
    pub duration: u32,
    /// Presentation minus decode time, in track timescale ticks.
    pub composition_offset: i32,
    /// A random access point. Every AAC frame is one: pass `true` for audio.
    pub keyframe: bool,
    /// Video: NAL units with the length prefixes declared in `avcC`.
    /// Audio: one raw AAC frame without ADTS header.
    pub data: Bytes,
}

/// Why a box could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("track id {0} is invalid: ISO BMFF track ids run from 1 to 2^32-2")]
    InvalidTrackId(u32),
    #[error("a fragment needs at least one sample")]
    NoSamples,
    #[error("sample {index} is {size} bytes, more than a trun entry can describe")]
    SampleTooLarge { index: usize, size: usize },
    #[error("{what} is {value}, more than the {max} its box field can hold")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("invalid {what}: {why}")]
    InvalidConfig { what: &'static str, why: String },
    #[error("encoding mp4 boxes: {0}")]
    Encode(#[from] mp4_atom::Error),
}

/// Sample flags (ISO/IEC 14496-12 §8.8.3.1) of a sync sample:
/// sample_depends_on = 2 ("does not depend on others"), non-sync bit clear.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of any other sample: sample_depends_on = 1 ("depends on
/// others") and sample_is_non_sync_sample = 1.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// `mvhd` timescale. Nothing in a fragmented file is timed in it (durations
/// are 0), so any value works; 1000 is the usual choice.
const MOVIE_TIMESCALE: u32 = 1000;

/// Size of an `mdat` header with a 32-bit size field.
const MDAT_HEADER_LEN: usize = 8;

/// `ftyp` + `moov` for one track: the CMAF header, with empty sample tables
/// since every sample lives in a fragment.
pub fn init_segment(track_id: u32, codec: TrackCodec<'_>) -> Result<Bytes, Fmp4Error> {
    check_track_id(track_id)?;
    let timescale = codec.timescale();
    if timescale == 0 {
        return Err(invalid("audio sample rate", "0 Hz".into()));
    }
    let media = MediaBoxes::new(track_id, codec)?;

    let ftyp = Ftyp {
        // iso6 covers everything written here (tfdt v1, signed trun offsets,
        // default-base-is-moof); cmfc declares a CMAF track; mp41 and dash
        // are listed for players that only check for those.
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![
            b"iso6".into(),
            b"cmfc".into(),
            b"mp41".into(),
            b"dash".into(),
        ],
    };
    let mvhd = Mvhd {
        timescale: MOVIE_TIMESCALE,
        rate: 1.into(),
        volume: 1.into(),
        // check_track_id keeps this below u32::MAX.
        next_track_id: track_id + 1,
        ..Default::default()
    };
    let mdhd = Mdhd {
        timescale,
        language: "und".into(),
        ..Default::default()
    };
    let dinf = Dinf {
        dref: Dref {
            // An empty location sets the self-contained flag: media is in this file.
            entries: vec![Url::default().into()],
        },
    };
    let mvex = Mvex {
        mehd: None,
        trex: vec![Trex {
            track_id,
            default_sample_description_index: 1,
            // Every trun entry carries its own duration, size and flags.
            ..Default::default()
        }],
    };

    let mut buf = Vec::with_capacity(1024);
    ftyp.encode(&mut buf)?;
    // Containers are assembled here rather than as mp4_atom::Moov because
    // mp4-atom re-serializes avcC from parsed fields, and the publisher's
    // record must reach the decoder byte for byte. It also keeps the
    // conventional box order (mvex after trak, vmhd/smhd first in minf).
    buf.encode_atom(Moov::KIND, |buf| {
        mvhd.encode(buf)?;
        buf.encode_atom(Trak::KIND, |buf| {
            media.tkhd.encode(buf)?;
            buf.encode_atom(Mdia::KIND, |buf| {
                mdhd.encode(buf)?;
                media.hdlr.encode(buf)?;
                buf.encode_atom(Minf::KIND, |buf| {
                    media.vmhd.encode(buf)?;
                    media.smhd.encode(buf)?;
                    dinf.encode(buf)?;
                    buf.encode_atom(Stbl::KIND, |buf| {
                        media.encode_stsd(buf)?;
                        Stts::default().encode(buf)?;
                        Stsc::default().encode(buf)?;
                        Stsz::default().encode(buf)?;
                        Stco::default().encode(buf)
                    })
                })
            })
        })?;
        mvex.encode(buf)
    })?;
    Ok(Bytes::from(buf))
}

/// One CMAF chunk: `moof` (`mfhd`, `traf` with `tfhd`, `tfdt` v1 and one
/// `trun`) followed by an `mdat` holding the samples' data in order.
pub fn fragment(
    sequence_number: u32,
    track_id: u32,
    base_media_decode_time: u64,
    samples: &[Sample],
) -> Result<Bytes, Fmp4Error> {
    check_track_id(track_id)?;
    if samples.is_empty() {
        return Err(Fmp4Error::NoSamples);
    }

    // Without B-frames (and for audio) every offset is 0: leave the column out.
    let with_cts = samples.iter().any(|s| s.composition_offset != 0);
    let mut payload_len = 0usize;
    let mut entries = Vec::with_capacity(samples.len());
    for (index, sample) in samples.iter().enumerate() {
        let size = sample.data.len();
        let size32 = u32::try_from(size).map_err(|_| Fmp4Error::SampleTooLarge { index, size })?;
        // Saturating: the mdat size check below rejects anything this large.
        payload_len = payload_len.saturating_add(size);
        entries.push(TrunEntry {
            duration: Some(sample.duration),
            size: Some(size32),
            flags: Some(if sample.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            }),
            // mp4-atom writes trun version 1 (signed offsets) when all fit in i32.
            cts: with_cts.then_some(i64::from(sample.composition_offset)),
        });
    }
    // A larger mdat would need a 64-bit size header; a live chunk never does.
    let mdat_len = payload_len.saturating_add(MDAT_HEADER_LEN);
    if u32::try_from(mdat_len).is_err() {
        return Err(Fmp4Error::TooLarge {
            what: "mdat size",
            value: mdat_len as u64,
            max: u32::MAX.into(),
        });
    }

    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id,
                // CMAF requires trun offsets relative to the moof and forbids
                // base_data_offset, so a chunk can be served on its own.
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: entries.into(),
            }],
            ..Default::default()
        }],
    };

    // data_offset is a fixed 4-byte field, so encoding with a placeholder
    // gives the final moof size.
    let mut out = Vec::new();
    moof.encode(&mut out)?;
    let moof_len = out.len();
    let data_offset = moof_len + MDAT_HEADER_LEN;
    let data_offset = i32::try_from(data_offset).map_err(|_| Fmp4Error::TooLarge {
        what: "trun data_offset",
        value: data_offset as u64,
        max: i32::MAX as u64,
    })?;
    // Indexing cannot fail: the moof was built above with one traf and one trun.
    moof.traf[0].trun[0].data_offset = Some(data_offset);

    out.clear();
    out.reserve(moof_len + mdat_len);
    moof.encode(&mut out)?;
    // The mdat header is written alone so the payload is copied once, straight
    // from the samples, instead of first into an mp4_atom::Mdat.
    Header {
        kind: Mdat::KIND,
        size: Some(payload_len),
    }
    .encode(&mut out)?;
    for sample in samples {
        out.extend_from_slice(&sample.data);
    }
    Ok(Bytes::from(out))
}

/// The boxes of a track that depend on its codec.
struct MediaBoxes<'a> {
    tkhd: Tkhd,
    hdlr: Hdlr,
    vmhd: Option<Vmhd>,
    smhd: Option<Smhd>,
    entry: SampleEntry<'a>,
}

enum SampleEntry<'a> {
    /// The visual fields and the verbatim AVCDecoderConfigurationRecord.
    Avc1 {
        visual: Visual,
        avcc: &'a [u8],
    },
    Mp4a(Mp4a),
}

impl<'a> MediaBoxes<'a> {
    fn new(track_id: u32, codec: TrackCodec<'a>) -> Result<Self, Fmp4Error> {
        let tkhd = Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            ..Default::default()
        };
        match codec {
            TrackCodec::Video(video) => {
                check_avcc(video)?;
                let width = dimension("video width", video.width)?;
                let height = dimension("video height", video.height)?;
                Ok(MediaBoxes {
                    tkhd: Tkhd {
                        width: width.into(),
                        height: height.into(),
                        ..tkhd
                    },
                    hdlr: Hdlr {
                        handler: b"vide".into(),
                        name: "VideoHandler".into(),
                    },
                    vmhd: Some(Vmhd::default()),
                    smhd: None,
                    entry: SampleEntry::Avc1 {
                        visual: Visual {
                            data_reference_index: 1,
                            width,
                            height,
                            ..Default::default()
                        },
                        avcc: &video.avcc,
                    },
                })
            }
            TrackCodec::Audio(audio) => {
                // AudioSpecificConfig (ISO/IEC 14496-3): object type (5 bits),
                // frequency index (4), channel configuration (4) at the least.
                if audio.asc.len() < 2 {
                    return Err(invalid(
                        "AudioSpecificConfig",
                        format!("{} bytes, need at least 2", audio.asc.len()),
                    ));
                }
                let mp4a = Mp4a {
                    audio: Audio {
                        data_reference_index: 1,
                        channel_count: audio.channels.into(),
                        sample_size: 16,
                        // A 16.16 field: rates above 65535 Hz are written as 0
                        // (as FFmpeg does); decoders take the rate from the ASC.
                        sample_rate: u16::try_from(audio.sample_rate).unwrap_or(0).into(),
                    },
                    esds: Esds {
                        es_desc: EsDescriptor {
                            // ISO/IEC 14496-14 §3.1.2: ES_ID is 0 as stored in a file.
                            es_id: 0,
                            dec_config: DecoderConfig {
                                // ISO/IEC 14496-1 Table 5/6: MPEG-4 Audio, AudioStream.
                                object_type_indication: 0x40,
                                stream_type: 0x05,
                                dec_specific: Some(DecoderSpecific {
                                    // mp4-atom writes a non-empty `raw` verbatim;
                                    // its parsed fields only serve readers.
                                    raw: audio.asc.to_vec(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            sl_config: SLConfig {},
                            ..Default::default()
                        },
                    },
                    btrt: None,
                    taic: None,
                };
                Ok(MediaBoxes {
                    tkhd: Tkhd {
                        volume: 1.into(),
                        ..tkhd
                    },
                    hdlr: Hdlr {
                        handler: b"soun".into(),
                        name: "SoundHandler".into(),
                    },
                    vmhd: None,
                    smhd: Some(Smhd::default()),
                    entry: SampleEntry::Mp4a(mp4a),
                })
            }
        }
    }

    /// `stsd` with the single sample entry. Hand-assembled (version/flags and
    /// entry count, then the entry) because mp4_atom::Stsd would carry an
    /// mp4_atom::Avcc and re-serialize it; see `init_segment`.
    fn encode_stsd(&self, buf: &mut Vec<u8>) -> mp4_atom::Result<()> {
        buf.encode_atom(Stsd::KIND, |buf| {
            0u32.encode(buf)?; // version 0, flags 0
            1u32.encode(buf)?; // entry_count
            match &self.entry {
                SampleEntry::Avc1 { visual, avcc } => buf.encode_atom(Avc1::KIND, |buf| {
                    visual.encode(buf)?;
                    buf.encode_atom(Avcc::KIND, |buf| {
                        buf.append_slice(avcc);
                        Ok(())
                    })
                }),
                SampleEntry::Mp4a(mp4a) => mp4a.encode(buf),
            }
        })
    }
}

fn check_track_id(track_id: u32) -> Result<(), Fmp4Error> {
    // 0 is reserved, and the init segment must name track_id + 1 as next_track_ID.
    if track_id == 0 || track_id == u32::MAX {
        return Err(Fmp4Error::InvalidTrackId(track_id));
    }
    Ok(())
}

/// Checks the parts of the AVCDecoderConfigurationRecord (ISO/IEC 14496-15)
/// that this writer relies on; the decoder reads the rest.
fn check_avcc(video: &VideoParams) -> Result<(), Fmp4Error> {
    let avcc = &video.avcc;
    // version, profile, compatibility, level, lengthSizeMinusOne,
    // numOfSequenceParameterSets, numOfPictureParameterSets at the least.
    if avcc.len() < 7 {
        return Err(invalid(
            "avcC",
            format!("{} bytes, shorter than any record", avcc.len()),
        ));
    }
    if avcc[0] != 1 {
        return Err(invalid(
            "avcC",
            format!("configurationVersion {}, expected 1", avcc[0]),
        ));
    }
    // Samples are split at prefixes of this length: a mismatch garbles every frame.
    let length_size = (avcc[4] & 0b11) + 1;
    if length_size != video.nal_length_size {
        return Err(invalid(
            "avcC",
            format!(
                "NAL length size {length_size} differs from the stream's {}",
                video.nal_length_size
            ),
        ));
    }
    Ok(())
}

/// Width or height for `tkhd` (16.16) and the visual sample entry (16 bits).
fn dimension(what: &'static str, value: u32) -> Result<u16, Fmp4Error> {
    u16::try_from(value).map_err(|_| Fmp4Error::TooLarge {
        what,
        value: value.into(),
        max: u16::MAX.into(),
    })
}

fn invalid(what: &'static str, why: String) -> Fmp4Error {
    Fmp4Error::InvalidConfig { what, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Codec, Decode as _, TrunSamples};
    use std::path::Path;
    use std::process::{Command, Output};

    /// The avcC that FFmpeg 5.1's libx264 wrapper wrote for 320x240 High
    /// profile (with the High-profile extension fields after the PPS).
    const HIGH_AVCC: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8,
        0x00,
    ];

    fn video_params(avcc: &[u8]) -> VideoParams {
        VideoParams {
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
        let size = u32::from_be_bytes(data[start..at].try_into().unwrap()) as usize;
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
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 1 << 40);
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

    /// Runs `program` in `dir` with a whitespace-separated argument line; a
    /// missing tool is a failure, not a skip.
    fn tool(dir: &Path, program: &str, args: &str) -> Output {
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
            // A NAL never ends in a zero byte; zeros there belong to the next
            // 4-byte start code.
            while end > start && data[end - 1] == 0 {
                end -= 1;
            }
            nals.push(&data[start..end]);
        }
        nals
    }

    #[test]
    fn ffprobe_decodes_h264_with_b_frames() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();

        // Encode once with B-frames into MP4, which keeps pts/dts, then copy
        // the same bitstream out as Annex B with an AUD opening each AU.
        tool(
            dir,
            "ffmpeg",
            "-v error -f lavfi -i testsrc2=size=320x240:rate=30 -frames:v 60 \
             -c:v libx264 -g 30 -bf 2 -pix_fmt yuv420p -video_track_timescale 90000 src.mp4",
        );
        tool(
            dir,
            "ffmpeg",
            "-v error -i src.mp4 -c:v copy \
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
            .map(|p| (p["pts"].as_i64().unwrap(), p["dts"].as_i64().unwrap()))
            .collect();
        assert_eq!(times.len(), 60);

        let annex_b = std::fs::read(dir.join("src.h264")).expect("read h264");
        let (mut sps, mut pps) = (None, None);
        let mut access_units: Vec<Vec<&[u8]>> = Vec::new();
        for nal in annex_b_nals(&annex_b) {
            match nal[0] & 0x1f {
                9 => access_units.push(Vec::new()),
                7 => sps = sps.or(Some(nal)),
                8 => pps = pps.or(Some(nal)),
                _ => access_units.last_mut().expect("AUD first").push(nal),
            }
        }
        assert_eq!(access_units.len(), 60);
        let (sps, pps) = (sps.expect("SPS"), pps.expect("PPS"));

        // AVCDecoderConfigurationRecord (ISO/IEC 14496-15) without
        // the optional High-profile fields.
        let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xfc | 3, 0xe0 | 1];
        avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        avcc.extend_from_slice(sps);
        avcc.push(1);
        avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        avcc.extend_from_slice(pps);
        let params = video_params(&avcc);

        let samples: Vec<Sample> = access_units
            .iter()
            .zip(&times)
            .map(|(nals, (pts, dts))| {
                let mut data = Vec::new();
                for nal in nals {
                    data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    data.extend_from_slice(nal);
                }
                Sample {
                    duration: 3000,
                    composition_offset: (pts - dts) as i32,
                    keyframe: nals.iter().any(|nal| nal[0] & 0x1f == 5),
                    data: data.into(),
                }
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
}
