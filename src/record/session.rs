//! One recorded stream: the packager's updates turned into spool files as
//! each segment completes, the playlists so far kept beside them for a
//! crash, and the finished VOD (playlists, `recording-ended.json`) at the
//! stream's end. Owns the recording's layout in the store; never waits on
//! anything but the local spool.

use super::ThumbnailJob as Job;
use super::spool::{STATE, Spool};
use crate::metrics::METRICS;
use crate::package::PackageConfig;
use crate::package::Update;
use crate::package::VodSummary;
use crate::package::packager::SOURCE;
use crate::package::playlist::program_date_time;
use crate::package::vod::VodAssembler;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The recording's working summary (beside the playlists so far) and the
/// final `recording-ended.json`'s name.
pub(crate) const SUMMARY: &str = "recording.json";
pub(crate) const STARTED: &str = "recording-started.json";
pub(crate) const ENDED: &str = "recording-ended.json";
pub(crate) const MASTER: &str = "master.m3u8";
pub(crate) const MEDIA: &str = "index.m3u8";

/// What `recording-started.json`, `recording-ended.json` and the working
/// summary say.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Summary {
    pub event: String,
    pub channel: String,
    pub session: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The longest rendition's, seconds.
    pub duration_s: f64,
    /// Every rendition's init and segment bytes.
    pub bytes: u64,
    #[serde(default)]
    pub recovered: bool,
    pub renditions: Vec<RenditionSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct RenditionSummary {
    pub name: String,
    pub segments: usize,
    pub bytes: u64,
    pub duration_s: f64,
}

impl Summary {
    fn of(channel: &str, session: &str, started_at: SystemTime, out: &VodSummary) -> Self {
        let renditions: Vec<RenditionSummary> = out
            .renditions
            .iter()
            .map(|r| RenditionSummary {
                name: r.name.clone(),
                segments: r.segments,
                bytes: r.bytes,
                duration_s: r.duration.as_secs_f64(),
            })
            .collect();
        Summary {
            event: "recording".into(),
            channel: channel.to_string(),
            session: session.to_string(),
            started_at: program_date_time(started_at),
            ended_at: None,
            duration_s: renditions.iter().map(|r| r.duration_s).fold(0.0, f64::max),
            bytes: renditions.iter().map(|r| r.bytes).sum(),
            recovered: false,
            renditions,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A session's folder name: its UTC start in ISO 8601 basic form
/// (`20261207T183005Z`), sortable and safe in a URL, a key and a path.
pub(crate) fn session_name(start: SystemTime) -> String {
    let t = program_date_time(start);
    // `2026-12-07T18:30:05.123Z`: drop separators and the milliseconds.
    let whole = t.split('.').next().unwrap_or(&t);
    format!("{}Z", whole.replace(['-', ':'], ""))
}

/// One stream being recorded.
pub(crate) struct Recording {
    channel: String,
    session: String,
    started_at: SystemTime,
    asm: VodAssembler,
    /// The source's latest init segment, for thumbnails.
    source_init: Option<Bytes>,
    /// `None`: no thumbnails.
    thumbnail_every: Option<Duration>,
    next_thumbnail: SystemTime,
    /// Segments per rendition already in its working playlist.
    written: HashMap<Arc<str>, usize>,
    /// A segment was left out for want of spool room (warned once).
    dropped: bool,
    ended: bool,
}

impl Recording {
    /// Starts recording `channel`'s stream at `now`: writes
    /// `recording-started.json`.
    pub fn start(
        spool: &Spool,
        channel: &str,
        package: &PackageConfig,
        thumbnail_every: Option<Duration>,
        now: SystemTime,
    ) -> Self {
        let r = Recording {
            channel: channel.to_string(),
            session: session_name(now),
            started_at: now,
            asm: VodAssembler::new(package),
            source_init: None,
            thumbnail_every,
            next_thumbnail: now,
            written: HashMap::new(),
            dropped: false,
            ended: false,
        };
        let mut started = Summary::of(channel, &r.session, now, &r.asm.summary());
        started.event = "recording-started".into();
        r.put(spool, &format!("{}/{STARTED}", r.dir()), &started.to_json());
        METRICS.recordings_active.inc();
        tracing::info!(channel, session = %r.session, "recording started");
        r
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// `<channel>/<session>/`, the folder of everything this recording writes.
    fn dir(&self) -> String {
        format!("{}/{}", self.channel, self.session)
    }

    /// Spools the files `updates` complete; after a completed segment, the
    /// playlists so far; at [`Update::End`], the finished recording. Returns
    /// the thumbnail due, if any.
    pub fn apply(&mut self, spool: &Spool, updates: Vec<Update>, now: SystemTime) -> Option<Job> {
        let ends = updates.iter().any(|u| matches!(u, Update::End));
        let mut segments = 0;
        let mut thumbnail = None;
        for f in self.asm.apply(updates) {
            let rel = format!("{}/{}/{}", self.dir(), f.rendition, f.name);
            if !f.segment {
                if &*f.rendition == SOURCE {
                    self.source_init = Some(f.bytes.clone());
                }
                self.put(spool, &rel, &f.bytes);
                continue;
            }
            segments += 1;
            if !spool.has_room(f.bytes.len()) {
                METRICS.recording_dropped_segments.inc();
                if !self.dropped {
                    tracing::warn!(channel = %self.channel, session = %self.session,
                        "recording spool full: segments are left out (listed as gaps) until the uploader catches up");
                    self.dropped = true;
                }
                self.asm.lose_segment(&f.rendition, &f.name);
                continue;
            }
            if !self.put(spool, &rel, &f.bytes) {
                self.asm.lose_segment(&f.rendition, &f.name);
                continue;
            }
            let due = self.thumbnail_every.filter(|_| now >= self.next_thumbnail);
            if let (Some(every), Some(init), true) =
                (due, self.source_init.as_ref(), &*f.rendition == SOURCE)
            {
                self.next_thumbnail = now.checked_add(every).unwrap_or(now);
                let at = now.duration_since(self.started_at).unwrap_or_default();
                thumbnail = Some(Job {
                    init: init.clone(),
                    segment: f.bytes.clone(),
                    files: vec![
                        format!("{}/thumbnails/{:06}.jpg", self.dir(), at.as_secs()),
                        format!("{}/latest.jpg", self.channel),
                    ],
                });
            }
        }
        if ends {
            self.finish(spool, now, false);
        } else if segments > 0 {
            self.save_state(spool);
        }
        thumbnail
    }

    /// The playlists so far and the summary, for a node that starts again
    /// after a crash (see `recover`): the media playlists' new lines are
    /// appended, so a long recording costs no more per segment than a short
    /// one; the multivariant playlist and the summary are small.
    fn save_state(&mut self, spool: &Spool) {
        for (rendition, lines) in self.asm.new_lines(&mut self.written) {
            let rel = format!("{}/{rendition}/{MEDIA}{STATE}", self.dir());
            if let Err(e) = spool.append(&rel, lines.as_bytes()) {
                tracing::error!(channel = %self.channel, session = %self.session, file = rel,
                    error = %e, "cannot write to the recording spool");
            }
        }
        let dir = self.dir();
        self.put(
            spool,
            &format!("{dir}/{MASTER}{STATE}"),
            self.asm.master().as_bytes(),
        );
        let summary = Summary::of(
            &self.channel,
            &self.session,
            self.started_at,
            &self.asm.summary(),
        );
        self.put(
            spool,
            &format!("{dir}/{SUMMARY}{STATE}"),
            &summary.to_json(),
        );
    }

    /// Writes the finished recording: playlists, then `recording-ended.json`
    /// (the uploader's sign that the recording is complete).
    pub fn finish(&mut self, spool: &Spool, now: SystemTime, failed: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        METRICS.recordings_active.dec();
        let out = self.asm.finish();
        for (rendition, text) in &out.media {
            self.put(
                spool,
                &format!("{}/{rendition}/{MEDIA}", self.dir()),
                text.as_bytes(),
            );
        }
        if !out.media.is_empty() {
            self.put(
                spool,
                &format!("{}/{MASTER}", self.dir()),
                out.master.as_bytes(),
            );
        }
        let mut ended = Summary::of(&self.channel, &self.session, self.started_at, &out.summary);
        ended.event = "recording-ended".into();
        ended.ended_at = Some(program_date_time(now));
        ended.recovered = failed;
        self.put(spool, &format!("{}/{ENDED}", self.dir()), &ended.to_json());
        for (rendition, _) in &out.media {
            let _ = std::fs::remove_file(
                spool
                    .root()
                    .join(format!("{}/{rendition}/{MEDIA}{STATE}", self.dir())),
            );
        }
        tracing::info!(channel = %self.channel, session = %self.session,
            duration_s = ended.duration_s, bytes = ended.bytes, "recording ended");
    }

    /// Whether the file reached the spool.
    fn put(&self, spool: &Spool, rel: &str, bytes: &[u8]) -> bool {
        match spool.write(rel, bytes) {
            Ok(()) => true,
            Err(e) => {
                // A full or failing local disk: the live stream goes on, the
                // recording has a hole; the uploader never sees a torn file.
                METRICS.recording_dropped_segments.inc();
                tracing::error!(channel = %self.channel, session = %self.session, file = rel,
                    error = %e, "cannot write to the recording spool");
                false
            }
        }
    }
}
