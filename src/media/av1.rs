//! AV1 helpers: AV1CodecConfigurationRecord and sequence header OBU parsing, and the `av01`
//! codec string. Pure functions over bytes.

use super::h264::{BitReader, invalid};
use super::{MediaError, VideoCodec, VideoParams};
use bytes::Bytes;

/// OBU_SEQUENCE_HEADER (AV1 spec 6.2.2, Table obu_type).
const OBU_SEQUENCE_HEADER: u32 = 1;

/// What the `av01` codec string is made of, from the `av1C` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Av1Profile {
    pub profile: u8,
    pub level_idx: u8,
    pub high_tier: bool,
    pub bit_depth: u8,
}

impl Av1Profile {
    /// AV1 ISOBMFF binding, "Codecs Parameter String": `av01.P.LLT.DD`, the level as two
    /// digits, `M` or `H` for the tier, the bit depth as two digits; the optional fields after
    /// them "may be omitted" when they are the defaults, and are.
    pub fn codec_string(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.profile,
            self.level_idx,
            if self.high_tier { 'H' } else { 'M' },
            self.bit_depth
        )
    }
}

/// Parses an AV1CodecConfigurationRecord (AV1 ISOBMFF binding 2.3.3) as carried in an
/// Enhanced RTMP `av01` sequence start. The codec string comes from the record; width and
/// height from the sequence header OBU in its configOBUs, which the binding requires.
pub fn parse_av1_config(record: Bytes) -> Result<VideoParams, MediaError> {
    const WHAT: &str = "AV1CodecConfigurationRecord";
    if record.len() < 4 {
        return Err(MediaError::Truncated {
            what: WHAT,
            need: 4,
            have: record.len(),
        });
    }
    // 2.3.3: "marker shall be set to 1", "version shall be set to 1".
    if record[0] != 0x81 {
        return Err(invalid(
            WHAT,
            format!("marker/version byte {:#04x}, expected 0x81", record[0]),
        ));
    }
    let profile = record[1] >> 5;
    let level_idx = record[1] & 0x1f;
    let flags = record[2];
    let high_bitdepth = flags & 0x40 != 0;
    let twelve_bit = flags & 0x20 != 0;
    let av1 = Av1Profile {
        profile,
        level_idx,
        high_tier: flags & 0x80 != 0,
        bit_depth: match (high_bitdepth, twelve_bit) {
            (false, _) => 8,
            (true, false) => 10,
            (true, true) => 12,
        },
    };
    let (width, height) = sequence_header_size(&record[4..])?;
    Ok(VideoParams {
        codec: VideoCodec::Av1(av1),
        avcc: record,
        width,
        height,
        profile_idc: profile,
        constraint_flags: 0,
        level_idc: level_idx,
        nal_length_size: 0,
    })
}

/// Finds the sequence header among OBUs (each with its size field, as 2.3.3 requires of
/// configOBUs) and reads the maximum frame size from it.
fn sequence_header_size(mut obus: &[u8]) -> Result<(u32, u32), MediaError> {
    const WHAT: &str = "av1C configOBUs";
    while !obus.is_empty() {
        let mut r = BitReader::new(obus, WHAT);
        r.skip(1)?; // obu_forbidden_bit
        let obu_type = r.bits(4)?;
        let extension = r.flag()?;
        let has_size = r.flag()?;
        r.skip(1)?;
        if extension {
            r.skip(8)?;
        }
        if !has_size {
            return Err(invalid(WHAT, "OBU without obu_size".into()));
        }
        let header = if extension { 2 } else { 1 };
        let (size, leb_len) = leb128(obus.get(header..).unwrap_or_default(), WHAT)?;
        let start = header + leb_len;
        let end = start.saturating_add(size);
        let payload = obus.get(start..end).ok_or(MediaError::Truncated {
            what: WHAT,
            need: end,
            have: obus.len(),
        })?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return frame_size(payload);
        }
        obus = &obus[end..];
    }
    Err(invalid(WHAT, "no sequence header OBU".into()))
}

/// leb128() (AV1 spec 4.10.5): at most 8 bytes, value below 2^32.
fn leb128(data: &[u8], what: &'static str) -> Result<(usize, usize), MediaError> {
    let mut value: u64 = 0;
    for i in 0..8 {
        let byte = *data.get(i).ok_or(MediaError::Truncated {
            what,
            need: i + 1,
            have: data.len(),
        })?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = usize::try_from(value)
                .ok()
                .filter(|v| *v <= u32::MAX as usize)
                .ok_or_else(|| invalid(what, format!("leb128 value {value}")))?;
            return Ok((value, i + 1));
        }
    }
    Err(invalid(what, "leb128 longer than 8 bytes".into()))
}

/// sequence_header_obu() (AV1 spec 5.5.1) up to max_frame_height_minus_1.
fn frame_size(payload: &[u8]) -> Result<(u32, u32), MediaError> {
    const WHAT: &str = "AV1 sequence header";
    let mut r = BitReader::new(payload, WHAT);
    r.skip(4)?; // seq_profile, still_picture
    let reduced_still_picture_header = r.flag()?;
    if reduced_still_picture_header {
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut buffer_delay_length = 0;
        let timing_info_present = r.flag()?;
        let mut decoder_model_info_present = false;
        if timing_info_present {
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.flag()? {
                uvlc(&mut r)?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay_present = r.flag()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info_present && r.flag()? {
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay_present && r.flag()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    let fit = |v: u64| u32::try_from(v).map_err(|_| invalid(WHAT, format!("frame size {v}")));
    Ok((fit(width)?, fit(height)?))
}

/// uvlc() (AV1 spec 4.10.3).
fn uvlc(r: &mut BitReader<'_>) -> Result<u32, MediaError> {
    let mut leading_zeros = 0;
    while !r.flag()? {
        leading_zeros += 1;
        if leading_zeros >= 32 {
            return Ok(u32::MAX);
        }
    }
    Ok(r.bits(leading_zeros)?
        .saturating_add((1 << leading_zeros) - 1))
}

/// AV1 `seq_profile` (spec 6.4.1).
pub fn profile_name(seq_profile: u8) -> &'static str {
    match seq_profile {
        0 => "Main",
        1 => "High",
        2 => "Professional",
        _ => "unknown",
    }
}

/// `seq_level_idx` counts levels from 2.0, four minor levels each (annex A.3).
pub fn level_name(seq_level_idx: u8) -> String {
    format!("{}.{}", 2 + seq_level_idx / 4, seq_level_idx % 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_an_operator() {
        assert_eq!(profile_name(0), "Main");
        assert_eq!(level_name(8), "4.0");
        assert_eq!(level_name(5), "3.1");
    }

    fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
                .collect::<Vec<u8>>(),
        )
    }

    // av1C of one frame of `testsrc2` written by FFmpeg 5.1.9 (Debian 12) with SVT-AV1 1.4.1,
    // `-c:v libsvtav1 -preset 12 -frames:v 1 out.mp4`; ffprobe: profile "Main".
    const SVT_320X180: &str = "81000c000a0b000000043cfecc02f80040";
    // The same with `-pix_fmt yuv420p10le` at 322x182.
    const SVT_10BIT_322X182: &str = "81004c000a0b000000043d06d402f84040";

    #[test]
    fn svt_av1_8_and_10_bit() {
        let p = parse_av1_config(hex(SVT_320X180)).expect("8-bit");
        assert_eq!((p.width, p.height), (320, 180));
        assert_eq!(p.codec_string(), "av01.0.00M.08");
        let p = parse_av1_config(hex(SVT_10BIT_322X182)).expect("10-bit");
        assert_eq!((p.width, p.height), (322, 182));
        assert_eq!(p.codec_string(), "av01.0.00M.10");
    }

    #[test]
    fn codec_string_level_and_tier() {
        let p = Av1Profile {
            profile: 1,
            level_idx: 13,
            high_tier: true,
            bit_depth: 12,
        };
        assert_eq!(p.codec_string(), "av01.1.13H.12");
    }

    #[test]
    fn rejects_bad_records() {
        let good = hex(SVT_320X180);
        for cut in [0, 3, 5, 10, good.len() - 1] {
            assert!(
                matches!(
                    parse_av1_config(good.slice(..cut)),
                    Err(MediaError::Truncated { .. } | MediaError::Invalid { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut v = good.to_vec();
        v[0] = 0x01;
        assert!(matches!(
            parse_av1_config(Bytes::from(v)),
            Err(MediaError::Invalid { .. })
        ));
        // A record without configOBUs has no frame size to give.
        assert!(matches!(
            parse_av1_config(good.slice(..4)),
            Err(MediaError::Invalid { .. })
        ));
        // A padding OBU (type 15) only.
        assert!(matches!(
            parse_av1_config(hex("81000c00 7a0100".replace(' ', "").as_str())),
            Err(MediaError::Invalid { .. })
        ));
    }
}
