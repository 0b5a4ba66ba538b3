//! Where recordings are kept: the `object_store` the config names (the local
//! file system by default, any S3-compatible store by URL) and the URL a
//! player fetches a stored recording from. Never used on a live path.

use super::{RecordError, RecordingConfig};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A configured store.
#[derive(Debug)]
pub(crate) struct Store {
    pub objects: Arc<dyn ObjectStore>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Files under this directory; the node serves them.
    Local(PathBuf),
    /// An S3 bucket; `prefix` ("" or "a/b") comes before every key, and
    /// players fetch from `base` (ends without a slash).
    S3 { base: String, prefix: String },
}

/// Opens the store `cfg` names (`data_dir/recordings` when it names none).
pub(crate) fn open(cfg: &RecordingConfig, data_dir: &Path) -> Result<Store, RecordError> {
    let invalid = |why: String| RecordError::Config(format!("recording.store: {why}"));
    let store = cfg.store.trim();
    if store.is_empty() || store.starts_with("file://") {
        let dir = match store.strip_prefix("file://") {
            Some(p) if p.starts_with('/') => PathBuf::from(p),
            Some(_) => return Err(invalid("a file:// URL needs an absolute path".into())),
            None => data_dir.join("recordings"),
        };
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Dir {
            path: dir.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        return Ok(Store {
            objects: Arc::new(fs),
            kind: Kind::Local(dir),
        });
    }
    let Some(rest) = store.strip_prefix("s3://") else {
        return Err(invalid(
            "expected \"\" (the data dir), file:///DIR or s3://BUCKET[/PREFIX]".into(),
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/').to_string();
    if bucket.is_empty() {
        return Err(invalid("s3:// needs a bucket name".into()));
    }
    // The AWS_* environment first, so that the file's own fields win.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&cfg.s3_region)
        // The uploader retries with its own backoff and must learn soon
        // that the store is down: a few quick tries per request only.
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        })
        .with_client_options(content_types(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60)),
        ));
    if !cfg.s3_endpoint.is_empty() {
        b = b
            .with_endpoint(cfg.s3_endpoint.trim_end_matches('/'))
            .with_allow_http(cfg.s3_endpoint.starts_with("http://"));
    }
    if !cfg.s3_access_key_id.is_empty() {
        b = b
            .with_access_key_id(&cfg.s3_access_key_id)
            .with_secret_access_key(&cfg.s3_secret_access_key);
    }
    // The builder's error may quote the configuration; it never holds the
    // secret key, which it only signs with.
    let s3 = b.build().map_err(|e| invalid(e.to_string()))?;
    let base = if !cfg.public_base_url.is_empty() {
        cfg.public_base_url.trim_end_matches('/').to_string()
    } else if !cfg.s3_endpoint.is_empty() {
        format!("{}/{bucket}", cfg.s3_endpoint.trim_end_matches('/'))
    } else {
        format!("https://{bucket}.s3.{}.amazonaws.com", cfg.s3_region)
    };
    let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix.as_str()))
    };
    Ok(Store {
        objects,
        kind: Kind::S3 { base, prefix },
    })
}

/// What players and CDNs are told each stored file is: S3 serves back the
/// type it was given (none unless one is sent), and Safari plays HLS only
/// from the right one.
fn content_types(o: ClientOptions) -> ClientOptions {
    [
        ("m3u8", "application/vnd.apple.mpegurl"),
        ("m4s", "video/iso.segment"),
        ("mp4", "video/mp4"),
        ("jpg", "image/jpeg"),
        ("json", "application/json"),
    ]
    .into_iter()
    .fold(o, |o, (ext, mime)| {
        o.with_content_type_for_suffix(ext, mime)
    })
}

impl Store {
    /// The URL of a stored recording's multivariant playlist; `http_base`
    /// is the node's own player URL, for the local store.
    pub fn playback_url(&self, http_base: &str, channel: &str, session: &str) -> String {
        match &self.kind {
            Kind::Local(_) => format!("{http_base}/recordings/{channel}/{session}/master.m3u8"),
            Kind::S3 { base, prefix } if prefix.is_empty() => {
                format!("{base}/{channel}/{session}/master.m3u8")
            }
            Kind::S3 { base, prefix } => {
                format!("{base}/{prefix}/{channel}/{session}/master.m3u8")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_where_players_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let local = open(&RecordingConfig::default(), dir.path()).unwrap();
        assert_eq!(local.kind, Kind::Local(dir.path().join("recordings")));
        assert_eq!(
            local.playback_url("http://edge:8080", "c1", "20261207T183005Z"),
            "http://edge:8080/recordings/c1/20261207T183005Z/master.m3u8"
        );
        let s3 = RecordingConfig {
            store: "s3://vod/live/rec/".into(),
            s3_endpoint: "http://127.0.0.1:9000/".into(),
            s3_access_key_id: "ak".into(),
            s3_secret_access_key: "sk".into(),
            ..RecordingConfig::default()
        };
        let s = open(&s3, dir.path()).unwrap();
        assert_eq!(
            s.playback_url("http://edge:8080", "c1", "S"),
            "http://127.0.0.1:9000/vod/live/rec/c1/S/master.m3u8"
        );
        let cdn = RecordingConfig {
            public_base_url: "https://cdn.example/".into(),
            ..s3
        };
        let s = open(&cdn, dir.path()).unwrap();
        assert_eq!(
            s.playback_url("", "c1", "S"),
            "https://cdn.example/live/rec/c1/S/master.m3u8"
        );
        for bad in ["s3://", "file://relative", "gs://x"] {
            let cfg = RecordingConfig {
                store: bad.into(),
                ..RecordingConfig::default()
            };
            assert!(open(&cfg, dir.path()).is_err(), "{bad}");
        }
    }
}
