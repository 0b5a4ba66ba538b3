//! Just enough ISO-BMFF reading for the tests: track info from an init
//! segment (timescale, handler, codec string, size, sample rate) and, from a
//! part or segment, each fragment's tfdt and trun sample durations, sizes and
//! flags.

#[derive(Debug, Clone, Default)]
pub struct TrackInfo {
    pub track_id: u32,
    pub handler: String,
    pub timescale: u32,
    /// e.g. `avc1.64001f` or `mp4a`.
    pub sample_entry: String,
    pub codec: String,
    pub width: u16,
    pub height: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub default_sample_duration: u32,
    pub default_sample_size: u32,
    pub default_sample_flags: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Init {
    pub brands: Vec<String>,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    pub cto: i64,
}

impl Sample {
    /// `sample_is_non_sync_sample` clear (ISO/IEC 14496-12 8.8.3.1).
    pub fn is_sync(&self) -> bool {
        self.flags & 0x0001_0000 == 0
    }
}

#[derive(Debug, Clone, Default)]
pub struct Fragment {
    pub sequence_number: u32,
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: Vec<Sample>,
    pub mdat_len: usize,
}

impl Fragment {
    pub fn duration(&self) -> u64 {
        self.samples.iter().map(|s| s.duration as u64).sum()
    }
}

#[derive(Debug)]
pub struct BoxRef<'a> {
    pub kind: [u8; 4],
    pub body: &'a [u8],
}

impl BoxRef<'_> {
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.kind).into_owned()
    }
}

/// Splits `data` into boxes; errors on a box that runs past the end.
pub fn boxes(data: &[u8]) -> Result<Vec<BoxRef<'_>>, String> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        if data.len() - i < 8 {
            return Err(format!("truncated box header at offset {i}"));
        }
        let size32 = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as u64;
        let kind: [u8; 4] = data[i + 4..i + 8].try_into().unwrap();
        let (hdr, size) = match size32 {
            0 => (8u64, (data.len() - i) as u64),
            1 => {
                if data.len() - i < 16 {
                    return Err(format!("truncated largesize at offset {i}"));
                }
                (
                    16,
                    u64::from_be_bytes(data[i + 8..i + 16].try_into().unwrap()),
                )
            }
            s => (8, s),
        };
        if size < hdr || i as u64 + size > data.len() as u64 {
            return Err(format!(
                "box {:?} at offset {i} has size {size}, only {} bytes left",
                String::from_utf8_lossy(&kind),
                data.len() - i
            ));
        }
        out.push(BoxRef {
            kind,
            body: &data[i + hdr as usize..i + size as usize],
        });
        i += size as usize;
    }
    Ok(out)
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(b)
        .ok()?
        .into_iter()
        .find(|x| &x.kind == kind)
        .map(|x| x.body)
}

fn children<'a>(b: &'a [u8], kind: &[u8; 4]) -> Vec<&'a [u8]> {
    boxes(b)
        .map(|v| {
            v.into_iter()
                .filter(|x| &x.kind == kind)
                .map(|x| x.body)
                .collect()
        })
        .unwrap_or_default()
}

struct Rd<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8]) -> Self {
        Rd { b, i: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.i + n > self.b.len() {
            return Err(format!(
                "short read: need {n} at {} of {}",
                self.i,
                self.b.len()
            ));
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.i..];
        self.i = self.b.len();
        s
    }
}

/// The ID3 payloads of the version-1 AOM-scheme `emsg` boxes at the top of
/// `data` (a part, or a segment of several parts).
pub fn id3_emsg_payloads(data: &[u8]) -> Vec<Vec<u8>> {
    let Ok(boxes) = boxes(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in boxes.iter().filter(|b| &b.kind == b"emsg") {
        if b.body.first() != Some(&1) || b.body.len() < 24 {
            continue;
        }
        // version 1: flags(3) timescale(4) time(8) duration(4) id(4), then
        // scheme and value (NUL-terminated), then the message.
        let rest = &b.body[24..];
        let Some(s_end) = rest.iter().position(|&c| c == 0) else {
            continue;
        };
        if &rest[..s_end] != b"https://aomedia.org/emsg/ID3" {
            continue;
        }
        let rest = &rest[s_end + 1..];
        let Some(v_end) = rest.iter().position(|&c| c == 0) else {
            continue;
        };
        out.push(rest[v_end + 1..].to_vec());
    }
    out
}

pub fn parse_init(data: &[u8]) -> Result<Init, String> {
    let top = boxes(data)?;
    let mut init = Init::default();
    if let Some(ftyp) = top.iter().find(|b| &b.kind == b"ftyp") {
        for c in ftyp.body.chunks(4) {
            init.brands.push(String::from_utf8_lossy(c).into_owned());
        }
    } else {
        return Err("init segment has no ftyp".into());
    }
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or("init segment has no moov")?;
    let mut trex = Vec::new();
    if let Some(mvex) = child(moov.body, b"mvex") {
        for t in children(mvex, b"trex") {
            let mut r = Rd::new(t);
            r.u32()?;
            trex.push((r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?));
        }
    }
    for trak in children(moov.body, b"trak") {
        let mut ti = TrackInfo::default();
        let tkhd = child(trak, b"tkhd").ok_or("trak without tkhd")?;
        let mut r = Rd::new(tkhd);
        let v = r.u8()?;
        r.take(3)?;
        if v == 1 {
            r.take(16)?;
        } else {
            r.take(8)?;
        }
        ti.track_id = r.u32()?;
        let mdia = child(trak, b"mdia").ok_or("trak without mdia")?;
        let mdhd = child(mdia, b"mdhd").ok_or("mdia without mdhd")?;
        let mut r = Rd::new(mdhd);
        let v = r.u8()?;
        r.take(3)?;
        if v == 1 {
            r.take(16)?;
        } else {
            r.take(8)?;
        }
        ti.timescale = r.u32()?;
        let hdlr = child(mdia, b"hdlr").ok_or("mdia without hdlr")?;
        ti.handler = String::from_utf8_lossy(&hdlr[8..12]).into_owned();
        let stsd = child(mdia, b"minf")
            .and_then(|m| child(m, b"stbl"))
            .and_then(|s| child(s, b"stsd"));
        if let Some(stsd) = stsd {
            let entries = boxes(&stsd[8..])?;
            if let Some(e) = entries.first() {
                ti.sample_entry = e.name();
                let mut r = Rd::new(e.body);
                r.take(8)?; // reserved + data_reference_index
                if ti.handler == "vide" {
                    r.take(16)?;
                    ti.width = r.u16()?;
                    ti.height = r.u16()?;
                    r.take(50)?;
                    let kids = r.rest();
                    if let Some(avcc) = child(kids, b"avcC")
                        && avcc.len() >= 4
                    {
                        ti.codec = format!(
                            "{}.{:02x}{:02x}{:02x}",
                            ti.sample_entry, avcc[1], avcc[2], avcc[3]
                        );
                    }
                } else if ti.handler == "soun" {
                    r.take(8)?;
                    ti.channels = r.u16()?;
                    r.u16()?; // samplesize
                    r.take(4)?;
                    ti.sample_rate = r.u32()? >> 16;
                    ti.codec = ti.sample_entry.clone();
                }
            }
        }
        if let Some(t) = trex.iter().find(|t| t.0 == ti.track_id) {
            ti.default_sample_duration = t.2;
            ti.default_sample_size = t.3;
            ti.default_sample_flags = t.4;
        }
        init.tracks.push(ti);
    }
    Ok(init)
}

/// Reads every moof (with its following mdat) in a part or segment.
pub fn parse_fragments(data: &[u8], init: Option<&Init>) -> Result<Vec<Fragment>, String> {
    let top = boxes(data)?;
    let mut out: Vec<Fragment> = Vec::new();
    for b in &top {
        match &b.kind {
            b"moof" => {
                let mut seq = 0;
                if let Some(mfhd) = child(b.body, b"mfhd") {
                    let mut r = Rd::new(mfhd);
                    r.u32()?;
                    seq = r.u32()?;
                }
                for traf in children(b.body, b"traf") {
                    let mut f = Fragment {
                        sequence_number: seq,
                        ..Default::default()
                    };
                    let tfhd = child(traf, b"tfhd").ok_or("traf without tfhd")?;
                    let mut r = Rd::new(tfhd);
                    let flags = r.u32()? & 0xff_ffff;
                    f.track_id = r.u32()?;
                    let ti = init.and_then(|i| i.tracks.iter().find(|t| t.track_id == f.track_id));
                    let (mut dd, mut ds, mut df) = ti
                        .map(|t| {
                            (
                                t.default_sample_duration,
                                t.default_sample_size,
                                t.default_sample_flags,
                            )
                        })
                        .unwrap_or((0, 0, 0));
                    if flags & 0x1 != 0 {
                        r.u64()?;
                    }
                    if flags & 0x2 != 0 {
                        r.u32()?;
                    }
                    if flags & 0x8 != 0 {
                        dd = r.u32()?;
                    }
                    if flags & 0x10 != 0 {
                        ds = r.u32()?;
                    }
                    if flags & 0x20 != 0 {
                        df = r.u32()?;
                    }
                    let tfdt = child(traf, b"tfdt").ok_or("traf without tfdt")?;
                    let mut r = Rd::new(tfdt);
                    let v = r.u8()?;
                    r.take(3)?;
                    f.base_decode_time = if v == 1 { r.u64()? } else { r.u32()? as u64 };
                    for trun in children(traf, b"trun") {
                        let mut r = Rd::new(trun);
                        let vf = r.u32()?;
                        let version = vf >> 24;
                        let tf = vf & 0xff_ffff;
                        let n = r.u32()?;
                        if tf & 0x1 != 0 {
                            r.u32()?;
                        }
                        let first_flags = if tf & 0x4 != 0 { Some(r.u32()?) } else { None };
                        for k in 0..n {
                            let duration = if tf & 0x100 != 0 { r.u32()? } else { dd };
                            let size = if tf & 0x200 != 0 { r.u32()? } else { ds };
                            let mut flags = if tf & 0x400 != 0 { r.u32()? } else { df };
                            if k == 0
                                && let Some(ff) = first_flags
                            {
                                flags = ff;
                            }
                            let cto = if tf & 0x800 != 0 {
                                let c = r.u32()?;
                                if version == 1 {
                                    c as i32 as i64
                                } else {
                                    c as i64
                                }
                            } else {
                                0
                            };
                            f.samples.push(Sample {
                                duration,
                                size,
                                flags,
                                cto,
                            });
                        }
                    }
                    out.push(f);
                }
            }
            b"mdat" => {
                if let Some(last) = out.last_mut() {
                    last.mdat_len += b.body.len();
                }
            }
            b"styp" | b"prft" | b"emsg" | b"sidx" | b"free" | b"skip" => {}
            other => {
                return Err(format!(
                    "unexpected top-level box {:?} in media data",
                    String::from_utf8_lossy(other)
                ));
            }
        }
    }
    Ok(out)
}
