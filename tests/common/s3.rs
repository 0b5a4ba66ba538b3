//! An S3-compatible server for the recording tests: `s3s-fs` (built by `make` into
//! `.tools/s3s-fs/`) serving a directory on a free loopback port, with a bucket `rec` and
//! fixed test credentials. Its objects are plain files, so unlike an in-memory server it
//! keeps them across [`S3Server::stop`] (SIGKILL) and [`S3Server::restart`]: a test can take
//! the store away from a node mid-upload and bring the same data back.
//!
//! The checks read the store back through the S3 API (the `object_store` crate the node
//! uses), never by peeking at the directory, so they see what a player or CDN would.
//! The child is killed on Drop; when a test panics, the tail of its log is printed.

use std::fs::{self, File};
use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{free_port, repo_root, tail};

const BUCKET: &str = "rec";
const ACCESS_KEY: &str = "rungs-test-key";
const SECRET_KEY: &str = "rungs-test-secret";
const REGION: &str = "us-east-1";

/// Path of the `s3s-fs` binary that `make` installs.
pub fn s3s_fs_bin() -> PathBuf {
    let bin = repo_root().join(".tools/s3s-fs/bin/s3s-fs");
    assert!(
        bin.exists(),
        "{} is missing: run `make .tools/s3s-fs/bin/s3s-fs` (or `make test`)",
        bin.display()
    );
    bin
}

pub struct S3Server {
    child: Option<Child>,
    /// The directory this server owns: its objects under `data/`, its logs beside it.
    root: PathBuf,
    port: u16,
    log_path: PathBuf,
    rt: tokio::runtime::Runtime,
    store: AmazonS3,
}

impl S3Server {
    /// Starts a server storing under `root` (created if missing; objects already there,
    /// from an earlier server on the same `root`, are served again) and waits until it
    /// answers an authenticated S3 request.
    pub fn start(root: &Path) -> S3Server {
        let data = root.join("data");
        // s3s-fs's CreateBucket is a mkdir of <data>/<bucket>, and object_store has no
        // bucket API: making the directory is the same bucket without a hand-signed request.
        fs::create_dir_all(data.join(BUCKET)).expect("create the bucket directory");
        // A free port can be taken by a parallel test between our probe and the server's
        // bind: the first tries move on to fresh ports, as the node's start does.
        for attempt in 0.. {
            let port = free_port();
            let mut s = S3Server {
                child: None,
                root: root.to_path_buf(),
                port,
                log_path: PathBuf::new(),
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime"),
                store: client(port),
            };
            if s.spawn_and_wait(attempt < 2) {
                return s;
            }
        }
        unreachable!("the third attempt panics rather than retry");
    }

    /// `http://127.0.0.1:PORT`, the `s3_endpoint` a node is given.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    pub fn access_key(&self) -> &'static str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        SECRET_KEY
    }

    /// The `[recording]` table pointing a node at this server, its objects under
    /// `prefix` ("" for the bucket's root). It is a whole table: put it last in the
    /// config and append any other `[recording]` keys (`enabled`, ...) right after it.
    pub fn toml(&self, prefix: &str) -> String {
        let store = match prefix.trim_matches('/') {
            "" => format!("s3://{BUCKET}"),
            p => format!("s3://{BUCKET}/{p}"),
        };
        format!(
            "[recording]\nstore = \"{store}\"\ns3_endpoint = \"{}\"\ns3_region = \"{REGION}\"\n\
             s3_access_key_id = \"{ACCESS_KEY}\"\ns3_secret_access_key = \"{SECRET_KEY}\"\n",
            self.endpoint()
        )
    }

    /// A client of this server (path-style, plain HTTP, few retries so that a stopped
    /// server shows as an error within a second or two rather than after object_store's
    /// default three minutes of retrying).
    pub fn store(&self) -> &AmazonS3 {
        &self.store
    }

    /// Runs `f` (typically calls on [`Self::store`]) to completion on this server's
    /// runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Every object under `prefix` (object_store's path semantics: whole segments, so
    /// "a/b" holds "a/b/c" but not "a/bc"), as (key, size), sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        // list_with_delimiter walked level by level rather than list(): the latter is a
        // futures Stream, and the tests do not depend on the futures crate.
        let mut out = Vec::new();
        let mut dirs = vec![ObjectPath::from(prefix)];
        while let Some(dir) = dirs.pop() {
            let prefix = (!dir.as_ref().is_empty()).then_some(&dir);
            let res = self
                .block_on(self.store.list_with_delimiter(prefix))
                .unwrap_or_else(|e| panic!("list {dir:?} on {}: {e}", self.endpoint()));
            out.extend(
                res.objects
                    .into_iter()
                    .map(|m| (m.location.to_string(), m.size)),
            );
            dirs.extend(res.common_prefixes);
        }
        out.sort();
        out
    }

    /// The whole object at `key`; panics if it is missing or the server fails.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(key)
            .unwrap_or_else(|e| panic!("get {key} from {}: {e}", self.endpoint()))
    }

    /// The whole object at `key`, or object_store's error (`NotFound` when missing).
    pub fn try_get(&self, key: &str) -> object_store::Result<Vec<u8>> {
        let path = ObjectPath::from(key);
        self.block_on(async {
            let r = self.store.get(&path).await?;
            Ok(r.bytes().await?.to_vec())
        })
    }

    /// Kills the server (SIGKILL: no chance to finish a request) and waits for it to exit.
    /// Its objects stay in the directory for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`Self::stop`], or
    /// killing it first if it still runs) and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        // The port is ours no more while the server is down; another process taking it
        // meanwhile is unlikely on loopback, and fails clearly rather than flakily.
        assert!(self.spawn_and_wait(false));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// False only when the server exited because its port was taken and the caller asked
    /// to retry; panics on any other failure.
    fn spawn_and_wait(&mut self, retry_on_addr_in_use: bool) -> bool {
        let bin = s3s_fs_bin();
        // Each (re)start writes a new log, so a restart's log does not hide the first run's.
        let mut k = 0;
        self.log_path = loop {
            let p = self.root.join(format!("s3s-fs-{k}.log"));
            if !p.exists() {
                break p;
            }
            k += 1;
        };
        let log = File::create(&self.log_path).expect("create the s3s-fs log");
        let child = Command::new(&bin)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY)
            .arg(self.root.join("data"))
            // "info" logs startup and errors; per-request traces would flood the log.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);

        let timeout = Duration::from_secs(15);
        let end = Instant::now() + timeout;
        let addr = ("127.0.0.1", self.port);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                if retry_on_addr_in_use && self.log().to_ascii_lowercase().contains("in use") {
                    return false;
                }
                panic!(
                    "s3s-fs exited before it answered ({st}); log:\n{}",
                    tail(&self.log_path, 40)
                );
            }
            if TcpStream::connect(addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < end,
                "s3s-fs did not listen on port {} within {timeout:?}; log:\n{}",
                self.port,
                tail(&self.log_path, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listening is not answering S3: one signed request proves the credentials, the
        // bucket and the addressing style the tests and the node rely on.
        let bucket_root = self.block_on(self.store.list_with_delimiter(None));
        if let Err(e) = bucket_root {
            panic!(
                "s3s-fs on {} listens but a ListObjectsV2 of bucket {BUCKET} failed: {e}; log:\n{}",
                self.endpoint(),
                tail(&self.log_path, 40)
            );
        }
        true
    }
}

/// object_store's S3 client for a server on loopback `port`.
fn client(port: u16) -> AmazonS3 {
    // object_store retries connection errors for up to 3 minutes by default: far longer
    // than a test waits, and it would hide a stopped server behind a hang.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(5),
    };
    AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_region(REGION)
        .with_bucket_name(BUCKET)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        // Path-style (http://host:port/bucket/key): s3s-fs only parses virtual-hosted
        // requests when given --domain, and 127.0.0.1 has no bucket subdomains.
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .build()
        .expect("object_store S3 client")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() && !self.log_path.as_os_str().is_empty() {
            eprintln!(
                "===== s3s-fs log ({}), last 40 lines =====\n{}",
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
    }
}
