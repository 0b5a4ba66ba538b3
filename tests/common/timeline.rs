//! The timeline probe: follows every rendition of a live channel the way a
//! player would see it, and records each part's and segment's media time
//! (tfdt and sample durations from the fMP4 itself), duration as published,
//! independence and program-date-time. Its checks flag holes and overlaps
//! within a rendition, parts and segments whose published duration is not
//! their media's, dates that do not map to media time the same way all
//! along, renditions whose segments of the same MSN do not start at the same
//! time, and a multivariant playlist that lists a rendition whose media
//! playlist has no complete segment yet.
//!
//! It runs on its own thread beside a player and only reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::findings::Findings;
use super::fmp4::{Init, parse_fragments, parse_init};
use super::http::Http;
use super::playlist::{MediaPlaylist, Part, parse_media, parse_multivariant, resolve};

/// How often the probe reloads every playlist: well under a part, so that
/// no part is missed and a rendition listed too early is seen at once.
const RELOAD: Duration = Duration::from_millis(100);
/// Published durations are rounded to 5 decimals; a millisecond is far
/// beyond rounding and far below a frame.
const DURATION_TOLERANCE_S: f64 = 0.0015;
/// Media times within a rendition are exact; a millisecond covers only the
/// conversion of timescales to seconds.
const CONTIGUOUS_TOLERANCE_S: f64 = 0.001;
/// Video rungs of one MSN start at the same time: the transcoded rungs take
/// the source frame's pts.
const ALIGN_TOLERANCE_S: f64 = 0.001;
/// Audio is cut at the first AAC frame that starts at or after video's cut:
/// never before it (a player that places audio where video's segment starts
/// would think it ends after its last frame), less than a frame after
/// (1024 samples at 44.1 kHz is 23.2 ms).
const AUDIO_AFTER_VIDEO_S: (f64, f64) = (-0.001, 0.0233 + 0.001);
/// A stream's audio starts with the publisher's first audio frame, which can
/// come up to a frame (1024 samples at 44.1 kHz) after its first picture.
const AUDIO_FRAME_S: f64 = 0.0233;
/// PROGRAM-DATE-TIME is written in milliseconds.
const DATE_TOLERANCE_S: f64 = 0.002;

/// One part or segment of one rendition, as published and as its bytes say.
#[derive(Debug, Clone)]
pub struct Piece {
    pub msn: u64,
    /// Index of the part in its segment; `None` for a whole segment.
    pub part: Option<usize>,
    pub published_duration: f64,
    pub independent: bool,
    pub gap: bool,
    pub discontinuity: bool,
    pub pdt: Option<f64>,
    /// Decode time of the first sample and the sum of sample durations, in
    /// seconds; `None` for gaps and anything that could not be read.
    pub start: Option<f64>,
    /// Presentation time of the earliest sample (decode time plus
    /// composition offset): where a player puts it on its timeline.
    pub presented: Option<f64>,
    pub media_duration: Option<f64>,
    pub first_sync: Option<bool>,
    /// When the probe first saw it listed, from the probe's start.
    pub seen_s: f64,
}

impl Piece {
    fn end(&self) -> Option<f64> {
        Some(self.start? + self.media_duration?)
    }

    fn presented_end(&self) -> Option<f64> {
        Some(self.presented? + self.media_duration?)
    }
}

/// What one rendition published over the run.
#[derive(Debug, Clone, Default)]
pub struct Rendition {
    pub name: String,
    pub video: bool,
    /// Keyed by (msn, part index); parts only.
    pub parts: BTreeMap<(u64, usize), Piece>,
    /// Complete segments, keyed by msn.
    pub segments: BTreeMap<u64, Piece>,
    /// Each init segment's picture size (video), in the order first seen.
    pub sizes: Vec<(u16, u16)>,
}

/// Everything the probe recorded.
#[derive(Debug, Default)]
pub struct Timeline {
    pub renditions: Vec<Rendition>,
    /// Renditions listed by a multivariant playlist while their media
    /// playlist had no complete segment: (name, seconds from start).
    pub listed_early: Vec<(String, f64)>,
    /// Multivariant reloads made.
    pub master_reloads: usize,
    pub errors: Vec<String>,
}

pub struct TimelineProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Timeline>>,
}

impl TimelineProbe {
    /// Starts following `master_url` at once; call [`Self::finish`] to stop.
    pub fn start(master_url: &str) -> TimelineProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let url = master_url.to_string();
        let thread = std::thread::Builder::new()
            .name("timeline-probe".into())
            .spawn(move || run(&url, &s))
            .expect("spawn the timeline probe");
        TimelineProbe {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for TimelineProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Follow {
    url: String,
    rendition: Rendition,
    inits: HashMap<String, Option<Init>>,
    /// Seen with a complete segment: a listing of it is no longer early.
    has_segment: bool,
}

fn run(master_url: &str, stop: &AtomicBool) -> Timeline {
    let http = Http::with_timeout(Duration::from_secs(5));
    let t0 = Instant::now();
    let mut tl = Timeline::default();
    let mut follows: Vec<Follow> = Vec::new();
    let mut early_seen: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        if let Some(listed) = reload_master(&http, master_url, &mut tl) {
            for (name, url, video) in listed {
                if !follows.iter().any(|f| f.url == url) {
                    follows.push(Follow {
                        url,
                        rendition: Rendition {
                            name,
                            video,
                            ..Default::default()
                        },
                        inits: HashMap::new(),
                        has_segment: false,
                    });
                }
            }
            // The media playlists are read after the multivariant one: a
            // segment that completes later cannot make an early listing
            // look fine, so what is flagged here was early for sure.
            for f in &mut follows {
                if let Some(pl) = fetch_playlist(&http, &f.url, &mut tl) {
                    if !pl.segments.is_empty() {
                        f.has_segment = true;
                    } else if !f.has_segment && early_seen.insert(f.rendition.name.clone()) {
                        tl.listed_early
                            .push((f.rendition.name.clone(), t0.elapsed().as_secs_f64()));
                    }
                    record(&http, f, &pl, t0, &mut tl);
                }
            }
        }
        let rest = RELOAD.saturating_sub(tick.elapsed());
        std::thread::sleep(rest);
    }
    tl.renditions = follows.into_iter().map(|f| f.rendition).collect();
    tl
}

/// The renditions the multivariant playlist lists: (name, URL, is video).
fn reload_master(http: &Http, url: &str, tl: &mut Timeline) -> Option<Vec<(String, String, bool)>> {
    let r = http.try_get(url).ok()?;
    if r.status != 200 {
        return None;
    }
    tl.master_reloads += 1;
    let mv = match parse_multivariant(&r.text()) {
        Ok(mv) => mv,
        Err(e) => {
            tl.errors.push(format!("multivariant: {e:?}"));
            return None;
        }
    };
    let mut out = Vec::new();
    for v in &mv.variants {
        let u = resolve(url, &v.uri);
        out.push((rendition_name(&u), u, true));
    }
    for m in &mv.media {
        if let Some(uri) = m.quoted("URI") {
            let u = resolve(url, uri);
            let video = m.get("TYPE") == Some("VIDEO");
            out.push((rendition_name(&u), u, video));
        }
    }
    Some(out)
}

/// `.../hls/<id>/<rendition>/index.m3u8` -> `<rendition>`.
fn rendition_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let mut it = path.rsplit('/');
    it.next();
    it.next().unwrap_or(path).to_string()
}

fn fetch_playlist(http: &Http, url: &str, tl: &mut Timeline) -> Option<MediaPlaylist> {
    let r = http.try_get(url).ok()?;
    if r.status != 200 {
        return None;
    }
    match parse_media(&r.text()) {
        Ok(pl) => Some(pl),
        Err(e) => {
            tl.errors.push(format!("{url}: {e:?}"));
            None
        }
    }
}

/// Records every part and complete segment of `pl` not recorded yet.
fn record(http: &Http, f: &mut Follow, pl: &MediaPlaylist, t0: Instant, tl: &mut Timeline) {
    let first = pl.media_sequence + pl.skip.as_ref().map_or(0, |s| s.skipped_segments);
    let seen_s = t0.elapsed().as_secs_f64();
    let mut map = pl.map_uri.clone();
    for (i, seg) in pl.segments.iter().enumerate() {
        let msn = first + i as u64;
        if seg.map_uri.is_some() {
            map = seg.map_uri.clone();
        }
        record_parts(
            http,
            f,
            msn,
            &seg.parts,
            seg.pdt,
            seg.discontinuity,
            map.as_deref(),
            seen_s,
        );
        if f.rendition.segments.contains_key(&msn) {
            continue;
        }
        let mut piece = Piece {
            msn,
            part: None,
            published_duration: seg.duration,
            independent: true,
            gap: seg.gap,
            discontinuity: seg.discontinuity,
            pdt: seg.pdt,
            start: None,
            presented: None,
            media_duration: None,
            first_sync: None,
            seen_s,
        };
        if !seg.gap {
            read_media(http, f, &seg.uri, map.as_deref(), &mut piece, tl);
        }
        f.rendition.segments.insert(msn, piece);
    }
    if pl.open_map_uri.is_some() {
        map = pl.open_map_uri.clone();
    }
    let open = first + pl.segments.len() as u64;
    record_parts(
        http,
        f,
        open,
        &pl.open_parts,
        pl.open_pdt,
        pl.open_discontinuity,
        map.as_deref(),
        seen_s,
    );
}

#[allow(clippy::too_many_arguments)]
fn record_parts(
    http: &Http,
    f: &mut Follow,
    msn: u64,
    parts: &[Part],
    seg_pdt: Option<f64>,
    discontinuity: bool,
    map: Option<&str>,
    seen_s: f64,
) {
    let mut pdt = seg_pdt;
    for (i, p) in parts.iter().enumerate() {
        if !f.rendition.parts.contains_key(&(msn, i)) {
            let mut piece = Piece {
                msn,
                part: Some(i),
                published_duration: p.duration,
                independent: p.independent,
                gap: p.gap,
                discontinuity: discontinuity && i == 0,
                pdt,
                start: None,
                presented: None,
                media_duration: None,
                first_sync: None,
                seen_s,
            };
            if !p.gap {
                let mut scratch = Timeline::default();
                read_media(http, f, &p.uri, map, &mut piece, &mut scratch);
            }
            f.rendition.parts.insert((msn, i), piece);
        }
        pdt = pdt.map(|d| d + p.duration);
    }
}

/// Fills in a piece's media time from its bytes (and its init segment's
/// timescale).
fn read_media(
    http: &Http,
    f: &mut Follow,
    uri: &str,
    map: Option<&str>,
    piece: &mut Piece,
    tl: &mut Timeline,
) {
    let Some(map) = map else {
        tl.errors
            .push(format!("{}: no EXT-X-MAP for {uri}", f.rendition.name));
        return;
    };
    let map_url = resolve(&f.url, map);
    if !f.inits.contains_key(&map_url) {
        let init = http
            .try_get(&map_url)
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| parse_init(&r.body).ok());
        if let Some(t) = init.as_ref().and_then(|i| i.tracks.first())
            && t.handler == "vide"
        {
            f.rendition.sizes.push((t.width, t.height));
        }
        f.inits.insert(map_url.clone(), init);
    }
    let Some(Some(init)) = f.inits.get(&map_url) else {
        tl.errors
            .push(format!("{}: unreadable init {map_url}", f.rendition.name));
        return;
    };
    let Some(track) = init.tracks.first() else {
        return;
    };
    let scale = f64::from(track.timescale.max(1));
    let url = resolve(&f.url, uri);
    let Some(bytes) = http
        .try_get(&url)
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
    else {
        tl.errors
            .push(format!("{}: could not fetch {url}", f.rendition.name));
        return;
    };
    match parse_fragments(&bytes, Some(init)) {
        Ok(frags) if !frags.is_empty() => {
            piece.start = Some(frags[0].base_decode_time as f64 / scale);
            let mut earliest = i128::MAX;
            for fr in &frags {
                let mut dts = i128::from(fr.base_decode_time);
                for s in &fr.samples {
                    earliest = earliest.min(dts + i128::from(s.cto));
                    dts += i128::from(s.duration);
                }
            }
            piece.presented = (earliest != i128::MAX).then(|| earliest as f64 / scale);
            let ticks: u64 = frags.iter().map(|fr| fr.duration()).sum();
            piece.media_duration = Some(ticks as f64 / scale);
            piece.first_sync = frags[0].samples.first().map(|s| s.is_sync());
        }
        Ok(_) => tl
            .errors
            .push(format!("{}: no fragment in {url}", f.rendition.name)),
        Err(e) => tl.errors.push(format!("{}: {url}: {e}", f.rendition.name)),
    }
}

impl Timeline {
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.name == name)
    }

    /// Every rule the probe knows, into `f` under `what`.
    pub fn check(&self, f: &Findings, what: &str) {
        f.check(
            self.master_reloads > 0,
            &format!("{what}: probe read the multivariant playlist"),
            || "no multivariant reload succeeded".into(),
        );
        for (name, at) in &self.listed_early {
            f.fail(
                &format!("{what}: the multivariant playlist lists a rendition only once it has a complete segment"),
                format!("{name} listed at {at:.2}s with no complete segment"),
            );
        }
        for e in &self.errors {
            f.fail(
                &format!("{what}: probe could read everything listed"),
                e.clone(),
            );
        }
        for r in &self.renditions {
            check_rendition(f, what, r);
        }
        let video: Vec<&Rendition> = self.renditions.iter().filter(|r| r.video).collect();
        if let Some((first, rest)) = video.split_first() {
            for other in rest {
                check_aligned(
                    f,
                    what,
                    first,
                    other,
                    (-ALIGN_TOLERANCE_S, ALIGN_TOLERANCE_S),
                );
            }
            for audio in self.renditions.iter().filter(|r| !r.video) {
                check_aligned(f, what, first, audio, AUDIO_AFTER_VIDEO_S);
            }
        }
    }

    /// One line per rendition: pieces recorded and the media time covered.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for r in &self.renditions {
            let (a, b) = (r.segments.keys().next(), r.segments.keys().last());
            s.push_str(&format!(
                "{}: {} segments (msn {a:?}..={b:?}), {} parts, {} gaps, sizes {:?}\n",
                r.name,
                r.segments.len(),
                r.parts.len(),
                r.segments.values().filter(|p| p.gap).count(),
                r.sizes
            ));
        }
        s
    }
}

fn check_rendition(f: &Findings, what: &str, r: &Rendition) {
    let name = &r.name;
    for (kind, pieces) in [("part", &r.parts), ("segment", &r.segments_by_part_key())] {
        let mut prev: Option<&Piece> = None;
        let mut anchor: Option<f64> = None;
        for p in pieces.values() {
            // The node's timeline never jumps, not even at a discontinuity
            // (a new configuration, a publisher's reconnect): only dates do.
            if p.discontinuity {
                anchor = None;
            }
            if p.gap {
                prev = None;
                continue;
            }
            let (Some(start), Some(dur)) = (p.start, p.media_duration) else {
                continue;
            };
            f.check(
                (p.published_duration - dur).abs() <= DURATION_TOLERANCE_S,
                &format!("{what}: a {kind}'s published duration is its media's"),
                || {
                    format!(
                        "{name} msn {} part {:?}: published {:.5}s, media {dur:.5}s",
                        p.msn, p.part, p.published_duration
                    )
                },
            );
            if p.independent
                && let Some(sync) = p.first_sync
            {
                f.check(
                    sync,
                    &format!("{what}: an independent {kind} starts with a sync sample"),
                    || format!("{name} msn {} part {:?}", p.msn, p.part),
                );
            }
            if r.video && p.part == Some(0) {
                f.check(
                    p.independent,
                    &format!("{what}: a video segment's first part is independent"),
                    || format!("{name} msn {}", p.msn),
                );
            }
            if let Some(q) = prev
                && let Some(end) = q.end()
                && contiguous(q, p)
            {
                let d = start - end;
                f.check(
                    d.abs() <= CONTIGUOUS_TOLERANCE_S,
                    &format!("{what}: {kind}s follow each other without hole or overlap"),
                    || {
                        format!(
                            "{name}: msn {} part {:?} ends at {end:.4}s, msn {} part {:?} starts at {start:.4}s ({} {:.4}s)",
                            q.msn, q.part, p.msn, p.part,
                            if d > 0.0 { "hole" } else { "overlap" }, d.abs()
                        )
                    },
                );
            }
            // A part's date is its segment's plus the parts before it: only
            // a segment's says where its first picture is presented.
            if let (Some(pdt), Some(presented), None) = (p.pdt, p.presented, p.part) {
                let offset = pdt - presented;
                match anchor {
                    None => anchor = Some(offset),
                    Some(a) => f.check(
                        (offset - a).abs() <= DATE_TOLERANCE_S,
                        &format!(
                            "{what}: program-date-time maps to media time the same way all along"
                        ),
                        || {
                            format!(
                                "{name} msn {} part {:?}: date - media time moved by {:.4}s",
                                p.msn,
                                p.part,
                                offset - a
                            )
                        },
                    ),
                }
            }
            prev = Some(p);
        }
    }
}

/// Consecutive pieces: the next part of a segment, the first part of the
/// next segment, or the next segment.
fn contiguous(a: &Piece, b: &Piece) -> bool {
    match (a.part, b.part) {
        (Some(i), Some(j)) => (b.msn == a.msn && j == i + 1) || (b.msn == a.msn + 1 && j == 0),
        (None, None) => b.msn == a.msn + 1,
        _ => false,
    }
}

impl Rendition {
    fn segments_by_part_key(&self) -> BTreeMap<(u64, usize), Piece> {
        self.segments
            .iter()
            .map(|(&msn, p)| ((msn, 0), p.clone()))
            .collect()
    }
}

/// Segments of the same MSN start and end at the same media time and date.
/// `b` starts and ends its segments within `range` (seconds) after `a`.
fn check_aligned(f: &Findings, what: &str, a: &Rendition, b: &Rendition, range: (f64, f64)) {
    for (msn, pa) in &a.segments {
        let Some(pb) = b.segments.get(msn) else {
            continue;
        };
        if pa.gap || pb.gap {
            continue;
        }
        let (Some(sa), Some(sb)) = (pa.presented, pb.presented) else {
            continue;
        };
        let first = a.segments.keys().next() == Some(msn) && !b.video;
        let start_hi = if first {
            range.1 + AUDIO_FRAME_S
        } else {
            range.1
        };
        f.check(
            sb - sa >= range.0 && sb - sa <= start_hi,
            &format!("{what}: segments of one MSN start at the same media time in every rendition"),
            || format!("msn {msn}: {} at {sa:.4}s, {} at {sb:.4}s", a.name, b.name),
        );
        if let (Some(ea), Some(eb)) = (pa.presented_end(), pb.presented_end()) {
            f.check(
                eb - ea >= range.0 && eb - ea <= range.1,
                &format!(
                    "{what}: segments of one MSN end at the same media time in every rendition"
                ),
                || {
                    format!(
                        "msn {msn}: {} ends at {ea:.4}s, {} at {eb:.4}s",
                        a.name, b.name
                    )
                },
            );
        }
        if let (Some(da), Some(db)) = (pa.pdt, pb.pdt) {
            // Dates follow media time: a rendition whose segment starts
            // later in media time is dated later by as much.
            let skew = (db - da) - (sb - sa);
            f.check(
                skew.abs() <= DATE_TOLERANCE_S,
                &format!("{what}: renditions date the same media time alike"),
                || {
                    format!(
                        "msn {msn}: {} dated {da:.3} at {sa:.4}s, {} dated {db:.3} at {sb:.4}s",
                        a.name, b.name
                    )
                },
            );
        }
    }
}
