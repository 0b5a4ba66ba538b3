//! The sans-IO core of one live channel: who publishes, when a lost
//! publisher's stream ends, and the order in which source and rungs reach
//! the packager.
//!
//! Time is an input (`now` on every call, arrival stamped at the socket) and
//! nothing here touches a thread, queue, socket or clock: the thread in
//! [`super::channel`] drives it and carries out its [`Output`]s, as
//! `ingest/whip/udp.rs` does for a WHIP session. Every piece of a channel's
//! state lives here, so publisher admission is a call, not a shared lock.
//! What it knows about its stream goes out as [`Output::Session`] notes for
//! the registry and [`Output::Status`] snapshots for the stream API.

use super::journal::SessionNote;
use super::status::{
    AudioInfo, IngestClock, IngestInfo, StreamState, StreamStatus, VideoInfo, WARMUP, rungs_of,
};
use super::tracks::{Slot, Tracks, Verdict};
use crate::media::{Arrival, IngestEvent, TrackKind, VideoEvent};
use crate::metrics::METRICS;
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::{ChannelPackager, PackageConfig, Update};
use crate::registry::TrackUse;
use crate::transcode::backend::ChannelPlan;
use crate::transcode::pipeline::Output as RungOutput;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, a status snapshot goes out while nothing changes.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// How long a lost publisher's stream waits for it, and how long an ended
/// stream's playlists are served (so players read EXT-X-ENDLIST).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub grace: Duration,
    pub linger: Duration,
}

/// A publish session asking for the channel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Joined {
    pub session: u64,
    /// `rtmp`, `whip`.
    pub protocol: &'static str,
    pub at: Instant,
}

/// What the driver hands the core.
#[derive(Debug)]
pub(crate) enum Input {
    /// One ingest event of publish session `session`.
    Media {
        session: u64,
        event: IngestEvent,
        arrival: Arrival,
    },
    /// Publish session `session` ended. `abandoned`: it started the stream
    /// and left before sending video, or ingest refused its media; its
    /// stream ends without a grace period. `reason`: why it went, for
    /// the session record.
    Left {
        session: u64,
        abandoned: bool,
        reason: String,
    },
    /// One output of the transcoding pipeline.
    Rung(RungOutput),
    /// Everything the pipeline still made after [`Output::FlushPipeline`].
    Flushed(Vec<RungOutput>),
    /// Timed metadata to place at the stream's next part; answered with
    /// [`Output::Metadata`].
    Metadata {
        payload: Payload,
        duration: Option<Duration>,
    },
    /// The channel was deleted: end the stream now.
    Terminate,
    /// The source is over (a file's end): package what is left and end
    /// the stream.
    Finish,
    /// [`ChannelCore::poll_timeout`] has passed.
    Timeout,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub(crate) enum Output {
    /// Changes for the channel's store, one atomic batch.
    Store(Vec<Update>),
    /// Start the transcoding pipeline (the first video frame of a publish
    /// session on a channel with a ladder, so that every track the publisher
    /// announces is known), leaving out the ladder's rungs of `covered`
    /// heights: the publisher's own tracks stand in for them.
    StartPipeline { covered: Vec<u32> },
    /// Feed the pipeline a video configuration or packet.
    Transcode(IngestEvent, Arrival),
    /// Finish the pipeline and hand everything it still makes back as
    /// [`Input::Flushed`] before any other input: nothing of a session may
    /// reach the packager after the core moved on from it.
    FlushPipeline,
    /// The stream ended (every playlist has EXT-X-ENDLIST).
    Ended,
    /// The core is done: take the channel out of the node's table.
    Remove,
    /// Where [`Input::Metadata`] was placed, or why not.
    Metadata(Result<Placement, MetadataRefusal>),
    /// For the stream's session record.
    Session(SessionNote),
    /// The channel's state for the stream API: on every change, and at
    /// most every [`STATUS_EVERY`] while media flows.
    Status(Box<StreamStatus>),
}

/// Why [`ChannelCore::admit`] turned a publisher away.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Another publisher holds the channel.
    AlreadyLive,
    /// This stream is over; a new publisher starts a new one.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Live,
    /// The publisher left; the stream ends at `until` unless one comes back.
    Grace {
        until: Instant,
    },
    /// The stream ended; its playlists are served until `until`.
    Ended {
        until: Instant,
    },
    Removed,
}

/// What to do once the pipeline has been flushed.
#[derive(Debug)]
enum AfterFlush {
    /// Media of a new session after an earlier one: a reconnect.
    Rejoin {
        session: u64,
        event: IngestEvent,
        arrival: Arrival,
    },
    Grace,
    Abandon,
    Terminate,
    Finish,
}

/// One live channel's state machine.
pub(crate) struct ChannelCore {
    id: String,
    packager: ChannelPackager,
    timing: Timing,
    /// The channel has a ladder to transcode.
    transcode: bool,
    phase: Phase,
    /// The admitted publish session, if any.
    publisher: Option<u64>,
    /// The session whose media was packaged last.
    media_session: Option<u64>,
    pipeline_running: bool,
    flushing: Option<AfterFlush>,
    /// The newest source arrival: the time of the pipeline's outputs that
    /// carry none of their own (configurations).
    last_arrival: Option<Arrival>,
    /// Some part was packaged: an abandoned stream with none is removed
    /// without lingering.
    packaged: bool,
    out: VecDeque<Output>,
    /// When the admitted (or last) publisher joined.
    joined: Instant,
    /// Why the last publisher left.
    left_why: Option<String>,
    clock: IngestClock,
    ingest: IngestInfo,
    /// The measured rates reached the session record since the last
    /// configuration change.
    rates_noted: bool,
    started: Option<SystemTime>,
    /// A multitrack publish's further tracks, and the ladder they share with
    /// the transcoded rungs.
    tracks: Tracks,
    /// The source's video configuration, held until its first frame starts
    /// the pipeline.
    held_config: Option<IngestEvent>,
    /// The publish session's first video frame came: every track it
    /// announces is known.
    tracks_settled: bool,
    plan: Option<ChannelPlan>,
    /// When the next status snapshot is due; `None`: at the next input.
    next_status: Option<Instant>,
}

impl ChannelCore {
    /// A channel whose stream publish session `joined` starts.
    pub fn new(
        id: &str,
        package: PackageConfig,
        timing: Timing,
        transcode: bool,
        tracks: TrackUse,
        joined: Joined,
    ) -> Self {
        let mut core = ChannelCore {
            id: id.to_owned(),
            packager: ChannelPackager::buffered(id, package),
            timing,
            transcode,
            phase: Phase::Live,
            publisher: Some(joined.session),
            media_session: None,
            pipeline_running: false,
            flushing: None,
            last_arrival: None,
            packaged: false,
            out: VecDeque::new(),
            joined: joined.at,
            left_why: None,
            clock: IngestClock::default(),
            ingest: IngestInfo {
                protocol: joined.protocol,
                ..IngestInfo::default()
            },
            rates_noted: false,
            started: None,
            tracks: Tracks::new(tracks),
            held_config: None,
            tracks_settled: false,
            plan: None,
            next_status: None,
        };
        core.report(joined.at);
        core
    }

    /// Takes publish session `session` as the channel's publisher. A stream
    /// within its reconnect grace period continues (with a discontinuity
    /// when media comes); an ended one is refused, so that the caller starts
    /// a new stream. One owner decides, so a publisher arriving as the grace
    /// period runs out either wins the stream back or starts a new one,
    /// never both.
    pub fn admit(&mut self, joined: Joined) -> Result<(), Refusal> {
        match self.phase {
            Phase::Ended { .. } | Phase::Removed => Err(Refusal::Ended),
            _ if self.publisher.is_some() => {
                self.note_event(
                    "publish refused",
                    format!(
                        "a second {} publisher was turned away: the channel has one",
                        joined.protocol
                    ),
                );
                Err(Refusal::AlreadyLive)
            }
            phase => {
                if matches!(phase, Phase::Grace { .. }) {
                    tracing::info!(channel = %self.id, "publisher reconnected within grace");
                }
                self.note_event("publisher reconnected", joined.protocol);
                self.phase = Phase::Live;
                self.publisher = Some(joined.session);
                self.ingest.protocol = joined.protocol;
                self.joined = joined.at;
                self.next_status = None;
                self.report(joined.at);
                Ok(())
            }
        }
    }

    /// When [`Input::Timeout`] is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Grace { until } | Phase::Ended { until } => Some(until),
            Phase::Live | Phase::Removed => None,
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.phase == Phase::Removed {
            return;
        }
        debug_assert!(
            self.flushing.is_none() || matches!(input, Input::Flushed(_)),
            "the driver answers FlushPipeline before anything else"
        );
        match input {
            Input::Media {
                session,
                event,
                arrival,
            } => self.media(now, session, event, arrival),
            Input::Left {
                session,
                abandoned,
                reason,
            } => {
                if self.publisher != Some(session) {
                    return;
                }
                self.note_event("publisher left", reason.clone());
                self.left_why = Some(reason);
                self.next_status = None;
                self.publisher = None;
                let then = if abandoned {
                    AfterFlush::Abandon
                } else {
                    AfterFlush::Grace
                };
                self.flush_then(now, then);
            }
            Input::Rung(out) => {
                // A rung's output after its stream ended has nowhere to go.
                if matches!(self.phase, Phase::Live | Phase::Grace { .. }) {
                    self.rung(out);
                }
            }
            Input::Flushed(outs) => {
                for out in outs {
                    self.rung(out);
                }
                if let Some(then) = self.flushing.take() {
                    self.after_flush(now, then);
                }
            }
            Input::Terminate => match self.phase {
                Phase::Ended { .. } => self.remove(),
                _ => self.flush_then(now, AfterFlush::Terminate),
            },
            Input::Finish => self.flush_then(now, AfterFlush::Finish),
            Input::Metadata { payload, duration } => {
                // Only a stream with a publisher makes parts to carry it: in
                // the grace period or after the end, none is coming.
                let answer = match (self.phase, self.publisher) {
                    (Phase::Live, Some(_)) if self.flushing.is_none() => {
                        self.packager.insert_metadata(payload, duration)
                    }
                    _ => Err(MetadataRefusal::NotLive),
                };
                self.out.push_back(Output::Metadata(answer));
            }
            Input::Timeout => match self.phase {
                Phase::Grace { until } if now >= until => {
                    let why = format!("publisher did not come back ({})", self.left_why());
                    self.end_stream(now, why);
                }
                Phase::Ended { until } if now >= until => self.remove(),
                _ => {}
            },
        }
        self.report(now);
    }

    fn media(&mut self, now: Instant, session: u64, event: IngestEvent, arrival: Arrival) {
        if matches!(self.phase, Phase::Ended { .. }) || self.publisher != Some(session) {
            // A deleted channel swallows its publisher's last media; media
            // of a session that is not (or no longer) the publisher has no
            // stream to join.
            return;
        }
        if self.media_session != Some(session) {
            if self.media_session.is_some() {
                self.flush_then(
                    now,
                    AfterFlush::Rejoin {
                        session,
                        event,
                        arrival,
                    },
                );
                return;
            }
            self.media_session = Some(session);
        }
        self.package(event, arrival);
    }

    /// Packages one source event, then hands it to the pipeline. The source
    /// goes first: its cuts decide where the rungs, which come later, cut.
    fn package(&mut self, event: IngestEvent, arrival: Arrival) {
        self.last_arrival = Some(arrival);
        self.observe(&event, arrival);
        // A source video frame: its pts, and whether it is a keyframe.
        let (video, frame) = match &event {
            IngestEvent::VideoConfig(_) => (true, None),
            IngestEvent::Packet(p) if p.track == TrackKind::Video => {
                (true, Some((p.pts, p.keyframe)))
            }
            IngestEvent::Packet(_) | IngestEvent::AudioConfig(_) => (false, None),
            IngestEvent::Track { .. } => {
                if let IngestEvent::Track { id, event } = event {
                    self.track(id, event, arrival);
                }
                return;
            }
        };
        if !self.tracks_settled && frame.is_some() {
            self.tracks_settled = true;
            if self.tracks.settle() {
                self.recompose();
            }
        }
        let to_pipeline =
            (self.transcode && self.tracks.transcodes() && video).then(|| event.clone());
        self.packager.push(event, arrival.wall, arrival.at);
        self.emit_updates();
        if let Some((pts, true)) = frame {
            for (id, why) in self.tracks.source_keyframe(pts) {
                self.track_dropped(id, &why);
            }
        }
        let Some(event) = to_pipeline else { return };
        if !self.pipeline_running {
            let config = match event {
                IngestEvent::VideoConfig(_) => {
                    self.held_config = Some(event);
                    return;
                }
                _ => match self.held_config.take() {
                    Some(config) => config,
                    None => return,
                },
            };
            self.pipeline_running = true;
            self.out.push_back(Output::StartPipeline {
                covered: self.tracks.covered_heights(),
            });
            self.out.push_back(Output::Transcode(config, arrival));
        }
        self.out.push_back(Output::Transcode(event, arrival));
    }

    /// One event of a multitrack publish's further track: a rung passed
    /// through, once its configuration made it one.
    fn track(&mut self, id: u8, event: VideoEvent, arrival: Arrival) {
        match event {
            VideoEvent::Config(params) => {
                if self.tracks.config(id, params.clone()) {
                    self.recompose();
                }
                if let Some(i) = self.tracks.index_of_track(id) {
                    self.packager.push_rung(
                        i,
                        VideoEvent::Config(params),
                        arrival.wall,
                        arrival.at,
                    );
                }
                self.next_status = None;
            }
            VideoEvent::Packet(p) => match self.tracks.packet(id, &p) {
                Verdict::Forward(i) => {
                    self.packager
                        .push_rung(i, VideoEvent::Packet(p), arrival.wall, arrival.at)
                }
                Verdict::Ignore => {}
                Verdict::Dropped(why) => self.track_dropped(id, &why),
            },
        }
        self.emit_updates();
    }

    /// A track left the ladder: its keyframes do not line up with the source's.
    fn track_dropped(&mut self, id: u8, why: &str) {
        tracing::warn!(channel = %self.id, track = id, why,
            "multitrack: track's keyframes do not line up with the source's; dropped from the ladder");
        METRICS
            .tracks_dropped
            .with_label_values(&[&self.id, "misaligned"])
            .inc();
        self.note_event("track dropped", format!("track {id}: {why}"));
        self.recompose();
    }

    /// Hands the packager the ladder of transcoded rungs and tracks as it
    /// stands.
    fn recompose(&mut self) {
        let ladder = self.tracks.compose();
        self.packager.set_rungs(ladder);
        self.next_status = None;
        self.emit_updates();
    }

    fn rung(&mut self, out: RungOutput) {
        match out {
            RungOutput::Plan(rungs) => {
                self.tracks.set_plan(rungs);
                self.recompose();
            }
            RungOutput::Config { rung, params } => {
                let (Some(at), Some(i)) = (self.last_arrival, self.tracks.index_of_planned(rung))
                else {
                    return;
                };
                self.packager
                    .push_rung(i, VideoEvent::Config(params), at.wall, at.at);
            }
            RungOutput::Packet {
                rung,
                packet,
                arrival,
            } => {
                if let Some(i) = self.tracks.index_of_planned(rung) {
                    self.packager
                        .push_rung(i, VideoEvent::Packet(packet), arrival.wall, arrival.at)
                }
            }
            RungOutput::Backends(plan) => {
                self.plan = Some(plan);
                self.next_status = None;
            }
            RungOutput::Summary { .. } => {}
        }
        self.emit_updates();
    }

    fn flush_then(&mut self, now: Instant, then: AfterFlush) {
        if self.pipeline_running {
            self.pipeline_running = false;
            self.flushing = Some(then);
            self.out.push_back(Output::FlushPipeline);
        } else {
            self.after_flush(now, then);
        }
    }

    fn after_flush(&mut self, now: Instant, then: AfterFlush) {
        match then {
            AfterFlush::Rejoin {
                session,
                event,
                arrival,
            } => {
                self.packager.discontinuity();
                self.emit_updates();
                // The new session announces its own tracks.
                self.held_config = None;
                self.tracks.rejoin();
                self.tracks_settled = false;
                self.clock.restart();
                self.media_session = Some(session);
                self.package(event, arrival);
            }
            AfterFlush::Grace => {
                if self.publisher.is_none() && self.phase == Phase::Live {
                    tracing::info!(channel = %self.id, grace_s = self.timing.grace.as_secs_f64(),
                        "publisher gone; waiting for it to come back");
                    self.phase = Phase::Grace {
                        until: now + self.timing.grace,
                    };
                }
            }
            AfterFlush::Abandon => {
                let why = format!(
                    "publisher refused or left before sending video ({})",
                    self.left_why()
                );
                self.end_stream(now, why);
                if !self.packaged {
                    self.remove();
                }
            }
            AfterFlush::Terminate => self.end_stream(now, "channel deleted".into()),
            AfterFlush::Finish => self.end_stream(now, "source ended".into()),
        }
    }

    fn end_stream(&mut self, now: Instant, why: String) {
        if matches!(self.phase, Phase::Ended { .. } | Phase::Removed) {
            return;
        }
        self.packager.end();
        self.emit_updates();
        self.publisher = None;
        self.phase = Phase::Ended {
            until: now + self.timing.linger,
        };
        self.out.push_back(Output::Ended);
        tracing::info!(channel = %self.id, reason = %why, "stream ended");
        self.out
            .push_back(Output::Session(SessionNote::Ended { reason: why }));
        self.next_status = None;
    }

    fn remove(&mut self) {
        self.phase = Phase::Removed;
        self.out.push_back(Output::Remove);
    }

    fn left_why(&self) -> &str {
        self.left_why.as_deref().unwrap_or("disconnected")
    }

    fn note_event(&mut self, kind: &'static str, detail: impl Into<String>) {
        self.out.push_back(Output::Session(SessionNote::Event {
            kind,
            detail: detail.into(),
        }));
    }

    /// Ingest as received: configurations as they come and change, and
    /// the pace of the media, measured on arrival.
    fn observe(&mut self, event: &IngestEvent, arrival: Arrival) {
        match event {
            IngestEvent::VideoConfig(p) => {
                let info = VideoInfo::new(p);
                match &self.ingest.video {
                    Some(old) if old.same_format(&info) => return,
                    Some(old) => {
                        let change = format!("video {} -> {}", old.describe(), info.describe());
                        self.note_event("ingest changed", change);
                    }
                    None => {}
                }
                self.ingest.video = Some(info);
                self.rates_noted = false;
                self.next_status = None;
            }
            IngestEvent::AudioConfig(p) => {
                let info = AudioInfo::new(p);
                match &self.ingest.audio {
                    Some(old) if *old == info => return,
                    Some(old) => {
                        let change = format!("audio {} -> {}", old.describe(), info.describe());
                        self.note_event("ingest changed", change);
                    }
                    None => {}
                }
                self.ingest.audio = Some(info);
                self.rates_noted = false;
                self.next_status = None;
            }
            IngestEvent::Track { .. } => return,
            IngestEvent::Packet(p) => {
                self.started.get_or_insert(arrival.wall);
                self.clock.packet(arrival.at, p);
                // The record gets the rates once, when first measured
                // after each configuration.
                if self.rates_noted
                    || self.ingest.video.is_none()
                    || self.clock.reading().span < WARMUP
                {
                    return;
                }
                self.rates_noted = true;
            }
        }
        self.measure();
        self.out
            .push_back(Output::Session(SessionNote::Ingest(self.ingest.clone())));
    }

    fn measure(&mut self) {
        let r = self.clock.reading();
        if let Some(v) = &mut self.ingest.video {
            // Two decimals: 29.97 reads as itself, jitter does not.
            v.frame_rate = r.frame_rate.map(|f| (f * 100.0).round() / 100.0);
        }
        self.ingest.bitrate_bps = r.bitrate_bps;
        self.ingest.tracks = self.tracks.infos();
    }

    /// Sends a status snapshot when something changed or one is due.
    fn report(&mut self, now: Instant) {
        if self.phase == Phase::Removed || self.next_status.is_some_and(|t| now < t) {
            return;
        }
        self.next_status = Some(now + STATUS_EVERY);
        self.measure();
        let state = match (self.phase, self.publisher) {
            (Phase::Ended { .. } | Phase::Removed, _) => StreamState::Offline,
            (_, Some(_)) => StreamState::Live,
            (_, None) => StreamState::Reconnecting,
        };
        let ladder: Vec<(String, Option<usize>)> = (self.tracks.ladder().iter())
            .map(|e| {
                let planned = match e.slot {
                    Slot::Planned(i) => Some(i),
                    Slot::Track(_) => None,
                };
                (e.decl.name.clone(), planned)
            })
            .collect();
        let status = StreamStatus {
            state,
            publisher_since: self.publisher.map(|_| self.joined),
            started: self.started,
            ingest: self.ingest.clone(),
            clock: self.clock.reading(),
            rungs: rungs_of(&ladder, self.plan.as_ref()),
        };
        self.out.push_back(Output::Status(Box::new(status)));
    }

    fn emit_updates(&mut self) {
        let updates = self.packager.take_updates();
        if updates.is_empty() {
            return;
        }
        self.packaged |= updates.iter().any(|u| matches!(u, Update::Part { .. }));
        self.out.push_back(Output::Store(updates));
    }
}
