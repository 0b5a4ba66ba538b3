//! H.264 helpers: AVCDecoderConfigurationRecord and SPS parsing, and the length-prefixed
//! sample check. Pure functions over bytes; they never allocate more than the input size.

use super::{MediaError, VideoParams};
use bytes::Bytes;

/// NAL unit type of a sequence parameter set (ITU-T H.264 Table 7-1).
const NAL_SPS: u8 = 7;

/// Parses an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) as carried in an FLV
/// AVC sequence header. Profile, compatibility and level come from the record (they are what
/// goes into the `avc1.PPCCLL` codec string); width and height come from its first SPS.
pub fn parse_avc_config(record: Bytes) -> Result<VideoParams, MediaError> {
    const WHAT: &str = "AVCDecoderConfigurationRecord";
    let mut r = ByteReader::new(&record, WHAT);
    let version = r.u8()?;
    // 14496-15 5.3.3.1.2: configurationVersion is 1; a reader must not parse a record whose
    // version it does not know.
    if version != 1 {
        return Err(invalid(
            WHAT,
            format!("configurationVersion {version}, expected 1"),
        ));
    }
    let profile_idc = r.u8()?;
    let constraint_flags = r.u8()?;
    let level_idc = r.u8()?;
    // 6 reserved bits then lengthSizeMinusOne. The reserved bits are not checked: some
    // encoders write them as zeros.
    let nal_length_size = (r.u8()? & 0b11) + 1;
    // 14496-15 5.3.3.1.2: "The value of this field shall be one of 0, 1, or 3".
    if nal_length_size == 3 {
        return Err(invalid(WHAT, "lengthSizeMinusOne 2 is not allowed".into()));
    }
    let num_sps = r.u8()? & 0b1_1111;
    if num_sps == 0 {
        return Err(invalid(WHAT, "no sequence parameter set".into()));
    }
    let sps_len = usize::from(r.u16()?);
    let dims = parse_sps(r.take(sps_len)?)?;
    for _ in 1..num_sps {
        let len = usize::from(r.u16()?);
        r.take(len)?;
    }
    // The parameter sets are only walked so that a cut record is refused here rather than by
    // a decoder later: the avcC box carries them verbatim. The high-profile extension after
    // them is optional in practice (older writers omit it) and not read.
    let num_pps = r.u8()?;
    if num_pps == 0 {
        return Err(invalid(WHAT, "no picture parameter set".into()));
    }
    for _ in 0..num_pps {
        let len = usize::from(r.u16()?);
        r.take(len)?;
    }
    Ok(VideoParams {
        codec: super::VideoCodec::Avc,
        avcc: record,
        width: dims.width,
        height: dims.height,
        profile_idc,
        constraint_flags,
        level_idc,
        nal_length_size,
    })
}

/// Picture size from a sequence parameter set, after frame cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpsDims {
    pub width: u32,
    pub height: u32,
}

/// Parses the fields of a sequence parameter set NAL unit (with its one-byte NAL header,
/// emulation prevention bytes still in) up to frame cropping (ITU-T H.264 7.3.2.1.1).
pub fn parse_sps(nal: &[u8]) -> Result<SpsDims, MediaError> {
    const WHAT: &str = "SPS";
    let header = *nal.first().ok_or(MediaError::Truncated {
        what: WHAT,
        need: 1,
        have: 0,
    })?;
    if header & 0x1f != NAL_SPS {
        return Err(invalid(
            WHAT,
            format!("NAL unit type {}, expected 7", header & 0x1f),
        ));
    }
    let rbsp = remove_emulation_prevention(nal.get(1..).unwrap_or_default());
    let mut r = BitReader::new(&rbsp, WHAT);

    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint_set flags, reserved_zero_2bits, level_idc
    let _sps_id = r.ue_max(31, "seq_parameter_set_id")?;

    // 7.4.2.1.1: "When chroma_format_idc is not present, it shall be inferred to be equal to
    // 1 (4:2:0 chroma format)."
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        r.ue_max(6, "bit_depth_luma_minus8")?;
        r.ue_max(6, "bit_depth_chroma_minus8")?;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    r.ue_max(12, "log2_max_frame_num_minus4")?;
    match r.ue_max(2, "pic_order_cnt_type")? {
        0 => {
            r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..cycle {
                r.se()?; // offset_for_ref_frame
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag

    // 7.4.2.1.1, equations 7-18 and 7-19: a field-coded stream counts map units per field.
    let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
    let coded_width = width_mbs * 16;
    let coded_height = height_map_units * 16 * field_factor;

    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.flag()? {
        // frame_cropping_flag. Offsets are in crop units (equations 7-19 to 7-22), which
        // depend on ChromaArrayType: 0 when colour planes are coded separately.
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let left = u64::from(r.ue()?);
        let right = u64::from(r.ue()?);
        let top = u64::from(r.ue()?);
        let bottom = u64::from(r.ue()?);
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    // 7.4.2.1.1: the cropping rectangle must lie inside the coded frame.
    let width = coded_width
        .checked_sub(crop_x)
        .filter(|w| *w > 0)
        .ok_or_else(|| invalid(WHAT, format!("crop {crop_x} >= coded width {coded_width}")))?;
    let height = coded_height
        .checked_sub(crop_y)
        .filter(|h| *h > 0)
        .ok_or_else(|| {
            invalid(
                WHAT,
                format!("crop {crop_y} >= coded height {coded_height}"),
            )
        })?;
    let to_u32 = |v: u64| {
        u32::try_from(v).map_err(|_| invalid(WHAT, format!("picture dimension {v} too large")))
    };
    Ok(SpsDims {
        width: to_u32(width)?,
        height: to_u32(height)?,
    })
}

/// Checks that a sample is a sequence of NAL units each prefixed by a big-endian length of
/// `nal_length_size` bytes that exactly tile the payload (ISO/IEC 14496-15 5.3.2), and returns
/// how many there are. Catches publishers that send Annex B start codes in FLV.
pub fn count_length_prefixed_nals(data: &[u8], nal_length_size: u8) -> Result<usize, MediaError> {
    const WHAT: &str = "AVC sample";
    let size = usize::from(nal_length_size);
    if !matches!(size, 1 | 2 | 4) {
        return Err(invalid(WHAT, format!("NAL length size {size}")));
    }
    let mut pos = 0usize;
    let mut count = 0usize;
    while pos < data.len() {
        let prefix = data.get(pos..pos + size).ok_or(MediaError::Truncated {
            what: WHAT,
            need: pos + size,
            have: data.len(),
        })?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += size;
        let end = pos
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or(MediaError::Truncated {
                what: WHAT,
                need: pos.saturating_add(len),
                have: data.len(),
            })?;
        if len == 0 {
            return Err(invalid(
                WHAT,
                format!("empty NAL unit at byte {}", pos - size),
            ));
        }
        pos = end;
        count += 1;
    }
    Ok(count)
}

/// 7.3.2.1.1.1 scaling_list(): only the syntax is walked, the values are not needed.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), MediaError> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.se()?;
            // 7.4.2.1.1.1: delta_scale shall be in the range of -128 to +127.
            if !(-128..=127).contains(&delta) {
                return Err(invalid("SPS", format!("delta_scale {delta}")));
            }
            next_scale = (last_scale + delta + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Turns a NAL unit payload into its RBSP by dropping each emulation_prevention_three_byte,
/// the 0x03 in a 0x00 0x00 0x03 sequence (7.4.1).
pub(crate) fn remove_emulation_prevention(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

pub(crate) fn invalid(what: &'static str, why: String) -> MediaError {
    MediaError::Invalid { what, why }
}

/// Big-endian byte cursor for container records.
pub(crate) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        ByteReader { data, pos: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MediaError> {
        let end = self.pos.saturating_add(n);
        let out = self.data.get(self.pos..end).ok_or(MediaError::Truncated {
            what: self.what,
            need: end,
            have: self.data.len(),
        })?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MediaError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, MediaError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// MSB-first bit reader with Exp-Golomb codes (ITU-T H.264 9.1), over an RBSP.
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader { data, pos: 0, what }
    }

    fn truncated(&self, bits_needed: usize) -> MediaError {
        MediaError::Truncated {
            what: self.what,
            need: (self.pos + bits_needed).div_ceil(8),
            have: self.data.len(),
        }
    }

    pub fn flag(&mut self) -> Result<bool, MediaError> {
        let byte = *self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| self.truncated(1))?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` <= 32 bits as an unsigned number.
    pub fn bits(&mut self, n: u32) -> Result<u32, MediaError> {
        debug_assert!(n <= 32, "bits() reads at most 32 bits");
        if self.pos + n as usize > self.data.len() * 8 {
            return Err(self.truncated(n as usize));
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.flag()?);
        }
        // At most 32 bits were shifted in, so this cannot truncate.
        Ok(v as u32)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), MediaError> {
        if self.pos + n > self.data.len() * 8 {
            return Err(self.truncated(n));
        }
        self.pos += n;
        Ok(())
    }

    /// ue(v), 9.1. Values above 2^32 - 1 do not occur in a valid stream (every ue(v) syntax
    /// element fits in 32 bits) and are reported as invalid.
    pub fn ue(&mut self) -> Result<u32, MediaError> {
        let mut leading_zeros = 0u32;
        while !self.flag()? {
            leading_zeros += 1;
            if leading_zeros > 32 {
                return Err(invalid(
                    self.what,
                    "Exp-Golomb code longer than 32 bits".into(),
                ));
            }
        }
        let suffix = u64::from(self.bits(leading_zeros)?);
        let v = (1u64 << leading_zeros) - 1 + suffix;
        u32::try_from(v).map_err(|_| invalid(self.what, format!("Exp-Golomb value {v}")))
    }

    /// se(v), 9.1.1: 1, 2, 3, 4 ... map to 1, -1, 2, -2 ...
    pub fn se(&mut self) -> Result<i64, MediaError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// ue(v) with the range the spec gives for the element.
    fn ue_max(&mut self, max: u32, element: &str) -> Result<u32, MediaError> {
        let v = self.ue()?;
        if v > max {
            return Err(invalid(self.what, format!("{element} {v} > {max}")));
        }
        Ok(v)
    }
}

/// ITU-T H.264 Annex A profile names by `profile_idc`.
pub fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        44 => "CAVLC 4:4:4 Intra",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        83 | 86 => "Scalable",
        118 | 128 | 134 | 135 | 138 | 139 => "Multiview",
        _ => "unknown",
    }
}

/// `level_idc` is ten times the level (Annex A), 9 being level 1b.
pub fn level_name(level_idc: u8) -> String {
    match level_idc {
        9 => "1b".to_string(),
        l => format!("{}.{}", l / 10, l % 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_an_operator() {
        assert_eq!(profile_name(100), "High");
        assert_eq!(level_name(31), "3.1");
        assert_eq!(level_name(9), "1b");
    }

    // Each record is the body of the first AVC sequence header tag (after the 5-byte FLV
    // video tag header) written by FFmpeg 5.1.9 (Debian 12) with libx264 for one frame of
    // `testsrc2`, extracted from the FLV file:
    //   ffmpeg -f lavfi -i testsrc2=size=WxH:rate=30 [OPTS] -c:v libx264 -preset veryfast \
    //     -frames:v 1 -f flv out.flv
    const X264_720P: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000468ef8fcbfdf8f800";
    const X264_1080P: &str = "01640028ffe1001b67640028acd940780227e5c044000003000400000300f03c60c65801000468ef8fcbfdf8f800";
    const X264_1366X768: &str = "01640020ffe1001b67640020acd94056061e6f0110000003001000000303c0f183196001000468ef8fcbfdf8f800";
    // OPTS: -profile:v baseline, 854x480.
    const X264_BASELINE_480P: &str =
        "0142c01fffe100196742c01fda0360f79bc044000003000400000300f03c60ca8001000468ce0fc8";
    // OPTS: -flags +ildct+ilme -x264opts interlaced=1, 1920x1080 (frame_mbs_only_flag = 0).
    const X264_1080I: &str = "01640028ffe1001a67640028acd94078044fde0220000003002000000783e2c5b2c001000468fe8fcbfdf8f800";
    // OPTS: -pix_fmt yuv444p, 642x362 (High 4:4:4 Predictive, chroma_format_idc 3).
    const X264_444: &str = "01f4001effe1001a67f4001e919b281485fc7cf80880000003008000001e078b16cb01000668ef8f192190fff8f800";
    // OPTS: -pix_fmt yuv422p, 1366x768 (High 4:2:2, crop unit 2x1).
    const X264_422_1366X768: &str = "017a0020ffe1001b677a0020bcd94056061e6f0110000003001000000303c0f183196001000468ef8fcbfef8f800";

    fn hex(s: &str) -> Bytes {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
            .collect();
        Bytes::from(v)
    }

    fn dims(record: &str) -> (u32, u32) {
        let p = parse_avc_config(hex(record)).expect("valid record");
        (p.width, p.height)
    }

    #[test]
    fn x264_720p() {
        let p = parse_avc_config(hex(X264_720P)).expect("valid record");
        assert_eq!((p.width, p.height), (1280, 720));
        assert_eq!(p.profile_idc, 100);
        assert_eq!(p.constraint_flags, 0);
        assert_eq!(p.level_idc, 31);
        assert_eq!(p.nal_length_size, 4);
        assert_eq!(p.codec_string(), "avc1.64001f");
        assert_eq!(p.avcc, hex(X264_720P), "record is kept verbatim");
    }

    #[test]
    fn x264_1080p_is_cropped_from_1088() {
        assert_eq!(dims(X264_1080P), (1920, 1080));
    }

    #[test]
    fn x264_odd_size() {
        assert_eq!(dims(X264_1366X768), (1366, 768));
    }

    #[test]
    fn x264_baseline() {
        let p = parse_avc_config(hex(X264_BASELINE_480P)).expect("valid record");
        assert_eq!((p.width, p.height), (854, 480));
        assert_eq!(p.codec_string(), "avc1.42c01f");
    }

    #[test]
    fn x264_interlaced_counts_field_map_units() {
        assert_eq!(dims(X264_1080I), (1920, 1080));
    }

    #[test]
    fn x264_chroma_444_and_422_crop_units() {
        assert_eq!(dims(X264_444), (642, 362));
        assert_eq!(dims(X264_422_1366X768), (1366, 768));
    }

    /// Writes the bits of a synthetic SPS, for syntax x264 never emits.
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let x = u64::from(v) + 1;
            let len = 64 - x.leading_zeros();
            for _ in 0..len - 1 {
                self.bits.push(false);
            }
            for i in (0..len).rev() {
                self.bits.push((x >> i) & 1 == 1);
            }
            self
        }
        fn se(&mut self, v: i32) -> &mut Self {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u32)
        }
        fn nal(&self) -> Vec<u8> {
            let mut bits = self.bits.clone();
            bits.push(true); // rbsp_stop_one_bit
            while !bits.len().is_multiple_of(8) {
                bits.push(false);
            }
            let rbsp: Vec<u8> = bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | u8::from(*b)))
                .collect();
            // Add emulation prevention so the parser's removal is exercised too.
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in rbsp {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    #[test]
    fn high_profile_scaling_lists_poc_type_1_and_crop() {
        let mut w = BitWriter::default();
        w.u(8, 100).u(8, 0).u(8, 40).ue(0); // profile, flags, level, sps id
        w.ue(1).ue(0).ue(0).u(1, 0); // 4:2:0, 8-bit, no bypass
        w.u(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            match i {
                // A full 4x4 list.
                1 => {
                    w.u(1, 1);
                    for _ in 0..16 {
                        w.se(3);
                    }
                }
                // An 8x8 list that ends early: nextScale reaches 0 after 11 deltas.
                6 => {
                    w.u(1, 1);
                    for _ in 0..10 {
                        w.se(3);
                    }
                    w.se(-38);
                }
                // useDefaultScalingMatrixFlag: the first delta makes nextScale 0.
                7 => {
                    w.u(1, 1).se(-8);
                }
                _ => {
                    w.u(1, 0);
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1).u(1, 0).se(-2).se(1).ue(3).se(1).se(-1).se(0); // poc type 1
        w.ue(4).u(1, 0); // max_num_ref_frames, gaps
        w.ue(119).ue(67); // 1920 x 1088
        w.u(1, 1).u(1, 1); // frame_mbs_only, direct_8x8
        w.u(1, 1).ue(0).ue(0).ue(0).ue(4); // crop 8 lines at the bottom
        w.u(1, 0); // no VUI
        assert_eq!(
            parse_sps(&w.nal()).expect("valid SPS"),
            SpsDims {
                width: 1920,
                height: 1080
            }
        );
    }

    #[test]
    fn separate_colour_planes_crop_in_luma_samples() {
        let mut w = BitWriter::default();
        w.u(8, 244).u(8, 0).u(8, 30).ue(0);
        w.ue(3).u(1, 1).ue(0).ue(0).u(1, 0).u(1, 0); // 4:4:4, separate planes
        w.ue(0).ue(2).ue(1).u(1, 0); // frame num, poc type 2, refs, gaps
        w.ue(40).ue(22).u(1, 1).u(1, 1); // 656 x 368
        w.u(1, 1).ue(3).ue(11).ue(1).ue(5); // crop 14 x 6 luma samples
        w.u(1, 0);
        assert_eq!(
            parse_sps(&w.nal()).expect("valid SPS"),
            SpsDims {
                width: 642,
                height: 362
            }
        );
    }

    #[test]
    fn rejects_bad_records() {
        let good = hex(X264_720P);
        assert!(matches!(
            parse_avc_config(Bytes::new()),
            Err(MediaError::Truncated { .. })
        ));
        for cut in 1..good.len() - 4 {
            // Any cut before the (optional) high-profile extension is an error, not a panic.
            let r = parse_avc_config(good.slice(..cut));
            assert!(r.is_err(), "cut at {cut} parsed: {r:?}");
        }
        let mut v = good.to_vec();
        v[0] = 2;
        assert!(matches!(
            parse_avc_config(Bytes::from(v)),
            Err(MediaError::Invalid { .. })
        ));
        let mut v = good.to_vec();
        v[4] = 0xfe; // lengthSizeMinusOne = 2
        assert!(parse_avc_config(Bytes::from(v)).is_err());
        let mut v = good.to_vec();
        v[5] = 0xe0; // zero SPS
        assert!(parse_avc_config(Bytes::from(v)).is_err());
        let mut v = good.to_vec();
        v[8] = 0x68; // a PPS where the SPS should be
        assert!(parse_avc_config(Bytes::from(v)).is_err());
    }

    #[test]
    fn emulation_prevention_bytes_are_dropped() {
        let nal = [0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3];
        assert_eq!(
            remove_emulation_prevention(&nal),
            [0, 0, 1, 0, 0, 0, 0, 0, 3]
        );
    }

    #[test]
    fn crop_larger_than_picture_is_invalid() {
        let mut w = BitWriter::default();
        w.u(8, 66).u(8, 0).u(8, 30).ue(0);
        w.ue(0).ue(0).ue(0).ue(1).u(1, 0);
        w.ue(0).ue(0).u(1, 1).u(1, 1); // 16 x 16
        w.u(1, 1).ue(4).ue(4).ue(0).ue(0); // crop 16 columns
        w.u(1, 0);
        assert!(matches!(
            parse_sps(&w.nal()),
            Err(MediaError::Invalid { .. })
        ));
    }

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        let v: Vec<u32> = (0..5).map(|_| r.ue().expect("in range")).collect();
        assert_eq!(v, [0, 1, 2, 3, 4]);
        let mut r = BitReader::new(&data, "test");
        let v: Vec<i64> = (0..5).map(|_| r.se().expect("in range")).collect();
        assert_eq!(v, [0, 1, -1, 2, -2]);
        let zeros = [0u8; 8];
        assert!(BitReader::new(&zeros, "test").ue().is_err());
        // ue of 2^32 - 1 is the largest value that fits.
        let max = [0, 0, 0, 0, 0x80, 0, 0, 0, 0];
        assert!(BitReader::new(&max, "test").ue().is_ok());
    }

    #[test]
    fn length_prefixed_samples() {
        assert_eq!(
            count_length_prefixed_nals(&[0, 0, 0, 2, 0x65, 1], 4).ok(),
            Some(1)
        );
        assert_eq!(
            count_length_prefixed_nals(&[1, 9, 2, 0x65, 1], 1).ok(),
            Some(2)
        );
        // Annex B start code read as a length overruns the payload.
        assert!(count_length_prefixed_nals(&[0, 0, 0, 1, 0x65, 1], 4).is_err());
        assert!(count_length_prefixed_nals(&[0, 0, 0, 9, 0x65], 4).is_err());
        assert!(count_length_prefixed_nals(&[0, 0], 4).is_err());
        assert!(count_length_prefixed_nals(&[0, 0], 2).is_err());
        assert!(count_length_prefixed_nals(&[], 4).is_ok());
    }
}
