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
    Atom, Audio, Av01, Av1c, Avc1, Avcc, BufMut as _, Dinf, Dref, Encode as _, Esds, Ftyp, Hdlr,
    Header, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc,
    Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};
use mp4_atom::{FourCC, Hvc1, Hvcc};

use crate::media::{AudioParams, TIMEBASE, VideoCodec, VideoParams};

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
    /// A visual sample entry (`avc1`, `hvc1` or `av01`) with the verbatim configuration
    /// record in its box (`avcC`, `hvcC` or `av1C`).
    Video {
        entry: FourCC,
        config: FourCC,
        visual: Visual,
        record: &'a [u8],
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
                let (entry, config) = match video.codec {
                    VideoCodec::Avc => {
                        check_avcc(video)?;
                        (Avc1::KIND, Avcc::KIND)
                    }
                    // `hvc1`, not `hev1`: parameter sets only in the record, as FLV sends
                    // them, which is also what Apple's HLS authoring spec asks for.
                    VideoCodec::Hevc(_) => (Hvc1::KIND, Hvcc::KIND),
                    VideoCodec::Av1(_) => (Av01::KIND, Av1c::KIND),
                };
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
                    entry: SampleEntry::Video {
                        entry,
                        config,
                        visual: Visual {
                            data_reference_index: 1,
                            width,
                            height,
                            ..Default::default()
                        },
                        record: &video.avcc,
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
                SampleEntry::Video {
                    entry,
                    config,
                    visual,
                    record,
                } => buf.encode_atom(*entry, |buf| {
                    visual.encode(buf)?;
                    buf.encode_atom(*config, |buf| {
                        buf.append_slice(record);
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
mod tests;
