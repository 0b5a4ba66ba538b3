//! The recordings index: one row per recorded stream (channel, session
//! folder, times, size, state), written by the uploader from the events a
//! recording leaves in the spool and read by the recordings API. The
//! recordings themselves live in object storage.

use super::{Registry, Result};
use rusqlite::params;
use serde::Serialize;

/// Tables this module owns, created with the rest of the registry.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recordings (
    channel_id  TEXT NOT NULL,
    -- The session folder: the UTC start, ISO 8601 basic form.
    session     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    duration_s  REAL,
    bytes       INTEGER,
    recovered   INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    PRIMARY KEY (channel_id, session)
);
";

/// Where a recording is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// Its stream is live.
    Recording,
    /// Ended; files still wait in the spool.
    Uploading,
    /// Everything is in the store.
    Complete,
}

impl RecordingState {
    fn name(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Uploading => "uploading",
            RecordingState::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "complete" => RecordingState::Complete,
            "uploading" => RecordingState::Uploading,
            _ => RecordingState::Recording,
        }
    }
}

/// One recording as indexed. Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingRow {
    pub channel_id: String,
    pub session: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_s: Option<f64>,
    pub bytes: Option<u64>,
    /// Completed at a node's start after that node stopped mid-stream.
    pub recovered: bool,
    pub state: RecordingState,
}

/// Recordings listed per channel, newest first.
pub const LISTED_RECORDINGS: usize = 500;

impl Registry {
    /// Adds a recording or brings its row up to date.
    pub fn put_recording(&self, r: &RecordingRow) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO recordings
                    (channel_id, session, started_at, ended_at, duration_s, bytes, recovered, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (channel_id, session) DO UPDATE SET
                    ended_at = excluded.ended_at, duration_s = excluded.duration_s,
                    bytes = excluded.bytes, recovered = excluded.recovered,
                    state = CASE WHEN recordings.state = 'complete' THEN 'complete'
                                 ELSE excluded.state END",
                params![
                    r.channel_id,
                    r.session,
                    r.started_at,
                    r.ended_at,
                    r.duration_s,
                    r.bytes.map(|b| b as i64),
                    r.recovered,
                    r.state.name()
                ],
            )
            .map(drop)
        })
    }

    pub fn set_recording_state(
        &self,
        channel_id: &str,
        session: &str,
        state: RecordingState,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE recordings SET state = ?3 WHERE channel_id = ?1 AND session = ?2",
                params![channel_id, session, state.name()],
            )
            .map(drop)
        })
    }

    /// The channel's recordings, newest first.
    pub fn recordings(&self, channel_id: &str) -> Result<Vec<RecordingRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT channel_id, session, started_at, ended_at, duration_s, bytes, recovered, state
                 FROM recordings WHERE channel_id = ?1 ORDER BY session DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![channel_id, LISTED_RECORDINGS as i64], |r| {
                Ok(RecordingRow {
                    channel_id: r.get(0)?,
                    session: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    duration_s: r.get(4)?,
                    bytes: r.get::<_, Option<i64>>(5)?.map(|b| b.max(0) as u64),
                    recovered: r.get(6)?,
                    state: RecordingState::parse(&r.get::<_, String>(7)?),
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_moves_from_live_to_complete_and_never_back() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let mut row = RecordingRow {
            channel_id: "c1".into(),
            session: "20261207T180000Z".into(),
            started_at: "2026-12-07T18:00:00.000Z".into(),
            ended_at: None,
            duration_s: None,
            bytes: None,
            recovered: false,
            state: RecordingState::Recording,
        };
        reg.put_recording(&row).unwrap();
        let later = RecordingRow {
            session: "20261207T190000Z".into(),
            ..row.clone()
        };
        reg.put_recording(&later).unwrap();
        row.ended_at = Some("2026-12-07T18:10:00.000Z".into());
        row.duration_s = Some(600.0);
        row.bytes = Some(1234);
        row.state = RecordingState::Uploading;
        reg.put_recording(&row).unwrap();
        reg.set_recording_state("c1", &row.session, RecordingState::Complete)
            .unwrap();
        // A late index of the same end does not take it back to uploading.
        reg.put_recording(&row).unwrap();
        let listed = reg.recordings("c1").unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].session, "20261207T190000Z", "newest first");
        assert_eq!(listed[1].state, RecordingState::Complete);
        assert_eq!(listed[1].bytes, Some(1234));
        assert!(reg.recordings("c2").unwrap().is_empty());
    }
}
