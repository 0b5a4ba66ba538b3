//! A strict parser for LL-HLS media playlists and a small one for
//! multivariant playlists.
//!
//! m3u8-rs drops the LL-HLS tags (trailing parts, preload hints, rendition
//! reports; see FACTS.md), so the tests parse playlists here. "Strict" means
//! that every syntax rule of RFC 8216bis section 4 that a parser can check is
//! an error: a missing #EXTM3U, a URI line without EXTINF, malformed
//! attribute lists, required attributes missing, tags that may appear once
//! appearing twice, Media Playlist tags after the first segment. Unknown tags
//! are collected (clients must ignore them, 4.1), not refused.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// An attribute value as written (RFC 8216bis 4.2).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Quoted(String),
    /// decimal-integer, decimal-floating-point, hexadecimal or enumerated string.
    Bare(String),
}

impl AttrValue {
    pub fn as_str(&self) -> &str {
        match self {
            AttrValue::Quoted(s) | AttrValue::Bare(s) => s,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, AttrValue>);

impl Attrs {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|v| v.as_str())
    }
    pub fn quoted(&self, k: &str) -> Option<&str> {
        match self.0.get(k) {
            Some(AttrValue::Quoted(s)) => Some(s),
            _ => None,
        }
    }
    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

/// Parses an attribute-list (RFC 8216bis 4.2): `NAME=VALUE` pairs separated
/// by commas, no whitespace, names `[A-Z0-9-]`, no duplicate names.
pub fn parse_attrs(s: &str, line: usize) -> Result<Attrs, ParseError> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return err(line, "empty attribute list");
    }
    loop {
        let start = i;
        while i < b.len() && b[i] != b'=' {
            let c = b[i];
            if !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-') {
                return err(
                    line,
                    format!("bad attribute name character {:?} in {s:?}", c as char),
                );
            }
            i += 1;
        }
        if i == b.len() || i == start {
            return err(line, format!("attribute without name or '=' in {s:?}"));
        }
        let name = s[start..i].to_string();
        i += 1; // '='
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\r' || b[i] == b'\n' {
                    return err(line, "line break in quoted-string");
                }
                i += 1;
            }
            if i == b.len() {
                return err(line, format!("unterminated quoted-string in {s:?}"));
            }
            let v = s[vs..i].to_string();
            i += 1;
            AttrValue::Quoted(v)
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                if b[i] == b'"' || b[i].is_ascii_whitespace() {
                    return err(
                        line,
                        format!("bad character in unquoted attribute value in {s:?}"),
                    );
                }
                i += 1;
            }
            if i == vs {
                return err(line, format!("empty value for {name} in {s:?}"));
            }
            AttrValue::Bare(s[vs..i].to_string())
        };
        if out.insert(name.clone(), value).is_some() {
            return err(line, format!("duplicate attribute {name}"));
        }
        if i == b.len() {
            break;
        }
        if b[i] != b',' {
            return err(line, format!("expected ',' after {name} in {s:?}"));
        }
        i += 1;
        if i == b.len() {
            return err(line, "trailing ',' in attribute list");
        }
    }
    Ok(Attrs(out))
}

/// decimal-integer: `[0-9]+` (4.2).
pub fn parse_int(s: &str, line: usize) -> Result<u64, ParseError> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) || s.len() > 20 {
        return err(line, format!("not a decimal-integer: {s:?}"));
    }
    s.parse().map_err(|_| ParseError {
        line,
        msg: format!("integer out of range: {s:?}"),
    })
}

/// decimal-floating-point: `[0-9]+` optionally followed by `.[0-9]*`, no sign
/// and no exponent (4.2).
pub fn parse_dec(s: &str, line: usize) -> Result<f64, ParseError> {
    let (int, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ok = !int.is_empty()
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| f.bytes().all(|c| c.is_ascii_digit()));
    if !ok {
        return err(line, format!("not a decimal-floating-point: {s:?}"));
    }
    s.parse().map_err(|_| ParseError {
        line,
        msg: format!("bad number {s:?}"),
    })
}

fn yes(attrs: &Attrs, k: &str, line: usize) -> Result<bool, ParseError> {
    match attrs.get(k) {
        None => Ok(false),
        Some("YES") => Ok(true),
        Some("NO") if k == "CAN-BLOCK-RELOAD" || k == "CAN-SKIP-DATERANGES" => Ok(false),
        Some(v) => err(line, format!("{k} must be YES, got {v:?}")),
    }
}

fn req_quoted<'a>(
    attrs: &'a Attrs,
    k: &str,
    tag: &str,
    line: usize,
) -> Result<&'a str, ParseError> {
    match attrs.0.get(k) {
        Some(AttrValue::Quoted(s)) => Ok(s),
        Some(_) => err(line, format!("{tag}: {k} must be a quoted-string")),
        None => err(line, format!("{tag}: missing required {k}")),
    }
}

/// Parses an ISO 8601 date-time such as `2024-01-02T03:04:05.678Z` or with a
/// `+hh:mm` offset into seconds since the Unix epoch.
pub fn parse_date_time(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if i < b.len() && b[i] == b'.' {
        let fs = i + 1;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == fs {
            return None;
        }
        frac = format!("0.{}", &s[fs..i]).parse().ok()?;
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        "" => 0, // no zone: treat as UTC (4.4.4.6)
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let oh: i64 = tz[1..3].parse().ok()?;
            let om: i64 = tz[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
    pub gap: bool,
    pub byterange: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub msn: u64,
    pub duration: f64,
    pub title: String,
    pub uri: String,
    pub discontinuity: bool,
    /// Seconds since the epoch, from the EXT-X-PROGRAM-DATE-TIME that applies
    /// directly to this segment.
    pub pdt: Option<f64>,
    pub map_uri: Option<String>,
    pub gap: bool,
    pub bitrate: Option<u64>,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerControl {
    pub can_block_reload: bool,
    pub can_skip_until: Option<f64>,
    pub can_skip_dateranges: bool,
    pub hold_back: Option<f64>,
    pub part_hold_back: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub skipped_segments: u64,
    pub recently_removed_dateranges: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreloadHint {
    pub kind: String,
    pub uri: String,
    pub byterange_start: Option<u64>,
    pub byterange_length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    pub version: Option<u64>,
    pub target_duration: Option<u64>,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub independent_segments: bool,
    pub playlist_type: Option<String>,
    pub part_target: Option<f64>,
    pub server_control: Option<ServerControl>,
    pub skip: Option<Skip>,
    /// Complete segments, in order.
    pub segments: Vec<Segment>,
    /// Parts of the segment still being produced (after the last EXTINF).
    pub open_parts: Vec<Part>,
    pub open_pdt: Option<f64>,
    pub open_discontinuity: bool,
    pub open_map_uri: Option<String>,
    pub preload_hints: Vec<PreloadHint>,
    pub rendition_reports: Vec<RenditionReport>,
    pub endlist: bool,
    pub dateranges: usize,
    pub discontinuity_tags: usize,
    /// The first EXT-X-MAP URI in the playlist.
    pub map_uri: Option<String>,
    pub unknown_tags: Vec<String>,
}

impl MediaPlaylist {
    /// MSN of the first segment listed after any EXT-X-SKIP.
    pub fn first_listed_msn(&self) -> u64 {
        self.media_sequence + self.skip.as_ref().map_or(0, |s| s.skipped_segments)
    }

    /// MSN of the segment that the open parts belong to (one past the last
    /// complete segment).
    pub fn open_msn(&self) -> u64 {
        self.first_listed_msn() + self.segments.len() as u64
    }

    /// (MSN, part index) of the last part in the playlist.
    pub fn last_part(&self) -> Option<(u64, u64)> {
        if !self.open_parts.is_empty() {
            return Some((self.open_msn(), self.open_parts.len() as u64 - 1));
        }
        let s = self.segments.last()?;
        if s.parts.is_empty() {
            None
        } else {
            Some((s.msn, s.parts.len() as u64 - 1))
        }
    }

    /// (MSN, part index) of the part after the last one, if the open segment
    /// continues. (If the segment is cut before it, the next part is
    /// (MSN+1, 0) instead; a blocking reload for either returns it.)
    pub fn next_part(&self) -> (u64, u64) {
        (self.open_msn(), self.open_parts.len() as u64)
    }

    /// All parts with their (MSN, index), complete segments first.
    pub fn all_parts(&self) -> Vec<(u64, u64, &Part)> {
        let mut v = Vec::new();
        for s in &self.segments {
            for (i, p) in s.parts.iter().enumerate() {
                v.push((s.msn, i as u64, p));
            }
        }
        let m = self.open_msn();
        for (i, p) in self.open_parts.iter().enumerate() {
            v.push((m, i as u64, p));
        }
        v
    }

    pub fn find_part(&self, msn: u64, idx: u64) -> Option<&Part> {
        if msn == self.open_msn() {
            return self.open_parts.get(idx as usize);
        }
        self.segment(msn)?.parts.get(idx as usize)
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.first_listed_msn();
        if msn < first {
            return None;
        }
        self.segments.get((msn - first) as usize)
    }

    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.msn)
    }

    pub fn hint(&self, kind: &str) -> Option<&PreloadHint> {
        self.preload_hints.iter().find(|h| h.kind == kind)
    }

    /// Sum of EXTINF durations of the listed segments plus the open parts.
    pub fn listed_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum::<f64>()
            + self.open_parts.iter().map(|p| p.duration).sum::<f64>()
    }
}

fn parse_part(rest: &str, line: usize) -> Result<Part, ParseError> {
    let a = parse_attrs(rest, line)?;
    let uri = req_quoted(&a, "URI", "EXT-X-PART", line)?.to_string();
    let duration = match a.0.get("DURATION") {
        Some(AttrValue::Bare(d)) => parse_dec(d, line)?,
        _ => return err(line, "EXT-X-PART: DURATION missing or quoted"),
    };
    for k in a.0.keys() {
        if !["URI", "DURATION", "INDEPENDENT", "BYTERANGE", "GAP"].contains(&k.as_str()) {
            return err(line, format!("EXT-X-PART: unknown attribute {k}"));
        }
    }
    Ok(Part {
        uri,
        duration,
        independent: yes(&a, "INDEPENDENT", line)?,
        gap: yes(&a, "GAP", line)?,
        byterange: a.quoted("BYTERANGE").map(str::to_string),
    })
}

/// Parses a media playlist strictly.
pub fn parse_media(text: &str) -> Result<MediaPlaylist, ParseError> {
    if text.starts_with('\u{feff}') {
        return err(1, "byte order mark (4.1: MUST NOT contain a BOM)");
    }
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => return err(1, "first line is not #EXTM3U (4.4.1.1)"),
    }
    let mut pl = MediaPlaylist::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut once = |tag: &'static str, line: usize| -> Result<(), ParseError> {
        if seen.contains(&tag) {
            return err(line, format!("{tag} appears more than once"));
        }
        seen.push(tag);
        Ok(())
    };
    let mut pending_inf: Option<(f64, String, usize)> = None;
    let mut pending_parts: Vec<Part> = Vec::new();
    let mut pending_pdt: Option<f64> = None;
    let mut pending_disc = false;
    let mut pending_gap = false;
    let mut cur_map: Option<String> = None;
    let mut cur_bitrate: Option<u64> = None;
    let mut any_segment_tag = false;
    let mut after_skip_msn: Option<u64> = None;
    for (ln, l) in lines {
        if l.is_empty() {
            continue;
        }
        for c in l.chars() {
            if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) {
                return err(ln, "control character (4.1)");
            }
        }
        if !l.starts_with('#') {
            // A URI line: completes a segment.
            let Some((dur, title, _)) = pending_inf.take() else {
                return err(
                    ln,
                    format!("URI line {l:?} without a preceding EXTINF (4.4.4.1)"),
                );
            };
            let first = after_skip_msn.unwrap_or(pl.media_sequence);
            let msn = first + pl.segments.len() as u64;
            pl.segments.push(Segment {
                msn,
                duration: dur,
                title,
                uri: l.to_string(),
                discontinuity: std::mem::take(&mut pending_disc),
                pdt: pending_pdt.take(),
                map_uri: cur_map.clone(),
                gap: std::mem::take(&mut pending_gap),
                bitrate: cur_bitrate,
                parts: std::mem::take(&mut pending_parts),
            });
            continue;
        }
        if !l.starts_with("#EXT") {
            continue; // comment
        }
        let (tag, rest) = match l.split_once(':') {
            Some((t, r)) => (t, Some(r)),
            None => (l, None),
        };
        let need = |r: Option<&str>| -> Result<String, ParseError> {
            r.map(str::to_string).ok_or(ParseError {
                line: ln,
                msg: format!("{tag} needs a value"),
            })
        };
        let media_tag_before_segments = |any: bool| -> Result<(), ParseError> {
            if any {
                return err(
                    ln,
                    format!("{tag} must appear before the first Media Segment"),
                );
            }
            Ok(())
        };
        match tag {
            "#EXTM3U" => return err(ln, "#EXTM3U appears twice"),
            "#EXT-X-VERSION" => {
                once("EXT-X-VERSION", ln)?;
                pl.version = Some(parse_int(&need(rest)?, ln)?);
            }
            "#EXT-X-TARGETDURATION" => {
                once("EXT-X-TARGETDURATION", ln)?;
                media_tag_before_segments(any_segment_tag)?;
                pl.target_duration = Some(parse_int(&need(rest)?, ln)?);
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                once("EXT-X-MEDIA-SEQUENCE", ln)?;
                media_tag_before_segments(any_segment_tag)?;
                pl.media_sequence = parse_int(&need(rest)?, ln)?;
            }
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                once("EXT-X-DISCONTINUITY-SEQUENCE", ln)?;
                media_tag_before_segments(any_segment_tag)?;
                pl.discontinuity_sequence = parse_int(&need(rest)?, ln)?;
            }
            "#EXT-X-PLAYLIST-TYPE" => {
                once("EXT-X-PLAYLIST-TYPE", ln)?;
                let v = need(rest)?;
                if v != "EVENT" && v != "VOD" {
                    return err(ln, format!("bad EXT-X-PLAYLIST-TYPE {v:?}"));
                }
                pl.playlist_type = Some(v);
            }
            "#EXT-X-INDEPENDENT-SEGMENTS" => {
                pl.independent_segments = true;
            }
            "#EXT-X-START" => {
                parse_attrs(&need(rest)?, ln)?;
            }
            "#EXT-X-PART-INF" => {
                once("EXT-X-PART-INF", ln)?;
                let a = parse_attrs(&need(rest)?, ln)?;
                let Some(pt) = a.0.get("PART-TARGET") else {
                    return err(ln, "EXT-X-PART-INF without PART-TARGET (4.4.3.7)");
                };
                let AttrValue::Bare(pt) = pt else {
                    return err(ln, "PART-TARGET is quoted");
                };
                pl.part_target = Some(parse_dec(pt, ln)?);
            }
            "#EXT-X-SERVER-CONTROL" => {
                once("EXT-X-SERVER-CONTROL", ln)?;
                let a = parse_attrs(&need(rest)?, ln)?;
                let num = |k: &str| -> Result<Option<f64>, ParseError> {
                    a.get(k).map(|v| parse_dec(v, ln)).transpose()
                };
                pl.server_control = Some(ServerControl {
                    can_block_reload: yes(&a, "CAN-BLOCK-RELOAD", ln)?,
                    can_skip_until: num("CAN-SKIP-UNTIL")?,
                    can_skip_dateranges: yes(&a, "CAN-SKIP-DATERANGES", ln)?,
                    hold_back: num("HOLD-BACK")?,
                    part_hold_back: num("PART-HOLD-BACK")?,
                });
            }
            "#EXT-X-SKIP" => {
                once("EXT-X-SKIP", ln)?;
                if any_segment_tag {
                    return err(ln, "EXT-X-SKIP after segments");
                }
                let a = parse_attrs(&need(rest)?, ln)?;
                let Some(n) = a.get("SKIPPED-SEGMENTS") else {
                    return err(ln, "EXT-X-SKIP without SKIPPED-SEGMENTS (4.4.5.2)");
                };
                let n = parse_int(n, ln)?;
                after_skip_msn = Some(pl.media_sequence + n);
                pl.skip = Some(Skip {
                    skipped_segments: n,
                    recently_removed_dateranges: a
                        .quoted("RECENTLY-REMOVED-DATERANGES")
                        .map(str::to_string),
                });
            }
            "#EXTINF" => {
                any_segment_tag = true;
                if pending_inf.is_some() {
                    return err(ln, "two EXTINF without a URI between them");
                }
                let v = need(rest)?;
                let (d, t) = v.split_once(',').unwrap_or((&v, ""));
                pending_inf = Some((parse_dec(d, ln)?, t.to_string(), ln));
            }
            "#EXT-X-PART" => {
                any_segment_tag = true;
                if pending_inf.is_some() {
                    return err(ln, "EXT-X-PART between EXTINF and its URI");
                }
                pending_parts.push(parse_part(&need(rest)?, ln)?);
            }
            "#EXT-X-DISCONTINUITY" => {
                any_segment_tag = true;
                if !pending_parts.is_empty() {
                    return err(
                        ln,
                        "EXT-X-DISCONTINUITY after the first EXT-X-PART of its segment (4.4.4.9)",
                    );
                }
                pending_disc = true;
                pl.discontinuity_tags += 1;
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                any_segment_tag = true;
                if !pending_parts.is_empty() {
                    return err(
                        ln,
                        "EXT-X-PROGRAM-DATE-TIME after the first EXT-X-PART of its segment (4.4.4.9)",
                    );
                }
                let v = need(rest)?;
                pending_pdt = Some(parse_date_time(&v).ok_or(ParseError {
                    line: ln,
                    msg: format!("bad date-time {v:?}"),
                })?);
            }
            "#EXT-X-MAP" => {
                any_segment_tag = true;
                if !pending_parts.is_empty() {
                    return err(
                        ln,
                        "EXT-X-MAP after the first EXT-X-PART of its segment (4.4.4.9)",
                    );
                }
                let a = parse_attrs(&need(rest)?, ln)?;
                let uri = req_quoted(&a, "URI", "EXT-X-MAP", ln)?.to_string();
                if pl.map_uri.is_none() {
                    pl.map_uri = Some(uri.clone());
                }
                cur_map = Some(uri);
            }
            "#EXT-X-GAP" => {
                any_segment_tag = true;
                pending_gap = true;
            }
            "#EXT-X-BITRATE" => {
                cur_bitrate = Some(parse_int(&need(rest)?, ln)?);
            }
            "#EXT-X-KEY" | "#EXT-X-BYTERANGE" => {
                return err(ln, format!("{tag} not expected from this node"));
            }
            "#EXT-X-DATERANGE" => {
                let a = parse_attrs(&need(rest)?, ln)?;
                req_quoted(&a, "ID", "EXT-X-DATERANGE", ln)?;
                pl.dateranges += 1;
            }
            "#EXT-X-PRELOAD-HINT" => {
                let a = parse_attrs(&need(rest)?, ln)?;
                let kind = match a.get("TYPE") {
                    Some(t @ ("PART" | "MAP")) => t.to_string(),
                    other => {
                        return err(
                            ln,
                            format!("EXT-X-PRELOAD-HINT TYPE must be PART or MAP, got {other:?}"),
                        );
                    }
                };
                if pl.preload_hints.iter().any(|h| h.kind == kind) {
                    return err(ln, format!("two EXT-X-PRELOAD-HINT with TYPE={kind}"));
                }
                let uri = req_quoted(&a, "URI", "EXT-X-PRELOAD-HINT", ln)?.to_string();
                let int = |k: &str| a.get(k).map(|v| parse_int(v, ln)).transpose();
                pl.preload_hints.push(PreloadHint {
                    kind,
                    uri,
                    byterange_start: int("BYTERANGE-START")?,
                    byterange_length: int("BYTERANGE-LENGTH")?,
                });
            }
            "#EXT-X-RENDITION-REPORT" => {
                let a = parse_attrs(&need(rest)?, ln)?;
                let uri = req_quoted(&a, "URI", "EXT-X-RENDITION-REPORT", ln)?.to_string();
                let int = |k: &str| a.get(k).map(|v| parse_int(v, ln)).transpose();
                pl.rendition_reports.push(RenditionReport {
                    uri,
                    last_msn: int("LAST-MSN")?,
                    last_part: int("LAST-PART")?,
                });
            }
            "#EXT-X-ENDLIST" => {
                once("EXT-X-ENDLIST", ln)?;
                pl.endlist = true;
            }
            "#EXT-X-STREAM-INF"
            | "#EXT-X-MEDIA"
            | "#EXT-X-I-FRAME-STREAM-INF"
            | "#EXT-X-SESSION-DATA" => {
                return err(
                    ln,
                    format!("multivariant tag {tag} in a media playlist (4.4.6)"),
                );
            }
            _ => pl.unknown_tags.push(l.to_string()),
        }
    }
    if let Some((_, _, ln)) = pending_inf {
        return err(ln, "EXTINF without a URI line");
    }
    pl.open_parts = pending_parts;
    pl.open_pdt = pending_pdt;
    pl.open_discontinuity = pending_disc;
    pl.open_map_uri = cur_map;
    if pl.target_duration.is_none() {
        return err(0, "EXT-X-TARGETDURATION missing (REQUIRED, 4.4.3.1)");
    }
    Ok(pl)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub attrs: Attrs,
    pub uri: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Multivariant {
    pub version: Option<u64>,
    pub independent_segments: bool,
    pub media: Vec<Attrs>,
    pub variants: Vec<Variant>,
    pub unknown_tags: Vec<String>,
}

pub fn parse_multivariant(text: &str) -> Result<Multivariant, ParseError> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => return err(1, "first line is not #EXTM3U (4.4.1.1)"),
    }
    let mut mv = Multivariant::default();
    let mut pending: Option<Attrs> = None;
    for (ln, l) in lines {
        if l.is_empty() {
            continue;
        }
        if !l.starts_with('#') {
            let Some(a) = pending.take() else {
                return err(ln, format!("URI line {l:?} without EXT-X-STREAM-INF"));
            };
            mv.variants.push(Variant {
                attrs: a,
                uri: l.to_string(),
            });
            continue;
        }
        let (tag, rest) = l.split_once(':').unwrap_or((l, ""));
        match tag {
            "#EXT-X-VERSION" => mv.version = Some(parse_int(rest, ln)?),
            "#EXT-X-INDEPENDENT-SEGMENTS" => mv.independent_segments = true,
            "#EXT-X-MEDIA" => mv.media.push(parse_attrs(rest, ln)?),
            "#EXT-X-STREAM-INF" => {
                if pending.is_some() {
                    return err(ln, "EXT-X-STREAM-INF without URI");
                }
                pending = Some(parse_attrs(rest, ln)?);
            }
            "#EXTINF"
            | "#EXT-X-TARGETDURATION"
            | "#EXT-X-MEDIA-SEQUENCE"
            | "#EXT-X-PART"
            | "#EXT-X-PART-INF" => {
                return err(
                    ln,
                    format!("media playlist tag {tag} in a multivariant playlist"),
                );
            }
            t if t.starts_with("#EXT") => mv.unknown_tags.push(l.to_string()),
            _ => {}
        }
    }
    if pending.is_some() {
        return err(0, "EXT-X-STREAM-INF without URI at end");
    }
    Ok(mv)
}

/// Resolves `uri` against the URL of the playlist that contains it.
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return uri.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if let Some(path) = uri.strip_prefix('/') {
        // scheme://host/...
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[after_scheme..]
            .find('/')
            .map(|i| i + after_scheme)
            .unwrap_or(base.len());
        return format!("{}/{}", &base[..host_end], path);
    }
    let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
    let mut out = format!("{dir}{uri}");
    // collapse "x/../"
    while let Some(i) = out.find("/../") {
        let head = &out[..i];
        let cut = head.rfind('/').map(|j| j + 1).unwrap_or(0);
        out = format!("{}{}", &out[..cut], &out[i + 4..]);
    }
    out.replace("/./", "/")
}
