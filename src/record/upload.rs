//! The uploader: one task that moves spooled recording files to object
//! storage, oldest first, and keeps the registry's recordings index up to
//! date. Owns the order in which a recording becomes visible in the store:
//! media first, then its playlists, then `recording-ended.json`, so a
//! playlist in the store never names a segment that is not. A failing store
//! is retried with backoff; the spool holds what waits.

use super::Recordings;
use super::session::{ENDED, MASTER, MEDIA, STARTED, Summary};
use super::spool::{self, STATE};
use crate::metrics::METRICS;
use crate::registry::{RecordingRow, RecordingState, Registry};
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Uploads at once: enough to fill a link to a remote store, few enough that
/// the spool drains oldest first.
const PARALLEL: usize = 4;
/// The first retry's wait; it doubles up to `upload_retry_max_s`.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// A look at the spool even without a wake-up (files of a previous run).
const RESCAN: Duration = Duration::from_secs(5);

/// How long an empty recording folder stays in the spool.
const EMPTY_KEPT: Duration = Duration::from_secs(60);

/// One recording's files in the spool.
#[derive(Debug, Default)]
struct Session {
    channel: String,
    name: String,
    dir: PathBuf,
    /// Everything but the playlists and the end event, oldest first.
    media: Vec<PathBuf>,
    /// The VOD playlists, media ones first, then the multivariant one.
    playlists: Vec<PathBuf>,
    ended: bool,
}

/// What waits in the spool.
#[derive(Debug, Default)]
struct Plan {
    sessions: Vec<Session>,
    /// Files beside the sessions (a channel's `latest.jpg`).
    loose: Vec<PathBuf>,
}

/// How far the registry knows a recording.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Known {
    Started,
    Ended,
}

/// Runs until the node stops.
pub(crate) async fn run(rec: Arc<Recordings>, registry: Arc<Registry>) {
    let mut failures: u32 = 0;
    let mut known: HashMap<(String, String), Known> = HashMap::new();
    let retry_max = Duration::from_secs_f64(rec.cfg.upload_retry_max_s.max(0.1));
    loop {
        let root = rec.spool.root().to_owned();
        let plan = tokio::task::spawn_blocking(move || scan(&root))
            .await
            .ok()
            .and_then(|r| {
                r.map_err(|e| tracing::warn!(error = %e, "cannot read the recording spool"))
                    .ok()
            })
            .unwrap_or_default();
        let outcome = round(&rec, &registry, plan, &mut known).await;
        match outcome {
            Ok(()) => failures = 0,
            Err(()) => {
                failures = failures.saturating_add(1);
                let wait = FIRST_RETRY
                    .saturating_mul(1 << failures.min(16))
                    .min(retry_max);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        // A file written since the scan has left a wake-up behind
        // (`notify_one` keeps one), so this returns at once for it.
        let _ = tokio::time::timeout(RESCAN, rec.spool.ready.notified()).await;
    }
}

/// Uploads what `plan` lists; Err after a failure (the rest waits).
async fn round(
    rec: &Arc<Recordings>,
    registry: &Arc<Registry>,
    plan: Plan,
    known: &mut HashMap<(String, String), Known>,
) -> Result<(), ()> {
    put_all(rec, plan.loose).await?;
    for mut s in plan.sessions {
        index(registry, &s, known).await;
        put_all(rec, std::mem::take(&mut s.media)).await?;
        if !s.ended {
            continue;
        }
        put_all(rec, std::mem::take(&mut s.playlists)).await?;
        put_all(rec, vec![s.dir.join(ENDED)]).await?;
        complete(registry, &s).await;
        known.remove(&(s.channel.clone(), s.name.clone()));
        let dir = s.dir.clone();
        let _ = tokio::task::spawn_blocking(move || clear(&dir)).await;
    }
    Ok(())
}

/// Uploads `files`, [`PARALLEL`] at once, each deleted from the spool once
/// stored.
async fn put_all(rec: &Arc<Recordings>, files: Vec<PathBuf>) -> Result<(), ()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = false;
    for f in files {
        while tasks.len() >= PARALLEL {
            if let Some(Ok(Err(()))) = tasks.join_next().await {
                failed = true;
            }
        }
        if failed {
            break;
        }
        let rec = rec.clone();
        tasks.spawn(async move { put(&rec, &f).await });
    }
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(Ok(()))) {
            failed = true;
        }
    }
    if failed { Err(()) } else { Ok(()) }
}

async fn put(rec: &Recordings, file: &Path) -> Result<(), ()> {
    let Ok(rel) = file.strip_prefix(rec.spool.root()) else {
        return Ok(());
    };
    let key = object_store::path::Path::from(rel.to_string_lossy().as_ref());
    // Which version is sent: a file written again meanwhile (a channel's
    // latest thumbnail) stays for the next round.
    let version = stamp(file).await;
    let bytes = match tokio::fs::read(file).await {
        Ok(b) => b,
        // Taken meanwhile (a thumbnail replaced): nothing to send.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            tracing::warn!(file = %rel.display(), error = %e, "cannot read a spooled recording file");
            return Err(());
        }
    };
    let len = bytes.len() as u64;
    let started = Instant::now();
    match rec.store.objects.put(&key, PutPayload::from(bytes)).await {
        Ok(_) => {
            METRICS
                .recording_upload_seconds
                .observe(started.elapsed().as_secs_f64());
            METRICS.recording_uploaded_bytes.inc_by(len);
            if rel.extension().is_some_and(|e| e == "m4s") {
                METRICS.recording_uploaded_segments.inc();
            }
            if version.is_some() && stamp(file).await == version {
                let spool = rec.spool.clone();
                let file = file.to_owned();
                let _ = tokio::task::spawn_blocking(move || spool.remove(&file)).await;
            }
            Ok(())
        }
        Err(e) => {
            METRICS.recording_upload_errors.inc();
            tracing::warn!(file = %rel.display(), error = %e, "recording upload failed; retrying");
            Err(())
        }
    }
}

/// Tells the registry about a recording it has not seen at this stage.
async fn index(
    registry: &Arc<Registry>,
    s: &Session,
    known: &mut HashMap<(String, String), Known>,
) {
    let key = (s.channel.clone(), s.name.clone());
    let stage = if s.ended {
        Known::Ended
    } else {
        Known::Started
    };
    if known.get(&key).is_some_and(|k| *k >= stage) {
        return;
    }
    let file = s.dir.join(if s.ended { ENDED } else { STARTED });
    let Some(summary) = read_summary(&file).await else {
        return;
    };
    let row = row(
        &summary,
        if s.ended {
            RecordingState::Uploading
        } else {
            RecordingState::Recording
        },
    );
    let reg = registry.clone();
    match tokio::task::spawn_blocking(move || reg.put_recording(&row)).await {
        Ok(Ok(())) => {
            known.insert(key, stage);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot index a recording"),
        Err(_) => {}
    }
}

async fn complete(registry: &Arc<Registry>, s: &Session) {
    // The end event is in the store now; the spool copy may be gone, so it
    // was read before: read what the registry was told and mark it done.
    let reg = registry.clone();
    let (channel, name) = (s.channel.clone(), s.name.clone());
    let _ = tokio::task::spawn_blocking(move || {
        reg.set_recording_state(&channel, &name, RecordingState::Complete)
    })
    .await;
}

/// A file's length and modification time: what tells a rewrite apart.
async fn stamp(file: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = tokio::fs::metadata(file).await.ok()?;
    Some((m.len(), m.modified().ok()?))
}

async fn read_summary(file: &Path) -> Option<Summary> {
    let bytes = tokio::fs::read(file).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn row(s: &Summary, state: RecordingState) -> RecordingRow {
    RecordingRow {
        channel_id: s.channel.clone(),
        session: s.session.clone(),
        started_at: s.started_at.clone(),
        ended_at: s.ended_at.clone(),
        duration_s: s.ended_at.as_ref().map(|_| s.duration_s),
        bytes: s.ended_at.as_ref().map(|_| s.bytes),
        recovered: s.recovered,
        state,
    }
}

/// Reads the spool: `<channel>/<session>/...` and `<channel>/<file>`.
fn scan(root: &Path) -> std::io::Result<Plan> {
    let mut plan = Plan::default();
    for channel in subdirs(root)? {
        let channel_id = name_of(&channel);
        for e in std::fs::read_dir(&channel)? {
            let path = e?.path();
            if path.is_file() {
                if spool::uploadable(&path) {
                    plan.loose.push(path);
                }
                continue;
            }
            let mut s = Session {
                channel: channel_id.clone(),
                name: name_of(&path),
                ended: path.join(ENDED).is_file(),
                dir: path.clone(),
                ..Session::default()
            };
            let files = spool::walk(&path)?;
            if files.is_empty() {
                // Emptied by an earlier round, then written to by a late
                // thumbnail: gone once nothing has touched it for a while
                // (a fresh one may be a recording about to write).
                let idle = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > EMPTY_KEPT);
                if idle {
                    clear(&path);
                }
                continue;
            }
            let mut media: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
            for f in files {
                if !spool::uploadable(&f) {
                    continue;
                }
                let rel = f.strip_prefix(&path).unwrap_or(&f);
                let depth = rel.components().count();
                let file = name_of(&f);
                if depth == 1 && file == ENDED {
                    continue;
                }
                if (depth == 1 && file == MASTER) || (depth == 2 && file == MEDIA) {
                    s.playlists.push(f);
                    continue;
                }
                let at = std::fs::metadata(&f)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                media.push((at, f));
            }
            media.sort();
            s.media = media.into_iter().map(|(_, f)| f).collect();
            // Media playlists before the multivariant one that names them.
            s.playlists.sort_by_key(|p| name_of(p) == MASTER);
            plan.sessions.push(s);
        }
    }
    // Oldest recordings first: their names are their UTC start.
    plan.sessions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plan)
}

/// Removes a stored recording's folder: its working state and any folder
/// left empty.
fn clear(dir: &Path) {
    if let Ok(files) = spool::walk(dir) {
        for f in files {
            if name_of(&f).ends_with(STATE) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    let mut dirs = vec![dir.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(sub) = subdirs(&dirs[i]) {
            dirs.extend(sub);
        }
        i += 1;
    }
    // Deepest first; a folder something was written to meanwhile stays.
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.path());
        }
    }
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
