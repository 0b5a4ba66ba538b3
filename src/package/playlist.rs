//! Media and multivariant playlist text from typed models.
//!
//! Pure: renders what it is given. Must never decide what a playlist
//! contains (the store does) and never block or read a clock.

use super::metadata::{DATERANGE_CLASS, DateRange, Payload};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 8216bis 4.4.3.8: "The Skip Boundary MUST be at least six times the
/// Target Duration."
const SKIP_BOUNDARY_TARGETS: u32 = 6;
/// Apple HLS authoring spec 14.3: "The PART-HOLD-BACK value MUST be at least
/// three times the Part Target Duration."
const PART_HOLD_BACK_PARTS: u32 = 3;
/// RFC 8216bis 6.2.2: "EXT-X-PART tags SHOULD be removed from the Playlist
/// after they are greater than three Target Durations from the end of the
/// Playlist."
const PART_LIST_TARGETS: u32 = 3;

/// `_HLS_skip`: which Playlist Delta Update the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `YES`: skip old segments.
    Segments,
    /// `v2`: skip old segments and old EXT-X-DATERANGE tags.
    SegmentsAndDateRanges,
}

/// One partial segment as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub uri: String,
    pub duration: Duration,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// Tags that apply to a segment and must precede its first part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHead {
    pub msn: u64,
    pub discontinuity: bool,
    /// EXT-X-MAP URI in force for this segment.
    pub map_uri: String,
    pub program_date_time: SystemTime,
    /// Timed metadata placed in this segment, listed while it is.
    pub date_ranges: Vec<Arc<DateRange>>,
}

/// A complete media segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub head: SegmentHead,
    pub uri: String,
    pub duration: Duration,
    /// No media: listed with EXT-X-GAP so sequence numbers stay aligned.
    pub gap: bool,
    pub parts: Vec<Part>,
}

/// The segment being filled: its head and the parts published so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSegment {
    pub head: SegmentHead,
    pub parts: Vec<Part>,
}

/// The last part of another rendition, for EXT-X-RENDITION-REPORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionReport {
    /// Relative to the playlist that carries the report.
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<u32>,
}

/// Everything a live media playlist says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds. Never changes for a playlist.
    pub target_duration: u32,
    /// PART-TARGET. Never changes for a playlist.
    pub part_target: Duration,
    /// Media sequence number of `segments[0]`.
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<Segment>,
    pub open: Option<OpenSegment>,
    /// URI of the next part, while a stream is producing.
    pub preload_hint: Option<String>,
    pub ended: bool,
    /// IDs of date ranges whose segments left the window, with the media
    /// sequence number at which they left, for RECENTLY-REMOVED-DATERANGES.
    pub removed_date_ranges: VecDeque<(String, u64)>,
}

impl MediaPlaylist {
    pub fn new(target_duration: u32, part_target: Duration, media_sequence: u64) -> Self {
        MediaPlaylist {
            target_duration,
            part_target,
            media_sequence,
            discontinuity_sequence: 0,
            segments: Vec::new(),
            open: None,
            preload_hint: None,
            ended: false,
            removed_date_ranges: VecDeque::new(),
        }
    }

    /// MSN of the last complete segment, if any.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.head.msn)
    }

    /// MSN of the segment being filled, or that will be filled next.
    pub fn next_msn(&self) -> u64 {
        match (&self.open, self.segments.last()) {
            (Some(o), _) => o.head.msn,
            (None, Some(s)) => s.head.msn + 1,
            (None, None) => self.media_sequence,
        }
    }

    /// (MSN, part index) of the newest part listed anywhere.
    pub fn last_part(&self) -> Option<(u64, u32)> {
        if let Some(o) = &self.open
            && let Some(last) = o.parts.len().checked_sub(1)
        {
            return Some((o.head.msn, last as u32));
        }
        let s = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((s.head.msn, s.parts.len() as u32 - 1))
    }

    /// The part an EXT-X-RENDITION-REPORT names for this playlist: its last
    /// one, except that the first part of a segment is reported as the part
    /// before it. hls.js (1.7) reads LAST-PART as `parseInt(..) ||` the last
    /// part index of the playlist it is leaving, so a report of part 0 sends
    /// its level switch to block on a part up to a whole segment ahead, and
    /// playback stalls. A report one part old is still "as up-to-date as
    /// the Playlist that contains it" allows for a rendition rendered a
    /// moment apart (RFC 8216bis 4.4.5.4), and the blocking reload that
    /// follows it is answered at once.
    pub fn reported_part(&self) -> Option<(u64, u32)> {
        let (msn, part) = self.last_part()?;
        if part > 0 {
            return Some((msn, part));
        }
        let before = msn
            .checked_sub(1)
            .and_then(|m| Some((m, self.segment(m)?.parts.len().checked_sub(1)? as u32)));
        Some(before.unwrap_or((msn, 0)))
    }

    /// Whether the playlist already holds part `part` of segment `msn` (or
    /// something later), per RFC 8216bis 6.2.5.2: a complete segment holds
    /// all its parts, and "If the Client requests a Part Index greater than
    /// that of the final Partial Segment of the Parent Segment, the Server
    /// MUST treat the request as one for Part Index 0 of the following
    /// Parent Segment."
    pub fn has_part(&self, msn: u64, part: u32) -> bool {
        if msn < self.media_sequence {
            return true;
        }
        if let Some(seg) = self.segment(msn) {
            return (part as usize) < seg.parts.len() || self.has_part(msn + 1, 0);
        }
        match &self.open {
            Some(o) if o.head.msn == msn => (part as usize) < o.parts.len(),
            _ => false,
        }
    }

    /// Whether an update shows the newest complete segment still open (its
    /// parts, no EXTINF) until the next segment has a part. hls.js 1.7 takes
    /// a segment for fully buffered when what it buffered ends within 0.2 s
    /// (its fragment tracker's padding, one part here) of the segment's end:
    /// if its start-up burst of parts up to the second-to-last is buffered
    /// after the update that completed the segment, it attributes them to
    /// the complete segment, never loads the last part, and stalls there
    /// for about 6.5 s (then plays seconds behind). Listing the completion
    /// one part later leaves that burst a part's time to be attributed to the
    /// open segment, whose rest hls.js then loads. The first complete
    /// segment is never held, so a listed rendition always has one.
    pub fn holds_newest(&self) -> bool {
        // A paused, retired or ended stream (no hint) has nothing to come.
        !self.ended
            && self.preload_hint.is_some()
            && self.segments.len() >= 2
            && self.open.as_ref().is_none_or(|o| o.parts.is_empty())
            && self
                .segments
                .last()
                .is_some_and(|s| !s.gap && !s.parts.is_empty())
    }

    /// Whether the playlist holds complete segment `msn` or a later one.
    pub fn has_segment(&self, msn: u64) -> bool {
        self.last_msn().is_some_and(|last| last >= msn) || msn < self.media_sequence
    }

    /// The complete segment `msn`, if listed.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let i = usize::try_from(msn.checked_sub(self.media_sequence)?).ok()?;
        self.segments.get(i)
    }

    /// PART-HOLD-BACK: three PART-TARGETs exactly.
    pub fn part_hold_back(&self) -> Duration {
        self.part_target * PART_HOLD_BACK_PARTS
    }

    /// CAN-SKIP-UNTIL: six target durations.
    pub fn skip_boundary(&self) -> Duration {
        Duration::from_secs(u64::from(self.target_duration * SKIP_BOUNDARY_TARGETS))
    }

    /// How many leading segments a delta update replaces with EXT-X-SKIP:
    /// those whose end is further than the Skip Boundary from the end of
    /// the last segment.
    fn skippable(&self) -> usize {
        let boundary = self.skip_boundary();
        let mut after = Duration::ZERO;
        let mut keep = 0;
        for s in self.segments.iter().rev() {
            if after > boundary {
                break;
            }
            after += s.duration;
            keep += 1;
        }
        self.segments.len() - keep
    }

    /// Index of the first segment whose parts are still listed.
    fn first_with_parts(&self) -> usize {
        let limit = Duration::from_secs(u64::from(self.target_duration * PART_LIST_TARGETS));
        let mut after = Duration::ZERO;
        let mut first = self.segments.len();
        for (i, s) in self.segments.iter().enumerate().rev() {
            if after >= limit {
                break;
            }
            after += s.duration;
            first = i;
        }
        first
    }
}

/// Renders a media playlist, as a delta update when `skip` asks for one,
/// with the newest segment shown open where `hold_newest` and
/// [`MediaPlaylist::holds_newest`] say so.
pub fn render_media(
    pl: &MediaPlaylist,
    skip: Option<Skip>,
    reports: &[RenditionReport],
    hold_newest: bool,
) -> String {
    let held = (hold_newest && pl.holds_newest())
        .then(|| pl.segments.last())
        .flatten();
    let complete = &pl.segments[..pl.segments.len() - usize::from(held.is_some())];
    // RFC 8216bis 6.2.5.1: "A Server MUST ignore the _HLS_skip directive if
    // the Playlist [...] contains an EXT-X-ENDLIST tag."
    let skip = skip.filter(|_| !pl.ended);
    let skipped = if skip.is_some() { pl.skippable() } else { 0 };
    let skip_dateranges = skipped > 0 && skip == Some(Skip::SegmentsAndDateRanges);
    let mut out = String::with_capacity(4096);
    let w = &mut out;
    line(w, "#EXTM3U");
    // RFC 8216bis 8: "A Playlist MUST indicate an EXT-X-VERSION of 9 or
    // higher if it contains: The EXT-X-SKIP tag" and "of 10 or higher if it
    // contains: An EXT-X-SKIP tag that replaces EXT-X-DATERANGE tags".
    let _ = writeln!(w, "#EXT-X-VERSION:{}", if skip_dateranges { 10 } else { 9 });
    let _ = writeln!(w, "#EXT-X-TARGETDURATION:{}", pl.target_duration);
    let hold_back = secs3(pl.part_hold_back());
    if pl.ended {
        // PART-HOLD-BACK "is REQUIRED if the Playlist contains the
        // EXT-X-PART-INF tag"; blocking and skipping mean nothing once ended
        // (and Apple's player rejects CAN-BLOCK-RELOAD beside ENDLIST).
        let _ = writeln!(w, "#EXT-X-SERVER-CONTROL:PART-HOLD-BACK={hold_back}");
    } else {
        let _ = writeln!(
            w,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={hold_back},CAN-SKIP-UNTIL={},CAN-SKIP-DATERANGES=YES",
            secs3(pl.skip_boundary())
        );
    }
    let _ = writeln!(w, "#EXT-X-PART-INF:PART-TARGET={}", secs3(pl.part_target));
    let _ = writeln!(w, "#EXT-X-MEDIA-SEQUENCE:{}", pl.media_sequence);
    // Apple HLS authoring spec 8.17: "If live (linear) content will ever
    // contain an EXT-X-DISCONTINUITY tag, the EXT-X-DISCONTINUITY-SEQUENCE
    // tag MUST always be present." A publisher can always reconnect.
    let _ = writeln!(
        w,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        pl.discontinuity_sequence
    );
    if skipped > 0 {
        if skip_dateranges {
            // RFC 8216bis 4.4.5.2: RECENTLY-REMOVED-DATERANGES "is REQUIRED
            // if the Client requested an update that skips EXT-X-DATERANGE
            // tags": a tab-delimited list of the IDs of date ranges removed
            // from the Playlist recently (here: whose segments left the
            // window within the last window's worth of segments).
            let ids: Vec<&str> = pl
                .removed_date_ranges
                .iter()
                .map(|(id, _)| id.as_str())
                .collect();
            let _ = writeln!(
                w,
                "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped},RECENTLY-REMOVED-DATERANGES=\"{}\"",
                ids.join("\t")
            );
        } else {
            let _ = writeln!(w, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            // `_HLS_skip=YES` asks to skip Media Segments only: a client
            // that did not ask for v2 keeps no date ranges across updates,
            // so those of the skipped segments are still listed (RFC
            // 8216bis 6.2.5.1 lets only a v2 request skip EXT-X-DATERANGE).
            for s in complete.iter().take(skipped) {
                for d in &s.head.date_ranges {
                    date_range(w, d);
                }
            }
        }
    }
    let first_parts = pl.first_with_parts();
    let mut map: Option<&str> = None;
    for (i, s) in complete.iter().enumerate().skip(skipped) {
        head(w, &s.head, &mut map);
        if i >= first_parts {
            for p in &s.parts {
                part(w, p);
            }
        }
        segment_line(w, s.gap, s.duration, &s.uri);
    }
    let open = held
        .map(|s| (&s.head, &s.parts))
        .or_else(|| pl.open.as_ref().map(|o| (&o.head, &o.parts)));
    if let Some((h, parts)) = open {
        head(w, h, &mut map);
        for p in parts {
            part(w, p);
        }
    }
    // While the newest segment is held, the hint names the next segment's
    // first part, as Apple's reference segmenter writes it between a
    // segment's last part and the playlist update that completes it.
    if !pl.ended
        && let Some(uri) = &pl.preload_hint
    {
        // RFC 8216bis 4.4.5.3: "A Playlist containing an EXT-X-ENDLIST tag
        // MUST NOT contain an EXT-X-PRELOAD-HINT tag."
        let _ = writeln!(w, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{uri}\"");
    }
    for r in reports {
        let _ = write!(
            w,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
            r.uri, r.last_msn
        );
        if let Some(p) = r.last_part {
            let _ = write!(w, ",LAST-PART={p}");
        }
        line(w, "");
    }
    if pl.ended {
        line(w, "#EXT-X-ENDLIST");
    }
    out
}

/// One segment of a VOD media playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct VodSegment {
    pub uri: String,
    pub duration: Duration,
    pub gap: bool,
    pub discontinuity: bool,
    /// EXT-X-MAP URI in force for this segment.
    pub map_uri: String,
    /// The segment's date: written only before a date range, since
    /// EXT-X-DATERANGE needs a date to stand on.
    pub program_date_time: SystemTime,
    /// Timed metadata placed in this segment.
    pub date_ranges: Vec<Arc<DateRange>>,
}

/// A complete on-demand media playlist: no parts, no blocking, no dates.
#[derive(Clone, Debug, PartialEq)]
pub struct VodPlaylist {
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// The configured target; a longer segment raises it.
    pub target_duration: u32,
    pub segments: Vec<VodSegment>,
}

/// Renders a VOD media playlist.
pub fn render_vod(pl: &VodPlaylist) -> String {
    // RFC 8216bis 4.4.3.1: "The EXTINF duration of each Media Segment in
    // the Playlist file, when rounded to the nearest integer, MUST be less
    // than or equal to the Target Duration".
    let longest = pl
        .segments
        .iter()
        .map(|s| s.duration.as_secs_f64().round() as u32)
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(64 * pl.segments.len() + 256);
    out.push_str(&render_vod_head(pl, longest));
    let mut map: Option<&str> = None;
    for s in &pl.segments {
        render_vod_segment(&mut out, s, map);
        map = Some(&s.map_uri);
    }
    line(&mut out, "#EXT-X-ENDLIST");
    out
}

/// A VOD playlist's tags before its first segment; `longest` is its
/// longest segment, rounded.
pub fn render_vod_head(pl: &VodPlaylist, longest: u32) -> String {
    let mut out = String::with_capacity(256);
    let w = &mut out;
    line(w, "#EXTM3U");
    // RFC 8216bis 8: EXT-X-MAP in a playlist without EXT-X-I-FRAMES-ONLY
    // needs compatibility version 6.
    line(w, "#EXT-X-VERSION:6");
    let _ = writeln!(
        w,
        "#EXT-X-TARGETDURATION:{}",
        pl.target_duration.max(longest).max(1)
    );
    line(w, "#EXT-X-PLAYLIST-TYPE:VOD");
    let _ = writeln!(w, "#EXT-X-MEDIA-SEQUENCE:{}", pl.media_sequence);
    if pl.discontinuity_sequence > 0 {
        let _ = writeln!(
            w,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            pl.discontinuity_sequence
        );
    }
    out
}

/// One segment's lines of a VOD playlist; `map` is the EXT-X-MAP in force
/// before it.
pub fn render_vod_segment(w: &mut String, s: &VodSegment, map: Option<&str>) {
    if s.discontinuity {
        line(w, "#EXT-X-DISCONTINUITY");
    }
    if map != Some(s.map_uri.as_str()) {
        let _ = writeln!(w, "#EXT-X-MAP:URI=\"{}\"", s.map_uri);
    }
    if !s.date_ranges.is_empty() {
        // RFC 8216bis 4.4.5.1: "If a Playlist contains an
        // EXT-X-DATERANGE tag, it MUST also contain at least one
        // EXT-X-PROGRAM-DATE-TIME tag."
        let _ = writeln!(
            w,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            program_date_time(s.program_date_time)
        );
        for d in &s.date_ranges {
            date_range(w, d);
        }
    }
    segment_line(w, s.gap, s.duration, &s.uri);
}

/// A complete segment's own lines, live or VOD: RFC 8216bis 4.4.4.7
/// EXT-X-GAP for a segment without media, its EXTINF and its URI.
fn segment_line(w: &mut String, gap: bool, duration: Duration, uri: &str) {
    if gap {
        line(w, "#EXT-X-GAP");
    }
    let _ = writeln!(w, "#EXTINF:{},", secs5(duration));
    line(w, uri);
}

/// The tags before a segment's first part. RFC 8216bis 4.4.4.9: tags
/// "applied to a Parent Segment [...] MUST appear before the first
/// EXT-X-PART tag of that Parent Segment."
fn head<'a>(w: &mut String, h: &'a SegmentHead, map: &mut Option<&'a str>) {
    if h.discontinuity {
        line(w, "#EXT-X-DISCONTINUITY");
    }
    // Repeated after EXT-X-SKIP too: the first listed segment must not rely
    // on a MAP tag that the delta update skipped.
    if *map != Some(h.map_uri.as_str()) {
        let _ = writeln!(w, "#EXT-X-MAP:URI=\"{}\"", h.map_uri);
        *map = Some(&h.map_uri);
    }
    let _ = writeln!(
        w,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        program_date_time(h.program_date_time)
    );
    // Also before the first EXT-X-PART (RFC 8216bis 4.4.4.9, above), so a
    // player has the range before it loads the part that carries its emsg.
    for d in &h.date_ranges {
        date_range(w, d);
    }
}

/// One EXT-X-DATERANGE tag (RFC 8216bis 4.4.5.1). "If a Playlist contains
/// an EXT-X-DATERANGE tag, it MUST also contain at least one
/// EXT-X-PROGRAM-DATE-TIME tag": every live segment head has one.
pub fn date_range(w: &mut String, d: &DateRange) {
    // ID and START-DATE are REQUIRED; CLASS names this node's semantics
    // ("All EXT-X-DATERANGE tags with the same CLASS attribute value MUST
    // adhere to these semantics").
    let _ = write!(
        w,
        "#EXT-X-DATERANGE:ID=\"{}\",CLASS=\"{DATERANGE_CLASS}\",START-DATE=\"{}\"",
        d.id,
        program_date_time(d.start)
    );
    if let Some(dur) = d.duration {
        let _ = write!(w, ",DURATION={}", secs3(dur));
    }
    match &d.payload {
        // A quoted-string "MUST NOT contain CR, LF, or double quote"
        // (RFC 8216bis 4.2): text with them goes as bytes.
        Payload::Text(t) if !t.contains(['"', '\r', '\n']) => {
            let _ = write!(w, ",X-RUNGS-TEXT=\"{t}\"");
        }
        Payload::Text(t) => hex_attr(w, t.as_bytes()),
        Payload::Bytes(b) => hex_attr(w, b),
    }
    line(w, "");
}

/// `X-RUNGS-DATA=0x...`: a hexadecimal-sequence (RFC 8216bis 4.2).
fn hex_attr(w: &mut String, bytes: &[u8]) {
    w.push_str(",X-RUNGS-DATA=0x");
    for b in bytes {
        let _ = write!(w, "{b:02X}");
    }
}

fn part(w: &mut String, p: &Part) {
    let _ = write!(
        w,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        secs5(p.duration),
        p.uri
    );
    if p.independent {
        w.push_str(",INDEPENDENT=YES");
    }
    line(w, "");
}

fn line(w: &mut String, s: &str) {
    w.push_str(s);
    w.push('\n');
}

/// Seconds with millisecond precision, for values that are whole
/// milliseconds (PART-TARGET and what derives from it).
fn secs3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Seconds with 10 µs precision: EXTINF sums must stay within a frame of the
/// media over many segments (Apple HLS authoring spec 8.1), which
/// milliseconds alone would not over a long playlist. Rounded down: hls.js
/// adds up these durations to find where a part ends and loads the next part
/// only once the buffer reaches that point, so a sum past the media's real
/// end, by even a few microseconds, would leave it waiting for good.
fn secs5(d: Duration) -> String {
    let tens_of_us = d.as_nanos() / 10_000;
    format!("{}.{:05}", tens_of_us / 100_000, tens_of_us % 100_000)
}

/// ISO 8601 UTC with milliseconds and `Z`, e.g. `2025-01-31T12:00:00.123Z`.
pub fn program_date_time(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), to avoid a date crate for one format.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One EXT-X-STREAM-INF entry of the multivariant playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub uri: String,
    /// Peak segment bit rate of the video plus the audio it plays with.
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    /// RFC 6381 codecs of every rendition the variant plays.
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    pub audio_group: Option<String>,
}

/// A video rendition's bit rates: measured over its segments, or before any
/// segment, declared by its encoder.
#[derive(Clone, Copy, Debug)]
pub struct VideoRates {
    /// (peak, average) in bits per second; (0, 0) while nothing is measured.
    pub measured: (u64, u64),
    pub declared: Option<u64>,
}

/// The audio rendition every video variant plays with.
#[derive(Clone, Copy, Debug)]
pub struct VariantAudio<'a> {
    pub codecs: &'a str,
    /// (peak, average) in bits per second.
    pub rates: (u64, u64),
}

impl Variant {
    /// The EXT-X-STREAM-INF entry of video rendition `name`, the same for the
    /// live multivariant playlist and the VOD one.
    pub fn video(
        name: &str,
        codecs: &str,
        resolution: (u32, u32),
        frame_rate: Option<f64>,
        rates: VideoRates,
        audio: Option<VariantAudio<'_>>,
    ) -> Self {
        let (peak, avg) = match rates {
            // Before any measurement: the declared rate plus 10% for the
            // encoder's overshoot.
            VideoRates {
                measured: (0, 0),
                declared: Some(d),
            } => (d + d / 10, d),
            VideoRates { measured, .. } => measured,
        };
        let (audio_peak, audio_avg) = audio.map_or((0, 0), |a| a.rates);
        Variant {
            uri: format!("{name}/index.m3u8"),
            // Apple HLS authoring spec 9.13: "The BANDWIDTH attribute MUST be
            // the largest sum of peak segment bit rates that's produced by any
            // playable combination of renditions."
            bandwidth: peak + audio_peak,
            average_bandwidth: avg + audio_avg,
            codecs: match audio {
                Some(a) => format!("{codecs},{}", a.codecs),
                None => codecs.to_owned(),
            },
            resolution: Some(resolution),
            frame_rate,
            audio_group: audio.map(|_| "audio".to_owned()),
        }
    }
}

/// One EXT-X-MEDIA TYPE=AUDIO entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioMedia {
    pub group_id: String,
    pub name: String,
    pub uri: String,
    pub default: bool,
}

/// Renders the multivariant playlist with m3u8-rs, which can express every
/// tag it needs.
pub fn render_master(
    independent_segments: bool,
    variants: &[Variant],
    audio: &[AudioMedia],
) -> String {
    use m3u8_rs::{
        AlternativeMedia, AlternativeMediaType, MasterPlaylist, Resolution, VariantStream,
    };
    let pl = MasterPlaylist {
        independent_segments,
        alternatives: audio
            .iter()
            .map(|a| AlternativeMedia {
                media_type: AlternativeMediaType::Audio,
                uri: Some(a.uri.clone()),
                group_id: a.group_id.clone(),
                name: a.name.clone(),
                default: a.default,
                autoselect: true,
                ..Default::default()
            })
            .collect(),
        variants: variants
            .iter()
            .map(|v| VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: Some(v.average_bandwidth),
                codecs: Some(v.codecs.clone()),
                resolution: v.resolution.map(|(width, height)| Resolution {
                    width: u64::from(width),
                    height: u64::from(height),
                }),
                // Apple HLS authoring spec 9.15: "Each EXT-X-STREAM-INF tag
                // that includes video content MUST have a FRAME-RATE
                // attribute"; RFC 8216bis rounds it to three decimals.
                frame_rate: v.frame_rate.map(|f| (f * 1000.0).round() / 1000.0),
                audio: v.audio_group.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = pl.write_to(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests;
