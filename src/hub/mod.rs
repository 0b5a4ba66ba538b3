//! Per-channel owners: who publishes to which channel, and the hand-off to packaging.
//!
//! The hub authenticates publishers against the registry, keeps one
//! [`channel`] owner thread per live channel and gives HTTP the channel's part
//! store, its latest [`status`] and its player count. Each stream's session
//! goes to the registry through the [`journal`]'s background writer. It never
//! parses media and never blocks an ingest task.

mod channel;
mod core;
mod journal;
mod limits;
pub mod offline;
pub mod status;
#[cfg(test)]
mod tests;
mod tracks;
mod transcoding;

use crate::fleet::Fleet;
use crate::media::{Arrival, IngestEvent, TrackKind, VideoEvent};
use crate::metrics::METRICS;
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::{ChannelStore, PackageConfig};
use crate::record::{Recorder, Recordings};
use crate::registry::{Registry, RegistryError, TrackUse};
use crate::transcode::ladder::Ladders;
use crate::transcode::pipeline::PipelineConfig;
pub use channel::Unreachable;
use channel::{CONTROL_QUEUE, Control, Driver, LiveChannel, Stamped, Table, lock};
use core::{ChannelCore, Joined, Refusal, Timing};
use crossbeam_channel::{Sender, TrySendError};
use journal::Journal;
use limits::{ChannelRules, Meter};
pub use limits::{IngestLimits, OverLimit};
use status::StreamStatus;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use transcoding::Transcoding;

/// Why timed metadata was not placed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Refused(#[from] MetadataRefusal),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}

/// Why a publish attempt was refused. The message never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("channel {0} already has a publisher")]
    AlreadyLive(String),
    #[error("the node is draining: publish to another node")]
    Draining,
    #[error("the node is at its capacity of live channels")]
    AtCapacity,
    #[error("channel registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("channel {channel}: {source}")]
    Channel {
        channel: String,
        #[source]
        source: Unreachable,
    },
    #[error("starting the thread of channel {channel}: {source}")]
    Spawn {
        channel: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the publish was interrupted by an internal failure")]
    Interrupted,
}

impl PublishError {
    /// Short label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::UnknownKey => "unknown_key",
            PublishError::AlreadyLive(_) => "already_live",
            PublishError::Draining => "draining",
            PublishError::AtCapacity => "at_capacity",
            PublishError::Registry(_)
            | PublishError::Channel { .. }
            | PublishError::Spawn { .. }
            | PublishError::Interrupted => "internal",
        }
    }
}

/// Why ingest must let a publisher go now. The message never holds the key.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Cut {
    #[error("the channel's stream key was rotated")]
    KeyRotated,
    #[error("the channel was deleted")]
    Deleted,
    #[error("the channel's stream failed")]
    ChannelFailed,
    #[error("the node is shutting down")]
    Draining,
    #[error(transparent)]
    Limit(#[from] OverLimit),
}

impl Cut {
    /// Short label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Cut::KeyRotated => "key_rotated",
            Cut::Deleted => "channel_deleted",
            Cut::ChannelFailed => "channel_failed",
            Cut::Draining => "draining",
            Cut::Limit(o) => o.reason(),
        }
    }
}

/// An operator's request that a channel's publisher reconnect and publish again (Enhanced
/// RTMP v2 `NetConnection.Connect.ReconnectRequest`), as its connection receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconnectRequest {
    /// Where to reconnect; `None`: where it is connected now.
    pub tc_url: Option<String>,
}

/// What became of a reconnect request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconnectOutcome {
    /// Handed to the publisher's connection, which writes it to the publisher.
    Sent,
    /// The publisher did not say it reconnects when asked (a legacy RTMP publisher, or WHIP,
    /// which has no such request): it is left alone.
    NotSupported { ingest: &'static str },
    /// The channel has no publisher now (never published, in its reconnect grace period, or
    /// ended).
    NotLive,
}

impl ReconnectOutcome {
    /// Short label for the `result` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ReconnectOutcome::Sent => "sent",
            ReconnectOutcome::NotSupported { .. } => "not_supported",
            ReconnectOutcome::NotLive => "not_live",
        }
    }
}

/// Why a reconnect request was not even tried.
#[derive(Debug, thiserror::Error)]
pub enum ReconnectError {
    #[error("no channel {0}")]
    UnknownChannel(String),
    #[error("channel registry: {0}")]
    Registry(#[from] RegistryError),
}

/// The connections of the live publishers, by channel id: how the hub reaches one to ask it
/// to reconnect. Each [`Publisher`] adds itself and takes itself out when dropped.
type Lines = Arc<Mutex<HashMap<String, Line>>>;

/// One live publisher's entry in [`Lines`].
struct Line {
    /// Its publish session, so that a publisher going never removes its successor's entry.
    session: u64,
    ingest: &'static str,
    /// Set once its connection listens for requests (the publisher announced it can
    /// reconnect); the latest request wins, a slow connection is never queued up to.
    requests: Option<tokio::sync::watch::Sender<Option<ReconnectRequest>>>,
}

#[derive(Clone, Debug)]
pub struct HubConfig {
    pub package: PackageConfig,
    /// What each publisher may send.
    pub limits: IngestLimits,
    pub reconnect_grace: Duration,
    pub ended_linger: Duration,
    pub queue_packets: usize,
    /// Transcoding settings; each channel's own ladder replaces `ladder`.
    pub transcode: PipelineConfig,
}

/// The node-wide table of channels and their owners.
pub struct Hub {
    registry: Arc<Registry>,
    cfg: HubConfig,
    table: Table,
    next_session: AtomicU64,
    /// The stream session writer.
    journal: Sender<journal::Record>,
    /// Live publishers' connections, for reconnect requests.
    lines: Lines,
    /// Where recorded channels' streams go; `None`: recording is off.
    recordings: Option<Arc<Recordings>>,
    /// The live map this node marks its channels in, and whether it drains;
    /// `None`: a hub on its own, which takes every publisher.
    fleet: Option<Arc<Fleet>>,
}

impl Hub {
    /// The node's hub. Sessions a previous run left open are closed first
    /// (their node stopped without recording their end): call it once, as
    /// the node starts.
    pub fn new(
        registry: Arc<Registry>,
        cfg: HubConfig,
        recordings: Option<Arc<Recordings>>,
        fleet: Option<Arc<Fleet>>,
    ) -> Arc<Self> {
        let now = journal::unix_ms(SystemTime::now());
        match registry.close_interrupted_sessions(now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                sessions = n,
                "closed stream sessions a previous run left open"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot close the previous run's stream sessions"),
        }
        Arc::new(Hub {
            journal: journal::start(registry.clone()),
            registry,
            cfg,
            table: Arc::new(Mutex::new(HashMap::new())),
            next_session: AtomicU64::new(1),
            lines: Arc::new(Mutex::new(HashMap::new())),
            recordings,
            fleet,
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The node's live map, when the hub has one.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Ids of the channels that have a thread here (live, within their
    /// grace period, or ended and lingering).
    pub fn channel_ids(&self) -> std::collections::HashSet<String> {
        lock(&self.table).keys().cloned().collect()
    }

    /// Ends every stream at once (EXT-X-ENDLIST) and cuts its publisher:
    /// the end of a drain.
    pub fn end_all(&self) {
        let live: Vec<Arc<LiveChannel>> = lock(&self.table).values().cloned().collect();
        for c in live {
            c.cut(self.next_session.load(Ordering::Relaxed), Cut::Draining);
            if let Err(e) = c.send_control(Control::Terminate) {
                tracing::warn!(channel = %c.id, error = %e, "could not end the stream");
            }
        }
    }

    /// The node's recording, when it has one.
    pub fn recordings(&self) -> Option<&Arc<Recordings>> {
        self.recordings.as_ref()
    }

    /// The ladders channels may use.
    pub fn ladders(&self) -> &Ladders {
        &self.cfg.transcode.ladders
    }

    /// Claims the channel whose stream key is `stream_key` for a new publisher.
    /// A channel within its reconnect grace period is taken over and its
    /// playlists continue; an ended or idle one starts a new stream. The
    /// channel's own core decides, so a publisher arriving as the grace
    /// period runs out either wins the stream back or starts a new one.
    pub fn start_publish(
        &self,
        stream_key: &str,
        ingest: &'static str,
    ) -> Result<Publisher, PublishError> {
        let channel = self
            .registry
            .find_by_key(stream_key)?
            .ok_or(PublishError::UnknownKey)?;
        let policy = self.registry.policy(&channel.id)?;
        let rules = ChannelRules::of(&policy);
        if let Some(fleet) = &self.fleet {
            // A draining node takes no publisher, not even one coming back
            // within its grace period: it is meant to go elsewhere.
            if fleet.draining() {
                return Err(PublishError::Draining);
            }
            let here = lock(&self.table).contains_key(&channel.id);
            if !here && !fleet.has_room(lock(&self.table).len()) {
                return Err(PublishError::AtCapacity);
            }
            // Marked before the table is touched (the registry may be slow,
            // players read the table): one publisher per channel in the fleet.
            if let Err(holder) = fleet.claim(&channel.id)? {
                tracing::info!(channel = %channel.id, node = %holder.id, "publish refused: the channel is live on another node");
                return Err(PublishError::AlreadyLive(channel.id));
            }
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        loop {
            // The table lock is not held while the channel answers: its
            // thread takes that lock when it removes itself.
            let existing = lock(&self.table).get(&channel.id).cloned();
            if let Some(live) = &existing {
                match live.join(session, ingest) {
                    Ok(Ok(())) => {
                        live.authenticated(stream_key);
                        return Ok(self.publisher(live.clone(), session, ingest, false, rules));
                    }
                    Ok(Err(Refusal::AlreadyLive)) => {
                        return Err(PublishError::AlreadyLive(channel.id));
                    }
                    Ok(Err(Refusal::Ended)) => {}
                    Err(source) => {
                        return Err(PublishError::Channel {
                            channel: channel.id,
                            source,
                        });
                    }
                }
            }
            let mut table = lock(&self.table);
            let unchanged = match (table.get(&channel.id), &existing) {
                (Some(now), Some(before)) => Arc::ptr_eq(now, before),
                (Some(_), None) => false,
                // Nothing there, or the old stream's thread removed itself.
                (None, _) => true,
            };
            if !unchanged {
                // Another publisher started a stream meanwhile: ask it.
                continue;
            }
            let recorder = self
                .recordings
                .as_ref()
                .filter(|r| policy.record.unwrap_or(r.by_default()))
                .map(|r| r.recorder(&channel.id));
            let live = self.spawn_channel(
                &channel.id,
                &channel.ladder,
                policy.tracks,
                (session, ingest),
                recorder,
            )?;
            live.authenticated(stream_key);
            table.insert(channel.id.clone(), live.clone());
            METRICS.live_channels.inc();
            tracing::info!(channel = %channel.id, ingest, "stream started");
            return Ok(self.publisher(live, session, ingest, true, rules));
        }
    }

    fn publisher(
        &self,
        live: Arc<LiveChannel>,
        session: u64,
        ingest: &'static str,
        started_stream: bool,
        rules: ChannelRules,
    ) -> Publisher {
        let mut publisher = Publisher::new(live, session, ingest, started_stream, self.cfg.limits);
        lock(&publisher.gate).meter.set_rules(rules);
        lock(&self.lines).insert(
            publisher.live.id.clone(),
            Line {
                session,
                ingest,
                requests: None,
            },
        );
        publisher.lines = Some(self.lines.clone());
        publisher
    }

    fn spawn_channel(
        &self,
        id: &str,
        ladder: &str,
        tracks: TrackUse,
        (session, protocol): (u64, &'static str),
        recorder: Option<Recorder>,
    ) -> Result<Arc<LiveChannel>, PublishError> {
        // A ladder removed from the config since the channel was made falls
        // back to the source alone rather than refusing the publisher.
        let template = match self.ladders().check(ladder) {
            Ok(()) if ladder != crate::transcode::ladder::PASSTHROUGH => Some(PipelineConfig {
                ladder: ladder.to_string(),
                ..self.cfg.transcode.clone()
            }),
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(channel = id, error = %e, "passing the source through only");
                None
            }
        };
        let store = ChannelStore::new(id, &self.cfg.package);
        let (events_tx, events_rx) = crossbeam_channel::bounded(self.cfg.queue_packets);
        let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
        let journal = Journal::open(self.journal.clone(), session, id, protocol);
        let live = Arc::new(LiveChannel::new(id, store, events_tx, control_tx, journal));
        let timing = Timing {
            grace: self.cfg.reconnect_grace,
            linger: self.cfg.ended_linger,
        };
        let transcoding = Transcoding::new(id, template);
        let joined = Joined {
            session,
            protocol,
            at: Instant::now(),
        };
        let core = ChannelCore::new(
            id,
            self.cfg.package.clone(),
            timing,
            transcoding.enabled(),
            tracks,
            joined,
        );
        let driver = Driver {
            table: self.table.clone(),
            me: live.clone(),
            core,
            transcoding,
            counted_live: true,
            placed: None,
            recorder,
        };
        std::thread::Builder::new()
            .name(format!("chan-{id}"))
            .spawn(move || driver.run(events_rx, control_rx))
            .map_err(|source| PublishError::Spawn {
                channel: id.to_string(),
                source,
            })?;
        Ok(live)
    }

    /// Places timed metadata at the next part of every rendition of the
    /// channel's live stream. Blocking (it waits for the channel's thread):
    /// call it off the async threads.
    pub fn insert_metadata(
        &self,
        channel_id: &str,
        payload: Payload,
        duration: Option<Duration>,
    ) -> Result<Placement, MetadataError> {
        let live = lock(&self.table).get(channel_id).cloned();
        let Some(live) = live else {
            return Err(MetadataError::Refused(MetadataRefusal::NotLive));
        };
        live.metadata(payload, duration)?
            .map_err(MetadataError::Refused)
    }

    /// Asks the channel's publisher to reconnect and publish again (to `request.tc_url`, else
    /// where it is connected): only a publisher that announced it can (Enhanced RTMP capsEx
    /// Reconnect) is asked; its stream goes on through the reconnect grace period when it
    /// comes back. Reads the registry only to tell an unknown channel from one that is not
    /// live (blocking, SQLite): call it off the async threads.
    pub fn request_reconnect(
        &self,
        channel_id: &str,
        request: ReconnectRequest,
    ) -> Result<ReconnectOutcome, ReconnectError> {
        let outcome = self.reach_publisher(channel_id, request);
        let result = match outcome {
            Some(outcome) => Ok(outcome),
            None => match self.registry.get(channel_id) {
                Ok(_) => Ok(ReconnectOutcome::NotLive),
                Err(RegistryError::NotFound(_)) => {
                    Err(ReconnectError::UnknownChannel(channel_id.to_string()))
                }
                Err(e) => Err(ReconnectError::Registry(e)),
            },
        };
        let label = match &result {
            Ok(outcome) => outcome.label(),
            Err(ReconnectError::UnknownChannel(_)) => "unknown_channel",
            Err(ReconnectError::Registry(_)) => "error",
        };
        METRICS.reconnect_requests.with_label_values(&[label]).inc();
        result
    }

    /// The outcome when the channel has a publisher; `None` when it has none.
    fn reach_publisher(
        &self,
        channel_id: &str,
        request: ReconnectRequest,
    ) -> Option<ReconnectOutcome> {
        let live = lock(&self.table).get(channel_id).cloned();
        let lines = lock(&self.lines);
        let line = lines.get(channel_id)?;
        // A publisher cut (key rotated, channel deleted) is on its way out, not live.
        if live.is_none_or(|l| l.cut_of(line.session).is_some()) {
            return None;
        }
        let Some(requests) = &line.requests else {
            return Some(ReconnectOutcome::NotSupported {
                ingest: line.ingest,
            });
        };
        // Fails only when the connection has let go of its receiver: it is closing.
        match requests.send(Some(request)) {
            Ok(()) => Some(ReconnectOutcome::Sent),
            Err(_) => None,
        }
    }

    /// The part store of a channel that is live or whose ended stream still lingers.
    pub fn store(&self, channel_id: &str) -> Option<Arc<ChannelStore>> {
        lock(&self.table).get(channel_id).map(|c| c.store.clone())
    }

    /// The latest status of the channel's stream (live, reconnecting, or
    /// ended and lingering) and how many players read its playlists in
    /// the last [`status::VIEWER_WINDOW`] before `now`.
    pub fn stream_status(&self, channel_id: &str, now: Instant) -> Option<(StreamStatus, usize)> {
        let live = lock(&self.table).get(channel_id).cloned()?;
        let status = lock(&live.status).clone()?;
        let viewers = lock(&live.viewers).count(now);
        Some((status, viewers))
    }

    /// A player at `addr` was served a playlist of the channel at `now`.
    pub fn note_playlist_request(&self, channel_id: &str, addr: IpAddr, now: Instant) {
        let live = lock(&self.table).get(channel_id).cloned();
        if let Some(live) = live {
            lock(&live.viewers).note(addr, now);
        }
    }

    /// Catches up with registry changes made behind the node's back (`rungs
    /// channel delete` and `rotate-key` write the database directly): ends
    /// the streams of deleted channels and cuts publishers whose key was
    /// replaced. Blocking (SQLite): run it off the async threads.
    pub fn sync_registry(&self) -> Result<(), RegistryError> {
        let live: Vec<Arc<LiveChannel>> = lock(&self.table).values().cloned().collect();
        if live.is_empty() {
            return Ok(());
        }
        let keys: HashMap<String, String> = self
            .registry
            .list()?
            .into_iter()
            .map(|c| (c.id, c.stream_key))
            .collect();
        for c in live {
            match keys.get(&c.id) {
                None => {
                    tracing::info!(channel = %c.id, "channel deleted outside the node: ending its stream");
                    self.terminate(&c.id);
                }
                Some(key) if !c.uses_key(key) => {
                    tracing::info!(channel = %c.id, "stream key rotated outside the node: cutting its publisher");
                    self.revoke(&c.id);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Cuts the channel's publisher (its key was rotated): ingest closes
    /// the connection at its next media, the stream waits its grace period
    /// for a publisher with the new key.
    pub fn revoke(&self, channel_id: &str) {
        let live = lock(&self.table).get(channel_id).cloned();
        if let Some(c) = live {
            c.cut(self.next_session.load(Ordering::Relaxed), Cut::KeyRotated);
        }
    }

    /// Ends the channel's stream at once, cuts its publisher and stops
    /// exporting its metrics (the channel was deleted).
    pub fn terminate(&self, channel_id: &str) {
        let live = lock(&self.table).get(channel_id).cloned();
        if let Some(c) = live {
            c.cut(self.next_session.load(Ordering::Relaxed), Cut::Deleted);
            if let Err(e) = c.send_control(Control::Terminate) {
                tracing::warn!(channel = channel_id, error = %e, "could not end the stream");
            }
        }
        let mut renditions = self.ladders().rung_names();
        renditions.extend(["source", "audio"]);
        let renditions: Vec<&str> = renditions.into_iter().collect();
        METRICS.forget_channel(channel_id, &renditions);
    }
}

/// A publisher's handle on its channel. Dropping it ends the publish session;
/// the channel then waits its grace period for the publisher to come back.
pub struct Publisher {
    live: Arc<LiveChannel>,
    session: u64,
    ingest: &'static str,
    /// This publisher started the stream (it did not take over one in grace).
    started_stream: bool,
    gate: Mutex<Gate>,
    /// The hub's table of live publishers' connections, which this one is in (set by the
    /// hub; `None` for a publisher made outside it).
    lines: Option<Lines>,
}

/// Drop-whole-GOPs bookkeeping of one publisher.
struct Gate {
    /// The queue overflowed: drop everything until the next video keyframe.
    dropping: bool,
    /// Latest configs, re-sent after a drop so the packager never misses one.
    video_config: Option<IngestEvent>,
    audio_config: Option<IngestEvent>,
    track_configs: std::collections::BTreeMap<u8, IngestEvent>,
    /// Further video tracks that wait for their next keyframe after a drop.
    resuming: Vec<u8>,
    last_keyframe_dts: Option<i64>,
    /// Some video reached the channel: only then is there a stream to keep
    /// alive through a reconnect grace period.
    sent_video: bool,
    /// Ingest refused what this publisher sent (e.g. an unsupported codec).
    refused: bool,
    /// This publisher was cut (counted and logged once), and why.
    cut: Option<Cut>,
    meter: Meter,
}

impl Publisher {
    fn new(
        live: Arc<LiveChannel>,
        session: u64,
        ingest: &'static str,
        started_stream: bool,
        limits: IngestLimits,
    ) -> Self {
        METRICS.publishers.with_label_values(&[ingest]).inc();
        Publisher {
            live,
            session,
            ingest,
            started_stream,
            gate: Mutex::new(Gate {
                dropping: false,
                video_config: None,
                audio_config: None,
                track_configs: std::collections::BTreeMap::new(),
                resuming: Vec::new(),
                last_keyframe_dts: None,
                sent_video: false,
                refused: false,
                cut: None,
                meter: Meter::new(limits, ChannelRules::default()),
            }),
            lines: None,
        }
    }

    pub fn channel_id(&self) -> &str {
        &self.live.id
    }

    /// Lets the hub ask this publisher to reconnect: call it when the publisher said it
    /// reconnects on request (Enhanced RTMP capsEx Reconnect). The receiver sees the latest
    /// [`Hub::request_reconnect`] for the channel while this publisher is live; without this
    /// call the hub answers [`ReconnectOutcome::NotSupported`].
    pub fn reconnect_requests(&self) -> tokio::sync::watch::Receiver<Option<ReconnectRequest>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        if let Some(lines) = &self.lines
            && let Some(line) = lock(lines).get_mut(&self.live.id)
            && line.session == self.session
        {
            line.requests = Some(tx);
        }
        rx
    }

    /// Hands one event to the channel, stamped with when ingest read it
    /// off the socket. Never blocks: when the channel is behind, packets are
    /// dropped (whole GOPs) and counted. An error means this publisher is
    /// cut (key rotated, channel deleted or failed, a limit broken): ingest
    /// closes its connection, and its further media goes nowhere.
    pub fn send(&self, event: IngestEvent, arrival: Arrival) -> Result<(), Cut> {
        let id = self.live.id.as_str();
        let mut gate = lock(&self.gate);
        if let Some(cut) = &gate.cut {
            return Err(cut.clone());
        }
        let cut = match self.live.cut_of(self.session) {
            Some(cut) => Some(cut),
            None => gate.meter.check(&event).err().map(|over| {
                // Its stream would be cut again: no grace period for it.
                gate.refused = true;
                Cut::Limit(over)
            }),
        };
        if let Some(cut) = cut {
            self.live.journal.event("publisher cut", cut.to_string());
            gate.cut = Some(cut.clone());
            METRICS
                .ingest_cut
                .with_label_values(&[self.ingest, cut.reason()])
                .inc();
            tracing::warn!(channel = id, ingest = self.ingest, reason = cut.reason(), error = %cut, "publisher cut off");
            return Err(cut);
        }
        match &event {
            IngestEvent::VideoConfig(_) => gate.video_config = Some(event.clone()),
            IngestEvent::AudioConfig(_) => gate.audio_config = Some(event.clone()),
            IngestEvent::Track {
                id: track,
                event: VideoEvent::Config(_),
            } => {
                gate.track_configs.insert(*track, event.clone());
            }
            IngestEvent::Track {
                id: track,
                event: VideoEvent::Packet(p),
            } => {
                METRICS
                    .ingest_bytes
                    .with_label_values(&[id, self.ingest])
                    .inc_by(p.data.len() as u64);
                // After a drop each track resumes at a keyframe of its own, as track 0 does.
                if gate.resuming.contains(track) {
                    if !p.keyframe {
                        self.count_drop(&event);
                        return Ok(());
                    }
                    gate.resuming.retain(|t| t != track);
                }
            }
            IngestEvent::Packet(p) => {
                METRICS
                    .ingest_bytes
                    .with_label_values(&[id, self.ingest])
                    .inc_by(p.data.len() as u64);
                let track = match p.track {
                    TrackKind::Video => "video",
                    TrackKind::Audio => "audio",
                };
                METRICS.ingest_frames.with_label_values(&[id, track]).inc();
                if p.track == TrackKind::Video && p.keyframe {
                    if let Some(prev) = gate.last_keyframe_dts.filter(|&d| d < p.dts) {
                        let secs = (p.dts - prev) as f64 / f64::from(crate::media::TIMEBASE);
                        METRICS.keyframe_interval.with_label_values(&[id]).set(secs);
                    }
                    gate.last_keyframe_dts = Some(p.dts);
                }
            }
        }
        if gate.dropping {
            let resumes = matches!(&event, IngestEvent::Packet(p) if p.track == TrackKind::Video && p.keyframe);
            if !resumes {
                self.count_drop(&event);
                return Ok(());
            }
            let configs: Vec<IngestEvent> = [gate.video_config.clone(), gate.audio_config.clone()]
                .into_iter()
                .flatten()
                .chain(gate.track_configs.values().cloned())
                .collect();
            gate.resuming = gate.track_configs.keys().copied().collect();
            for c in configs {
                if !self.enqueue(c, arrival) {
                    self.count_drop(&event);
                    return Ok(());
                }
            }
            gate.dropping = false;
            tracing::info!(channel = id, "channel caught up; resuming at a keyframe");
        }
        let is_packet = is_packet(&event);
        if matches!(&event, IngestEvent::Packet(p) if p.track == TrackKind::Video) {
            gate.sent_video = true;
        }
        if !self.enqueue(event, arrival) {
            gate.dropping = true;
            self.live.journal.event(
                "ingest dropped",
                "the channel fell behind: media dropped until the next keyframe",
            );
            if is_packet {
                METRICS
                    .ingest_dropped_packets
                    .with_label_values(&[id])
                    .inc();
            }
            tracing::warn!(
                channel = id,
                "channel is behind; dropping until the next keyframe"
            );
        }
        Ok(())
    }

    /// Ingest refused this publisher's media: when it goes, its stream ends
    /// at once instead of waiting for it to come back, since it would be
    /// refused again.
    pub fn refuse(&self) {
        lock(&self.gate).refused = true;
        self.live
            .journal
            .event("media refused", "ingest refused the publisher's media");
    }

    fn count_drop(&self, event: &IngestEvent) {
        if is_packet(event) {
            METRICS
                .ingest_dropped_packets
                .with_label_values(&[&self.live.id])
                .inc();
        }
    }

    /// False when the queue is full; a deleted channel silently swallows media.
    fn enqueue(&self, event: IngestEvent, arrival: Arrival) -> bool {
        let stamped = Stamped {
            session: self.session,
            event,
            arrival,
        };
        !matches!(
            self.live.events.try_send(stamped),
            Err(TrySendError::Full(_))
        )
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        METRICS.publishers.with_label_values(&[self.ingest]).dec();
        if let Some(lines) = &self.lines {
            let mut lines = lock(lines);
            if lines
                .get(&self.live.id)
                .is_some_and(|l| l.session == self.session)
            {
                lines.remove(&self.live.id);
            }
        }
        let (sent_video, refused, reason) = {
            let g = lock(&self.gate);
            let reason = match (&g.cut, g.refused) {
                (Some(cut), _) => format!("cut: {cut}"),
                (None, true) => "media refused".to_string(),
                (None, false) => "disconnected".to_string(),
            };
            (g.sent_video, g.refused, reason)
        };
        // A publisher that started the stream and left before any video, or
        // whose media was refused, did not make a stream worth a grace period.
        let abandoned = self.started_stream && (refused || !sent_video);
        let left = Control::Left {
            session: self.session,
            abandoned,
            reason,
        };
        if let Err(e @ Unreachable::Busy(_)) = self.live.send_control(left) {
            tracing::warn!(channel = %self.live.id, error = %e, "publisher left, but its channel was not told");
        }
    }
}

/// Whether an event is media rather than a configuration.
fn is_packet(event: &IngestEvent) -> bool {
    matches!(
        event,
        IngestEvent::Packet(_)
            | IngestEvent::Track {
                event: VideoEvent::Packet(_),
                ..
            }
    )
}
