//! H.264 byte-stream (Annex B) <-> sample (ISO/IEC 14496-15, length-prefixed) conversion, and
//! the AVCDecoderConfigurationRecord built from Annex B parameter sets. Pure functions over
//! bytes: they borrow their input and write only into buffers the caller owns.

use bytes::{BufMut, Bytes, BytesMut};

use super::MediaError;

/// NAL unit types (ITU-T H.264 Table 7-1) this module treats specially.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// `nal_unit_type` of a NAL unit given with its header byte; 0 (unspecified) for an empty one.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |h| h & 0x1f)
}

/// The NAL units of an Annex B byte stream (B.1.1), without start codes.
///
/// Zero bytes before a start code are `trailing_zero_8bits` (or the first byte of a 4-byte
/// start code) and are dropped: a NAL unit never ends in 0x00, because its RBSP ends with the
/// stop bit and `cabac_zero_word`s are written as 0x000003. Bytes before the first start code
/// are not a NAL unit and are skipped.
pub fn annexb_nals(stream: &[u8]) -> AnnexBNals<'_> {
    let start = find_start_code(stream, 0).map_or(stream.len(), |(_, after)| after);
    AnnexBNals {
        data: stream,
        pos: start,
    }
}

/// Iterator returned by [`annexb_nals`].
#[derive(Clone, Debug)]
pub struct AnnexBNals<'a> {
    data: &'a [u8],
    /// Start of the next NAL unit: just after a start code, or `data.len()` when done.
    pos: usize,
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.pos >= self.data.len() {
                return None;
            }
            let (end, next) =
                find_start_code(self.data, self.pos).unwrap_or((self.data.len(), self.data.len()));
            let mut nal = &self.data[self.pos..end];
            self.pos = next;
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            // Two start codes in a row (or only zero bytes between them) hold no NAL unit.
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Finds the next `00 00 01` at or after `from`: returns where it starts and the index just
/// past it.
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let hay = data.get(from..)?;
    hay.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| (from + i, from + i + 3))
}

/// The NAL units of a sample whose NAL units each carry a big-endian length prefix of
/// `length_size` bytes (ISO/IEC 14496-15 5.3.2). Yields an error, then stops, at the first
/// prefix that does not fit the sample.
pub fn length_prefixed_nals(
    sample: &[u8],
    length_size: u8,
) -> impl Iterator<Item = Result<&[u8], MediaError>> {
    const WHAT: &str = "length-prefixed sample";
    let size = usize::from(length_size);
    let mut pos = 0usize;
    let mut failed = !matches!(size, 1 | 2 | 4);
    let mut reported = false;
    std::iter::from_fn(move || {
        if failed {
            if reported {
                return None;
            }
            reported = true;
            return Some(Err(MediaError::Invalid {
                what: WHAT,
                why: format!("NAL length size {size} (must be 1, 2 or 4)"),
            }));
        }
        if pos >= sample.len() {
            return None;
        }
        let nal = sample
            .get(pos..pos + size)
            .map(|p| p.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
            .and_then(|len| {
                let start = pos + size;
                let end = start.checked_add(len)?;
                sample.get(start..end).map(|nal| (nal, end))
            });
        match nal {
            Some((nal, end)) => {
                pos = end;
                Some(Ok(nal))
            }
            None => {
                failed = true;
                reported = true;
                Some(Err(MediaError::Truncated {
                    what: WHAT,
                    need: pos + size,
                    have: sample.len(),
                }))
            }
        }
    })
}

/// Appends the NAL units of an Annex B access unit to `out` as 4-byte length-prefixed NAL
/// units, skipping those for which `keep` returns false. Returns how many were written.
///
/// Writes into the caller's buffer so that a long-lived `BytesMut` can be reused for every
/// access unit.
pub fn annexb_to_length_prefixed(
    stream: &[u8],
    out: &mut BytesMut,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> Result<usize, MediaError> {
    let mut written = 0;
    for nal in annexb_nals(stream).filter(|nal| keep(nal)) {
        let len = u32::try_from(nal.len()).map_err(|_| MediaError::Invalid {
            what: "Annex B access unit",
            why: format!(
                "NAL unit of {} bytes does not fit a 4-byte length",
                nal.len()
            ),
        })?;
        out.reserve(4 + nal.len());
        out.put_u32(len);
        out.put_slice(nal);
        written += 1;
    }
    Ok(written)
}

/// Builds an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL lengths
/// from the SPS and PPS NAL units of an Annex B byte stream (an encoder's global header).
/// Other NAL units are ignored. Profile, compatibility and level are copied from the first SPS.
pub fn avc_config_from_annexb(stream: &[u8]) -> Result<Bytes, MediaError> {
    const WHAT: &str = "Annex B parameter sets";
    let sps: Vec<&[u8]> = annexb_nals(stream)
        .filter(|n| nal_type(n) == NAL_SPS)
        .collect();
    let pps: Vec<&[u8]> = annexb_nals(stream)
        .filter(|n| nal_type(n) == NAL_PPS)
        .collect();
    let first = *sps.first().ok_or_else(|| MediaError::Invalid {
        what: WHAT,
        why: "no sequence parameter set".into(),
    })?;
    if pps.is_empty() {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: "no picture parameter set".into(),
        });
    }
    // 5.3.3.1.2: numOfSequenceParameterSets is 5 bits; each length is 16 bits.
    if sps.len() > 31 || pps.len() > 255 {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: format!(
                "{} SPS and {} PPS do not fit the record",
                sps.len(),
                pps.len()
            ),
        });
    }
    let too_long = sps
        .iter()
        .chain(&pps)
        .find(|n| n.len() > usize::from(u16::MAX));
    if let Some(n) = too_long {
        return Err(MediaError::Invalid {
            what: WHAT,
            why: format!("parameter set of {} bytes", n.len()),
        });
    }
    let head = first.get(1..4).ok_or(MediaError::Truncated {
        what: "SPS",
        need: 4,
        have: first.len(),
    })?;
    let (profile_idc, constraint_flags, level_idc) = (head[0], head[1], head[2]);

    let mut rec =
        BytesMut::with_capacity(11 + sps.iter().chain(&pps).map(|n| 2 + n.len()).sum::<usize>());
    rec.put_u8(1); // configurationVersion
    rec.put_u8(profile_idc);
    rec.put_u8(constraint_flags);
    rec.put_u8(level_idc);
    rec.put_u8(0xfc | 3); // reserved '111111', lengthSizeMinusOne = 3
    rec.put_u8(0xe0 | sps.len() as u8); // reserved '111', checked <= 31 above
    for n in &sps {
        rec.put_u16(n.len() as u16); // checked <= u16::MAX above
        rec.put_slice(n);
    }
    rec.put_u8(pps.len() as u8);
    for n in &pps {
        rec.put_u16(n.len() as u16);
        rec.put_slice(n);
    }
    // 5.3.3.1.2: for these profiles the record carries chroma format and bit depths.
    if matches!(profile_idc, 100 | 110 | 122 | 144) {
        let ext = high_profile_fields(first)?;
        rec.put_u8(0xfc | ext.chroma_format_idc);
        rec.put_u8(0xf8 | ext.bit_depth_luma_minus8);
        rec.put_u8(0xf8 | ext.bit_depth_chroma_minus8);
        rec.put_u8(0); // numOfSequenceParameterSetExt
    }
    Ok(rec.freeze())
}

struct HighProfileFields {
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

/// Reads chroma_format_idc and the bit depths, the first fields after seq_parameter_set_id in
/// a high-profile SPS (ITU-T H.264 7.3.2.1.1).
fn high_profile_fields(sps: &[u8]) -> Result<HighProfileFields, MediaError> {
    // The fields sit in the first few bytes; 32 bytes of RBSP covers them with room to spare,
    // and a stack buffer keeps this allocation-free.
    let mut rbsp = [0u8; 32];
    let mut len = 0;
    let mut zeros = 0;
    for &b in sps.iter().skip(1) {
        if len == rbsp.len() {
            break;
        }
        // 7.4.1: 0x000003 -> drop the emulation_prevention_three_byte.
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp[len] = b;
        len += 1;
    }
    let mut r = super::h264::BitReader::new(&rbsp[..len], "SPS");
    r.skip(24)?; // profile_idc, constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let small = |v: u32, max: u32, field: &str| {
        u8::try_from(v)
            .ok()
            .filter(|v| u32::from(*v) <= max)
            .ok_or_else(|| MediaError::Invalid {
                what: "SPS",
                why: format!("{field} {v} > {max}"),
            })
    };
    let chroma_format_idc = small(r.ue()?, 3, "chroma_format_idc")?;
    if chroma_format_idc == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    Ok(HighProfileFields {
        chroma_format_idc,
        bit_depth_luma_minus8: small(r.ue()?, 6, "bit_depth_luma_minus8")?,
        bit_depth_chroma_minus8: small(r.ue()?, 6, "bit_depth_chroma_minus8")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::parse_avc_config;

    // A 640x360 High-profile SPS and its PPS as libx264 writes them.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: &[u8] = &[0x68, 0xef, 0x8f, 0xcb];

    fn stream(nals: &[&[u8]]) -> Vec<u8> {
        let mut s = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            // Mix 4- and 3-byte start codes, plus a trailing zero byte, as encoders do.
            s.extend_from_slice(if i == 0 { &[0, 0, 0, 1] } else { &[0, 0, 1] });
            s.extend_from_slice(n);
            if i == 1 {
                s.push(0);
            }
        }
        s
    }

    #[test]
    fn splits_annexb_and_drops_trailing_zeros() {
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01];
        let s = stream(&[SPS, PPS, idr]);
        let nals: Vec<&[u8]> = annexb_nals(&s).collect();
        assert_eq!(nals, vec![SPS, PPS, idr]);
        assert_eq!(annexb_nals(&[0, 0, 0, 1, 0, 0, 1]).count(), 0);
        assert_eq!(annexb_nals(b"no start code").count(), 0);
    }

    #[test]
    fn converts_to_length_prefixed_and_back() {
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let aud: &[u8] = &[0x09, 0xf0];
        let s = stream(&[aud, SPS, PPS, idr]);
        let mut out = BytesMut::new();
        let n = annexb_to_length_prefixed(&s, &mut out, |nal| {
            !matches!(nal_type(nal), NAL_AUD | NAL_SPS | NAL_PPS)
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(&out[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        let nals: Vec<_> = length_prefixed_nals(&out, 4)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(nals, vec![idr]);
        let bad: Vec<_> = length_prefixed_nals(&[0, 0, 0, 9, 1], 4).collect();
        assert!(matches!(bad[..], [Err(MediaError::Truncated { .. })]));
        assert_eq!(length_prefixed_nals(&[1, 2], 3).count(), 1);
    }

    #[test]
    fn builds_a_config_record_the_parser_accepts() {
        let rec = avc_config_from_annexb(&stream(&[SPS, PPS])).unwrap();
        // High profile: the record ends with chroma 4:2:0 and 8-bit depths.
        assert_eq!(&rec[rec.len() - 4..], &[0xfd, 0xf8, 0xf8, 0x00]);
        let params = parse_avc_config(rec).unwrap();
        assert_eq!((params.width, params.height), (640, 360));
        assert_eq!(params.nal_length_size, 4);
        assert_eq!(params.codec_string(), "avc1.64001e");
        assert!(avc_config_from_annexb(&stream(&[SPS])).is_err());
        assert!(avc_config_from_annexb(&stream(&[PPS])).is_err());
    }
}
