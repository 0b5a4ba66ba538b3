//! Transcoded rungs as follower video renditions.
//!
//! Owns placing each rung's encoded frames on the channel timeline (through
//! the source frame with the same pts), the rung's own parts, and its
//! segment boundaries, which it copies from the source rendition's
//! [`SourceTrail`]: segment N of a rung covers the time of the source's
//! segment N, or is an EXT-X-GAP segment when the rung has nothing there (a
//! GOP its encoder dropped). Must never number a rung segment differently
//! from the source segment of the same time, never start a rung anywhere
//! but on a keyframe, never place a frame before the source has decided
//! which segment it belongs to, and never read a clock.

use super::live::{Live, publish_part, segment_end, video_date};
use super::trail::SourceTrail;
use super::{Persist, TRACK_ID};
use crate::media::{Packet, TIMEBASE, VideoParams};
use crate::package::Update;
use crate::package::fmp4;
use crate::package::names;
use crate::package::plan;
use crate::package::segmenter::{CutPolicy, Event, Rules, Sample, Segmenter};
use crate::package::store::RenditionInfo;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A transcoded rung of the current stream, as the pipeline planned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RungDecl {
    /// Rendition name in URLs and metrics, e.g. `720p`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// The encoder's target, used for BANDWIDTH until segments are measured.
    pub bitrate_bps: u64,
}

/// Rung frames kept while the source is still measuring its frame rate.
const EARLY_KEPT: usize = 600;
/// Rung frames kept waiting for the source to get past them.
const HELD_KEPT: usize = 600;
/// A step to a keyframe longer than this many frames (and than a part) is a
/// GOP the encoder dropped: the frame before it keeps a frame's duration
/// and a hole follows, rather than one frame stretched over the hole.
const HOLE_FRAMES: u64 = 3;

/// One rung access unit placed on the channel timeline.
#[derive(Debug)]
struct Frame {
    /// Decode time, timeline ticks.
    t: u64,
    /// Presentation time, timeline ticks: the source frame's.
    pts: u64,
    cts: i32,
    keyframe: bool,
    data: Bytes,
    /// The source frame's ingest arrival, for the latency histogram.
    arrival: Instant,
}

/// What a rung needs from the packager and the live source.
pub(super) struct Ctx<'a> {
    pub p: &'a mut Persist,
    pub live: &'a Live,
    /// Rung frames presented before this are in their final segments: no
    /// later source cut can land at or before them. `u64::MAX` once the
    /// source has stopped.
    pub edge: u64,
    /// This moment, as well as the packager knows it: when a part
    /// published now becomes available.
    pub now: Instant,
}

impl Ctx<'_> {
    fn trail(&self) -> &SourceTrail {
        &self.live.trail
    }
}

/// One transcoded rung: its declaration and what outlives a stream.
#[derive(Debug)]
pub(super) struct Rung {
    pub decl: RungDecl,
    pub name: Arc<str>,
    /// The name can be a rendition; events of an invalid rung are ignored.
    pub valid: bool,
    params: Option<Arc<VideoParams>>,
    /// An init segment already in the store (so the multivariant playlist
    /// can name its codecs) that the next segment this rung opens will
    /// map: a new encoder configuration, or a new stream id.
    staged: Option<String>,
    /// The init segment of the rung's newest segment.
    init_uri: Option<String>,
    /// fMP4 sequence number of the rendition's next fragment.
    seq: u32,
    /// MSN at which the rendition's playlist continues; `None` while the
    /// playlist holds nothing of this rung.
    resume_msn: Option<u64>,
    /// Packets pushed while the source was still probing.
    early: VecDeque<(Packet, Instant)>,
    stream: Option<Stream>,
}

/// A rung's state within one stream.
#[derive(Debug)]
struct Stream {
    /// Created at the rung's first keyframe.
    seg: Option<Segmenter>,
    /// Frames the source has not yet got past, in decode order.
    held: VecDeque<Frame>,
    /// The newest placed frame: its duration is known at the next one.
    pending: Option<Frame>,
    /// Last regular frame duration, for the final frame and holes.
    frame_ticks: u64,
    /// How much later than the source's segment the open segment's first
    /// frame is presented (a GOP dropped at its start).
    lead: u64,
    /// Decode time of the open segment's first frame.
    start: u64,
    /// Frames up to the next keyframe cannot be decoded (overflow, or a new
    /// configuration that must wait for a segment boundary).
    need_keyframe: bool,
    /// A segment of this stream mapped an init segment of the current
    /// configuration: frames can join the open segment.
    mapped: bool,
}

/// A name that can be a path segment and is not the source's or audio's.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != super::SOURCE
        && name != super::AUDIO
}

impl Rung {
    pub fn new(decl: RungDecl) -> Self {
        let valid = valid_name(&decl.name);
        if !valid {
            tracing::error!(rung = %decl.name, "a rung name must be a plain path segment other than source and audio; rung ignored");
        }
        Rung {
            name: Arc::from(decl.name.as_str()),
            decl,
            valid,
            params: None,
            staged: None,
            init_uri: None,
            seq: 1,
            resume_msn: None,
            early: VecDeque::new(),
            stream: None,
        }
    }

    /// The store update that lists this rung at position `rank`.
    pub fn declare(&self, rank: u32) -> Update {
        Update::Declare {
            rendition: self.name.clone(),
            width: self.decl.width,
            height: self.decl.height,
            bitrate_bps: self.decl.bitrate_bps,
            rank,
        }
    }

    /// A new encoder configuration: its frames start at the next segment
    /// boundary, under a new init segment (staged now if a stream is live).
    pub fn config(
        &mut self,
        params: Arc<VideoParams>,
        ctx: Option<&mut Ctx>,
        out: &mut Vec<Update>,
    ) {
        if self.params.as_deref() == Some(&*params) {
            return;
        }
        self.params = Some(params);
        self.staged = None;
        if let Some(st) = &mut self.stream {
            st.mapped = false;
        }
        if let Some(ctx) = ctx {
            self.stage_init(ctx, out);
        }
    }

    /// A stream goes live (or the rung joins one): it starts at its first
    /// keyframe, with an init segment named after the new stream.
    pub fn start_stream(&mut self, ctx: &mut Ctx, out: &mut Vec<Update>) {
        self.stream = Some(Stream {
            seg: None,
            held: VecDeque::new(),
            pending: None,
            frame_ticks: ctx.live.frame_ticks.max(1),
            lead: 0,
            start: 0,
            need_keyframe: true,
            mapped: false,
        });
        self.staged = None;
        self.stage_init(ctx, out);
    }

    /// The source is still probing: keep the packet for when it goes live.
    pub fn hold_early(&mut self, pkt: Packet, arrival: Instant) {
        self.early.push_back((pkt, arrival));
        if self.early.len() > EARLY_KEPT {
            self.early.pop_front();
        }
    }

    pub fn take_early(&mut self) -> VecDeque<(Packet, Instant)> {
        std::mem::take(&mut self.early)
    }

    /// The playlist ended: the next stream starts a new one.
    pub fn end_playlist(&mut self) {
        self.resume_msn = None;
        self.init_uri = None;
        self.staged = None;
        self.early.clear();
    }

    /// One encoded frame of a live stream.
    pub fn packet(&mut self, ctx: &mut Ctx, pkt: Packet, arrival: Instant, out: &mut Vec<Update>) {
        let Some(st) = &mut self.stream else { return };
        // Placed where its source frame went: every jump or continuation
        // the source's timeline made applies to the rung too.
        let Some(pts) = ctx.trail().timeline_pts(pkt.pts) else {
            tracing::debug!(channel = %ctx.p.channel_id, rung = %self.name, pts = pkt.pts,
                "no source frame of this stream has this pts; rung frame dropped");
            return;
        };
        let cts = pkt
            .pts
            .saturating_sub(pkt.dts)
            .clamp(0, i64::from(i32::MAX));
        st.held.push_back(Frame {
            t: pts.saturating_sub(cts.unsigned_abs()),
            pts,
            cts: cts as i32,
            keyframe: pkt.keyframe,
            data: pkt.data,
            arrival,
        });
        if st.held.len() > HELD_KEPT {
            tracing::warn!(channel = %ctx.p.channel_id, rung = %self.name,
                "rung frames far ahead of the source; dropped up to the next keyframe");
            st.held.clear();
            st.need_keyframe = true;
        }
        self.release(ctx, out);
    }

    /// Places every held frame the source has got past.
    pub fn release(&mut self, ctx: &mut Ctx, out: &mut Vec<Update>) {
        loop {
            let Some(st) = &mut self.stream else { return };
            if st.held.front().is_none_or(|f| f.pts >= ctx.edge) {
                return;
            }
            if let Some(f) = st.held.pop_front() {
                self.place(ctx, f, out);
            }
        }
    }

    /// The stream stops (`until`: the source's last MSN, which this rung
    /// reaches with gaps if it must) or the rung leaves the ladder (`None`).
    pub fn finish(&mut self, ctx: &mut Ctx, until: Option<u64>, out: &mut Vec<Update>) {
        self.release(ctx, out);
        let Some(st) = &mut self.stream else { return };
        if let Some(prev) = st.pending.take() {
            let duration = u32::try_from(st.frame_ticks).unwrap_or(u32::MAX);
            self.push(ctx, prev, duration, None, out);
        }
        let Some(st) = &mut self.stream else { return };
        if st.seg.is_none()
            && let (Some(last), Some(resume)) = (until, self.resume_msn)
            && resume <= last
            && ctx.trail().boundary(resume).is_some()
            && let Some(rules) = rules(ctx.p, st.frame_ticks)
        {
            // Nothing of this rung in the whole stream: its playlist still
            // numbers the stream's segments, as gaps.
            st.seg = Some(Segmenter::new(rules, resume, 0));
        }
        let through = st.seg.as_ref().and_then(|seg| {
            let cur = seg.msn();
            match until {
                Some(last) if last >= cur => Some((cur, last)),
                _ if seg.is_open() => Some((cur, cur)),
                _ => None,
            }
        });
        if let Some((cur, last)) = through {
            for msn in cur..=last {
                self.cut(ctx, msn + 1, out);
            }
        }
        self.stream = None;
    }

    /// Puts one frame, in decode order, into the segment the source put
    /// the same time in.
    fn place(&mut self, ctx: &mut Ctx, mut f: Frame, out: &mut Vec<Update>) {
        // Before the first segment the source made, nothing to follow.
        let Some(found) = ctx.trail().segment_at(f.pts) else {
            return;
        };
        let Some(st) = &mut self.stream else { return };
        if st.need_keyframe && !f.keyframe {
            return;
        }
        if !st.mapped && self.staged.is_none() {
            // No init segment describes this frame.
            return;
        }
        if st.seg.is_none() {
            let Some(rules) = rules(ctx.p, st.frame_ticks) else {
                return;
            };
            // Continue the rendition's numbering if the trail still shows
            // where it left off; otherwise join at this frame's segment.
            let start = match self.resume_msn {
                Some(m) if m <= found && ctx.trail().boundary(m).is_some() => m,
                _ => found,
            };
            st.seg = Some(Segmenter::new(rules, start, f.t));
        }
        let Some(seg) = &st.seg else { return };
        let cur = seg.msn();
        // A frame decoded after the one that crossed into a segment stays
        // in it even if presented earlier (B-frames after a forced cut).
        let target = found.max(cur);
        let opens = target > cur || (!seg.is_open() && st.pending.is_none());
        if self.staged.is_some() && !(opens && f.keyframe) {
            // A new init segment can only start a segment: frames of the new
            // configuration wait for the next boundary.
            st.need_keyframe = true;
            return;
        }
        let part_target = seg.rules().part_target;
        st.need_keyframe = false;

        if let Some(prev) = st.pending.take() {
            let step = i128::from(f.t) - i128::from(prev.t);
            let ft = st.frame_ticks;
            let duration = if step <= 0 {
                // Decode times went back: keep the rendition's own timeline
                // moving, as the source does when its clock jumps.
                f.t = prev.t + ft;
                f.pts = f.t.saturating_add_signed(i64::from(f.cts));
                ft
            } else {
                let step = u64::try_from(step).unwrap_or(u64::MAX);
                // The segment's last frame before a later one: it ends where
                // the source's segment ends, so that the segment's media is
                // as long as its EXTINF (the source's, less the lead) and
                // ends with the source's, even when GOPs the encoder
                // dropped follow it as gaps.
                let source_end = (target > cur)
                    .then(|| ctx.trail().boundary(cur).and_then(|b| b.duration))
                    .flatten()
                    .map(|d| st.start + d.saturating_sub(st.lead))
                    .filter(|end| (prev.t + 1..=f.t).contains(end));
                if let Some(end) = source_end {
                    end - prev.t
                } else if f.keyframe && step > (HOLE_FRAMES * ft).max(part_target) {
                    ft
                } else {
                    if step <= part_target {
                        st.frame_ticks = step;
                    }
                    step
                }
            };
            // Whether the frame after `prev` opens a segment: only within one
            // may `prev` lend its successor time (see `Segmenter::push`).
            let duration = u32::try_from(duration).unwrap_or(u32::MAX);
            self.push(ctx, prev, duration, Some(opens), out);
        }
        if opens && let Some(uri) = self.staged.take() {
            self.init_uri = Some(uri);
            if let Some(st) = &mut self.stream {
                st.mapped = true;
            }
        }
        // End the segment the rung was in and list every source segment it
        // skipped as a gap, so its MSNs stay the source's.
        for msn in cur..target {
            self.cut(ctx, msn + 1, out);
        }
        if let Some(st) = &mut self.stream {
            st.pending = Some(f);
        }
    }

    /// Emits an init segment for the current configuration, for the next
    /// segment this rung opens.
    fn stage_init(&mut self, ctx: &mut Ctx, out: &mut Vec<Update>) {
        let Some(params) = &self.params else {
            return;
        };
        match fmp4::init_segment(TRACK_ID, fmp4::TrackCodec::Video(params)) {
            Ok(bytes) => {
                ctx.p.init_version += 1;
                let uri = names::init(&ctx.live.sid, ctx.p.init_version);
                out.push(Update::Init {
                    rendition: self.name.clone(),
                    info: RenditionInfo::Video {
                        codecs: params.codec_string(),
                        width: params.width,
                        height: params.height,
                    },
                    uri: uri.clone(),
                    bytes,
                });
                self.staged = Some(uri);
            }
            Err(e) => {
                tracing::error!(channel = %ctx.p.channel_id, rung = %self.name, error = %e,
                    "cannot package this rung's configuration; its frames are dropped until the next one");
                self.params = None;
            }
        }
    }

    fn push(
        &mut self,
        ctx: &mut Ctx,
        f: Frame,
        duration: u32,
        next_opens: Option<bool>,
        out: &mut Vec<Update>,
    ) {
        let Some(seg) = self.stream.as_mut().and_then(|st| st.seg.as_mut()) else {
            return;
        };
        let sample = Sample {
            dts: f.t,
            duration,
            cts: f.cts,
            keyframe: f.keyframe,
            data: f.data,
        };
        let events = seg.push(sample, f.arrival, next_opens);
        self.events(ctx, events, Some(f.pts), out);
    }

    /// Ends the current segment (a gap if the rung has nothing in it).
    fn cut(&mut self, ctx: &mut Ctx, next_msn: u64, out: &mut Vec<Update>) {
        let Some(seg) = self.stream.as_mut().and_then(|st| st.seg.as_mut()) else {
            return;
        };
        let end = seg.end();
        let events = seg.cut(end, next_msn);
        self.events(ctx, events, None, out);
    }

    /// Segmenter events to store updates. Dates and durations are the
    /// source's for the same MSN, less the time the rung's first frame
    /// comes after the source's: every rendition maps dates to media time
    /// the same way (RFC 8216bis 6.2.4: "consistent mappings of date and
    /// time to media timestamps").
    fn events(
        &mut self,
        ctx: &mut Ctx,
        events: Vec<Event>,
        first_pts: Option<u64>,
        out: &mut Vec<Update>,
    ) {
        let Some(st) = &mut self.stream else { return };
        let trail = &ctx.live.trail;
        for e in events {
            match e {
                Event::SegmentStart { msn, dts, .. } => {
                    st.start = dts;
                    let b = trail.boundary(msn);
                    st.lead = match (first_pts, b) {
                        (Some(pts), Some(b)) => pts.saturating_sub(b.pts),
                        _ => 0,
                    };
                    let date = match b {
                        Some(b) => video_date(b.date + plan::duration(st.lead, TIMEBASE)),
                        None => video_date(ctx.live.wall(dts)),
                    };
                    out.push(Update::SegmentStart {
                        rendition: self.name.clone(),
                        msn,
                        // Apple HLS authoring spec 8.15: a discontinuity is
                        // at the same MSN in every rendition.
                        discontinuity: b.is_some_and(|b| b.discontinuity),
                        program_date_time: date,
                        map_uri: self.init_uri.clone().unwrap_or_default(),
                    });
                }
                Event::Part(part) => publish_part(
                    &ctx.p.channel_id,
                    &self.name,
                    &mut self.seq,
                    &mut ctx.p.metadata,
                    part,
                    TIMEBASE,
                    ctx.now,
                    out,
                ),
                Event::SegmentEnd {
                    msn,
                    start_dts,
                    end_dts,
                    samples,
                    gap,
                } => {
                    // RFC 8216bis 4.4.4.7: a gap segment's URI "does not
                    // contain media data and SHOULD NOT be loaded by
                    // clients"; it keeps the source's duration so that every
                    // rendition's timeline stays the same length.
                    let own = end_dts.saturating_sub(start_dts);
                    let ticks = trail
                        .boundary(msn)
                        .and_then(|b| b.duration)
                        .map_or(own, |d| d.saturating_sub(st.lead).max(1));
                    out.push(segment_end(
                        &ctx.p.channel_id,
                        &self.name,
                        msn,
                        0,
                        ticks,
                        samples,
                        gap,
                        TIMEBASE,
                    ));
                    self.resume_msn = Some(msn + 1);
                }
            }
        }
    }
}

/// A rung's part rules: the source's PART-TARGET, whole frames per part.
fn rules(p: &Persist, frame_ticks: u64) -> Option<Rules> {
    let part_target = p.part_target?;
    Some(Rules {
        part_target: plan::ticks(part_target, TIMEBASE),
        samples_per_part: plan::frames_per_part(part_target, frame_ticks as f64),
        cuts: CutPolicy::External,
    })
}
