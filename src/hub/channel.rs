//! The owner thread of one live channel: it feeds the packager in order and
//! decides when a lost publisher's stream ends.
//!
//! It never touches sockets and never blocks ingest: publishers reach it
//! through a bounded queue and drop whole GOPs when it is full.

use crate::media::IngestEvent;
use crate::media::TrackKind;
use crate::metrics::METRICS;
use crate::package::{ChannelPackager, ChannelStore, RungEvent};
use crate::transcode::pipeline::{Output, Pipeline, PipelineConfig, rung_decls};
use crossbeam_channel::{Receiver, Sender, select};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One media event stamped when ingest handed it over.
pub(super) struct Stamped {
    pub session: u64,
    pub event: IngestEvent,
    pub now: SystemTime,
    pub arrival: Instant,
}

pub(super) enum Control {
    /// A publisher session ended (connection closed or refused mid-stream).
    Disconnected,
    /// The publisher that started this stream left before sending video, or
    /// was refused: end the stream without a grace period, and without a
    /// linger when nothing was ever packaged.
    Abandoned,
    /// The channel was deleted: end the stream now.
    Terminate,
}

#[derive(Default)]
pub(super) struct State {
    /// Session id of the connected publisher, if any.
    pub publisher: Option<u64>,
    /// The stream has ended (EXT-X-ENDLIST written); a new publisher starts a
    /// new stream in a new `LiveChannel`.
    pub ended: bool,
}

/// What the hub's table holds for a channel that is live or lingering.
pub(super) struct LiveChannel {
    pub id: String,
    pub store: Arc<ChannelStore>,
    pub events: Sender<Stamped>,
    pub control: Sender<Control>,
    pub state: Mutex<State>,
}

pub(super) type Table = Arc<Mutex<HashMap<String, Arc<LiveChannel>>>>;

pub(super) struct Timing {
    pub grace: Duration,
    pub linger: Duration,
}

/// The channel's transcoding: a pipeline started at the first video
/// configuration of each publish session, flushed when the session ends.
pub(super) struct Transcode {
    /// `None` for a passthrough channel.
    template: Option<PipelineConfig>,
    pipeline: Option<Pipeline>,
}

impl Transcode {
    pub fn new(template: Option<PipelineConfig>) -> Self {
        Transcode {
            template,
            pipeline: None,
        }
    }

    fn outputs(&self) -> Receiver<Output> {
        self.pipeline
            .as_ref()
            .map_or_else(crossbeam_channel::never, |p| p.outputs().clone())
    }

    fn feed(&mut self, id: &str, event: &IngestEvent, now: SystemTime, arrival: Instant) {
        match event {
            IngestEvent::VideoConfig(params) => {
                if self.pipeline.is_none()
                    && let Some(cfg) = &self.template
                {
                    match Pipeline::start(id, cfg.clone()) {
                        Ok(p) => self.pipeline = Some(p),
                        Err(e) => {
                            tracing::error!(channel = id, error = %e, "cannot start transcoding; source only")
                        }
                    }
                }
                if let Some(p) = &mut self.pipeline {
                    p.push_config(params.clone());
                }
            }
            IngestEvent::Packet(pkt) if pkt.track == TrackKind::Video => {
                if let Some(p) = &mut self.pipeline {
                    p.push_packet(pkt.clone(), now, arrival);
                }
            }
            _ => {}
        }
    }

    /// Waits for every rung to encode what it has and packages the rest, so
    /// nothing of this session arrives after the packager moved on.
    fn flush(&mut self, packager: &mut ChannelPackager) {
        if let Some(mut p) = self.pipeline.take() {
            p.finish();
            for out in p.outputs().try_iter() {
                apply(packager, out);
            }
        }
    }
}

fn apply(packager: &mut ChannelPackager, out: Output) {
    match out {
        Output::Plan(rungs) => packager.set_rungs(rung_decls(rungs)),
        Output::Config { rung, params } => packager.push_rung(
            rung,
            RungEvent::Config(params),
            SystemTime::now(),
            Instant::now(),
        ),
        Output::Packet {
            rung,
            packet,
            now,
            arrival,
        } => packager.push_rung(rung, RungEvent::Packet(packet), now, arrival),
        Output::Summary { .. } | Output::Backends(_) => {}
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves the data consistent, so a panic in
    // another holder does not make it unsafe to continue.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until the stream has ended and lingered, or the channel was replaced.
pub(super) fn run(
    table: Table,
    me: Arc<LiveChannel>,
    mut packager: ChannelPackager,
    events: Receiver<Stamped>,
    control: Receiver<Control>,
    timing: Timing,
    mut transcode: Transcode,
) {
    let mut session: Option<u64> = None;
    let mut grace_until: Option<Instant> = None;
    loop {
        let timeout = grace_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let outputs = transcode.outputs();
        select! {
            recv(events) -> msg => {
                let Ok(s) = msg else { break };
                if session != Some(s.session) {
                    // Packets of a new session after an earlier one are a reconnect.
                    if session.is_some() {
                        transcode.flush(&mut packager);
                        packager.discontinuity();
                    }
                    session = Some(s.session);
                }
                if lock(&me.state).publisher.is_some() {
                    grace_until = None;
                }
                // The source is packaged first: its cuts decide where the
                // rungs, which come later, cut.
                packager.push(s.event.clone(), s.now, s.arrival);
                transcode.feed(&me.id, &s.event, s.now, s.arrival);
            }
            recv(outputs) -> msg => {
                if let Ok(out) = msg {
                    apply(&mut packager, out);
                }
            }
            recv(control) -> msg => match msg {
                Ok(Control::Disconnected) => {
                    transcode.flush(&mut packager);
                    if lock(&me.state).publisher.is_none() {
                        tracing::info!(channel = %me.id, grace_s = timing.grace.as_secs_f64(),
                            "publisher gone; waiting for it to come back");
                        grace_until = Some(Instant::now() + timing.grace);
                    }
                }
                Ok(Control::Abandoned) => {
                    transcode.flush(&mut packager);
                    if end_stream(&me, &mut packager, true, "publisher refused or left before sending video") {
                        if !me.store.has_media() {
                            remove(&table, &me);
                            return;
                        }
                        break;
                    }
                }
                Ok(Control::Terminate) | Err(_) => {
                    transcode.flush(&mut packager);
                    end_stream(&me, &mut packager, false, "channel deleted");
                    break;
                }
            },
            default(timeout) => {
                if grace_until.is_some_and(|t| Instant::now() >= t) {
                    grace_until = None;
                    if end_stream(&me, &mut packager, true, "publisher did not come back") {
                        break;
                    }
                }
            }
        }
    }
    // Keep serving the ended playlists so players see EXT-X-ENDLIST, then 404.
    // Any control message (or its absence) ends the linger the same way.
    let _ = control.recv_timeout(timing.linger);
    remove(&table, &me);
}

/// Takes the channel out of the table unless a newer stream replaced it.
fn remove(table: &Table, me: &Arc<LiveChannel>) {
    let mut t = lock(table);
    if t.get(&me.id).is_some_and(|c| Arc::ptr_eq(c, me)) {
        t.remove(&me.id);
    }
}

/// Ends the stream unless `unless_published` and a publisher came back.
/// Returns whether it ended. `ended` flips under the state lock, so a
/// publisher arriving at the same moment either wins the channel back or
/// starts a new stream; never both.
fn end_stream(
    me: &LiveChannel,
    packager: &mut ChannelPackager,
    unless_published: bool,
    why: &str,
) -> bool {
    let mut st = lock(&me.state);
    if st.ended || (unless_published && st.publisher.is_some()) {
        return false;
    }
    st.ended = true;
    st.publisher = None;
    drop(st);
    packager.end();
    METRICS.live_channels.dec();
    tracing::info!(channel = %me.id, reason = why, "stream ended");
    true
}
