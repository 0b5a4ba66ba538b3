//! One RTMP publish connection as a sans-IO state machine: handshake, then rml_rtmp's
//! `ServerSession`, with FLV tags turned into `IngestEvent`s. Fed bytes, returns events
//! (bytes for the peer among them). It never decides whether a stream key may publish: it
//! asks, and the caller answers with `accept_publish` or `refuse_publish`.

use super::connect::{HeaderPatch, PublisherCaps, enhanced_result, parse_connect};
use super::enhanced::{AudioPacket, ExAudioTag, ExVideoTag, VideoFourCc, VideoPacket, VideoTrack};
use super::flv::{self, AudioTag, FlvError, VideoTag};
use super::guard::{Guard, GuardError};
use super::reconnect::{self, ReconnectError};
use crate::media::{
    AudioParams, IngestEvent, MediaError, Packet, TIMEBASE, TrackKind, VideoCodec, VideoEvent,
    VideoParams, aac, av1, h264, hevc, ms_to_ticks,
};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// The one RTMP application this node ingests on: `rtmp://host/live/<stream key>`.
pub const APP: &str = "live";

/// Video tracks one publisher may send: a ladder of renditions is rarely more than five,
/// and each track costs a rung's packaging.
const MAX_VIDEO_TRACKS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("RTMP session: {0}")]
    Session(#[from] ServerSessionError),
    #[error("refused chunk stream: {0}")]
    Guard(#[from] GuardError),
    #[error("FLV tag at {timestamp_ms} ms: {source}")]
    Flv {
        timestamp_ms: u32,
        #[source]
        source: FlvError,
    },
    #[error("{} sequence header at {timestamp_ms} ms: {source}", kind_name(*.track))]
    Config {
        track: TrackKind,
        timestamp_ms: u32,
        #[source]
        source: MediaError,
    },
    #[error("video frame at {timestamp_ms} ms: {source}")]
    Sample {
        timestamp_ms: u32,
        #[source]
        source: MediaError,
    },
    /// rml_rtmp panicked on peer input that the guard did not foresee. The session is
    /// dropped: its state after an unwind is unknown.
    #[error("rml_rtmp panicked in {during} on peer input")]
    LibraryPanic { during: &'static str },
    /// A reconnect request could not be written (its tcUrl was refused); the session is
    /// unchanged.
    #[error("reconnect request: {0}")]
    Reconnect(#[from] ReconnectError),
    #[error("no publish request is waiting for an answer")]
    NoPendingPublish,
    #[error("session is closed")]
    Closed,
}

fn kind_name(track: TrackKind) -> &'static str {
    match track {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    }
}

impl RtmpError {
    /// The limit on a peer that has not published yet which this error enforces, as a metric
    /// label (see [`GuardError::limit`]).
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            RtmpError::Guard(e) => e.limit(),
            _ => None,
        }
    }

    /// The codec's name when the session ended because the publisher sent a codec this node
    /// does not ingest.
    pub fn unsupported_codec(&self) -> Option<&str> {
        match self {
            RtmpError::Flv {
                source: FlvError::Unsupported { codec, .. },
                ..
            } => Some(codec),
            _ => None,
        }
    }
}

/// What the caller must act on, in order.
#[derive(Clone)]
pub enum SessionEvent {
    /// Bytes for the peer. They must be written in order and none may be skipped: RTMP
    /// chunk headers are compressed against the previous ones.
    Send(Bytes),
    /// The peer connected to an application other than [`APP`]. The refusal is in the
    /// preceding `Send`; the session is closed.
    ConnectRefused {
        app: String,
    },
    /// The peer asks to publish. Answer with [`PublishSession::accept_publish`] or
    /// [`PublishSession::refuse_publish`]; media is not delivered until accepted.
    PublishRequested {
        app: String,
        stream_key: String,
    },
    Media(IngestEvent),
    /// The peer ended its publish (deleteStream/closeStream).
    PublishFinished,
}

impl fmt::Debug for SessionEvent {
    // By hand so that the stream key, a secret, never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEvent::Send(b) => write!(f, "Send({} bytes)", b.len()),
            SessionEvent::ConnectRefused { app } => write!(f, "ConnectRefused({app:?})"),
            SessionEvent::PublishRequested { app, .. } => {
                write!(
                    f,
                    "PublishRequested {{ app: {app:?}, stream_key: <redacted> }}"
                )
            }
            SessionEvent::Media(m) => write!(f, "Media({m:?})"),
            SessionEvent::PublishFinished => f.write_str("PublishFinished"),
        }
    }
}

pub struct PublishSession {
    phase: Phase,
    guard: Guard,
    stream: StreamState,
    /// What the publisher announced in its `connect` (Enhanced RTMP v2).
    caps: PublisherCaps,
}

enum Phase {
    Handshake(Box<Handshake>),
    Rtmp(Box<ServerSession>),
    /// After an error, a panic or a refused connect: nothing more is read.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publish {
    Idle,
    Pending {
        request_id: u32,
    },
    Publishing,
    /// Refused or finished; a connection publishes at most once.
    Done,
}

struct StreamState {
    publish: Publish,
    clock: Clock,
    /// Each video track's configuration by Enhanced RTMP track id (0: the only track of a
    /// publisher that does not send multitrack).
    video: BTreeMap<u8, Arc<VideoParams>>,
    audio: Option<Arc<AudioParams>>,
    dropped_before_config: u64,
    /// Set when a result closes the session (a refused connect); applied after the results
    /// of the current call are returned.
    close: bool,
    /// rml_rtmp's outgoing chunk size, which a rewritten `_result` must fit in one chunk of.
    chunk_size: usize,
    /// Set when the connect `_result` was rewritten with rungs's capabilities, until the
    /// chunk headers rml_rtmp writes after it agree with the peer again (see
    /// [`HeaderPatch`]); `patch_from`: the index of the first event of the current call it
    /// applies to.
    header_patch: Option<HeaderPatch>,
    patch_from: usize,
}

impl Default for PublishSession {
    fn default() -> Self {
        Self::new()
    }
}

impl PublishSession {
    pub fn new() -> Self {
        PublishSession {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            guard: Guard::new(),
            stream: StreamState {
                publish: Publish::Idle,
                clock: Clock::default(),
                video: BTreeMap::new(),
                audio: None,
                dropped_before_config: 0,
                close: false,
                chunk_size: 0,
                header_patch: None,
                patch_from: 0,
            },
            caps: PublisherCaps::default(),
        }
    }

    /// The Enhanced RTMP capabilities the publisher announced in its `connect`; empty for a
    /// legacy publisher, or before the connect arrives.
    pub fn publisher_caps(&self) -> &PublisherCaps {
        &self.caps
    }

    /// Enhanced RTMP v2 "Reconnect Request": the bytes that ask this publisher to reconnect
    /// (to `tc_url`, else to the tcUrl it connected with) and publish again, or `None` when it
    /// cannot be asked: it did not announce capsEx Reconnect in its `connect`, or it is not
    /// publishing. Nothing else changes: "the server managing the original connection [...]
    /// SHOULD continue processing messages from the client until the client disconnects", so
    /// media keeps flowing until the publisher hangs up. An error (a `tc_url` that
    /// [`reconnect::check_tc_url`] refuses) leaves the session as it was.
    pub fn reconnect_request(&self, tc_url: Option<&str>) -> Result<Option<Bytes>, RtmpError> {
        let publishing =
            matches!(self.phase, Phase::Rtmp(_)) && self.stream.publish == Publish::Publishing;
        if !publishing || !self.caps.reconnect() {
            return Ok(None);
        }
        // On a chunk stream of its own (see `reconnect::CHUNK_STREAM`): written between two
        // of rml_rtmp's whole messages, it leaves their header compression as it was.
        let bytes = reconnect::request(tc_url, self.stream.chunk_size)?;
        Ok(Some(Bytes::from(bytes)))
    }

    /// Feeds bytes read from the peer. An error is final: the session is closed and the
    /// connection should be too.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SessionEvent>, RtmpError> {
        let mut events = Vec::new();
        let result = self.feed_inner(bytes, &mut events);
        self.stream.patch_headers(&mut events);
        if result.is_err() || self.stream.close {
            self.phase = Phase::Closed;
        }
        result.map(|()| events)
    }

    /// Accepts the pending publish request; returns the response for the peer.
    pub fn accept_publish(&mut self) -> Result<Vec<SessionEvent>, RtmpError> {
        let result = self.answer_publish(None);
        self.close_on_error(result)
    }

    /// Refuses the pending publish request with `NetStream.Publish.Denied` and a
    /// description the peer will see (it must not contain the stream key); returns the
    /// response for the peer.
    pub fn refuse_publish(&mut self, description: &str) -> Result<Vec<SessionEvent>, RtmpError> {
        let result = self.answer_publish(Some(description));
        self.close_on_error(result)
    }

    fn close_on_error<T>(&mut self, result: Result<T, RtmpError>) -> Result<T, RtmpError> {
        if result.is_err() {
            self.phase = Phase::Closed;
        }
        result
    }

    /// `refusal`: None accepts, Some(description) refuses.
    fn answer_publish(&mut self, refusal: Option<&str>) -> Result<Vec<SessionEvent>, RtmpError> {
        let Publish::Pending { request_id } = self.stream.publish else {
            return Err(RtmpError::NoPendingPublish);
        };
        let Phase::Rtmp(server) = &mut self.phase else {
            return Err(RtmpError::Closed);
        };
        let results = match refusal {
            None => {
                self.stream.publish = Publish::Publishing;
                // The caller checked the stream key: the peer is a publisher now.
                self.guard.authenticated();
                unwind_to_error("accept_request", || server.accept_request(request_id))??
            }
            Some(description) => {
                self.stream.publish = Publish::Done;
                unwind_to_error("reject_request", || {
                    server.reject_request(request_id, "NetStream.Publish.Denied", description)
                })??
            }
        };
        let mut events = sends(results);
        self.stream.patch_headers(&mut events);
        Ok(events)
    }

    /// Media messages dropped because they came before their track's sequence header.
    pub fn dropped_before_config(&self) -> u64 {
        self.stream.dropped_before_config
    }

    fn feed_inner(
        &mut self,
        bytes: &[u8],
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        match &mut self.phase {
            Phase::Closed => Err(RtmpError::Closed),
            Phase::Handshake(handshake) => {
                match unwind_to_error("handshake", || handshake.process_bytes(bytes))?? {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        push_send(events, response_bytes);
                        Ok(())
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        push_send(events, response_bytes);
                        let config = ServerSessionConfig::new();
                        self.stream.chunk_size = config.chunk_size as usize;
                        let (server, initial) =
                            unwind_to_error("new session", || ServerSession::new(config))??;
                        // Window ack size, peer bandwidth and chunk size go out before the
                        // peer's first command is answered.
                        events.extend(sends(initial));
                        self.phase = Phase::Rtmp(Box::new(server));
                        if remaining_bytes.is_empty() {
                            Ok(())
                        } else {
                            self.feed_rtmp(&remaining_bytes, events)
                        }
                    }
                }
            }
            Phase::Rtmp(_) => self.feed_rtmp(bytes, events),
        }
    }

    fn feed_rtmp(&mut self, bytes: &[u8], events: &mut Vec<SessionEvent>) -> Result<(), RtmpError> {
        let Phase::Rtmp(server) = &mut self.phase else {
            return Err(RtmpError::Closed);
        };
        // The guard sees every byte before the session does; see guard.rs for why.
        let guard = &mut self.guard;
        unwind_to_error("chunk guard", || guard.check(bytes))??;
        if let Some(connect) = guard.take_connect() {
            // The capabilities are advisory: a publisher that writes them wrongly still
            // publishes, as the legacy publisher it then is.
            self.caps = parse_connect(&connect).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "rtmp: ignoring the connect's Enhanced RTMP capabilities");
                PublisherCaps::default()
            });
        }
        let results = unwind_to_error("handle_input", || server.handle_input(bytes))??;
        self.stream.handle(server, results, &self.caps, events)
    }
}

impl StreamState {
    /// Applies the pending [`HeaderPatch`] to the sends among `events` it covers.
    fn patch_headers(&mut self, events: &mut [SessionEvent]) {
        let from = std::mem::take(&mut self.patch_from);
        let Some(patch) = self.header_patch else {
            return;
        };
        for event in events.iter_mut().skip(from) {
            let SessionEvent::Send(bytes) = event else {
                continue;
            };
            if let Some(fixed) = patch.fix(bytes) {
                if let Some(fixed) = fixed {
                    *bytes = Bytes::from(fixed);
                }
                self.header_patch = None;
                return;
            }
        }
    }

    fn handle(
        &mut self,
        server: &mut ServerSession,
        results: Vec<ServerSessionResult>,
        caps: &PublisherCaps,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        for result in results {
            let event = match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    push_send(events, packet.bytes);
                    continue;
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::trace!(type_id = payload.type_id, "rtmp: ignored message");
                    continue;
                }
                ServerSessionResult::RaisedEvent(event) => event,
            };
            match event {
                ServerSessionEvent::ConnectionRequested {
                    request_id,
                    app_name,
                } => {
                    if app_name == APP {
                        let r = unwind_to_error("accept_request", || {
                            server.accept_request(request_id)
                        })??;
                        let mut answer = sends(r);
                        // rml_rtmp answers with one packet, the `_result`.
                        if let (true, [SessionEvent::Send(result)]) =
                            (caps.is_enhanced(), answer.as_mut_slice())
                            && let Some((rewritten, patch)) =
                                enhanced_result(result, self.chunk_size)
                        {
                            *result = Bytes::from(rewritten);
                            self.header_patch = Some(patch);
                            self.patch_from = events.len() + 1;
                        }
                        events.extend(answer);
                    } else {
                        let description = format!(
                            "unknown application {app_name:?}: publish to rtmp://<host>/{APP}/<stream key>"
                        );
                        let r = unwind_to_error("reject_request", || {
                            server.reject_request(
                                request_id,
                                "NetConnection.Connect.Rejected",
                                &description,
                            )
                        })??;
                        events.extend(sends(r));
                        events.push(SessionEvent::ConnectRefused { app: app_name });
                        self.close = true;
                        return Ok(());
                    }
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    app_name,
                    stream_key,
                    mode: _,
                } => {
                    if self.publish == Publish::Idle {
                        self.publish = Publish::Pending { request_id };
                        events.push(SessionEvent::PublishRequested {
                            app: app_name,
                            stream_key,
                        });
                    } else {
                        // Answered at once so that no request is left outstanding in the
                        // session (its request table would otherwise only grow).
                        let r = unwind_to_error("reject_request", || {
                            server.reject_request(
                                request_id,
                                "NetStream.Publish.BadName",
                                "this connection already published a stream",
                            )
                        })??;
                        events.extend(sends(r));
                    }
                }
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    let r = unwind_to_error("reject_request", || {
                        server.reject_request(
                            request_id,
                            "NetStream.Play.Failed",
                            "this node ingests only; play the stream over HLS",
                        )
                    })??;
                    events.extend(sends(r));
                }
                ServerSessionEvent::PublishStreamFinished { .. } => {
                    if self.publish == Publish::Publishing {
                        self.publish = Publish::Done;
                        events.push(SessionEvent::PublishFinished);
                    }
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => self.on_video(data, timestamp.value, events)?,
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => self.on_audio(data, timestamp.value, events)?,
                // onMetaData is advisory; the SPS and AudioSpecificConfig are authoritative.
                // FCPublish, releaseStream and the like need no answer.
                other => {
                    tracing::trace!(event = ?std::mem::discriminant(&other), "rtmp: ignored event")
                }
            }
        }
        Ok(())
    }

    fn on_video(
        &mut self,
        body: Bytes,
        timestamp_ms: u32,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        let flv_error = |source| RtmpError::Flv {
            timestamp_ms,
            source,
        };
        let tag = flv::parse_video_tag(body).map_err(flv_error)?;
        let ms = self.clock.extend(timestamp_ms);
        let at = At {
            timestamp_ms,
            dts: ms_to_ticks(ms),
        };
        match tag {
            VideoTag::SequenceHeader(record) => {
                self.video_config(0, record, h264::parse_avc_config, at, events)
            }
            VideoTag::Frame {
                keyframe,
                composition_time_ms,
                data,
            } => self.video_frame(
                0,
                VideoFourCc::Avc,
                keyframe,
                composition_time_ms,
                data,
                at,
                events,
            ),
            VideoTag::EndOfSequence | VideoTag::Command => Ok(()),
            VideoTag::Enhanced(ExVideoTag::Command(_)) => Ok(()),
            VideoTag::Enhanced(ExVideoTag::Tracks {
                keyframe,
                timestamp_offset_ns,
                multitrack: _,
                tracks,
            }) => {
                // Outside multitrack the parser returns exactly one track, with id 0.
                let at = at.nudged(timestamp_offset_ns);
                for track in tracks {
                    self.video_track(track, keyframe, at, events)?;
                }
                Ok(())
            }
        }
    }

    /// One track of an Enhanced RTMP video tag.
    fn video_track(
        &mut self,
        track: VideoTrack,
        keyframe: bool,
        at: At,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        let flv_error = |source| RtmpError::Flv {
            timestamp_ms: at.timestamp_ms,
            source,
        };
        let id = track.track_id;
        if !self.video.contains_key(&id) && self.video.len() >= MAX_VIDEO_TRACKS {
            return Err(flv_error(FlvError::Unsupported {
                track: TrackKind::Video,
                codec: format!(
                    "Enhanced RTMP multitrack video with more than {MAX_VIDEO_TRACKS} tracks \
                     (track id {id})"
                ),
            }));
        }
        match (track.fourcc, track.packet) {
            (_, VideoPacket::SequenceEnd | VideoPacket::Metadata(_)) => Ok(()),
            // The AV1VideoDescriptor form is for MPEG-2 TS remuxing; the av1C in a
            // SequenceStart is what a publisher must send for FLV.
            (_, VideoPacket::Mpeg2TsSequenceStart(_)) => Ok(()),
            (VideoFourCc::Avc, VideoPacket::SequenceStart(record)) => {
                self.video_config(id, record, h264::parse_avc_config, at, events)
            }
            (VideoFourCc::Hevc, VideoPacket::SequenceStart(record)) => {
                self.video_config(id, record, hevc::parse_hevc_config, at, events)
            }
            (VideoFourCc::Av1, VideoPacket::SequenceStart(record)) => {
                self.video_config(id, record, av1::parse_av1_config, at, events)
            }
            (
                fourcc @ (VideoFourCc::Avc | VideoFourCc::Hevc | VideoFourCc::Av1),
                VideoPacket::CodedFrames {
                    composition_time_ms,
                    data,
                },
            ) => self.video_frame(id, fourcc, keyframe, composition_time_ms, data, at, events),
            (VideoFourCc::Vp9, _) => Err(flv_error(FlvError::Unsupported {
                track: TrackKind::Video,
                codec: "Enhanced RTMP video (FourCC 'vp09', VP9)".into(),
            })),
            (VideoFourCc::Other(f), _) => Err(flv_error(FlvError::Unsupported {
                track: TrackKind::Video,
                codec: format!("Enhanced RTMP video (FourCC {})", flv::fourcc_name(&f)),
            })),
        }
    }

    fn video_config(
        &mut self,
        track: u8,
        record: Bytes,
        parse: fn(Bytes) -> Result<VideoParams, MediaError>,
        at: At,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        // Some encoders repeat the sequence header before every keyframe.
        if self.video.get(&track).is_some_and(|v| v.avcc == record) {
            return Ok(());
        }
        let params = parse(record).map_err(|source| RtmpError::Config {
            track: TrackKind::Video,
            timestamp_ms: at.timestamp_ms,
            source,
        })?;
        let params = Arc::new(params);
        self.video.insert(track, params.clone());
        events.push(SessionEvent::Media(match track {
            0 => IngestEvent::VideoConfig(params),
            id => IngestEvent::Track {
                id,
                event: VideoEvent::Config(params),
            },
        }));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn video_frame(
        &mut self,
        track: u8,
        fourcc: VideoFourCc,
        keyframe: bool,
        composition_time_ms: i32,
        data: Bytes,
        at: At,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        let Some(video) = self.video.get(&track) else {
            self.dropped_before_config += 1;
            return Ok(());
        };
        let sample_error = |source| RtmpError::Sample {
            timestamp_ms: at.timestamp_ms,
            source,
        };
        let configured = match video.codec {
            VideoCodec::Avc => VideoFourCc::Avc,
            VideoCodec::Hevc(_) => VideoFourCc::Hevc,
            VideoCodec::Av1(_) => VideoFourCc::Av1,
        };
        if fourcc != configured {
            return Err(sample_error(MediaError::Invalid {
                what: "coded frames",
                why: format!(
                    "{fourcc:?} frames after a {} sequence start",
                    video.codec.name()
                ),
            }));
        }
        if data.is_empty() {
            return Ok(());
        }
        // Downstream (decoder, fMP4 samples) relies on the length prefixes; AV1 samples are
        // OBUs, which carry sizes of their own.
        if video.nal_length_size != 0 {
            h264::count_length_prefixed_nals(&data, video.nal_length_size).map_err(sample_error)?;
        }
        let packet = Packet {
            track: TrackKind::Video,
            dts: at.dts,
            pts: at.dts + ms_to_ticks(i64::from(composition_time_ms)),
            keyframe,
            data,
        };
        events.push(SessionEvent::Media(match track {
            0 => IngestEvent::Packet(packet),
            id => IngestEvent::Track {
                id,
                event: VideoEvent::Packet(packet),
            },
        }));
        Ok(())
    }

    fn on_audio(
        &mut self,
        body: Bytes,
        timestamp_ms: u32,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        let flv_error = |source| RtmpError::Flv {
            timestamp_ms,
            source,
        };
        let tag = flv::parse_audio_tag(body).map_err(flv_error)?;
        let ms = self.clock.extend(timestamp_ms);
        let at = At {
            timestamp_ms,
            dts: ms_to_ticks(ms),
        };
        match tag {
            AudioTag::SequenceHeader(asc) => self.audio_config(asc, at, events),
            AudioTag::Frame(data) => self.audio_frame(data, at, events),
            AudioTag::Enhanced(ExAudioTag {
                timestamp_offset_ns,
                multitrack: _,
                tracks,
            }) => {
                // The renditions share one audio rendition: track 0's. Further audio tracks
                // (other languages, commentary) are not packaged.
                let Some(track) = tracks.into_iter().find(|t| t.track_id == 0) else {
                    return Ok(());
                };
                if &track.fourcc != b"mp4a" {
                    return Err(flv_error(FlvError::Unsupported {
                        track: TrackKind::Audio,
                        codec: format!(
                            "Enhanced RTMP audio (FourCC {})",
                            flv::fourcc_name(&track.fourcc)
                        ),
                    }));
                }
                let at = at.nudged(timestamp_offset_ns);
                match track.packet {
                    AudioPacket::SequenceStart(asc) => self.audio_config(asc, at, events),
                    AudioPacket::CodedFrames(data) => self.audio_frame(data, at, events),
                    // The AudioSpecificConfig already says how many channels there are.
                    AudioPacket::SequenceEnd | AudioPacket::MultichannelConfig { .. } => Ok(()),
                }
            }
        }
    }

    fn audio_config(
        &mut self,
        asc: Bytes,
        at: At,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        if self.audio.as_ref().is_some_and(|a| a.asc == asc) {
            return Ok(());
        }
        let params = aac::parse_audio_specific_config(asc).map_err(|source| RtmpError::Config {
            track: TrackKind::Audio,
            timestamp_ms: at.timestamp_ms,
            source,
        })?;
        let params = Arc::new(params);
        self.audio = Some(params.clone());
        events.push(SessionEvent::Media(IngestEvent::AudioConfig(params)));
        Ok(())
    }

    fn audio_frame(
        &mut self,
        data: Bytes,
        at: At,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), RtmpError> {
        if self.audio.is_none() {
            self.dropped_before_config += 1;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        events.push(SessionEvent::Media(IngestEvent::Packet(Packet {
            track: TrackKind::Audio,
            dts: at.dts,
            pts: at.dts,
            keyframe: true,
            data,
        })));
        Ok(())
    }
}

/// When a tag happened: its raw RTMP timestamp (for errors) and the extended decode time.
#[derive(Clone, Copy)]
struct At {
    timestamp_ms: u32,
    /// In node ticks.
    dts: i64,
}

impl At {
    /// Adds an Enhanced RTMP ModEx TimestampOffsetNano, rounded to the nearest node tick.
    fn nudged(self, offset_ns: u32) -> Self {
        let ticks = (i64::from(offset_ns) * i64::from(TIMEBASE) + 500_000_000) / 1_000_000_000;
        At {
            dts: self.dts + ticks,
            ..self
        }
    }
}

/// Extends 32-bit RTMP millisecond timestamps to i64. RTMP spec 5.3.1.1: timestamps roll
/// over every 2^32 ms and "adjacent timestamps" are "within 2^31 - 1 milliseconds of each
/// other", so the signed 32-bit difference to the previous one is the step, whichever way the
/// counter wrapped. Audio and video share the clock (one message stream).
#[derive(Default)]
struct Clock {
    last: Option<(u32, i64)>,
}

impl Clock {
    fn extend(&mut self, raw: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(raw),
            // Reinterpreting the wrapped difference as i32 is the serial-number comparison.
            Some((last_raw, last)) => last + i64::from(raw.wrapping_sub(last_raw) as i32),
        };
        self.last = Some((raw, extended));
        extended
    }
}

/// Runs a call into rml_rtmp, turning a panic on peer input into an error. The callee's
/// state after an unwind is not trusted: every caller closes the session on error, which is
/// why asserting unwind safety is sound here.
fn unwind_to_error<T>(during: &'static str, f: impl FnOnce() -> T) -> Result<T, RtmpError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| RtmpError::LibraryPanic { during })
}

fn push_send(events: &mut Vec<SessionEvent>, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        events.push(SessionEvent::Send(Bytes::from(bytes)));
    }
}

fn sends(results: Vec<ServerSessionResult>) -> Vec<SessionEvent> {
    results
        .into_iter()
        .filter_map(|r| match r {
            ServerSessionResult::OutboundResponse(p) if !p.bytes.is_empty() => {
                Some(SessionEvent::Send(Bytes::from(p.bytes)))
            }
            _ => None,
        })
        .collect()
}

/// Multitrack publishes are parsed but not ingested yet: the refusal names what was sent.
#[cfg(test)]
mod tests;
