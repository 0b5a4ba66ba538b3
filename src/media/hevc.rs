//! H.265 helpers: HEVCDecoderConfigurationRecord and SPS parsing, and the `hvc1` codec string.
//! Pure functions over bytes; they never allocate more than the input size.

use super::h264::{BitReader, ByteReader, invalid, remove_emulation_prevention};
use super::{MediaError, VideoCodec, VideoParams};
use bytes::Bytes;

/// NAL unit type of a sequence parameter set (ITU-T H.265 Table 7-1).
const NAL_SPS: u8 = 33;

/// The general profile, tier and level of an HEVC stream (ITU-T H.265 7.3.3), as the
/// `hvcC` record repeats them: what its codec string is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HevcProfile {
    pub profile_space: u8,
    pub high_tier: bool,
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, flag 0 in the most significant bit.
    pub compatibility: u32,
    /// The 48 bits from `general_progressive_source_flag` on.
    pub constraints: [u8; 6],
    pub level_idc: u8,
    /// `bitDepthLumaMinus8 + 8` from the record.
    pub bit_depth: u8,
}

impl HevcProfile {
    /// ISO/IEC 14496-15 Annex E.3: `hvc1.` then the profile space as a letter (none for 0)
    /// and `general_profile_idc` in decimal; "the 32 bits of the
    /// general_profile_compatibility_flags, but in reverse bit order" in hex without leading
    /// zeros; `L` or `H` for the tier and `general_level_idc` in decimal; then each of the six
    /// constraint bytes in hex, "trailing bytes that are zero may be omitted".
    pub fn codec_string(&self) -> String {
        let space = match self.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility.reverse_bits(),
            if self.high_tier { 'H' } else { 'L' },
            self.level_idc
        );
        let used = self
            .constraints
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.constraints[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }
}

/// Parses an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) as carried in an
/// Enhanced RTMP `hvc1` sequence start. Profile, tier and level come from the record (the
/// codec string); width and height from its first SPS.
pub fn parse_hevc_config(record: Bytes) -> Result<VideoParams, MediaError> {
    const WHAT: &str = "HEVCDecoderConfigurationRecord";
    let mut r = ByteReader::new(&record, WHAT);
    let version = r.u8()?;
    // 8.3.3.1.2: "Readers shall not attempt to decode this configuration record or the
    // streams to which it applies if the version number is unrecognised."
    if version != 1 {
        return Err(invalid(
            WHAT,
            format!("configurationVersion {version}, expected 1"),
        ));
    }
    let ptl = r.u8()?;
    let compat = r.take(4)?;
    let mut constraints = [0u8; 6];
    constraints.copy_from_slice(r.take(6)?);
    let level_idc = r.u8()?;
    // min_spatial_segmentation_idc (2), parallelismType, chromaFormat (1 each).
    r.take(4)?;
    let bit_depth = (r.u8()? & 0b111) + 8;
    // bitDepthChromaMinus8, avgFrameRate.
    r.take(3)?;
    let nal_length_size = (r.u8()? & 0b11) + 1;
    // 8.3.3.1.2: lengthSizeMinusOne "shall be one of 0, 1, or 3".
    if nal_length_size == 3 {
        return Err(invalid(WHAT, "lengthSizeMinusOne 2 is not allowed".into()));
    }
    let profile = HevcProfile {
        profile_space: ptl >> 6,
        high_tier: ptl & 0x20 != 0,
        profile_idc: ptl & 0x1f,
        compatibility: u32::from_be_bytes([compat[0], compat[1], compat[2], compat[3]]),
        constraints,
        level_idc,
        bit_depth,
    };
    let mut dims = None;
    for _ in 0..r.u8()? {
        let nal_type = r.u8()? & 0x3f;
        for _ in 0..r.u16()? {
            let len = usize::from(r.u16()?);
            let nal = r.take(len)?;
            if nal_type == NAL_SPS && dims.is_none() {
                dims = Some(parse_sps(nal)?);
            }
        }
    }
    let (width, height) = dims.ok_or_else(|| invalid(WHAT, "no sequence parameter set".into()))?;
    Ok(VideoParams {
        codec: VideoCodec::Hevc(profile),
        avcc: record,
        width,
        height,
        profile_idc: profile.profile_idc,
        constraint_flags: 0,
        level_idc,
        nal_length_size,
    })
}

/// Picture size after the conformance window, from an SPS NAL unit (two-byte NAL header,
/// emulation prevention bytes still in), ITU-T H.265 7.3.2.2.1.
pub fn parse_sps(nal: &[u8]) -> Result<(u32, u32), MediaError> {
    const WHAT: &str = "HEVC SPS";
    if nal.len() < 2 {
        return Err(MediaError::Truncated {
            what: WHAT,
            need: 2,
            have: nal.len(),
        });
    }
    let rbsp = remove_emulation_prevention(&nal[2..]);
    let mut r = BitReader::new(&rbsp, WHAT);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3: 88 bits of general profile
    // and 8 of general_level_idc, then per sub-layer presence flags padded to 8 entries.
    r.skip(96)?;
    let mut present = Vec::with_capacity(max_sub_layers_minus1 as usize);
    for _ in 0..max_sub_layers_minus1 {
        present.push((r.flag()?, r.flag()?));
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for (profile, level) in present {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(invalid(
            WHAT,
            format!("chroma_format_idc {chroma_format_idc}"),
        ));
    }
    let separate_colour_planes = chroma_format_idc == 3 && r.flag()?;
    let width = r.ue()?;
    let height = r.ue()?;
    if width == 0 || height == 0 {
        return Err(invalid(WHAT, format!("picture size {width}x{height}")));
    }
    if !r.flag()? {
        return Ok((width, height));
    }
    // Table 6-1: SubWidthC/SubHeightC; ChromaArrayType 0 (monochrome or separate planes)
    // crops in luma samples.
    let (sub_w, sub_h): (u64, u64) = match (chroma_format_idc, separate_colour_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    let crop_w = sub_w * (u64::from(left) + u64::from(right));
    let crop_h = sub_h * (u64::from(top) + u64::from(bottom));
    if crop_w >= u64::from(width) || crop_h >= u64::from(height) {
        return Err(invalid(
            WHAT,
            format!("conformance window crops {crop_w}x{crop_h} off {width}x{height}"),
        ));
    }
    // Both crops are below the u32 picture size, so these fit.
    Ok((width - crop_w as u32, height - crop_h as u32))
}

/// ITU-T H.265 Annex A `general_profile_idc`.
pub fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => "Range Extensions",
        _ => "unknown",
    }
}

/// `general_level_idc` is thirty times the level (Annex A).
pub fn level_name(level_idc: u8) -> String {
    let tenths = u32::from(level_idc) / 3;
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_for_an_operator() {
        assert_eq!(profile_name(2), "Main 10");
        assert_eq!(level_name(93), "3.1");
        assert_eq!(level_name(120), "4.0");
    }

    // hvcC of one frame of `testsrc2` written by FFmpeg 5.1.9 (Debian 12) with libx265 3.5,
    // `-c:v libx265 -frames:v 1 -tag:v hvc1 out.mp4`, its SEI array (x265's banner) cut and
    // numOfArrays set to 3. ffprobe: "Main", level 60.
    pub(crate) const X265_MAIN_320X180: &str = "0101600000009000000000003cf000fcfdf8f800000f03\
        a00001001840010c01ffff01600000030090000003000003003c959809\
        a10001002b42010101600000030090000003000003003ca00a080b9f796566924caf016808000003000800000300f040\
        a2000100074401c172b46240";
    // The same with `-pix_fmt yuv420p10le` at 322x182: "Main 10", cropped from 328x184.
    const X265_MAIN10_322X182: &str = "0102200000009000000000003cf000fcfdfafa00000f03\
        a00001001840010c01ffff02200000030090000003000003003c959809\
        a10001002c42010102200000030090000003000003003ca00a480b9c94d96566924caf016808000003000800000300f040\
        a2000100074401c172b46240";

    pub(crate) fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn x265_main_and_main10() {
        let p = parse_hevc_config(hex(X265_MAIN_320X180)).expect("main");
        assert_eq!((p.width, p.height, p.nal_length_size), (320, 180, 4));
        // Apple's HLS authoring spec writes x265-style Main as `hvc1.1.6.L<level>.90`.
        assert_eq!(p.codec_string(), "hvc1.1.6.L60.90");
        let p = parse_hevc_config(hex(X265_MAIN10_322X182)).expect("main 10");
        assert_eq!((p.width, p.height), (322, 182));
        assert_eq!(p.codec_string(), "hvc1.2.4.L60.90");
        assert!(matches!(p.codec, VideoCodec::Hevc(h) if h.bit_depth == 10));
    }

    #[test]
    fn codec_string_profile_space_tier_and_constraints() {
        let p = HevcProfile {
            profile_space: 1,
            high_tier: true,
            profile_idc: 4,
            compatibility: 0x0800_0000,
            constraints: [0xb0, 0, 0, 0, 0, 0x01],
            level_idc: 186,
            bit_depth: 10,
        };
        assert_eq!(p.codec_string(), "hvc1.A4.10.H186.B0.0.0.0.0.1");
        let p = HevcProfile {
            constraints: [0; 6],
            ..p
        };
        assert_eq!(p.codec_string(), "hvc1.A4.10.H186");
    }

    #[test]
    fn rejects_bad_records() {
        let good = hex(X265_MAIN_320X180);
        for cut in [0, 1, 12, 22, 23, 40, good.len() - 1] {
            assert!(
                matches!(
                    parse_hevc_config(good.slice(..cut)),
                    Err(MediaError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut v = good.to_vec();
        v[0] = 0;
        assert!(matches!(
            parse_hevc_config(Bytes::from(v)),
            Err(MediaError::Invalid { .. })
        ));
        // No arrays: no SPS.
        let mut v = good[..23].to_vec();
        v[22] = 0;
        assert!(matches!(
            parse_hevc_config(Bytes::from(v)),
            Err(MediaError::Invalid { .. })
        ));
        let mut v = good.to_vec();
        v[21] = (v[21] & !0b11) | 2;
        assert!(matches!(
            parse_hevc_config(Bytes::from(v)),
            Err(MediaError::Invalid { .. })
        ));
    }
}
