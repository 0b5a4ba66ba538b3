//! One channel's packaging: ingest events and transcoded rung packets in,
//! fMP4 parts, segments and playlist updates out to its [`ChannelStore`]
//! (or to a buffer, for VOD).
//!
//! Owns the channel timeline (timestamps continue across publisher
//! reconnects, so tfdt never goes back), stream ids, init segments, the
//! alignment of audio to video and of rungs to the source, and the rung
//! ladder. Sans-IO: wall clock and arrival time are inputs. Must never
//! block (it runs on the channel's packaging thread) and never read a clock.

mod ladder;
mod live;
mod pacer;
mod rung;
mod trail;

pub use rung::RungDecl;

use super::Update;
use super::align::AudioAligner;
use super::metadata::{Board, MAX_PAYLOAD, MetadataRefusal, Payload, Placement, TimedMetadata};
use super::plan::{self, FrameProbe};
use super::segmenter::{CutPolicy, Rules, Segmenter};
#[cfg(any(test, feature = "internals"))]
use super::store::ChannelStore;
use super::store::RenditionInfo;
use super::{PackageConfig, fmp4, names};
use crate::media::{AudioParams, IngestEvent, Packet, TIMEBASE, TrackKind, VideoParams};
use live::{AudioTrack, Live, PendingVideo, VideoTrack};
use pacer::Pacer;
use rung::{Ctx, Rung};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Rendition names. Transcoded rungs are named by their [`RungDecl`].
pub const SOURCE: &str = "source";
pub const AUDIO: &str = "audio";

/// Audio frames held while video is missing or late (about 10 s of AAC).
const MAX_HELD_AUDIO: usize = 512;
/// fMP4 track id of the single track in each rendition's files.
const TRACK_ID: u32 = 1;

/// A packet with the times it came in.
#[derive(Debug)]
struct Held {
    pkt: Packet,
    now: SystemTime,
    arrival: Instant,
}

#[derive(Debug, Default)]
enum Phase {
    /// No stream: waiting for a video keyframe.
    #[default]
    Idle,
    /// Measuring the frame duration before choosing PART-TARGET.
    Probing {
        probe: FrameProbe,
        video: Vec<Held>,
    },
    Live(Box<Live>),
}

/// What outlives a stream: numbering that must never repeat or go back.
#[derive(Debug)]
struct Persist {
    channel_id: String,
    cfg: PackageConfig,
    source: Arc<str>,
    audio: Arc<str>,
    /// PART-TARGET of the current playlist; `None` before the first stream
    /// and after `end()`, when the next stream starts a new playlist.
    part_target: Option<Duration>,
    /// MSN of the next segment to start; unique for the store's life.
    next_msn: u64,
    /// End of everything packaged so far, in 90 kHz timeline ticks.
    timeline_end: u64,
    last_sid_ms: u64,
    init_version: u32,
    video_seq: u32,
    audio_seq: u32,
    /// The last stream was cut short: the next one starts with
    /// EXT-X-DISCONTINUITY in the same playlist.
    resume: bool,
    /// The wall clock and instant of the last source push, to turn a rung
    /// push's wall clock into an instant for the latency histogram.
    clock: Option<(SystemTime, Instant)>,
    /// Warnings a publisher's timestamps can trigger on every frame.
    warnings: crate::logging::LogBudget,
    /// Timed metadata waiting for each rendition's part.
    metadata: Board,
}

impl Persist {
    /// The instant at wall clock `now`, as the source's pushes relate them.
    fn instant_at(&self, now: SystemTime) -> Option<Instant> {
        let (wall, at) = self.clock?;
        match now.duration_since(wall) {
            Ok(ahead) => at.checked_add(ahead),
            Err(behind) => at.checked_sub(behind.duration()),
        }
    }
}

/// Where updates go.
#[derive(Debug)]
enum Sink {
    /// Kept for the caller to take: the channel core hands them to a live
    /// store or a VOD directory.
    Buffer(Vec<Update>),
    /// A store, applied batch by batch: for tests and the fuzz targets,
    /// which have no core.
    #[cfg(any(test, feature = "internals"))]
    Store(Arc<ChannelStore>),
}

/// Packages one channel's ingest into its store.
#[derive(Debug)]
pub struct ChannelPackager {
    sink: Sink,
    video_params: Option<Arc<VideoParams>>,
    audio_params: Option<Arc<AudioParams>>,
    early_audio: VecDeque<Held>,
    phase: Phase,
    p: Persist,
    /// The transcoded rungs, top down, as the last `set_rungs` gave them.
    rungs: Vec<Rung>,
    pacer: Pacer,
}

impl ChannelPackager {
    /// A packager that writes straight into `store` (tests and fuzz
    /// targets; a node's packagers are [`Self::buffered`]).
    #[cfg(any(test, feature = "internals"))]
    pub fn new(channel_id: &str, store: Arc<ChannelStore>, cfg: PackageConfig) -> Self {
        Self::with_sink(channel_id, Sink::Store(store), cfg)
    }

    /// A packager whose updates are kept for [`Self::take_updates`].
    pub(crate) fn buffered(channel_id: &str, cfg: PackageConfig) -> Self {
        Self::with_sink(channel_id, Sink::Buffer(Vec::new()), cfg)
    }

    /// The updates produced since the last call (buffered packagers only).
    pub(crate) fn take_updates(&mut self) -> Vec<Update> {
        match &mut self.sink {
            Sink::Buffer(b) => std::mem::take(b),
            #[cfg(any(test, feature = "internals"))]
            Sink::Store(_) => Vec::new(),
        }
    }

    fn with_sink(channel_id: &str, sink: Sink, cfg: PackageConfig) -> Self {
        ChannelPackager {
            sink,
            video_params: None,
            audio_params: None,
            early_audio: VecDeque::new(),
            phase: Phase::Idle,
            p: Persist {
                channel_id: channel_id.to_owned(),
                cfg: cfg.sanitized(),
                source: Arc::from(SOURCE),
                audio: Arc::from(AUDIO),
                part_target: None,
                next_msn: 0,
                timeline_end: 0,
                last_sid_ms: 0,
                warnings: crate::logging::LogBudget::new(5, Duration::from_secs(10)),
                init_version: 0,
                video_seq: 1,
                audio_seq: 1,
                resume: false,
                clock: None,
                metadata: Board::default(),
            },
            rungs: Vec::new(),
            pacer: Pacer::default(),
        }
    }

    fn emit(&mut self, out: Vec<Update>) {
        let now = match &self.phase {
            Phase::Live(live) => Some(live.last_arrival),
            Phase::Idle | Phase::Probing { .. } => None,
        };
        let out = self.pacer.admit(now, out);
        match &mut self.sink {
            #[cfg(any(test, feature = "internals"))]
            Sink::Store(store) => store.apply(out),
            // Moved, not copied, when the taker keeps up (a live core takes
            // every push's updates at once).
            Sink::Buffer(b) if b.is_empty() => *b = out,
            Sink::Buffer(b) => b.extend(out),
        }
    }

    /// Takes one ingest event. `now` is the wall clock (for
    /// EXT-X-PROGRAM-DATE-TIME), `arrival` when ingest received it (for the
    /// ingest-to-part latency histogram).
    pub fn push(&mut self, event: IngestEvent, now: SystemTime, arrival: Instant) {
        self.p.clock = Some((now, arrival));
        let mut out = Vec::new();
        match event {
            IngestEvent::VideoConfig(params) => self.video_config(params, &mut out),
            IngestEvent::AudioConfig(params) => self.audio_config(params, &mut out),
            IngestEvent::Packet(pkt) => {
                let held = Held { pkt, now, arrival };
                match held.pkt.track {
                    TrackKind::Video => self.video_packet(held, &mut out),
                    TrackKind::Audio => self.audio_packet(held, &mut out),
                }
            }
            // A publisher's further tracks are rungs: the channel core hands them to
            // `push_rung`.
            IngestEvent::Track { .. } => {}
        }
        self.emit(out);
    }

    /// Timed metadata at the end of what the source has packaged: the
    /// source's next part carries it, and every other rendition the part
    /// of its own that reaches the same media time.
    pub fn insert_metadata(
        &mut self,
        payload: Payload,
        duration: Option<Duration>,
    ) -> Result<Placement, MetadataRefusal> {
        if payload.len() > MAX_PAYLOAD {
            return Err(MetadataRefusal::TooLarge(payload.len()));
        }
        let Phase::Live(live) = &self.phase else {
            return Err(MetadataRefusal::NotLive);
        };
        let at = live.video.seg.end();
        let date = live.wall(at);
        let id = self.p.metadata.next_id();
        let ev = TimedMetadata {
            id,
            payload,
            duration,
            at,
            date,
        };
        let placement = Placement {
            id,
            media_time: ev.media_time(),
            date,
        };
        self.p.metadata.add(ev)?;
        Ok(placement)
    }

    /// The publisher is gone (it may come back): flush what was packaged and
    /// start the next media with a discontinuity.
    pub fn discontinuity(&mut self) {
        let mut out = Vec::new();
        if self.stop(&mut out) {
            self.p.resume = true;
            out.push(Update::Pause);
        }
        self.emit(out);
    }

    /// The presentation is over: flush the final part and segment and end
    /// every playlist. A later stream starts a new playlist.
    pub fn end(&mut self) {
        let mut out = Vec::new();
        self.stop(&mut out);
        if self.p.part_target.take().is_some() {
            out.push(Update::End);
        }
        self.p.resume = false;
        for r in &mut self.rungs {
            r.end_playlist();
        }
        self.emit(out);
    }

    fn video_config(&mut self, params: Arc<VideoParams>, out: &mut Vec<Update>) {
        if self.video_params.as_deref() == Some(&*params) {
            return;
        }
        self.video_params = Some(params.clone());
        match &mut self.phase {
            Phase::Idle => {}
            // The frames measured so far belong to the old configuration.
            Phase::Probing { .. } => self.phase = Phase::Idle,
            Phase::Live(live) => {
                let Some(init) = video_init(&mut self.p, &live.sid, &params) else {
                    self.stop(out);
                    return;
                };
                // The cut waits for the keyframe that starts the new
                // configuration: only its decode time says how long the
                // last frame before it lasts, and guessing leaves a hole or
                // an overlap that players stall on.
                live.video.staged = Some(init);
                live.video.need_keyframe = true;
            }
        }
    }

    fn audio_config(&mut self, params: Arc<AudioParams>, out: &mut Vec<Update>) {
        if self.audio_params.as_deref() == Some(&*params) {
            return;
        }
        let changed = self.audio_params.is_some();
        self.audio_params = Some(params.clone());
        if changed {
            self.early_audio.clear();
        }
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let replacing = live.audio.is_some();
        if replacing {
            // A new sample rate or channel layout needs a new init segment,
            // and every rendition must show the discontinuity at the same
            // point (Apple HLS authoring spec 8.15).
            live.reconfigure(&mut self.p, out);
            live.audio = None;
        }
        let start = live.video.seg.end();
        let msn = live.video.seg.msn();
        live.audio = start_audio(&mut self.p, &live.sid, &params, start, msn, out);
        if let Some(a) = &mut live.audio {
            a.discontinuity_at = replacing.then_some(msn);
        }
    }

    fn video_packet(&mut self, held: Held, out: &mut Vec<Update>) {
        if self.video_params.is_none() {
            return;
        }
        match &mut self.phase {
            Phase::Idle => {
                // A stream starts at a keyframe or players cannot decode it.
                if held.pkt.keyframe {
                    let mut probe = FrameProbe::default();
                    probe.push(held.pkt.dts);
                    self.phase = Phase::Probing {
                        probe,
                        video: vec![held],
                    };
                }
            }
            Phase::Probing { probe, video } => {
                probe.push(held.pkt.dts);
                video.push(held);
                if probe.frame_ticks().is_some() {
                    self.go_live(out);
                }
            }
            Phase::Live(live) => {
                live.video_packet(&mut self.p, held, out);
                // The source moved on: rung frames it got past can be placed.
                let now = live.last_arrival;
                let mut ctx = Ctx {
                    edge: live.video.edge,
                    p: &mut self.p,
                    live,
                    now,
                };
                for r in self.rungs.iter_mut().filter(|r| r.valid) {
                    r.release(&mut ctx, out);
                }
            }
        }
    }

    fn audio_packet(&mut self, held: Held, out: &mut Vec<Update>) {
        if self.audio_params.is_none() {
            return;
        }
        match &mut self.phase {
            Phase::Live(live) => live.audio_packet(&mut self.p, held, out),
            // Video is required: hold audio (bounded) until it starts.
            Phase::Idle | Phase::Probing { .. } => {
                self.early_audio.push_back(held);
                while self.early_audio.len() > MAX_HELD_AUDIO {
                    self.early_audio.pop_front();
                }
            }
        }
    }

    fn go_live(&mut self, out: &mut Vec<Update>) {
        let Phase::Probing { probe, video } = std::mem::take(&mut self.phase) else {
            return;
        };
        let (Some(params), Some(first)) = (self.video_params.clone(), video.first()) else {
            return;
        };
        let frame_ticks = probe.frame_ticks().unwrap_or_else(|| probe.estimate());
        let new_playlist = self.p.part_target.is_none();
        let part_target = *self
            .p
            .part_target
            .get_or_insert_with(|| plan::choose_part_target(self.p.cfg.part_target, frame_ticks));

        // Unique even if two streams start in the same millisecond.
        let wall_ms = first
            .now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let ms = u64::try_from(wall_ms)
            .unwrap_or(u64::MAX)
            .max(self.p.last_sid_ms + 1);
        self.p.last_sid_ms = ms;
        let sid = names::stream_id(ms);

        let Some((init_uri, init)) = video_init(&mut self.p, &sid, &params) else {
            self.p.part_target = self.p.part_target.filter(|_| !new_playlist);
            return;
        };
        out.push(Update::StreamStart {
            sid: sid.clone(),
            part_target,
            new_playlist,
            next_msn: self.p.next_msn,
        });
        out.push(init);

        let start = self.p.timeline_end;
        let rules = video_rules(&self.p.cfg, part_target, frame_ticks);
        let resume = std::mem::take(&mut self.p.resume) && !new_playlist;
        let mut live = Box::new(Live {
            offset: i64::try_from(start).unwrap_or(i64::MAX) - first.pkt.dts,
            anchor: (first.now, start),
            frame_ticks: frame_ticks.round() as u64,
            video: VideoTrack {
                seg: Segmenter::new(rules, self.p.next_msn, start),
                pending: None::<PendingVideo>,
                init_uri,
                need_keyframe: false,
                staged: None,
                edge: start,
                discontinuity: resume,
            },
            audio: None,
            trail: Default::default(),
            sid,
            last_arrival: first.arrival,
        });
        if let Some(audio) = self.audio_params.clone() {
            let msn = self.p.next_msn;
            // Audio starts where the first picture is presented: audio
            // before it would play over nothing and leave the renditions'
            // first segments covering different times.
            let lead = u64::try_from(first.pkt.pts.saturating_sub(first.pkt.dts)).unwrap_or(0);
            let audio_start = start + lead.min(plan::ticks(self.p.cfg.segment_target, TIMEBASE));
            live.audio = start_audio(&mut self.p, &live.sid, &audio, audio_start, msn, out);
            if let Some(a) = &mut live.audio {
                a.discontinuity_at = resume.then_some(msn);
            }
        }
        let now = first.arrival;
        let mut ctx = Ctx {
            edge: live.video.edge,
            p: &mut self.p,
            live: &live,
            now,
        };
        for (rank, r) in (1u32..).zip(&mut self.rungs) {
            if r.valid {
                // After StreamStart, which deactivates a new playlist's
                // renditions: every rung of the ladder is listed again.
                out.push(r.declare(rank));
                r.start_stream(&mut ctx, out);
            }
        }
        for held in video {
            live.video_packet(&mut self.p, held, out);
        }
        for held in std::mem::take(&mut self.early_audio) {
            live.audio_packet(&mut self.p, held, out);
        }
        let now = live.last_arrival;
        let mut ctx = Ctx {
            edge: live.video.edge,
            p: &mut self.p,
            live: &live,
            now,
        };
        for r in self.rungs.iter_mut().filter(|r| r.valid) {
            for (pkt, arrival) in r.take_early() {
                r.packet(&mut ctx, pkt, arrival, out);
            }
        }
        self.phase = Phase::Live(live);
    }

    /// Flushes a live stream; true if there was one.
    fn stop(&mut self, out: &mut Vec<Update>) -> bool {
        self.early_audio.clear();
        for r in &mut self.rungs {
            r.take_early();
        }
        match std::mem::take(&mut self.phase) {
            Phase::Idle | Phase::Probing { .. } => false,
            Phase::Live(mut live) => {
                live.flush(&mut self.p, out);
                // Every rung ends where the source ended, with gaps for
                // what it never produced, so the next stream continues
                // every playlist at the same MSN.
                let until = live.trail.last_msn();
                let now = live.last_arrival;
                let mut ctx = Ctx {
                    p: &mut self.p,
                    live: &live,
                    edge: u64::MAX,
                    now,
                };
                for r in self.rungs.iter_mut().filter(|r| r.valid) {
                    r.finish(&mut ctx, until, out);
                }
                true
            }
        }
    }
}

/// The video segmenter's limits for one stream.
fn video_rules(cfg: &PackageConfig, part_target: Duration, frame_ticks: f64) -> Rules {
    let pt = plan::ticks(part_target, TIMEBASE);
    // Apple HLS authoring spec 7.7: "Media Segments MUST NOT exceed the
    // target duration by more than 0.5 seconds"; RFC 8216bis 4.4.3.1 lets
    // EXTINF round to the target duration. 50 ms stay in hand for audio,
    // whose segments end up to a frame after video's.
    let max = Duration::from_secs(u64::from(cfg.target_duration())) + Duration::from_millis(450);
    Rules {
        part_target: pt,
        samples_per_part: plan::frames_per_part(part_target, frame_ticks),
        cuts: CutPolicy::Keyframes {
            // Cut at the first keyframe once a segment is within one part of
            // its target, so segments land on the source's GOPs.
            min: plan::ticks(cfg.segment_target, TIMEBASE).saturating_sub(pt),
            max: plan::ticks(max, TIMEBASE),
        },
    }
}

/// A new video init segment for stream `sid`, as (URI, update).
fn video_init(p: &mut Persist, sid: &str, params: &VideoParams) -> Option<(String, Update)> {
    match fmp4::init_segment(TRACK_ID, fmp4::TrackCodec::Video(params)) {
        Ok(bytes) => {
            p.init_version += 1;
            let uri = names::init(sid, p.init_version);
            let update = Update::Init {
                rendition: p.source.clone(),
                info: RenditionInfo::Video {
                    codecs: params.codec_string(),
                    width: params.width,
                    height: params.height,
                },
                uri: uri.clone(),
                bytes,
            };
            Some((uri, update))
        }
        Err(e) => {
            tracing::error!(channel = %p.channel_id, error = %e, "cannot package this video configuration");
            None
        }
    }
}

/// Starts the audio rendition at timeline time `start`, segment `msn`.
fn start_audio(
    p: &mut Persist,
    sid: &str,
    params: &Arc<AudioParams>,
    start: u64,
    msn: u64,
    out: &mut Vec<Update>,
) -> Option<AudioTrack> {
    let bytes = match fmp4::init_segment(TRACK_ID, fmp4::TrackCodec::Audio(params)) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(channel = %p.channel_id, error = %e, "cannot package this audio configuration");
            return None;
        }
    };
    let part_target = p.part_target?;
    let rate = params.sample_rate.max(1);
    let spf = params.samples_per_frame.max(1);
    let pt = plan::ticks(part_target, rate);
    p.init_version += 1;
    let uri = names::init(sid, p.init_version);
    out.push(Update::Init {
        rendition: p.audio.clone(),
        info: RenditionInfo::Audio {
            codecs: params.codec_string(),
        },
        uri: uri.clone(),
        bytes,
    });
    let rules = Rules {
        part_target: pt,
        samples_per_part: u32::try_from(pt / u64::from(spf)).unwrap_or(1).max(1),
        cuts: CutPolicy::External,
    };
    let max_lag = plan::ticks(p.cfg.segment_target, TIMEBASE);
    Some(AudioTrack {
        seg: Segmenter::new(rules, msn, live::to_track(start, rate)),
        params: params.clone(),
        init_uri: uri,
        next_ts: None,
        aligner: AudioAligner::new(start, MAX_HELD_AUDIO, max_lag),
        discontinuity_at: None,
        silence: crate::media::aac::silent_frame(params),
    })
}

/// The bytes a sample carries, for the fMP4 writer.
fn fmp4_samples(samples: Vec<super::segmenter::Sample>) -> Vec<fmp4::Sample> {
    samples
        .into_iter()
        .map(|s| fmp4::Sample {
            duration: s.duration,
            composition_offset: s.cts,
            keyframe: s.keyframe,
            data: s.data,
        })
        .collect()
}

#[cfg(test)]
mod rung_tests;
#[cfg(test)]
mod tests;
