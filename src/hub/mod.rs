//! Per-channel owners: who publishes to which channel, and the hand-off to packaging.
//!
//! The hub authenticates publishers against the registry, keeps one
//! [`channel`] owner thread per live channel and gives HTTP the channel's part
//! store. It never parses media and never blocks an ingest task.

mod channel;

use crate::media::{IngestEvent, TrackKind};
use crate::metrics::METRICS;
use crate::package::{ChannelPackager, ChannelStore, PackageConfig};
use crate::registry::{Registry, RegistryError};
use crate::transcode::ladder::Ladders;
use crate::transcode::pipeline::PipelineConfig;
use channel::{Control, LiveChannel, Stamped, State, Table, Timing, Transcode, lock};
use crossbeam_channel::TrySendError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why a publish attempt was refused. The message never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("channel {0} already has a publisher")]
    AlreadyLive(String),
    #[error("channel registry: {0}")]
    Registry(String),
}

impl PublishError {
    /// Short label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::UnknownKey => "unknown_key",
            PublishError::AlreadyLive(_) => "already_live",
            PublishError::Registry(_) => "internal",
        }
    }
}

#[derive(Clone, Debug)]
pub struct HubConfig {
    pub package: PackageConfig,
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
}

impl Hub {
    pub fn new(registry: Arc<Registry>, cfg: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            registry,
            cfg,
            table: Arc::new(Mutex::new(HashMap::new())),
            next_session: AtomicU64::new(1),
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The ladders channels may use.
    pub fn ladders(&self) -> &Ladders {
        &self.cfg.transcode.ladders
    }

    /// Claims the channel whose stream key is `stream_key` for a new publisher.
    /// A channel within its reconnect grace period is taken over and its
    /// playlists continue; an ended or idle one starts a new stream.
    pub fn start_publish(
        &self,
        stream_key: &str,
        ingest: &'static str,
    ) -> Result<Publisher, PublishError> {
        let channel = self
            .registry
            .find_by_key(stream_key)
            .map_err(|e| PublishError::Registry(e.to_string()))?
            .ok_or(PublishError::UnknownKey)?;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);

        let mut table = lock(&self.table);
        if let Some(live) = table.get(&channel.id) {
            let mut st = lock(&live.state);
            if !st.ended {
                if st.publisher.is_some() {
                    return Err(PublishError::AlreadyLive(channel.id));
                }
                st.publisher = Some(session);
                drop(st);
                tracing::info!(channel = %channel.id, ingest, "publisher reconnected within grace");
                return Ok(Publisher::new(live.clone(), session, ingest, false));
            }
        }
        let live = self.spawn_channel(&channel.id, &channel.ladder, session)?;
        table.insert(channel.id.clone(), live.clone());
        METRICS.live_channels.inc();
        tracing::info!(channel = %channel.id, ingest, "stream started");
        Ok(Publisher::new(live, session, ingest, true))
    }

    fn spawn_channel(
        &self,
        id: &str,
        ladder: &str,
        session: u64,
    ) -> Result<Arc<LiveChannel>, PublishError> {
        // A ladder removed from the config since the channel was made falls
        // back to the source alone rather than refusing the publisher.
        let transcode = match self.ladders().check(ladder) {
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
        let packager = ChannelPackager::new(id, store.clone(), self.cfg.package.clone());
        let (events_tx, events_rx) = crossbeam_channel::bounded(self.cfg.queue_packets);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let live = Arc::new(LiveChannel {
            id: id.to_string(),
            store,
            events: events_tx,
            control: control_tx,
            state: Mutex::new(State {
                publisher: Some(session),
                ended: false,
            }),
        });
        let (table, me) = (self.table.clone(), live.clone());
        let timing = Timing {
            grace: self.cfg.reconnect_grace,
            linger: self.cfg.ended_linger,
        };
        std::thread::Builder::new()
            .name(format!("chan-{id}"))
            .spawn(move || {
                let transcode = Transcode::new(transcode);
                channel::run(
                    table, me, packager, events_rx, control_rx, timing, transcode,
                )
            })
            .map_err(|e| PublishError::Registry(format!("starting channel thread: {e}")))?;
        Ok(live)
    }

    /// The part store of a channel that is live or whose ended stream still lingers.
    pub fn store(&self, channel_id: &str) -> Option<Arc<ChannelStore>> {
        lock(&self.table).get(channel_id).map(|c| c.store.clone())
    }

    /// Whether the channel has a stream that has not ended.
    pub fn is_live(&self, channel_id: &str) -> bool {
        lock(&self.table)
            .get(channel_id)
            .is_some_and(|c| !lock(&c.state).ended)
    }

    /// Ends the streams of live channels that are no longer in the registry:
    /// `rungs channel delete` writes the database directly, behind the
    /// node's back. Blocking (SQLite): run it off the async threads.
    pub fn end_deleted(&self) {
        let live: Vec<String> = lock(&self.table)
            .iter()
            .filter(|(_, c)| !lock(&c.state).ended)
            .map(|(id, _)| id.clone())
            .collect();
        for id in live {
            if let Err(RegistryError::NotFound(_)) = self.registry.get(&id) {
                tracing::info!(channel = %id, "channel deleted outside the node: ending its stream");
                self.terminate(&id);
            }
        }
    }

    /// Ends the channel's stream at once and stops exporting its metrics
    /// (the channel was deleted). Its publisher's further media is discarded.
    pub fn terminate(&self, channel_id: &str) {
        if let Some(c) = lock(&self.table).get(channel_id) {
            let _ = c.control.send(Control::Terminate);
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
}

/// Drop-whole-GOPs bookkeeping of one publisher.
#[derive(Default)]
struct Gate {
    /// The queue overflowed: drop everything until the next video keyframe.
    dropping: bool,
    /// Latest configs, re-sent after a drop so the packager never misses one.
    video_config: Option<IngestEvent>,
    audio_config: Option<IngestEvent>,
    last_keyframe_dts: Option<i64>,
    /// Some video reached the channel: only then is there a stream to keep
    /// alive through a reconnect grace period.
    sent_video: bool,
    /// Ingest refused what this publisher sent (e.g. an unsupported codec).
    refused: bool,
}

impl Publisher {
    fn new(
        live: Arc<LiveChannel>,
        session: u64,
        ingest: &'static str,
        started_stream: bool,
    ) -> Self {
        METRICS.publishers.with_label_values(&[ingest]).inc();
        Publisher {
            live,
            session,
            ingest,
            started_stream,
            gate: Mutex::new(Gate::default()),
        }
    }

    pub fn channel_id(&self) -> &str {
        &self.live.id
    }

    /// Hands one event to the channel. Never blocks: when the channel is
    /// behind, packets are dropped (whole GOPs) and counted.
    pub fn send(&self, event: IngestEvent) {
        let id = self.live.id.as_str();
        let mut gate = lock(&self.gate);
        match &event {
            IngestEvent::VideoConfig(_) => gate.video_config = Some(event.clone()),
            IngestEvent::AudioConfig(_) => gate.audio_config = Some(event.clone()),
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
                return;
            }
            let configs: Vec<IngestEvent> = [gate.video_config.clone(), gate.audio_config.clone()]
                .into_iter()
                .flatten()
                .collect();
            for c in configs {
                if !self.enqueue(c) {
                    self.count_drop(&event);
                    return;
                }
            }
            gate.dropping = false;
            tracing::info!(channel = id, "channel caught up; resuming at a keyframe");
        }
        let is_packet = matches!(event, IngestEvent::Packet(_));
        if matches!(&event, IngestEvent::Packet(p) if p.track == TrackKind::Video) {
            gate.sent_video = true;
        }
        if !self.enqueue(event) {
            gate.dropping = true;
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
    }

    /// Ingest refused this publisher's media: when it goes, its stream ends
    /// at once instead of waiting for it to come back, since it would be
    /// refused again.
    pub fn refuse(&self) {
        lock(&self.gate).refused = true;
    }

    fn count_drop(&self, event: &IngestEvent) {
        if matches!(event, IngestEvent::Packet(_)) {
            METRICS
                .ingest_dropped_packets
                .with_label_values(&[&self.live.id])
                .inc();
        }
    }

    /// False when the queue is full; a deleted channel silently swallows media.
    fn enqueue(&self, event: IngestEvent) -> bool {
        let stamped = Stamped {
            session: self.session,
            event,
            now: SystemTime::now(),
            arrival: Instant::now(),
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
        let (sent_video, refused) = {
            let g = lock(&self.gate);
            (g.sent_video, g.refused)
        };
        let mut st = lock(&self.live.state);
        if st.publisher == Some(self.session) {
            st.publisher = None;
            drop(st);
            // A publisher that left before any video, or whose media was
            // refused, did not make a stream worth a grace period.
            let msg = if self.started_stream && (refused || !sent_video) {
                Control::Abandoned
            } else {
                Control::Disconnected
            };
            let _ = self.live.control.send(msg);
        }
    }
}
