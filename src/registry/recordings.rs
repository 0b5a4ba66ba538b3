//! The recordings index: one row per recorded stream (channel, session
//! folder, times, size, state), written by the uploader from the events a
//! recording leaves in the spool and read by the recordings API. The
//! recordings themselves live in object storage.

use super::db::{DbError, Mode, Row, args};
use super::{Registry, Result};
use serde::Serialize;

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
        self.call("put_recording", Mode::Write, |db| {
            db.exec(
                "INSERT INTO recordings
                    (channel_id, session, started_at, ended_at, duration_s, bytes, recovered, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (channel_id, session) DO UPDATE SET
                    ended_at = excluded.ended_at, duration_s = excluded.duration_s,
                    bytes = excluded.bytes, recovered = excluded.recovered,
                    state = CASE WHEN recordings.state = 'complete' THEN 'complete'
                                 ELSE excluded.state END",
                args![
                    &r.channel_id,
                    &r.session,
                    &r.started_at,
                    r.ended_at.as_deref(),
                    r.duration_s,
                    r.bytes.map(|b| b.min(i64::MAX as u64) as i64),
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
        self.call("set_recording_state", Mode::Write, |db| {
            db.exec(
                "UPDATE recordings SET state = $3 WHERE channel_id = $1 AND session = $2",
                args![channel_id, session, state.name()],
            )
            .map(drop)
        })
    }

    /// The channel's recordings, newest first.
    pub fn recordings(&self, channel_id: &str) -> Result<Vec<RecordingRow>> {
        self.call("recordings", Mode::Read, |db| {
            db.query(
                "SELECT channel_id, session, started_at, ended_at, duration_s, bytes, recovered, state
                 FROM recordings WHERE channel_id = $1 ORDER BY session DESC LIMIT $2",
                args![channel_id, LISTED_RECORDINGS as i64],
            )?
            .iter()
            .map(recording)
            .collect()
        })
    }
}

fn recording(r: &Row) -> std::result::Result<RecordingRow, DbError> {
    Ok(RecordingRow {
        channel_id: r.text(0)?,
        session: r.text(1)?,
        started_at: r.text(2)?,
        ended_at: r.opt_text(3)?,
        duration_s: r.opt_real(4)?,
        bytes: r.opt_int(5)?.map(|b| b.max(0) as u64),
        recovered: r.bool(6)?,
        state: RecordingState::parse(&r.text(7)?),
    })
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
