//! A producing stream: the video and audio segmenters, the timestamp
//! mapping onto the channel timeline, and turning segmenter events into
//! store updates.
//!
//! Must never let the timeline go backwards within a rendition, and never
//! publish an audio segment under a different MSN than video's for the same
//! time.

use super::trail::SourceTrail;
use super::{Held, Persist, fmp4_samples};
use crate::media::{AudioParams, TIMEBASE};
use crate::metrics::METRICS;
use crate::package::Update;
use crate::package::align::{AudioAligner, Release};
use crate::package::fmp4;
use crate::package::metadata::{self, Board, DateRange};
use crate::package::plan;
use crate::package::segmenter::{Event, MAX_LOAN_PARTS, Part, Sample, Segmenter};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A decode-time step longer than this (or any step backwards) is the
/// publisher's clock jumping, not a pause: the timeline continues instead.
const MAX_FRAME_GAP: i64 = 5 * TIMEBASE as i64;
const TRACK_ID: u32 = 1;

#[derive(Debug)]
pub(super) struct Live {
    pub sid: String,
    /// Publisher ticks + offset = channel timeline ticks (90 kHz).
    pub offset: i64,
    /// Wall clock at a timeline time, for EXT-X-PROGRAM-DATE-TIME. Derived
    /// from media time so every rendition maps dates the same way (RFC
    /// 8216bis 6.2.4: "consistent mappings of date and time to media
    /// timestamps").
    pub anchor: (SystemTime, u64),
    /// Last regular frame duration, for the final frame and clock jumps.
    pub frame_ticks: u64,
    pub video: VideoTrack,
    pub audio: Option<AudioTrack>,
    /// The source's recent segment starts and frame times, for rungs.
    pub trail: SourceTrail,
    /// When ingest received the newest packet packaged: the packager's
    /// "now" (parts are published as of it), never a clock of its own.
    pub last_arrival: Instant,
}

#[derive(Debug)]
pub(super) struct VideoTrack {
    pub seg: Segmenter,
    /// The newest frame: its duration is known when the next one arrives.
    pub pending: Option<PendingVideo>,
    pub init_uri: String,
    /// After a configuration change, frames until the next keyframe cannot
    /// be decoded with the new parameters.
    pub need_keyframe: bool,
    /// A new configuration's init segment (URI, update), applied at the
    /// keyframe that starts using it.
    pub staged: Option<(String, Update)>,
    /// Timeline time of the newest frame: audio up to here can be placed.
    pub edge: u64,
    /// The next segment starts with EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
}

#[derive(Debug)]
pub(super) struct PendingVideo {
    pub t: u64,
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
    pub arrival: Instant,
}

impl PendingVideo {
    /// Timeline presentation time.
    fn pts(&self) -> u64 {
        self.t.saturating_add_signed(i64::from(self.cts))
    }
}

#[derive(Debug)]
pub(super) struct AudioTrack {
    pub seg: Segmenter,
    pub params: Arc<AudioParams>,
    pub init_uri: String,
    /// Decode time (samples) the next frame should have; tfdt counts samples
    /// rather than trusting the publisher's millisecond clock.
    pub next_ts: Option<u64>,
    pub aligner: AudioAligner<AudioFrame>,
    /// The audio segment with this MSN starts with EXT-X-DISCONTINUITY:
    /// audio reaches a cut after video does, so the mark waits for it.
    pub discontinuity_at: Option<u64>,
    /// A raw frame of silence for this configuration, where one can be made
    /// without an encoder ([`crate::media::aac::silent_frame`]).
    pub silence: Option<Bytes>,
}

/// The longest hole in a publisher's audio filled with silence. Players
/// buffer audio and video together and stop at a hole in either; a longer
/// jump is a publisher that restarted its audio clock, and its audio starts
/// again where that clock says.
const MAX_SILENCE_FILL_S: u64 = 10;

#[derive(Debug)]
pub(super) struct AudioFrame {
    /// Decode time in the track's timescale, as counted by [`AudioTrack::place`].
    dts: u64,
    data: Bytes,
    arrival: Instant,
}

/// A video segment's date, rounded up to the millisecond
/// EXT-X-PROGRAM-DATE-TIME carries (audio's is rounded down). hls.js places
/// the audio rendition by the difference of the two dates and then looks for
/// the next audio part at the end of the last one it loaded: placed even a
/// fraction of a millisecond after its media, that end lies beyond the
/// buffered audio and hls.js stops loading audio. Rounded this way audio is
/// placed at most 2 ms early, never late.
pub(super) fn video_date(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let sub_ms = since.subsec_nanos() % 1_000_000;
    if sub_ms == 0 {
        t
    } else {
        t + Duration::from_nanos(u64::from(1_000_000 - sub_ms))
    }
}

/// Timeline ticks (90 kHz) to a track's timescale, rounded down.
pub(super) fn to_track(t: u64, rate: u32) -> u64 {
    let v = u128::from(t) * u128::from(rate) / u128::from(TIMEBASE);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A track's ticks to the timeline, rounded up so an end stays an end.
fn to_timeline(t: u64, rate: u32) -> u64 {
    let v = (u128::from(t) * u128::from(TIMEBASE)).div_ceil(u128::from(rate.max(1)));
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Live {
    pub fn video_packet(&mut self, p: &mut Persist, held: Held, out: &mut Vec<Update>) {
        let Held { pkt, arrival, .. } = held;
        self.last_arrival = arrival;
        if self.video.need_keyframe {
            if !pkt.keyframe {
                return;
            }
            self.video.need_keyframe = false;
        }
        let mut t = pkt.dts.saturating_add(self.offset);
        let cts = pkt
            .pts
            .saturating_sub(pkt.dts)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        // Where a frame decoded at timeline time `t` is presented.
        let presented = |t: i64| u64::try_from(t.saturating_add(cts.max(0))).ok();
        if let Some(prev) = self.video.pending.take() {
            let prev_t = i64::try_from(prev.t).unwrap_or(i64::MAX);
            let mut dur = t - prev_t;
            if dur <= 0 || dur > MAX_FRAME_GAP {
                if let Some(held) = p.warnings.admit_now() {
                    tracing::warn!(channel = %p.channel_id, step_ms = dur / 90, held_back = held,
                        "video timestamps jumped; the timeline continues");
                }
                dur = i64::try_from(self.frame_ticks).unwrap_or(3000);
                self.offset += prev_t + dur - t;
                t = prev_t + dur;
            } else if dur.unsigned_abs() <= self.video.seg.rules().part_target {
                self.frame_ticks = dur.unsigned_abs();
            }
            if pkt.keyframe {
                // The frame before a keyframe cannot lend its successor time
                // (the keyframe may open a segment, cut at its own time in
                // every rendition), so a long one (a browser encoder skips
                // frames to step its resolution, or after a loss) would
                // leave a hole, or a part of its own that leaves the one
                // before it under 85% of PART-TARGET. It ends its part, or
                // takes at most a part (less what it carries on loan from
                // the frame before it), and the keyframe starts that much
                // earlier: audio and the rungs cut at the keyframe's new
                // time, so segments stay aligned and the timeline whole. A
                // freeze longer than the loan limit stays a hole.
                let fit = self.video.seg.keyframe_fit();
                let excess = dur.unsigned_abs().saturating_sub(fit);
                if excess > 0 && excess <= MAX_LOAN_PARTS * self.video.seg.rules().part_target {
                    dur = i64::try_from(fit).unwrap_or(dur);
                    t = prev_t + dur;
                }
            }
            let duration = u32::try_from(dur).unwrap_or(u32::MAX);
            let pts = prev.pts();
            // Where this frame is presented: if it starts the next segment,
            // audio is cut there, not at its decode time, so that both
            // renditions' segments cover the same presentation time.
            let next_pts = presented(t);
            let events = self.push_video(prev, duration, Some(pkt.keyframe));
            self.video_events(p, events, Some(pts), next_pts, arrival, out);
        }
        if let Some((uri, init)) = self.video.staged.take() {
            // This keyframe starts the new configuration: video ends its
            // segment here and the next one maps the new init. Audio ends
            // its own when its frames get there: they can come after the
            // video of the same time, and must not be dropped as late.
            //
            // No EXT-X-DISCONTINUITY: the timestamps run on and the track is
            // the same, so none of RFC 8216bis 4.4.4.3's MUST cases applies,
            // and the new EXT-X-MAP is all a player needs (it appends the
            // new initialization section). A discontinuity makes hls.js
            // re-base the new timeline on its own estimate of where the
            // segment starts (and hold audio for it), which at the live edge
            // left video parts unloaded and playback stalled for seconds.
            if self.video.seg.is_open() {
                let end = self.video.seg.end();
                let next = self.video.seg.msn() + 1;
                let events = self.video.seg.cut(end, next);
                self.video_events(p, events, None, presented(t), arrival, out);
            }
            self.video.init_uri = uri;
            out.push(init);
        }
        let Ok(t) = u64::try_from(t) else { return };
        self.trail.frame(pkt.pts, t.saturating_add_signed(cts));
        self.video.pending = Some(PendingVideo {
            t,
            cts: cts as i32,
            keyframe: pkt.keyframe,
            data: pkt.data,
            arrival,
        });
        self.video.edge = t;
        self.release_audio(p, arrival, out);
    }

    pub fn audio_packet(&mut self, p: &mut Persist, held: Held, out: &mut Vec<Update>) {
        let Held { pkt, arrival, .. } = held;
        self.last_arrival = arrival;
        let Some(a) = &mut self.audio else { return };
        let Ok(t) = u64::try_from(pkt.dts.saturating_add(self.offset)) else {
            return;
        };
        let rate = a.params.sample_rate;
        let Some((dts, fill)) = a.place(to_track(t, rate)) else {
            return;
        };
        let mut dropped = 0;
        if let (Some(silence), true) = (&a.silence, fill > 0) {
            METRICS
                .audio_silence_frames
                .with_label_values(&[&p.channel_id])
                .inc_by(fill);
            let spf = u64::from(a.params.samples_per_frame.max(1));
            for k in (1..=fill).rev() {
                let at = dts - k * spf;
                dropped += a.aligner.hold(
                    to_timeline(at, rate),
                    AudioFrame {
                        dts: at,
                        data: silence.clone(),
                        arrival,
                    },
                );
            }
        }
        // The aligner decides segments by where the frame is placed, not by
        // the publisher's clock: the two differ by up to a frame.
        dropped += a.aligner.hold(
            to_timeline(dts, rate),
            AudioFrame {
                dts,
                data: pkt.data,
                arrival,
            },
        );
        if dropped > 0 {
            tracing::debug!(channel = %p.channel_id, dropped, "audio frames dropped: too late or video missing");
        }
        self.release_audio(p, arrival, out);
    }

    /// Ends the current segment in every rendition so that a new audio init
    /// segment can start with a discontinuity at the same MSN everywhere.
    pub fn reconfigure(&mut self, p: &mut Persist, out: &mut Vec<Update>) {
        self.cut_all(p, self.last_arrival, out);
        self.mark_discontinuity();
    }

    /// The next segment of every rendition starts with EXT-X-DISCONTINUITY
    /// (Apple HLS authoring spec 8.15: at the same MSN in every rendition).
    /// Audio held past the cut is kept: it opens the next segment (a new
    /// audio configuration replaces the whole track, held frames with it).
    fn mark_discontinuity(&mut self) {
        self.video.discontinuity = true;
        let msn = self.video.seg.msn();
        if let Some(a) = &mut self.audio {
            a.discontinuity_at = Some(msn);
        }
    }

    /// The stream stops: the last frame takes the previous frame's duration,
    /// every rendition ends its segment, and the channel timeline moves on.
    pub fn flush(&mut self, p: &mut Persist, out: &mut Vec<Update>) {
        let now = self.last_arrival;
        self.flush_pending(p, now, out);
        self.cut_all(p, now, out);
        let video_end = self.video.seg.end();
        let audio_end = self
            .audio
            .as_ref()
            .map_or(0, |a| to_timeline(a.seg.end(), a.params.sample_rate));
        p.timeline_end = p.timeline_end.max(video_end).max(audio_end);
    }

    fn flush_pending(&mut self, p: &mut Persist, now: Instant, out: &mut Vec<Update>) {
        if let Some(prev) = self.video.pending.take() {
            let duration = u32::try_from(self.frame_ticks).unwrap_or(u32::MAX);
            let pts = prev.pts();
            let events = self.push_video(prev, duration, None);
            self.video_events(p, events, Some(pts), None, now, out);
        }
    }

    fn cut_all(&mut self, p: &mut Persist, now: Instant, out: &mut Vec<Update>) {
        if self.video.seg.is_open() {
            let end = self.video.seg.end();
            let next = self.video.seg.msn() + 1;
            let events = self.video.seg.cut(end, next);
            self.video_events(p, events, None, None, now, out);
        }
        let end = self.video.seg.end();
        if let Some(a) = &mut self.audio {
            let released = a.aligner.flush(end);
            self.audio_releases(p, released, now, out);
        }
    }

    fn push_video(
        &mut self,
        prev: PendingVideo,
        duration: u32,
        next_is_keyframe: Option<bool>,
    ) -> Vec<Event> {
        let sample = Sample {
            dts: prev.t,
            duration,
            cts: prev.cts,
            keyframe: prev.keyframe,
            data: prev.data,
        };
        self.video.seg.push(sample, prev.arrival, next_is_keyframe)
    }

    fn release_audio(&mut self, p: &mut Persist, now: Instant, out: &mut Vec<Update>) {
        let Some(a) = &mut self.audio else { return };
        let released = a.aligner.release(self.video.edge);
        self.audio_releases(p, released, now, out);
    }

    fn audio_releases(
        &mut self,
        p: &mut Persist,
        released: Vec<Release<AudioFrame>>,
        now: Instant,
        out: &mut Vec<Update>,
    ) {
        for r in released {
            let Some(a) = &mut self.audio else { return };
            let events = match r {
                Release::Frame(_, frame) => a.frame(frame),
                Release::Cut { at, next_msn } => {
                    a.seg.cut(to_track(at, a.params.sample_rate), next_msn)
                }
            };
            self.audio_events(p, events, now, out);
        }
    }

    pub fn wall(&self, t: u64) -> SystemTime {
        let (wall, at) = self.anchor;
        if t >= at {
            wall + plan::duration(t - at, TIMEBASE)
        } else {
            wall.checked_sub(plan::duration(at - t, TIMEBASE))
                .unwrap_or(wall)
        }
    }

    /// `first_pts`: timeline pts of the sample whose push produced `events`
    /// (the one a new segment starts with), `None` for a cut. `next_pts`:
    /// where the frame after them is presented, `None` when none follows.
    fn video_events(
        &mut self,
        p: &mut Persist,
        events: Vec<Event>,
        first_pts: Option<u64>,
        next_pts: Option<u64>,
        now: Instant,
        out: &mut Vec<Update>,
    ) {
        for e in events {
            match e {
                Event::SegmentStart { msn, dts, .. } => {
                    let discontinuity = std::mem::take(&mut self.video.discontinuity);
                    let pts = first_pts.unwrap_or(dts);
                    // The date of the segment's first presented frame, as
                    // audio and the rungs date theirs: players align
                    // renditions by date, so all must date presentation
                    // time alike (RFC 8216bis 6.2.4: "consistent mappings
                    // of date and time to media timestamps").
                    let program_date_time = video_date(self.wall(pts));
                    self.trail
                        .segment_start(msn, pts, program_date_time, discontinuity);
                    out.push(Update::SegmentStart {
                        rendition: p.source.clone(),
                        msn,
                        discontinuity,
                        program_date_time,
                        map_uri: self.video.init_uri.clone(),
                    });
                }
                Event::Part(part) => {
                    publish_part(
                        &p.channel_id,
                        &p.source,
                        &mut p.video_seq,
                        &mut p.metadata,
                        part,
                        TIMEBASE,
                        now,
                        out,
                    );
                }
                Event::SegmentEnd {
                    msn,
                    start_dts,
                    end_dts,
                    samples,
                    gap,
                } => {
                    self.trail
                        .segment_end(msn, end_dts.saturating_sub(start_dts));
                    out.push(segment_end(
                        &p.channel_id,
                        &p.source,
                        msn,
                        start_dts,
                        end_dts,
                        samples,
                        gap,
                        TIMEBASE,
                    ));
                    p.next_msn = msn + 1;
                    if let Some(a) = &mut self.audio {
                        let at = next_pts.map_or(end_dts, |pts| pts.max(end_dts));
                        a.aligner.video_cut(at, msn + 1);
                    }
                }
            }
        }
    }

    fn audio_events(
        &mut self,
        p: &mut Persist,
        events: Vec<Event>,
        now: Instant,
        out: &mut Vec<Update>,
    ) {
        let anchor_wall = |t: u64, rate: u32| self.wall(to_timeline(t, rate));
        let Some(a) = &self.audio else { return };
        let rate = a.params.sample_rate;
        for e in events {
            match e {
                Event::SegmentStart { msn, dts, .. } => out.push(Update::SegmentStart {
                    rendition: p.audio.clone(),
                    msn,
                    discontinuity: a.discontinuity_at == Some(msn),
                    program_date_time: anchor_wall(dts, rate),
                    map_uri: a.init_uri.clone(),
                }),
                Event::Part(part) => {
                    publish_part(
                        &p.channel_id,
                        &p.audio,
                        &mut p.audio_seq,
                        &mut p.metadata,
                        part,
                        rate,
                        now,
                        out,
                    );
                }
                Event::SegmentEnd {
                    msn,
                    start_dts,
                    end_dts,
                    samples,
                    gap,
                } => out.push(segment_end(
                    &p.channel_id,
                    &p.audio,
                    msn,
                    start_dts,
                    end_dts,
                    samples,
                    gap,
                    rate,
                )),
            }
        }
    }
}

impl AudioTrack {
    /// The decode time (track ticks) of a frame the publisher stamped `ts`
    /// and how many silent frames go before it to fill a hole, or `None` when
    /// it overlaps audio already placed.
    fn place(&mut self, ts: u64) -> Option<(u64, u64)> {
        let spf = u64::from(self.params.samples_per_frame.max(1));
        let max_fill = u64::from(self.params.sample_rate) * MAX_SILENCE_FILL_S;
        let (dts, fill) = match self.next_ts {
            // Within a frame of where counting says: count, so that
            // millisecond rounding in the publisher's clock never shows.
            Some(expected) if ts.abs_diff(expected) <= spf => (expected, 0),
            Some(expected) if ts < expected => return None,
            // Frames lost or dropped before they reached the node: silence
            // in their place, the frame where counting puts it.
            Some(expected) if self.silence.is_some() && ts - expected <= max_fill => {
                let fill = (ts - expected + spf / 2) / spf;
                (expected + fill * spf, fill)
            }
            // The publisher's audio clock jumped: resynchronise.
            _ => (ts, 0),
        };
        self.next_ts = Some(dts + spf);
        Some((dts, fill))
    }

    /// Packages one placed AAC frame.
    fn frame(&mut self, frame: AudioFrame) -> Vec<Event> {
        let sample = Sample {
            dts: frame.dts,
            duration: self.params.samples_per_frame.max(1),
            cts: 0,
            keyframe: true,
            data: frame.data,
        };
        self.seg.push(sample, frame.arrival, None)
    }
}

/// Writes a part's fragment and the update that publishes it.
#[allow(clippy::too_many_arguments)]
pub(super) fn publish_part(
    channel: &str,
    rendition: &Arc<str>,
    seq: &mut u32,
    board: &mut Board,
    part: Part,
    timescale: u32,
    now: Instant,
    out: &mut Vec<Update>,
) {
    let first_arrival = part.first_arrival;
    let duration = plan::duration(part.duration, timescale);
    let (msn, independent, dts) = (part.msn, part.independent, part.dts);
    // Timed metadata whose time this part reaches: its `emsg` boxes go
    // before the `moof`, where CMAF puts a chunk's event messages (hls.js
    // looks for them among the fragment's top-level boxes), and its date
    // range goes into the playlist with the part.
    let events = board.take(rendition, timescale, dts, dts.saturating_add(part.duration));
    let samples = fmp4_samples(part.samples);
    match fmp4::fragment(*seq, TRACK_ID, dts, &samples) {
        Ok(mut bytes) => {
            *seq = seq.wrapping_add(1).max(1);
            if !events.is_empty() {
                let mut with = bytes::BytesMut::new();
                for (ev, pt) in &events {
                    match metadata::emsg(ev, timescale, *pt) {
                        Ok(b) => {
                            with.extend_from_slice(&b);
                            out.push(Update::DateRange {
                                rendition: rendition.clone(),
                                msn,
                                range: Arc::new(DateRange::of(ev)),
                            });
                        }
                        Err(e) => {
                            tracing::error!(channel, %rendition, id = ev.id, error = %e, "cannot write an emsg box; event left out of this rendition");
                        }
                    }
                }
                with.extend_from_slice(&bytes);
                bytes = with.freeze();
            }
            out.push(Update::Part {
                rendition: rendition.clone(),
                msn,
                duration,
                independent,
                bytes,
            });
            METRICS
                .parts_published
                .with_label_values(&[channel, rendition])
                .inc();
            let latency = now.saturating_duration_since(first_arrival);
            METRICS
                .ingest_to_part
                .with_label_values(&[channel, rendition])
                .observe(latency.as_secs_f64());
        }
        Err(e) => {
            // Nothing a publisher sends should get here; losing one part
            // beats stopping the channel.
            tracing::error!(channel, %rendition, msn, error = %e, "cannot write a part; dropped");
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn segment_end(
    channel: &str,
    rendition: &Arc<str>,
    msn: u64,
    start: u64,
    end: u64,
    samples: u32,
    gap: bool,
    timescale: u32,
) -> Update {
    METRICS
        .segments_published
        .with_label_values(&[channel, rendition])
        .inc();
    Update::SegmentEnd {
        rendition: rendition.clone(),
        msn,
        duration: plan::duration(end.saturating_sub(start), timescale),
        gap,
        samples,
    }
}
