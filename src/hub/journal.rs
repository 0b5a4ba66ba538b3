//! Stream sessions as the registry records them: notes from a channel's
//! core and its publishers, stamped with the wall clock and written by one
//! background thread.
//!
//! Nothing on a media path ever waits on SQLite: a note is a `try_send`
//! into a bounded queue, and the writer allows each session a small burst
//! of events and a few a second after it, counting the rest. A session is
//! one stream as players saw it: a publisher that reconnects within the
//! grace period continues it (a `publisher reconnected` event), one that
//! comes later starts a new session.

use super::status::IngestInfo;
use crate::registry::Registry;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What a channel's core says about its stream, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SessionNote {
    /// The ingest configuration, first or changed or newly measured.
    Ingest(IngestInfo),
    /// Something an operator may look for later.
    Event { kind: &'static str, detail: String },
    /// The stream ended, and why.
    Ended { reason: String },
}

/// Notes waiting for the writer; beyond, they are dropped with a warning
/// (the database is stuck far longer than any stream event matters).
const QUEUE: usize = 1024;
/// Events a session may write at once, and how fast that allowance refills.
const BURST: f64 = 20.0;
const REFILL_PER_SEC: f64 = 2.0;

pub(super) struct Record {
    stream: u64,
    at_ms: u64,
    what: What,
}

enum What {
    Start {
        channel: String,
        protocol: &'static str,
        /// Where the writer puts the registry's id for the session.
        id: Arc<OnceLock<i64>>,
    },
    Note(SessionNote),
}

/// Starts the node's session writer; it ends when every [`Journal`] and the
/// returned sender are gone.
pub(super) fn start(registry: Arc<Registry>) -> Sender<Record> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("session-log".into())
        .spawn(move || write(&registry, rx));
    if let Err(e) = spawned {
        // The receiver is gone with the closure: notes fail to send and
        // are dropped, and streams run unrecorded.
        tracing::error!(error = %e, "cannot start the session writer; stream sessions go unrecorded");
    }
    tx
}

/// One stream's handle on the session writer.
#[derive(Clone)]
pub(super) struct Journal {
    tx: Sender<Record>,
    /// The hub's number of the stream's first publish session: unique
    /// within the node, so the writer can tell streams apart.
    stream: u64,
    /// The registry's id for the session (what `rungs channel sessions`
    /// lists), once the writer has recorded its start.
    id: Arc<OnceLock<i64>>,
}

impl Journal {
    /// Opens the session of a new stream.
    pub fn open(tx: Sender<Record>, stream: u64, channel: &str, protocol: &'static str) -> Self {
        let id = Arc::new(OnceLock::new());
        let j = Journal {
            tx,
            stream,
            id: id.clone(),
        };
        j.send(What::Start {
            channel: channel.to_string(),
            protocol,
            id,
        });
        j
    }

    /// The registry's id for the session, once recorded (a few milliseconds
    /// after [`Journal::open`]; never, if the registry refused it).
    pub fn session_id(&self) -> Option<i64> {
        self.id.get().copied()
    }

    pub fn note(&self, note: SessionNote) {
        self.send(What::Note(note));
    }

    pub fn event(&self, kind: &'static str, detail: impl Into<String>) {
        self.note(SessionNote::Event {
            kind,
            detail: detail.into(),
        });
    }

    fn send(&self, what: What) {
        let record = Record {
            stream: self.stream,
            at_ms: unix_ms(SystemTime::now()),
            what,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(record) {
            tracing::warn!(
                stream = self.stream,
                "session writer behind; a stream session note was dropped"
            );
        }
    }
}

/// A session being written: its registry id and event allowance.
struct Open {
    id: i64,
    allowance: f64,
    refilled: Instant,
    /// Events refused by the allowance, not yet counted in the registry.
    unrecorded: u64,
}

impl Open {
    fn take(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.allowance = (self.allowance + secs * REFILL_PER_SEC).min(BURST);
        self.refilled = now;
        if self.allowance < 1.0 {
            self.unrecorded += 1;
            return false;
        }
        self.allowance -= 1.0;
        true
    }
}

fn write(registry: &Registry, rx: Receiver<Record>) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    for r in rx {
        if let Err(e) = apply(registry, &mut open, r) {
            tracing::warn!(error = %e, "recording a stream session");
        }
    }
}

fn apply(
    registry: &Registry,
    open: &mut HashMap<u64, Open>,
    r: Record,
) -> crate::registry::Result<()> {
    let note = match r.what {
        What::Start {
            channel,
            protocol,
            id: shared,
        } => {
            let id = registry.open_session(&channel, protocol, r.at_ms)?;
            // One Start per journal: nothing has set it before.
            let _ = shared.set(id);
            open.insert(
                r.stream,
                Open {
                    id,
                    allowance: BURST,
                    refilled: Instant::now(),
                    unrecorded: 0,
                },
            );
            return Ok(());
        }
        What::Note(n) => n,
    };
    // A session whose start was not recorded has nowhere to go.
    if let SessionNote::Ended { reason } = note {
        let Some(s) = open.remove(&r.stream) else {
            return Ok(());
        };
        if s.unrecorded > 0 {
            registry.count_dropped_events(s.id, s.unrecorded)?;
        }
        return registry.close_session(s.id, r.at_ms, &reason);
    }
    let Some(s) = open.get_mut(&r.stream) else {
        return Ok(());
    };
    match note {
        SessionNote::Ingest(info) => {
            // Plain fields with string keys: serializing cannot fail.
            let json = serde_json::to_value(&info).unwrap_or_default();
            registry.set_session_ingest(s.id, &json)?;
        }
        SessionNote::Event { kind, detail } => {
            if s.take(Instant::now()) {
                registry.add_session_event(s.id, r.at_ms, kind, &detail)?;
            }
        }
        SessionNote::Ended { .. } => {}
    }
    Ok(())
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn notes_reach_the_registry_and_a_flood_of_events_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Arc::new(Registry::open(dir.path()).expect("open"));
        let ch = reg.create("c", "passthrough").expect("create");
        let tx = start(reg.clone());
        let j = Journal::open(tx.clone(), 7, &ch.id, "rtmp");
        j.note(SessionNote::Ingest(IngestInfo {
            protocol: "rtmp",
            ..IngestInfo::default()
        }));
        for i in 0..50 {
            j.event("ingest dropped", format!("episode {i}"));
        }
        j.note(SessionNote::Ended {
            reason: "channel deleted".into(),
        });
        drop((j, tx));
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            let list = reg.sessions(&ch.id, 1).expect("list");
            if let Some(s) = list.into_iter().find(|s| s.end_reason.is_some()) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the session ends in the registry"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(s.protocol, "rtmp");
        assert_eq!(s.end_reason.as_deref(), Some("channel deleted"));
        assert_eq!(s.ingest.expect("ingest")["protocol"], "rtmp");
        // A burst is written; the rest is counted, never lost silently.
        assert!(s.events.len() >= BURST as usize && s.events.len() < 50);
        assert_eq!(s.events.len() as u64 + s.events_dropped, 50);
    }
}
