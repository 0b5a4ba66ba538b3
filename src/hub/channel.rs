//! The thread that drives one live channel's [`ChannelCore`]: it owns the
//! channel's queues and transcoding pipeline, reads the clock, and carries
//! out what the core decides. Every decision is the core's.
//!
//! It never touches sockets and never blocks ingest: publishers reach it
//! through a bounded queue and drop whole GOPs when it is full.

use super::Cut;
use super::core::{ChannelCore, Input, Joined, Output, Refusal};
use super::journal::{Journal, SessionNote};
use super::status::{StreamStatus, Viewers};
use super::transcoding::Transcoding;
use crate::media::{Arrival, IngestEvent};
use crate::metrics::METRICS;
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::{ChannelStore, Update};
use crate::record::Recorder;
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, select};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One media event of a publish session, stamped where ingest read it.
pub(super) struct Stamped {
    pub session: u64,
    pub event: IngestEvent,
    pub arrival: Arrival,
}

pub(super) enum Control {
    /// A publisher asks for the channel; the core's answer goes to `reply`.
    Join {
        session: u64,
        protocol: &'static str,
        reply: Sender<Result<(), Refusal>>,
    },
    /// A publish session ended (see [`Input::Left`]).
    Left {
        session: u64,
        abandoned: bool,
        reason: String,
    },
    /// Timed metadata for the stream; where it was placed goes to `reply`.
    Metadata {
        payload: Payload,
        duration: Option<Duration>,
        reply: Sender<Result<Placement, MetadataRefusal>>,
    },
    /// The channel was deleted: end the stream now.
    Terminate,
}

/// Room in a channel's control queue: a handful of publishers coming and
/// going, and the node deleting the channel.
pub(super) const CONTROL_QUEUE: usize = 16;

/// How long a control message may wait for room, and a publisher for the
/// channel's answer: the driver answers between two media events, so only a
/// wedged channel takes this long.
const CONTROL_WAIT: Duration = Duration::from_secs(5);

/// The longest the driver sleeps without a timeout from the core.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Why a control message did not reach a channel's driver.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("the channel's thread has ended")]
    Gone,
    #[error("the channel did not answer within {0:?}")]
    Busy(Duration),
}

/// What the hub's table holds for a channel that is live or lingering.
pub(super) struct LiveChannel {
    pub id: String,
    pub store: Arc<ChannelStore>,
    pub events: Sender<Stamped>,
    pub control: Sender<Control>,
    /// Publish sessions up to this one are cut (0: none; sessions count
    /// from 1): read for every packet, so an atomic, with the reason apart.
    cut_upto: AtomicU64,
    cut_why: Mutex<Option<Cut>>,
    /// The stream key the latest publisher authenticated with (a secret:
    /// compared, never shown), to spot a rotation made behind the node's back.
    key: Mutex<String>,
    /// The stream's session record.
    pub journal: Journal,
    /// The core's latest status snapshot, for the stream API.
    pub status: Mutex<Option<StreamStatus>>,
    /// Who read the channel's playlists lately.
    pub viewers: Mutex<Viewers>,
}

impl LiveChannel {
    pub fn new(
        id: &str,
        store: Arc<ChannelStore>,
        events: Sender<Stamped>,
        control: Sender<Control>,
        journal: Journal,
    ) -> Self {
        LiveChannel {
            id: id.to_string(),
            store,
            events,
            control,
            cut_upto: AtomicU64::new(0),
            cut_why: Mutex::new(None),
            key: Mutex::new(String::new()),
            journal,
            status: Mutex::new(None),
            viewers: Mutex::new(Viewers::default()),
        }
    }

    pub fn authenticated(&self, key: &str) {
        *lock(&self.key) = key.to_string();
    }

    /// Whether `key` is the one the publisher authenticated with (constant time).
    pub fn uses_key(&self, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(lock(&self.key).as_bytes().ct_eq(key.as_bytes()))
    }

    /// Cuts every publish session numbered below `next`.
    pub fn cut(&self, next: u64, why: Cut) {
        // The reason first: a reader that sees the number finds it.
        *lock(&self.cut_why) = Some(why);
        self.cut_upto
            .store(next.saturating_sub(1), Ordering::Release);
    }

    /// Why session `session` is cut, if it is.
    pub fn cut_of(&self, session: u64) -> Option<Cut> {
        if session > self.cut_upto.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.cut_why).clone()
    }

    pub fn send_control(&self, msg: Control) -> Result<(), Unreachable> {
        match self.control.send_timeout(msg, CONTROL_WAIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(Unreachable::Busy(CONTROL_WAIT)),
            Err(SendTimeoutError::Disconnected(_)) => Err(Unreachable::Gone),
        }
    }

    /// Hands timed metadata to the channel's core; the answer says where it
    /// was placed. Blocking (a few milliseconds: the driver answers between
    /// two media events): call it off the async threads.
    pub fn metadata(
        &self,
        payload: Payload,
        duration: Option<Duration>,
    ) -> Result<Result<Placement, MetadataRefusal>, Unreachable> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        match self.send_control(Control::Metadata {
            payload,
            duration,
            reply,
        }) {
            Err(Unreachable::Gone) => return Ok(Err(MetadataRefusal::NotLive)),
            sent => sent?,
        }
        match answer.recv_timeout(CONTROL_WAIT) {
            Ok(a) => Ok(a),
            Err(RecvTimeoutError::Timeout) => Err(Unreachable::Busy(CONTROL_WAIT)),
            Err(RecvTimeoutError::Disconnected) => Ok(Err(MetadataRefusal::NotLive)),
        }
    }

    /// Asks the channel's core to take publish session `session`. A driver
    /// that is gone has ended its stream.
    pub fn join(
        &self,
        session: u64,
        protocol: &'static str,
    ) -> Result<Result<(), Refusal>, Unreachable> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        match self.send_control(Control::Join {
            session,
            protocol,
            reply,
        }) {
            Err(Unreachable::Gone) => return Ok(Err(Refusal::Ended)),
            sent => sent?,
        }
        match answer.recv_timeout(CONTROL_WAIT) {
            Ok(a) => Ok(a),
            Err(RecvTimeoutError::Timeout) => Err(Unreachable::Busy(CONTROL_WAIT)),
            Err(RecvTimeoutError::Disconnected) => Ok(Err(Refusal::Ended)),
        }
    }
}

pub(super) type Table = Arc<Mutex<HashMap<String, Arc<LiveChannel>>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves the data consistent, so a panic in
    // another holder does not make it unsafe to continue.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The driver's side of one channel.
pub(super) struct Driver {
    pub table: Table,
    pub me: Arc<LiveChannel>,
    pub core: ChannelCore,
    pub transcoding: Transcoding,
    /// The stream is counted in `rungs_live_channels` (until it ends).
    pub counted_live: bool,
    /// The core's answer to the last [`Input::Metadata`].
    pub placed: Option<Result<Placement, MetadataRefusal>>,
    /// Records the stream when the channel says so.
    pub recorder: Option<Recorder>,
}

impl Driver {
    /// Runs until the core says the channel is done. A panic in this
    /// channel's work ends this channel alone: its playlists get
    /// EXT-X-ENDLIST, its publisher is cut, it leaves the table so that a
    /// republish starts afresh, and no other channel notices.
    pub fn run(mut self, events: Receiver<Stamped>, control: Receiver<Control>) {
        // Every line this thread logs carries the channel and the stream's
        // session (the registry's id, as `rungs channel sessions` lists it),
        // the latter once the session writer has it: a few milliseconds in.
        let span = tracing::info_span!(
            "channel",
            channel = %self.me.id,
            session = tracing::field::Empty
        );
        let _entered = span.enter();
        let mut session = None;
        let mut note_session = |journal: &Journal| {
            if session.is_none() {
                session = journal.session_id();
                if let Some(id) = session {
                    span.record("session", id);
                }
            }
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // What the core said before its first input.
            note_session(&self.me.journal);
            if self.carry_out(Instant::now()) {
                while self.step(&events, &control) {
                    note_session(&self.me.journal);
                }
            }
        }));
        if let Err(panic) = ran {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(channel = %self.me.id, panic = %what, "channel failed; ending its stream");
            self.me.journal.note(SessionNote::Ended {
                reason: format!("channel failed: {what}"),
            });
            self.me.cut(u64::MAX, Cut::ChannelFailed);
            self.me.store.apply(vec![Update::End]);
            if let Some(r) = &mut self.recorder {
                r.apply(vec![Update::End], SystemTime::now());
            }
            if self.counted_live {
                METRICS.live_channels.dec();
            }
        }
        remove(&self.table, &self.me);
    }

    /// Waits for one input and hands it over; false once the core is done.
    fn step(&mut self, events: &Receiver<Stamped>, control: &Receiver<Control>) -> bool {
        let timeout = self
            .core
            .poll_timeout()
            .map_or(IDLE_WAKE, |t| t.saturating_duration_since(Instant::now()));
        let outputs = self.transcoding.outputs();
        select! {
            recv(events) -> msg => match msg {
                Ok(s) => self.media(s),
                // The table's entry holds the sender: never while running.
                Err(_) => self.input(Input::Terminate),
            },
            recv(outputs) -> msg => match msg {
                Ok(out) => self.input(Input::Rung(out)),
                // Every stage let go of its sender before a flush: the
                // pipeline's threads died, and the rungs with them.
                Err(_) => panic!("the transcoding pipeline stopped"),
            },
            recv(control) -> msg => match msg {
                Ok(Control::Join {
                    session,
                    protocol,
                    reply,
                }) => {
                    let at = Instant::now();
                    let _ = reply.send(self.core.admit(Joined {
                        session,
                        protocol,
                        at,
                    }));
                    self.carry_out(at)
                }
                Ok(Control::Left {
                    session,
                    abandoned,
                    reason,
                }) => {
                    // The session sent all it will before it left: package
                    // what is still queued before the core moves on.
                    for s in events.try_iter() {
                        if !self.media(s) {
                            return false;
                        }
                    }
                    self.input(Input::Left {
                        session,
                        abandoned,
                        reason,
                    })
                }
                Ok(Control::Metadata {
                    payload,
                    duration,
                    reply,
                }) => {
                    let go = self.input(Input::Metadata { payload, duration });
                    // The core answers within the input; a caller that gave
                    // up waiting has dropped its receiver.
                    let answer = self.placed.take().unwrap_or(Err(MetadataRefusal::NotLive));
                    let _ = reply.send(answer);
                    go
                }
                Ok(Control::Terminate) | Err(_) => self.input(Input::Terminate),
            },
            default(timeout) => self.input(Input::Timeout),
        }
    }

    fn media(&mut self, s: Stamped) -> bool {
        self.input(Input::Media {
            session: s.session,
            event: s.event,
            arrival: s.arrival,
        })
    }

    /// Hands `input` to the core and carries out what it asks; false once
    /// the core is done.
    fn input(&mut self, input: Input) -> bool {
        let now = Instant::now();
        self.core.handle(now, input);
        self.carry_out(now)
    }

    /// Carries out what the core asks; false once it is done.
    fn carry_out(&mut self, now: Instant) -> bool {
        while let Some(out) = self.core.poll_output() {
            let rest = match self.transcoding.carry(&mut self.core, now, out, &mut Some) {
                Ok(rest) => rest,
                Err(e) => {
                    tracing::error!(channel = %self.me.id, error = %e, "cannot start transcoding; source only");
                    None
                }
            };
            match rest {
                Some(Output::Store(updates)) => {
                    #[cfg(test)]
                    faults::strike(&self.me.id);
                    // Players first: the recording's disk writes come after
                    // the parts are published.
                    let recorded = self.recorder.is_some().then(|| updates.clone());
                    self.me.store.apply(updates);
                    if let (Some(r), Some(u)) = (&mut self.recorder, recorded) {
                        r.apply(u, SystemTime::now());
                    }
                }
                Some(Output::Ended) => {
                    self.counted_live = false;
                    METRICS.live_channels.dec()
                }
                Some(Output::Remove) => return false,
                Some(Output::Metadata(answer)) => self.placed = Some(answer),
                Some(Output::Session(note)) => self.me.journal.note(note),
                Some(Output::Status(status)) => *lock(&self.me.status) = Some(*status),
                _ => {}
            }
        }
        true
    }
}

/// Takes the channel out of the table unless a newer stream replaced it.
fn remove(table: &Table, me: &Arc<LiveChannel>) {
    let mut t = lock(table);
    if t.get(&me.id).is_some_and(|c| Arc::ptr_eq(c, me)) {
        t.remove(&me.id);
    }
}

/// A fault to inject: the packaging of the named channel panics once.
#[cfg(test)]
pub(super) mod faults {
    use std::sync::Mutex;

    static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub fn arm(channel: &str) {
        super::lock(&ARMED).push(channel.to_string());
    }

    pub fn strike(channel: &str) {
        let mut armed = super::lock(&ARMED);
        if let Some(i) = armed.iter().position(|c| c == channel) {
            armed.remove(i);
            drop(armed);
            panic!("fault injected into channel {channel}");
        }
    }
}
