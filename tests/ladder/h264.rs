//! Just enough H.264 for the ladder checks, written from ITU-T H.264 and
//! ISO/IEC 14496-15 independently of the node's own parser: the avcC of an
//! init segment, the coded size of its SPS (7.3.2.1.1, cropping per
//! 7.4.2.1.1), and the NAL unit types of a fragment's first sample.

use crate::common::fmp4::{boxes, parse_fragments};

/// The parts of an init segment's avcC that the checks use.
#[derive(Debug, Clone)]
pub struct AvcConfig {
    /// `avc1.PPCCLL` from the first SPS (profile_idc, constraint flags, level_idc).
    pub codec: String,
    /// Width and height the SPS decodes to, after cropping.
    pub width: u32,
    pub height: u32,
    /// NAL length field size in bytes (lengthSizeMinusOne + 1).
    pub length_size: usize,
}

fn child<'a>(b: &'a [u8], path: &[&[u8; 4]]) -> Result<&'a [u8], String> {
    let mut cur = b;
    for kind in path {
        cur = boxes(cur)?
            .into_iter()
            .find(|x| &x.kind == *kind)
            .map(|x| x.body)
            .ok_or_else(|| format!("no {} box", String::from_utf8_lossy(*kind)))?;
    }
    Ok(cur)
}

/// Reads the avcC of the (only) video track of an init segment.
pub fn avc_config(init: &[u8]) -> Result<AvcConfig, String> {
    let stsd = child(
        init,
        &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
    )?;
    // FullBox header + entry_count, then the sample entries.
    let entries = boxes(stsd.get(8..).ok_or("short stsd")?)?;
    let avc1 = entries.first().ok_or("stsd has no sample entry")?;
    if !matches!(&avc1.kind, b"avc1" | b"avc3") {
        return Err(format!("sample entry is {:?}, not avc1", avc1.name()));
    }
    // VisualSampleEntry fields take 78 bytes before the child boxes.
    let avcc = child(avc1.body.get(78..).ok_or("short avc1")?, &[b"avcC"])?;
    if avcc.len() < 8 || avcc[0] != 1 {
        return Err(format!(
            "bad avcC header {:02x?}",
            &avcc[..avcc.len().min(8)]
        ));
    }
    let length_size = (avcc[4] & 3) as usize + 1;
    let nsps = avcc[5] & 0x1f;
    if nsps == 0 {
        return Err("avcC has no SPS".into());
    }
    let len = u16::from_be_bytes([avcc[6], avcc[7]]) as usize;
    let sps = avcc.get(8..8 + len).ok_or("avcC SPS runs past the box")?;
    if sps.len() < 4 || sps[0] & 0x1f != 7 {
        return Err(format!(
            "first avcC parameter set is not an SPS: {sps:02x?}"
        ));
    }
    let (width, height) = sps_size(sps)?;
    Ok(AvcConfig {
        codec: format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]),
        width,
        height,
        length_size,
    })
}

/// Bit reader over an RBSP (emulation prevention bytes removed).
struct Bits {
    b: Vec<u8>,
    i: usize,
}

impl Bits {
    fn new(nal: &[u8]) -> Bits {
        let mut b = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &x in nal {
            if zeros >= 2 && x == 3 {
                zeros = 0;
                continue;
            }
            zeros = if x == 0 { zeros + 1 } else { 0 };
            b.push(x);
        }
        Bits { b, i: 0 }
    }
    fn bit(&mut self) -> Result<u32, String> {
        let byte = self.b.get(self.i / 8).ok_or("SPS ends early")?;
        let v = (byte >> (7 - self.i % 8)) & 1;
        self.i += 1;
        Ok(v as u32)
    }
    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }
    fn ue(&mut self) -> Result<u32, String> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err("bad exp-Golomb code in SPS".into());
            }
        }
        Ok((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
    fn se(&mut self) -> Result<i32, String> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Cropped picture size of an SPS NAL unit (header byte included).
pub fn sps_size(sps: &[u8]) -> Result<(u32, u32), String> {
    let mut r = Bits::new(&sps[1..]);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, reserved, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = 0;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            // seq_scaling_matrix_present_flag: skip the scaling lists (7.3.2.1.1.1).
            let n = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..n {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_map_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    // 7.4.2.1.1: CropUnitX/Y from ChromaArrayType and frame_mbs_only_flag.
    let chroma_array_type = if separate_colour_plane == 1 {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (unit_x, unit_y) = if chroma_array_type == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_w, sub_h * (2 - frame_mbs_only))
    };
    let w = width_mbs * 16;
    let h = (2 - frame_mbs_only) * height_map_units * 16;
    let (dw, dh) = (unit_x * (cl + cr), unit_y * (ct + cb));
    if dw >= w || dh >= h {
        return Err(format!("SPS cropping {dw}x{dh} of a {w}x{h} picture"));
    }
    Ok((w - dw, h - dh))
}

/// NAL unit types of the first video sample of a segment or part (which
/// starts with `moof` + `mdat`, the sample at the start of the mdat).
pub fn first_sample_nal_types(media: &[u8], length_size: usize) -> Result<Vec<u8>, String> {
    let frags = parse_fragments(media, None)?;
    let size = frags
        .first()
        .and_then(|f| f.samples.first())
        .ok_or("no sample in the first fragment")?
        .size as usize;
    let mdat = boxes(media)?
        .into_iter()
        .find(|b| &b.kind == b"mdat")
        .ok_or("no mdat")?
        .body;
    let sample = mdat
        .get(..size)
        .ok_or_else(|| format!("first sample of {size} bytes runs past the mdat"))?;
    let mut types = Vec::new();
    let mut i = 0;
    while i < sample.len() {
        let hdr = sample
            .get(i..i + length_size)
            .ok_or("truncated NAL length")?;
        let len = hdr.iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        let nal = sample
            .get(i + length_size..i + length_size + len)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("NAL of {len} bytes at {i} runs past a {size}-byte sample"))?;
        types.push(nal[0] & 0x1f);
        i += length_size + len;
    }
    Ok(types)
}
