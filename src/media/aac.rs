//! AAC helpers: AudioSpecificConfig parsing (ISO/IEC 14496-3 1.6.2.1) and silent raw
//! frames. Pure functions over bytes.

use super::h264::BitReader;
use super::{AudioParams, MediaError};
use bytes::Bytes;

const WHAT: &str = "AudioSpecificConfig";

/// 14496-3 Table 1.18, samplingFrequencyIndex 0x0..=0xc; 0xd and 0xe are reserved and 0xf
/// means an explicit 24-bit frequency follows.
const SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Parses an AudioSpecificConfig as carried in an FLV AAC sequence header.
///
/// For explicitly signalled HE-AAC (object type 5 or 29 first), `object_type` is that type
/// (so the codec string is `mp4a.40.5`/`.29`) while `sample_rate` and `samples_per_frame` are
/// the AAC core's: their ratio is the duration of one raw frame, which is what timestamps and
/// the fMP4 sample durations need. Backward-compatible (implicit) SBR signalling after the
/// GASpecificConfig is not interpreted.
pub fn parse_audio_specific_config(asc: Bytes) -> Result<AudioParams, MediaError> {
    let mut r = BitReader::new(&asc, WHAT);
    let signalled_type = object_type(&mut r)?;
    let sample_rate = sampling_frequency(&mut r)?;
    let channel_configuration = r.bits(4)?;

    let mut core_type = signalled_type;
    let mut channel_configuration_for_core = channel_configuration;
    if matches!(signalled_type, 5 | 29) {
        // 1.6.2.1 explicit hierarchical signalling of SBR (5) and PS (29): the SBR output
        // rate, then the core's object type.
        sampling_frequency(&mut r)?;
        core_type = object_type(&mut r)?;
        if core_type == 22 {
            channel_configuration_for_core = r.bits(4)?; // extensionChannelConfiguration
        }
    }

    let samples_per_frame = match core_type {
        // Object types whose specific config is GASpecificConfig (1.6.2.1, the switch on
        // audioObjectType).
        1 | 2 | 3 | 4 | 6 | 7 | 17 | 19 | 20 | 21 | 22 | 23 => {
            // 4.4.1 GASpecificConfig: frameLengthFlag selects 960 (or 480 for the low-delay
            // type 23) instead of 1024 (512) samples per frame.
            let short_frames = r.flag()?;
            if r.flag()? {
                r.bits(14)?; // dependsOnCoreCoder -> coreCoderDelay
            }
            r.skip(1)?; // extensionFlag
            match (core_type, short_frames) {
                (23, false) => 512,
                (23, true) => 480,
                (_, false) => 1024,
                (_, true) => 960,
            }
        }
        other => {
            return Err(MediaError::Invalid {
                what: WHAT,
                why: format!("audio object type {other} is not an AAC (GA) type"),
            });
        }
    };
    // What follows the PCE in GASpecificConfig (layerNr, error resilience flags) changes
    // neither the frame size nor the channel count.
    let channels = if channel_configuration_for_core == 0 {
        program_config_channels(&mut r)?
    } else {
        channels_for_configuration(channel_configuration_for_core)?
    };

    Ok(AudioParams {
        asc,
        // object types are at most 32 + 63 = 95, see `object_type`.
        object_type: signalled_type as u8,
        sample_rate,
        channels,
        samples_per_frame,
    })
}

/// One raw AAC-LC frame of silence for this stream, or `None` where only an
/// encoder could make one (HE-AAC's SBR data, a channel layout given by a
/// program_config_element).
///
/// 14496-3 4.4.2.1 raw_data_block: the elements of the channel configuration
/// (Table 1.19) in order, then ID_END and byte alignment. Each channel is an
/// individual_channel_stream with a long window and max_sfb 0: no section,
/// scale factor or spectral data, so every spectral line decodes to zero.
pub fn silent_frame(params: &AudioParams) -> Option<Bytes> {
    const SCE: u32 = 0;
    const CPE: u32 = 1;
    const LFE: u32 = 3;
    const END: u32 = 7;
    let mut r = BitReader::new(&params.asc, WHAT);
    if object_type(&mut r).ok()? != 2 {
        return None;
    }
    sampling_frequency(&mut r).ok()?;
    let elements: &[u32] = match r.bits(4).ok()? {
        1 => &[SCE],
        2 => &[CPE],
        3 => &[SCE, CPE],
        4 => &[SCE, CPE, SCE],
        5 => &[SCE, CPE, CPE],
        6 => &[SCE, CPE, CPE, LFE],
        7 => &[SCE, CPE, CPE, CPE, LFE],
        _ => return None,
    };
    let mut w = BitWriter::default();
    let mut tags = [0u32; 4];
    for &id in elements {
        w.put(3, id);
        // element_instance_tag counts elements of one kind (4.5.2.1).
        let tag = &mut tags[id as usize];
        w.put(4, *tag);
        *tag += 1;
        let channels = if id == CPE {
            w.put(1, 0); // common_window
            2
        } else {
            1
        };
        for _ in 0..channels {
            w.put(8, 100); // global_gain: scales nothing, any value will do
            // ics_info: reserved bit, ONLY_LONG_SEQUENCE, sine window,
            // max_sfb 0, no predictor.
            w.put(1 + 2 + 1 + 6 + 1, 0);
            // pulse, TNS and gain control data absent.
            w.put(3, 0);
        }
    }
    w.put(3, END);
    Some(Bytes::from(w.finish()))
}

/// Most-significant-bit-first writer for [`silent_frame`].
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn put(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (v >> i) & 1 == 1
                && let Some(last) = self.bytes.last_mut()
            {
                *last |= 0x80 >> (self.used % 8);
            }
            self.used += 1;
        }
    }

    /// byte_alignment(): the rest of the last byte stays zero.
    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// GetAudioObjectType(), 1.6.2.1: 5 bits, 31 escapes to 32 + 6 more bits.
fn object_type(r: &mut BitReader<'_>) -> Result<u32, MediaError> {
    let t = match r.bits(5)? {
        31 => 32 + r.bits(6)?,
        t => t,
    };
    if t == 0 {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: "audio object type 0 (null)".into(),
        });
    }
    Ok(t)
}

fn sampling_frequency(r: &mut BitReader<'_>) -> Result<u32, MediaError> {
    let index = r.bits(4)?;
    let hz = match index {
        0xf => r.bits(24)?,
        i => *SAMPLING_FREQUENCIES
            .get(i as usize)
            .ok_or_else(|| MediaError::Invalid {
                what: WHAT,
                why: format!("reserved samplingFrequencyIndex {i}"),
            })?,
    };
    if hz == 0 {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: "sampling frequency 0".into(),
        });
    }
    Ok(hz)
}

/// Channels per channelConfiguration, 14496-3 Table 1.19 (with the 2009 amendments for 11-14).
fn channels_for_configuration(config: u32) -> Result<u8, MediaError> {
    Ok(match config {
        1..=6 => config as u8,
        7 | 12 | 14 => 8,
        11 => 7,
        13 => 24,
        _ => {
            return Err(MediaError::Invalid {
                what: WHAT,
                why: format!("reserved channelConfiguration {config}"),
            });
        }
    })
}

/// Channel count from a program_config_element (14496-3 4.4.1.1, Table 4.2), which
/// GASpecificConfig carries when channelConfiguration is 0.
fn program_config_channels(r: &mut BitReader<'_>) -> Result<u8, MediaError> {
    r.bits(4 + 2 + 4)?; // element_instance_tag, object_type, sampling_frequency_index
    let front = r.bits(4)?;
    let side = r.bits(4)?;
    let back = r.bits(4)?;
    let lfe = r.bits(2)?;
    r.bits(3 + 4)?; // num_assoc_data_elements, num_valid_cc_elements
    for _ in 0..2 {
        // mono_mixdown, stereo_mixdown: present flag then element number
        if r.flag()? {
            r.bits(4)?;
        }
    }
    if r.flag()? {
        r.bits(2 + 1)?; // matrix_mixdown_idx, pseudo_surround_enable
    }
    let mut channels = lfe;
    for _ in 0..front + side + back {
        let is_cpe = r.flag()?;
        r.bits(4)?; // element tag
        channels += if is_cpe { 2 } else { 1 };
    }
    if channels == 0 {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: "program_config_element with no channels".into(),
        });
    }
    // At most 3 * 15 * 2 + 3 = 93 channels, see the field widths above.
    Ok(channels as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(fields: &[(u32, u32)]) -> Bytes {
        let mut bits = Vec::new();
        for &(n, v) in fields {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(false);
        }
        Bytes::from(
            bits.chunks(8)
                .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | u8::from(*b)))
                .collect::<Vec<u8>>(),
        )
    }

    fn parse(b: Bytes) -> AudioParams {
        parse_audio_specific_config(b).expect("valid AudioSpecificConfig")
    }

    #[test]
    fn ffmpeg_aac_lc() {
        // Bodies of the AAC sequence header tags written by FFmpeg 5.1.9's native aac encoder:
        //   ffmpeg -f lavfi -i sine=r=44100 -ac 2 -c:a aac -t 0.1 -f flv out.flv
        // (44.1 kHz stereo, with a backward-compatible 0x2b7 sync extension, SBR absent)
        let p = parse(Bytes::from_static(&[0x12, 0x10, 0x56, 0xe5, 0x00]));
        assert_eq!(
            (
                p.object_type,
                p.sample_rate,
                p.channels,
                p.samples_per_frame
            ),
            (2, 44100, 2, 1024)
        );
        assert_eq!(p.codec_string(), "mp4a.40.2");
        assert_eq!(&p.asc[..], &[0x12, 0x10, 0x56, 0xe5, 0x00], "kept verbatim");
        //   ffmpeg -f lavfi -i sine=r=48000 -ac 1 -c:a aac -t 0.1 -f flv out.flv
        let p = parse(Bytes::from_static(&[0x11, 0x88, 0x56, 0xe5, 0x00]));
        assert_eq!((p.sample_rate, p.channels), (48000, 1));
    }

    #[test]
    fn short_frames_and_explicit_frequency() {
        // AAC-LC, explicit 44056 Hz, 5.1, frameLengthFlag = 1.
        let p = parse(bits(&[
            (5, 2),
            (4, 0xf),
            (24, 44056),
            (4, 6),
            (1, 1),
            (1, 0),
            (1, 0),
        ]));
        assert_eq!(
            (p.sample_rate, p.channels, p.samples_per_frame),
            (44056, 6, 960)
        );
        // dependsOnCoreCoder with its 14-bit delay.
        let p = parse(bits(&[
            (5, 2),
            (4, 3),
            (4, 7),
            (1, 0),
            (1, 1),
            (14, 77),
            (1, 0),
        ]));
        assert_eq!((p.sample_rate, p.channels), (48000, 8));
    }

    #[test]
    fn explicit_he_aac_v1_and_v2() {
        // HE-AAC: SBR at 48 kHz over a 24 kHz AAC-LC core.
        let p = parse(bits(&[(5, 5), (4, 6), (4, 2), (4, 3), (5, 2), (3, 0)]));
        assert_eq!(
            (
                p.object_type,
                p.sample_rate,
                p.channels,
                p.samples_per_frame
            ),
            (5, 24000, 2, 1024)
        );
        assert_eq!(p.codec_string(), "mp4a.40.5");
        let p = parse(bits(&[(5, 29), (4, 6), (4, 1), (4, 3), (5, 2), (3, 0)]));
        assert_eq!((p.object_type, p.channels), (29, 1));
    }

    #[test]
    fn escaped_object_type() {
        // 31 + 6 bits: 32 + 4 = 36 (ALS), which is not AAC.
        let err = parse_audio_specific_config(bits(&[(5, 31), (6, 4), (4, 4), (4, 2), (3, 0)]))
            .expect_err("ALS is not AAC");
        assert!(err.to_string().contains("36"), "{err}");
        // Low-delay AAC (23) through the same path, 480-sample frames.
        let p = parse(bits(&[(5, 23), (4, 3), (4, 1), (1, 1), (1, 0), (1, 0)]));
        assert_eq!((p.object_type, p.samples_per_frame), (23, 480));
    }

    #[test]
    fn program_config_element_channels() {
        // channelConfiguration 0: PCE with front SCE + CPE, back CPE, one LFE = 6 channels.
        let p = parse(bits(&[
            (5, 2),
            (4, 4),
            (4, 0),
            (3, 0), // GASpecificConfig flags
            (4, 0),
            (2, 1),
            (4, 4), // tag, profile, sf index
            (4, 2),
            (4, 0),
            (4, 1),
            (2, 1), // front, side, back, lfe
            (3, 0),
            (4, 0),
            (1, 0),
            (1, 0),
            (1, 0), // assoc, cc, mixdowns
            (1, 0),
            (4, 0),
            (1, 1),
            (4, 1), // front: SCE, CPE
            (1, 1),
            (4, 2), // back: CPE
            (4, 0), // LFE tag (not counted through the loop above)
        ]));
        assert_eq!(p.channels, 6);
    }

    #[test]
    fn rejects_bad_configs() {
        let cases = [
            bits(&[(5, 0), (4, 4), (4, 2), (3, 0)]),  // null object type
            bits(&[(5, 2), (4, 13), (4, 2), (3, 0)]), // reserved frequency index
            bits(&[(5, 2), (4, 15), (24, 0), (4, 2), (3, 0)]), // 0 Hz
            bits(&[(5, 2), (4, 4), (4, 9), (3, 0)]),  // reserved channel configuration
            Bytes::new(),
            Bytes::from_static(&[0x12]),
        ];
        for c in cases {
            assert!(parse_audio_specific_config(c.clone()).is_err(), "{c:?}");
        }
        assert!(matches!(
            parse_audio_specific_config(Bytes::from_static(&[0x12])),
            Err(MediaError::Truncated { .. })
        ));
    }

    /// FFmpeg's AAC decoder turns the frame into 1024 zero samples on every
    /// channel of every configuration it is made for.
    #[test]
    fn silent_frames_decode_to_silence() {
        use ffmpeg_next as ffmpeg;
        crate::av::init();
        for config in 1..=7u32 {
            // AAC-LC, 48 kHz (index 3), 1024-sample frames.
            let asc = bits(&[(5, 2), (4, 3), (4, config), (1, 0), (1, 0), (1, 0)]);
            let params = parse(asc.clone());
            let frame = silent_frame(&params).expect("an AAC-LC configuration");
            let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::AAC).unwrap();
            let mut ctx = ffmpeg::codec::Context::new_with_codec(codec);
            // SAFETY: an av_mallocz'd, padded copy the context owns from here;
            // the context is not open yet.
            unsafe {
                let pad = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
                let buf = ffmpeg::ffi::av_mallocz(asc.len() + pad).cast::<u8>();
                assert!(!buf.is_null());
                std::ptr::copy_nonoverlapping(asc.as_ptr(), buf, asc.len());
                (*ctx.as_mut_ptr()).extradata = buf;
                (*ctx.as_mut_ptr()).extradata_size = asc.len() as i32;
            }
            let mut dec = ctx.decoder().open_as(codec).unwrap().audio().unwrap();
            let mut decoded = 0;
            let mut pcm = ffmpeg::frame::Audio::empty();
            for _ in 0..3 {
                dec.send_packet(&ffmpeg::Packet::copy(&frame)).unwrap();
                while dec.receive_frame(&mut pcm).is_ok() {
                    assert_eq!(pcm.samples(), 1024, "config {config}");
                    assert_eq!(
                        pcm.channels(),
                        u16::from(params.channels),
                        "config {config}"
                    );
                    for ch in 0..usize::from(params.channels) {
                        assert!(
                            pcm.plane::<f32>(ch).iter().all(|&x| x == 0.0),
                            "config {config} channel {ch} is not silent"
                        );
                    }
                    decoded += 1;
                }
            }
            assert!(decoded >= 2, "config {config}: {decoded} frames decoded");
        }
    }

    #[test]
    fn no_silent_frame_without_an_aac_lc_channel_configuration() {
        // HE-AAC (explicit SBR, 5), and AAC-LC with a PCE (configuration 0).
        let he = parse(bits(&[
            (5, 5),
            (4, 6),
            (4, 2),
            (4, 3),
            (5, 2),
            (1, 0),
            (1, 0),
            (1, 0),
        ]));
        assert_eq!(silent_frame(&he), None);
        let pce = parse(bits(&[
            (5, 2),
            (4, 3),
            (4, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            // program_config_element: tag, profile, sf index, one front SCE.
            (4, 0),
            (2, 1),
            (4, 3),
            (4, 1),
            (4, 0),
            (4, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            (4, 0),
            (8, 0),
        ]));
        assert_eq!(silent_frame(&pce), None);
    }
}
