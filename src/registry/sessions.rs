//! Stream sessions: one row per publish (start, end, end reason) and its
//! events, so an operator can answer "what happened at 21:14 last night".
//!
//! Bounded by construction: a session keeps at most [`MAX_SESSION_EVENTS`]
//! events (the rest are only counted), an event's detail at most
//! [`MAX_EVENT_DETAIL`] characters, and a channel its newest
//! [`KEPT_SESSIONS`] sessions. The node writes here from one background
//! thread, never from a media path.
//!
//! A session belongs to the node that opened it (the registry's node id),
//! so that nodes sharing one database each close only their own sessions
//! when they start.

use super::db::{Db, DbError, Mode, Row, args};
use super::{Registry, Result};
use serde::Serialize;

/// Events kept per session; later ones are counted in `events_dropped`.
pub const MAX_SESSION_EVENTS: u64 = 500;
/// Characters of an event's detail kept; longer ones are cut with `…`.
pub const MAX_EVENT_DETAIL: usize = 200;
/// Sessions kept per channel; older ended ones are deleted.
pub const KEPT_SESSIONS: usize = 200;
/// The end reason of a session the node did not see end.
pub const NODE_RESTARTED: &str = "node restarted";

/// One publish of a channel as recorded. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSession {
    pub id: i64,
    pub channel_id: String,
    /// `rtmp`, `whip`.
    pub protocol: String,
    pub started_at_ms: u64,
    /// `None` while the session is live.
    pub ended_at_ms: Option<u64>,
    pub end_reason: Option<String>,
    /// The ingest configuration as last received (codec, size, rates).
    pub ingest: Option<serde_json::Value>,
    /// Oldest first.
    pub events: Vec<SessionEvent>,
    /// Events past [`MAX_SESSION_EVENTS`], or refused by the node's rate
    /// limit, counted but not kept.
    pub events_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionEvent {
    pub at_ms: u64,
    pub kind: String,
    pub detail: String,
}

impl Registry {
    /// Records that a session started on this registry's node; returns its
    /// id. Prunes the channel's oldest ended sessions, and the ended
    /// sessions of deleted channels.
    pub fn open_session(&self, channel_id: &str, protocol: &str, at_ms: u64) -> Result<i64> {
        let node = self.node_id();
        self.call("open_session", Mode::Write, |db| {
            let id = db
                .query_one(
                    "INSERT INTO stream_sessions (channel_id, protocol, started_at, node_id) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    args![channel_id, protocol, ms(at_ms), node],
                )?
                .int(0)?;
            prune(db, channel_id)?;
            Ok(id)
        })
    }

    /// Replaces the session's ingest configuration.
    pub fn set_session_ingest(&self, id: i64, ingest: &serde_json::Value) -> Result<()> {
        let json = ingest.to_string();
        self.call("set_session_ingest", Mode::Write, |db| {
            db.exec(
                "UPDATE stream_sessions SET ingest = $1 WHERE id = $2",
                args![&json, id],
            )
            .map(drop)
        })
    }

    /// Adds an event (its detail cut to [`MAX_EVENT_DETAIL`] characters);
    /// past [`MAX_SESSION_EVENTS`] it is only counted. False when dropped.
    pub fn add_session_event(&self, id: i64, at_ms: u64, kind: &str, detail: &str) -> Result<bool> {
        let detail = truncate(detail, MAX_EVENT_DETAIL);
        let kind = truncate(kind, MAX_EVENT_DETAIL);
        self.call("add_session_event", Mode::Write, |db| {
            let room = db.exec(
                "UPDATE stream_sessions SET events = events + 1 WHERE id = $1 AND events < $2",
                args![id, MAX_SESSION_EVENTS as i64],
            )? == 1;
            if room {
                // `seq` orders the events of one millisecond as they came.
                db.exec(
                    "INSERT INTO session_events (session_id, at, kind, detail, seq) \
                     SELECT $1, CAST($2 AS BIGINT), $3, $4, COALESCE(MAX(seq), 0) + 1 \
                     FROM session_events WHERE session_id = $1",
                    args![id, ms(at_ms), &kind, &detail],
                )?;
            } else {
                db.exec(
                    "UPDATE stream_sessions SET events_dropped = events_dropped + 1 WHERE id = $1",
                    args![id],
                )?;
            }
            Ok(room)
        })
    }

    /// Counts `n` events that were not kept.
    pub fn count_dropped_events(&self, id: i64, n: u64) -> Result<()> {
        self.call("count_dropped_events", Mode::Write, |db| {
            db.exec(
                "UPDATE stream_sessions SET events_dropped = events_dropped + $1 WHERE id = $2",
                args![ms(n), id],
            )
            .map(drop)
        })
    }

    /// Records the end of a live session; an ended one keeps its first end.
    pub fn close_session(&self, id: i64, at_ms: u64, reason: &str) -> Result<()> {
        let reason = truncate(reason, MAX_EVENT_DETAIL);
        self.call("close_session", Mode::Write, |db| {
            db.exec(
                "UPDATE stream_sessions SET ended_at = $1, end_reason = $2 \
                 WHERE id = $3 AND ended_at IS NULL",
                args![ms(at_ms), &reason, id],
            )
            .map(drop)
        })
    }

    /// Ends with [`NODE_RESTARTED`] every session this registry's node left
    /// open: that node stopped without recording their end. Sessions of
    /// other nodes sharing the database are live there and stay open;
    /// sessions that belong to no node (written before sessions knew their
    /// node) are closed too. Only a node starting up may call this (the CLI
    /// opens the same database while a node runs).
    pub fn close_interrupted_sessions(&self, at_ms: u64) -> Result<usize> {
        let node = self.node_id();
        self.call("close_interrupted_sessions", Mode::Write, |db| {
            db.exec(
                "UPDATE stream_sessions \
                 SET ended_at = CASE WHEN started_at > $1 THEN started_at ELSE $1 END, \
                     end_reason = $2 \
                 WHERE ended_at IS NULL AND (node_id = $3 OR node_id = '')",
                args![ms(at_ms), NODE_RESTARTED, node],
            )
        })
        .map(|n| n as usize)
    }

    /// The node that opened the session (`""` for one written before
    /// sessions knew their node); `None` when there is no such session.
    pub fn session_node(&self, id: i64) -> Result<Option<String>> {
        self.call("session_node", Mode::Read, |db| {
            db.query_opt(
                "SELECT node_id FROM stream_sessions WHERE id = $1",
                args![id],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
    }

    /// The channel's newest `limit` sessions, newest first, with their events.
    pub fn sessions(&self, channel_id: &str, limit: usize) -> Result<Vec<StreamSession>> {
        self.call("sessions", Mode::Read, |db| {
            let rows = db.query(
                "SELECT id, channel_id, protocol, started_at, ended_at, end_reason, ingest, events_dropped \
                 FROM stream_sessions WHERE channel_id = $1 ORDER BY id DESC LIMIT $2",
                args![channel_id, limit.min(KEPT_SESSIONS) as i64],
            )?;
            let mut sessions = rows
                .iter()
                .map(session)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            for s in &mut sessions {
                s.events = db
                    .query(
                        "SELECT at, kind, detail FROM session_events \
                         WHERE session_id = $1 ORDER BY at, seq",
                        args![s.id],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(SessionEvent {
                            at_ms: r.unsigned(0)?,
                            kind: r.text(1)?,
                            detail: r.text(2)?,
                        })
                    })
                    .collect::<std::result::Result<_, DbError>>()?;
            }
            Ok(sessions)
        })
    }

    /// The channel's newest session, without its events.
    pub fn last_session(&self, channel_id: &str) -> Result<Option<StreamSession>> {
        self.call("last_session", Mode::Read, |db| {
            db.query_opt(
                "SELECT id, channel_id, protocol, started_at, ended_at, end_reason, ingest, events_dropped \
                 FROM stream_sessions WHERE channel_id = $1 ORDER BY id DESC LIMIT 1",
                args![channel_id],
            )?
            .map(|r| session(&r))
            .transpose()
        })
    }
}

/// A session from `id, channel_id, protocol, started_at, ended_at,
/// end_reason, ingest, events_dropped`, without its events.
fn session(r: &Row) -> std::result::Result<StreamSession, DbError> {
    Ok(StreamSession {
        id: r.int(0)?,
        channel_id: r.text(1)?,
        protocol: r.text(2)?,
        started_at_ms: r.unsigned(3)?,
        ended_at_ms: r.opt_int(4)?.map(unsigned),
        end_reason: r.opt_text(5)?,
        // A row written by this module is JSON; anything else reads as
        // absent rather than failing the whole list.
        ingest: r.opt_text(6)?.and_then(|s| serde_json::from_str(&s).ok()),
        events: Vec::new(),
        events_dropped: r.unsigned(7)?,
    })
}

/// Deletes the channel's ended sessions beyond the newest [`KEPT_SESSIONS`],
/// and the ended sessions of channels that no longer exist, with their events.
fn prune(db: &mut Db<'_>, channel_id: &str) -> std::result::Result<(), DbError> {
    const DOOMED: &str = "SELECT id FROM stream_sessions WHERE ended_at IS NOT NULL AND (\
         (channel_id = $1 AND id NOT IN \
            (SELECT id FROM stream_sessions WHERE channel_id = $1 ORDER BY id DESC LIMIT $2)) \
         OR channel_id NOT IN (SELECT id FROM channels))";
    let keep = KEPT_SESSIONS as i64;
    db.exec(
        &format!("DELETE FROM session_events WHERE session_id IN ({DOOMED})"),
        args![channel_id, keep],
    )?;
    db.exec(
        &format!("DELETE FROM stream_sessions WHERE id IN ({DOOMED})"),
        args![channel_id, keep],
    )?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let cut: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{cut}…")
        }
    }
}

/// Database integers are signed; milliseconds since 1970 fit for 292 million years.
fn ms(at_ms: u64) -> i64 {
    at_ms.min(i64::MAX as u64) as i64
}

fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        (dir, reg)
    }

    #[test]
    fn a_session_keeps_its_start_events_ingest_and_first_end() {
        let (_dir, reg) = open();
        let ch = reg.create("c", "passthrough").expect("create");
        let id = reg.open_session(&ch.id, "rtmp", 1_000).expect("open");
        reg.set_session_ingest(id, &serde_json::json!({"video": {"width": 640}}))
            .expect("ingest");
        assert!(
            reg.add_session_event(id, 2_000, "publisher left", "disconnected")
                .expect("event")
        );
        reg.add_session_event(id, 3_000, "publisher reconnected", "rtmp")
            .expect("event");
        assert_eq!(reg.sessions(&ch.id, 10).expect("list")[0].ended_at_ms, None);
        reg.close_session(id, 9_000, "publisher did not come back")
            .expect("close");
        reg.close_session(id, 10_000, "later").expect("close again");

        let s = &reg.sessions(&ch.id, 10).expect("list")[0];
        assert_eq!(s.id, id);
        assert_eq!(s.protocol, "rtmp");
        assert_eq!(s.started_at_ms, 1_000);
        assert_eq!(s.ended_at_ms, Some(9_000));
        assert_eq!(s.end_reason.as_deref(), Some("publisher did not come back"));
        assert_eq!(s.ingest, Some(serde_json::json!({"video": {"width": 640}})));
        let kinds: Vec<&str> = s.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["publisher left", "publisher reconnected"]);
        assert_eq!(s.events[0].at_ms, 2_000);
        let last = reg.last_session(&ch.id).expect("last").expect("some");
        assert_eq!((last.id, last.events.len()), (id, 0));
        assert_eq!(reg.last_session("nope").expect("last"), None);
    }

    #[test]
    fn events_and_details_are_bounded() {
        let (_dir, reg) = open();
        let ch = reg.create("c", "passthrough").expect("create");
        let id = reg.open_session(&ch.id, "whip", 0).expect("open");
        let long = "x".repeat(MAX_EVENT_DETAIL * 3);
        for i in 0..MAX_SESSION_EVENTS + 7 {
            let kept = reg.add_session_event(id, i, "drop", &long).expect("event");
            assert_eq!(kept, i < MAX_SESSION_EVENTS);
        }
        reg.count_dropped_events(id, 3).expect("count");
        let s = &reg.sessions(&ch.id, 1).expect("list")[0];
        assert_eq!(s.events.len() as u64, MAX_SESSION_EVENTS);
        assert_eq!(s.events_dropped, 10);
        assert_eq!(s.events[0].detail.chars().count(), MAX_EVENT_DETAIL);
        assert!(s.events[0].detail.ends_with('…'));
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo!", 5), "héll…");
    }

    #[test]
    fn old_sessions_and_those_of_deleted_channels_are_pruned() {
        let (_dir, reg) = open();
        let ch = reg.create("c", "passthrough").expect("create");
        let gone = reg.create("gone", "passthrough").expect("create");
        let old = reg.open_session(&gone.id, "rtmp", 0).expect("open");
        reg.add_session_event(old, 1, "k", "d").expect("event");
        reg.close_session(old, 2, "r").expect("close");
        reg.delete(&gone.id).expect("delete");
        let mut first = None;
        for i in 0..KEPT_SESSIONS as u64 + 5 {
            let id = reg.open_session(&ch.id, "rtmp", i).expect("open");
            reg.add_session_event(id, i, "k", "d").expect("event");
            // The first stays open: an open session is never pruned.
            match first {
                None => first = Some(id),
                Some(_) => reg.close_session(id, i, "r").expect("close"),
            }
        }
        let count = |sql: &str| -> i64 {
            reg.call("test", Mode::Read, |db| db.query_one(sql, &[])?.int(0))
                .expect("count")
        };
        assert_eq!(
            count("SELECT COUNT(*) FROM stream_sessions") as usize,
            KEPT_SESSIONS + 1,
            "the newest, and the open first one"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM session_events") as usize,
            KEPT_SESSIONS + 1
        );
        let newest = reg.sessions(&ch.id, usize::MAX).expect("list");
        assert_eq!(newest.len(), KEPT_SESSIONS);
        assert!(newest.iter().all(|s| s.ended_at_ms.is_some()));
        assert!(reg.sessions(&gone.id, 10).expect("list").is_empty());
        assert_eq!(
            reg.last_session(&gone.id).expect("last").map(|s| s.id),
            None
        );
    }

    #[test]
    fn sessions_left_open_by_a_crash_end_as_node_restarted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        let ch = reg.create("c", "passthrough").expect("create");
        let open = reg.open_session(&ch.id, "rtmp", 5_000).expect("open");
        let done = reg.open_session(&ch.id, "rtmp", 1_000).expect("open");
        reg.close_session(done, 2_000, "channel deleted")
            .expect("close");
        drop(reg);
        let reg = Registry::open(dir.path()).expect("reopen");
        assert_eq!(reg.close_interrupted_sessions(9_000).expect("close"), 1);
        let list = reg.sessions(&ch.id, 10).expect("list");
        let by_id = |id| list.iter().find(|s| s.id == id).expect("listed");
        assert_eq!(by_id(open).end_reason.as_deref(), Some(NODE_RESTARTED));
        assert_eq!(by_id(open).ended_at_ms, Some(9_000));
        assert_eq!(by_id(done).end_reason.as_deref(), Some("channel deleted"));
    }
}
