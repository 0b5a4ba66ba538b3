//! Recording live streams to object storage: every rendition of a recorded
//! channel's stream as HLS VOD, with thumbnails and the stream's timed
//! metadata, crash-safe.
//!
//! A channel's thread hands each batch of packager updates to its
//! [`Recorder`], which writes completed files into a bounded spool on local
//! disk ([`spool`]); one task ([`upload`]) moves them to the store and keeps
//! the registry's recordings index. The live path never waits for object
//! storage: a full spool costs the recording segments (counted, listed as
//! gaps), never the live stream. A node that starts after a crash completes
//! what its last run left in the spool ([`recover`]).
//!
//! Layout in the store, below the configured prefix:
//! `<channel>/<session>/{master.m3u8, recording-started.json,
//! recording-ended.json, <rendition>/{index.m3u8, init, segments},
//! thumbnails/<seconds>.jpg}` and `<channel>/latest.jpg`, where `<session>`
//! is the stream's UTC start (`20261207T183005Z`).

mod recover;
mod session;
mod spool;
mod store;
mod thumbnail;
mod upload;

use crate::package::{PackageConfig, Update};
use crate::registry::Registry;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;
use session::Recording;
use spool::Spool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use store::Store;

/// `[recording]` in the node's config.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Whether channels that do not say record.
    pub enabled: bool,
    /// `""`: files under `<data_dir>/recordings` (served by the node);
    /// `file:///DIR`; `s3://BUCKET[/PREFIX]`.
    pub store: String,
    /// An S3-compatible store's endpoint (`http://minio:9000`). Empty: AWS.
    pub s3_endpoint: String,
    pub s3_region: String,
    /// Empty: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the
    /// environment.
    #[serde(serialize_with = "crate::config::redacted")]
    pub s3_access_key_id: String,
    /// A secret: never logged or shown.
    #[serde(serialize_with = "crate::config::redacted")]
    pub s3_secret_access_key: String,
    /// Where players fetch an S3 store's recordings (a CDN or the bucket's
    /// web address), standing for the bucket's root. Empty: the endpoint.
    pub public_base_url: String,
    /// Bytes the spool may hold waiting for upload; beyond, new segments
    /// are left out of recordings (and counted).
    pub spool_max_bytes: u64,
    /// A JPEG of the source every this many seconds (0: none).
    pub thumbnail_interval_s: f64,
    /// The uploader retries a failing store after 0.25 s, doubling up to
    /// this.
    pub upload_retry_max_s: f64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: false,
            store: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            public_base_url: String::new(),
            spool_max_bytes: 4 << 30,
            thumbnail_interval_s: 60.0,
            upload_retry_max_s: 30.0,
        }
    }
}

impl std::fmt::Debug for RecordingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingConfig")
            .field("enabled", &self.enabled)
            .field("store", &self.store)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &"<secret>")
            .field("public_base_url", &self.public_base_url)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("thumbnail_interval_s", &self.thumbnail_interval_s)
            .field("upload_retry_max_s", &self.upload_retry_max_s)
            .finish()
    }
}

/// Why recording could not be set up. Never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("{0}")]
    Config(String),
    #[error("recording folder {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Widest thumbnail, pixels.
const THUMBNAIL_WIDTH: u32 = 640;
/// Thumbnails waiting for the thumbnailer; one more is skipped.
const THUMBNAIL_QUEUE: usize = 4;

/// A JPEG to make from a source segment and write at `files` (spool paths).
pub(crate) struct ThumbnailJob {
    pub init: Bytes,
    pub segment: Bytes,
    pub files: Vec<String>,
}

/// The node's recording: its spool, store and thumbnailer.
pub struct Recordings {
    cfg: RecordingConfig,
    package: PackageConfig,
    spool: Arc<Spool>,
    store: Store,
    thumbnails: Sender<ThumbnailJob>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("spool", &self.spool.root())
            .field("store", &self.store.kind)
            .finish()
    }
}

impl Recordings {
    /// Opens the spool (`<data_dir>/spool`) and the store, and completes the
    /// recordings the last run left unfinished. Call once, as the node
    /// starts, before any channel records.
    pub fn open(
        cfg: &RecordingConfig,
        package: &PackageConfig,
        data_dir: &Path,
    ) -> Result<Arc<Self>, RecordError> {
        if !(cfg.thumbnail_interval_s >= 0.0 && cfg.upload_retry_max_s > 0.0) {
            return Err(RecordError::Config(
                "recording.thumbnail_interval_s must be >= 0 and upload_retry_max_s > 0".into(),
            ));
        }
        let store = store::open(cfg, data_dir)?;
        let root = data_dir.join("spool");
        let dir_error = |source| RecordError::Dir {
            path: root.clone(),
            source,
        };
        let spool = Arc::new(Spool::open(&root, cfg.spool_max_bytes).map_err(dir_error)?);
        match recover::recover(&spool) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                recordings = n,
                "completed recordings the last run left unfinished"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot complete the last run's recordings"),
        }
        let (tx, rx) = crossbeam_channel::bounded(THUMBNAIL_QUEUE);
        let worker = spool.clone();
        std::thread::Builder::new()
            .name("thumbnails".into())
            .spawn(move || thumbnails(&worker, rx))
            .map_err(dir_error)?;
        Ok(Arc::new(Recordings {
            cfg: cfg.clone(),
            package: package.clone(),
            spool,
            store,
            thumbnails: tx,
        }))
    }

    /// The uploader, to run on the node's tokio runtime until it stops.
    pub fn uploader(
        self: &Arc<Self>,
        registry: Arc<Registry>,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        upload::run(self.clone(), registry)
    }

    /// Whether a channel that does not say records.
    pub fn by_default(&self) -> bool {
        self.cfg.enabled
    }

    /// A recorder for one live stream of `channel`.
    pub fn recorder(self: &Arc<Self>, channel: &str) -> Recorder {
        Recorder {
            rec: self.clone(),
            channel: channel.to_string(),
            current: None,
        }
    }

    /// The folder the node serves recordings from (`/recordings/...`), when
    /// the store is the local file system.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.store.kind {
            store::Kind::Local(dir) => Some(dir),
            store::Kind::S3 { .. } => None,
        }
    }

    /// Where a player fetches a recording's multivariant playlist.
    pub fn playback_url(&self, http_base: &str, channel: &str, session: &str) -> String {
        self.store.playback_url(http_base, channel, session)
    }
}

/// Records one channel's streams, driven by its thread.
pub struct Recorder {
    rec: Arc<Recordings>,
    channel: String,
    current: Option<Recording>,
}

impl Recorder {
    /// One batch of the packager's updates, as the live store gets it.
    pub(crate) fn apply(&mut self, updates: Vec<Update>, now: SystemTime) {
        let starts = updates.iter().any(|u| {
            matches!(
                u,
                Update::StreamStart {
                    new_playlist: true,
                    ..
                }
            )
        });
        if starts && self.current.as_ref().is_none_or(|r| r.ended()) {
            let every = Duration::try_from_secs_f64(self.rec.cfg.thumbnail_interval_s)
                .ok()
                .filter(|d| !d.is_zero());
            self.current = Some(Recording::start(
                &self.rec.spool,
                &self.channel,
                &self.rec.package,
                every,
                now,
            ));
        }
        let Some(r) = self.current.as_mut().filter(|r| !r.ended()) else {
            return;
        };
        if let Some(job) = r.apply(&self.rec.spool, updates, now) {
            match self.rec.thumbnails.try_send(job) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(channel = %self.channel, "thumbnailer busy; skipping one")
                }
            }
        }
    }
}

impl Drop for Recorder {
    /// A channel whose thread ends without the stream's end (a panic)
    /// still leaves a complete recording.
    fn drop(&mut self) {
        if let Some(r) = self.current.as_mut() {
            r.finish(&self.rec.spool, SystemTime::now(), true);
        }
    }
}

/// The thumbnailer's thread: decodes one source picture per job, off every
/// live path.
fn thumbnails(spool: &Spool, jobs: Receiver<ThumbnailJob>) {
    for job in jobs {
        match thumbnail::jpeg(&job.init, &job.segment, THUMBNAIL_WIDTH) {
            Ok(jpeg) => {
                for f in &job.files {
                    if let Err(e) = spool.write(f, &jpeg) {
                        tracing::warn!(file = %f, error = %e, "cannot write a thumbnail");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a thumbnail"),
        }
    }
}

#[cfg(test)]
mod tests;
