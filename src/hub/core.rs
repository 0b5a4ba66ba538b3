//! The sans-IO core of one live channel: who publishes, when a lost
//! publisher's stream ends, and the order in which source and rungs reach
//! the packager.
//!
//! Time is an input (`now` on every call, arrival stamped at the socket) and
//! nothing here touches a thread, queue, socket or clock: the thread in
//! [`super::channel`] drives it and carries out its [`Output`]s, as
//! `ingest/whip/udp.rs` does for a WHIP session. Every piece of a channel's
//! state lives here, so publisher admission is a call, not a shared lock.

use crate::media::{Arrival, IngestEvent, TrackKind};
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::{ChannelPackager, PackageConfig, RungEvent, Update};
use crate::transcode::pipeline::{Output as RungOutput, rung_decls};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a lost publisher's stream waits for it, and how long an ended
/// stream's playlists are served (so players read EXT-X-ENDLIST).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub grace: Duration,
    pub linger: Duration,
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
    /// stream ends without a grace period.
    Left { session: u64, abandoned: bool },
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
    /// Start the transcoding pipeline (the first video configuration of a
    /// publish session on a channel with a ladder).
    StartPipeline,
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
}

impl ChannelCore {
    /// A channel whose stream publish session `session` starts.
    pub fn new(
        id: &str,
        package: PackageConfig,
        timing: Timing,
        transcode: bool,
        session: u64,
    ) -> Self {
        ChannelCore {
            id: id.to_owned(),
            packager: ChannelPackager::buffered(id, package),
            timing,
            transcode,
            phase: Phase::Live,
            publisher: Some(session),
            media_session: None,
            pipeline_running: false,
            flushing: None,
            last_arrival: None,
            packaged: false,
            out: VecDeque::new(),
        }
    }

    /// Takes publish session `session` as the channel's publisher. A stream
    /// within its reconnect grace period continues (with a discontinuity
    /// when media comes); an ended one is refused, so that the caller starts
    /// a new stream. One owner decides, so a publisher arriving as the grace
    /// period runs out either wins the stream back or starts a new one,
    /// never both.
    pub fn admit(&mut self, session: u64) -> Result<(), Refusal> {
        match self.phase {
            Phase::Ended { .. } | Phase::Removed => Err(Refusal::Ended),
            _ if self.publisher.is_some() => Err(Refusal::AlreadyLive),
            phase => {
                if matches!(phase, Phase::Grace { .. }) {
                    tracing::info!(channel = %self.id, "publisher reconnected within grace");
                }
                self.phase = Phase::Live;
                self.publisher = Some(session);
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
            Input::Left { session, abandoned } => {
                if self.publisher != Some(session) {
                    return;
                }
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
                    self.end_stream(now, "publisher did not come back");
                }
                Phase::Ended { until } if now >= until => self.remove(),
                _ => {}
            },
        }
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
        let video = match &event {
            IngestEvent::VideoConfig(_) => true,
            IngestEvent::Packet(p) => p.track == TrackKind::Video,
            IngestEvent::AudioConfig(_) => false,
        };
        let to_pipeline = (self.transcode && video).then(|| event.clone());
        self.packager.push(event, arrival.wall, arrival.at);
        self.emit_updates();
        if let Some(event) = to_pipeline {
            if !self.pipeline_running {
                if !matches!(event, IngestEvent::VideoConfig(_)) {
                    return;
                }
                self.pipeline_running = true;
                self.out.push_back(Output::StartPipeline);
            }
            self.out.push_back(Output::Transcode(event, arrival));
        }
    }

    fn rung(&mut self, out: RungOutput) {
        match out {
            RungOutput::Plan(rungs) => self.packager.set_rungs(rung_decls(rungs)),
            RungOutput::Config { rung, params } => {
                let Some(at) = self.last_arrival else { return };
                self.packager
                    .push_rung(rung, RungEvent::Config(params), at.wall, at.at);
            }
            RungOutput::Packet {
                rung,
                packet,
                arrival,
            } => self
                .packager
                .push_rung(rung, RungEvent::Packet(packet), arrival.wall, arrival.at),
            RungOutput::Summary { .. } | RungOutput::Backends(_) => {}
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
                self.end_stream(now, "publisher refused or left before sending video");
                if !self.packaged {
                    self.remove();
                }
            }
            AfterFlush::Terminate => self.end_stream(now, "channel deleted"),
            AfterFlush::Finish => self.end_stream(now, "source ended"),
        }
    }

    fn end_stream(&mut self, now: Instant, why: &str) {
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
        tracing::info!(channel = %self.id, reason = why, "stream ended");
    }

    fn remove(&mut self) {
        self.phase = Phase::Removed;
        self.out.push_back(Output::Remove);
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
